"""Unicycle action space: closed-form motions, round trips, and the reference's vectors."""

import math

import pytest
import torch
from safetensors.torch import load_file

from alpamayo_ros.model.action_space import UnicycleAccelCurvatureActionSpace, yaw_of
from alpamayo_ros.model.config import ActionSpaceConfig
from alpamayo_ros.tools.synthetic import arc_history
from tolerances import INVERSE_ULPS, SPEED_ULPS, TRAJECTORY_ULPS, close

V0_TOL_MPS = 1e-3  # the ridge and smoothing priors bias the least-squares speed slightly
EXACT_TOL_M = 1e-3  # float32 cumulative sums over 64 steps
CIRCLE_TOL_M = 2e-2  # trapezoid integration of a circle at dt = 0.1 s
ROUND_TRIP_TOL_M = 2e-2  # traj_to_action smooths; upstream's own round trip is off by 5 mm
DT = 0.1


@pytest.fixture(scope="module")
def space():
    return UnicycleAccelCurvatureActionSpace(ActionSpaceConfig())


def history(speed_mps, yaw_rate_rps=0.0):
    xyz, rot = arc_history(speed_mps, yaw_rate_rps)
    return torch.from_numpy(xyz), torch.from_numpy(rot)


def test_estimate_t0_states_recovers_constant_speed(space):
    for speed in (0.0, 3.0, 12.5):
        xyz, rot = history(speed, 0.08)
        assert space.estimate_t0_states(xyz, rot).item() == pytest.approx(speed, abs=V0_TOL_MPS)


def test_zero_action_at_constant_speed_is_a_straight_line(space):
    xyz, rot = history(10.0)
    action = space.normalize(torch.zeros(64), torch.zeros(64))
    traj, traj_rot = space.action_to_traj(action, xyz, rot)
    expected_x = 10.0 * DT * torch.arange(1, 65)
    assert torch.allclose(traj[:, 0], expected_x, atol=EXACT_TOL_M * 10)
    assert traj[:, 1].abs().max() < EXACT_TOL_M
    assert torch.allclose(traj_rot, torch.eye(3).expand(64, 3, 3), atol=1e-6)


def test_constant_curvature_drives_a_circle(space):
    speed, curvature = 8.0, 0.05
    xyz, rot = history(speed)
    action = space.normalize(torch.zeros(64), torch.full((64,), curvature))
    traj, traj_rot = space.action_to_traj(action, xyz, rot)
    radius = 1.0 / curvature
    distance_to_centre = torch.hypot(traj[:, 0], traj[:, 1] - radius)
    assert (distance_to_centre - radius).abs().max() < CIRCLE_TOL_M
    t = DT * torch.arange(1, 65)
    # Heading integrates exactly; what remains is the v0 estimate and float32 sums.
    assert torch.allclose(yaw_of(traj_rot), curvature * speed * t, atol=1e-3)


def test_braking_to_a_stop_ends_at_v0_squared_over_2a(space):
    speed, decel = 10.0, 2.0
    xyz, rot = history(speed)
    stop_steps = round(speed / decel / DT)  # 50 steps of -2 m/s^2, then standing still
    accel = torch.cat([torch.full((stop_steps,), -decel), torch.zeros(64 - stop_steps)])
    traj, _ = space.action_to_traj(space.normalize(accel, torch.zeros(64)), xyz, rot)
    assert traj[-1, 0].item() == pytest.approx(speed**2 / (2 * decel), abs=V0_TOL_MPS * 64 * DT + EXACT_TOL_M)
    standstill_drift_m = (traj[stop_steps:, 0] - traj[stop_steps, 0]).abs().max()
    assert standstill_drift_m < 2e-3  # float32 speed residue after 50 steps of -0.2 m/s


@pytest.mark.parametrize("speed,accel,curvature", [(5.0, 0.5, 0.02), (15.0, -1.0, -0.01), (8.0, 0.0, 0.08)])
def test_traj_to_action_inverts_action_to_traj(space, speed, accel, curvature):
    xyz, rot = history(speed)
    t = torch.arange(64) * DT
    truth = space.normalize(torch.full((64,), accel) * torch.cos(t / 2),
                            curvature * torch.sin(t / 3 + 0.5))  # smooth, time-varying
    fut_xyz, fut_rot = space.action_to_traj(truth, xyz, rot)
    recovered = space.traj_to_action(xyz, rot, fut_xyz, fut_rot)
    back_xyz, _ = space.action_to_traj(recovered, xyz, rot)
    assert (back_xyz - fut_xyz)[..., :2].abs().max() < ROUND_TRIP_TOL_M


def test_traj_to_action_rejects_wrong_horizon(space):
    xyz, rot = history(5.0)
    with pytest.raises(ValueError, match="n_waypoints=64"):
        space.traj_to_action(xyz, rot, torch.zeros(10, 3), torch.eye(3).expand(10, 3, 3))


def test_matches_reference_vectors(space, conformance_dir):
    inputs = load_file(conformance_dir / "inputs.safetensors")
    ref = load_file(conformance_dir / "action_space.safetensors")
    hx, hr = inputs["ego_history_xyz"][:, 0], inputs["ego_history_rot"][:, 0]
    close(space.estimate_speeds(hx, hr), ref["v_hist"], SPEED_ULPS, "history speeds")
    close(space.estimate_t0_states(hx, hr), ref["v0"], SPEED_ULPS, "v0")
    actions = inputs["actions_norm"]
    xyz, rot = space.action_to_traj(actions, hx.expand(3, -1, -1), hr.expand(3, -1, -1, -1))
    close(xyz, ref["action_to_traj_xyz"], TRAJECTORY_ULPS, "action_to_traj xyz")
    close(rot, ref["action_to_traj_rot"], TRAJECTORY_ULPS, "action_to_traj rot")
    fut_xyz, fut_rot = inputs["ego_future_xyz"][:, 0], inputs["ego_future_rot"][:, 0]
    action = space.traj_to_action(hx, hr, fut_xyz, fut_rot)
    close(action, ref["traj_to_action"], INVERSE_ULPS, "traj_to_action")
    assert torch.equal(space.is_within_bounds(actions), ref["is_within_bounds_actions"].bool())
    stats = torch.stack([space.accel_mean, space.accel_std, space.curvature_mean, space.curvature_std])
    assert torch.equal(stats, ref["buffers_accel_mean_std_curv_mean_std"])


def test_out_of_bounds_action_is_reported(space):
    accel = torch.zeros(64)
    accel[10] = 12.0  # above the 9.8 m/s^2 bound
    assert not space.is_within_bounds(space.normalize(accel, torch.zeros(64))).item()
    assert math.isclose(space.cfg.accel_bounds[1], 9.8)

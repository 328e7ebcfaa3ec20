"""The states a driver visits in closed loop, read off a trace and rendered as the expert's recovery (DAgger)."""

import dataclasses
import json
import math

import numpy as np
import pytest

from alpamayo_ros.tools import visited, world
from alpamayo_ros.tools.closed_loop.loop import HANDOVER_S, Trace, _expert_state
from alpamayo_ros.tools.closed_loop.vehicle import VehicleState, steer_for
from alpamayo_ros.tools.driver_data import HELD_OUT_SEEDS, TRAIN_SEEDS
from alpamayo_ros.tools.train_driver import visited_examples
from alpamayo_ros.tools.visited import VisitedState, states_from_trace


def _trace(drive: world.World, car) -> Trace:
    """A trace at 100 Hz whose car is `car(t)` (a VehicleState) after the handover and the expert before it."""
    trace = Trace()
    for t in np.arange(0.0, drive.duration_s + 1e-9, 0.01):
        state = _expert_state(drive, t) if t < HANDOVER_S else car(t)
        s, d = drive.lane_offset(state.x, state.y)
        trace.t_s.append(float(t))
        trace.state.append(state)
        trace.mode.append("expert" if t < HANDOVER_S else "track")
        trace.s.append(s)
        trace.d.append(d)
    return trace


def test_the_expert_s_own_drive_is_no_perturbation_and_a_car_off_it_is_read_as_where_it_is():
    drive = world.generate("curve_left", TRAIN_SEEDS[0])
    own = states_from_trace(drive, _trace(drive, lambda t: _expert_state(drive, t)), every_s=0.5)
    assert [s.t0_s for s in own] == pytest.approx(np.arange(HANDOVER_S, drive.duration_s + 1e-9, 0.5))
    for s in own:
        assert (s.scenario, s.seed) == ("curve_left", TRAIN_SEEDS[0])
        assert abs(s.ahead_m) < 0.05 and abs(s.fast_mps) < 0.01 and abs(s.offset_m) < 0.02
        assert abs(s.heading_error_rad) < 0.005 and abs(s.curvature_error) < 0.002

    def displaced(t):  # 3 m further along, 2 m/s faster, 1 m right of the centre, heading 0.05 rad left of the lane
        s = float(np.interp(t, drive.drive.t, drive.drive.s)) + 3.0
        x, y, heading = drive.road.at(s, -1.0)
        kappa = float(np.interp(s, drive.road.s, drive.road.kappa)) + 0.01
        return VehicleState(float(x), float(y), float(heading) + 0.05, float(np.interp(t, drive.drive.t, drive.drive.v)) + 2.0,
                            steer_for(kappa))

    for s in states_from_trace(drive, _trace(drive, displaced), every_s=1.0):
        assert s.ahead_m == pytest.approx(3.0, abs=0.1) and s.fast_mps == pytest.approx(2.0, abs=0.01)
        assert s.offset_m == pytest.approx(-1.0, abs=0.05) and s.heading_error_rad == pytest.approx(0.05, abs=0.005)
        assert s.curvature_error == pytest.approx(0.01, abs=0.002)

    turned = _trace(drive, lambda t: dataclasses.replace(_expert_state(drive, t), yaw=_expert_state(drive, t).yaw + 1.0))
    far = states_from_trace(drive, turned)
    assert {s.heading_error_rad for s in far} == {visited.MAX_HEADING_ERROR_RAD}  # clipped to what the world shows


def test_a_visited_state_is_rendered_at_the_car_s_pose_with_the_expert_s_recovery_as_its_future():
    drive = world.generate("straight", TRAIN_SEEDS[0])
    t0 = 5.0
    state = VisitedState("straight", TRAIN_SEEDS[0], t0, ahead_m=4.0, fast_mps=2.0, offset_m=1.0,
                         heading_error_rad=0.03, curvature_error=0.0)
    (example,) = visited_examples([state])
    (expert,) = visited_examples([VisitedState("straight", TRAIN_SEEDS[0], t0, 0.0, 0.0, 0.0, 0.0, 0.0)])
    assert example.offset_m == 1.0 and expert.offset_m == 0.0 and example.jpegs != expert.jpegs
    speed = np.linalg.norm(np.diff(example.ego_history_xyz[-2:, :2], axis=0)) / 0.1
    expert_speed = np.linalg.norm(np.diff(expert.ego_history_xyz[-2:, :2], axis=0)) / 0.1
    assert speed == pytest.approx(expert_speed + 2.0, abs=0.2)
    # The car's pose at t0 in the world: 4 m ahead of the expert, 1 m left, heading 0.03 rad left of the lane.
    s0 = float(np.interp(t0, drive.drive.t, drive.drive.s)) + 4.0
    x0, y0, heading = drive.road.at(s0, 1.0)
    yaw = float(heading) + 0.03
    end = example.future_xyz[-1, :2]
    x = x0 + math.cos(yaw) * end[0] - math.sin(yaw) * end[1]
    y = y0 + math.sin(yaw) * end[0] + math.cos(yaw) * end[1]
    assert abs(drive.lane_offset(x, y)[1]) < 0.05  # back on the lane centre 6.4 s later


def test_the_collector_refuses_what_it_cannot_do(tmp_path, capsys):
    for flags in (["--drives", "0"], ["--every", "0"]):
        with pytest.raises(SystemExit) as usage_error:
            visited.main([str(tmp_path / "states.json"), *flags])
        assert usage_error.value.code == 2 and flags[0] in capsys.readouterr().err


def test_states_on_held_out_seeds_are_refused(tmp_path):
    """Training on a held-out drive would score the driver on what it learnt: such a file is an error."""
    path = tmp_path / "states.json"
    train = VisitedState("straight", TRAIN_SEEDS[0], 2.0, 0.0, 0.0, 0.5, 0.0, 0.0)
    path.write_text(json.dumps({"command": "", "states": [dataclasses.asdict(train)]}))
    assert visited.read_states(path) == [train]
    held_out = dataclasses.replace(train, seed=HELD_OUT_SEEDS[0])
    path.write_text(json.dumps({"command": "", "states": [dataclasses.asdict(train), dataclasses.asdict(held_out)]}))
    with pytest.raises(ValueError, match=f"not training seeds: \\[\\('straight', {HELD_OUT_SEEDS[0]}\\)\\]"):
        visited.read_states(path)

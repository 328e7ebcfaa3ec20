"""select_inputs: timing by stamp, odometry by time, ego frame at t0, and named NotReady reasons."""

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from alpamayo_ros.pipeline.camera_buffer import CameraBuffer
from alpamayo_ros.pipeline.frames import decode, rgb_frame
from alpamayo_ros.pipeline.pose_history import PoseHistory, PoseSample
from alpamayo_ros.pipeline.sync import CAMERA_NAMES as NAMES
from alpamayo_ros.pipeline.sync import Missing, ModelInput, NotReady, SyncConfig, select_inputs

MS = 1_000_000
S = 1_000_000_000
POSE_TOL_M = 1e-3  # chord error of linear interpolation between odometry samples on the test arc


def drive_pose(t_s: float) -> tuple[np.ndarray, np.ndarray]:
    """World pose of a car doing 10 m/s on a 0.2 rad/s left arc, starting at (5, -3) heading 30 deg."""
    speed, yaw_rate, yaw0 = 10.0, 0.2, np.radians(30)
    yaw = yaw0 + yaw_rate * t_s
    radius = speed / yaw_rate
    x = 5.0 + radius * (np.sin(yaw) - np.sin(yaw0))
    y = -3.0 - radius * (np.cos(yaw) - np.cos(yaw0))
    return np.array([x, y, 0.5]), Rotation.from_euler("z", yaw).as_quat()


def poses_at(times_s) -> PoseHistory:
    history = PoseHistory()
    for t in times_s:
        position, quat = drive_pose(t)
        history.push(PoseSample(stamp_ns=round(t * S), position=position, orientation=quat, speed_mps=10.0))
    return history


def cameras_at(start_s: float, end_s: float, rate_hz: float = 10.0):
    buffers = []
    for i, name in enumerate(NAMES):
        buffer = CameraBuffer(name)
        for k in range(round((end_s - start_s) * rate_hz) + 1):
            stamp = round((start_s + k / rate_hz) * S) + i * MS  # 1 ms skew per camera
            buffer.push(rgb_frame(stamp, np.full((4, 6, 3), i, np.uint8)))
        buffers.append(buffer)
    return buffers


def test_complete_input_uses_newest_synchronised_time():
    result = select_inputs(cameras_at(0.0, 3.0), poses_at(np.arange(0, 3.12, 0.02)), now_ns=3_050 * MS)
    assert isinstance(result, ModelInput), result
    assert result.t0_ns == 3 * S + 1 * MS  # front-wide's newest frame
    assert result.frame_stamps_ns.shape == (4, 4)
    assert np.all(np.abs(result.frame_stamps_ns - (result.t0_ns + np.array([-300, -200, -100, 0]) * MS)) <= 3 * MS)
    assert [int(decode(f.image)[0, 0, 0]) for f in result.frames[::4]] == [0, 1, 2, 3]  # camera-major order


def test_history_ends_at_origin_with_identity_rotation():
    result = select_inputs(cameras_at(0.0, 3.0), poses_at(np.arange(0, 3.12, 0.02)), now_ns=3_050 * MS)
    assert np.allclose(result.ego_history_xyz[-1], 0.0, atol=1e-6)
    assert np.allclose(result.ego_history_rot[-1], np.eye(3), atol=1e-6)
    assert result.ego_history_xyz[0, 0] == pytest.approx(-50.0 * np.sin(0.2 * 1.5), abs=1e-3)  # -R sin(w 1.5 s)
    assert result.ego_history_xyz[0, 1] > 0  # on a left arc the past lies to the left of the current heading
    steps_m = np.linalg.norm(np.diff(result.ego_history_xyz[:, :2], axis=0), axis=1)
    assert np.allclose(steps_m, 1.0, atol=1e-3)  # 10 m/s at 0.1 s spacing


def test_history_matches_the_analytic_pose_in_the_t0_frame():
    result = select_inputs(cameras_at(0.0, 3.0), poses_at(np.arange(0, 3.12, 0.02)), now_ns=3_050 * MS)
    t0 = result.t0_ns / S
    p0, q0 = drive_pose(t0)
    r0 = Rotation.from_quat(q0)
    for k, t in enumerate(t0 - 0.1 * np.arange(15, -1, -1)):
        p, q = drive_pose(t)
        assert np.allclose(result.ego_history_xyz[k], r0.inv().apply(p - p0), atol=POSE_TOL_M)
        assert np.allclose(result.ego_history_rot[k], (r0.inv() * Rotation.from_quat(q)).as_matrix(), atol=1e-4)


def test_regular_and_irregular_odometry_give_the_same_history():
    rng = np.random.default_rng(0)
    irregular = np.cumsum(rng.uniform(1 / 113, 1 / 37, size=400))
    irregular = irregular[irregular < 3.05]
    cams = cameras_at(0.0, 3.0)
    regular = select_inputs(cams, poses_at(np.arange(0, 3.12, 0.02)), now_ns=3_050 * MS)
    uneven = select_inputs(cams, poses_at(np.concatenate([[0.0], irregular])), now_ns=3_050 * MS)
    assert isinstance(uneven, ModelInput), uneven
    assert regular.t0_ns == uneven.t0_ns
    assert np.allclose(regular.ego_history_xyz, uneven.ego_history_xyz, atol=POSE_TOL_M)
    assert np.allclose(regular.ego_history_rot, uneven.ego_history_rot, atol=1e-4)


def test_select_inputs_reports_late_camera():
    # cross_right delivers 80 ms late: at now = 3.05 s its 3.0 s frame has not arrived, so the newest t0
    # (front-wide's 3.001 s frame) has no cross_right frame. The previous t0 would be complete, but is
    # older than this max_input_age allows.
    cameras = cameras_at(0.0, 3.0)
    cameras[2] = _without_newer_than(cameras[2], 2_950 * MS)
    cfg = SyncConfig(max_input_age_ns=120 * MS)
    result = select_inputs(cameras, poses_at(np.arange(0, 3.12, 0.02)), now_ns=3_050 * MS, cfg=cfg)
    assert isinstance(result, NotReady)
    assert result.reason == "camera cross_right: no frame within 50 ms of t0+0.0 s (nearest 99 ms away)"
    # With the default 0.5 s input age the newest t0 where all cameras agree is used instead.
    fallback = select_inputs(cameras, poses_at(np.arange(0, 3.12, 0.02)), now_ns=3_050 * MS)
    assert isinstance(fallback, ModelInput) and fallback.t0_ns == 2_901 * MS


def _without_newer_than(buffer, stamp_ns):
    trimmed = CameraBuffer(buffer.name)
    for stamp in buffer.stamps_ns():
        if stamp <= stamp_ns:
            trimmed.push(buffer.nearest(stamp))
    return trimmed


def test_select_inputs_reports_missing_camera():
    cams = cameras_at(0.0, 3.0)
    cams[3] = CameraBuffer("front_tele")
    result = select_inputs(cams, poses_at(np.arange(0, 3.12, 0.02)), now_ns=3_050 * MS)
    assert result == NotReady(Missing.NO_FRAMES, "camera front_tele: no frames received")


def test_select_inputs_reports_odometry_gap_and_short_history():
    times = np.arange(0, 3.12, 0.02)
    gappy = times[(times < 2.0) | (times > 2.4)]
    result = select_inputs(cameras_at(0.0, 3.0), poses_at(gappy), now_ns=3_050 * MS)
    assert isinstance(result, NotReady) and "odometry gap of 4" in result.reason
    short = select_inputs(cameras_at(0.0, 3.0), poses_at(np.arange(2.0, 3.12, 0.02)), now_ns=3_050 * MS)
    assert isinstance(short, NotReady) and short.reason.startswith("odometry: odometry covers")


def test_select_inputs_refuses_stale_input():
    result = select_inputs(cameras_at(0.0, 3.0), poses_at(np.arange(0, 3.12, 0.02)), now_ns=4 * S)
    assert isinstance(result, NotReady) and result.reason.startswith("stale input")


def test_odometry_must_reach_t0():
    # Cameras run to 3.0 s, odometry stops at 2.94 s: the 3.001 s frame has no pose, so t0 is the one before.
    result = select_inputs(cameras_at(0.0, 3.0), poses_at(np.arange(0, 2.96, 0.02)), now_ns=3_050 * MS)
    assert isinstance(result, ModelInput)
    assert result.t0_ns == 2_901 * MS


def test_sync_config_rejects_tolerance_wider_than_half_a_frame():
    with pytest.raises(ValueError, match="at most half the frame spacing"):
        SyncConfig(sync_tolerance_ns=60 * MS)


def test_input_checks_catch_speed_mismatch_and_a_bad_history():
    from dataclasses import replace

    from alpamayo_ros.pipeline.sync import InputLimits, input_problems

    good = select_inputs(cameras_at(0.0, 3.0), poses_at(np.arange(0, 3.12, 0.02)), now_ns=3_050 * MS)
    assert input_problems(replace(good, odometry_speed_mps=10.0)) == []
    lying = replace(good, odometry_speed_mps=3.0)  # the poses move at 10 m/s
    assert "odometry reports 3.0 m/s but its poses move at 10.0 m/s" in input_problems(lying)[0]
    assert input_problems(lying, InputLimits(max_speed_mismatch_mps=8.0)) == []
    shifted = good.ego_history_xyz.copy()
    shifted[-1, 0] = 0.5
    assert "origin" in input_problems(replace(good, ego_history_xyz=shifted))[0]
    broken = good.ego_history_rot.copy()
    broken[3, 0, 0] = np.nan
    assert input_problems(replace(good, ego_history_rot=broken)) == ["history contains NaN or inf"]

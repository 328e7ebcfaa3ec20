"""Camera buffer and pose history: ordering, bounds, interpolation."""

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from alpamayo_ros.pipeline.camera_buffer import CameraBuffer
from alpamayo_ros.pipeline.frames import rgb_frame
from alpamayo_ros.pipeline.pose_history import HistoryGap, PoseHistory, PoseSample

MS = 1_000_000


def frame(stamp_ms):
    return rgb_frame(stamp_ms * MS, np.zeros((2, 2, 3), np.uint8))


def test_camera_buffer_sorts_bounds_and_finds_nearest():
    buffer = CameraBuffer("front_wide", horizon_ns=1000 * MS, max_frames=8)
    for stamp in (100, 300, 200, 500, 400):
        buffer.push(frame(stamp))
    assert buffer.stamps_ns() == [s * MS for s in (100, 200, 300, 400, 500)]
    assert buffer.nearest(260 * MS).stamp_ns == 300 * MS
    assert buffer.nearest(250 * MS).stamp_ns == 200 * MS  # a tie goes to the earlier frame
    buffer.push(frame(1400))
    assert buffer.stamps_ns()[0] == 400 * MS  # older than horizon behind the newest: dropped
    for stamp in range(1500, 2400, 100):
        buffer.push(frame(stamp))
    assert len(buffer) == 8


def pose(stamp_ms, x, yaw_deg):
    return PoseSample(stamp_ns=stamp_ms * MS, position=np.array([x, 0.0, 0.0]),
                      orientation=Rotation.from_euler("z", yaw_deg, degrees=True).as_quat())


def test_pose_history_interpolates_linearly_and_by_slerp():
    history = PoseHistory()
    history.push(pose(0, 0.0, 0.0))
    history.push(pose(100, 1.0, 90.0))
    positions, rotations = history.interpolate(np.array([25 * MS, 100 * MS]), max_gap_ns=200 * MS)
    assert np.allclose(positions[:, 0], [0.25, 1.0])
    assert np.allclose(rotations.as_euler("zyx", degrees=True)[:, 0], [22.5, 90.0])


def test_pose_history_slerps_the_short_way_across_180_degrees():
    history = PoseHistory()
    history.push(pose(0, 0.0, 170.0))
    history.push(pose(100, 0.0, -170.0))
    _, rotations = history.interpolate(np.array([50 * MS]), max_gap_ns=200 * MS)
    assert abs(abs(rotations.as_euler("zyx", degrees=True)[0, 0]) - 180.0) < 1e-6


def test_pose_history_refuses_gaps_and_extrapolation():
    history = PoseHistory()
    for stamp in (0, 100, 400):
        history.push(pose(stamp, stamp / 100, 0.0))
    with pytest.raises(HistoryGap, match="gap of 300 ms"):
        history.interpolate(np.array([200 * MS]), max_gap_ns=250 * MS)
    with pytest.raises(HistoryGap, match="covers"):
        history.interpolate(np.array([500 * MS]), max_gap_ns=250 * MS)
    with pytest.raises(HistoryGap, match="no odometry"):
        PoseHistory().interpolate(np.array([0]), max_gap_ns=1)

"""Inputs and monitors: arrival checks, measured frame periods, losses from stamp gaps, lag judged per camera."""

import numpy as np
from scipy.spatial.transform import Rotation

from alpamayo_ros.pipeline.frames import rgb_frame
from alpamayo_ros.pipeline.inputs import ODOMETRY_RESTART_COUNT, Inputs
from alpamayo_ros.pipeline.monitor import TopicMonitor
from alpamayo_ros.pipeline.pose_history import PoseSample
from alpamayo_ros.pipeline.sync import SyncConfig

MS = 1_000_000
TOPICS = ["/c0", "/c1", "/c2", "/c3"]
IMAGE = np.zeros((4, 6, 3), np.uint8)


def inputs() -> Inputs:
    return Inputs(TOPICS, "/odom", SyncConfig())


def pose(stamp_ms: int) -> PoseSample:
    return PoseSample(stamp_ns=stamp_ms * MS, position=np.zeros(3), orientation=Rotation.identity().as_quat())


def test_monitor_measures_period_and_counts_frames_lost_in_stamp_gaps():
    monitor = TopicMonitor("/c", "camera c")
    for stamp_ms in (0, 67, 133, 200, 267, 467, 533):  # 15 Hz; 333 and 400 never came
        monitor.accepted(stamp_ms * MS, stamp_ms * MS)
    assert 66 * MS <= monitor.period_ns <= 67 * MS
    assert monitor.lost_gaps == 2
    assert monitor.values(0.0, 533 * MS)["/c lost"] == 2


def test_a_camera_one_frame_period_behind_is_normal_and_further_is_named():
    # cross_left runs at 15 Hz, phase-shifted: its newest frame trails front-wide's by up to 67 ms.
    slow = inputs()
    events = [(round(k * 200 / 3) + 10, 0) for k in range(45)] + [(k * 100, 1) for k in range(30)]
    for stamp_ms, camera in sorted(events):  # each frame arrives at its stamp
        slow.add_frame(camera, rgb_frame(stamp_ms * MS, IMAGE), stamp_ms * MS, stamp_ms / 1e3)
    assert 66 * MS <= slow.monitors["/c0"].period_ns <= 67 * MS
    assert not any("behind" in f or "later than" in f for f in slow.faults(3.0, 2_950 * MS))
    # cross_right's frames stop advancing: 300 ms behind, more than its 100 ms period + 50 ms.
    stuck = inputs()
    for k in range(30):
        stuck.add_frame(2, rgb_frame(min(k, 26) * 100 * MS, IMAGE), k * 100 * MS, k * 0.1)
        stuck.add_frame(1, rgb_frame(k * 100 * MS, IMAGE), k * 100 * MS, k * 0.1)
    assert any(f.startswith("camera cross_right: newest frame 300 ms behind front_wide") for f in stuck.faults(3.0, 2_900 * MS))


def test_a_camera_delivering_late_is_named_with_its_delay():
    late = inputs()
    for k in range(30):  # stamps on the same instants, cross_right's frames arrive 80 ms after their stamp
        late.add_frame(2, rgb_frame(k * 100 * MS, IMAGE), k * 100 * MS + 80 * MS, k * 0.1)
        late.add_frame(1, rgb_frame((k + 1) * 100 * MS, IMAGE), (k + 1) * 100 * MS, k * 0.1)
    faults = late.faults(3.0, 3_000 * MS)
    assert any("camera cross_right: frames arrive 80 ms after their stamp, 80 ms later than front_wide" in f
               for f in faults), faults


def test_frames_from_the_future_and_of_another_size_are_refused_by_name():
    buffers = inputs()
    assert buffers.add_frame(1, rgb_frame(100 * MS, IMAGE), 100 * MS, 0.0) is None
    ahead = buffers.add_frame(1, rgb_frame(5_000 * MS, IMAGE), 200 * MS, 0.1)
    assert ahead.text == "camera front_wide: /c1: stamp is 4.80 s ahead of the node clock; frame dropped"
    resized = buffers.add_frame(1, rgb_frame(300 * MS, np.zeros((2, 6, 3), np.uint8)), 300 * MS, 0.2)
    assert resized.text.startswith("camera front_wide: /c1: image is 6x2, expected 6x4")
    assert len(buffers.cameras[1]) == 1 and buffers.monitors["/c1"].invalid == 2


def test_odometry_restart_clears_the_history_and_bumps_the_epoch():
    buffers = inputs()
    for k in range(100):
        buffers.add_pose(pose(10_000 + k * 10), (10_000 + k * 10) * MS, 0.0)
    refused = [buffers.add_pose(pose(k * 10), 11_000 * MS, 0.0) for k in range(ODOMETRY_RESTART_COUNT)]
    assert all(r is not None for r in refused) and "the source restarted" in refused[-1].text
    assert buffers.epoch == 1 and len(buffers.poses) == 1


def test_a_repeated_stamp_is_refused_so_cached_pixels_never_belong_to_another_frame():
    buffers = inputs()
    assert buffers.add_frame(1, rgb_frame(100 * MS, IMAGE), 100 * MS, 0.0) is None
    again = buffers.add_frame(1, rgb_frame(100 * MS, np.full_like(IMAGE, 9)), 110 * MS, 0.01)
    assert again.text == "camera front_wide: /c1: stamp 0.100 s repeats a buffered frame's; frame dropped"


def test_an_outage_is_not_counted_as_lost_frames():
    monitor = TopicMonitor("/c", "camera c")
    for stamp_ms in (0, 100, 200, 300, 60_300, 60_400):  # a minute's silence: age reports it, not "lost"
        monitor.accepted(stamp_ms * MS, stamp_ms * MS)
    assert monitor.lost_gaps == 0

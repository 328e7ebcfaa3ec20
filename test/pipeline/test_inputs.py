"""Inputs and monitors: arrival checks, measured frame periods, losses from stamp gaps, lag judged per camera."""

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from alpamayo_ros.pipeline.frames import rgb_frame
from alpamayo_ros.pipeline.inputs import ODOMETRY_RESTART_COUNT, Inputs
from alpamayo_ros.pipeline.monitor import TopicMonitor
from alpamayo_ros.pipeline.pose_history import HistoryGap, PoseSample
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


# -- odometry continuity: jumps and frame changes restart the history ---------------------------------


def arc_odometry(t_s: np.ndarray, speed_mps: float, yaw_rate_rps: float, rng: np.random.Generator | None = None,
                 noise_m: float = 0.0, noise_deg: float = 0.0, angular_twist: bool = True) -> list[PoseSample]:
    """Odometry of a car on an arc from (5, -3) heading 30 deg, twist in the body frame; optional noise."""
    yaw0 = np.radians(30.0)
    yaw = yaw0 + yaw_rate_rps * t_s
    radius = speed_mps / yaw_rate_rps
    xy = np.stack([5.0 + radius * (np.sin(yaw) - np.sin(yaw0)), -3.0 - radius * (np.cos(yaw) - np.cos(yaw0))], axis=1)
    samples = []
    for k, t in enumerate(t_s):
        position = np.array([xy[k, 0], xy[k, 1], 0.0])
        heading = yaw[k]
        if rng is not None:
            position[:2] += rng.normal(0.0, noise_m, 2)
            heading += np.radians(rng.normal(0.0, noise_deg))
        samples.append(PoseSample(stamp_ns=round(t * 1e9), position=position,
                                  orientation=Rotation.from_euler("z", heading).as_quat(), speed_mps=abs(speed_mps),
                                  velocity_mps=np.array([speed_mps, 0.0, 0.0]),
                                  angular_velocity_rps=np.array([0.0, 0.0, yaw_rate_rps if angular_twist else 0.0])))
    return samples


def feed(buffers: Inputs, samples: list[PoseSample], frames: tuple[str, str] = ("odom", "base_link")) -> list[str]:
    """Every pose at its stamp; the texts of whatever came back."""
    notes = [buffers.add_pose(s, s.stamp_ns, s.stamp_ns / 1e9, *frames) for s in samples]
    return [n.text for n in notes if n is not None]


def snapped(samples: list[PoseSample], from_index: int, shift_m: float, turn_deg: float) -> list[PoseSample]:
    """A relocalization at `from_index`: from there on the poses are moved `shift_m` to the car's left and turned
    `turn_deg` about the car's position at that instant (the twist, in the body frame, is unchanged)."""
    pivot = samples[from_index].position
    left = Rotation.from_quat(samples[from_index].orientation).apply([0.0, shift_m, 0.0])
    turn = Rotation.from_euler("z", turn_deg, degrees=True)
    moved = [PoseSample(stamp_ns=s.stamp_ns, position=pivot + left + turn.apply(s.position - pivot),
                        orientation=(turn * Rotation.from_quat(s.orientation)).as_quat(), speed_mps=s.speed_mps,
                        velocity_mps=s.velocity_mps, angular_velocity_rps=s.angular_velocity_rps)
             for s in samples[from_index:]]
    return samples[:from_index] + moved


@pytest.mark.parametrize("speed_mps,yaw_rate_rps,rate_hz,angular_twist", [
    (30.0, 0.05, 100.0, True),  # motorway
    (8.0, 0.5, 50.0, True),  # a tight turn
    (-3.0, -0.4, 50.0, True),  # reversing into a bay
    (15.0, 0.5, 10.0, False),  # 10 Hz odometry that leaves twist.angular at zero
    (20.0, 0.2, 4.5, True),  # 222 ms apart: just inside max_odometry_gap
])
def test_noisy_odometry_never_restarts_the_history(speed_mps, yaw_rate_rps, rate_hz, angular_twist):
    # 5 cm / 0.5 deg noise per sample: a localizer's, several times wheel odometry's.
    rng = np.random.default_rng(7)
    samples = arc_odometry(np.arange(0.0, 20.0, 1.0 / rate_hz), speed_mps, yaw_rate_rps, rng, 0.05, 0.5, angular_twist)
    buffers = inputs()
    assert feed(buffers, samples) == [] and buffers.epoch == 0 and buffers.history_restarts == 0


def test_a_jump_beyond_the_tolerance_restarts_the_history_and_one_just_under_does_not():
    samples = arc_odometry(np.arange(0.0, 4.0, 0.02), 8.0, 0.1)
    # Allowed at 8 m/s and 20 ms: 1.0 m + 0.5 * 8 m/s * 0.02 s = 1.08 m, 5 deg + 30 deg/s * 0.02 s = 5.6 deg.
    under = inputs()
    assert feed(under, snapped(snapped(samples, 100, 1.0, 0.0), 150, 0.0, 5.5)) == []
    assert under.epoch == 0 and len(under.poses) == 200
    for shift_m, turn_deg in ((31.2, 20.0), (1.2, 0.0), (0.0, 6.0)):
        over = inputs()
        notes = feed(over, snapped(samples, 100, shift_m, turn_deg))
        assert notes == [f"odometry: /odom: pose jumped {shift_m:.1f} m / {turn_deg:.0f} deg in 20 ms (allowed 1.08 m "
                         "/ 5.6 deg); history restarted"]
        assert over.epoch == 1 and over.history_restarts == 1 and len(over.poses) == 100
        assert over.poses.samples[0].stamp_ns == samples[100].stamp_ns  # nothing from before the jump
        assert any("pose jumped" in f and "history restarted" in f for f in over.faults(2.5, 2_500 * MS))
        assert over.values(2.5, 2_500 * MS)["/odom history_restarts"] == 1


def test_the_history_after_a_jump_is_named_until_it_covers_the_input_again():
    samples = snapped(arc_odometry(np.arange(0.0, 4.0, 0.02), 8.0, 0.1), 100, 31.2, 20.0)
    buffers = inputs()
    feed(buffers, samples[:150])  # the jump at 2.0 s, then 1.0 s of clean history
    with pytest.raises(HistoryGap, match=r"history restarted at 2\.000 s: pose jumped 31\.2 m / 20 deg"):
        buffers.poses.interpolate(np.array([1_500 * MS, 2_900 * MS]), max_gap_ns=250 * MS)
    feed(buffers, samples[150:])
    positions, _ = buffers.poses.interpolate(np.array([2_000 * MS, 3_500 * MS]), max_gap_ns=250 * MS)
    assert np.linalg.norm(positions[1] - positions[0]) == pytest.approx(12.0, abs=0.05)  # 1.5 s at 8 m/s


def test_a_change_of_frames_restarts_the_history_and_so_does_the_change_back():
    samples = arc_odometry(np.arange(0.0, 6.0, 0.02), 8.0, 0.1)
    buffers = inputs()
    notes = feed(buffers, samples[:100]) + feed(buffers, samples[100:200], ("map", "base_link"))
    notes += feed(buffers, samples[200:250], ("map", "imu_link")) + feed(buffers, samples[250:])
    assert notes == ["odometry: /odom: frame changed (frame_id 'odom' -> 'map'); history restarted",
                     "odometry: /odom: frame changed (child_frame_id 'base_link' -> 'imu_link'); history restarted",
                     "odometry: /odom: frame changed (frame_id 'map' -> 'odom', child_frame_id 'imu_link' -> "
                     "'base_link'); history restarted"]
    assert buffers.epoch == 3 and buffers.poses.frames == ("odom", "base_link")
    assert buffers.poses.samples[0].stamp_ns == samples[250].stamp_ns

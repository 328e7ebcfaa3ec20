"""evaluate's constant-velocity baseline: exact on a drive of constant speed and yaw rate, in the ego frame at t0."""

import numpy as np
from scipy.spatial.transform import Rotation

from alpamayo_ros.pipeline.pose_history import PoseHistory, PoseSample
from alpamayo_ros.tools.evaluate import DT_S, WAYPOINTS, constant_velocity_baseline, unicycle

NS_PER_S = 1_000_000_000
ODOMETRY_HZ = 50
# Float64 positions of a few hundred metres, interpolated at most once: far below a millimetre.
POSITION_TOL_M = 1e-6


def circle_history(speed_mps: float, yaw_rate_rps: float, yaw0: float, seconds: float) -> PoseHistory:
    """Odometry of a car on a circle, starting at (10, -5) heading yaw0."""
    history = PoseHistory(horizon_ns=1 << 62, max_samples=1 << 20)
    for k in range(round(seconds * ODOMETRY_HZ) + 1):
        t = k / ODOMETRY_HZ
        local = unicycle(speed_mps, yaw_rate_rps, np.array([t]))[0]
        c, s = np.cos(yaw0), np.sin(yaw0)
        position = np.array([10 + c * local[0] - s * local[1], -5 + s * local[0] + c * local[1], 0.0])
        orientation = Rotation.from_euler("z", yaw0 + yaw_rate_rps * t).as_quat()
        history.push(PoseSample(stamp_ns=round(t * NS_PER_S), position=position, orientation=orientation))
    return history


def test_baseline_continues_a_constant_turn_exactly():
    speed, yaw_rate = 7.0, 0.12
    history = circle_history(speed, yaw_rate, yaw0=2.0, seconds=3.0)
    predicted = constant_velocity_baseline(history, t0_ns=2 * NS_PER_S)
    # The car keeps turning: in the ego frame at t0 its future is the same arc from the origin.
    expected = unicycle(speed, yaw_rate, DT_S * np.arange(1, WAYPOINTS + 1))
    # The baseline's speed is the chord over 0.2 s, a hair below the arc speed: 1 - sinc(yaw_rate * 0.1).
    chord = np.sinc(yaw_rate * 0.1 / np.pi)
    np.testing.assert_allclose(predicted, expected * chord, atol=POSITION_TOL_M)
    assert predicted[-1, 1] > 5.0  # a left turn bends to +y


def test_unicycle_goes_straight_without_yaw_rate():
    xy = unicycle(5.0, 0.0, np.array([1.0, 2.0]))
    np.testing.assert_allclose(xy, [[5.0, 0.0], [10.0, 0.0]])

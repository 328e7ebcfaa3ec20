"""The ticks the driver's scores are read at, chosen from the world's ground truth: a curve's entry."""

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from alpamayo_ros.tools import world
from alpamayo_ros.tools.driver_data import t0_grid
from alpamayo_ros.tools.driving_scores import (
    BASELINE_SHARE,
    CURVE_ENTRY_Y_M,
    constant_velocity,
    curve_entry_tick,
    turns_at_entry,
)
from alpamayo_ros.tools.evaluate import DT_S, WAYPOINTS, unicycle

# float32 history positions of at most ~20 m: their rounding is far below this
POSITION_TOL_M = 1e-4


def sideways(drive, t0: float) -> tuple[float, float]:
    """(truth, constant velocity) y at 6.4 s."""
    sample = drive.model_sample(t0, 8, 8)
    return sample.future_xyz[-1, 1], constant_velocity(sample.ego_history_xyz, sample.ego_history_rot)[-1, 1]


@pytest.mark.parametrize("scenario", ["curve_left", "curve_right"])
def test_the_curve_entry_is_the_first_tick_whose_future_bends_where_the_history_does_not(scenario):
    drive = world.generate(scenario, 1000)
    t0 = curve_entry_tick(drive)
    truth, cv = sideways(drive, t0)
    assert abs(truth) > CURVE_ENTRY_Y_M and abs(cv) < BASELINE_SHARE * abs(truth)
    assert np.sign(truth) == (1 if scenario == "curve_left" else -1)
    grid = t0_grid(drive)
    before = grid[grid.index(t0) - 1]
    truth, cv = sideways(drive, before)
    assert not (abs(truth) > CURVE_ENTRY_Y_M and abs(cv) < BASELINE_SHARE * abs(truth))


def test_a_straight_drive_has_no_curve_entry():
    with pytest.raises(ValueError, match="no curve entry"):
        curve_entry_tick(world.generate("straight", 1000))


def test_a_plan_turns_at_an_entry_only_the_truths_way_and_half_as_far():
    assert turns_at_entry(2.0, 4.0) and turns_at_entry(-9.0, -4.0)
    assert not turns_at_entry(1.9, 4.0)  # too little
    assert not turns_at_entry(-3.0, 4.0) and not turns_at_entry(3.0, -4.0)  # the wrong way


def test_constant_velocity_continues_the_historys_last_arc():
    speed, yaw_rate = 8.0, -0.1
    times = DT_S * np.arange(-15, 1)  # the release's history: 16 poses, the last at t0 (the origin)
    xy = unicycle(speed, yaw_rate, times)  # the arc through the origin, heading +x there
    history_xyz = np.concatenate([xy, np.zeros((16, 1))], axis=1).astype(np.float32)
    history_rot = Rotation.from_euler("z", yaw_rate * times[:, None]).as_matrix().astype(np.float32)
    chord = np.sinc(yaw_rate * 0.1 / np.pi)  # the speed is the chord over the last 0.2 s
    expected = unicycle(speed * chord, yaw_rate, DT_S * np.arange(1, WAYPOINTS + 1))
    np.testing.assert_allclose(constant_velocity(history_xyz, history_rot), expected, atol=POSITION_TOL_M)

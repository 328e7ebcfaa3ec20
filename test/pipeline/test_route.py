"""Route text from a planned path: the rules of `pipeline/route.py` on paths whose answer is known by construction."""

import math

import numpy as np
import pytest

from alpamayo_ros.pipeline.route import (
    LOOKAHEAD_M,
    TURN_START_DEG,
    Manoeuvre,
    RouteInput,
    next_manoeuvre,
    swap_direction,
)

ARC_STEP_DEG = 1.0
RADIUS_M = 10.0


def turning_path(turn_at_m: float, bend_deg: float, side: int = 1, step_m: float = 0.5) -> np.ndarray:
    """Straight along +x from x = -5 to `turn_at_m`, then an arc of RADIUS_M bending `bend_deg` to the left
    (side 1) or right (-1) in ARC_STEP_DEG steps, then 50 m straight on."""
    xs = np.arange(-5.0, turn_at_m, step_m)
    straight = np.stack([xs, np.zeros_like(xs)], 1)
    angles = np.radians(np.arange(0.0, bend_deg + ARC_STEP_DEG / 2, ARC_STEP_DEG))
    arc = np.stack([turn_at_m + RADIUS_M * np.sin(angles), side * RADIUS_M * (1 - np.cos(angles))], 1)
    heading = side * angles[-1]
    run = arc[-1] + np.arange(1, 101)[:, None] * 0.5 * np.array([math.cos(heading), math.sin(heading)])
    return np.concatenate([straight, arc, run])


def begin_of_turn(turn_at_m: float) -> float:
    """Rule 4 on `turning_path`: arc segment k heads (k + 1/2) deg off; the turn begins after the last within
    TURN_START_DEG; distances are summed along the path's chords."""
    straight_segments = math.floor(TURN_START_DEG / ARC_STEP_DEG + 0.5)
    return turn_at_m + straight_segments * 2 * RADIUS_M * math.sin(math.radians(ARC_STEP_DEG) / 2)


@pytest.mark.parametrize("side,direction", [(1, "left"), (-1, "right")])
def test_a_right_angle_turn_is_named_with_its_distance_in_whole_metres(side, direction):
    manoeuvre = next_manoeuvre(turning_path(40.0, 90.0, side), np.array([0.0, 0.0]))
    assert manoeuvre.direction == direction
    assert manoeuvre.distance_m == pytest.approx(begin_of_turn(40.0), abs=1e-9)
    assert manoeuvre.text == f"Turn {direction} in {math.floor(begin_of_turn(40.0) + 0.5)}m"


def test_the_distance_shrinks_as_the_vehicle_drives_on_and_the_turn_passes():
    path = turning_path(40.0, 90.0)
    assert next_manoeuvre(path, np.array([20.0, 0.3])).distance_m == pytest.approx(begin_of_turn(40.0) - 20.0)
    assert next_manoeuvre(path, path[-30]) is None  # past the turn: straight on


def test_gentle_bends_and_far_turns_give_no_instruction():
    assert next_manoeuvre(turning_path(40.0, 30.0), np.zeros(2)) is None  # under TURN_ANGLE_DEG
    assert next_manoeuvre(turning_path(LOOKAHEAD_M + 20.0, 90.0, step_m=2.0), np.zeros(2)) is None


def test_distances_round_as_the_release_words_them():
    # nav_demo_samples.json: distance_m 3.8 -> "4m", 29.8 -> "30m", 15.7 -> "16m", 4.6 -> "5m", 594.0 -> "594m".
    for distance, words in ((3.8, "4m"), (29.8, "30m"), (15.7, "16m"), (4.6, "5m"), (594.0, "594m"), (4.5, "5m")):
        assert Manoeuvre("left", distance).text == f"Turn left in {words}"


def test_bad_paths_are_errors():
    with pytest.raises(ValueError, match="expected \\(N >= 2, 2\\)"):
        next_manoeuvre(np.zeros((1, 2)), np.zeros(2))
    with pytest.raises(ValueError, match="NaN"):
        next_manoeuvre(np.array([[0.0, 0.0], [np.nan, 1.0]]), np.zeros(2))


def test_swap_direction_swaps_whole_words_only():
    assert swap_direction("Turn left in 40m") == "Turn right in 40m"
    assert swap_direction("Right then left onto Leftbank Rd") == "Left then right onto Leftbank Rd"


def test_a_fresh_text_wins_then_the_path_then_nothing_with_the_reason():
    route = RouteInput(max_route_age_ns=2_000_000_000)
    assert route.choose(0, "odom", np.zeros(2)).text is None
    route.set_path(turning_path(40.0, 90.0), "odom", received_ns=0)
    route.set_text("Turn right in 10m", received_ns=0)
    assert route.choose(1_000_000_000, "odom", np.zeros(2)).text == "Turn right in 10m"
    later = route.choose(2_500_000_000, "odom", np.zeros(2))  # both stale
    assert later.text is None and "route text 2.5 s old" in later.note and "route path 2.5 s old" in later.note
    route.set_path(turning_path(40.0, 90.0), "odom", received_ns=2_000_000_000)
    from_path = route.choose(2_500_000_000, "odom", np.zeros(2))
    assert from_path.text == "Turn left in 42m" and from_path.note.startswith("route_path_topic")
    assert "frame 'odom', odometry in 'map'" in route.choose(2_500_000_000, "map", np.zeros(2)).note
    route.set_text("", received_ns=2_500_000_000)  # an empty text clears the instruction
    assert route.choose(2_600_000_000, "odom", np.zeros(2)).text == "Turn left in 42m"

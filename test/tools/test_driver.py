"""The embedded driver on held-out synthetic drives: it turns the right way, stops for red, and says why.

One tick each, chosen from the world's ground truth (never from the model's output): a curve entry where
the history still goes straight, and a red light the expert brakes for.
"""

import pytest
import torch

from alpamayo_ros.model.loading import EMBEDDED_DRIVER_DIR, from_pretrained
from alpamayo_ros.tools import world
from alpamayo_ros.tools.driver_data import HELD_OUT_SEEDS, jpeg_round_trip
from alpamayo_ros.tools.driving_scores import curve_entry_tick, first_tick, stops_before_line, turns_at_entry
from alpamayo_ros.tools.evaluate import WAYPOINTS

BRAKING_AHEAD_M = 30.0  # a red-light tick where the expert brakes for the light, the line this close ahead ...
RED_SAMPLES, RED_STOPPING = 8, 0.75  # ... and at least this share of the sampled plans stop before it
SEED = 0  # sampling seed of the model call
# The shipped driver (session 33) does not pass these yet: its plans turn the right way but too little at the first
# tick of a curve entry (alpamayo_ros/driver/README.md). Strict: a driver that passes turns these into failures
# until the marks go.
NOT_YET = pytest.mark.xfail(strict=True, reason="the embedded driver does not read the scene yet (README)")


@pytest.fixture(scope="module")
def driver():
    return from_pretrained(EMBEDDED_DRIVER_DIR)


def plan(driver, drive, t0):
    sample = drive.model_sample(t0)
    with torch.no_grad():  # the cameras' pixels as a bag delivers them (JPEG), which the driver trained on
        pred = driver.sample(jpeg_round_trip(sample.images), sample.ego_history_xyz, sample.ego_history_rot, seed=SEED)
    return sample, pred.xyz[0, :, :2].numpy(), pred.reasoning[0]


@NOT_YET
@pytest.mark.parametrize("scenario", ["curve_left", "curve_right"])
def test_driver_turns_the_right_way_at_a_curve_entry_and_says_why(driver, scenario):
    drive = world.generate(scenario, HELD_OUT_SEEDS[0])
    t0 = curve_entry_tick(drive)
    sample, xy, reasoning = plan(driver, drive, t0)
    truth_y = sample.future_xyz[-1, 1]
    assert turns_at_entry(xy[-1, 1], truth_y), (
        f"t0={t0} s: planned y(6.4 s) = {xy[-1, 1]:.1f} m, truth {truth_y:.1f} m")
    assert sample.cause in reasoning, f"t0={t0} s: {reasoning!r} does not name {sample.cause!r}"


def test_driver_stops_for_red_and_says_why(driver):
    """At the first tick where the expert brakes for the red light with the line under BRAKING_AHEAD_M ahead
    (the light and the line in view; at the first tick the baseline runs the light, ~70 m out, a 160 px camera
    cannot place the line within the expert's 1 m margin), most sampled plans stop before the line and every
    reasoning names the light. Measured: 7 of 8 stop (session 33's driver, as session 19's; the driver before session
    17: 1 of 8)."""
    drive = world.generate("red_light", HELD_OUT_SEEDS[0])

    def braking_for_red(sample) -> bool:
        pose = drive.expert_pose(sample.t0_s)
        line_m, _ = drive.distances_ahead(pose, sample.t0_s, BRAKING_AHEAD_M)  # NaN beyond it
        braking = drive.drive.binding[int(round(sample.t0_s / world.SIM_DT_S))] == "light"
        return braking and line_m > 0.0 and pose.speed > 5.0

    t0 = first_tick(drive, braking_for_red, "tick braking for red")
    sample = drive.model_sample(t0)
    with torch.no_grad():
        pred = driver.sample(jpeg_round_trip(sample.images), sample.ego_history_xyz, sample.ego_history_rot,
                             seed=SEED, num_samples=RED_SAMPLES)
    plans = pred.xyz[..., :2].numpy().reshape(RED_SAMPLES, WAYPOINTS, 2)
    stopping = sum(stops_before_line(drive, t0, xy) for xy in plans)
    assert stopping >= RED_STOPPING * RED_SAMPLES, f"t0={t0} s: {stopping} of {RED_SAMPLES} plans stop before the line"
    assert all(sample.cause in reasoning for reasoning in pred.reasoning), (t0, pred.reasoning)

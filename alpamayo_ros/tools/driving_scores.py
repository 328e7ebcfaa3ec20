"""Scores of a planned trajectory against the synthetic world's road (tools/world.py): where it stops, and
the ticks where a plan must do what the history does not (a red light ahead, a curve's entry).

Trajectories are (N, 2) xy in the ego frame at t0 on the world's expert drive (x forward, y left, metres).
"""

from __future__ import annotations

import math

import numpy as np

from alpamayo_ros.tools import world as world_module
from alpamayo_ros.tools.driver_data import t0_grid
from alpamayo_ros.tools.evaluate import BASELINE_WINDOW_S, DT_S, WAYPOINTS, unicycle

CURVE_ENTRY_Y_M = 4.0  # a curve entry: the true future ends at least this far sideways at 6.4 s ...
BASELINE_SHARE = 0.5  # ... and the constant speed and yaw rate extrapolation covers less than this share of it
TURN_SHARE = 0.5  # a plan turns at a curve entry: it ends at least this share of the truth's way sideways, that side


def road_s(world, t0_s: float, xy_ego: np.ndarray) -> np.ndarray:
    """(N,) arc lengths along the road of ego-frame points (N, 2), the ego at its expert pose at t0."""
    pose = world.expert_pose(t0_s)
    c, s = math.cos(pose.yaw), math.sin(pose.yaw)
    x = pose.x + c * xy_ego[:, 0] - s * xy_ego[:, 1]
    y = pose.y + s * xy_ego[:, 0] + c * xy_ego[:, 1]
    return np.array([world.lane_offset(float(a), float(b))[0] for a, b in zip(x, y)])


def stops_before_line(world, t0_s: float, xy_ego: np.ndarray) -> bool:
    """The front bumper stays behind the stop line all along the trajectory."""
    return bool(road_s(world, t0_s, xy_ego).max() + world_module.EGO_FRONT_M <= world.stop_line_s)


def red_light_tick(world, t0_s: float, truth: np.ndarray, baseline: np.ndarray) -> bool:
    """A tick where stopping matters: before the line, the true future stops before it and the constant
    velocity baseline would cross it."""
    if world.stop_line_s is None:
        return False
    if road_s(world, t0_s, np.zeros((1, 2)))[0] + world_module.EGO_FRONT_M > world.stop_line_s:
        return False
    return stops_before_line(world, t0_s, truth) and not stops_before_line(world, t0_s, baseline)


def constant_velocity(history_xyz: np.ndarray, history_rot: np.ndarray) -> np.ndarray:
    """(64, 2) evaluate's baseline from a model input's history (the last pose is the t0 origin): the speed and
    yaw rate over the last BASELINE_WINDOW_S, held."""
    k = round(BASELINE_WINDOW_S / DT_S)
    step = history_xyz[-1, :2] - history_xyz[-1 - k, :2]
    yaw_before = math.atan2(history_rot[-1 - k, 1, 0], history_rot[-1 - k, 0, 0])
    return unicycle(float(np.linalg.norm(step)) / BASELINE_WINDOW_S, -yaw_before / BASELINE_WINDOW_S,
                    DT_S * np.arange(1, WAYPOINTS + 1))


def first_tick(world, wanted, what: str) -> float:
    """The first t0 of the drive whose model input `wanted` accepts (its images rendered 8 x 8: only the poses
    are read); ValueError naming `what` if none does."""
    for t0 in t0_grid(world):
        if wanted(world.model_sample(t0, 8, 8)):
            return t0
    raise ValueError(f"{world.scenario} seed {world.seed}: no {what}")


def is_curve_entry(sample) -> bool:
    """The true future ends at least CURVE_ENTRY_Y_M sideways at 6.4 s and the history's constant speed and yaw
    rate cover less than BASELINE_SHARE of that: a curve must be seen."""
    y = sample.future_xyz[-1, 1]
    cv_y = constant_velocity(sample.ego_history_xyz, sample.ego_history_rot)[-1, 1]
    return bool(abs(y) > CURVE_ENTRY_Y_M and abs(cv_y) < BASELINE_SHARE * abs(y))


def curve_entry_tick(world) -> float:
    """The first t0 of the drive that `is_curve_entry`."""
    return first_tick(world, is_curve_entry, "curve entry")


def turns_at_entry(planned_y: float, truth_y: float) -> bool:
    """A plan ending `planned_y` sideways at 6.4 s turns the truth's way, at least TURN_SHARE as far."""
    return bool(np.sign(planned_y) == np.sign(truth_y) and abs(planned_y) >= TURN_SHARE * abs(truth_y))

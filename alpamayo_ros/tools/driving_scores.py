"""Scores of a planned trajectory against the synthetic world's road (tools/world.py): where it stops.

Trajectories are (N, 2) xy in the ego frame at t0 on the world's expert drive (x forward, y left, metres).
"""

from __future__ import annotations

import math

import numpy as np

from alpamayo_ros.tools import world as world_module


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

"""Which sampled trajectories may be published, and which one is selected.

A sample is rejected, with reasons, if any pose or action is not finite, an acceleration or
curvature leaves the release's bounds, its first pose is not where the t0 speed puts it, or it starts
by reversing further behind the vehicle than a reversing manoeuvre could take it.

The release's unicycle integrates the accelerations with no floor at zero speed: a plan that brakes to
a stop and a little beyond runs backwards after its standstill (a cusp in its path). That plan means
"stop there" and is published as the model wrote it; only the stretch before its first cusp counts
for the reversing check, and a forward-driving follower stops at the cusp (`progress_along`).
"""

from __future__ import annotations

import numpy as np
import torch

from alpamayo_ros.model.action_space import UnicycleAccelCurvatureActionSpace
from alpamayo_ros.model.alpamayo_r1 import Prediction

from .settings import OutputLimits, Selection


def cusps(xy: np.ndarray) -> np.ndarray:
    """Indices of the points of an (n, 2) path where it turns back: the steps before and after them point
    against each other. A unicycle path otherwise turns by its curvature times a 0.1 s step, far from that."""
    step = np.diff(np.asarray(xy, dtype=np.float64), axis=0)
    return np.flatnonzero(np.einsum("ij,ij->i", step[1:], step[:-1]) < 0.0) + 1


def progress_along(xy: np.ndarray, forward: np.ndarray | None = None) -> np.ndarray:
    """(n,) signed distance travelled along an (n, 2) path: positive while it moves the way it starts (or, with
    the unit vector `forward`, e.g. the vehicle's heading at the first point, the way that points), changing
    sign at every cusp."""
    step = np.diff(np.asarray(xy, dtype=np.float64), axis=0)
    sign = np.ones(len(step))
    for k in cusps(xy):
        sign[k:] *= -1.0
    if forward is not None and len(step) and float(step[0] @ np.asarray(forward, dtype=np.float64)) < 0.0:
        sign = -sign
    return np.concatenate([[0.0], np.cumsum(sign * np.hypot(step[:, 0], step[:, 1]))])


def sample_problems(pred: Prediction, action_space: UnicycleAccelCurvatureActionSpace,
                    ego_history_xyz: np.ndarray, ego_history_rot: np.ndarray,
                    limits: OutputLimits = OutputLimits()) -> list[list[str]]:
    """Per sample, the reasons it must not be published (an empty list: publishable)."""
    cfg = action_space.cfg
    v0 = float(action_space.estimate_t0_states(torch.as_tensor(ego_history_xyz)[None],
                                               torch.as_tensor(ego_history_rot)[None])[0])
    accel, curvature = action_space.denormalize(pred.action)
    problems: list[list[str]] = []
    for s in range(pred.xyz.shape[0]):
        reasons = []
        if not (torch.isfinite(pred.xyz[s]).all() and torch.isfinite(pred.rot[s]).all()
                and torch.isfinite(pred.action[s]).all()):
            reasons.append("non-finite pose or action")
        else:
            a, k = accel[s], curvature[s]
            if a.min() < cfg.accel_bounds[0] or a.max() > cfg.accel_bounds[1]:
                reasons.append(f"acceleration {float(a.abs().max()):.1f} m/s^2 outside {list(cfg.accel_bounds)}")
            if k.min() < cfg.curvature_bounds[0] or k.max() > cfg.curvature_bounds[1]:
                reasons.append(f"curvature {float(k.abs().max()):.3f} 1/m outside {list(cfg.curvature_bounds)}")
            first = pred.xyz[s, 0, :2].double()
            miss = float(torch.linalg.vector_norm(first - torch.tensor([v0 * cfg.dt, 0.0], dtype=torch.float64)))
            if miss > limits.max_first_pose_error_m:
                reasons.append(f"first pose ({float(first[0]):.2f}, {float(first[1]):.2f}) m is {miss:.2f} m from "
                               f"v0*dt = {v0 * cfg.dt:.2f} m ahead (max {limits.max_first_pose_error_m:.2f} m)")
            path = np.concatenate([np.zeros((1, 2)), pred.xyz[s, :, :2].double().numpy()])  # from the vehicle
            turns = cusps(path)
            first = path[:turns[0] + 1] if turns.size else path  # up to where it first turns back
            behind = -float(progress_along(first, forward=np.array([1.0, 0.0])).min())  # ego frame: x forward
            if behind > limits.max_reverse_m:
                reasons.append(f"it reverses {behind:.1f} m behind the vehicle (max {limits.max_reverse_m:.1f} m)")
        problems.append(reasons)
    return problems


def select_sample(xyz: np.ndarray, candidates: list[int], selection: Selection) -> int:
    """Index (into `xyz`, (S, W, 3)) of the published sample among `candidates`."""
    if not candidates:
        raise ValueError("no candidate samples to select from")
    if selection is Selection.FIRST or len(candidates) == 1:
        return candidates[0]
    paths = xyz[candidates][..., :2]
    ade = np.linalg.norm(paths[:, None] - paths[None, :], axis=-1).mean(axis=-1)  # (C, C)
    return candidates[int(np.argmin(ade.sum(axis=1)))]

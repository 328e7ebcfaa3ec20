"""Output checks and sample selection."""

import dataclasses

import numpy as np
import torch

from alpamayo_ros.model.action_space import UnicycleAccelCurvatureActionSpace
from alpamayo_ros.model.alpamayo_r1 import Prediction, Timings
from alpamayo_ros.model.config import ActionSpaceConfig
from alpamayo_ros.pipeline.outputs import Selection, cusps, progress_along, sample_problems, select_sample
from alpamayo_ros.tools.synthetic import arc_history

SPACE = UnicycleAccelCurvatureActionSpace(ActionSpaceConfig())


def prediction(accel_rows):
    hist_xyz, hist_rot = arc_history(10.0, 0.0)
    accel = torch.tensor(accel_rows, dtype=torch.float32)
    action = SPACE.normalize(accel, torch.zeros_like(accel))
    xyz, rot = SPACE.action_to_traj(action, torch.from_numpy(hist_xyz).expand(len(accel_rows), -1, -1),
                                    torch.from_numpy(hist_rot).expand(len(accel_rows), -1, -1, -1))
    timings = Timings(0.0, 0.0, 0.0, 0.0, 0.0, 0)
    return Prediction(xyz=xyz, rot=rot, action=action, reasoning=[""] * len(accel_rows),
                      complete=[True] * len(accel_rows), timings=timings), hist_xyz, hist_rot


def test_physical_samples_pass_and_impossible_ones_are_named():
    pred, hist_xyz, hist_rot = prediction([[0.0] * 64, [1.0] * 64, [12.0] + [0.0] * 63, [0.0] * 64])
    pred.xyz[3, 5, 0] = float("nan")
    problems = sample_problems(pred, SPACE, hist_xyz, hist_rot)
    assert problems[0] == [] and problems[1] == []
    assert any("acceleration 12.0" in p for p in problems[2])
    assert problems[3] == ["non-finite pose or action"]


def test_first_pose_must_follow_the_t0_speed():
    pred, hist_xyz, hist_rot = prediction([[0.0] * 64])
    pred.xyz[0, :, 0] += 2.0  # teleported 2 m ahead of where 10 m/s puts it
    assert "first pose" in sample_problems(pred, SPACE, hist_xyz, hist_rot)[0][0]


def test_medoid_is_the_sample_closest_to_the_others():
    xyz = np.zeros((4, 64, 3))
    xyz[:, :, 1] = np.array([0.0, 1.0, 1.2, 5.0])[:, None]  # lateral offsets
    assert select_sample(xyz, [0, 1, 2, 3], Selection.MEDOID) == 1
    assert select_sample(xyz, [3, 2], Selection.FIRST) == 3
    assert select_sample(xyz, [0, 3], Selection.MEDOID) == 0  # a tie goes to the first candidate


def test_a_trajectory_reversing_far_behind_the_vehicle_is_rejected_one_that_runs_back_after_a_stop_is_not():
    """The release's unicycle has no floor at zero speed: braking past the standstill runs the plan backwards. That
    plan says stop there (a forward-driving follower holds at its cusp); one that starts by reversing is withheld."""
    pred, hist_xyz, hist_rot = prediction([[-5.0] * 64])  # 10 m/s: stops 10 m ahead, then runs 38 m back
    assert float(pred.xyz[0, :, 0].min()) < -30.0 and sample_problems(pred, SPACE, hist_xyz, hist_rot)[0] == []
    hist_xyz, hist_rot = arc_history(0.0, 0.0)  # standing: the same braking reverses from the start
    accel = torch.full((1, 64), -1.0)
    action = SPACE.normalize(accel, torch.zeros_like(accel))
    xyz, rot = SPACE.action_to_traj(action, torch.from_numpy(hist_xyz)[None], torch.from_numpy(hist_rot)[None])
    standing = dataclasses.replace(pred, xyz=xyz, rot=rot, action=action)
    problems = sample_problems(standing, SPACE, hist_xyz, hist_rot)[0]
    assert any("reverses 20.5 m behind the vehicle" in p for p in problems), problems
    assert progress_along(np.array([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0], [1.5, 0.0]]))[-1] == 1.5
    assert list(cusps(np.array([[0.0, 0.0], [1.0, 0.0], [2.0, 0.1], [1.5, 0.1], [3.0, 0.0]]))) == [2, 3]

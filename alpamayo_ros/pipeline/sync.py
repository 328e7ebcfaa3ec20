"""Choose one model input from the buffers by timestamp: t0, 4 frames per camera and 16 history poses.

Selection reads stamps only; the chosen frames are decoded later, by whoever runs the model.

t0 is the newest stamp of the reference camera (front-wide, or the first camera of a rig without one; the
rig has 4 cameras, or 1 or 2 for Alpamayo 1.5) at which every camera has a frame within
`sync_tolerance` of each of t0 - 0.3, -0.2, -0.1 and 0 s, and odometry covers t0 - 1.5 ... t0 without a
gap longer than `max_odometry_gap`. The 16 history poses are interpolated at exact 0.1 s steps and
expressed in the ego frame at t0 (x forward, y left, z up): p_ego = R0^T (p - p0), R_ego = R0^T R.
The input carries the frames of the pose history it was built from (one pair per history), so its
outputs are labelled with the frame their poses are in. Anything missing gives a `NotReady` naming
what, where and when. Nothing is guessed.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from alpamayo_ros.units import NS_PER_S

from .camera_buffer import CameraBuffer
from .frames import CameraFrame
from .pose_history import HistoryGap, PoseHistory

CAMERA_NAMES = ("cross_left", "front_wide", "cross_right", "front_tele")  # the release's cameras in the model's order


@dataclass(frozen=True, slots=True)
class SyncConfig:
    """Timing rules for `select_inputs` and the odometry history; durations in integer nanoseconds."""

    sync_tolerance_ns: int = 50_000_000  # a frame may be this far from its target time
    max_input_age_ns: int = 500_000_000  # t0 may be this far behind `now`
    max_odometry_gap_ns: int = 250_000_000  # 2-core machines show 40-100 ms odometry gaps under image load
    frame_offsets_ns: tuple[int, ...] = (-300_000_000, -200_000_000, -100_000_000, 0)  # release: 4 frames at 10 Hz
    history_poses: int = 16  # t0 - 1.5 s ... t0
    history_step_ns: int = 100_000_000
    reference_camera: int = 1  # index in the model's camera order: 1 = front-wide of the release's four
    max_pose_jump_m: float = 1.0  # floors of the continuity tolerance (`pose_history.discontinuity`)
    max_yaw_jump_deg: float = 5.0

    def __post_init__(self) -> None:
        if self.sync_tolerance_ns <= 0 or self.max_input_age_ns <= 0 or self.max_odometry_gap_ns <= 0:
            raise ValueError(f"sync_tolerance_ns={self.sync_tolerance_ns}, max_input_age_ns={self.max_input_age_ns} "
                             f"and max_odometry_gap_ns={self.max_odometry_gap_ns} must all be > 0")
        if self.max_pose_jump_m <= 0 or self.max_yaw_jump_deg <= 0:
            raise ValueError(f"max_pose_jump_m={self.max_pose_jump_m} and max_yaw_jump_deg={self.max_yaw_jump_deg} "
                             "must both be > 0")
        if self.sync_tolerance_ns * 2 > self.history_step_ns:  # with the strict check, one frame never fills two slots
            raise ValueError(f"sync_tolerance_ns={self.sync_tolerance_ns} must be at most half the frame spacing "
                             f"({self.history_step_ns // 2}) or one frame could serve two slots")


@dataclass(frozen=True, slots=True)
class ModelInput:
    """One complete, time-consistent model input; its frames are decoded when the model runs."""

    t0_ns: int
    frames: tuple[CameraFrame, ...]  # cameras x 4 undecoded frames, camera-major, oldest first within a camera
    frame_stamps_ns: np.ndarray  # (cameras, frames) int64, the stamps of `images`
    ego_history_xyz: np.ndarray  # (16, 3) float32, metres, ego frame at t0
    ego_history_rot: np.ndarray  # (16, 3, 3) float32, ego frame at t0
    t0_position: np.ndarray  # (3,) float64, odometry frame: where the ego frame sits
    t0_rotation: np.ndarray  # (3, 3) float64, odometry frame
    history_span_ns: tuple[int, int]  # first and last history pose time
    odom_frame: str  # header.frame_id of the history's poses: the frame of t0_position / t0_rotation
    base_frame: str  # their child_frame_id: the vehicle frame whose pose at t0 is the ego frame
    odometry_speed_mps: float = float("nan")  # reported by the odometry at t0
    route: str | None = None  # Alpamayo 1.5 navigation text for this t0 (`route.RouteInput.choose`); None: no route
    route_note: str = ""  # where `route` came from, or why there is none

    @property
    def frame_cameras(self) -> tuple[int, ...]:
        """The camera index of each of `frames`."""
        cameras, frames = self.frame_stamps_ns.shape
        return tuple(c for c in range(cameras) for _ in range(frames))


class Missing(str, enum.Enum):
    """What kept a tick from forming an input: the key under which summaries count not-ready ticks."""

    NO_FRAMES = "camera without frames"
    STALE = "stale input"
    FRAME_OUT_OF_SYNC = "camera frame out of sync"
    ODOMETRY = "odometry does not cover the history"
    NO_NEW_FRAME = "no frame newer than the last input"
    INPUT_REJECTED = "input rejected"
    CLOCK_JUMP = "clock jumped back"


@dataclass(frozen=True, slots=True)
class NotReady:
    """Why no input could be formed at this tick: a category and the full reason in words."""

    kind: Missing
    reason: str


def select_inputs(cameras: Sequence[CameraBuffer], poses: PoseHistory, now_ns: int,
                  cfg: SyncConfig = SyncConfig()) -> ModelInput | NotReady:
    """The newest complete input at or before `now_ns`, or why there is none."""
    for camera in cameras:
        if len(camera) == 0:
            return NotReady(Missing.NO_FRAMES, f"camera {camera.name}: no frames received")
    reference = cameras[cfg.reference_camera]
    first_problem: NotReady | None = None
    for t0 in reversed(reference.stamps_ns()):
        if t0 > now_ns + cfg.sync_tolerance_ns:
            continue  # stamped in the future of this clock: not usable yet
        age = now_ns - t0
        if age > cfg.max_input_age_ns:
            if first_problem is None:
                first_problem = NotReady(Missing.STALE, f"stale input: newest {reference.name} frame is "
                                         f"{age / 1e6:.0f} ms old (max_input_age {cfg.max_input_age_ns / 1e6:.0f} ms)")
            break
        result = _input_at(t0, cameras, poses, cfg)
        if isinstance(result, ModelInput):
            return result
        first_problem = first_problem or result
    return first_problem or NotReady(Missing.STALE, f"camera {reference.name}: no frame at or before now")


def _input_at(t0: int, cameras: Sequence[CameraBuffer], poses: PoseHistory, cfg: SyncConfig) -> ModelInput | NotReady:
    frames, stamps = [], []
    for camera in cameras:
        for offset in cfg.frame_offsets_ns:
            target = t0 + offset
            frame = camera.nearest(target)
            miss = abs(frame.stamp_ns - target)
            if miss >= cfg.sync_tolerance_ns:  # strict: a frame half-way between two slots serves neither
                return NotReady(Missing.FRAME_OUT_OF_SYNC, f"camera {camera.name}: no frame within "
                                f"{cfg.sync_tolerance_ns / 1e6:.0f} ms of t0{offset / NS_PER_S:+.1f} s (nearest "
                                f"{miss / 1e6:.0f} ms away)")
            frames.append(frame)
            stamps.append(frame.stamp_ns)
    times = t0 - cfg.history_step_ns * np.arange(cfg.history_poses - 1, -1, -1, dtype=np.int64)
    try:
        positions, rotations = poses.interpolate(times, cfg.max_odometry_gap_ns)
    except HistoryGap as gap:
        return NotReady(Missing.ODOMETRY, f"odometry: {gap}")
    p0, r0 = positions[-1], rotations[-1]
    inverse = r0.inv()
    xyz = inverse.apply(positions - p0)
    rot = (inverse * rotations).as_matrix()
    return ModelInput(t0_ns=int(t0), frames=tuple(frames),
                      frame_stamps_ns=np.asarray(stamps, dtype=np.int64).reshape(len(cameras), len(cfg.frame_offsets_ns)),
                      ego_history_xyz=xyz.astype(np.float32), ego_history_rot=rot.astype(np.float32),
                      t0_position=p0.copy(), t0_rotation=r0.as_matrix(), history_span_ns=(int(times[0]), int(times[-1])),
                      odom_frame=poses.frames[0], base_frame=poses.frames[1], odometry_speed_mps=poses.speed_at(int(t0)))


@dataclass(frozen=True, slots=True)
class InputLimits:
    """Checks on a selected input before it reaches the model."""

    max_speed_mismatch_mps: float = 2.0  # history-implied speed vs the odometry's own twist
    origin_tol_m: float = 1e-3  # the last history pose must be the origin...
    identity_tol: float = 1e-3  # ...with identity rotation


def input_problems(model_input: ModelInput, limits: InputLimits = InputLimits()) -> list[str]:
    """Why this input must not be used (empty: usable)."""
    xyz, rot = model_input.ego_history_xyz, model_input.ego_history_rot
    if not (np.isfinite(xyz).all() and np.isfinite(rot).all()):
        return ["history contains NaN or inf"]
    problems = []
    if np.abs(xyz[-1]).max() > limits.origin_tol_m or np.abs(rot[-1] - np.eye(3)).max() > limits.identity_tol:
        problems.append("history does not end at the origin with identity rotation")
    step_s = 0.1
    implied = float(np.linalg.norm(xyz[-1, :2] - xyz[-3, :2])) / (2 * step_s)
    reported = model_input.odometry_speed_mps
    if np.isfinite(reported) and abs(implied - reported) > limits.max_speed_mismatch_mps:
        problems.append(f"odometry reports {reported:.1f} m/s but its poses move at {implied:.1f} m/s "
                        f"(max mismatch {limits.max_speed_mismatch_mps:.1f} m/s)")
    return problems

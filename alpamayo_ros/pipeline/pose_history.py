"""Odometry poses by time: bounded storage, continuity, and interpolation at any covered instant.

Positions interpolate linearly, orientations by slerp (scipy), between the two samples that bracket
the query time. A query outside the stored span, or between two samples further apart than the
allowed gap, is refused with a reason: the history is never extrapolated or guessed. One history
holds poses of one frame pair (`frames`); `discontinuity` tells a relocalization jump from motion.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation

from .stamped_buffer import StampedBuffer


@dataclass(frozen=True, slots=True)
class PoseSample:
    """Vehicle pose in the odometry frame."""

    stamp_ns: int
    position: np.ndarray  # (3,) float64, metres
    orientation: np.ndarray  # (4,) float64 unit quaternion, x y z w
    speed_mps: float = float("nan")  # |twist.linear| as reported by the odometry source; NaN if unknown
    velocity_mps: np.ndarray | None = None  # (3,) float64 twist.linear, body (child) frame; None if unknown
    angular_velocity_rps: np.ndarray | None = None  # (3,) float64 twist.angular, body frame; None if unknown


# A pose is continuous with its neighbour when it lies where the twist takes the neighbour, within
#   position: max_pose_jump_m + JUMP_SPEED_FRACTION * |v| * dt
#   rotation: max_yaw_jump_deg + JUMP_YAW_RATE_DEG_S * dt
# The floors (parameters) absorb localizer noise and small corrections; the dt terms the twist's own
# error between the two stamps: speed scale and slip, stamp jitter (half the speed over dt), and a yaw
# rate the twist may not report at all (30 deg/s: 15 m/s on a 30 m radius; sources that leave
# twist.angular at zero pass).
JUMP_SPEED_FRACTION = 0.5
JUMP_YAW_RATE_DEG_S = 30.0


@dataclass(frozen=True, slots=True)
class Discontinuity:
    """How far a pose lies from where its neighbour and the twist put it, against the tolerance."""

    position_m: float
    rotation_deg: float
    dt_ns: int
    allowed_m: float
    allowed_deg: float

    def text(self) -> str:
        """'pose jumped 31.2 m / 20 deg in 20 ms (allowed 1.08 m / 5.6 deg)'."""
        return (f"pose jumped {self.position_m:.1f} m / {self.rotation_deg:.0f} deg in {abs(self.dt_ns) / 1e6:.0f} ms "
                f"(allowed {self.allowed_m:.2f} m / {self.allowed_deg:.1f} deg)")


def discontinuity(before: PoseSample, after: PoseSample, max_pose_jump_m: float,
                  max_yaw_jump_deg: float) -> Discontinuity | None:
    """The jump between two poses of one source beyond the tolerance above, or None if they are continuous.

    The twist (body frame, as nav_msgs/Odometry defines it) predicts the displacement by the trapezoid
    rule, 0.5 (R_a v_a + R_b v_b) dt, and the rotation by R_a exp(0.5 (w_a + w_b) dt); an unknown twist
    predicts no motion. `dt` may be negative (`after` is older).
    """
    dt_s = (after.stamp_ns - before.stamp_ns) / 1e9
    rot_a, rot_b = Rotation.from_quat(before.orientation), Rotation.from_quat(after.orientation)
    predicted = np.zeros(3)
    if before.velocity_mps is not None and after.velocity_mps is not None:
        predicted = 0.5 * (rot_a.apply(before.velocity_mps) + rot_b.apply(after.velocity_mps)) * dt_s
    turn = Rotation.identity()
    if before.angular_velocity_rps is not None and after.angular_velocity_rps is not None:
        turn = Rotation.from_rotvec(0.5 * (before.angular_velocity_rps + after.angular_velocity_rps) * dt_s)
    position_m = float(np.linalg.norm(after.position - before.position - predicted))
    rotation_deg = math.degrees(((rot_a * turn).inv() * rot_b).magnitude())
    speeds = [s.speed_mps for s in (before, after) if math.isfinite(s.speed_mps)]
    speed = max(speeds, default=0.0)
    allowed_m = max_pose_jump_m + JUMP_SPEED_FRACTION * speed * abs(dt_s)
    allowed_deg = max_yaw_jump_deg + JUMP_YAW_RATE_DEG_S * abs(dt_s)
    if position_m <= allowed_m and rotation_deg <= allowed_deg:
        return None
    return Discontinuity(position_m, rotation_deg, after.stamp_ns - before.stamp_ns, allowed_m, allowed_deg)


class HistoryGap(ValueError):
    """The stored odometry does not cover a requested time."""


class PoseHistory:
    """The last `horizon_ns` of odometry poses (at most `max_samples`), all in the frames `frames`."""

    def __init__(self, horizon_ns: int = 4_000_000_000, max_samples: int = 2000) -> None:
        self._poses: StampedBuffer[PoseSample] = StampedBuffer(horizon_ns, max_samples)
        self.frames = ("", "")  # (header.frame_id, child_frame_id) of every stored pose
        self._restart: tuple[int, str] | None = None  # (first stamp, why) of a history begun by `restart`

    def __len__(self) -> int:
        return len(self._poses)

    @property
    def newest_stamp_ns(self) -> int | None:
        return self._poses.newest_stamp_ns

    @property
    def samples(self) -> list[PoseSample]:
        """The stored poses, oldest first."""
        return list(self._poses.items)

    def push(self, sample: PoseSample) -> None:
        """Insert by stamp (a repeated stamp replaces); drop samples older than the horizon."""
        self._poses.push(sample.stamp_ns, sample)

    def clear(self) -> None:
        self._poses.clear()
        self._restart = None

    def restart(self, sample: PoseSample, frames: tuple[str, str], why: str) -> None:
        """Discard every pose and begin again with `sample` in `frames`; queries before it say `why`."""
        self.clear()
        self.frames = frames
        self._restart = (sample.stamp_ns, why)
        self.push(sample)

    def neighbour(self, stamp_ns: int) -> PoseSample | None:
        """The stored pose nearest `stamp_ns` (None if empty)."""
        i = self._poses.nearest_index(stamp_ns)
        return None if i is None else self._poses.items[i]

    def speed_at(self, stamp_ns: int) -> float:
        """Reported speed of the sample nearest `stamp_ns` (NaN if none or unknown)."""
        i = self._poses.nearest_index(stamp_ns)
        return float("nan") if i is None else self._poses.items[i].speed_mps

    def interpolate(self, stamps_ns: np.ndarray, max_gap_ns: int) -> tuple[np.ndarray, Rotation]:
        """Poses at the given times: positions (N, 3) float64 and a Rotation of length N.

        Raises HistoryGap naming the first uncovered time (before the oldest sample, after the newest,
        or between samples more than `max_gap_ns` apart).
        """
        if not self._poses.stamps:
            raise HistoryGap("no odometry received yet")
        stamps = np.asarray(self._poses.stamps, dtype=np.int64)
        queries = np.asarray(stamps_ns, dtype=np.int64)
        if queries.min() < stamps[0] or queries.max() > stamps[-1]:
            restarted = ""
            if self._restart is not None and self._restart[0] == stamps[0] and queries.min() < stamps[0]:
                restarted = f" (history restarted at {stamps[0] / 1e9:.3f} s: {self._restart[1]})"
            raise HistoryGap(f"odometry covers {_span(stamps[0], stamps[-1])}, need "
                             f"{_span(queries.min(), queries.max())}{restarted}")
        upper = np.searchsorted(stamps, queries, side="left").clip(1, len(stamps) - 1)
        lower = upper - 1
        exact = stamps[upper] == queries
        lower = np.where(exact, upper, lower)
        gaps = stamps[upper] - stamps[lower]
        if (gaps > max_gap_ns).any():
            k = int(np.argmax(gaps > max_gap_ns))
            raise HistoryGap(f"odometry gap of {gaps[k] / 1e6:.0f} ms around t={queries[k] / 1e9:.3f} s "
                             f"(max {max_gap_ns / 1e6:.0f} ms)")
        span = np.maximum(gaps, 1)
        fraction = np.where(exact, 0.0, (queries - stamps[lower]) / span)
        positions = np.stack([s.position for s in self._poses.items])
        quats = Rotation.from_quat(np.stack([s.orientation for s in self._poses.items]))
        out_positions = positions[lower] + fraction[:, None] * (positions[upper] - positions[lower])
        start = quats[lower]
        delta = (start.inv() * quats[upper]).as_rotvec()  # shortest arc between the bracketing samples
        return out_positions, start * Rotation.from_rotvec(fraction[:, None] * delta)


def _span(start_ns: int, end_ns: int) -> str:
    return f"[{start_ns / 1e9:.3f}, {end_ns / 1e9:.3f}] s"

"""Odometry poses by time: bounded storage and interpolation at any covered instant.

Positions interpolate linearly, orientations by slerp (scipy), between the two samples that bracket
the query time. A query outside the stored span, or between two samples further apart than the
allowed gap, is refused with a reason: the history is never extrapolated or guessed.
"""

from __future__ import annotations

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


class HistoryGap(ValueError):
    """The stored odometry does not cover a requested time."""


class PoseHistory:
    """The last `horizon_ns` of odometry poses (at most `max_samples`)."""

    def __init__(self, horizon_ns: int = 4_000_000_000, max_samples: int = 2000) -> None:
        self._poses: StampedBuffer[PoseSample] = StampedBuffer(horizon_ns, max_samples)

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
            raise HistoryGap(f"odometry covers {_span(stamps[0], stamps[-1])}, need {_span(queries.min(), queries.max())}")
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

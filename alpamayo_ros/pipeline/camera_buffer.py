"""Per-camera ring of recent frames, looked up by timestamp.

Frames are kept sorted by their header stamp (integer nanoseconds), whatever order they arrive in,
and only for `horizon_ns` behind the newest one: enough for the model's 0.3 s of frames plus the
input age and synchronisation slack, never unbounded.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class CameraFrame:
    """One decoded camera image."""

    stamp_ns: int  # header stamp, nanoseconds
    image: np.ndarray  # (H, W, 3) uint8 RGB


class CameraBuffer:
    """The last `horizon_ns` of one camera's frames (at most `max_frames`)."""

    def __init__(self, name: str, horizon_ns: int = 1_500_000_000, max_frames: int = 64) -> None:
        if horizon_ns <= 0 or max_frames <= 0:
            raise ValueError(f"camera {name}: horizon_ns={horizon_ns} and max_frames={max_frames} must be > 0")
        self.name = name
        self.horizon_ns = horizon_ns
        self.max_frames = max_frames
        self._stamps: list[int] = []
        self._frames: list[CameraFrame] = []

    def __len__(self) -> int:
        return len(self._frames)

    @property
    def newest_stamp_ns(self) -> int | None:
        return self._stamps[-1] if self._stamps else None

    def stamps_ns(self) -> list[int]:
        """Stamps of the buffered frames, oldest first."""
        return list(self._stamps)

    def clear(self) -> None:
        self._stamps.clear()
        self._frames.clear()

    def push(self, frame: CameraFrame) -> None:
        """Insert a frame by stamp (a repeated stamp replaces the frame); drop what fell out of the horizon."""
        i = bisect.bisect_left(self._stamps, frame.stamp_ns)
        if i < len(self._stamps) and self._stamps[i] == frame.stamp_ns:
            self._frames[i] = frame
        else:
            self._stamps.insert(i, frame.stamp_ns)
            self._frames.insert(i, frame)
        cutoff = self._stamps[-1] - self.horizon_ns
        drop = max(bisect.bisect_left(self._stamps, cutoff), len(self._stamps) - self.max_frames)
        if drop > 0:
            del self._stamps[:drop], self._frames[:drop]

    def nearest(self, stamp_ns: int) -> CameraFrame | None:
        """The frame whose stamp is closest to `stamp_ns` (the earlier one on a tie), or None if empty."""
        if not self._stamps:
            return None
        i = bisect.bisect_left(self._stamps, stamp_ns)
        candidates = [j for j in (i - 1, i) if 0 <= j < len(self._stamps)]
        best = min(candidates, key=lambda j: abs(self._stamps[j] - stamp_ns))
        return self._frames[best]

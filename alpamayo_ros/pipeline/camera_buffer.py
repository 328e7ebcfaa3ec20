"""Per-camera ring of recent (undecoded) frames, looked up by timestamp.

Frames are kept sorted by their header stamp (integer nanoseconds), whatever order they arrive in,
and only for `horizon_ns` behind the newest one: enough for the model's 0.3 s of frames plus the
input age and synchronisation slack, never unbounded.
"""

from __future__ import annotations

from .frames import CameraFrame
from .stamped_buffer import StampedBuffer


class CameraBuffer:
    """The last `horizon_ns` of one camera's frames (at most `max_frames`)."""

    def __init__(self, name: str, horizon_ns: int = 1_500_000_000, max_frames: int = 64) -> None:
        self.name = name
        self._frames: StampedBuffer[CameraFrame] = StampedBuffer(horizon_ns, max_frames)

    def __len__(self) -> int:
        return len(self._frames)

    @property
    def newest_stamp_ns(self) -> int | None:
        return self._frames.newest_stamp_ns

    def has(self, stamp_ns: int) -> bool:
        """Whether a frame with exactly this stamp is buffered."""
        return self._frames.has(stamp_ns)

    def stamps_ns(self) -> list[int]:
        """Stamps of the buffered frames, oldest first."""
        return list(self._frames.stamps)

    def clear(self) -> None:
        self._frames.clear()

    def push(self, frame: CameraFrame) -> None:
        """Insert a frame by stamp (a repeated stamp replaces the frame); drop what fell out of the horizon."""
        self._frames.push(frame.stamp_ns, frame)

    def remove(self, stamp_ns: int) -> None:
        """Forget the frame with this stamp (it failed to decode), if it is still buffered."""
        self._frames.remove(stamp_ns)

    def nearest(self, stamp_ns: int) -> CameraFrame | None:
        """The frame whose stamp is closest to `stamp_ns` (the earlier one on a tie), or None if empty."""
        i = self._frames.nearest_index(stamp_ns)
        return None if i is None else self._frames.items[i]

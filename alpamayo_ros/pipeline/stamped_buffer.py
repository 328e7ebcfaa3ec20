"""Items kept sorted by integer-nanosecond stamp, bounded in time span and count.

The shared storage of camera frames and odometry poses: whatever order messages arrive in, items stay
sorted; a repeated stamp replaces its item; items older than `horizon_ns` behind the newest are dropped.
"""

from __future__ import annotations

import bisect
from typing import Generic, TypeVar

Item = TypeVar("Item")


class StampedBuffer(Generic[Item]):
    """Sorted (stamp_ns, item) pairs within `horizon_ns` of the newest, at most `max_items`."""

    def __init__(self, horizon_ns: int, max_items: int) -> None:
        if horizon_ns <= 0 or max_items <= 0:
            raise ValueError(f"horizon_ns={horizon_ns} and max_items={max_items} must be > 0")
        self.horizon_ns = horizon_ns
        self.max_items = max_items
        self.stamps: list[int] = []
        self.items: list[Item] = []

    def __len__(self) -> int:
        return len(self.items)

    @property
    def newest_stamp_ns(self) -> int | None:
        return self.stamps[-1] if self.stamps else None

    def push(self, stamp_ns: int, item: Item) -> None:
        i = bisect.bisect_left(self.stamps, stamp_ns)
        if i < len(self.stamps) and self.stamps[i] == stamp_ns:
            self.items[i] = item
        else:
            self.stamps.insert(i, stamp_ns)
            self.items.insert(i, item)
        cutoff = self.stamps[-1] - self.horizon_ns
        drop = max(bisect.bisect_left(self.stamps, cutoff), len(self.stamps) - self.max_items)
        if drop > 0:
            del self.stamps[:drop], self.items[:drop]

    def has(self, stamp_ns: int) -> bool:
        i = bisect.bisect_left(self.stamps, stamp_ns)
        return i < len(self.stamps) and self.stamps[i] == stamp_ns

    def remove(self, stamp_ns: int) -> None:
        i = bisect.bisect_left(self.stamps, stamp_ns)
        if i < len(self.stamps) and self.stamps[i] == stamp_ns:
            del self.stamps[i], self.items[i]

    def nearest_index(self, stamp_ns: int) -> int | None:
        """Index of the item closest to `stamp_ns` (the earlier one on a tie), None if empty."""
        if not self.stamps:
            return None
        i = bisect.bisect_left(self.stamps, stamp_ns)
        return min((j for j in (i - 1, i) if 0 <= j < len(self.stamps)), key=lambda j: abs(self.stamps[j] - stamp_ns))

    def clear(self) -> None:
        self.stamps.clear()
        self.items.clear()

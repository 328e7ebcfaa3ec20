"""Vision-tower outputs kept across calls, keyed by the caller (e.g. camera and stamp).

At 10 Hz ticks with 4 frames per camera, 12 of the 16 images of a tick were encoded on the previous
tick. Encodings are bitwise per-image ones (see `AlpamayoR1.encode_images`), so a cached one is exactly
what encoding again would give. Bounded: the least recently used entries go first.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass

import torch

DEFAULT_MAX_ENTRIES = 48  # 3 ticks of 16 images


@dataclass(frozen=True, slots=True)
class EncodedImage:
    """One image through the processor and the vision tower."""

    grid_thw: torch.Tensor  # (1, 3) int64, patches before merging
    embeds: torch.Tensor  # (tokens, hidden): the LLM's tokens for this image
    deepstack: tuple[torch.Tensor, ...]  # per deepstack layer, (tokens, hidden)


class VisionCache:
    """LRU map from caller key to EncodedImage, with hit/miss counts."""

    def __init__(self, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries={max_entries} must be >= 1")
        self.max_entries = max_entries
        self._entries: OrderedDict[Hashable, EncodedImage] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._entries

    def get(self, key: Hashable) -> EncodedImage:
        """The cached encoding for `key` (counted as a hit); KeyError if there is none."""
        value = self._entries[key]
        self.hits += 1
        self._entries.move_to_end(key)
        return value

    def put(self, key: Hashable, value: EncodedImage) -> None:
        """Store a fresh encoding (counted as a miss), dropping the least recently used beyond the bound."""
        self.misses += 1
        self._entries[key] = value
        self._entries.move_to_end(key)
        if len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()

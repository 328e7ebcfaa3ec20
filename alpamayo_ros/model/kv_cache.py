"""A decode cache that appends in place: the prompt's keys/values in buffers with room for the reasoning.

transformers' `DynamicLayer` appends each decoded token with `torch.cat`, a new allocation and a full
copy of the layer's cache per token (on the CPU also fresh pages: allocations this large are mmap'ed).
`ReservedLayer` writes into a buffer reserved once and hands out views of its filled part: the same
values and shapes, so attention over it gives the same numbers; past the reservation it grows by `cat`.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers.cache_utils import DynamicCache, DynamicLayer


class ReservedLayer(DynamicLayer):
    """A `DynamicLayer` whose keys/values are views into buffers with room for `capacity` tokens."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, capacity: int) -> None:
        super().__init__()
        self.dtype, self.device, self.is_initialized = keys.dtype, keys.device, True
        length = keys.shape[-2]
        if capacity < length:
            raise ValueError(f"reserved capacity {capacity} is below the cache length {length}")
        self._key_buffer = keys.new_empty((*keys.shape[:-2], capacity, keys.shape[-1]))
        self._value_buffer = values.new_empty((*values.shape[:-2], capacity, values.shape[-1]))
        self._key_buffer[..., :length, :] = keys
        self._value_buffer[..., :length, :] = values
        self.keys, self.values = self._key_buffer[..., :length, :], self._value_buffer[..., :length, :]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor,
               cache_kwargs: dict[str, Any] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        start = self.keys.shape[-2]
        end = start + key_states.shape[-2]
        if end > self._key_buffer.shape[-2] or self.keys.shape[0] != self._key_buffer.shape[0]:
            return super().update(key_states, value_states, cache_kwargs)  # beyond the reservation
        self._key_buffer[..., start:end, :] = key_states
        self._value_buffer[..., start:end, :] = value_states
        self.keys, self.values = self._key_buffer[..., :end, :], self._value_buffer[..., :end, :]
        return self.keys, self.values


def reserve(cache: DynamicCache, tokens: int) -> DynamicCache:
    """Give every layer of a filled `cache` room for `tokens` more, in place; returns the cache."""
    cache.layers = [ReservedLayer(layer.keys, layer.values, layer.get_seq_length() + tokens)
                    for layer in cache.layers]
    return cache

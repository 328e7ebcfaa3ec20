"""The VLM's keys/values as the action expert reads them, without reallocating between Euler steps.

The prefix (prompt + reasoning) is copied once into per-layer buffers sized prefix + W (W = 64 action
tokens), repeated over samples if the reasoning is shared. Each expert call writes its W new keys and
values into the tail and attends over the whole buffer; the next step overwrites the same tail. The
prefix is never modified, so nothing has to be cropped, copied or regrown per step. It implements the
two cache methods the transformers text decoder calls (`update`, `get_seq_length`).
"""

from __future__ import annotations

import torch
from transformers.cache_utils import DynamicCache


class ExpertKVCache:
    """Per-layer (S, kv_heads, prefix + W, head_dim) buffers; the first `prefix_length` columns fixed."""

    def __init__(self, cache: DynamicCache, tail: int, repeat: int = 1) -> None:
        """Copy `cache` (batch B) into buffers of batch B * `repeat` with `tail` free columns."""
        self.prefix_length = cache.get_seq_length()
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        for layer in cache.layers:
            for source, target in ((layer.keys, self.keys), (layer.values, self.values)):
                batch, heads, length, dim = source.shape
                buffer = source.new_empty(batch, repeat, heads, length + tail, dim)
                buffer[:, :, :, :length] = source[:, None]
                target.append(buffer.view(batch * repeat, heads, length + tail, dim))

    def get_seq_length(self, layer_idx: int = 0) -> int:
        """Tokens before the action tokens: where their positions and cache columns start."""
        return self.prefix_length

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int,
               cache_kwargs: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Write the action tokens' keys/values after the prefix; return the layer's full keys/values."""
        end = self.prefix_length + key_states.shape[2]
        self.keys[layer_idx][:, :, self.prefix_length:end] = key_states
        self.values[layer_idx][:, :, self.prefix_length:end] = value_states
        return self.keys[layer_idx][:, :, :end], self.values[layer_idx][:, :, :end]

"""The action expert's pass: a text decoder over flow tokens that reads the VLM's cached prefix.

Everything that does not change over the Euler steps is built once per call (`ExpertContext`): the
prefix keys/values copied into per-layer buffers with room for the flow tokens, the attention mask and
the rotary embeddings. Each step then writes the new tokens' keys/values into the buffers' tail and
attends over the whole buffer; nothing is cropped, regrown or reallocated between steps.

Row layout. The cache has R rows (one per reasoning). Each row carries `repeat` samples of W flow tokens
side by side along the sequence (T = repeat * W tokens per row): with one shared reasoning, six samples
are one row of 384 tokens reading a single copy of the prefix, instead of six copies. The mask keeps
the samples apart: a token sees its row's prefix and the W tokens of its own sample only. The layer
arithmetic is the transformers Qwen3-VL decoder layer's, over the same submodules, so the release's
`expert.*` weights are used unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers.cache_utils import DynamicCache
from transformers.models.qwen3_vl.modeling_qwen3_vl import Qwen3VLTextModel, apply_rotary_pos_emb

MAX_POOLED_SHAPES = 4  # buffer sets a pool keeps (one per sample count and reasoning budget in use)


@dataclass(frozen=True, slots=True)
class ExpertContext:
    """What the expert reads at every Euler step of one call. R rows of T = repeat * W flow tokens."""

    keys: list[torch.Tensor]  # per layer (R, kv_heads, C + T, head_dim): prefix in [0, C), flow tokens after
    values: list[torch.Tensor]
    attention_mask: torch.Tensor  # (R, 1, groups * T, C + T) additive (0 = attend, finfo.min = hidden): the
    # mask once for each query head that shares a KV head, as the queries are laid out in `expert_forward`
    cos: torch.Tensor  # (R, T, head_dim) rotary embedding of the flow tokens' positions
    sin: torch.Tensor
    position_ids: torch.Tensor  # (3, R, T) M-RoPE positions (equal on the three axes)
    repeat: int  # samples per row
    capacity: int  # C: prefix columns, >= the cache length; columns past a row's prefix are hidden

    @property
    def mask(self) -> torch.Tensor:
        """(R, 1, T, C + T): which columns each flow token sees."""
        return self.attention_mask[:, :, :self.position_ids.shape[-1]]


def build_context(expert: Qwen3VLTextModel, cache: DynamicCache, offsets: torch.Tensor, rope_delta: torch.Tensor,
                  waypoints: int, repeat: int = 1, capacity: int | None = None, causal: bool = False,
                  pool: dict | None = None, visible: torch.Tensor | None = None) -> ExpertContext:
    """Copy the cache's R rows into buffers of C + repeat * W columns and build the mask and positions.

    `offsets` (R,): row r's flow tokens take positions offsets[r] + rope_delta[r] + k. `visible` (R,),
    default `offsets` capped at the cache length: row r's prefix is cache columns [0, visible[r]);
    later columns (tokens generated after its <|traj_future_start|> while other rows went on) are
    hidden. Upstream, a row without <|traj_future_start|> has offset = cache length + 1 and sees the
    whole cache. `rope_delta` (R, 1): M-RoPE position minus cache index. `capacity` (default: the
    cache length) fixes C, so that calls whose reasoning lengths differ have the same shapes (one
    compiled graph). `causal`: flow tokens see only earlier ones of their sample (the release's
    expert is non-causal). `pool`: buffers by shape, kept across calls, so that a call fills the
    buffers of an earlier one of its shape (fixed addresses for CUDA graphs).
    """
    length = cache.get_seq_length()
    capacity = length if capacity is None else capacity
    if capacity < length:
        raise ValueError(f"expert prefix capacity {capacity} is below the cache length {length}")
    rows, tokens = offsets.shape[0], repeat * waypoints
    first = cache.layers[0].keys
    if first.shape[0] != rows:
        raise ValueError(f"cache has {first.shape[0]} rows, offsets {rows}")
    keys, values = _buffers(pool, (rows, first.shape[1], capacity + tokens, first.shape[3]), first, len(cache.layers))
    for layer, key_buffer, value_buffer in zip(cache.layers, keys, values):
        for source, buffer in ((layer.keys, key_buffer), (layer.values, value_buffer)):
            buffer[:, :, :length] = source
            buffer[:, :, length:capacity] = 0  # hidden columns, kept finite (masked NaN would spread)

    device = keys[0].device
    offsets = offsets.to(device)
    if visible is None:
        visible = offsets.clamp(max=length)
    elif bool((visible > length).any()):
        raise ValueError(f"visible prefix {visible.tolist()} exceeds the cache length {length}")
    step = torch.arange(tokens, device=device) % waypoints  # waypoint index of each flow token
    sample = torch.arange(tokens, device=device) // waypoints  # sample index within the row
    prefix_column = torch.arange(capacity, device=device)
    prefix_hidden = (prefix_column >= visible[:, None]).view(rows, 1, capacity).expand(rows, tokens, capacity)
    flow_hidden = sample[:, None] != sample[None, :]
    if causal:
        flow_hidden = flow_hidden | (step[None, :] > step[:, None])
    hidden = torch.cat([prefix_hidden, flow_hidden.expand(rows, tokens, tokens)], dim=-1)
    groups = expert.config.num_attention_heads // expert.config.num_key_value_heads
    mask = torch.zeros(rows, 1, groups * tokens, capacity + tokens, dtype=expert.dtype, device=device)
    mask.masked_fill_(hidden.repeat(1, groups, 1)[:, None], torch.finfo(mask.dtype).min)

    # A sample's W tokens continue its prefix: positions offset + rope_delta + k on all three axes.
    positions = (rope_delta.to(device) + offsets[:, None] + step).unsqueeze(0).expand(3, rows, tokens)
    cos, sin = expert.rotary_emb(keys[0], positions)  # (x only sets dtype and device)
    return ExpertContext(keys=keys, values=values, attention_mask=mask, cos=cos, sin=sin, position_ids=positions,
                         repeat=repeat, capacity=capacity)


def _buffers(pool: dict | None, shape: tuple[int, ...], like: torch.Tensor,
             layers: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per-layer key and value buffers of `shape`: new, or from `pool` (at most MAX_POOLED_SHAPES kept)."""
    if pool is None:
        return [like.new_empty(shape) for _ in range(layers)], [like.new_empty(shape) for _ in range(layers)]
    key = (shape, like.dtype, like.device)
    if key not in pool:
        if len(pool) >= MAX_POOLED_SHAPES:
            del pool[next(iter(pool))]  # the oldest shape
        made = [like.new_empty(shape) for _ in range(layers)], [like.new_empty(shape) for _ in range(layers)]
        if like.device.type == "cuda":
            for buffer in made[0] + made[1]:
                torch._dynamo.mark_static_address(buffer)
        pool[key] = made
    return pool[key]


def expert_forward(expert: Qwen3VLTextModel, embeds: torch.Tensor, context: ExpertContext) -> torch.Tensor:
    """(R, T, hidden) flow-token embeddings -> (R, T, hidden) final hidden states.

    Writes each layer's flow-token keys/values into `context`'s buffer tails (overwritten next step).
    """
    hidden = embeds
    start = context.capacity
    for layer, keys, values in zip(expert.layers, context.keys, context.values):
        attention = layer.self_attn
        x = layer.input_layernorm(hidden)
        heads_shape = (*x.shape[:-1], -1, attention.head_dim)
        q = attention.q_norm(attention.q_proj(x).view(heads_shape)).transpose(1, 2)
        k = attention.k_norm(attention.k_proj(x).view(heads_shape)).transpose(1, 2)
        v = attention.v_proj(x).view(heads_shape).transpose(1, 2)
        q, k = apply_rotary_pos_emb(q, k, context.cos, context.sin)
        keys[:, :, start:] = k
        values[:, :, start:] = v
        # Grouped-query attention without copying keys/values: the query heads that share a KV head are
        # stacked along the sequence, which leaves plain masked attention (no `enable_gqa` kernel needed).
        rows, kv_heads, tokens = q.shape[0], keys.shape[1], q.shape[2]
        q = q.reshape(rows, kv_heads, -1, attention.head_dim)
        out = F.scaled_dot_product_attention(q, keys, values, attn_mask=context.attention_mask,
                                             scale=attention.scaling)
        # (R, kv, groups * T, D) -> (R, T, kv * groups * D); strided, as some kernels return it transposed.
        out = out.unflatten(2, (-1, tokens)).permute(0, 3, 1, 2, 4).reshape(*x.shape[:-1], -1)
        hidden = hidden + attention.o_proj(out)
        hidden = hidden + layer.mlp(layer.post_attention_layernorm(hidden))
    return expert.norm(hidden)

"""The release's training losses (NVlabs/alpamayo-recipes `alpamayo1_sft`): VLM cross-entropy and flow matching.

One training conversation is the inference prompt (which ends with <|cot_start|>) continued by the
Chain-of-Causation, <|cot_end|>, <|traj_future_start|>, 128 future tokens, <|traj_future_end|>, <|im_end|>.
The VLM runs over it once (`AlpamayoR1.prefix_forward`, the prefill's own code). Stage 1 scores next
tokens on the supervised spans; stage 2 crops that pass's cache after <|traj_future_start|>, detaches it,
and trains the expert to predict the flow velocity x - noise at x_t = t x + (1 - t) noise, reading the
cache through the same `build_context` / `velocity` as inference. Facts: ../shared/reference/training.md.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from transformers.cache_utils import DynamicCache

from .alpamayo_r1 import AlpamayoR1, EncodedInputs
from .config import FutureTokenizerConfig
from .expert import build_context
from .prompt import TokenIds, special_token

logger = logging.getLogger(__name__)

IGNORE = -100  # label of an unsupervised position (HF / the recipe)
FUTURE_TOKENS_PER_WAYPOINT = 2  # (accel, curvature) interleaved: 64 waypoints -> 128 tokens
# Flow time t = T_SCALE - T_SCALE * s, s ~ Beta(BETA_C1, BETA_C0) (recipe `construct_training_data`).
BETA_C1, BETA_C0, T_SCALE = 1.5, 1.0, 0.999
LABEL_COMPONENTS = ("cot", "traj_future")  # the recipe's CoC run: both spans supervised


@dataclass(frozen=True, slots=True)
class TrainingExample:
    """One supervised sample: the model's inputs at t0, the true future and its Chain-of-Causation."""

    images: np.ndarray | None  # (4, 4, H, W, 3) uint8 RGB, release camera order, frames oldest first; None when
    # `make_batch` is given them encoded
    ego_history_xyz: np.ndarray  # (16, 3) float32, metres, ego frame at t0
    ego_history_rot: np.ndarray  # (16, 3, 3) float32
    future_xyz: np.ndarray  # (64, 3) float32, poses at t0 + 0.1 .. 6.4 s, ego frame at t0
    future_rot: np.ndarray  # (64, 3, 3) float32
    coc: str  # e.g. "Decelerate to a stop because the traffic light ahead is red."


@dataclass(frozen=True, slots=True)
class Batch:
    """B training conversations, right-padded (causal attention: pads after a row change nothing before)."""

    input_ids: torch.Tensor  # (B, L) int64: history fused; future slots hold bins (stage 1) or placeholders
    labels: torch.Tensor  # (B, L) int64, IGNORE where unsupervised
    crop: torch.Tensor  # (B,) int64: index of <|traj_future_start|> + 1, the prefix the expert reads
    image_grid_thw: torch.Tensor  # (B * 16, 3) int64
    image_embeds: torch.Tensor  # (image tokens, hidden)
    deepstack: list[torch.Tensor]
    action: torch.Tensor  # (B, 64, 2) float32, normalised: traj_to_action(history, future)


@dataclass(frozen=True, slots=True)
class Losses:
    """One step's losses (scalars). `vlm` = `vlm_future` + `vlm_others`, as stage 1 sums them."""

    vlm_future: torch.Tensor  # CE over trajectory-token labels (future bins, <|traj_future_start/end|>)
    vlm_others: torch.Tensor  # CE over the other labels (the CoC span, an assistant <|im_end|>)
    flow: torch.Tensor  # flow-matching MSE
    flow_error: torch.Tensor  # (B * flow_draws, W, 2): predicted minus target velocity, whose mean square is `flow`

    @property
    def vlm(self) -> torch.Tensor:
        return self.vlm_future + self.vlm_others


def completion_ids(model: AlpamayoR1, coc: str) -> torch.Tensor:
    """(1, N) ids after the inference prompt: CoC, <|cot_end|>, <|traj_future_start|>, 128 x <|traj_future|>,
    <|traj_future_end|>, <|im_end|>, newline (recipe chat template r1, training mode)."""
    future = special_token("traj_future") * model.config.tokens_per_future_traj
    text = (f"{coc}{special_token('cot_end')}{special_token('traj_future_start')}{future}"
            f"{special_token('traj_future_end')}<|im_end|>\n")
    # Special tokens split the text, so tokenising this part alone equals tokenising the whole conversation.
    return model.prompt_encoder.tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]


def label_mask(input_ids: torch.Tensor, token_ids: TokenIds, tokenizer,
               components: Sequence[str] = LABEL_COMPONENTS) -> torch.Tensor:
    """(B, L) bool: the recipe's `get_label_mask` | `get_role_eos_mask`.

    Each component's span <|X_start|> .. <|X_end|> inclusive (starts and ends paired in order), plus the
    <|im_end|> closing an assistant turn, found as the token after <|im_start|> being the single token
    "assistant" (so never with a tokenizer where "assistant" is several tokens, e.g. the byte-level tiny one).
    """
    mask = torch.zeros_like(input_ids, dtype=torch.bool)
    for row in range(input_ids.shape[0]):
        ids = input_ids[row].tolist()
        for name in components:
            starts = [i for i, t in enumerate(ids) if t == token_ids.special[f"{name}_start"]]
            ends = [i for i, t in enumerate(ids) if t == token_ids.special[f"{name}_end"]]
            if len(starts) != len(ends):
                raise ValueError(f"row {row}: {len(starts)} <|{name}_start|> but {len(ends)} <|{name}_end|>")
            for start, end in zip(starts, ends):
                mask[row, start:end + 1] = True
        assistant = tokenizer.convert_tokens_to_ids("assistant")
        if assistant is not None and assistant != tokenizer.unk_token_id:
            im_start = tokenizer.convert_tokens_to_ids("<|im_start|>")
            for i, t in enumerate(ids[:-1]):
                if t == im_start and ids[i + 1] == assistant:
                    close = next((j for j in range(i + 2, len(ids)) if ids[j] == token_ids.eos), None)
                    if close is not None:
                        mask[row, close] = True
    return mask


def future_token_bins(action: torch.Tensor, cfg: FutureTokenizerConfig) -> torch.Tensor:
    """(B, W, 2) normalised actions -> (B, 2 W) int64 bins, (accel, curvature) interleaved per waypoint
    (`DiscreteTrajectoryTokenizer.encode`): round((a - min) / (max - min) * (bins - 1)), clamped."""
    lo = torch.tensor(cfg.dims_min, dtype=torch.float32, device=action.device)
    hi = torch.tensor(cfg.dims_max, dtype=torch.float32, device=action.device)
    unit = (action.float() - lo) / (hi - lo)
    bins = torch.round(unit * (cfg.num_bins - 1)).clamp(0, cfg.num_bins - 1).long()
    return bins.reshape(bins.shape[0], -1)


def fuse_future(input_ids: torch.Tensor, bins: torch.Tensor, token_ids: TokenIds) -> torch.Tensor:
    """Stage 1: write `traj_token_start_idx + bins` (B, 128) over each row's <|traj_future|> placeholders."""
    slots = input_ids == token_ids.special["traj_future"]
    if not bool((slots.sum(dim=1) == bins.shape[1]).all()):
        raise ValueError(f"rows have {slots.sum(dim=1).tolist()} future placeholders, expected {bins.shape[1]}")
    fused = input_ids.clone()
    fused[slots] = (bins + token_ids.traj_token_start_idx).reshape(-1).to(fused.dtype)
    return fused


def make_batch(model: AlpamayoR1, examples: Sequence[TrainingExample], fuse_future_bins: bool = True,
               encoded: Sequence[EncodedInputs] | None = None) -> Batch:
    """Encode images (with gradients, when enabled) and build the right-padded conversations and labels.

    `fuse_future_bins`: stage 1 writes the future's discrete bins into the placeholders; stage 2 alone
    (the recipe's `fuse_traj_tokens`) leaves them, and the crop drops them before the expert reads the cache.
    `encoded`: each example's `encode_inputs`, made earlier by a vision tower that is not trained now; the
    examples' images are then not read.
    """
    token_ids = model.token_ids
    if encoded is not None and len(encoded) != len(examples):
        raise ValueError(f"{len(encoded)} encodings for {len(examples)} examples")
    rows, grids, embeds, deepstack, actions = [], [], [], [], []
    for k, example in enumerate(examples):
        inputs = model.encode_inputs(example.images, example.ego_history_xyz) if encoded is None else encoded[k]
        ids = torch.cat([inputs.input_ids, completion_ids(model, example.coc)], dim=1)
        hist_xyz = torch.as_tensor(example.ego_history_xyz, dtype=torch.float32)
        hist_rot = torch.as_tensor(example.ego_history_rot, dtype=torch.float32)
        action = model.action_space.traj_to_action(hist_xyz, hist_rot,
                                                   torch.as_tensor(example.future_xyz, dtype=torch.float32),
                                                   torch.as_tensor(example.future_rot, dtype=torch.float32))
        if fuse_future_bins:
            ids = fuse_future(ids, future_token_bins(action[None], model.config.traj_tokenizer_cfg), token_ids)
        rows.append(ids[0])
        grids.append(inputs.image_grid_thw)
        embeds.append(inputs.image_embeds)
        deepstack.append(inputs.deepstack)
        actions.append(action)
    length = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), length), token_ids.pad, dtype=torch.long)
    for i, r in enumerate(rows):
        input_ids[i, :len(r)] = r
    mask = label_mask(input_ids, token_ids, model.prompt_encoder.tokenizer)
    labels = torch.where(mask, input_ids, torch.full_like(input_ids, IGNORE))
    crop = torch.tensor([r.tolist().index(token_ids.traj_future_start) + 1 for r in rows])
    return Batch(input_ids=input_ids, labels=labels, crop=crop, image_grid_thw=torch.cat(grids),
                 image_embeds=torch.cat(embeds), deepstack=[torch.cat(layer) for layer in zip(*deepstack)],
                 action=torch.stack(actions))


TIMESTEP_SAMPLERS = ("beta", "uniform")  # the recipe's `train_timestep_sampler` values


def flow_training_data(x: torch.Tensor, sampler: str = "beta") -> tuple[torch.Tensor, torch.Tensor]:
    """The recipe's draws for data x (B, W, 2), from torch's global generator in its order: t as (B, 1, 1),
    then noise = randn_like(x). t = 0 is noise, 1 is data. `sampler` is the recipe's `train_timestep_sampler`:
    "beta" (its default) t = 0.999 - 0.999 Beta(1.5, 1), whose density (1 - t)^0.5 favours the noisy end;
    "uniform" t ~ U[0, 1)."""
    if sampler == "beta":
        s = torch.distributions.Beta(torch.tensor(BETA_C1), torch.tensor(BETA_C0)).sample((x.shape[0],))
        t = T_SCALE - T_SCALE * s
    elif sampler == "uniform":
        t = torch.rand(x.shape[0])
    else:
        raise ValueError(f"timestep sampler {sampler!r}: expected one of {TIMESTEP_SAMPLERS}")
    return t.to(x.device).view(-1, 1, 1), torch.randn_like(x)


def flow_target(x: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """The velocity flow matching regresses: data minus noise (t = 0 is noise, 1 is data)."""
    return x - noise


def token_cross_entropy(hidden: torch.Tensor, labels: torch.Tensor, lm_head: torch.nn.Module,
                        token_ids: TokenIds) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stage 1's split next-token cross-entropy (recipe `sft_base_model.py`).

    Logits at p - 1 predict label p, in float32. Returns (L_future, L_others, per-label CE in label
    order): L_future averages the labels that are trajectory tokens (any <i*>, <|traj_future_start|>,
    <|traj_future_end|>), L_others the rest; a term with no labels is 0.
    """
    shifted = labels[:, 1:]
    supervised = shifted != IGNORE
    logits = lm_head(hidden[:, :-1][supervised]).float()
    targets = shifted[supervised]
    per_token = F.cross_entropy(logits, targets, reduction="none")
    start = token_ids.traj_token_start_idx
    traj = ((targets >= start) & (targets < start + token_ids.traj_vocab_size)
            | (targets == token_ids.traj_future_start) | (targets == token_ids.special["traj_future_end"]))

    def mean(selected: torch.Tensor) -> torch.Tensor:
        return per_token[selected].mean() if bool(selected.any()) else per_token.sum() * 0.0

    return mean(traj), mean(~traj), per_token


def cropped_cache(cache: DynamicCache, crop: torch.Tensor, detach: bool = True, repeat: int = 1) -> DynamicCache:
    """The VLM cache cut after the longest row's <|traj_future_start|>; detached (the recipe's
    `stop_grad_from_vlm`, its default); each row `repeat` times. Rows with a shorter prefix hide the rest
    through `build_context`."""
    length = int(crop.max())
    out = DynamicCache()
    for i, layer in enumerate(cache.layers):
        keys, values = layer.keys[:, :, :length], layer.values[:, :, :length]
        keys, values = (keys.detach(), values.detach()) if detach else (keys, values)
        out.update(keys.repeat_interleave(repeat, 0), values.repeat_interleave(repeat, 0), i)
    return out


def flow_matching_loss(model: AlpamayoR1, cache: DynamicCache, crop: torch.Tensor, rope_delta: torch.Tensor,
                       x: torch.Tensor, t: torch.Tensor, noise: torch.Tensor,
                       causal: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Stage 2's loss: mean (v(x_t, t) - (x - noise))^2 over B x W x 2, and the predicted velocity (B, W, 2).

    The expert reads the cropped cache as at inference: row b's W action tokens at positions
    crop[b] + rope_delta[b] + k, seeing its prefix [0, crop[b]). `causal`: among themselves the action
    tokens attend causally, which is what the public recipe's training call gets (transformers builds a
    causal mask when given attention_mask=None, training.md §6); the release infers bidirectionally
    (`causal=False`), so a model meant to be run by `AlpamayoR1.sample` is trained with causal=False.
    """
    noisy_x = t * x + (1.0 - t) * noise
    context = build_context(model.expert, cache, crop, rope_delta, x.shape[1], causal=causal, visible=crop)
    pred = model.velocity(noisy_x, t, context)
    return F.mse_loss(pred, flow_target(x, noise)), pred


def training_losses(model: AlpamayoR1, batch: Batch, causal_expert: bool = False, stop_grad_from_vlm: bool = True,
                    t: torch.Tensor | None = None, noise: torch.Tensor | None = None, flow_draws: int = 1,
                    timestep_sampler: str = "beta") -> Losses:
    """Both stages' losses from one VLM pass over `batch` (trainable parts as the caller sets requires_grad).

    The stage-2 cache is the prefix of the stage-1 pass: with causal attention the tokens after
    <|traj_future_start|> (bins here, placeholders in the recipe's stage 2) do not change it.
    `t`, `noise`: the flow draws; default `flow_training_data(x, timestep_sampler)` (global generator). `flow_draws`: (t, noise)
    pairs per sample on the same cache (the recipe: 1); the loss is their mean, the same in expectation.
    """
    hidden, cache, rope_delta = model.prefix_forward(batch.input_ids, batch.image_grid_thw, batch.image_embeds,
                                                     batch.deepstack)
    future, others, _ = token_cross_entropy(hidden, batch.labels.to(hidden.device), model.vlm.lm_head,
                                            model.token_ids)
    x = batch.action.to(model.device).repeat_interleave(flow_draws, 0)
    if t is None or noise is None:
        t, noise = flow_training_data(x, timestep_sampler)
    crop = batch.crop.to(model.device).repeat_interleave(flow_draws, 0)
    cache = cropped_cache(cache, batch.crop, stop_grad_from_vlm, flow_draws)
    flow, pred = flow_matching_loss(model, cache, crop, rope_delta.repeat_interleave(flow_draws, 0), x, t, noise,
                                    causal_expert)
    return Losses(vlm_future=future, vlm_others=others, flow=flow, flow_error=pred - flow_target(x, noise))


@contextlib.contextmanager
def linear_patch_embedding(model: AlpamayoR1) -> Iterator[None]:
    """Within the block, the vision tower's patch embedding runs as the matrix product it is.

    Its Conv3d has kernel = stride = one whole patch (3 x 2 x 16 x 16) and is applied to exactly one patch per
    row, so it is `x @ W.T + b` with W the kernel flattened in the same order; the results agree to float32
    rounding. Training only: on the CPU the convolution's backward (mkldnn) took 17x the matmul's (3.5 s
    against 0.2 s for 8 samples' 7,680 patches), the largest single cost of a training step.
    """
    patch_embed = model.vlm.model.visual.patch_embed
    weight, bias = patch_embed.proj.weight, patch_embed.proj.bias

    def forward(hidden_states: torch.Tensor) -> torch.Tensor:
        flat = hidden_states.reshape(-1, weight[0].numel()).to(weight.dtype)
        return F.linear(flat, weight.reshape(weight.shape[0], -1), bias)

    patch_embed.forward = forward
    try:
        yield
    finally:
        del patch_embed.forward  # back to the class's Conv3d forward

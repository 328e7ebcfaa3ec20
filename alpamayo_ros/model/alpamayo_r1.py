"""AlpamayoR1: Qwen3-VL writes the Chain-of-Causation, a flow-matching action expert reads its KV cache.

Submodule names equal the release's state-dict prefixes (`vlm`, `expert`, `action_in_proj`,
`action_out_proj`, `action_space`), so the released checkpoint loads without renaming.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration
from transformers.cache_utils import DynamicCache
from transformers.models.qwen3_vl.modeling_qwen3_vl import Qwen3VLTextModel

from .action_projection import PerWaypointActionInProj
from .action_space import UnicycleAccelCurvatureActionSpace
from .config import ALPAMAYO1_5, ALPAMAYO_R1, AlpamayoR1Config
from .expert import ExpertContext, build_context, expert_forward
from .flow_matching import euler_integrate, guided_velocity, time_grid
from .kv_cache import reserve
from .pixels import DevicePixels
from .prompt import PromptEncoder, read_reasoning, remove_route
from .trajectory_tokens import history_token_ids
from .vision_cache import EncodedImage, VisionCache

logger = logging.getLogger(__name__)

NUM_CAMERAS = 4  # cross-left, front-wide, cross-right, front-tele (release camera order)
FRAMES_PER_CAMERA = 4  # t0 - 0.3, -0.2, -0.1, 0 s
ACTION_DIM = 2  # (acceleration, curvature)
REASONING_MODES = ("per_sample", "shared")
PREPROCESSING = ("host", "device")


@dataclass(frozen=True, slots=True)
class Timings:
    """Wall time of each stage of one `sample` call, milliseconds."""

    vision_ms: float
    prefill_ms: float
    decode_ms: float
    expert_ms: float
    trajectory_ms: float
    decode_tokens: int  # tokens sampled per reasoning row (at least the longest sample's reasoning)
    unguided_ms: float = 0.0  # guided sampling only: the prefix without the route (prefill + reasoning fed)

    @property
    def total_ms(self) -> float:
        return (self.vision_ms + self.prefill_ms + self.decode_ms + self.unguided_ms + self.expert_ms
                + self.trajectory_ms)


@dataclass(frozen=True, slots=True)
class Prediction:
    """S sampled futures for one input, in the ego frame at t0 (x forward, y left, z up)."""

    xyz: torch.Tensor  # (S, W, 3) float32, metres; pose k at t0 + (k + 1) * dt
    rot: torch.Tensor  # (S, W, 3, 3) float32, yaw-only rotations
    action: torch.Tensor  # (S, W, 2) float32, normalised (accel, curvature) the trajectory integrates
    reasoning: list[str]  # Chain-of-Causation per sample, as upstream's extra["cot"]: "" without <|cot_end|>
    complete: list[bool]  # the sample reached <|traj_future_start|> before the token limit
    timings: Timings
    # The text each sample wrote, also when it has no <|cot_end|> (then truncated: publish it flagged).
    partial_reasoning: list[str] = field(default_factory=list)
    reasoning_closed: list[bool] = field(default_factory=list)  # <|cot_end|> written: `reasoning` is whole


@dataclass(frozen=True, slots=True)
class EncodedInputs:
    """The prompt with its images encoded: what the prefill consumes."""

    input_ids: torch.Tensor  # (1, L) int64, history tokens fused in
    image_grid_thw: torch.Tensor  # (num_images, 3) int64
    image_embeds: torch.Tensor  # (image tokens, hidden)
    deepstack: list[torch.Tensor]  # per deepstack layer, (image tokens, hidden)


@dataclass(frozen=True, slots=True)
class _Rollout:
    """What reasoning leaves for the expert: the cache and, per sample, where its prefix ends.

    A sample that wrote <|traj_future_start|> reads the cache up to and including that token and its
    flow tokens continue right after it (`visible` = `offsets`). Any other sample (token limit,
    <|im_end|>) is placed as upstream places it: its flow tokens after its whole generated sequence,
    whose last token the reference never feeds (`offsets` = `visible` + 1: positions skip one slot).
    """

    cache: DynamicCache  # batch S, length L: prompt + generated tokens
    length: int  # L
    offsets: torch.Tensor  # (S,) int64: the flow tokens' first position, minus rope_delta
    rope_delta: torch.Tensor  # (S, 1) int64: M-RoPE position minus cache index for text tokens
    tokens: list[list[int]]  # generated ids per sample, stop token included
    complete: list[bool]  # the sample wrote <|traj_future_start|>
    visible: torch.Tensor | None = None  # (S,) int64: cache columns [0, visible) are the sample's
    # prefix, the rest hidden; None: `offsets`
    steps: int = 0  # tokens sampled per row (pads and tokens after a row's stop included)


def build_expert_config(vlm_text_config, config: AlpamayoR1Config):
    """The VLM text config with the release's `expert_cfg` overrides; checks what cache reuse needs."""
    expert_config = copy.deepcopy(vlm_text_config)
    for name in ("hidden_size", "intermediate_size", "num_attention_heads", "head_dim",
                 "num_key_value_heads", "num_hidden_layers"):
        value = getattr(config.expert_cfg, name)
        if value is not None:
            setattr(expert_config, name, value)
    # Expert layer i attends to VLM layer i's cached keys/values, so these must agree.
    for name in ("num_hidden_layers", "num_key_value_heads", "head_dim"):
        if getattr(expert_config, name) != getattr(vlm_text_config, name):
            raise ValueError(f"expert_cfg.{name}={getattr(expert_config, name)} differs from the VLM's "
                             f"{getattr(vlm_text_config, name)}; the expert could not read the VLM cache")
    if expert_config.num_attention_heads % expert_config.num_key_value_heads:
        raise ValueError(f"expert_cfg.num_attention_heads={expert_config.num_attention_heads} is not a "
                         f"multiple of num_key_value_heads={expert_config.num_key_value_heads}")
    return expert_config


class AlpamayoR1(nn.Module):
    """Vision-language-action driving model.

        16 images + history tokens + prompt
                    |
          vlm (Qwen3-VL) -- prefill once --> KV cache --(expand to R rows: S, or 1 if reasoning is shared)
                    |
          decode: Chain-of-Causation ... <|cot_end|><|traj_future_start|>   (R rows)
                    |  KV cache, copied once into fixed buffers with room for the action tokens
          expert (text decoder, no embeddings) over 64 action tokens per sample, non-causal
                    ^                                   |
          action_in_proj(x, t)            action_out_proj -> velocity v(x, t)
                    |___ Euler, t: 0 (noise) -> 1 (data), 10 steps ___|
                                         |
          action_space.action_to_traj: 64 x (accel, curvature) -> 64 poses
    """

    def __init__(self, config: AlpamayoR1Config, vlm_config: Qwen3VLConfig, prompt_encoder: PromptEncoder) -> None:
        super().__init__()
        self.config = config
        self.prompt_encoder = prompt_encoder
        self.token_ids = prompt_encoder.token_ids
        vlm_config = copy.deepcopy(vlm_config)
        backbone_text_dtype = _as_dtype(getattr(vlm_config.text_config, "dtype", None))
        vlm_config.text_config.vocab_size = self.token_ids.vocab_size
        # transformers builds the sub-models in their config's dtype, not the default one: align them.
        for sub in (vlm_config, vlm_config.text_config, vlm_config.vision_config):
            sub.dtype = torch.get_default_dtype()
        vlm_config._attn_implementation = "sdpa"
        for sub in (vlm_config.text_config, vlm_config.vision_config):
            sub._attn_implementation = "sdpa"
        self.vlm = Qwen3VLForConditionalGeneration(vlm_config)
        self.expert = Qwen3VLTextModel(build_expert_config(vlm_config.text_config, config))
        del self.expert.embed_tokens  # the expert reads action embeddings, never token ids
        hidden = self.expert.config.hidden_size
        stored = config.model_type == ALPAMAYO_R1  # 1.5 stores neither the frequencies nor the statistics
        self.action_in_proj = PerWaypointActionInProj(config.action_in_proj_cfg, ACTION_DIM, hidden, persistent=stored)
        self.action_out_proj = nn.Linear(hidden, ACTION_DIM)
        self.action_space = UnicycleAccelCurvatureActionSpace(config.action_space_cfg, persistent=stored)
        if config.model_type == ALPAMAYO1_5:
            self.derive_unstored_buffers(backbone_text_dtype, torch.get_default_dtype())
        self.vision_cache = VisionCache()  # image encodings by caller key, reused across calls
        self._integrate = self.integrate  # or its compiled version, see `compile_flow`
        self._compiled_flow = None  # (mode, compiled `integrate`)
        self._expert_buffers: dict = {}  # the compiled flow's buffer pool (see `build_context`)
        self._pixels = prompt_encoder.pixels
        self.image_preprocessing = "host"
        self._batch_exact: dict[tuple, bool] = {}  # vision batch shape -> batching is bitwise per-image

    @property
    def device(self) -> torch.device:
        return self.action_out_proj.weight.device

    @property
    def is_1_5(self) -> bool:
        """An Alpamayo 1.5 model (camera-labelled prompts, navigation text) rather than an AlpamayoR1."""
        return self.config.model_type == ALPAMAYO1_5

    @torch.no_grad()
    def derive_unstored_buffers(self, backbone_text_dtype: torch.dtype | None, load_dtype: torch.dtype) -> None:
        """Give the seven buffers Alpamayo 1.5 does not store the values its code computes at construction.

        Upstream (NVlabs/alpamayo1.5 `Alpamayo1_5.__init__`, measured in the conformance README's dtype probe):
        the frequencies are a float32 logspace, then cast with `action_in_proj` to the expert's dtype, which is
        the backbone text config's dtype when that is half precision (bfloat16 for Qwen3-VL-8B), whatever dtype
        the model is loaded in, else the load dtype; the action statistics are `torch.tensor(value)` made in the
        load dtype. So with the 8B backbone the frequencies are bf16 values ([1, 1.671875, 2.78125, ...]) even
        in a float32 model, and the statistics are bf16 values in a bf16 model. Here they are those values held
        in float32 buffers (all Fourier and action-space arithmetic runs in float32, as for R1).
        """
        half = (torch.bfloat16, torch.float16)
        freqs_dtype = backbone_text_dtype if backbone_text_dtype in half else load_dtype
        encoders = [*self.action_in_proj.sinus, self.action_in_proj.timestep_fourier_encoder]
        for encoder in encoders:
            encoder.freqs.copy_(encoder.freqs.to(freqs_dtype).float())
        for name in self.action_space.STATISTICS:
            exact = torch.tensor(getattr(self.config.action_space_cfg, name), dtype=torch.float64)
            getattr(self.action_space, name).copy_(exact.to(load_dtype).float())
        logger.info("Alpamayo 1.5: Fourier frequencies derived in %s, action statistics in %s (not in the checkpoint)",
                    freqs_dtype, load_dtype)

    @property
    def dtype(self) -> torch.dtype:
        return self.action_out_proj.weight.dtype

    # ----------------------------------------------------------------------------------------------
    # Inputs

    def set_image_preprocessing(self, where: str) -> None:
        """Where images are resized and normalised: "host" (the transformers processor, PIL, on the CPU:
        the reference's pixels) or "device" (`DevicePixels`: raw uint8 uploaded, resized on the model's
        device; equal without resizing, within two uint8 levels on a few pixels with it)."""
        if where not in PREPROCESSING:
            raise ValueError(f"image preprocessing {where!r}, expected one of {PREPROCESSING}")
        self._pixels = (self.prompt_encoder.pixels if where == "host"
                        else DevicePixels(self.prompt_encoder.image_processor, self.device))
        self.image_preprocessing = where

    def clear_vision_cache(self) -> None:
        """Forget every kept image encoding (e.g. after a clock jump: keys by stamp may come back)."""
        self.vision_cache.clear()

    def select_attention(self) -> str:
        """The VLM's attention kernels for the current device and dtype (see `vlm_attention_implementation`)."""
        name = vlm_attention_implementation(self.device, self.dtype)
        for config in (self.vlm.config, self.vlm.config.text_config, self.vlm.config.vision_config):
            config._attn_implementation = name
        return name

    def encode_image(self, image: np.ndarray) -> EncodedImage:
        """One (H, W, 3) uint8 RGB image through the preprocessing and the vision tower, alone."""
        return self._encode_pixels([self._pixels(image)])[0]

    def _encode_pixels(self, processed: list[tuple[torch.Tensor, torch.Tensor]]) -> list[EncodedImage]:
        """One vision-tower call over several images' (pixels, grid); the outputs split back per image."""
        visual = self.vlm.model.visual
        grids = torch.cat([grid for _, grid in processed])
        pixels = torch.cat([pixels.to(self.device, visual.dtype) for pixels, _ in processed])
        embeds, deepstack = visual(pixels, grid_thw=grids.to(self.device))
        counts = (grids.prod(dim=-1) // visual.spatial_merge_size ** 2).tolist()
        per_layer = [layer.split(counts) for layer in deepstack]
        return [EncodedImage(grid_thw=grids[i:i + 1], embeds=e, deepstack=tuple(layer[i] for layer in per_layer))
                for i, e in enumerate(embeds.split(counts))]

    def encode_images(self, images: Sequence[np.ndarray]) -> list[EncodedImage]:
        """Images through the preprocessing and the vision tower: each exactly as encoded alone.

        The tower's attention never crosses images, but its matrix products may round differently with
        more rows (measured: the tiny model's mergers at 6 vs 96 rows, 1e-7; the medium and larger
        shapes equal). So one batched call is used for a batch shape only once it has been seen to give
        bitwise the per-image encodings (checked on its first use; the kernels, and so the rounding,
        depend on shapes, not values); otherwise the images are encoded one call each.
        """
        processed = (self.prompt_encoder.pixels_of(list(images)) if self.image_preprocessing == "host"
                     else [self._pixels(image) for image in images])
        if len(processed) < 2:
            return self._encode_pixels(processed) if processed else []
        shape = (self.device, self.dtype, self.vlm.model.visual.dtype,
                 tuple(tuple(grid.reshape(-1).tolist()) for _, grid in processed))
        exact = self._batch_exact.get(shape)
        if exact is False:
            return [e for one in processed for e in self._encode_pixels([one])]
        batched = self._encode_pixels(processed)
        if exact is None:
            alone = [e for one in processed for e in self._encode_pixels([one])]
            exact = all(torch.equal(a.embeds, b.embeds) and all(map(torch.equal, a.deepstack, b.deepstack))
                        for a, b in zip(alone, batched))
            self._batch_exact[shape] = exact
            if not exact:
                logger.info("vision tower: batching %d images rounds differently from encoding each alone; "
                            "encoding this batch shape one image at a time", len(processed))
                return alone
        return batched

    def encode_inputs(self, images: np.ndarray | Sequence[np.ndarray], ego_history_xyz: np.ndarray | torch.Tensor,
                      image_keys: Sequence[object] | None = None, camera_ids: Sequence[int] | None = None,
                      route: str | None = None) -> EncodedInputs:
        """Images and (P, 3) history positions -> prompt ids and image encodings.

        `images`: (C, 4, H, W, 3) uint8 RGB, or C x 4 (H, W, 3) uint8 RGB arrays (sizes may differ per camera),
        camera-major: cam0 f0..f3, cam1 f0..f3, ... (upstream `image_frames.flatten(0, 1)`). C is 4 (the
        release's cameras) unless `camera_ids` names the cameras.
        `image_keys`: one hashable per image (e.g. (camera, stamp_ns)); an image whose key was encoded on
        an earlier call is taken from `vision_cache` instead of being encoded again.
        `camera_ids` (Alpamayo 1.5 only): NVIDIA camera indices, one per camera in the images' order; the
        prompt labels each camera and frame (`prompt.prompt_text`). `route` (1.5 only): navigation text.
        """
        cameras = NUM_CAMERAS if camera_ids is None else len(camera_ids)
        self._check_prompt_options(camera_ids, route)
        if isinstance(images, np.ndarray):
            if images.ndim != 5 or images.shape[:2] != (cameras, FRAMES_PER_CAMERA) or images.shape[-1] != 3:
                raise ValueError(f"images have shape {images.shape}, expected ({cameras}, {FRAMES_PER_CAMERA}, H, W, 3)")
            images = list(images.reshape(-1, *images.shape[2:]))
        if len(images) != cameras * FRAMES_PER_CAMERA:
            raise ValueError(f"got {len(images)} images, expected {cameras * FRAMES_PER_CAMERA} "
                             f"({cameras} cameras x {FRAMES_PER_CAMERA} frames)")
        for i, image in enumerate(images):
            if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
                raise ValueError(f"image {i} is {image.dtype} {image.shape}, expected uint8 RGB (H, W, 3)")
        if image_keys is not None and len(image_keys) != len(images):
            raise ValueError(f"got {len(image_keys)} image keys for {len(images)} images")
        encoded = self._encode_with_cache(images, image_keys)
        grids = torch.cat([e.grid_thw for e in encoded])
        hist = _cpu_float32(ego_history_xyz)
        ids = history_token_ids(hist[None], self.config.hist_traj_tokenizer_cfg, self.token_ids.hist_token_start_idx)
        return EncodedInputs(input_ids=self.prompt_encoder.input_ids(grids, ids, camera_ids, route), image_grid_thw=grids,
                             image_embeds=torch.cat([e.embeds for e in encoded]),
                             deepstack=[torch.cat(layer) for layer in zip(*(e.deepstack for e in encoded))])

    def _encode_with_cache(self, images: Sequence[np.ndarray],
                           image_keys: Sequence[object] | None) -> list[EncodedImage]:
        """Encodings of `images`: cached ones reused, all the others encoded in one `encode_images` call."""
        if image_keys is None:
            return self.encode_images(images)
        # The two preprocessing paths give slightly different pixels: their encodings are kept apart.
        keys = [(self.image_preprocessing, key) for key in image_keys]
        found = {key: self.vision_cache.get(key) for key in dict.fromkeys(keys) if key in self.vision_cache}
        missing = [key for key in dict.fromkeys(keys) if key not in found]  # in order, once each
        images_by_key = dict(zip(keys, images))
        fresh = dict(zip(missing, self.encode_images([images_by_key[key] for key in missing])))
        for key, value in fresh.items():
            self.vision_cache.put(key, value)
        return [found[key] if key in found else fresh[key] for key in keys]

    def _check_prompt_options(self, camera_ids: Sequence[int] | None, route: str | None) -> None:
        if (camera_ids is not None or route is not None) and not self.is_1_5:
            raise ValueError("camera_ids and route need an Alpamayo 1.5 checkpoint: AlpamayoR1 was trained on "
                             "unlabelled images of its four cameras and without navigation text")
        if camera_ids is not None:
            if not camera_ids or len(set(camera_ids)) != len(camera_ids) or min(camera_ids) < 0:
                raise ValueError(f"camera_ids {list(camera_ids)}: expected distinct NVIDIA camera indices >= 0")

    def _check_history(self, xyz: torch.Tensor, rot: torch.Tensor) -> None:
        poses = self.config.num_history_poses
        if tuple(xyz.shape) != (poses, 3) or tuple(rot.shape) != (poses, 3, 3):
            raise ValueError(f"ego history has shapes {tuple(xyz.shape)} / {tuple(rot.shape)}, "
                             f"expected ({poses}, 3) / ({poses}, 3, 3)")
        if not (torch.isfinite(xyz).all() and torch.isfinite(rot).all()):
            raise ValueError("ego history contains NaN or inf")

    # ----------------------------------------------------------------------------------------------
    # Stages

    def prefill(self, input_ids: torch.Tensor, image_grid_thw: torch.Tensor, image_embeds: torch.Tensor,
                deepstack: list[torch.Tensor]) -> tuple[torch.Tensor, DynamicCache, torch.Tensor]:
        """Run the prompt through the text decoder. Returns last-token logits (B, V), cache, rope_delta (B, 1)."""
        hidden, cache, rope_delta = self.prefix_forward(input_ids, image_grid_thw, image_embeds, deepstack)
        return self.vlm.lm_head(hidden[:, -1]), cache, rope_delta

    def prefix_forward(self, input_ids: torch.Tensor, image_grid_thw: torch.Tensor, image_embeds: torch.Tensor,
                       deepstack: list[torch.Tensor]) -> tuple[torch.Tensor, DynamicCache, torch.Tensor]:
        """The text decoder over whole sequences (B, L) with their images: the prefill, and training's VLM
        pass (`training.py`). Returns the last hidden states (B, L, hidden), the cache, rope_delta (B, 1)."""
        text_model = self.vlm.model.language_model
        input_ids = input_ids.to(self.device)
        image_mask = input_ids == self.token_ids.image_pad
        embeds = text_model.embed_tokens(input_ids)
        embeds = embeds.masked_scatter(image_mask.unsqueeze(-1), image_embeds.to(embeds.dtype))
        # Positions passed explicitly, so no state is kept on the module between calls.
        position_ids, rope_delta = self.vlm.model.get_rope_index(
            input_ids, image_grid_thw.to(self.device), None, attention_mask=torch.ones_like(input_ids))
        out = text_model(inputs_embeds=embeds, position_ids=position_ids, use_cache=True,
                         visual_pos_masks=image_mask, deepstack_visual_embeds=deepstack)
        return out.last_hidden_state, out.past_key_values, rope_delta.to(self.device)

    def _next_tokens(self, logits: torch.Tensor, greedy: bool, temperature: float, top_p: float,
                     generator: torch.Generator) -> torch.Tensor:
        logits = logits.float().clone()
        # Trajectory tokens <i*> are never generated at inference (upstream `ExpertLogitsProcessor`).
        start = self.token_ids.traj_token_start_idx
        logits[:, start:start + self.token_ids.traj_vocab_size] = -torch.inf
        if greedy:
            return logits.argmax(dim=-1)
        logits = logits / temperature
        # Nucleus: drop the least likely tokens whose total probability is at most 1 - top_p.
        sorted_logits, order = torch.sort(logits, dim=-1)
        drop_sorted = sorted_logits.softmax(dim=-1).cumsum(dim=-1) <= 1.0 - top_p
        drop_sorted[:, -1] = False
        logits = logits.masked_fill(drop_sorted.scatter(1, order, drop_sorted), -torch.inf)
        return torch.multinomial(logits.softmax(dim=-1), 1, generator=generator).squeeze(-1)

    def decode(self, logits: torch.Tensor, cache: DynamicCache, rope_delta: torch.Tensor, max_new_tokens: int,
               greedy: bool, temperature: float, top_p: float, generator: torch.Generator,
               early_stop: bool = False) -> _Rollout:
        """Generate reasoning for every row, ending as upstream's `generate` with `StopAfterEOS` ends.

        A row that emits <|im_end|> is finished: it is fed <|endoftext|> pads from then on. Generation
        stops (a) once every row has emitted <|traj_future_start|> and that token is in the cache, (b)
        when every row is finished, or (c) at `max_new_tokens`; in (b) and (c) the token sampled last
        is never fed, as upstream, where the cache lags the sequences by one token. So with several
        rows, one that emits <|im_end|> keeps the batch going to (a)-(c) and its prefix for the expert
        is its whole padded sequence (see `_Rollout`).

        `early_stop` (not the reference): stop as soon as every row has emitted <|traj_future_start|>
        or <|im_end|>, and give a row that ended in <|im_end|> the prefix it would have had alone
        (its own tokens, no pads). Cheaper when one sample says <|im_end|>; different results then.
        """
        ids = self.token_ids
        rows = logits.shape[0]
        prompt_len = cache.get_seq_length()
        found = torch.zeros(rows, dtype=torch.bool, device=self.device)  # emitted <|traj_future_start|>
        finished = torch.zeros(rows, dtype=torch.bool, device=self.device)  # emitted <|im_end|>
        generated: list[torch.Tensor] = []
        text_model = self.vlm.model.language_model
        for step in range(max_new_tokens):
            tokens = self._next_tokens(logits, greedy, temperature, top_p, generator)
            tokens = torch.where(finished, torch.full_like(tokens, ids.pad), tokens)
            generated.append(tokens)
            newly_found = (tokens == ids.traj_future_start) & ~found
            found |= newly_found
            finished |= tokens == ids.eos
            # One device-to-host read per token for all the stop rules.
            all_finished, all_found, all_ended, any_new = torch.stack(
                [finished.all(), found.all(), (found | finished).all(), newly_found.any()]).tolist()
            if step == max_new_tokens - 1 or all_finished:
                break  # (b), (c): upstream stops before feeding this token
            ended = all_found or (early_stop and all_ended)
            if ended and not any_new:
                break  # every prefix ends before this token
            position = (cache.get_seq_length() + rope_delta).view(1, rows, 1).expand(3, rows, 1)
            out = text_model(input_ids=tokens[:, None], position_ids=position, past_key_values=cache, use_cache=True)
            if ended:  # (a): upstream samples one more token and stops without feeding it
                break
            logits = self.vlm.lm_head(out.last_hidden_state[:, -1])
        length = cache.get_seq_length()
        table = torch.stack(generated, dim=1).tolist() if generated else [[] for _ in range(rows)]
        token_lists, offsets, visible = [], [], []
        for row in table:
            if ids.traj_future_start in row:
                end = row.index(ids.traj_future_start) + 1
                offsets.append(prompt_len + end)
                visible.append(min(prompt_len + end, length))  # emitted at the limit: not fed
            else:
                end = row.index(ids.eos) + 1 if ids.eos in row else len(row)
                # Upstream: positions after the whole (padded) sequence, whose last token is not in the cache.
                offsets.append(prompt_len + (end if early_stop else len(row)))
                visible.append(min(offsets[-1] - 1, length))
            token_lists.append(row[:end])
        return _Rollout(cache=cache, length=length, offsets=torch.tensor(offsets, device=self.device),
                        rope_delta=rope_delta.expand(rows, 1), tokens=token_lists,
                        complete=[ids.traj_future_start in row for row in token_lists],
                        visible=torch.tensor(visible, device=self.device), steps=len(generated))

    def expert_context(self, rollout: _Rollout, repeat: int = 1, capacity: int | None = None,
                       keep_buffers: bool = False) -> ExpertContext:
        """The rollout's cache, mask and positions as the expert reads them over all Euler steps.

        Each of the rollout's R rows serves `repeat` samples (shared reasoning: R = 1). The W action
        tokens of a sample sit right after its row's prefix (positions offset + rope_delta + k on all three
        M-RoPE axes), see each other and that prefix, and nothing else. `capacity` pads the prefix
        columns to a fixed count (see `build_context`). `keep_buffers`: fill the buffers of the previous
        call of the same shape instead of allocating (the compiled flow's: fixed addresses let CUDA
        graphs replay); the previous call's context is then overwritten.
        """
        return build_context(self.expert, rollout.cache, rollout.offsets, rollout.rope_delta,
                             self.config.action_space_cfg.n_waypoints, repeat, capacity,
                             causal=not self.config.expert_non_causal_attention,
                             pool=self._expert_buffers if keep_buffers else None, visible=rollout.visible)

    def fixed_capacity(self, prompt_length: int, max_reasoning_tokens: int, repeat: int) -> int:
        """Prefix columns for the compiled flow: the largest prefix the reasoning budget allows, so every
        call has the same shapes, rounded so that prefix + flow tokens fill whole 16-column blocks (GPU
        attention kernels then take the mask without padding it)."""
        flow_tokens = repeat * self.config.action_space_cfg.n_waypoints
        return -(-(prompt_length + max_reasoning_tokens + flow_tokens) // 16) * 16 - flow_tokens

    def velocity(self, x: torch.Tensor, t: torch.Tensor, context: ExpertContext) -> torch.Tensor:
        """One expert call: flow state x (S, W, 2) at time t (S, 1, 1) -> velocity (S, W, 2) float32.

        Sample s = r * repeat + j is the j-th W-token block of context row r.
        """
        samples, waypoints, _ = x.shape
        rows = context.keys[0].shape[0]
        embeds = self.action_in_proj(x, t).to(self.expert.dtype).reshape(rows, context.repeat * waypoints, -1)
        hidden = expert_forward(self.expert, embeds, context).reshape(samples, waypoints, -1)
        return self.action_out_proj(hidden).float()

    def flow(self, noise: torch.Tensor, context: ExpertContext, steps: int) -> torch.Tensor:
        """The flow-matching loop: Euler-integrate the expert's velocity from noise (S, W, 2) to actions."""
        return self._integrate(noise, context, time_grid(steps, noise.device))

    def integrate(self, noise: torch.Tensor, context: ExpertContext, times: torch.Tensor) -> torch.Tensor:
        """`flow` over a given time grid (e.g. one step from any state): the part `compile_flow` compiles."""
        return euler_integrate(lambda x, t: self.velocity(x, t, context), noise, times)

    def guided_flow(self, noise: torch.Tensor, context: ExpertContext, unguided: ExpertContext, steps: int,
                    weight: float) -> torch.Tensor:
        """`flow` with 1.5's classifier-free guidance: the expert runs on both prefixes at every step and the
        velocities mix as (1 - weight) v_unguided + weight v_guided (`flow_matching.guided_velocity`)."""
        return euler_integrate(lambda x, t: guided_velocity(self.velocity(x, t, context),
                                                            self.velocity(x, t, unguided), weight),
                               noise, time_grid(steps, noise.device))

    def unguided_rollout(self, inputs: EncodedInputs, rollout: _Rollout) -> _Rollout:
        """The prefix 1.5's guided call gives the unguided expert: the prompt without its route span, prefilled
        once with the same image encodings, then each row's generated tokens fed as they were to the guided
        cache. Offsets and visible columns are the guided row's, less the span's length (upstream finds the
        same <|traj_future_start|>). Positions continue the cache (cache index + rope_delta), as in decode.

        A row that never wrote <|traj_future_start|> sees its tokens and pads as its guided row does (upstream
        masks such pads in this pass only; the rows this changes are those `decode` describes).
        """
        ids = remove_route(inputs.input_ids[:1], self.token_ids)
        removed = inputs.input_ids.shape[1] - ids.shape[1]
        # One copy of the prompt (`share_prefill=False` stacks one per sample; all hold the same images).
        grids = inputs.image_grid_thw[:inputs.image_grid_thw.shape[0] // inputs.input_ids.shape[0]]
        image_tokens = int(grids.prod(dim=-1).sum()) // self.vlm.model.visual.spatial_merge_size ** 2
        _, cache, rope_delta = self.prefix_forward(ids, grids, inputs.image_embeds[:image_tokens],
                                                   [layer[:image_tokens] for layer in inputs.deepstack])
        rows = rollout.offsets.shape[0]
        if rows > 1:
            cache.batch_repeat_interleave(rows)
            rope_delta = rope_delta.expand(rows, 1)
        fed = rollout.length - inputs.input_ids.shape[1]  # generated tokens in the guided cache, per row
        if fed > 0:
            block = torch.full((rows, fed), self.token_ids.pad, dtype=torch.long)
            for row, tokens in enumerate(rollout.tokens):
                block[row, :min(fed, len(tokens))] = torch.tensor(tokens[:fed])
            start = cache.get_seq_length()
            position = (torch.arange(start, start + fed, device=self.device) + rope_delta).unsqueeze(0).expand(3, -1, -1)
            self.vlm.model.language_model(input_ids=block.to(self.device), position_ids=position, past_key_values=cache,
                                          use_cache=True)
        return _Rollout(cache=cache, length=cache.get_seq_length(), offsets=rollout.offsets - removed,
                        rope_delta=rope_delta, tokens=rollout.tokens, complete=rollout.complete,
                        visible=None if rollout.visible is None else rollout.visible - removed, steps=rollout.steps)

    @property
    def flow_compiled(self) -> bool:
        return self._integrate != self.integrate

    def compile_flow(self, mode: str = "default") -> None:
        """Run the Euler loop as one compiled region: the steps unrolled, the expert's layers fused.

        `mode` is torch.compile's ("reduce-overhead" replays CUDA graphs on a GPU). The first call per
        shape compiles (seconds to a minute; set TORCHINDUCTOR_CACHE_DIR to keep the result across runs).
        Shapes stay fixed while the number of samples, the reasoning budget, the diffusion steps and the
        image sizes do; past torch's recompile limit (8 shapes) the loop runs eagerly.
        """
        if self._compiled_flow is None or self._compiled_flow[0] != mode:
            self._compiled_flow = (mode, torch.compile(self.integrate, fullgraph=True, dynamic=False, mode=mode))
        self._integrate = self._compiled_flow[1]

    def eager_flow(self) -> None:
        """Run `flow` eagerly again (a compiled one is kept for a later `compile_flow` with the same mode)."""
        self._integrate = self.integrate

    # ----------------------------------------------------------------------------------------------
    # Inference

    @torch.inference_mode()
    def sample(self, images: np.ndarray | Sequence[np.ndarray], ego_history_xyz: np.ndarray | torch.Tensor,
               ego_history_rot: np.ndarray | torch.Tensor, *, num_samples: int = 1,
               diffusion_steps: int | None = None, max_reasoning_tokens: int = 256, temperature: float = 0.6,
               top_p: float = 0.98, greedy: bool = False, seed: int = 0, noise: torch.Tensor | None = None,
               share_prefill: bool = True, image_keys: Sequence[object] | None = None,
               reasoning: str = "per_sample", early_stop: bool = False, camera_ids: Sequence[int] | None = None,
               route: str | None = None, nav_guidance_weight: float = 1.0, noise_temperature: float = 1.0) -> Prediction:
        """Reason and plan: S trajectories, one per sampled Chain-of-Causation.

        Args:
            images: (4, 4, H, W, 3) uint8 RGB, cameras in release order, frames oldest first; or the
                same 16 images as a camera-major sequence of (H, W, 3) arrays. With `camera_ids`, C cameras
                (C, 4, H, W, 3) or 4 C images.
            ego_history_xyz: (16, 3) float, metres, ego frame at t0, last pose at the origin, 0.1 s apart.
            ego_history_rot: (16, 3, 3) float rotations in the same frame, last one identity.
            num_samples: S, the number of reasoning/trajectory samples.
            diffusion_steps: Euler steps (default: the config's, 10).
            max_reasoning_tokens: decode limit per sample.
            temperature, top_p: nucleus sampling of the reasoning; ignored when `greedy`.
            seed: seeds reasoning sampling and the flow's initial noise.
            noise: optional (S, W, 2) float32 initial flow state, replacing the seeded draw.
            share_prefill: prefill the prompt once and expand its cache to S rows (True), or prefill S
                copies as `generate(num_return_sequences=S)` does (False; same result, more work).
            image_keys: one hashable per image, e.g. (camera, stamp_ns); images seen on an earlier call
                under the same key reuse their encoding (bitwise identical) instead of being encoded again.
            reasoning: "per_sample" (the reference: every sample writes its own Chain-of-Causation) or
                "shared" (one reasoning, its cache broadcast to the S expert samples, which differ only
                by their noise: the decode cost of one sample).
            early_stop: not the reference. With several samples, stop decoding once each has written
                <|traj_future_start|> or <|im_end|>, and give one that ended in <|im_end|> the prefix
                it would have had alone. The reference keeps decoding until every sample has written
                <|traj_future_start|> or the limit, and the expert of an <|im_end|> sample reads its
                pads (see `decode`); this changes that sample's velocity (by 6.5e-3 at |v| ~ 1.8 per step
                on the tiny random model).
                Same results when no sample writes <|im_end|>, or with one sample.
            camera_ids: Alpamayo 1.5 only: NVIDIA camera indices of the images' cameras, in their order
                (`cameras.NVIDIA_CAMERA_IDS`); the prompt then labels cameras and frames as 1.5's inference.
            route: Alpamayo 1.5 only: navigation text ("Turn left in 40m") put in the prompt's route span.
            nav_guidance_weight: with a route, the classifier-free guidance weight w of 1.5's guided call
                (`sample_trajectories_from_data_with_vlm_rollout_cfg_nav`): 1 (default) is the plain call with
                the route in the prompt; otherwise the expert also reads the prefix without the route span and
                each Euler step mixes the velocities as (1 - w) v_unguided + w v_guided (0: ignore the route,
                > 1: follow it harder; the release notebook uses 1.5). Costs a second prefill of the prompt
                (the images are not encoded again) and a second expert pass per step; runs eagerly.
            noise_temperature: scales the initial noise (also an injected `noise`), as 1.5's `temperature`
                diffusion argument: < 1 gives steadier, less diverse trajectories.
        """
        if num_samples < 1:
            raise ValueError(f"num_samples={num_samples} must be >= 1")
        if reasoning not in REASONING_MODES:
            raise ValueError(f"reasoning={reasoning!r}, expected one of {REASONING_MODES}")
        if reasoning == "shared" and not share_prefill:
            raise ValueError("reasoning='shared' decodes one row; share_prefill=False would prefill copies for nothing")
        if not greedy and not (temperature > 0 and 0 < top_p <= 1):
            raise ValueError(f"temperature={temperature} must be > 0 and top_p={top_p} in (0, 1]")
        if max_reasoning_tokens < 1:
            raise ValueError(f"max_reasoning_tokens={max_reasoning_tokens} must be >= 1")
        guided = nav_guidance_weight != 1.0
        if guided and route is None:
            raise ValueError(f"nav_guidance_weight={nav_guidance_weight} guides towards a route, but none was given")
        if not (noise_temperature > 0):
            raise ValueError(f"noise_temperature={noise_temperature} must be > 0")
        waypoints = self.config.action_space_cfg.n_waypoints
        hist_xyz, hist_rot = _cpu_float32(ego_history_xyz), _cpu_float32(ego_history_rot)
        self._check_history(hist_xyz, hist_rot)
        generator = torch.Generator(device=self.device).manual_seed(seed)
        if noise is None:
            noise = torch.randn(num_samples, waypoints, ACTION_DIM, generator=generator, device=self.device)
        elif tuple(noise.shape) != (num_samples, waypoints, ACTION_DIM):
            raise ValueError(f"noise has shape {tuple(noise.shape)}, expected ({num_samples}, {waypoints}, {ACTION_DIM})")
        clock = _StageClock(self.device)

        inputs = self.encode_inputs(images, hist_xyz, image_keys, camera_ids, route)
        if not share_prefill:  # what num_return_sequences does: every row carries its own prompt and images
            copies = [inputs] + [self.encode_inputs(images, hist_xyz, camera_ids=camera_ids, route=route)
                                 for _ in range(num_samples - 1)]
            inputs = EncodedInputs(input_ids=inputs.input_ids.repeat(num_samples, 1),
                                   image_grid_thw=inputs.image_grid_thw.repeat(num_samples, 1),
                                   image_embeds=torch.cat([c.image_embeds for c in copies]),
                                   deepstack=[torch.cat(layer) for layer in zip(*(c.deepstack for c in copies))])
        vision_ms = clock.lap()
        logits, cache, rope_delta = self.prefill(inputs.input_ids, inputs.image_grid_thw, inputs.image_embeds,
                                                 inputs.deepstack)
        reasoning_rows = num_samples if reasoning == "per_sample" else 1
        if share_prefill and reasoning_rows > 1:
            cache.batch_repeat_interleave(reasoning_rows)
            logits, rope_delta = logits.expand(reasoning_rows, -1), rope_delta.expand(reasoning_rows, 1)
        reserve(cache, max_reasoning_tokens)  # decode then appends in place (same values as DynamicCache)
        prefill_ms = clock.lap()
        rollout = self.decode(logits, cache, rope_delta, max_reasoning_tokens, greedy, temperature, top_p, generator,
                              early_stop=early_stop)
        decode_ms = clock.lap()

        repeat = num_samples // reasoning_rows  # shared reasoning: its one cache row serves every sample
        unguided = self.unguided_rollout(inputs, rollout) if guided else None
        unguided_ms = clock.lap() if guided else 0.0
        capacity = (self.fixed_capacity(inputs.input_ids.shape[1], max_reasoning_tokens, repeat)
                    if self.flow_compiled else None)
        context = self.expert_context(rollout, repeat, capacity, keep_buffers=self.flow_compiled)
        tokens = [row for row in rollout.tokens for _ in range(repeat)]
        decode_steps = rollout.steps
        complete = [done for done in rollout.complete for _ in range(repeat)]
        del cache, rollout  # the expert reads its own copy; the decode cache can go
        steps = self.config.diffusion_cfg.num_inference_steps if diffusion_steps is None else diffusion_steps
        # A copy made here: a caller's tensor (not an inference tensor) would recompile the compiled flow.
        x0 = noise.to(self.device, torch.float32, copy=True)
        if noise_temperature != 1.0:
            x0 = x0 * noise_temperature
        if unguided is None:
            action = self.flow(x0, context, steps)
        else:
            action = self.guided_flow(x0, context, self.expert_context(unguided, repeat), steps, nav_guidance_weight)
            del unguided
        expert_ms = clock.lap()
        xyz, rot = self.action_space.action_to_traj(
            action, hist_xyz.to(self.device).expand(num_samples, -1, -1),
            hist_rot.to(self.device).expand(num_samples, -1, -1, -1))
        trajectory_ms = clock.lap()
        reasoning = [read_reasoning(self.prompt_encoder.tokenizer, row, self.token_ids) for row in tokens]
        timings = Timings(vision_ms=vision_ms, prefill_ms=prefill_ms, decode_ms=decode_ms, expert_ms=expert_ms,
                          trajectory_ms=trajectory_ms, decode_tokens=decode_steps, unguided_ms=unguided_ms)
        return Prediction(xyz=xyz.cpu(), rot=rot.cpu(), action=action.cpu(), reasoning=[r.text for r in reasoning],
                          complete=complete, timings=timings, partial_reasoning=[r.partial for r in reasoning],
                          reasoning_closed=[r.closed for r in reasoning])


def vlm_attention_implementation(device: torch.device, dtype: torch.dtype) -> str:
    """flash_attention_2 for the VLM on a CUDA device in half precision when the flash-attn package is
    installed (the release's setting); sdpa otherwise. The expert always uses SDPA: it needs its mask."""
    from transformers.utils import is_flash_attn_2_available

    if device.type == "cuda" and dtype in (torch.bfloat16, torch.float16) and is_flash_attn_2_available():
        return "flash_attention_2"
    return "sdpa"


def _as_dtype(value: object) -> torch.dtype | None:
    """A config's `dtype` entry ("bfloat16", torch.bfloat16 or None) as a torch dtype."""
    if value is None or isinstance(value, torch.dtype):
        return value
    return getattr(torch, str(value).replace("torch.", ""), None)


def _cpu_float32(values: np.ndarray | torch.Tensor) -> torch.Tensor:
    if isinstance(values, torch.Tensor):
        return values.detach().to("cpu", torch.float32)
    return torch.as_tensor(np.asarray(values, dtype=np.float32))


class _StageClock:
    """Lap timer that waits for queued GPU work, so each lap is the stage's real duration."""

    def __init__(self, device: torch.device) -> None:
        self._cuda = device.type == "cuda"
        self._last = self._now()

    def _now(self) -> int:
        if self._cuda:
            torch.cuda.synchronize()
        return time.perf_counter_ns()

    def lap(self) -> float:
        now = self._now()
        elapsed, self._last = (now - self._last) / 1e6, now
        return elapsed

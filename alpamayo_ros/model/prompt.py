"""Tokens and prompt: the release's tokenizer extension, chat layout and image preprocessing.

Token ids must equal the release's embedding rows, so the tokenizer is extended exactly as upstream
(NVlabs/alpamayo `models/base_model.py`): first `<i0>`..`<i{V-1}>` as normal tokens, then the 29
special tokens in `SPECIAL_TOKEN_KEYS` order. The prompt is the R1 chat layout (`helper.py`): 16
images (camera-major), the history placeholders, the instruction, and an assistant turn left open
after `<|cot_start|>`. Alpamayo 1.5 (NVlabs/alpamayo1.5 `helper.create_message`) labels the images when
given camera ids ("Front camera: frame 0 <image>frame 1 <image>..."), for any number of cameras, and puts
a navigation instruction between the history and the instruction as `<|route_start|>text<|route_end|>`.
Everything loads from local directories; nothing here touches a hub.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import AutoTokenizer, PreTrainedTokenizerBase
from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor

from .cameras import camera_label

# Upstream `SPECIAL_TOKENS_KEYS`, in the order they are added; each becomes `<|key|>`.
logger = logging.getLogger(__name__)

SPECIAL_TOKEN_KEYS = (
    "prompt_start", "prompt_end", "image_start", "image_pre_tkn", "image_end", "traj_history_start",
    "traj_history_pre_tkn", "traj_history_end", "cot_start", "cot_end", "meta_action_start",
    "meta_action_end", "traj_future_start", "traj_future_pre_tkn", "traj_future_end", "traj_history",
    "traj_future", "image_pad", "vectorized_wm", "vectorized_wm_start", "vectorized_wm_end",
    "vectorized_wm_pre_tkn", "route_start", "route_pad", "route_end", "question_start", "question_end",
    "answer_start", "answer_end",
)

SYSTEM_PROMPT = "You are a driving assistant that generates safe and accurate actions."
INSTRUCTION = "output the chain-of-thought reasoning of the driving process, then output the future trajectory."


def check_route_text(route: str) -> str:
    """A navigation instruction as the prompt may hold it; raises ValueError on text that would break the span."""
    if not route.strip():
        raise ValueError("route text is empty; pass None for no route")
    if "<|" in route or "|>" in route:
        raise ValueError(f"route text {route!r} contains '<|' or '|>', which could read as special tokens")
    return route


def special_token(key: str) -> str:
    """`cot_start` -> `<|cot_start|>`."""
    return f"<|{key}|>"


def extend_tokenizer(tokenizer: PreTrainedTokenizerBase, traj_vocab_size: int, add_special_tokens: bool) -> None:
    """Add the trajectory and special tokens in the release's order. Idempotent: existing tokens are kept."""
    tokenizer.add_tokens([f"<i{i}>" for i in range(traj_vocab_size)])
    if add_special_tokens:
        tokenizer.add_tokens([special_token(k) for k in SPECIAL_TOKEN_KEYS], special_tokens=True)


@dataclass(frozen=True, slots=True)
class TokenIds:
    """Ids the model needs, read from an extended tokenizer."""

    traj_token_start_idx: int  # <i0>
    hist_token_start_idx: int  # first history bin token, after the future bins
    traj_vocab_size: int
    traj_history: int  # placeholder replaced by the history tokens
    traj_future_start: int  # the expert continues after this token
    cot_end: int
    eos: int  # <|im_end|>
    pad: int  # <|endoftext|>
    image_pad: int
    vocab_size: int
    special: dict[str, int]  # every SPECIAL_TOKEN_KEYS entry -> id

    @classmethod
    def from_tokenizer(cls, tokenizer: PreTrainedTokenizerBase, traj_vocab_size: int,
                       future_bins: int) -> TokenIds:
        def tid(text: str) -> int:
            ids = tokenizer.convert_tokens_to_ids([text])
            if not ids or ids[0] is None or ids[0] == tokenizer.unk_token_id:
                raise ValueError(f"tokenizer has no token {text!r}; was it extended for AlpamayoR1?")
            return int(ids[0])

        start = tid("<i0>")
        special = {k: tid(special_token(k)) for k in SPECIAL_TOKEN_KEYS}
        return cls(traj_token_start_idx=start, hist_token_start_idx=start + future_bins,
                   traj_vocab_size=traj_vocab_size, traj_history=special["traj_history"],
                   traj_future_start=special["traj_future_start"], cot_end=special["cot_end"],
                   eos=tid("<|im_end|>"), pad=tid("<|endoftext|>"), image_pad=tid("<|image_pad|>"),
                   vocab_size=len(tokenizer), special=special)

    def traj_token_ids(self) -> dict[str, int]:
        """The six ids upstream saves as `traj_token_ids` in config.json."""
        s = self.special
        return {"history": s["traj_history"], "future": s["traj_future"],
                "history_start": s["traj_history_start"], "future_start": s["traj_future_start"],
                "history_end": s["traj_history_end"], "future_end": s["traj_future_end"]}


def load_tokenizer(directory: str | Path) -> PreTrainedTokenizerBase:
    """A Qwen tokenizer from local files only."""
    return AutoTokenizer.from_pretrained(str(directory), local_files_only=True)


# Upstream `helper.py` builds the processor with these whatever the config says: 1080x1920 -> 320x576,
# 180 tokens per image. The base model's own range would give ~940 tokens per image.
PREPROCESS_THREADS = min(4, os.cpu_count() or 1)
RELEASE_MIN_PIXELS = 163840
RELEASE_MAX_PIXELS = 196608


def load_image_processor(directory: str | Path, min_pixels: int | None, max_pixels: int | None) -> Qwen2VLImageProcessor:
    """The Qwen2-VL image processor (PIL/numpy backend, no torchvision) from `preprocessor_config.json`.

    The pixel range comes from the AlpamayoR1 config; when it names none, the release's range is used.
    """
    if (min_pixels is None) != (max_pixels is None):
        raise ValueError(f"min_pixels={min_pixels} and max_pixels={max_pixels}: set both or neither")
    if min_pixels is None:
        logger.info("config sets no min/max_pixels; using the release's %d/%d", RELEASE_MIN_PIXELS, RELEASE_MAX_PIXELS)
        min_pixels, max_pixels = RELEASE_MIN_PIXELS, RELEASE_MAX_PIXELS
    return Qwen2VLImageProcessor.from_pretrained(
        str(directory), local_files_only=True, min_pixels=min_pixels, max_pixels=max_pixels,
        size={"shortest_edge": min_pixels, "longest_edge": max_pixels})


VISION_BLOCK = "<|vision_start|><|image_pad|><|vision_end|>"


def prompt_text(num_images: int, num_history_tokens: int, camera_ids: Sequence[int] | None = None,
                route: str | None = None) -> str:
    """The chat prompt, with one vision block per image and the history placeholders.

    Without `camera_ids` and `route` it is R1's. With `camera_ids` (NVIDIA indices, one per camera, images
    camera-major) each camera's first image is preceded by its label and ": ", every image by "frame k "
    (k from 0 per camera), as 1.5's `create_message`; `route` adds 1.5's route span after the history.
    """
    if camera_ids is None:
        vision = VISION_BLOCK * num_images
    else:
        if not camera_ids or num_images % len(camera_ids):
            raise ValueError(f"{num_images} images do not split evenly over camera ids {list(camera_ids)}")
        frames = num_images // len(camera_ids)
        vision = "".join(f"{camera_label(c)}: " + "".join(f"frame {k} {VISION_BLOCK}" for k in range(frames))
                         for c in camera_ids)
    history = (special_token("traj_history_start") + special_token("traj_history") * num_history_tokens
               + special_token("traj_history_end"))
    route_span = "" if route is None else (special_token("route_start") + check_route_text(route)
                                           + special_token("route_end"))
    return (f"<|im_start|>system\n{SYSTEM_PROMPT}<|im_end|>\n"
            f"<|im_start|>user\n{vision}{history}{route_span}{INSTRUCTION}<|im_end|>\n"
            f"<|im_start|>assistant\n{special_token('cot_start')}")


class PromptEncoder:
    """Per-image pixels and the prompt's token ids, reproducing the upstream processor's output."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, image_processor: Qwen2VLImageProcessor,
                 token_ids: TokenIds) -> None:
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.token_ids = token_ids
        self._pool: ThreadPoolExecutor | None = None  # made on first use

    def pixels(self, image: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """(H, W, 3) uint8 RGB -> patches (n, C * temporal_patch * patch^2) float32 and grid (1, 3) int64."""
        processed = self.image_processor(images=[image], return_tensors="pt")
        return processed["pixel_values"], processed["image_grid_thw"]

    def pixels_of(self, images: list[np.ndarray]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """`pixels` of several images, one processor call each on a few threads (per-image arithmetic: the same
        values as one call for all). PIL's resize and numpy release the GIL: 16 frames of 1080p took 92 ms
        instead of 165 ms on 2 cores, 165-263 ms instead of 344-412 ms beside two CPU-bound processes."""
        if len(images) < 2:
            return [self.pixels(image) for image in images]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=PREPROCESS_THREADS, thread_name_prefix="alpamayo-pixels")
        return list(self._pool.map(self.pixels, images))

    def input_ids(self, grids: torch.Tensor, history_ids: torch.Tensor, camera_ids: Sequence[int] | None = None,
                  route: str | None = None) -> torch.Tensor:
        """(1, L) prompt ids for images with these (num_images, 3) grids and (1, H) history token ids;
        `camera_ids` and `route` as in `prompt_text`."""
        merge = self.image_processor.merge_size ** 2
        text = prompt_text(grids.shape[0], history_ids.shape[-1], camera_ids, route)
        # Expand each image placeholder to that image's number of merged patches, as the processor does.
        parts = text.split("<|image_pad|>")
        expanded = parts[0] + "".join("<|image_pad|>" * (int(g.prod()) // merge) + part
                                      for g, part in zip(grids, parts[1:]))
        input_ids = self.tokenizer(expanded, return_tensors="pt", add_special_tokens=False)["input_ids"]
        return fuse_history(input_ids, history_ids, self.token_ids.traj_history)


def fuse_history(input_ids: torch.Tensor, history_ids: torch.Tensor, placeholder_id: int) -> torch.Tensor:
    """Write history token ids, in order, over the placeholder ids (upstream `replace_pad_token`)."""
    slots = input_ids == placeholder_id
    if int(slots.sum()) != history_ids.numel():
        raise ValueError(f"prompt has {int(slots.sum())} history placeholders, got {history_ids.numel()} tokens")
    fused = input_ids.clone()
    fused[slots] = history_ids.reshape(-1).to(fused.dtype)
    return fused


def remove_route(input_ids: torch.Tensor, token_ids: TokenIds) -> torch.Tensor:
    """(1, L) ids without the span <|route_start|> ... <|route_end|> (inclusive), as 1.5's `remove_nav_text`.

    Raises ValueError when the prompt has no complete route span.
    """
    ids = input_ids[0].tolist()
    start_id, end_id = token_ids.special["route_start"], token_ids.special["route_end"]
    if start_id not in ids or end_id not in ids:
        raise ValueError("prompt has no <|route_start|> ... <|route_end|> span")
    start, end = ids.index(start_id), ids.index(end_id)
    return torch.cat([input_ids[:, :start], input_ids[:, end + 1:]], dim=1)


@dataclass(frozen=True, slots=True)
class Reasoning:
    """One sample's Chain-of-Causation, read from its generated tokens."""

    text: str  # upstream's `extra["cot"]`: "" unless <|cot_end|> was written
    partial: str  # what was written: `text` when `closed`, else the unfinished text up to the stop or limit
    closed: bool  # <|cot_end|> was written before <|traj_future_start|> / <|im_end|>


def read_reasoning(tokenizer: PreTrainedTokenizerBase, generated: list[int], token_ids: TokenIds) -> Reasoning:
    """Upstream `extract_between_special_tokens(..., "cot")` on one sample.

    Upstream decodes the whole sequence with special tokens kept and takes the text before the first
    <|cot_end|>, after the last <|cot_start|> (the prompt ends with one), stripped; "" without
    <|cot_end|>. Everything after <|traj_future_start|> or <|im_end|> is a pad there.
    """
    stops = (token_ids.traj_future_start, token_ids.eos)
    end = next((i for i, t in enumerate(generated) if t in stops), len(generated))
    decoded = tokenizer.decode(generated[:end], skip_special_tokens=False)
    before_end, closed, _ = decoded.partition(special_token("cot_end"))
    start = before_end.rfind(special_token("cot_start"))
    written = (before_end[start + len(special_token("cot_start")):] if start >= 0 else before_end).strip()
    return Reasoning(text=written if closed else "", partial=written, closed=bool(closed))

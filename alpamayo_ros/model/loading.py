"""Build an AlpamayoR1 or Alpamayo 1.5 from a local checkpoint directory, save one, or make a tiny random one.

A release checkpoint is `config.json` (hydra-style `_target_` dicts), sharded safetensors with
`model.safetensors.index.json`, and tokenizer/processor files. Its `config.json` names the base
Qwen3-VL model (`vlm_name_or_path`); that model's `config.json` (and, if the checkpoint lacks them,
its tokenizer and `preprocessor_config.json`) must be in a local directory: `base_model_dir`, or the
name itself resolved inside or next to the checkpoint. Nothing is downloaded. An Alpamayo 1.5 checkpoint
(`model_type` "alpamayo1_5") has the same layout less seven derived buffers, and ships no tokenizer or
processor files; NVIDIA's 1.5 loader turns an unset attention implementation into flash_attention_2 and
fails without flash-attn, ours picks what is installed (`vlm_attention_implementation`) and logs it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from transformers import Qwen2TokenizerFast, Qwen3VLConfig
from transformers.modeling_utils import no_init_weights
from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor

from .alpamayo_r1 import AlpamayoR1
from .config import MODEL_TYPES, ActionInProjConfig, AlpamayoR1Config, ExpertConfig
from .prompt import (
    RELEASE_MAX_PIXELS,
    RELEASE_MIN_PIXELS,
    PromptEncoder,
    TokenIds,
    extend_tokenizer,
    load_image_processor,
    load_tokenizer,
)

logger = logging.getLogger(__name__)

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
BASE_VLM_DIR = "base_vlm"  # where `save_pretrained` puts the base Qwen3-VL config
# The embedded driver (tools/train_driver.py; its README): what runs when no checkpoint is named.
EMBEDDED_DRIVER_DIR = Path(__file__).resolve().parents[1] / "driver"
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_SHOWN = 5  # offending keys listed per category in a checkpoint error


class CheckpointError(ValueError):
    """A checkpoint directory that does not hold this model's weights."""


def parse_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """'bfloat16' | 'float32' | 'float16' | torch.dtype -> torch.dtype."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise ValueError(f"dtype {dtype!r} is not one of {sorted(_DTYPES)}")
    return _DTYPES[dtype]


def resolve_base_dir(checkpoint_dir: Path, vlm_name_or_path: str, base_model_dir: str | Path | None) -> Path:
    """The local directory holding the base Qwen3-VL `config.json`."""
    if base_model_dir is not None:
        candidates = [Path(base_model_dir)]
    else:
        name = Path(vlm_name_or_path)
        candidates = [name] if name.is_absolute() else [checkpoint_dir / name, checkpoint_dir.parent / name]
    for candidate in candidates:
        if (candidate / "config.json").is_file():
            return candidate
    raise FileNotFoundError(
        f"no base Qwen3-VL config.json for vlm_name_or_path={vlm_name_or_path!r} (looked in "
        f"{[str(c) for c in candidates]}); pass base_model_dir= pointing at a local copy of that model's "
        "config.json and processor files")


def _has_tokenizer(directory: Path) -> bool:
    return (directory / "tokenizer.json").is_file() or (directory / "vocab.json").is_file()


def _build(config: AlpamayoR1Config, vlm_config: Qwen3VLConfig, encoder: PromptEncoder,
           device: torch.device, dtype: torch.dtype, init_weights: bool) -> AlpamayoR1:
    """Construct on `device` in `dtype`; without `init_weights` memory is allocated but not initialised."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        skip = contextlib.nullcontext() if init_weights else no_init_weights()
        with skip, device:
            model = AlpamayoR1(config, vlm_config, encoder)
    finally:
        torch.set_default_dtype(previous)
    model.action_space.float()  # statistics stay float32 (not cast with the model, as upstream)
    model.select_attention()
    return model.eval()


def _shard_files(checkpoint_dir: Path) -> dict[str, list[str]]:
    """Shard file -> keys it should hold, from the index (or the single-file checkpoint)."""
    index = checkpoint_dir / INDEX_FILE
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        files: dict[str, list[str]] = {}
        for key, file in weight_map.items():
            files.setdefault(file, []).append(key)
        return files
    if (checkpoint_dir / SINGLE_FILE).is_file():
        with safe_open(str(checkpoint_dir / SINGLE_FILE), "pt") as f:
            return {SINGLE_FILE: list(f.keys())}
    raise CheckpointError(f"{checkpoint_dir} has neither {INDEX_FILE} nor {SINGLE_FILE}")


def load_weights(model: torch.nn.Module, checkpoint_dir: str | Path) -> None:
    """Copy a safetensors checkpoint into `model`, after checking every key and shape.

    Raises CheckpointError listing missing, unexpected and shape-mismatched keys (first few of each,
    with counts), or naming an unreadable shard. Nothing is copied unless everything matches.
    """
    checkpoint_dir = Path(checkpoint_dir)
    expected = model.state_dict()
    found: dict[str, tuple[str, tuple[int, ...]]] = {}
    for file, keys in _shard_files(checkpoint_dir).items():
        path = checkpoint_dir / file
        try:
            with safe_open(str(path), "pt") as f:
                present = set(f.keys())
                absent = [k for k in keys if k not in present]
                if absent:
                    raise CheckpointError(f"{file} lacks {len(absent)} keys its index assigns to it, "
                                          f"e.g. {absent[:_SHOWN]}")
                for key in present:
                    found[key] = (file, tuple(f.get_slice(key).get_shape()))
        except (SafetensorError, OSError) as exc:
            raise CheckpointError(f"cannot read shard {path}: {exc}") from exc
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    mismatched = sorted(f"{k}: checkpoint {found[k][1]} vs model {tuple(expected[k].shape)}"
                        for k in set(found) & set(expected) if found[k][1] != tuple(expected[k].shape))
    if missing or unexpected or mismatched:
        parts = [f"{name} ({len(items)}): {items[:_SHOWN]}"
                 for name, items in (("missing", missing), ("unexpected", unexpected),
                                     ("shape mismatch", mismatched)) if items]
        kind = MODEL_TYPES[model.config.model_type] if hasattr(model, "config") else type(model).__name__
        raise CheckpointError(f"checkpoint {checkpoint_dir} does not match {kind}: " + "; ".join(parts))
    by_file: dict[str, list[str]] = {}
    for key, (file, _) in found.items():
        by_file.setdefault(file, []).append(key)
    with torch.no_grad():
        for file, keys in by_file.items():
            with safe_open(str(checkpoint_dir / file), "pt", device="cpu") as f:
                for key in keys:
                    expected[key].copy_(f.get_tensor(key))


def from_pretrained(checkpoint_dir: str | Path, *, base_model_dir: str | Path | None = None,
                    device: str | torch.device = "cpu", dtype: str | torch.dtype | None = None) -> AlpamayoR1:
    """Load a released (or `save_pretrained`) AlpamayoR1 or Alpamayo 1.5 from local directories only.

    Args:
        checkpoint_dir: directory with config.json, safetensors shards and index; its `model_type` says which.
        base_model_dir: local base Qwen3-VL directory; default: `vlm_name_or_path` resolved locally.
        device: torch device for the model ("cuda", "cpu", ...).
        dtype: parameter dtype; default the config's `model_dtype`. Action-space statistics stay float32.
    """
    checkpoint_dir = Path(checkpoint_dir)
    if not (checkpoint_dir / "config.json").is_file():
        raise FileNotFoundError(f"{checkpoint_dir} has no config.json; expected an AlpamayoR1 or Alpamayo 1.5 "
                                "checkpoint directory")
    config = AlpamayoR1Config.from_json(checkpoint_dir / "config.json")
    base_dir = resolve_base_dir(checkpoint_dir, config.vlm_name_or_path, base_model_dir)
    vlm_config = Qwen3VLConfig.from_pretrained(str(base_dir), local_files_only=True)
    tokenizer = load_tokenizer(checkpoint_dir if _has_tokenizer(checkpoint_dir) else base_dir)
    extend_tokenizer(tokenizer, config.traj_vocab_size, config.add_special_tokens)
    token_ids = TokenIds.from_tokenizer(tokenizer, config.traj_vocab_size, config.traj_tokenizer_cfg.num_bins)
    _check_saved_token_fields(config, token_ids)
    processor_dir = checkpoint_dir if (checkpoint_dir / "preprocessor_config.json").is_file() else base_dir
    image_processor = load_image_processor(processor_dir, config.min_pixels, config.max_pixels)
    model = _build(config, vlm_config, PromptEncoder(tokenizer, image_processor, token_ids), torch.device(device),
                   parse_dtype(dtype or config.model_dtype), init_weights=False)
    load_weights(model, checkpoint_dir)
    logger.info("loaded %s from %s (base %s) on %s in %s; VLM attention: %s (installed kernels decide; the expert "
                "uses sdpa)", MODEL_TYPES[config.model_type], checkpoint_dir, base_dir, device, model.dtype,
                model.vlm.config._attn_implementation)
    return model


def _check_saved_token_fields(config: AlpamayoR1Config, token_ids: TokenIds) -> None:
    """Upstream saves ids computed from its tokenizer; ours must agree or embeddings would be misread."""
    checks = (("vocab_size", config.vocab_size, token_ids.vocab_size),
              ("traj_token_start_idx", config.traj_token_start_idx, token_ids.traj_token_start_idx),
              ("traj_token_ids", config.traj_token_ids, token_ids.traj_token_ids()))
    for name, saved, ours in checks:
        if saved is not None and saved != ours:
            raise CheckpointError(f"config.json {name}={saved} but the extended tokenizer gives {ours}; "
                                  "the tokenizer files do not belong to this checkpoint")


def save_pretrained(model: AlpamayoR1, directory: str | Path, max_shard_bytes: int = 5 * 1024**3) -> None:
    """Write `model` in the release's layout: config.json, sharded safetensors + index, tokenizer files.

    The base Qwen3-VL config goes to `<directory>/base_vlm/`, named by a relative `vlm_name_or_path`.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for key in sorted(state):
        nbytes = state[key].numel() * state[key].element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][key] = state[key]
        size += nbytes
    weight_map = {}
    for i, shard in enumerate(shards, start=1):
        name = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(directory / name), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(shard, name))
    total = sum(t.numel() * t.element_size() for t in state.values())
    index = {"metadata": {"total_size": total, "total_parameters": sum(t.numel() for t in state.values())},
             "weight_map": dict(sorted(weight_map.items()))}
    (directory / INDEX_FILE).write_text(json.dumps(index, indent=2))
    ids = model.token_ids
    config = dict(model.config.to_dict(), vlm_name_or_path=BASE_VLM_DIR, vocab_size=ids.vocab_size,
                  traj_token_start_idx=ids.traj_token_start_idx, traj_token_ids=ids.traj_token_ids())
    (directory / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
    model.vlm.config.save_pretrained(str(directory / BASE_VLM_DIR))
    model.prompt_encoder.tokenizer.save_pretrained(str(directory))
    model.prompt_encoder.image_processor.save_pretrained(str(directory))


# --------------------------------------------------------------------------------------------------
# Tiny random model: the release's layout and code paths at a size that runs on a CPU in seconds.

# Qwen's added tokens in their id order (151643...; 256... in the tiny byte-level vocabulary).
_QWEN_ADDED_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>",
    "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>", "<tool_call>", "</tool_call>", "<|fim_prefix|>",
    "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>", "<tool_response>",
    "</tool_response>", "<think>", "</think>",
)
QWEN_BASE_VOCAB = 151643  # Qwen's byte-level BPE vocabulary; its added tokens start here
TINY_MIN_PIXELS = 5120  # 64 x 96 images stay 64 x 96: 4 x 6 patches of 16, 6 tokens after 2 x 2 merging
TINY_MAX_PIXELS = 6144


def _byte_alphabet() -> list[str]:
    """The 256 printable stand-ins GPT-2-style byte-level BPE uses for bytes."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) \
        + list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = [], 0
    for b in range(256):
        if b in printable:
            chars.append(chr(b))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    return chars


def tiny_tokenizer(base_vocab_size: int = 256) -> Qwen2TokenizerFast:
    """A byte-level Qwen2 tokenizer with no merges, built locally, Qwen's added tokens right after its vocab.

    `base_vocab_size` pads the 256 byte symbols with unreachable filler entries; 151643 reproduces the
    real Qwen tokenizer's id layout (added tokens from 151643, `len` 151669).
    """
    vocab = {ch: i for i, ch in enumerate(_byte_alphabet())}
    vocab.update({f"filler{i}": i for i in range(len(vocab), base_vocab_size)})
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "vocab.json").write_text(json.dumps(vocab))
        (Path(tmp) / "merges.txt").write_text("#version: 0.2\n")
        tokenizer = Qwen2TokenizerFast(vocab_file=os.path.join(tmp, "vocab.json"),
                                       merges_file=os.path.join(tmp, "merges.txt"),
                                       unk_token=None, bos_token=None, eos_token=None, pad_token=None)
    tokenizer.add_tokens(list(_QWEN_ADDED_TOKENS), special_tokens=True)  # before naming eos/pad: keeps the order
    tokenizer.eos_token, tokenizer.pad_token = "<|im_end|>", "<|endoftext|>"
    return tokenizer


def _qwen3_vl_config(base_vocab_size: int, text: dict, vision: dict) -> Qwen3VLConfig:
    """A Qwen3-VL config with the release's fixed settings; special ids as `tiny_tokenizer(base_vocab_size)` has them."""
    special = {t: base_vocab_size + i for i, t in enumerate(_QWEN_ADDED_TOKENS)}
    return Qwen3VLConfig(
        text_config=dict(text, rope_theta=5e6, rms_norm_eps=1e-6, bos_token_id=special["<|endoftext|>"],
                         eos_token_id=special["<|im_end|>"]),
        vision_config=dict(vision, patch_size=16, spatial_merge_size=2, temporal_patch_size=2),
        image_token_id=special["<|image_pad|>"], video_token_id=special["<|video_pad|>"],
        vision_start_token_id=special["<|vision_start|>"], vision_end_token_id=special["<|vision_end|>"],
        tie_word_embeddings=False)


def tiny_config() -> tuple[AlpamayoR1Config, Qwen3VLConfig]:
    """The release's token layout (4000 trajectory tokens, 48 history tokens) around a ~2 M-parameter network."""
    config = AlpamayoR1Config(
        vlm_name_or_path=BASE_VLM_DIR, min_pixels=TINY_MIN_PIXELS, max_pixels=TINY_MAX_PIXELS, model_dtype="float32",
        action_in_proj_cfg=ActionInProjConfig(hidden_size=32),
        expert_cfg=ExpertConfig(hidden_size=64, intermediate_size=96, num_attention_heads=4, head_dim=32))
    vlm_config = _qwen3_vl_config(
        256,
        text=dict(vocab_size=384, hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=32, max_position_embeddings=4096,
                  # mrope_section sums to head_dim / 2 (the release: [24, 20, 20] for 128)
                  rope_scaling={"rope_type": "default", "mrope_section": [6, 5, 5], "mrope_interleaved": True}),
        vision=dict(depth=2, hidden_size=64, intermediate_size=128, num_heads=2, out_hidden_size=128,
                    num_position_embeddings=64, deepstack_visual_indexes=[0, 1]))
    return config, vlm_config


DRIVER_PIXELS = 96 * 160  # the demo's camera images (make_sample_bag) stay 96 x 160: 3 x 5 = 15 tokens each


def driver_config(expert_width: int = 96, vision_width: int = 96, action_max_freq: float = 0.1,
                  text_layers: int = 3) -> tuple[AlpamayoR1Config, Qwen3VLConfig]:
    """The synthetic-world driver's architecture (tools/train_driver.py): the tiny layout with a third layer, a wider
    vision tower and expert, and full-resolution demo images; about 3 M parameters (12 MB in float32).

    The action Fourier features span 0.1-1 cycles per unit instead of the release's 1-100: a normalised
    action (within about +-3) is then a smooth, one-to-one function of its features, and the expert learns
    from few CPU steps (measured on 8 world samples: flow loss 0.97 after 60 steps, 1.62 with max_freq 4,
    1.74 with the release's 100).

    `expert_width`: the expert's hidden size (its MLP twice that); its attention keeps the VLM's heads.
    `vision_width`: the vision tower's hidden size (its MLP twice that, two heads); its output stays the LM's 128.
    `action_max_freq`: the Fourier features' last (lowest) frequency; over +-1 / (2 x this) around zero that
    frequency's (sin, cos) pair is one-to-one, and it repeats for values 1 / this apart.
    `text_layers`: the language model's depth, and so the expert's, which has one layer per LM layer whose cache
    it reads (as the release's 36 read Qwen3-VL-8B's 36).
    """
    config = AlpamayoR1Config(
        vlm_name_or_path=BASE_VLM_DIR, min_pixels=DRIVER_PIXELS, max_pixels=DRIVER_PIXELS, model_dtype="float32",
        action_in_proj_cfg=ActionInProjConfig(hidden_size=64, max_freq=action_max_freq),
        expert_cfg=ExpertConfig(hidden_size=expert_width, intermediate_size=2 * expert_width, num_attention_heads=4,
                                head_dim=32))
    vlm_config = _qwen3_vl_config(
        256,
        text=dict(vocab_size=384, hidden_size=128, intermediate_size=256, num_hidden_layers=text_layers,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=32, max_position_embeddings=4096,
                  rope_scaling={"rope_type": "default", "mrope_section": [6, 5, 5], "mrope_interleaved": True}),
        vision=dict(depth=2, hidden_size=vision_width, intermediate_size=2 * vision_width, num_heads=2,
                    out_hidden_size=128, num_position_embeddings=64, deepstack_visual_indexes=[0, 1]))
    return config, vlm_config


def release_config() -> tuple[AlpamayoR1Config, Qwen3VLConfig]:
    """The released model's architecture (reference §2.3-2.4): Qwen3-VL-8B plus the 2.3 B-parameter expert.

    With `random_model(..., base_vocab_size=QWEN_BASE_VOCAB)` it has the release's 155,697-token vocabulary
    and 11,078,526,194 parameters, so latency can be measured without the checkpoint.
    """
    config = AlpamayoR1Config(
        vlm_name_or_path=BASE_VLM_DIR, min_pixels=RELEASE_MIN_PIXELS, max_pixels=RELEASE_MAX_PIXELS,
        model_dtype="bfloat16", action_in_proj_cfg=ActionInProjConfig(hidden_size=512),
        expert_cfg=ExpertConfig(hidden_size=2048, intermediate_size=8256, num_attention_heads=16, head_dim=128))
    vlm_config = _qwen3_vl_config(
        QWEN_BASE_VOCAB,
        text=dict(vocab_size=151936, hidden_size=4096, intermediate_size=12288, num_hidden_layers=36,
                  num_attention_heads=32, num_key_value_heads=8, head_dim=128, max_position_embeddings=262144,
                  rope_scaling={"rope_type": "default", "mrope_section": [24, 20, 20], "mrope_interleaved": True}),
        vision=dict(depth=27, hidden_size=1152, intermediate_size=4304, num_heads=16, out_hidden_size=4096,
                    num_position_embeddings=2304, deepstack_visual_indexes=[8, 16, 24]))
    return config, vlm_config


def random_model(config: AlpamayoR1Config, vlm_config: Qwen3VLConfig, seed: int = 0,
                 device: str | torch.device = "cpu", dtype: str | torch.dtype = torch.float32,
                 base_vocab_size: int = 256) -> AlpamayoR1:
    """A randomly initialised AlpamayoR1 of any size, with the byte-level tiny tokenizer.

    `config.min_pixels` / `max_pixels` set the image processor's resolution (patch 16, merge 2).
    Weights are initialised on `device` (the same seed gives other values on another device).
    `base_vocab_size`: see `tiny_tokenizer`; QWEN_BASE_VOCAB gives the release's embedding rows.
    """
    tokenizer = tiny_tokenizer(base_vocab_size)
    extend_tokenizer(tokenizer, config.traj_vocab_size, config.add_special_tokens)
    token_ids = TokenIds.from_tokenizer(tokenizer, config.traj_vocab_size, config.traj_tokenizer_cfg.num_bins)
    image_processor = Qwen2VLImageProcessor(
        patch_size=16, temporal_patch_size=2, merge_size=2, image_mean=[0.5] * 3, image_std=[0.5] * 3,
        min_pixels=config.min_pixels, max_pixels=config.max_pixels,
        size={"shortest_edge": config.min_pixels, "longest_edge": config.max_pixels})
    encoder = PromptEncoder(tokenizer, image_processor, token_ids)
    device = torch.device(device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        return _build(config, vlm_config, encoder, device, parse_dtype(dtype), init_weights=device.type != "meta")


def tiny(seed: int = 0, device: str | torch.device = "cpu") -> AlpamayoR1:
    """A small random AlpamayoR1 with the release's layout, tokenizer and processor built locally."""
    return random_model(*tiny_config(), seed=seed, device=device)

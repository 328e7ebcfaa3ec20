"""Tokenizer extension and prompt layout against reference §4.1/§4.4 and the conformance vectors."""

import json

import pytest
import torch
from safetensors.torch import load_file

from alpamayo_ros.model.loading import tiny_tokenizer
from alpamayo_ros.model.prompt import (
    SPECIAL_TOKEN_KEYS,
    PromptEncoder,
    TokenIds,
    extend_tokenizer,
    fuse_history,
    load_image_processor,
    load_tokenizer,
    prompt_text,
)

# Reference §4.1: the release's ids (Qwen3-VL base tokenizer of 151669 tokens, 4000 trajectory tokens).
RELEASE_SPECIAL_IDS = {
    "prompt_start": 155669, "prompt_end": 155670, "image_start": 155671, "image_pre_tkn": 155672,
    "image_end": 155673, "traj_history_start": 155674, "traj_history_pre_tkn": 155675,
    "traj_history_end": 155676, "cot_start": 155677, "cot_end": 155678, "meta_action_start": 155679,
    "meta_action_end": 155680, "traj_future_start": 155681, "traj_future_pre_tkn": 155682,
    "traj_future_end": 155683, "traj_history": 155684, "traj_future": 155685, "image_pad": 151655,
    "vectorized_wm": 155686, "vectorized_wm_start": 155687, "vectorized_wm_end": 155688,
    "vectorized_wm_pre_tkn": 155689, "route_start": 155690, "route_pad": 155691, "route_end": 155692,
    "question_start": 155693, "question_end": 155694, "answer_start": 155695, "answer_end": 155696,
}


def test_release_configuration_token_ids_equal_reference():
    tokenizer = tiny_tokenizer(base_vocab_size=151643)  # the real Qwen layout: added tokens from 151643
    assert len(tokenizer) == 151669
    extend_tokenizer(tokenizer, traj_vocab_size=4000, add_special_tokens=True)
    ids = TokenIds.from_tokenizer(tokenizer, traj_vocab_size=4000, future_bins=3000)
    assert len(tokenizer) == 155697
    assert ids.special == RELEASE_SPECIAL_IDS
    assert ids.traj_token_start_idx == 151669
    assert tokenizer.convert_tokens_to_ids("<i3999>") == 155668
    assert ids.hist_token_start_idx == 154669  # <i3000>
    assert (ids.eos, ids.pad, ids.image_pad) == (151645, 151643, 151655)


def test_extension_is_idempotent_and_matches_conformance_ids(conformance_dir):
    vectors = json.loads((conformance_dir / "vectors.json").read_text())["token_ids"]
    tokenizer = load_tokenizer(conformance_dir / "tiny_qwen3vl")
    for _ in range(2):
        extend_tokenizer(tokenizer, 4000, True)
    ids = TokenIds.from_tokenizer(tokenizer, 4000, 3000)
    assert len(tokenizer) == vectors["len_tokenizer"]
    assert ids.special == vectors["special_token_ids"]
    assert ids.traj_token_ids() == vectors["traj_token_ids"]
    assert ids.hist_token_start_idx == vectors["hist_token_start_idx"]
    assert len(SPECIAL_TOKEN_KEYS) == 29


def test_prompt_matches_reference_processor_output(conformance_dir):
    vectors = json.loads((conformance_dir / "vectors.json").read_text())["prompt"]
    inputs = load_file(conformance_dir / "inputs.safetensors")
    ref = load_file(conformance_dir / "prompt.safetensors")
    tokenizer = load_tokenizer(conformance_dir / "checkpoint")
    extend_tokenizer(tokenizer, 4000, True)
    ids = TokenIds.from_tokenizer(tokenizer, 4000, 3000)
    encoder = PromptEncoder(tokenizer, load_image_processor(conformance_dir / "tiny_qwen3vl", 5120, 6144), ids)
    assert prompt_text(16, 48) == vectors["text"]
    images = [frame.permute(1, 2, 0).numpy() for frame in inputs["image_frames"].flatten(0, 1)]
    pixels, grids = zip(*(encoder.pixels(image) for image in images))
    assert torch.equal(torch.cat(grids), ref["image_grid_thw"])
    assert torch.allclose(torch.cat(pixels), ref["pixel_values"], atol=1e-6)
    assert torch.equal(encoder.input_ids(torch.cat(grids), ref["history_token_ids"]), ref["input_ids_after_fusion"])


def test_fuse_history_rejects_wrong_token_count():
    with pytest.raises(ValueError, match="3 history placeholders, got 2 tokens"):
        fuse_history(torch.tensor([[1, 9, 9, 9, 2]]), torch.tensor([[5, 6]]), placeholder_id=9)

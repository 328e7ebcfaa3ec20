"""Alpamayo 1.5 against NVIDIA's 1.5 vectors (conformance/alpamayo1_5): checkpoint, prompts, navigation rollout."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file
from test_alpamayo_r1 import CHAIN_STEP_ULPS, CHAIN_TAIL
from transformers.cache_utils import DynamicCache

from alpamayo_ros.model.alpamayo_r1 import _Rollout
from alpamayo_ros.model.cameras import camera_label
from alpamayo_ros.model.config import AlpamayoR1Config
from alpamayo_ros.model.flow_matching import time_grid
from alpamayo_ros.model.loading import from_pretrained
from alpamayo_ros.model.prompt import prompt_text, read_reasoning, remove_route
from tolerances import ACTION_IN_ULPS, EPS, EXPERT_ULPS, TEXT_ULPS, TRAJECTORY_ULPS, close


@pytest.fixture(scope="module")
def folder(conformance_dir):
    return conformance_dir / "alpamayo1_5"


@pytest.fixture(scope="module")
def vectors(folder):
    return json.loads((folder / "vectors.json").read_text())


@pytest.fixture(scope="module")
def model15(folder):
    # The reference upcasts the bf16 shards and computes in float32 (README "Dtypes").
    return from_pretrained(folder / "checkpoint", dtype="float32")


def test_checkpoint_loads_the_bf16_shards_upcast_and_derives_the_unstored_buffers(model15, folder, vectors, inputs):
    facts = vectors["checkpoint"]
    assert model15.is_1_5 and model15.config.include_camera_ids is True
    state = model15.state_dict()
    seen = 0
    for shard in sorted((folder / "checkpoint").glob("model-*.safetensors")):
        for key, tensor in load_file(shard).items():
            assert tensor.dtype == torch.bfloat16 and torch.equal(state[key], tensor.float()), key
            seen += 1
    assert seen == len(state) == facts["keys_in_checkpoint"]  # the 7 derived buffers are not state
    assert all(key not in state for key in facts["keys_only_in_r1_tiny_checkpoint"])
    ref = load_file(folder / "action_in_proj15.safetensors")
    proj = model15.action_in_proj
    assert torch.equal(proj.sinus[0].freqs, ref["freqs_sinus0"]) and torch.equal(proj.sinus[1].freqs, ref["freqs_sinus1"])
    assert torch.equal(proj.timestep_fourier_encoder.freqs, ref["freqs_timestep"])
    space = model15.action_space
    stats = torch.stack([getattr(space, name) for name in space.STATISTICS])
    assert torch.equal(stats, ref["action_space_stats"])
    with torch.inference_mode():
        out = proj(inputs["action_in_proj_x"], inputs["action_in_proj_t"])
    close(out, ref["output"], ACTION_IN_ULPS, "1.5 action_in_proj")


def test_a_bf16_backbone_rounds_the_frequencies_to_bf16_as_upstream(folder, tmp_path):
    # Qwen3-VL-8B's text config says bfloat16: upstream's frequencies are then bf16 even in a float32 model.
    base = tmp_path / "tiny_qwen3vl"
    shutil.copytree(folder / "tiny_qwen3vl", base)
    config = json.loads((base / "config.json").read_text())
    config["text_config"]["dtype"] = "bfloat16"
    (base / "config.json").write_text(json.dumps(config))
    model = from_pretrained(folder / "checkpoint", base_model_dir=base, dtype="float32")
    expected = load_file(folder / "action_in_proj15.safetensors")["freqs_release_like_dtype_float32"]
    for encoder in (*model.action_in_proj.sinus, model.action_in_proj.timestep_fourier_encoder):
        assert torch.equal(encoder.freqs, expected)
    probe = json.loads((folder / "vectors.json").read_text())["release_dtype_probe"]["dtype=float32"]
    assert model.action_space.accel_mean.item() == probe["accel_mean"]  # float32 statistics in a float32 model


def test_a_checkpoint_of_neither_kind_is_named(folder):
    raw = json.loads((folder / "checkpoint" / "config.json").read_text())
    with pytest.raises(ValueError, match="model_type 'pi0'.*neither AlpamayoR1"):
        AlpamayoR1Config.from_dict(dict(raw, model_type="pi0", architectures=["PI0"]))
    with pytest.raises(ValueError, match="architectures=\\['AlpamayoR1'\\] does not match model_type 'alpamayo1_5'"):
        AlpamayoR1Config.from_dict(dict(raw, architectures=["AlpamayoR1"]))
    r1 = dict(raw, model_type="alpamayo_r1", architectures=["AlpamayoR1"])
    with pytest.raises(ValueError, match="_target_` is 'alpamayo1_5"):
        AlpamayoR1Config.from_dict(r1)  # 1.5 targets under an R1 model type
    config = AlpamayoR1Config.from_dict(raw)
    assert AlpamayoR1Config.from_dict(config.to_dict()) == config
    assert config.to_dict()["diffusion_cfg"]["_target_"] == raw["diffusion_cfg"]["_target_"]


# ------------------------------------------------------------------------------------------------------
# Prompts: camera labels, frame numbers and the route span, token for token.

@pytest.fixture(scope="module")
def prompts(folder):
    return load_file(folder / "prompts.safetensors")


@pytest.fixture(scope="module")
def inputs(folder):
    """The R1 conformance inputs, which the 1.5 vectors share (byte-identical)."""
    return load_file(folder.parent / "inputs.safetensors")


@pytest.fixture(scope="module")
def frames(inputs):
    return inputs["image_frames"].permute(0, 1, 3, 4, 2).numpy(), inputs["ego_history_xyz"][0, 0]


def prompt_arguments(vectors, variant):
    return vectors["prompts"][variant]["camera_indices"], vectors["prompts"][variant]["nav_text"]


@pytest.mark.parametrize("variant", ["labels", "labels_nav", "r1style"])
def test_prompt_text_and_ids_equal_the_reference(model15, vectors, prompts, frames, variant):
    camera_ids, route = prompt_arguments(vectors, variant)
    assert prompt_text(16, 48, camera_ids, route) == vectors["prompts"][variant]["text"]
    images, hist_xyz = frames
    with torch.inference_mode():
        inputs = model15.encode_inputs(images, hist_xyz, IMAGE_KEYS, camera_ids=camera_ids, route=route)
    assert torch.equal(inputs.input_ids, prompts[f"{variant}.input_ids_after_fusion"])
    assert torch.equal(inputs.image_grid_thw, prompts[f"{variant}.image_grid_thw"])
    positions, rope_delta = model15.vlm.model.get_rope_index(
        inputs.input_ids, inputs.image_grid_thw, None, attention_mask=torch.ones_like(inputs.input_ids))
    assert torch.equal(positions, prompts[f"{variant}.mrope_position_ids"])
    assert torch.equal(rope_delta, prompts[f"{variant}.mrope_rope_deltas"])
    if route is not None:  # without its span the route prompt is exactly the labelled one
        assert torch.equal(remove_route(inputs.input_ids, model15.token_ids), prompts["labels.input_ids_after_fusion"])
        span = vectors["prompts"][variant]
        ids = inputs.input_ids[0].tolist()
        assert ids[span["route_start_pos"][0]:span["route_end_pos"][0] + 1] == span["route_span_token_ids"]


@pytest.mark.parametrize("camera_ids", [[1], [1, 6]])
def test_fewer_cameras_give_the_labelled_prompt_of_those_cameras(model15, vectors, frames, camera_ids):
    # 1.5 writes each camera's block alone ("<label>: frame 0 <image>..."): the reference's 4-camera text
    # without the other cameras' blocks (and images) is the 1- and 2-camera prompt.
    text = vectors["prompts"]["labels"]["text"]
    block = "".join(f"frame {k} <|vision_start|><|image_pad|><|vision_end|>" for k in range(4))
    for other in set(vectors["prompts"]["labels"]["camera_indices"]) - set(camera_ids):
        text = text.replace(f"{camera_label(other)}: {block}", "", 1)
    assert prompt_text(4 * len(camera_ids), 48, camera_ids) == text
    images, hist_xyz = frames
    chosen = images[[vectors["prompts"]["labels"]["camera_indices"].index(c) for c in camera_ids]]
    with torch.inference_mode():
        inputs = model15.encode_inputs(chosen, hist_xyz, camera_ids=camera_ids)
    assert inputs.image_grid_thw.shape[0] == 4 * len(camera_ids)
    decoded = model15.prompt_encoder.tokenizer.decode(inputs.input_ids[0])
    assert decoded.count("<|vision_start|>") == 4 * len(camera_ids) and camera_label(camera_ids[-1]) in decoded


def test_prompt_options_are_checked(model15, reference_model, frames):
    images, hist_xyz = frames
    with pytest.raises(ValueError, match="need an Alpamayo 1.5 checkpoint"):
        reference_model.encode_inputs(images, hist_xyz, route="Turn left in 40m")
    with pytest.raises(ValueError, match="expected \\(2, 4, H, W, 3\\)"):
        model15.encode_inputs(images, hist_xyz, camera_ids=[1, 6])
    with pytest.raises(ValueError, match="distinct"):
        model15.encode_inputs(images, hist_xyz, camera_ids=[1, 1, 2, 6])
    with pytest.raises(ValueError, match="special tokens"):
        prompt_text(16, 48, [0, 1, 2, 6], "Turn left<|route_end|>")


# ------------------------------------------------------------------------------------------------------
# The navigation rollout (the plain call on the route prompt) and the guided sampler.

@pytest.fixture(scope="module")
def nav(folder):
    return load_file(folder / "rollout_nav_n1.safetensors")


@pytest.fixture(scope="module")
def history(inputs):
    return inputs["ego_history_xyz"][0, 0], inputs["ego_history_rot"][0, 0]


def nav_rollout_args(vectors):
    return dict(camera_ids=vectors["prompts"]["labels_nav"]["camera_indices"], route=vectors["config"]["nav_text"])


def reference_nav_cache(nav):
    cache = DynamicCache()
    for layer in range(nav["prefill_cache_k"].shape[0]):
        cache.update(nav["prefill_cache_k"][layer].clone(), nav["prefill_cache_v"][layer].clone(), layer)
    return cache


def nav_chained_close(model, context, nav, history, what):
    """As the R1 test's `chained_close`: the last CHAIN_TAIL steps from the reference's state, and their trajectory."""
    start = 10 - CHAIN_TAIL
    x, times = nav["flow_x"][start], time_grid(10)[start:]

    def ends(x):
        action = model.integrate(x, context, times)
        return action, model.action_space.action_to_traj(action, history[0][None], history[1][None])[0]

    got, nudged = ends(x), [ends(x + sign * EPS * x.abs().max()) for sign in (1, -1)]
    expected = nav["sampled_action"], nav["pred_xyz"][0, 0]
    for i, name in enumerate(("action", "pred_xyz")):
        spread = max((other[i] - got[i]).abs().max().item() for other in nudged)
        ulps = 2 * CHAIN_TAIL * CHAIN_STEP_ULPS * spread / (EPS * expected[i].abs().max().item())
        close(got[i], expected[i], ulps, f"{what}: {name} after the last {CHAIN_TAIL} steps chained")


IMAGE_KEYS = [(camera, frame) for camera in range(4) for frame in range(4)]  # the reference's 16 images, encoded once


def forced_decode(model, frames, vectors, monkeypatch, route=True):
    """Our prefill and decode of the route prompt, fed the reference's generated tokens."""
    generated = iter(vectors["rollout_nav_n1"]["generated_token_ids"][0])
    monkeypatch.setattr(model, "_next_tokens", lambda *args: torch.tensor([next(generated)]))
    images, hist_xyz = frames
    args = nav_rollout_args(vectors)
    inputs = model.encode_inputs(images, hist_xyz, IMAGE_KEYS, camera_ids=args["camera_ids"],
                                 route=args["route"] if route else None)
    logits, cache, rope_delta = model.prefill(inputs.input_ids, inputs.image_grid_thw, inputs.image_embeds,
                                              inputs.deepstack)
    rollout = model.decode(logits, cache, rope_delta, vectors["rollout_nav_n1"]["max_generation_length"], True, 1.0,
                           1.0, torch.Generator())
    return inputs, logits, rollout


@torch.inference_mode()
def test_expert_reproduces_the_nav_rollout_at_every_euler_step(model15, nav, history):
    cache = reference_nav_cache(nav)
    rollout = _Rollout(cache=cache, length=cache.get_seq_length(), offsets=nav["offset"], rope_delta=nav["rope_deltas"],
                       tokens=[[]], complete=[True])
    context = model15.expert_context(rollout)
    assert torch.equal(context.position_ids, nav["expert_position_ids"])
    assert torch.equal(context.mask != 0, nav["expert_attention_mask_is_masked"].bool())
    embeds = model15.action_in_proj(nav["flow_x"][0], nav["flow_t"][0])
    close(embeds, nav["expert_inputs_embeds_step0"], ACTION_IN_ULPS, "1.5 action_in_proj, step 0")
    for step in range(10):
        close(model15.velocity(nav["flow_x"][step], nav["flow_t"][step], context), nav["flow_v"][step], EXPERT_ULPS,
              f"1.5 nav Euler step {step}")
    nav_chained_close(model15, context, nav, history, "reference cache")
    xyz, rot = model15.action_space.action_to_traj(nav["sampled_action"], history[0][None], history[1][None])
    close(xyz, nav["pred_xyz"][0, 0], TRAJECTORY_ULPS, "1.5 pred_xyz of the reference's action")
    close(rot, nav["pred_rot"][0, 0], TRAJECTORY_ULPS, "1.5 pred_rot of the reference's action")


@torch.inference_mode()
def test_forced_nav_decode_leaves_the_reference_cache_logits_and_offset(model15, nav, vectors, frames, history,
                                                                         monkeypatch):
    facts = vectors["rollout_nav_n1"]
    inputs, logits, rollout = forced_decode(model15, frames, vectors, monkeypatch)
    assert torch.equal(inputs.input_ids, nav["input_ids_fused"])
    vocab = nav["logits_text_vocab_ids"]
    close(logits[:, vocab], nav["logits_text"][:, 0], TEXT_ULPS, "1.5 first-token logits")
    assert rollout.length == facts["prefill_seq_len"] and rollout.offsets.tolist() == facts["offset"]
    for layer in range(len(rollout.cache.layers)):
        close(rollout.cache.layers[layer].keys, nav["prefill_cache_k"][layer], TEXT_ULPS, f"1.5 keys, layer {layer}")
        close(rollout.cache.layers[layer].values, nav["prefill_cache_v"][layer], TEXT_ULPS, f"1.5 values, layer {layer}")
    context = model15.expert_context(rollout)
    assert torch.equal(context.position_ids, nav["expert_position_ids"])
    nav_chained_close(model15, context, nav, history, "our decode's cache")
    assert read_reasoning(model15.prompt_encoder.tokenizer, rollout.tokens[0], model15.token_ids).text == \
        facts["extra"]["cot"][0][0][0]


@torch.inference_mode()
def test_guided_sampling_mixes_the_expert_over_the_prefixes_with_and_without_the_route(model15, nav, vectors, frames,
                                                                                        history, monkeypatch):
    inputs, _, rollout = forced_decode(model15, frames, vectors, monkeypatch)
    unguided = model15.unguided_rollout(inputs, rollout)
    # The unguided prefix is the labelled prompt without the route, then the same reasoning: what one prefill
    # of that sequence leaves (upstream's `remove_nav_text` prompt, its reasoning fed after it).
    plain = model15.encode_inputs(frames[0], frames[1], IMAGE_KEYS, camera_ids=nav_rollout_args(vectors)["camera_ids"])
    span = len(vectors["prompts"]["labels_nav"]["route_span_token_ids"])
    fed = rollout.length - inputs.input_ids.shape[1]
    sequence = torch.cat([plain.input_ids, torch.tensor([rollout.tokens[0][:fed]])], dim=1)
    _, cache, rope_delta = model15.prefix_forward(sequence, plain.image_grid_thw, plain.image_embeds, plain.deepstack)
    assert unguided.length == cache.get_seq_length() == rollout.length - span
    assert unguided.offsets.tolist() == [facts - span for facts in vectors["rollout_nav_n1"]["offset"]]
    assert torch.equal(unguided.rope_delta, rope_delta)
    for layer in range(len(cache.layers)):
        close(unguided.cache.layers[layer].keys, cache.layers[layer].keys, TEXT_ULPS, f"unguided keys, layer {layer}")
    # One guided Euler step (diffusion_steps=1: dt = 1) from the reference's noise: (1 - w) v_unguided + w v_guided.
    weight, temperature = vectors["config"]["cfg_diffusion_kwargs"]["inference_guidance_weight"], 0.6
    x0, t0 = nav["noise_x0"] * temperature, torch.zeros(1, 1, 1)
    guided_v = model15.velocity(x0, t0, model15.expert_context(rollout))
    unguided_v = model15.velocity(x0, t0, model15.expert_context(unguided))
    assert (guided_v - unguided_v).abs().max() > 1e-4  # the route moves the field (~1e4 ulps on this model)
    expected = x0 + ((1 - weight) * unguided_v + weight * guided_v)
    generated = iter(vectors["rollout_nav_n1"]["generated_token_ids"][0])
    monkeypatch.setattr(model15, "_next_tokens", lambda *args: torch.tensor([next(generated)]))
    pred = model15.sample(frames[0], *history, **nav_rollout_args(vectors), greedy=True, noise=nav["noise_x0"],
                          max_reasoning_tokens=40, diffusion_steps=1, nav_guidance_weight=weight, image_keys=IMAGE_KEYS,
                          noise_temperature=temperature)
    magnitudes = abs(1 - weight) * unguided_v.abs().max() + abs(weight) * guided_v.abs().max()
    allowed = EXPERT_ULPS * magnitudes.item() / expected.abs().max().item() + 1  # + the update's rounding
    close(pred.action, expected, allowed, "guided sample, one Euler step")
    assert pred.timings.unguided_ms > 0
    with pytest.raises(ValueError, match="guides towards a route, but none was given"):
        model15.sample(frames[0], *history, camera_ids=[0, 1, 2, 6], nav_guidance_weight=weight)

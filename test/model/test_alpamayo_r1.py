"""AlpamayoR1 against NVIDIA's reference rollout, and the sampling contract on the tiny model."""

import dataclasses

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers.cache_utils import DynamicCache

from alpamayo_ros.model.alpamayo_r1 import _Rollout, vlm_attention_implementation
from alpamayo_ros.model.expert import build_context
from alpamayo_ros.model.flow_matching import time_grid
from conftest import prefilled
from tolerances import ACTION_IN_ULPS, EPS, EXPERT_ULPS, TEXT_ULPS, TRAJECTORY_ULPS, VISION_ULPS, close

# Chained Euler steps. Per step two float32 paths differ by at most the update's rounding (x + dt v: half
# an ulp of |x| in each) and dt times the velocity's difference (EXPERT_ULPS of |v| ~ 0.5, x dt = 0.1, is
# ~1.8 ulps of |x| ~ 3.6): <= 3, so 4 ulps of |x|. A step's difference then grows as the field stretches
# it: the tests measure that growth on the model itself (the end's change when the start moves by one ulp
# of |x|, both ways; x2 for directions other than those two). On this random checkpoint the field is steep
# (Fourier features up to 100): one ulp at the start moves the end of 1 step by 6e-6, of 3 steps by 1e-4,
# of the whole 10 by 0.1 in actions of magnitude 3.4, so the 10-step chain from the noise is not fixed by
# float32 at all (MKL_CBWR=COMPATIBLE ends 2e-2 from the reference) and is not compared; its last
# CHAIN_TAIL steps, from the reference's state, are.
CHAIN_STEP_ULPS = 4  # allowed ~6700 ulps (action), ~160 (pred_xyz); measured worst 9.5, 0.6
CHAIN_TAIL = 3
# Batched and unbatched float32 kernels differ by rounding only; whole samples (vision, text, expert, one
# Euler step, positions) compared so: the text model's N plus the expert's and the trajectory's.
SAME_RESULT_ULPS = TEXT_ULPS + EXPERT_ULPS + TRAJECTORY_ULPS  # 480; measured worst 1.3
ONE_STEP = 1


@pytest.fixture(scope="module")
def ref(conformance_dir):
    out = {}
    for name in ("inputs", "prompt", "rollout_forced_n1"):
        out.update({f"{name}.{k}": v for k, v in load_file(conformance_dir / f"{name}.safetensors").items()})
    return out


def chained_close(model, context, ref, what):
    """The last CHAIN_TAIL Euler steps from the reference's state, and their trajectory, against the reference."""
    start = 10 - CHAIN_TAIL
    x, times = ref["rollout_forced_n1.flow_x"][start], time_grid(10)[start:]
    hist_xyz, hist_rot = reference_history(ref)

    def ends(x):
        action = model.integrate(x, context, times)
        return action, model.action_space.action_to_traj(action, hist_xyz[None], hist_rot[None])[0]

    got, nudged = ends(x), [ends(x + sign * EPS * x.abs().max()) for sign in (1, -1)]
    expected = ref["rollout_forced_n1.sampled_action"], ref["rollout_forced_n1.pred_xyz"][0, 0]
    for i, name in enumerate(("action", "pred_xyz")):
        spread = max((other[i] - got[i]).abs().max().item() for other in nudged)  # per ulp of |x| at the start
        ulps = 2 * CHAIN_TAIL * CHAIN_STEP_ULPS * spread / (EPS * expected[i].abs().max().item())
        close(got[i], expected[i], ulps, f"{what}: {name} after the last {CHAIN_TAIL} steps chained")


def reference_images(ref):
    return ref["inputs.image_frames"].permute(0, 1, 3, 4, 2).numpy()  # (4, 4, H, W, 3)


def reference_history(ref):
    return ref["inputs.ego_history_xyz"][0, 0], ref["inputs.ego_history_rot"][0, 0]


def reference_cache(ref):
    cache = DynamicCache()
    keys, values = ref["rollout_forced_n1.prefill_cache_k"], ref["rollout_forced_n1.prefill_cache_v"]
    for layer in range(keys.shape[0]):
        cache.update(keys[layer].clone(), values[layer].clone(), layer)
    return cache


@torch.inference_mode()
def test_vision_and_positions_match_reference(reference_model, ref):
    inputs = reference_model.encode_inputs(reference_images(ref), reference_history(ref)[0])
    assert torch.equal(inputs.input_ids, ref["prompt.input_ids_after_fusion"])
    assert torch.equal(inputs.image_grid_thw, ref["prompt.image_grid_thw"])
    close(inputs.image_embeds, ref["prompt.image_embeds"], VISION_ULPS, "image embeddings")
    close(torch.stack(inputs.deepstack), ref["prompt.deepstack_features"], VISION_ULPS, "deepstack features")
    positions, rope_delta = reference_model.vlm.model.get_rope_index(
        inputs.input_ids, inputs.image_grid_thw, None, attention_mask=torch.ones_like(inputs.input_ids))
    assert torch.equal(positions, ref["prompt.mrope_position_ids"])
    assert torch.equal(rope_delta, ref["prompt.mrope_rope_deltas"])


@torch.inference_mode()
def test_teacher_forced_prefill_reproduces_reference_cache_and_next_token(reference_model, ref):
    model = reference_model
    inputs = model.encode_inputs(reference_images(ref), reference_history(ref)[0])
    length = int(ref["rollout_forced_n1.prefill_seq_len"])
    sequence = ref["rollout_forced_n1.sequences_raw"][:, :length]  # prompt + forced reasoning + stop token
    logits, cache, rope_delta = model.prefill(sequence, inputs.image_grid_thw, inputs.image_embeds, inputs.deepstack)
    assert cache.get_seq_length() == length
    for layer in range(len(cache.layers)):
        close(cache.layers[layer].keys, ref["rollout_forced_n1.prefill_cache_k"][layer], TEXT_ULPS,
              f"keys, layer {layer}")
        close(cache.layers[layer].values, ref["rollout_forced_n1.prefill_cache_v"][layer], TEXT_ULPS,
              f"values, layer {layer}")
    assert torch.equal(rope_delta, ref["rollout_forced_n1.rope_deltas"])
    last_logits = ref["rollout_forced_n1.logits_raw"][:, length - inputs.input_ids.shape[1]]
    kept = torch.isfinite(last_logits)  # the reference masked the trajectory tokens in place
    close(logits[kept], last_logits[kept], TEXT_ULPS, "next-token logits")
    token = model._next_tokens(logits, greedy=True, temperature=1.0, top_p=1.0, generator=torch.Generator())
    assert token.item() == ref["rollout_forced_n1.sequences_raw"][0, length].item()


@torch.inference_mode()
def test_expert_reproduces_reference_velocity_at_every_euler_step(reference_model, ref):
    model = reference_model
    vlm_cache = reference_cache(ref)
    length = vlm_cache.get_seq_length()
    rollout = _Rollout(cache=vlm_cache, length=length, offsets=ref["rollout_forced_n1.offset"],
                       rope_delta=ref["rollout_forced_n1.rope_deltas"], tokens=[[]], complete=[True])
    context = model.expert_context(rollout)
    assert torch.equal(context.position_ids, ref["rollout_forced_n1.expert_position_ids"])
    assert torch.equal(context.mask != 0, ref["rollout_forced_n1.expert_attention_mask_is_masked"].bool())
    flow_x, flow_t, flow_v = (ref[f"rollout_forced_n1.flow_{k}"] for k in "xtv")
    embeds = model.action_in_proj(flow_x[0], flow_t[0])
    close(embeds, ref["rollout_forced_n1.expert_inputs_embeds_step0"], ACTION_IN_ULPS, "action_in_proj")
    for step in range(flow_x.shape[0]):
        close(model.velocity(flow_x[step], flow_t[step], context), flow_v[step], EXPERT_ULPS, f"Euler step {step}")
    for layer in range(len(context.keys)):  # the prefix the expert reads is never modified
        assert torch.equal(context.keys[layer][:, :, :length], vlm_cache.layers[layer].keys)
        assert torch.equal(context.values[layer][:, :, :length], vlm_cache.layers[layer].values)

    chained_close(model, context, ref, "reference cache")
    # A prefix padded to a fixed capacity (what the compiled flow uses) reads the same.
    padded = model.expert_context(rollout, capacity=length + 37)
    for step in range(flow_x.shape[0]):
        close(model.velocity(flow_x[step], flow_t[step], padded), flow_v[step], EXPERT_ULPS,
              f"Euler step {step}, padded")
    hist_xyz, hist_rot = reference_history(ref)
    xyz, rot = model.action_space.action_to_traj(ref["rollout_forced_n1.sampled_action"], hist_xyz[None],
                                                 hist_rot[None])
    close(xyz, ref["rollout_forced_n1.pred_xyz"][0, 0], TRAJECTORY_ULPS, "pred_xyz of the reference's action")
    close(rot, ref["rollout_forced_n1.pred_rot"][0, 0], TRAJECTORY_ULPS, "pred_rot of the reference's action")


@torch.inference_mode()
def test_compiled_flow_reproduces_the_reference_at_every_euler_step(reference_model, ref, tmp_path, monkeypatch):
    # The compiled region (over a padded prefix) run one Euler step from each of the reference's states.
    # Chaining all 10 is no test of exactness on this random checkpoint: a 1e-7 rounding difference grows
    # ~10x per step (measured: 1e-7 at step 1, 2e-3 in x at step 10, 2e-2 in the final action), as
    # between any two float32 kernels.
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    model = reference_model
    vlm_cache = reference_cache(ref)
    rollout = _Rollout(cache=vlm_cache, length=vlm_cache.get_seq_length(), offsets=ref["rollout_forced_n1.offset"],
                       rope_delta=ref["rollout_forced_n1.rope_deltas"], tokens=[[]], complete=[True])
    context = model.expert_context(rollout, capacity=model.fixed_capacity(rollout.length, 24, repeat=1))
    compiled = torch.compile(model.integrate, fullgraph=True, dynamic=False)
    flow_x, flow_v, times = ref["rollout_forced_n1.flow_x"], ref["rollout_forced_n1.flow_v"], time_grid(10)
    for step in range(10):
        x_next = compiled(flow_x[step].clone(), context, times[step:step + 2].clone())
        expected = flow_x[step] + (times[step + 1] - times[step]) * flow_v[step]
        close(x_next, expected, EXPERT_ULPS, f"compiled Euler step {step}")


@torch.inference_mode()
def test_forced_decode_leaves_the_reference_cache_offset_and_reasoning(reference_model, ref, conformance_dir,
                                                                       monkeypatch):
    # Our decode loop fed the reference's own generated tokens: it must stop where upstream's
    # StopAfterEOS leaves the cache (through <|traj_future_start|>, not the token sampled after it).
    import json

    from alpamayo_ros.model.prompt import read_reasoning

    model = reference_model
    vectors = json.loads((conformance_dir / "vectors.json").read_text())["rollouts"]["forced_n1"]
    generated = vectors["generated_token_ids"][0]
    calls = iter(generated)
    monkeypatch.setattr(model, "_next_tokens", lambda *args: torch.tensor([next(calls)]))
    inputs = model.encode_inputs(reference_images(ref), reference_history(ref)[0])
    logits, cache, rope_delta = model.prefill(inputs.input_ids, inputs.image_grid_thw, inputs.image_embeds,
                                              inputs.deepstack)
    rollout = model.decode(logits, cache, rope_delta, vectors["max_generation_length"], True, 1.0, 1.0,
                           torch.Generator())
    assert rollout.length == vectors["prefill_seq_len"]
    assert rollout.offsets.tolist() == vectors["offset"] and rollout.complete == [True]
    for layer in range(len(cache.layers)):
        close(cache.layers[layer].keys, ref["rollout_forced_n1.prefill_cache_k"][layer], TEXT_ULPS,
              f"keys, layer {layer}")
    context = model.expert_context(rollout)
    assert torch.equal(context.position_ids, ref["rollout_forced_n1.expert_position_ids"])
    assert torch.equal(context.mask != 0, ref["rollout_forced_n1.expert_attention_mask_is_masked"].bool())
    chained_close(model, context, ref, "our decode's cache")
    tokenizer = model.prompt_encoder.tokenizer
    assert read_reasoning(tokenizer, rollout.tokens[0], model.token_ids).text == vectors["extra"]["cot"][0][0][0]


# ------------------------------------------------------------------------------------------------------
# The sampling contract, on the tiny random model.

def sample(model, drive, **kwargs):
    kwargs.setdefault("max_reasoning_tokens", 6)
    return model.sample(drive.images, drive.ego_history_xyz, drive.ego_history_rot, **kwargs)


def noise(rows, seed=3):
    return torch.randn(rows, 64, 2, generator=torch.Generator().manual_seed(seed))


def test_sample_returns_per_sample_poses_text_and_timings(tiny_model, drive):
    pred = sample(tiny_model, drive, num_samples=2, seed=4)
    assert pred.xyz.shape == (2, 64, 3) and pred.rot.shape == (2, 64, 3, 3) and pred.action.shape == (2, 64, 2)
    assert pred.xyz.dtype == torch.float32 and torch.isfinite(pred.xyz).all()
    assert len(pred.reasoning) == 2 and all(isinstance(text, str) for text in pred.reasoning)
    assert len(pred.complete) == 2
    assert 1 <= pred.timings.decode_tokens <= 6
    assert pred.timings.total_ms > 0


def rollout_of(model, drive, rows=1, tokens=5):
    logits, cache, rope_delta = prefilled(model, drive, rows)
    return model.decode(logits, cache, rope_delta, tokens, True, 1.0, 1.0, torch.Generator())


@torch.inference_mode()
def test_expert_reads_an_unchanging_prefix_in_fixed_buffers(tiny_model, drive):
    model = tiny_model
    rollout = rollout_of(model, drive)
    length = rollout.cache.get_seq_length()
    context = model.expert_context(rollout)
    buffers = [k.data_ptr() for k in context.keys]
    model.flow(noise(1), context, 10)
    assert [k.data_ptr() for k in context.keys] == buffers  # written in place, never reallocated
    assert all(torch.equal(k[:, :, :length], layer.keys) for k, layer in zip(context.keys, rollout.cache.layers))


@torch.inference_mode()
def test_samples_folded_into_one_row_equal_one_row_each(tiny_model, drive):
    # Shared reasoning puts S samples side by side in one row over one copy of the prefix; the mask
    # keeps them apart, so each equals the same sample run over its own copy of the prefix.
    model, samples = tiny_model, 3
    rollout = rollout_of(model, drive)
    x, t = noise(samples), torch.full((samples, 1, 1), 0.3)
    folded = model.velocity(x, t, model.expert_context(rollout, repeat=samples))
    rows = rollout_of(model, drive, rows=samples)
    separate = model.velocity(x, t, model.expert_context(rows))
    close(folded, separate, EXPERT_ULPS, "folded vs separate")
    for i in range(samples):
        alone = model.velocity(x[i:i + 1], t[i:i + 1], model.expert_context(rollout))
        close(folded[i], alone[0], EXPERT_ULPS, "folded[i] vs alone[0]")


@torch.inference_mode()
def test_expert_takes_attention_output_in_any_memory_layout(tiny_model, drive, monkeypatch):
    # CUDA's memory-efficient kernel returns its output as a transposed view; the CPU kernel a contiguous one.
    rollout = rollout_of(tiny_model, drive)
    x, t = noise(2), torch.full((2, 1, 1), 0.3)
    expected = tiny_model.velocity(x, t, tiny_model.expert_context(rollout, repeat=2))
    attention = torch.nn.functional.scaled_dot_product_attention

    def transposed_output(*args, **kwargs):
        out = attention(*args, **kwargs)
        return out.transpose(1, 2).contiguous().transpose(1, 2)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", transposed_output)
    assert torch.equal(tiny_model.velocity(x, t, tiny_model.expert_context(rollout, repeat=2)), expected)


@torch.inference_mode()
def test_expert_mask_keeps_samples_apart_and_hides_pads(tiny_model, drive):
    rollout = rollout_of(tiny_model, drive, rows=2)
    rollout = dataclasses.replace(rollout, visible=rollout.visible - torch.tensor([0, 2]))  # row 1 ended 2 earlier
    context = tiny_model.expert_context(rollout, repeat=2, capacity=rollout.length + 3)
    hidden = context.mask[:, 0] != 0  # (R, T, C + T)
    length, capacity = rollout.length, rollout.length + 3
    assert not hidden[0, :, :length].any() and hidden[0, :, length:capacity].all()
    assert not hidden[1, :, :length - 2].any() and hidden[1, :, length - 2:capacity].all()
    flow = hidden[:, :, capacity:]
    assert not flow[:, :64, :64].any() and flow[:, :64, 64:].all() and flow[:, 64:, :64].all()
    assert torch.equal(context.position_ids[0, 1, :64], context.position_ids[0, 1, 64:])  # same positions
    causal = build_context(tiny_model.expert, rollout.cache, rollout.offsets, rollout.rope_delta, 64, causal=True)
    assert torch.equal(causal.mask[0, 0, :, length:] != 0, torch.ones(64, 64, dtype=torch.bool).triu(1))


def test_compiled_flow_equals_eager(drive, tmp_path, monkeypatch):
    from alpamayo_ros.model.loading import tiny

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    from torch._dynamo.utils import counters

    eager, compiled = tiny(seed=0), tiny(seed=0)
    compiled.compile_flow()
    args = dict(num_samples=2, greedy=True, noise=noise(2), max_reasoning_tokens=4, reasoning="shared",
                diffusion_steps=ONE_STEP)
    graphs_before = counters["stats"]["unique_graphs"]
    a, b = sample(eager, drive, **args), sample(compiled, drive, **args)
    graphs = counters["stats"]["unique_graphs"]
    assert graphs == graphs_before + 1  # the compiled model ran its loop as one graph
    assert a.reasoning == b.reasoning
    close(a.action, b.action, SAME_RESULT_ULPS, "a.action vs b.action")
    close(a.xyz, b.xyz, SAME_RESULT_ULPS, "a.xyz vs b.xyz")
    # Reasoning of another length, padded to the same capacity: same shapes and the same buffers (fixed
    # addresses, as CUDA graphs need), no recompilation.
    (keys, _), = compiled._expert_buffers.values()
    addresses = [buffer.data_ptr() for buffer in keys]
    with torch.inference_mode():
        prompt = rollout_of(compiled, drive, tokens=0).length
        for tokens in (2, 3):
            rollout = rollout_of(compiled, drive, tokens=tokens)
            assert rollout.length == prompt + tokens - 1  # at the limit the last token is not fed
            capacity = compiled.fixed_capacity(prompt, args["max_reasoning_tokens"], repeat=2)
            context = compiled.expert_context(rollout, repeat=2, capacity=capacity, keep_buffers=True)
            assert (capacity + 128) % 16 == 0 and context.keys[0].shape[2] == capacity + 128
            assert [buffer.data_ptr() for buffer in context.keys] == addresses
            fused = compiled.flow(noise(2), context, ONE_STEP)
            eager = compiled.integrate(noise(2), context, time_grid(ONE_STEP))
            close(fused, eager, SAME_RESULT_ULPS, "fused vs eager")
            fresh = compiled.integrate(noise(2), compiled.expert_context(rollout, repeat=2), time_grid(ONE_STEP))
            close(fused, fresh, SAME_RESULT_ULPS, "reused, padded buffers read the same")
    assert counters["stats"]["unique_graphs"] == graphs
    # Another sample count (its own shape) keeps its own buffers; the first set stays where it was.
    sample(compiled, drive, **dict(args, num_samples=3, noise=noise(3)))
    assert len(compiled._expert_buffers) == 2
    sample(compiled, drive, **args)
    assert [buffer.data_ptr() for buffer in next(iter(compiled._expert_buffers.values()))[0]] == addresses


def test_same_seed_and_inputs_give_identical_output(tiny_model, drive):
    a = sample(tiny_model, drive, num_samples=2, seed=11, temperature=1.0)
    b = sample(tiny_model, drive, num_samples=2, seed=11, temperature=1.0)
    assert torch.equal(a.xyz, b.xyz) and torch.equal(a.rot, b.rot) and a.reasoning == b.reasoning
    c = sample(tiny_model, drive, num_samples=2, seed=12, temperature=1.0)
    assert not torch.equal(a.xyz, c.xyz)


def test_changing_the_images_changes_the_trajectory(tiny_model, drive):
    from alpamayo_ros.tools.synthetic import SyntheticDrive, road_images

    other = SyntheticDrive(images=road_images(lane_shift_px=20.0, seed=9), ego_history_xyz=drive.ego_history_xyz,
                           ego_history_rot=drive.ego_history_rot)
    a = sample(tiny_model, drive, greedy=True, noise=noise(1))
    b = sample(tiny_model, other, greedy=True, noise=noise(1))
    assert (a.xyz - b.xyz).abs().max() > 1e-4


def test_shared_prefill_equals_independent_runs(tiny_model, drive):
    rows = 3
    x0 = noise(rows)
    shared = sample(tiny_model, drive, num_samples=rows, greedy=True, noise=x0, diffusion_steps=ONE_STEP)
    per_sample = sample(tiny_model, drive, num_samples=rows, greedy=True, noise=x0, share_prefill=False,
                        diffusion_steps=ONE_STEP)
    for i in range(rows):
        alone = sample(tiny_model, drive, num_samples=1, greedy=True, noise=x0[i:i + 1], diffusion_steps=ONE_STEP)
        close(shared.xyz[i], alone.xyz[0], SAME_RESULT_ULPS, "shared.xyz[i] vs alone.xyz[0]")
        assert shared.reasoning[i] == alone.reasoning[0]
    close(shared.xyz, per_sample.xyz, SAME_RESULT_ULPS, "shared.xyz vs per_sample.xyz")
    assert shared.reasoning == per_sample.reasoning


def test_sampled_reasoning_shares_prefill_with_num_return_sequences_semantics(tiny_model, drive):
    # With sampling, one prefill expanded to S rows draws the same tokens as S prefilled copies.
    shared = sample(tiny_model, drive, num_samples=3, seed=5, temperature=1.0, diffusion_steps=ONE_STEP)
    copies = sample(tiny_model, drive, num_samples=3, seed=5, temperature=1.0, share_prefill=False,
                    diffusion_steps=ONE_STEP)
    assert shared.reasoning == copies.reasoning
    close(shared.xyz, copies.xyz, SAME_RESULT_ULPS, "shared.xyz vs copies.xyz")


def test_zero_diffusion_steps_is_an_error_not_the_default(tiny_model, drive):
    with pytest.raises(ValueError, match="num_steps=0"):
        sample(tiny_model, drive, diffusion_steps=0)


def test_history_may_be_a_tensor(tiny_model, drive):
    a = sample(tiny_model, drive, greedy=True, noise=noise(1))
    b = tiny_model.sample(drive.images, torch.from_numpy(drive.ego_history_xyz), torch.from_numpy(drive.ego_history_rot),
                          greedy=True, noise=noise(1), max_reasoning_tokens=6)
    assert torch.equal(a.xyz, b.xyz)


def test_reused_image_encodings_are_bitwise_identical(drive):
    from alpamayo_ros.model.loading import tiny
    from alpamayo_ros.tools.synthetic import road_images

    model = tiny(seed=0)
    images = list(drive.images.reshape(16, 64, 96, 3))
    later = list(road_images(lane_shift_px=5.0, seed=3).reshape(16, 64, 96, 3))
    # Tick 1 encodes 16 frames; tick 2 shifts each camera's window by one frame: 12 reused, 4 new.
    keys_1 = [(cam, frame) for cam in range(4) for frame in range(4)]
    keys_2 = [(cam, frame) for cam in range(4) for frame in range(1, 5)]
    images_2 = [images[cam * 4 + f] if f < 4 else later[cam * 4] for cam in range(4) for f in range(1, 5)]
    args = dict(greedy=True, noise=noise(1), max_reasoning_tokens=4)
    sample(model, drive, image_keys=keys_1, **args)
    assert (model.vision_cache.misses, model.vision_cache.hits) == (16, 0)
    cached = model.sample(images_2, drive.ego_history_xyz, drive.ego_history_rot, image_keys=keys_2, **args)
    assert (model.vision_cache.misses, model.vision_cache.hits) == (20, 12)
    fresh = model.sample(images_2, drive.ego_history_xyz, drive.ego_history_rot, **args)
    assert torch.equal(cached.xyz, fresh.xyz) and cached.reasoning == fresh.reasoning
    with torch.inference_mode():
        a = model.encode_inputs(images_2, drive.ego_history_xyz, keys_2)
        b = model.encode_inputs(images_2, drive.ego_history_xyz)
    assert torch.equal(a.image_embeds, b.image_embeds) and all(map(torch.equal, a.deepstack, b.deepstack))


@pytest.mark.parametrize("change,message", [
    (lambda d: dict(images=d.images[:3]), "expected \\(4, 4, H, W, 3\\)"),
    (lambda d: dict(images=d.images.astype(np.float32)), "expected uint8"),
    (lambda d: dict(images=list(d.images.reshape(16, 64, 96, 3))[:15]), "got 15 images, expected 16"),
    (lambda d: dict(ego_history_xyz=d.ego_history_xyz[:10]), "expected \\(16, 3\\)"),
    (lambda d: dict(ego_history_xyz=np.where(np.eye(16, 3) > 0, np.nan, d.ego_history_xyz)), "NaN"),
])
def test_sample_rejects_bad_inputs(tiny_model, drive, change, message):
    args = dict(images=drive.images, ego_history_xyz=drive.ego_history_xyz, ego_history_rot=drive.ego_history_rot)
    args.update(change(drive))
    with pytest.raises(ValueError, match=message):
        tiny_model.sample(args["images"], args["ego_history_xyz"], args["ego_history_rot"], max_reasoning_tokens=2)


def test_shared_reasoning_gives_one_text_and_diverse_trajectories(tiny_model, drive):
    x0 = noise(3)
    shared = sample(tiny_model, drive, num_samples=3, seed=5, temperature=1.0, noise=x0, reasoning="shared",
                    diffusion_steps=ONE_STEP)
    assert len(set(shared.reasoning)) == 1 and len(shared.reasoning) == 3
    assert (shared.xyz[0] - shared.xyz[1]).abs().max() > 1e-3  # samples differ through their noise
    # Each shared-reasoning sample equals a single-sample run that wrote the same reasoning.
    alone = sample(tiny_model, drive, num_samples=1, seed=5, temperature=1.0, noise=x0[1:2], diffusion_steps=ONE_STEP)
    assert alone.reasoning[0] == shared.reasoning[1]
    close(alone.xyz[0], shared.xyz[1], SAME_RESULT_ULPS, "alone.xyz[0] vs shared.xyz[1]")
    with pytest.raises(ValueError, match="reasoning='both'"):
        sample(tiny_model, drive, reasoning="both")


def test_flash_attention_only_on_cuda_in_half_precision(monkeypatch):
    import transformers.utils

    assert vlm_attention_implementation(torch.device("cpu"), torch.bfloat16) == "sdpa"
    monkeypatch.setattr(transformers.utils, "is_flash_attn_2_available", lambda: True)
    assert vlm_attention_implementation(torch.device("cuda"), torch.bfloat16) == "flash_attention_2"
    assert vlm_attention_implementation(torch.device("cuda"), torch.float32) == "sdpa"
    assert vlm_attention_implementation(torch.device("cpu"), torch.bfloat16) == "sdpa"  # also when installed
    monkeypatch.setattr(transformers.utils, "is_flash_attn_2_available", lambda: False)
    assert vlm_attention_implementation(torch.device("cuda"), torch.bfloat16) == "sdpa"

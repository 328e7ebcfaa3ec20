"""Alpamayo 1.5 against NVIDIA's 1.5 vectors (conformance/alpamayo1_5): checkpoint, prompts, navigation rollout."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from alpamayo_ros.model.config import AlpamayoR1Config
from alpamayo_ros.model.loading import from_pretrained
from alpamayo_ros.model.prompt import camera_label, prompt_text, remove_route
from tolerances import ACTION_IN_ULPS, close


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


def test_checkpoint_loads_the_bf16_shards_upcast_and_derives_the_unstored_buffers(model15, folder, vectors):
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
    inputs = load_file(folder.parent / "inputs.safetensors")
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
def frames(folder):
    inputs = load_file(folder.parent / "inputs.safetensors")
    return inputs["image_frames"].permute(0, 1, 3, 4, 2).numpy(), inputs["ego_history_xyz"][0, 0]


def prompt_arguments(vectors, variant):
    return vectors["prompts"][variant]["camera_indices"], vectors["prompts"][variant]["nav_text"]


@pytest.mark.parametrize("variant", ["labels", "labels_nav", "r1style"])
def test_prompt_text_and_ids_equal_the_reference(model15, vectors, prompts, frames, variant):
    camera_ids, route = prompt_arguments(vectors, variant)
    assert prompt_text(16, 48, camera_ids, route) == vectors["prompts"][variant]["text"]
    images, hist_xyz = frames
    with torch.inference_mode():
        inputs = model15.encode_inputs(images, hist_xyz, camera_ids=camera_ids, route=route)
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

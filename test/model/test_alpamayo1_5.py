"""Alpamayo 1.5 against NVIDIA's 1.5 vectors (conformance/alpamayo1_5): checkpoint, prompts, navigation rollout."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from alpamayo_ros.model.config import AlpamayoR1Config
from alpamayo_ros.model.loading import from_pretrained
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

"""Checkpoint loading: the release layout round-trips, and every kind of mismatch is named."""

import json
import re
import shutil

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from alpamayo_ros.model.config import AlpamayoR1Config
from alpamayo_ros.model.loading import (
    QWEN_BASE_VOCAB,
    CheckpointError,
    from_pretrained,
    random_model,
    release_config,
    save_pretrained,
)


def test_tiny_state_dict_keys_equal_the_release_layout(tiny_model, conformance_dir):
    index = json.loads((conformance_dir / "checkpoint" / "model.safetensors.index.json").read_text())
    assert set(tiny_model.state_dict()) == set(index["weight_map"])
    assert sum(p.numel() for p in tiny_model.parameters()) == index["metadata"]["total_parameters"]


def test_release_architecture_has_the_release_parameter_count(tiny_model):
    # The release's index says 11,078,526,194 parameters (reference §1); built on the meta device, no memory.
    model = random_model(*release_config(), device="meta", dtype="bfloat16", base_vocab_size=QWEN_BASE_VOCAB)
    assert model.token_ids.vocab_size == 155697
    assert sum(p.numel() for p in model.parameters()) == 11_078_526_194
    assert sum(p.numel() for p in model.expert.parameters()) == 2_279_238_656
    def layout(state):  # key names with layer numbers dropped
        return {re.sub(r"\.\d+\.", ".N.", key) for key in state}

    assert layout(model.state_dict()) == layout(tiny_model.state_dict())


def test_reference_checkpoint_loads_exactly(reference_model, conformance_dir):
    state = reference_model.state_dict()
    checkpoint = conformance_dir / "checkpoint"
    seen = 0
    for shard in sorted(checkpoint.glob("model-*.safetensors")):
        for key, tensor in load_file(shard).items():
            assert torch.equal(state[key], tensor), key
            seen += 1
    assert seen == len(state)


@pytest.fixture(scope="module")
def saved(tiny_model, tmp_path_factory):
    directory = tmp_path_factory.mktemp("tiny_checkpoint")
    save_pretrained(tiny_model, directory, max_shard_bytes=2 * 1024**2)
    return directory


def test_save_writes_the_release_layout(saved):
    config = json.loads((saved / "config.json").read_text())
    assert config["action_space_cfg"]["_target_"] == "alpamayo_r1.action_space.UnicycleAccelCurvatureActionSpace"
    assert config["traj_tokenizer_cfg"]["_recursive_"] is False
    assert config["vocab_size"] == 4310 and config["traj_token_start_idx"] == 282
    index = json.loads((saved / "model.safetensors.index.json").read_text())
    shards = set(index["weight_map"].values())
    assert len(shards) >= 3 and all((saved / s).is_file() for s in shards)
    assert AlpamayoR1Config.from_dict(config).traj_vocab_size == 4000


def test_save_then_load_gives_identical_outputs(tiny_model, saved, drive):
    loaded = from_pretrained(saved)
    for key, value in tiny_model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    args = (drive.images, drive.ego_history_xyz, drive.ego_history_rot)
    a = tiny_model.sample(*args, num_samples=2, seed=7, max_reasoning_tokens=5)
    b = loaded.sample(*args, num_samples=2, seed=7, max_reasoning_tokens=5)
    assert torch.equal(a.xyz, b.xyz) and a.reasoning == b.reasoning


def test_load_in_bfloat16_keeps_action_statistics_float32(saved, drive):
    model = from_pretrained(saved, dtype="bfloat16")
    wrong = [name for name, p in model.named_parameters() if p.dtype != torch.bfloat16]
    assert wrong == []
    assert model.action_space.accel_std.dtype == torch.float32
    pred = model.sample(drive.images, drive.ego_history_xyz, drive.ego_history_rot, max_reasoning_tokens=3)
    assert pred.xyz.dtype == torch.float32 and torch.isfinite(pred.xyz).all()


def copy_checkpoint(saved, tmp_path):
    target = tmp_path / "ckpt"
    shutil.copytree(saved, target)
    return target


def rewrite_shard_of(directory, key, change):
    """Apply `change(tensors)` to the shard holding `key`, keeping the index consistent."""
    index_path = directory / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    shard = directory / index["weight_map"][key]
    tensors = load_file(shard)
    change(tensors)
    save_file(tensors, shard, metadata={"format": "pt"})
    index["weight_map"] = {k: v for k, v in index["weight_map"].items() if k in tensors or v != shard.name}
    index["weight_map"].update(dict.fromkeys(tensors, shard.name))
    index_path.write_text(json.dumps(index))


def test_missing_key_is_named(saved, tmp_path):
    ckpt = copy_checkpoint(saved, tmp_path)
    rewrite_shard_of(ckpt, "action_out_proj.bias", lambda t: t.pop("action_out_proj.bias"))
    with pytest.raises(CheckpointError, match=r"missing \(1\): \['action_out_proj.bias'\]"):
        from_pretrained(ckpt)


def test_unexpected_key_is_named(saved, tmp_path):
    ckpt = copy_checkpoint(saved, tmp_path)
    rewrite_shard_of(ckpt, "action_out_proj.bias", lambda t: t.update({"expert.embed_tokens.weight": torch.zeros(2, 2)}))
    with pytest.raises(CheckpointError, match=r"unexpected \(1\): \['expert.embed_tokens.weight'\]"):
        from_pretrained(ckpt)


def test_shape_mismatch_is_named(saved, tmp_path):
    ckpt = copy_checkpoint(saved, tmp_path)
    rewrite_shard_of(ckpt, "action_out_proj.weight", lambda t: t.update({"action_out_proj.weight": torch.zeros(2, 32)}))
    with pytest.raises(CheckpointError, match=r"action_out_proj.weight: checkpoint \(2, 32\) vs model \(2, 64\)"):
        from_pretrained(ckpt)


def test_corrupted_shard_is_named(saved, tmp_path):
    ckpt = copy_checkpoint(saved, tmp_path)
    shard = sorted(ckpt.glob("model-*.safetensors"))[0]
    shard.write_bytes(b"\x00garbage" * 16)
    with pytest.raises(CheckpointError, match=f"cannot read shard .*{shard.name}"):
        from_pretrained(ckpt)


def test_unknown_config_key_is_named(saved, tmp_path):
    ckpt = copy_checkpoint(saved, tmp_path)
    config = json.loads((ckpt / "config.json").read_text())
    config["action_space_cfg"]["jerk_bounds"] = [-1, 1]
    (ckpt / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"action_space_cfg.*unknown keys \['jerk_bounds'\]"):
        from_pretrained(ckpt)


def test_wrong_target_is_named():
    raw = AlpamayoR1Config().to_dict()
    raw["diffusion_cfg"]["_target_"] = "somewhere.DDPM"
    with pytest.raises(ValueError, match="diffusion_cfg._target_` is 'somewhere.DDPM'"):
        AlpamayoR1Config.from_dict(raw)


def test_tokenizer_of_another_model_is_rejected(saved, tmp_path):
    ckpt = copy_checkpoint(saved, tmp_path)
    config = json.loads((ckpt / "config.json").read_text())
    config["vocab_size"] = 155697
    (ckpt / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="vocab_size=155697 but the extended tokenizer gives 4310"):
        from_pretrained(ckpt)


def test_missing_base_model_says_what_to_pass(saved, tmp_path):
    ckpt = copy_checkpoint(saved, tmp_path)
    shutil.rmtree(ckpt / "base_vlm")
    with pytest.raises(FileNotFoundError, match="pass base_model_dir="):
        from_pretrained(ckpt)
    from_pretrained(ckpt, base_model_dir=saved / "base_vlm")  # an explicit base directory works


def test_release_config_values_parse(conformance_dir):
    config = AlpamayoR1Config.from_json(conformance_dir / "checkpoint" / "config.json")
    assert (config.traj_vocab_size, config.tokens_per_history_traj, config.tokens_per_future_traj) == (4000, 48, 128)
    assert config.num_history_poses == 16
    seed = AlpamayoR1Config(traj_vocab_size=768, tokens_per_history_traj=16, tokens_per_future_traj=64,
                            hist_traj_tokenizer_cfg=type(config.hist_traj_tokenizer_cfg)(num_bins=256),
                            traj_tokenizer_cfg=type(config.traj_tokenizer_cfg)(num_bins=512))
    assert seed.traj_vocab_size == 768
    with pytest.raises(ValueError, match="tokens_per_history_traj=16 must be 3 x"):
        seed.num_history_poses  # noqa: B018
    with safe_open(str(conformance_dir / "checkpoint" / "model-00004-of-00004.safetensors"), "pt") as f:
        assert "action_space.accel_mean" in f.keys()

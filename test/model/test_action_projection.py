"""Fourier action-in projection against the reference's features and outputs."""

import torch
from safetensors.torch import load_file

from alpamayo_ros.model.action_projection import FourierEncoder
from alpamayo_ros.model.config import ActionInProjConfig
from tolerances import ACTION_IN_ULPS, FOURIER_ULPS, close


def test_fourier_frequencies_are_log_spaced_from_one_to_max():
    enc = FourierEncoder(20, 100.0)
    assert enc.freqs.shape == (1, 10)
    assert torch.allclose(enc.freqs[0, [0, -1]], torch.tensor([1.0, 100.0]))
    out = enc(torch.tensor([0.0, 0.25]))
    assert out.shape == (2, 20)
    assert torch.allclose(out[0], torch.cat([torch.zeros(10), torch.full((10,), 2**0.5)]))  # sin 0, cos 0


def test_matches_reference(reference_model, conformance_dir):
    inputs = load_file(conformance_dir / "inputs.safetensors")
    ref = load_file(conformance_dir / "action_in_proj.safetensors")
    proj = reference_model.action_in_proj
    x, t = inputs["action_in_proj_x"], inputs["action_in_proj_t"]
    assert torch.equal(proj.sinus[0].freqs, ref["freqs_sinus0"])
    assert torch.equal(proj.timestep_fourier_encoder.freqs, ref["freqs_timestep"])
    with torch.inference_mode():
        features = proj.features(x, t).reshape(-1, 60)
        close(features, ref["encoder_input_features"], FOURIER_ULPS, "Fourier features")
        close(proj.encoder(features), ref["encoder_output_pre_layernorm"], ACTION_IN_ULPS, "encoder output")
        close(proj(x, t), ref["output"], ACTION_IN_ULPS, "action_in_proj output")


def test_trunk_layout_matches_release_indices():
    from alpamayo_ros.model.action_projection import PerWaypointActionInProj

    keys = set(PerWaypointActionInProj(ActionInProjConfig(hidden_size=8), 2, 16).state_dict())
    assert {"encoder.trunk.0.weight", "encoder.trunk.2.weight", "encoder.trunk.3.weight", "encoder.trunk.5.weight",
            "encoder.trunk.6.weight", "norm.weight", "sinus.1.freqs", "timestep_fourier_encoder.freqs"} <= keys

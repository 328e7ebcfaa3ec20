"""History tokens: hand-computed bins, clamping, and the reference's ids."""

import torch
from safetensors.torch import load_file

from alpamayo_ros.model.config import HistoryTokenizerConfig
from alpamayo_ros.model.trajectory_tokens import history_bins, history_token_ids

CFG = HistoryTokenizerConfig()  # 1000 bins over [-4, 4] m (x, y) and [-10, 10] m (z) per step


def test_hand_computed_bins():
    # Poses 1 m apart along x, oldest 2 m behind: deltas (-2,0,0) from the origin, then (1,0,0), (1,0,0).
    xyz = torch.tensor([[[-2.0, 0.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]])
    # x: (-2+4)/8*999 = 249.75 -> 250; (1+4)/8*999 = 624.375 -> 624; y, z: 0.5*999 = 499.5 -> 500 (half to even)
    assert history_bins(xyz, CFG).tolist() == [[250, 500, 500, 624, 500, 500, 624, 500, 500]]


def test_bins_clamp_outside_the_range():
    xyz = torch.tensor([[[-15.0, 9.0, -30.0], [0.0, 0.0, 0.0]]])  # oldest pose far beyond every bound
    assert history_bins(xyz, CFG).tolist() == [[0, 999, 0, 999, 0, 999]]


def test_token_ids_are_offset_bins():
    xyz = torch.zeros(1, 16, 3)
    ids = history_token_ids(xyz, CFG, hist_token_start_idx=154669)
    assert ids.shape == (1, 48)
    assert ids.tolist()[0] == [154669 + 500] * 48


def test_matches_reference(conformance_dir):
    inputs = load_file(conformance_dir / "inputs.safetensors")
    ref = load_file(conformance_dir / "prompt.safetensors")
    hist = inputs["ego_history_xyz"][:, 0]
    assert torch.equal(history_bins(hist, CFG), ref["history_bins"])
    assert torch.equal(history_token_ids(hist, CFG, 3282), ref["history_token_ids"])

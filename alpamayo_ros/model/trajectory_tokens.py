"""Egomotion history -> discrete history tokens (NVlabs/alpamayo `models/delta_tokenizer.py`).

The history poses, in the ego frame at t0 (x forward, y left, z up, metres), become per-step
displacements: the first from the t0 origin to the oldest pose, then one per 0.1 s step. Each axis is
normalised to [0, 1] over [ego_xyz_min, ego_xyz_max], binned into `num_bins`, clamped, and flattened
x0, y0, z0, x1, ... The token id is `hist_token_start_idx + bin`.
"""

from __future__ import annotations

import torch

from .config import HistoryTokenizerConfig


def history_bins(hist_xyz: torch.Tensor, cfg: HistoryTokenizerConfig) -> torch.Tensor:
    """(B, P, 3) history positions in metres -> (B, 3 P) int64 bins in [0, num_bins - 1]."""
    if hist_xyz.ndim != 3 or hist_xyz.shape[-1] != 3:
        raise ValueError(f"hist_xyz has shape {tuple(hist_xyz.shape)}, expected (B, P, 3)")
    xyz = hist_xyz.float()
    origin = torch.zeros_like(xyz[:, :1])
    deltas = torch.diff(torch.cat([origin, xyz], dim=1), dim=1)  # (B, P, 3); deltas[:, 0] = oldest pose
    lo = torch.tensor(cfg.ego_xyz_min, dtype=torch.float32, device=xyz.device)
    hi = torch.tensor(cfg.ego_xyz_max, dtype=torch.float32, device=xyz.device)
    unit = (deltas - lo) / (hi - lo)
    bins = torch.round(unit * (cfg.num_bins - 1)).clamp(0, cfg.num_bins - 1).long()
    return bins.reshape(bins.shape[0], -1)


def history_token_ids(hist_xyz: torch.Tensor, cfg: HistoryTokenizerConfig, hist_token_start_idx: int) -> torch.Tensor:
    """(B, P, 3) history positions -> (B, 3 P) int64 token ids."""
    return history_bins(hist_xyz, cfg) + hist_token_start_idx

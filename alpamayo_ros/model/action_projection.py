"""Action projections between the flow state and the expert's hidden size.

In: `PerWaypointActionInProjV2` (NVlabs/alpamayo `models/action_in_proj.py`): Fourier features of each
waypoint's (acceleration, curvature) and of the flow time, concatenated per waypoint, then an MLP and a
LayerNorm. Out: a plain `nn.Linear(hidden, 2)` built by the model. Position is carried by the expert's
RoPE only; there is no positional embedding here.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .config import ActionInProjConfig


def fourier_frequencies(num_features: int, max_freq: float) -> torch.Tensor:
    """(1, num_features / 2) float32 log-spaced frequencies from 1 to max_freq (upstream `FourierEncoderV2`)."""
    return torch.logspace(0.0, math.log10(max_freq), num_features // 2, dtype=torch.float32).unsqueeze(0)


class FourierEncoder(nn.Module):
    """x -> sqrt(2) * [sin(2 pi f x), cos(2 pi f x)] over log-spaced f in [1, max_freq]."""

    def __init__(self, num_features: int, max_freq: float, persistent: bool = True) -> None:
        super().__init__()
        # Persistent: the R1 release stores these (rounded to bf16), so they are loaded, not recomputed.
        # Alpamayo 1.5 does not store them (`persistent=False`): see `AlpamayoR1.derive_unstored_buffers`.
        self.register_buffer("freqs", fourier_frequencies(num_features, max_freq), persistent=persistent)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(...,) float -> (..., num_features) float32."""
        # Upstream's operation order: with frequencies up to 100 the float32 rounding of the argument
        # is visible in the features, so (x * f) * 2 * pi, not 2 pi * (x * f).
        angles = x.float().unsqueeze(-1) * self.freqs.float() * 2 * math.pi
        return torch.cat([angles.sin(), angles.cos()], dim=-1) * math.sqrt(2.0)


class RMSNorm(nn.Module):
    """RMSNorm computed in float32, cast back, then scaled (as upstream `action_in_proj.RMSNorm`)."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return normed.to(x.dtype) * self.weight


class MLPEncoder(nn.Module):
    """Linear, then `num_layers` x (SiLU, RMSNorm, Linear); `trunk` indices match the release."""

    def __init__(self, in_dim: int, num_layers: int, hidden: int, out_dim: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Linear(in_dim, hidden)]
        for i in range(num_layers):
            layers += [nn.SiLU(), RMSNorm(hidden), nn.Linear(hidden, out_dim if i == num_layers - 1 else hidden)]
        self.trunk = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(x)


class PerWaypointActionInProj(nn.Module):
    """(B, W, 2) normalised actions and (B, 1, 1) flow time -> (B, W, out_dim) expert input embeddings."""

    def __init__(self, cfg: ActionInProjConfig, action_dim: int, out_dim: int, persistent: bool = True) -> None:
        super().__init__()
        feats = cfg.num_fourier_feats
        self.sinus = nn.ModuleList([FourierEncoder(feats, cfg.max_freq, persistent) for _ in range(action_dim)])
        self.timestep_fourier_encoder = FourierEncoder(feats, cfg.max_freq, persistent)
        self.encoder = MLPEncoder(feats * (action_dim + 1), cfg.num_enc_layers, cfg.hidden_size, out_dim)
        self.norm = nn.LayerNorm(out_dim)

    def features(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Per-waypoint features (B, W, feats * (action_dim + 1)) float32: [accel | curvature | t]."""
        per_channel = [enc(x[..., i]) for i, enc in enumerate(self.sinus)]
        t_feat = self.timestep_fourier_encoder(t.reshape(t.shape[0], 1))  # (B, 1, feats)
        per_channel.append(t_feat.expand(-1, x.shape[1], -1))
        return torch.cat(per_channel, dim=-1)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        batch, waypoints, _ = x.shape
        feats = self.features(x, t).reshape(batch * waypoints, -1)
        weight = self.encoder.trunk[0].weight
        hidden = self.encoder(feats.to(weight.dtype)).reshape(batch, waypoints, -1)
        # LayerNorm in float32, as autocast runs it upstream; the caller casts to the expert's dtype.
        return nn.functional.layer_norm(hidden.float(), self.norm.normalized_shape, self.norm.weight.float(),
                                        self.norm.bias.float(), self.norm.eps)

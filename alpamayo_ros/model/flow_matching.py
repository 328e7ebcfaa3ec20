"""Flow-matching sampler: Euler integration of a learned velocity field (NVlabs/alpamayo `diffusion/flow_matching.py`).

Time convention: t = 0 is pure noise, t = 1 is data (x_t = t * x_1 + (1 - t) * noise), the reverse of
lerobot and openpi. The model predicts the velocity dx/dt = x_1 - noise.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

StepFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def euler_sample(step_fn: StepFn, noise: torch.Tensor, num_steps: int) -> torch.Tensor:
    """Integrate dx/dt = step_fn(x, t) from t = 0 (noise) to t = 1 (data) with Euler steps.

    Args:
        step_fn: velocity field; called with x of noise's shape and t of shape (B, 1, 1), float32.
        noise: (B, ...) float32 starting point x(0).
        num_steps: number of Euler steps (10 in the release).

    Returns:
        x(1), same shape and dtype as `noise`.
    """
    if num_steps < 1:
        raise ValueError(f"num_steps={num_steps} must be >= 1")
    # A float32 linspace, as upstream: its steps are not exactly 1/num_steps.
    grid = torch.linspace(0.0, 1.0, num_steps + 1, dtype=torch.float32, device=noise.device)
    x = noise
    batch = noise.shape[0]
    for i in range(num_steps):
        t = grid[i].expand(batch, 1, 1)
        x = x + (grid[i + 1] - grid[i]) * step_fn(x, t)
    return x

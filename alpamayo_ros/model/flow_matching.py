"""Flow-matching sampler: Euler integration of a learned velocity field (NVlabs/alpamayo `diffusion/flow_matching.py`).

Time convention: t = 0 is pure noise, t = 1 is data (x_t = t * x_1 + (1 - t) * noise), the reverse of
lerobot and openpi. The model predicts the velocity dx/dt = x_1 - noise.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

StepFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def time_grid(num_steps: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """(num_steps + 1,) float32 times from 0 to 1: a float32 linspace, as upstream (its steps are not
    exactly 1 / num_steps)."""
    if num_steps < 1:
        raise ValueError(f"num_steps={num_steps} must be >= 1")
    return torch.linspace(0.0, 1.0, num_steps + 1, dtype=torch.float32, device=device)


def euler_integrate(step_fn: StepFn, noise: torch.Tensor, times: torch.Tensor) -> torch.Tensor:
    """Integrate dx/dt = step_fn(x, t) over `times` (from `time_grid`) with Euler steps.

    Args:
        step_fn: velocity field; called with x of noise's shape and t of shape (B, 1, 1), float32.
        noise: (B, ...) float32 starting point x(times[0]).
        times: (num_steps + 1,) float32.

    Returns:
        x(times[-1]), same shape and dtype as `noise`.
    """
    x = noise
    batch = noise.shape[0]
    for i in range(times.shape[0] - 1):
        t = times[i].expand(batch, 1, 1)
        x = x + (times[i + 1] - times[i]) * step_fn(x, t)
    return x


def guided_velocity(guided: torch.Tensor, unguided: torch.Tensor, weight: float) -> torch.Tensor:
    """Classifier-free guidance of a flow (Guided Flows, arXiv 2311.13443 eq. 6, as Alpamayo 1.5's
    `FlowMatching._guided_v`): (1 - weight) * unguided + weight * guided. weight 1 is the guided field,
    0 the unguided one, > 1 extrapolates away from the unguided field."""
    return (1 - weight) * unguided + weight * guided

"""Unicycle acceleration/curvature action space (NVlabs/alpamayo `action_space/unicycle_accel_curvature.py`).

An action is 64 x (acceleration a [m/s^2], curvature kappa [1/m]) at dt = 0.1 s, normalised by the
dataset statistics stored in the checkpoint. `action_to_traj` integrates it from the speed v0 at t0
(estimated from the history by regularised least squares) into 64 poses in the ego frame at t0
(x forward, y left, z up). `traj_to_action` is its smoothed inverse. Leading dims are batch dims;
everything runs in float32 whatever the model's dtype.

The least-squares problems are solved through the normal equations with Cholesky, as upstream
(`action_space/utils.py`): smoothing adds (lambda / dt^(2k)) D_k^T D_k for a k-th difference D_k,
the ridge adds r I.
"""

from __future__ import annotations

import torch
from torch import nn

from .config import ActionSpaceConfig


def yaw_of(rot: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) rotation matrices -> (...,) yaw in radians, atan2(R[1,0], R[0,0])."""
    return torch.atan2(rot[..., 1, 0], rot[..., 0, 0])


def unwrap(angles: torch.Tensor) -> torch.Tensor:
    """Unwrap along the last axis: keep the first angle, add each step wrapped into (-pi, pi]."""
    steps = torch.diff(angles, dim=-1)
    steps = torch.atan2(torch.sin(steps), torch.cos(steps))
    return torch.cat([angles[..., :1], angles[..., :1] + torch.cumsum(steps, dim=-1)], dim=-1)


def yaw_rotation(theta: torch.Tensor) -> torch.Tensor:
    """(...,) yaw -> (..., 3, 3) rotation about z."""
    c, s = torch.cos(theta), torch.sin(theta)
    zero, one = torch.zeros_like(theta), torch.ones_like(theta)
    return torch.stack([torch.stack([c, -s, zero], -1), torch.stack([s, c, zero], -1),
                        torch.stack([zero, zero, one], -1)], dim=-2)


def smoothing_matrix(n: int, order: int, weight: float, like: torch.Tensor) -> torch.Tensor:
    """weight * D^T D for the (n - order) x n finite-difference matrix D of the given order."""
    eye = torch.eye(n, dtype=like.dtype, device=like.device)
    diff = torch.diff(eye, n=order, dim=0)
    return weight * diff.T @ diff


def _cholesky_solve(lhs: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    return torch.cholesky_solve(rhs.unsqueeze(-1), torch.linalg.cholesky(lhs)).squeeze(-1)


def solve_regularised(scale: torch.Tensor, target: torch.Tensor, smooth: torch.Tensor, ridge: float) -> torch.Tensor:
    """argmin_x ||scale * x - target||^2 + x^T smooth x + ridge ||x||^2, elementwise scale.

    Retries with the ridge x10 while the normal matrix is not positive definite (upstream `solve_xs_eq_y`).
    """
    eye = torch.eye(target.shape[-1], dtype=target.dtype, device=target.device)
    rhs = scale * target
    for _ in range(8):
        lhs = torch.diag_embed(scale * scale) + smooth + ridge * eye
        try:
            return _cholesky_solve(lhs, rhs)
        except RuntimeError:  # torch.linalg.LinAlgError: not positive definite
            ridge *= 10.0
    raise RuntimeError(f"least-squares system stayed singular up to ridge={ridge}")


def _trapezoid_design(theta: torch.Tensor, dxy: torch.Tensor, dt: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows dt/2 (v_k u_k + v_k+1 u_k+1) = dp_k, u = (cos, sin) theta, interleaved x, y; returns (A, b).

    theta: (..., N + 1); dxy: (..., N, 2) -> A: (..., 2N, N + 1), b: (..., 2N), scaled by 2/dt.
    """
    n = dxy.shape[-2]
    cos, sin = torch.cos(theta), torch.sin(theta)
    design = theta.new_zeros(*theta.shape[:-1], 2 * n, n + 1)
    k = torch.arange(n, device=theta.device)
    design[..., 2 * k, k] = cos[..., :-1]
    design[..., 2 * k, k + 1] = cos[..., 1:]
    design[..., 2 * k + 1, k] = sin[..., :-1]
    design[..., 2 * k + 1, k + 1] = sin[..., 1:]
    return design, dxy.reshape(*dxy.shape[:-2], 2 * n) * (2.0 / dt)


class UnicycleAccelCurvatureActionSpace(nn.Module):
    """Normalised (accel, curvature) actions <-> ego-frame trajectories. Buffers are the release's."""

    STATISTICS = ("accel_mean", "accel_std", "curvature_mean", "curvature_std")

    def __init__(self, cfg: ActionSpaceConfig, persistent: bool = True) -> None:
        super().__init__()
        self.cfg = cfg
        for name in self.STATISTICS:
            # 0-d float32, persistent: the R1 checkpoint stores them (release `action_space.*`); Alpamayo 1.5
            # recomputes them from the config (`persistent=False`).
            self.register_buffer(name, torch.tensor(getattr(cfg, name), dtype=torch.float32), persistent=persistent)

    def _stats(self, like: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The four statistics as float32 on `like`'s device (outputs may live on another device)."""
        return tuple(b.to(like.device, torch.float32) for b in
                     (self.accel_mean, self.accel_std, self.curvature_mean, self.curvature_std))

    def denormalize(self, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(..., W, 2) normalised -> accel (..., W) m/s^2, curvature (..., W) 1/m."""
        action = action.float()
        accel_mean, accel_std, curvature_mean, curvature_std = self._stats(action)
        return action[..., 0] * accel_std + accel_mean, action[..., 1] * curvature_std + curvature_mean

    def normalize(self, accel: torch.Tensor, curvature: torch.Tensor) -> torch.Tensor:
        """accel, curvature (..., W) -> (..., W, 2) normalised."""
        accel_mean, accel_std, curvature_mean, curvature_std = self._stats(accel)
        return torch.stack([(accel - accel_mean) / accel_std, (curvature - curvature_mean) / curvature_std], dim=-1)

    def estimate_speeds(self, hist_xyz: torch.Tensor, hist_rot: torch.Tensor) -> torch.Tensor:
        """Speed at every history pose, (..., T) m/s, from (..., T, 3) positions and (..., T, 3, 3) rotations.

        Least squares on the trapezoid model with a 3rd-difference smoothness prior.
        """
        cfg = self.cfg
        xyz, rot = hist_xyz.float(), hist_rot.float()
        theta = unwrap(yaw_of(rot))
        design, target = _trapezoid_design(theta, torch.diff(xyz[..., :2], dim=-2), cfg.dt)
        n = theta.shape[-1]
        lhs = (design.transpose(-1, -2) @ design + smoothing_matrix(n, 3, cfg.v_lambda / cfg.dt**6, theta)
               + cfg.v_ridge * torch.eye(n, dtype=theta.dtype, device=theta.device))
        return _cholesky_solve(lhs, (design.transpose(-1, -2) @ target.unsqueeze(-1)).squeeze(-1))

    def estimate_t0_states(self, hist_xyz: torch.Tensor, hist_rot: torch.Tensor) -> torch.Tensor:
        """Speed v0 at t0 (the last history pose), (...,) m/s."""
        return self.estimate_speeds(hist_xyz, hist_rot)[..., -1]

    def action_to_traj(self, action: torch.Tensor, hist_xyz: torch.Tensor,
                       hist_rot: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Integrate normalised actions (..., W, 2) from the t0 state of the history.

        Returns xyz (..., W, 3) metres and rot (..., W, 3, 3), ego frame at t0; pose k is at t0 + (k+1) dt.
        z is the last history z (the unicycle is planar).
        """
        dt = self.cfg.dt
        accel, curvature = self.denormalize(action)
        v0 = self.estimate_t0_states(hist_xyz, hist_rot)
        v = torch.cat([v0.unsqueeze(-1), v0.unsqueeze(-1) + torch.cumsum(accel * dt, dim=-1)], dim=-1)
        dtheta = curvature * v[..., :-1] * dt + curvature * accel * (0.5 * dt * dt)
        theta = torch.cat([torch.zeros_like(v0).unsqueeze(-1), torch.cumsum(dtheta, dim=-1)], dim=-1)
        vx, vy = v * torch.cos(theta), v * torch.sin(theta)
        x = torch.cumsum(vx[..., :-1] * (dt / 2), dim=-1) + torch.cumsum(vx[..., 1:] * (dt / 2), dim=-1)
        y = torch.cumsum(vy[..., :-1] * (dt / 2), dim=-1) + torch.cumsum(vy[..., 1:] * (dt / 2), dim=-1)
        z = hist_xyz[..., -1:, 2].float().expand_as(x)
        return torch.stack([x, y, z], dim=-1), yaw_rotation(theta[..., 1:])

    def traj_to_action(self, hist_xyz: torch.Tensor, hist_rot: torch.Tensor, fut_xyz: torch.Tensor,
                       fut_rot: torch.Tensor) -> torch.Tensor:
        """Smoothed inverse of `action_to_traj`: (..., W, 3) future poses -> (..., W, 2) normalised actions."""
        cfg, dt = self.cfg, self.cfg.dt
        n = fut_xyz.shape[-2]
        if n != cfg.n_waypoints:
            raise ValueError(f"future has {n} poses, expected n_waypoints={cfg.n_waypoints}")
        fut_xyz, fut_rot = fut_xyz.float(), fut_rot.float()
        v0 = self.estimate_t0_states(hist_xyz, hist_rot)
        xy = torch.cat([hist_xyz[..., -1:, :2].float(), fut_xyz[..., :2]], dim=-2)
        eye = torch.eye(n, dtype=xy.dtype, device=xy.device)

        # Heading: theta_0 = 0 fixed, theta_1..N fitted to the future yaw with 3rd-difference smoothing.
        smooth_theta = smoothing_matrix(n + 1, 3, cfg.theta_lambda / dt**6, xy)
        theta_1n = _cholesky_solve(eye + smooth_theta[1:, 1:] + cfg.theta_ridge * eye, unwrap(yaw_of(fut_rot)))
        theta = torch.cat([torch.zeros_like(theta_1n[..., :1]), theta_1n], dim=-1)

        # Speed: trapezoid model with v_0 = v0 fixed (moved to the right-hand side).
        design, target = _trapezoid_design(theta, torch.diff(xy, dim=-2), dt)
        smooth_v = smoothing_matrix(n + 1, 3, cfg.v_lambda / dt**6, xy)
        gram = design.transpose(-1, -2) @ design
        rhs = ((design[..., 1:].transpose(-1, -2) @ target.unsqueeze(-1)).squeeze(-1)
               - (gram[..., 1:, 0] + smooth_v[1:, 0]) * v0.unsqueeze(-1))
        v_1n = _cholesky_solve(gram[..., 1:, 1:] + smooth_v[1:, 1:] + cfg.v_ridge * eye, rhs)
        v = torch.cat([v0.unsqueeze(-1), v_1n], dim=-1)

        ones = torch.ones_like(v_1n)
        accel = solve_regularised(ones, torch.diff(v, dim=-1) / dt,
                                  smoothing_matrix(n, 2, cfg.a_lambda / dt**4, xy), cfg.a_ridge)
        arc = dt * v[..., :-1] + (0.5 * dt * dt) * accel
        curvature = solve_regularised(arc, torch.diff(theta, dim=-1),
                                      smoothing_matrix(n, 2, cfg.kappa_lambda / dt**4, xy), cfg.kappa_ridge)
        return self.normalize(accel, curvature)

    def is_within_bounds(self, action: torch.Tensor) -> torch.Tensor:
        """(..., W, 2) normalised -> (...,) bool: every accel and curvature inside the configured bounds."""
        accel, curvature = self.denormalize(action)
        (a_lo, a_hi), (k_lo, k_hi) = self.cfg.accel_bounds, self.cfg.curvature_bounds
        ok = (accel >= a_lo) & (accel <= a_hi) & (curvature >= k_lo) & (curvature <= k_hi)
        return ok.all(dim=-1)

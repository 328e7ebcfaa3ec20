"""Euler flow-matching sampler on analytic velocity fields (t = 0 noise, t = 1 data)."""

import pytest
import torch

from alpamayo_ros.model.flow_matching import euler_integrate, time_grid


def euler_sample(step_fn, noise, num_steps):
    return euler_integrate(step_fn, noise, time_grid(num_steps))

TOL = 1e-5


def test_constant_field_integrates_exactly():
    noise = torch.randn(3, 64, 2, generator=torch.Generator().manual_seed(0))
    velocity = torch.tensor([0.7, -1.3])
    out = euler_sample(lambda x, t: velocity.expand_as(x), noise, num_steps=10)
    assert torch.allclose(out, noise + velocity, atol=TOL)


def test_optimal_transport_field_reaches_its_target():
    # v(x, t) = (x1 - x) / (1 - t) carries any x(t) straight to x1 at t = 1; Euler lands on it at the last step.
    target = torch.randn(2, 64, 2, generator=torch.Generator().manual_seed(1))
    noise = torch.randn(2, 64, 2, generator=torch.Generator().manual_seed(2))
    out = euler_sample(lambda x, t: (target - x) / (1.0 - t), noise, num_steps=10)
    assert torch.allclose(out, target, atol=TOL)


def test_time_runs_from_zero_in_equal_float32_steps():
    seen = []

    def field(x, t):
        seen.append(t.clone())
        return torch.zeros_like(x)

    euler_sample(field, torch.zeros(4, 64, 2), num_steps=10)
    assert [tuple(t.shape) for t in seen] == [(4, 1, 1)] * 10
    expected = torch.linspace(0, 1, 11, dtype=torch.float32)[:-1]
    assert torch.equal(torch.stack([t[0, 0, 0] for t in seen]), expected)


def test_linear_in_time_field_gives_the_euler_sum():
    # dx/dt = 2t: exact x(1) - x(0) = 1, Euler's left sum = 2 * (0 + 0.1 + ... + 0.9) * 0.1 = 0.9.
    out = euler_sample(lambda x, t: 2 * t.expand_as(x), torch.zeros(1, 64, 2), num_steps=10)
    assert torch.allclose(out, torch.full_like(out, 0.9), atol=TOL)


def test_rejects_zero_steps():
    with pytest.raises(ValueError, match="num_steps=0"):
        euler_sample(lambda x, t: x, torch.zeros(1, 2, 2), num_steps=0)


def test_a_sub_grid_integrates_from_its_first_time():
    # The compiled flow is checked one step at a time: integrating over times[i:i+2] is one Euler step at t_i.
    times = time_grid(10)
    x = torch.ones(2, 64, 2)
    out = euler_integrate(lambda x, t: x * t, x, times[3:5])
    assert torch.allclose(out, x + (times[4] - times[3]) * x * times[3])

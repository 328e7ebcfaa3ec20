"""The GPU path against the CPU one. Skipped without CUDA (this project's CI has none)."""

import pytest
import torch

from alpamayo_ros.model.loading import tiny
from alpamayo_ros.model.pixels import DevicePixels
from alpamayo_ros.tools.synthetic import road_images

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

ONE_STEP_TOL = 1e-3  # float32 on two devices, one Euler step (chained steps amplify rounding; see test_alpamayo_r1)


def noise(rows):
    return torch.randn(rows, 64, 2, generator=torch.Generator().manual_seed(3))


def run(model, drive, **kwargs):
    args = dict(greedy=True, max_reasoning_tokens=4, diffusion_steps=1, num_samples=2, noise=noise(2))
    return model.sample(drive.images, drive.ego_history_xyz, drive.ego_history_rot, **{**args, **kwargs})


@pytest.mark.parametrize("reasoning", ["per_sample", "shared"])
def test_cuda_samples_equal_cpu_samples(drive, reasoning):
    cpu, gpu = tiny(seed=0), tiny(seed=0).to("cuda")
    a, b = run(cpu, drive, reasoning=reasoning), run(gpu, drive, reasoning=reasoning)
    assert a.reasoning == b.reasoning
    assert torch.allclose(a.action, b.action, atol=ONE_STEP_TOL)


def test_device_pixels_on_cuda_equal_cpu(tiny_model):
    processor = tiny_model.prompt_encoder.image_processor
    image = road_images(height=128, width=192)[1, 2]
    on_gpu, grid = DevicePixels(processor, "cuda")(image)
    on_cpu, _ = DevicePixels(processor, "cpu")(image)
    assert on_gpu.is_cuda and torch.equal(grid, torch.tensor([[1, 4, 6]]))
    assert torch.allclose(on_gpu.cpu(), on_cpu, atol=2 * 2 / 255)  # at most two uint8 levels apart


def test_cuda_graphs_replay_the_eager_flow(drive):
    model = tiny(seed=0).to("cuda")
    eager = run(model, drive, reasoning="shared")
    model.compile_flow("reduce-overhead")
    for _ in range(3):  # warm-up, record, replay
        compiled = run(model, drive, reasoning="shared")
    assert compiled.reasoning == eager.reasoning
    assert torch.allclose(compiled.action, eager.action, atol=ONE_STEP_TOL)


def test_bfloat16_on_cuda_gives_finite_trajectories(drive):
    model = tiny(seed=0).to("cuda", torch.bfloat16)
    model.action_space.float()
    model.select_attention()
    pred = run(model, drive, diffusion_steps=10)
    assert torch.isfinite(pred.xyz).all()

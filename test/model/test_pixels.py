"""DevicePixels (resize and normalise on the model's device) against the transformers processor (PIL)."""

import pytest
import torch
from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor

from alpamayo_ros.model.pixels import DevicePixels
from alpamayo_ros.model.prompt import RELEASE_MAX_PIXELS, RELEASE_MIN_PIXELS
from alpamayo_ros.tools.synthetic import road_images
from tolerances import PIXELS_ULPS, close


@pytest.fixture(scope="module")
def release_processor():
    return Qwen2VLImageProcessor(patch_size=16, temporal_patch_size=2, merge_size=2, min_pixels=RELEASE_MIN_PIXELS,
                                 max_pixels=RELEASE_MAX_PIXELS,
                                 size={"shortest_edge": RELEASE_MIN_PIXELS, "longest_edge": RELEASE_MAX_PIXELS})


@pytest.mark.parametrize("height,width", [(320, 576), (64, 96)])
def test_device_pixels_equal_the_processor_without_resizing(release_processor, tiny_model, height, width):
    processor = release_processor if height == 320 else tiny_model.prompt_encoder.image_processor
    image = road_images(height=height, width=width)[1, 2]
    pixels, grid = DevicePixels(processor, "cpu")(image)
    expected = processor(images=[image], return_tensors="pt")
    assert torch.equal(grid, expected["image_grid_thw"])
    close(pixels, expected["pixel_values"], PIXELS_ULPS, "device pixels vs the processor's")


@pytest.mark.parametrize("height,width", [(1080, 1920), (1208, 1928)])
def test_device_pixels_resize_like_pil(release_processor, height, width):
    image = road_images(height=height, width=width)[1, 2]
    pixels, grid = DevicePixels(release_processor, "cpu")(image)
    expected = release_processor(images=[image], return_tensors="pt")
    assert torch.equal(grid, expected["image_grid_thw"])
    levels = (pixels - expected["pixel_values"]).abs() / (2 / 255)  # one uint8 level after mean/std 0.5
    assert levels.max() <= 2.01
    assert (levels > 0.5).float().mean() < 1e-3  # measured: 64 of 1,105,920 values at 1080p


def test_model_samples_alike_with_either_preprocessing(drive):
    from alpamayo_ros.model.loading import tiny

    model = tiny(seed=0)
    images = road_images(height=128, width=192)  # resized to the tiny model's 64 x 96 by either path
    args = dict(greedy=True, max_reasoning_tokens=4, noise=torch.zeros(1, 64, 2), diffusion_steps=1)
    host = model.sample(images, drive.ego_history_xyz, drive.ego_history_rot, **args)
    model.set_image_preprocessing("device")
    device = model.sample(images, drive.ego_history_xyz, drive.ego_history_rot, **args)
    assert host.reasoning == device.reasoning
    assert torch.allclose(host.xyz, device.xyz, atol=1e-3)
    with pytest.raises(ValueError, match="'gpu', expected one of"):
        model.set_image_preprocessing("gpu")

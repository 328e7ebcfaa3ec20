"""Images not in the vision cache are encoded together, and each encoding stays bitwise its per-image one."""

import pytest
import torch


@pytest.fixture
def images(drive):
    return list(drive.images.reshape(16, *drive.images.shape[2:]))


def count_tower_calls(model, monkeypatch, perturb_batches=False):
    """Count vision-tower calls; optionally make batched calls round differently (1e-6 off)."""
    visual = model.vlm.model.visual
    forward = visual.forward
    calls = []

    def counted(pixels, grid_thw, **kwargs):
        calls.append(grid_thw.shape[0])
        embeds, deepstack = forward(pixels, grid_thw=grid_thw, **kwargs)
        if perturb_batches and grid_thw.shape[0] > 1:
            embeds = embeds + 1e-6
        return embeds, deepstack

    monkeypatch.setattr(visual, "forward", counted)
    return calls


def assert_bitwise_per_image(model, images, encoded):
    for image, got in zip(images, encoded):
        alone = model.encode_image(image)
        assert torch.equal(got.grid_thw, alone.grid_thw)
        assert torch.equal(got.embeds, alone.embeds)
        assert all(map(torch.equal, got.deepstack, alone.deepstack))


@torch.inference_mode()
def test_batched_encodings_equal_per_image_ones_and_use_one_call_when_exact(drive, images, monkeypatch):
    from alpamayo_ros.model.loading import tiny

    model = tiny(seed=0)
    calls = count_tower_calls(model, monkeypatch)
    first = model.encode_images(images)
    assert_bitwise_per_image(model, images, first)
    (exact,) = model._batch_exact.values()
    calls.clear()
    again = model.encode_images(images)  # the batch shape is known now: no second check
    assert calls == ([16] if exact else [1] * 16)
    assert all(torch.equal(a.embeds, b.embeds) for a, b in zip(first, again))


@torch.inference_mode()
def test_a_batch_that_rounds_differently_falls_back_to_one_image_per_call(images, monkeypatch):
    from alpamayo_ros.model.loading import tiny

    model = tiny(seed=0)
    reference = [model.encode_image(image) for image in images[:4]]
    calls = count_tower_calls(model, monkeypatch, perturb_batches=True)
    encoded = model.encode_images(images[:4])
    assert list(model._batch_exact.values()) == [False]
    assert all(torch.equal(a.embeds, b.embeds) for a, b in zip(encoded, reference))
    calls.clear()
    model.encode_images(images[:4])
    assert calls == [1, 1, 1, 1]


@torch.inference_mode()
def test_only_images_missing_from_the_cache_are_encoded_in_one_batch(drive, images, monkeypatch):
    from alpamayo_ros.model.loading import tiny

    model = tiny(seed=0)
    keys = [(cam, frame) for cam in range(4) for frame in range(4)]
    model.encode_inputs(images, drive.ego_history_xyz, keys)
    calls = count_tower_calls(model, monkeypatch)
    shifted = [(cam, frame) for cam in range(4) for frame in range(1, 5)]  # one new frame per camera
    new_images = [images[cam * 4 + (frame % 4)] for cam, frame in shifted]
    model.encode_inputs(new_images, drive.ego_history_xyz, shifted)
    # The 4 new images in one call, then (a batch shape not seen before) each alone to check it.
    assert calls == [4, 1, 1, 1, 1]
    assert (model.vision_cache.misses, model.vision_cache.hits) == (20, 12)


def test_one_processor_call_gives_each_images_own_pixels(tiny_model, images):
    encoder = tiny_model.prompt_encoder
    for (pixels, grid), image in zip(encoder.pixels_of(images), images):
        alone_pixels, alone_grid = encoder.pixels(image)
        assert torch.equal(pixels, alone_pixels) and torch.equal(grid, alone_grid)

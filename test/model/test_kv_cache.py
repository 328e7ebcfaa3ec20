"""The reserved decode cache holds exactly what transformers' DynamicCache would, without regrowing."""

import torch
from transformers.cache_utils import DynamicCache

from alpamayo_ros.model.kv_cache import ReservedLayer, reserve


def filled_cache(length=5, rows=2, seed=0):
    generator = torch.Generator().manual_seed(seed)
    cache = DynamicCache()
    for layer in range(2):
        cache.update(torch.randn(rows, 2, length, 4, generator=generator),
                     torch.randn(rows, 2, length, 4, generator=generator), layer)
    return cache


def test_appends_in_place_and_equals_a_dynamic_cache_beyond_the_reservation_too():
    plain, reserved = filled_cache(), reserve(filled_cache(), tokens=3)
    buffers = [layer._key_buffer.data_ptr() for layer in reserved.layers]
    generator = torch.Generator().manual_seed(1)
    for step in range(5):  # 3 within the reservation, 2 beyond it
        for layer in range(2):
            k, v = torch.randn(2, 2, 1, 4, generator=generator), torch.randn(2, 2, 1, 4, generator=generator)
            expected = plain.update(k, v, layer)
            got = reserved.update(k, v, layer)
            assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])
        if step < 3:
            assert all(layer.keys.data_ptr() == ptr for layer, ptr in zip(reserved.layers, buffers))
    assert reserved.get_seq_length() == plain.get_seq_length() == 10
    reserved.crop(-4)
    plain.crop(-4)
    assert all(torch.equal(a.keys, b.keys) for a, b in zip(reserved.layers, plain.layers))


def test_decode_over_a_reserved_cache_is_bitwise_the_dynamic_one(tiny_model, drive):
    model = tiny_model
    with torch.inference_mode():
        inputs = model.encode_inputs(drive.images, drive.ego_history_xyz)
        rollouts = []
        for reserved in (False, True):
            logits, cache, rope_delta = model.prefill(inputs.input_ids, inputs.image_grid_thw, inputs.image_embeds,
                                                      inputs.deepstack)
            cache.batch_repeat_interleave(2)
            if reserved:
                reserve(cache, 8)
            rollouts.append(model.decode(logits.expand(2, -1), cache, rope_delta.expand(2, 1), 8, False, 1.0, 0.9,
                                         torch.Generator().manual_seed(2)))
    plain, reserved = rollouts
    assert isinstance(reserved.cache.layers[0], ReservedLayer)
    assert reserved.tokens == plain.tokens and reserved.length == plain.length
    for a, b in zip(plain.cache.layers, reserved.cache.layers):
        assert torch.equal(a.keys, b.keys) and torch.equal(a.values, b.values)

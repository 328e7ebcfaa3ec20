"""The training losses against the recipe's own values on the conformance checkpoint (conformance/training)."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from alpamayo_ros.model.training import (
    TrainingExample,
    cropped_cache,
    flow_matching_loss,
    flow_training_data,
    future_token_bins,
    make_batch,
    token_cross_entropy,
    training_losses,
)

TRAINING = Path(__file__).parents[1] / "conformance" / "training"
# The conformance README's comparison rules (float32, CPU; the reference moved by <= 6e-8 between 1 and 2
# threads): the action is an ill-conditioned least-squares fit (2e-4); every value computed from given
# (x, t, noise) in float32 through ~10 matrix products: 1e-5; gradients 1e-5 relative.
ACTION_TOL = 2e-4
VALUE_TOL = 1e-5
GRAD_RTOL = 1e-5
# t and noise are drawn by the same torch generator calls as the recipe: the same uniforms. t (Beta) is the same
# float32 value on every code path measured (README, numerics).
DRAW_TOL = 0.0
# noise = sqrt(-2 ln u1) (cos | sin)(2 pi u2) from those uniforms, by torch's CPU normal fill (installed torch's
# ATen/native/cpu/DistributionTemplates.h): float32 vectors with avx_mathfun's Cephes-style log and sincos under
# ATEN_CPU_CAPABILITY avx2 / avx512, a scalar loop with libm's logf, cosf, sinf under `default`. Per element, between
# the two: the angle (2 pi rounded to float32 times u2 in one; 2 pi u2 in double, rounded once, in the other)
# <= 1.25 EPS x 2 pi = 7.9 EPS absolute; cos/sin <= 2 + 1 ulps -> 3 EPS; the radius (ln 2 + 1 ulps, halved by sqrt;
# sqrt and the products 0.5 ulp each) <= 3.5 EPS relative. So |dz| <= r x 14.4 EPS with r <= sqrt(-2 ln 2**-24)
# = 5.77 (the smallest uniform torch draws): 83 EPS -> 128 EPS (1.5e-5).
# Measured: 7.7e-7 (6.5 EPS) under ATEN_CPU_CAPABILITY=default (2 threads and 1), 0 on the other variants.
NOISE_ATOL = 128 * torch.finfo(torch.float32).eps


@pytest.fixture(scope="module")
def golden():
    return load_file(TRAINING / "training.safetensors")


@pytest.fixture(scope="module")
def golden_json():
    return json.loads((TRAINING / "training.json").read_text())


@pytest.fixture(scope="module")
def model(conformance_dir):
    """A copy of the conformance checkpoint of its own: these tests accumulate gradients."""
    from alpamayo_ros.model.loading import from_pretrained

    return from_pretrained(conformance_dir / "checkpoint")


@pytest.fixture(scope="module")
def example(conformance_dir, golden, golden_json):
    inputs = load_file(conformance_dir / "inputs.safetensors")
    return TrainingExample(images=inputs["image_frames"].permute(0, 1, 3, 4, 2).numpy(),
                           ego_history_xyz=inputs["ego_history_xyz"][0, 0].numpy(),
                           ego_history_rot=inputs["ego_history_rot"][0, 0].numpy(),
                           future_xyz=golden["ego_future_xyz"][0, 0].numpy(),
                           future_rot=golden["ego_future_rot"][0, 0].numpy(),
                           coc=golden_json["conversation"]["cot_text"])


def close(actual, expected, atol, what, rtol=0.0):
    torch.testing.assert_close(actual, expected, atol=atol, rtol=rtol, msg=lambda m: f"{what}: {m}")


def test_conversation_labels_and_future_bins_equal_the_recipes(model, example, golden):
    with torch.no_grad():
        stage2 = make_batch(model, [example], fuse_future_bins=False)
        stage1 = make_batch(model, [example])
    assert torch.equal(stage2.input_ids, golden["input_ids_fused_stage2"])
    assert torch.equal(stage2.labels != -100, golden["labels_mask_cot_and_traj_future"].bool())
    assert torch.equal(stage2.image_grid_thw, golden["image_grid_thw"])
    assert stage2.crop.tolist() == [403]
    assert torch.equal(stage1.input_ids, golden["stage1.input_ids_fused"])
    assert torch.equal(stage1.labels, golden["stage1.labels"])
    close(stage1.action, golden["action"][0], ACTION_TOL, "action")
    assert torch.equal(future_token_bins(golden["action"][0], model.config.traj_tokenizer_cfg)[0],
                       golden["stage1.future_token_bins"])


def test_flow_draws_follow_the_recipes_order(golden):
    torch.manual_seed(1234)  # the reference's seed, set right before its forward
    t, noise = flow_training_data(golden["fm_x"])
    close(t, golden["fm_timesteps"], DRAW_TOL, "t")
    close(noise, golden["fm_noise"], NOISE_ATOL, "noise")


def test_the_uniform_timestep_sampler_weighs_every_flow_time_alike():
    """The recipe's other `train_timestep_sampler`: t ~ U[0, 1), drawn before the noise as the Beta draw is. Its
    mean is 1/2 where the default's is 0.999 x 0.4; on [0.8, 1) it puts 0.2 of the draws where Beta(1.5, 1)'s
    t puts (0.2 / 0.999)^1.5 = 0.09 (each +-0.006 at 4 sigma for 20,000 draws)."""
    x = torch.zeros(20_000, 64, 2)
    torch.manual_seed(0)
    t, noise = flow_training_data(x, "uniform")
    torch.manual_seed(0)
    assert torch.equal(t, torch.rand(20_000).view(-1, 1, 1)) and torch.equal(noise, torch.randn_like(x))
    assert 0.0 <= float(t.min()) and float(t.max()) < 1.0
    assert float(t.mean()) == pytest.approx(0.5, abs=0.009)
    assert float((t >= 0.8).float().mean()) == pytest.approx(0.2, abs=0.012)
    beta, _ = flow_training_data(x)
    assert float(beta.mean()) == pytest.approx(0.999 * 0.4, abs=0.009)
    assert float((beta >= 0.8).float().mean()) == pytest.approx((0.199 / 0.999) ** 1.5, abs=0.009)
    with pytest.raises(ValueError, match="timestep sampler 'logit'"):
        flow_training_data(x, "logit")


def _stage2(model, example, golden, causal):
    """The stage-2 pass on the recipe's sequence, with its stored (x, t, noise)."""
    with torch.no_grad():
        batch = make_batch(model, [example], fuse_future_bins=False)
        hidden, cache, rope_delta = model.prefix_forward(batch.input_ids, batch.image_grid_thw, batch.image_embeds,
                                                         batch.deepstack)
    assert torch.equal(rope_delta, golden["rope_deltas"])
    cache = cropped_cache(cache, batch.crop)
    loss, pred = flow_matching_loss(model, cache, batch.crop, rope_delta, golden["fm_x"], golden["fm_timesteps"],
                                    golden["fm_noise"], causal=causal)
    return hidden, batch, loss, pred


def test_flow_matching_loss_and_gradients_equal_the_recipes(model, example, golden, golden_json):
    model.zero_grad(set_to_none=True)
    _, _, loss, pred = _stage2(model, example, golden, causal=True)  # the recipe's training mask
    close(pred, golden["pred_velocity"], VALUE_TOL, "predicted velocity")
    close(loss.reshape(1), golden["fm_loss"], VALUE_TOL, "flow-matching loss")
    loss.backward()
    for name, param in model.named_parameters():
        key = f"grad.{name}"
        if key in golden:
            close(param.grad, golden[key], VALUE_TOL * golden[key].abs().max().item(), key, rtol=GRAD_RTOL)
    norms = golden_json["stage2"]["grad_norm_l2"]
    for module in ("action_in_proj", "action_out_proj", "expert"):
        grads = [p.grad for p in getattr(model, module).parameters() if p.grad is not None]
        norm = torch.sqrt(sum((g.double() ** 2).sum() for g in grads)).item()
        assert norm == pytest.approx(norms[module], rel=GRAD_RTOL), module
    assert all(p.grad is None for p in model.vlm.parameters()), "the cache is detached: the VLM gets no gradient"
    model.zero_grad(set_to_none=True)


def test_expert_positions_and_the_inference_mask(model, example, golden):
    with torch.no_grad():
        _, batch, _, pred = _stage2(model, example, golden, causal=False)
        positions = golden["rope_deltas"][:, 0] + batch.crop + torch.arange(64)
    assert torch.equal(positions.expand(3, 1, 64), golden["expert_position_ids"])
    close(pred, golden["pred_velocity_inference_style_noncausal"], VALUE_TOL, "bidirectional velocity")


def test_cross_entropy_equals_the_recipes(model, example, golden):
    with torch.no_grad():
        hidden, batch, _, _ = _stage2(model, example, golden, causal=True)
        future, others, per_token = token_cross_entropy(hidden, golden["labels_stage2_cot"], model.vlm.lm_head,
                                                        model.token_ids)
        assert future.item() == 0.0
        close(others.reshape(1), golden["vlm_ce_loss_cot"], VALUE_TOL, "stage-2 CoC cross-entropy")
        close(per_token, golden["vlm_token_ce_cot"], VALUE_TOL, "per-token cross-entropy")

        stage1 = make_batch(model, [example])
        torch.manual_seed(1234)
        losses = training_losses(model, stage1, causal_expert=True)
    expected = golden["stage1.loss_future_traj_others_total"]
    close(torch.stack([losses.vlm_future, losses.vlm_others, losses.vlm]), expected, VALUE_TOL, "stage-1 losses")
    close(losses.flow.reshape(1), golden["fm_loss"], VALUE_TOL, "flow loss from the stage-1 pass's cache")


def test_linear_patch_embedding_is_the_convolution(model, example):
    """Training's matmul patch embedding equals the Conv3d it stands in for, and the Conv3d is back after."""
    from alpamayo_ros.model.training import linear_patch_embedding
    from tolerances import close as close_ulps

    patch_embed = model.vlm.model.visual.patch_embed
    patches = torch.randn(40, patch_embed.proj.weight[0].numel(), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        conv = patch_embed(patches)
        with linear_patch_embedding(model):
            linear = patch_embed(patches)
        after = patch_embed(patches)
    # one 1,536-term dot product each, summed in another order: 2 sqrt(1536) ~ 78 ulps of the largest output
    close_ulps(linear, conv, 2 * 1536 ** 0.5, "patch embedding as a matmul")
    assert "forward" not in vars(patch_embed) and torch.equal(after, conv)

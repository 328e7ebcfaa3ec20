"""Train the synthetic-world driver: a small AlpamayoR1 (`loading.driver_config`) on the synthetic world, on the CPU.

Both of the release's losses (model/training.py) in one joint run: each step runs the VLM once over the
training conversation (Chain-of-Causation + discrete future tokens), takes stage 1's cross-entropy from
it, and trains the expert with stage 2's flow matching on that pass's cache, cropped after
<|traj_future_start|>. Joint rather than two stages because on two cores the VLM pass is most of a step's
cost and the stage-2 cache is exactly a prefix of it. By default the cache is not detached (the recipe's
option stop_grad_from_vlm=False): flow matching's gradient then also reaches the VLM and its vision tower,
a dense signal of what the trajectory needs, where the reasoning's cross-entropy alone gives them a few
decision tokens per sample; `--no-expert-trains-vlm` detaches it (the recipe's default, whose expert
gradients are those of its stage 2: conformance/training README). The patch embedding runs as a matmul
(`training.linear_patch_embedding`). The
expert is trained with the bidirectional attention the release's inference uses, not the recipe's
accidental causal mask: the model is run by `AlpamayoR1.sample`. Each sample's one VLM pass serves
`--flow-draws` flow-matching draws (the recipe draws one). `--expert-steps` then adds the recipe's stage 2 on
the frozen VLM (stop_grad_from_vlm): each example's prefix cache is stored once, and the expert alone trains on
them; on two cores an expert step of 64 rows takes 0.3 s where a joint step takes 1.1 s.

Two things stand in for what the release starts from. Its Qwen3-VL arrives pretrained and sees; this
vision tower starts from random weights, so stage 0 (`--scene-steps`) trains it alone, through a
`SceneProbe` that reads each example's cause and lane offset (with `--scene-lane`, `--scene-distances` also
the lane ahead and the distances to the line and the lead) off the image tokens the LM receives. Then the
tower is frozen and each example encoded once (`--frozen-vision`), or it trains on in the joint run, which
keeps the probe's loss (`--scene-weight`); the probe is dropped at save. And its action statistics
are its own data's; `--own-statistics` measures the world's (`action_statistics`), whose curvature spread
is a third of the release's. `--offset-share` of the examples start off the lane centre and recover;
`--mirror-share` of those drawn are mirrored left for right. `--light-futures` sets what a t0 learns whose
future hinges on a change of the light that no camera shows yet (`build_examples`). The trajectory bins'
token rows start ordered, each near its neighbours (`--ordinal-tokens`, `ordinal_tokens`), instead of as
independent noise: what the model learns for one speed or curvature then carries over to the bins beside it.

Examples: every scenario of `tools.world`, `--drives` training seeds each, t0 every `--t0-stride` x 0.1 s
along each drive, rendered once and kept in memory as JPEG (driver_data.py). Seeded; writes OUT in the
release layout (`save_pretrained`, self-contained: config, weights, tokenizer, processor, base config)
plus `training_log.json` (the losses along the run).

    python -m alpamayo_ros.tools.train_driver OUT [--steps 1500 --batch-size 8 --drives 12 --threads 2 --seed 0]

The defaults are the embedded driver's run; alpamayo_ros/driver/README.md has it and the runs before it.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import logging
import math
import multiprocessing
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import pad_sequence
from tqdm import tqdm
from transformers import DynamicCache

from alpamayo_ros.model.action_space import UnicycleAccelCurvatureActionSpace
from alpamayo_ros.model.alpamayo_r1 import EncodedInputs
from alpamayo_ros.model.loading import driver_config, random_model, save_pretrained
from alpamayo_ros.model.training import (
    TIMESTEP_SAMPLERS,
    flow_matching_loss,
    flow_target,
    flow_training_data,
    linear_patch_embedding,
    make_batch,
    training_losses,
)
from alpamayo_ros.tools import world
from alpamayo_ros.tools.driver_data import (
    CURVE_RANGE_M,
    DISTANCE_RANGE_M,
    FAR_LANE_M,
    LANE_AHEAD_M,
    TRAIN_SEEDS,
    StoredExample,
    drive_examples,
    t0_grid,
)
from alpamayo_ros.tools.visited import VisitedState, read_states

logger = logging.getLogger(__name__)

LOG_EVERY = 10  # steps between entries of training_log.json
CAUSES = tuple(sorted(set(world.COC_LABELS.values())))  # the scene probe's classes
SCENE_POOLINGS = ("attention", "mean", "per-head")  # how the scene probe pools the image tokens (SceneProbe)
SCENE_WARMUP_STEPS = 20  # stage 0: linear warmup to the peak learning rate, then constant
LATE_MPS = (-1.5, 4.0)  # late examples: the ego drove this much faster than the expert (m/s) ...
LATE_S = (0.5, 2.5)  # ... for this long (s), so it is that times further along at t0
EARLY_SPEED = (0.0, 0.8)  # early examples: the ego drives at this share of the expert's speed at t0 ...
EARLY_AHEAD_M = (0.0, 25.0)  # ... this much further along (world.World.late keeps it able to stop for red)
DENSE_STOP_MPS = 7.0  # --dense-stops: below this speed, braking for or standing at a light or a lead
STANDING_MPS = 0.05  # --rolling-stops: the expert stands (held by a light or a lead) below this speed ...
ROLLING_MPS = (0.05, 1.0)  # ... where the ego still rolls this fast ...
ROLLING_BACK_M = (0.0, 3.0)  # ... this far behind the expert
# --dense-curves: the road's curvature somewhere along the expert's next 6.4 s differs from the curvature under the
# car by more than this (1/m): a curve's entry or exit lies ahead. Every curve of the curve and mixed drives (radius
# 30-140 m) counts; the gentle bends before some lights (150-300 m) do not.
CURVE_CHANGE_PER_M = 0.007
LANE_SCALE_M = 5.0  # the probe's lane-ahead targets in these units (a 90 m curve is 8.9 m sideways at 40 m)
DISTANCE_SCALE_M = 20.0  # the probe's distances ahead (stop line, lead: 0-100 m) in these units by default
CURVE_SPEED_SCALE_MPS = 2.0  # the probe's curve speed ahead (7.7 m/s before a 30 m radius, 14 on a straight)
BEARING_SCALE_RAD = 0.1  # the probe's far-lane bearings in these units (curve_left 0 from 35 m ahead: 0.11 rad at 80 m)
BEARING_LIMIT_RAD = 0.5  # ... clamped to this: the onset of a curve is what it is for; deeper in, the near lane says
STATISTICS_STRIDE = 8  # the action statistics read every 8th example (about 480: their values settle well before)
ORDINAL_FEATURES = 64  # --ordinal-tokens: sines and cosines of a bin's value at 32 frequencies


def future_action(space: UnicycleAccelCurvatureActionSpace, example: StoredExample) -> torch.Tensor:
    """The example's future as the action space's normalised (acceleration, curvature) per step (64, 2)."""
    return space.traj_to_action(*(torch.as_tensor(x, dtype=torch.float32) for x in (
        example.ego_history_xyz, example.ego_history_rot, example.future_xyz, example.future_rot)))


def action_statistics(examples: list[StoredExample], config, curvature_spread: float = 1.0,
                      accel_spread: float = 1.0) -> dict[str, float]:
    """The action space's dataset statistics, measured on the examples' futures: mean and standard deviation of
    the acceleration and the curvature the unicycle fit gives (the release's config holds its own data's).

    The world's curvature spread is 0.008 1/m, a third of the release's 0.026: normalised with the release's,
    the curvatures would sit in a band of std 0.3 inside the flow's unit noise, and every error of the expert
    would come out 3x larger in metres. `curvature_spread` and `accel_spread` scale the measured spreads: above 1
    a tight curve or a hard brake is nearer the flow's unit noise; below 1 an error of the expert weighs more in
    the flow loss, and the part of its initial noise a plan keeps moves it less (m/s^2 or 1/m per unit)."""
    space = UnicycleAccelCurvatureActionSpace(config)
    accel, curvature = [], []
    for e in examples[::STATISTICS_STRIDE]:
        a, k = space.denormalize(future_action(space, e))
        accel.append(a)
        curvature.append(k)
    accel, curvature = torch.cat(accel).double(), torch.cat(curvature).double()
    return {"accel_mean": accel.mean().item(), "accel_std": accel.std().item() * accel_spread,
            "curvature_mean": curvature.mean().item(), "curvature_std": curvature.std().item() * curvature_spread}


def action_rarity(examples: list[StoredExample], config) -> np.ndarray:
    """Per example, the largest |normalised action| of its future (acceleration or curvature, in the action space's
    standard deviations; at least 1): tight curves and hard braking score 3-4, cruising 1. With the world's
    statistics half the examples have no curvature at all and a 30 m curve is 4 standard deviations out, where a
    flow trained on them could regress towards the mean (it did not help: alpamayo_ros/driver/README.md)."""
    space = UnicycleAccelCurvatureActionSpace(config)
    return np.array([max(1.0, float(future_action(space, e).abs().max())) for e in examples])


class SceneProbe(torch.nn.Module):
    """Training only, dropped at save: reads each example's cause and lane offset off the image tokens the
    language model receives (attention pooling with one learnt query, then linear; "per-head": one learnt query
    per target, so that reading the lead's brake lights need not share a query with reading the road's bend).

    The release fine-tunes Qwen3-VL, whose vision tower already sees; the driver's starts from random weights,
    and the reasoning's few decision tokens alone teach it slowly (`alpamayo_ros/driver/README.md`). This
    dense signal stands in for that pretraining: the tokens the LM reads then carry the light, the brake
    lights, the road ahead and where the car is in its lane, linearly."""

    def __init__(self, width: int, lane: bool = False, pooling: str = "attention", distances: bool = False,
                 far: bool = False, brakes: bool = False, curves: bool = False,
                 distance_range: float = DISTANCE_RANGE_M, distance_scale: float = DISTANCE_SCALE_M) -> None:
        super().__init__()
        if not 0.0 < distance_range <= DISTANCE_RANGE_M:
            raise ValueError(f"scene probe distance range {distance_range} m: within (0, {DISTANCE_RANGE_M:g}]")
        if not distance_scale > 0.0:
            raise ValueError(f"scene probe distance scale {distance_scale} m: must be positive")
        self.distance_range = distance_range  # farther stop lines and leads are read as this far (clamped)
        self.distance_scale = distance_scale  # the distances' unit: an error of this many metres costs 1
        if pooling not in SCENE_POOLINGS:
            raise ValueError(f"scene probe pooling {pooling!r}: one of {SCENE_POOLINGS}")
        self.pooling = pooling  # "mean": every image token's equal share, the simplest read an LM head can make
        self.query = torch.nn.Parameter(torch.zeros(width))  # kept with "mean" and "per-head" (unused): the seed's draws stay
        self.cause = torch.nn.Linear(width, len(CAUSES))
        self.offset = torch.nn.Linear(width, 1)
        self.lane = torch.nn.Linear(width, len(LANE_AHEAD_M)) if lane else None  # created last: the seed's draws
        self.distances = torch.nn.Linear(width, 2) if distances else None  # after it, for the same reason
        self.far = torch.nn.Linear(width, len(FAR_LANE_M)) if far else None  # and after that
        self.brakes = torch.nn.Linear(width, 1) if brakes else None  # and after that
        self.curves = torch.nn.Linear(width, 1) if curves else None  # and last
        self.heads = [name for name in ("cause", "offset", "lane", "distances", "far", "brakes", "curves")
                      if getattr(self, name) is not None]
        # zeros draw nothing from the seed; each starts as the mean, as the one query does
        self.queries = torch.nn.Parameter(torch.zeros(len(self.heads), width)) if pooling == "per-head" else None

    def forward(self, image_embeds: torch.Tensor, batch_size: int) -> torch.Tensor:
        """Each example's image tokens pooled into one vector (batch_size, width), which the heads read; with
        "per-head" pooling one vector per head (batch_size, heads, width), in `self.heads` order."""
        tokens = image_embeds.reshape(batch_size, -1, image_embeds.shape[-1])
        if self.pooling == "mean":
            return tokens.mean(1)
        if self.pooling == "per-head":
            weights = torch.softmax(tokens @ self.queries.T, dim=1)  # (batch, tokens, heads)
            return torch.einsum("bth,btw->bhw", weights, tokens)
        weights = torch.softmax(tokens @ self.query, dim=1)
        return (weights[..., None] * tokens).sum(1)

    def read(self, pooled: torch.Tensor, head: str) -> torch.Tensor:
        """Head `head` (a Linear attribute) applied to its pooled vector."""
        own = pooled[:, self.heads.index(head)] if self.pooling == "per-head" else pooled
        return getattr(self, head)(own)

    def loss(self, image_embeds: torch.Tensor, examples: list[StoredExample]) -> tuple[torch.Tensor, float]:
        """Cross-entropy of the cause plus the offset's squared error (m^2), plus (with `lane`) the lane
        centre's squared error LANE_AHEAD_M ahead in units of LANE_SCALE_M, plus (with `distances`) the squared
        error of the distances to the stop line and the lead vehicle in units of `distance_scale`, where there is
        one within DISTANCE_RANGE_M (those beyond `distance_range` read as that far), plus (with `far`) the
        squared error of the lane centre's bearing FAR_LANE_M ahead in units of BEARING_SCALE_RAD, clamped to
        BEARING_LIMIT_RAD, plus (with `brakes`) the binary cross-entropy of the lead's brake lights, where a lead
        is within range, plus (with `curves`) the squared error of the lowest speed the curves ahead allow in units
        of CURVE_SPEED_SCALE_MPS; and the cause's accuracy."""
        pooled = self(image_embeds, len(examples))
        logits = self.read(pooled, "cause")
        cause = torch.tensor([CAUSES.index(e.cause) for e in examples])
        offset = torch.tensor([e.offset_m for e in examples], dtype=torch.float32)
        loss = F.cross_entropy(logits, cause) + F.mse_loss(self.read(pooled, "offset")[:, 0], offset)
        if self.lane is not None:
            ahead = torch.tensor([e.lane_ahead for e in examples], dtype=torch.float32)
            loss = loss + F.mse_loss(self.read(pooled, "lane"), ahead / LANE_SCALE_M)
        if self.distances is not None:
            metres = torch.tensor([e.distances for e in examples], dtype=torch.float32)
            seen = torch.isfinite(metres)  # no stop line or lead within range: no loss
            target = metres.nan_to_num().clamp(max=self.distance_range) / self.distance_scale
            error = self.read(pooled, "distances") - target
            loss = loss + (error ** 2 * seen).sum() / len(examples)
        if self.far is not None:
            bearing = torch.tensor([e.far_bearing for e in examples], dtype=torch.float32)
            target = bearing.clamp(-BEARING_LIMIT_RAD, BEARING_LIMIT_RAD) / BEARING_SCALE_RAD
            loss = loss + F.mse_loss(self.read(pooled, "far"), target)
        if self.brakes is not None:
            lit = torch.tensor([e.brake_lights for e in examples], dtype=torch.float32)
            seen = torch.isfinite(lit)  # no lead within range: no loss
            error = F.binary_cross_entropy_with_logits(self.read(pooled, "brakes")[:, 0], lit.nan_to_num(), reduction="none")
            loss = loss + (error * seen).sum() / len(examples)
        if self.curves is not None:
            speed = torch.tensor([e.curve_speed for e in examples], dtype=torch.float32)
            loss = loss + F.mse_loss(self.read(pooled, "curves")[:, 0], speed / CURVE_SPEED_SCALE_MPS)
        return loss, float((logits.argmax(1) == cause).float().mean())


def latest_frames_embeds(model, examples: list[StoredExample]) -> torch.Tensor:
    """The image tokens of each camera's latest frame, example-major (the vision tower encodes frame by frame)."""
    images = [image for e in examples for image in e.latest_images()]
    return torch.cat([encoded.embeds for encoded in model.encode_images(images)])


def build_examples(drives_per_scenario: int, t0_stride: int, seed_offset: int = 0, offset_share: float = 0.0,
                   max_offset_m: float = 0.0, late_share: float = 0.0,
                   max_drift: tuple[float, float] = (0.0, 0.0),
                   light_futures: str = "true", late_ramp: float = 0.0,
                   early_share: float = 0.0, dense_stops: int = 0, dense_curves: int = 0,
                   dense_late: float = 0.0, rolling_stops: int = 0, limits: world.ExpertLimits = world.LIMITS,
                   workers: int = 1) -> list[StoredExample]:
    """Every scenario's first `drives_per_scenario` training seeds (after `seed_offset`), t0 every
    `t0_stride` grid steps with a per-drive phase so that the drives together cover the whole grid.

    A share `offset_share` of the examples (drawn per drive from its seed) starts off the lane centre by
    U(-max_offset_m, max_offset_m) and recovers (`world.World.model_sample`): what a driver sees after its own
    errors, which the expert's drive alone never shows; with `max_drift` (heading rad, curvature 1/m) they
    also drifted there over their history by U(-max, max) of each (their own stream): a history that no
    longer agrees with the road, as after following a wrongly bent plan. A share `late_share` of the others (drawn from
    another stream: without them the examples are those of before) has an ego that drove faster than the
    expert (by U(LATE_MPS)) for U(LATE_S) seconds and must now brake harder than the expert ever does
    (`world.World.late`): what a driver that reacts late to the light or the lead sees, in closed loop. With
    `late_ramp` their history's acceleration also differs from the expert's, by U(-late_ramp, late_ramp) m/s^2
    (a fourth stream): a car that braked otherwise than the expert, whose history no longer tells the light.

    `light_futures` is what a t0 whose 6.4 s future spans a change of the light's colour learns. No camera
    shows that moment coming, so its true future cannot be learnt from the inputs, only averaged: with
    "true" (the world's future), a third of the examples braking for red and half of those standing at it run
    over the line within 6.4 s (training seeds 0-11). "drop" leaves those t0s out; "as-seen" gives them the
    future of the light keeping the colour the cameras show (`world.World.as_seen`): the stop at red the
    expert would make, and on a car the next tick sees the change.

    With `dense_stops` K, each drive also gives every K-th grid step where its expert brakes for or stands at a
    light or a lead below DENSE_STOP_MPS (`stop_t0s`) that the stride left out, centred: the last metres before a
    stop line or a lead, which the stride samples once every 0.4 s of a few seconds per drive. With `dense_curves`
    K, likewise every K-th grid step whose future enters or leaves a curve (`curve_t0s`): where the plan must bend
    and the history does not yet (or no longer) say so. A share `dense_late` of the dense stops (their own stream)
    has a late ego instead, drawn as the stride's late ones are (`world.World.late` keeps it able to stop before a
    red line or the lead): a car that reaches the last metres still moving, which the expert's drive never shows.
    With `rolling_stops` K, each drive also gives every K-th grid step where its expert stands held by a light or a
    lead (`stop_t0s` below STANDING_MPS), with an ego that still rolls there at U(ROLLING_MPS), up to
    ROLLING_BACK_M behind the expert (its own stream; with `late_ramp` the history's acceleration differs too): a
    car that has slowed to walking pace before the line or the lead, labelled as the expert that must stop it
    there. The expert's own drive passes such speeds in a fraction of a second, and its standstill examples all
    hold a speed of zero; a plan that holds a walking pace instead rolls over the line.

    The expert drives with `limits` (the world's own by default; `--stop-margin`, `--standstill-gap` and `--time-gap`
    give it wider margins than the world's, which the closed loop scores against).

    `workers` processes render the drives (each drive draws from its own streams: the examples are the same
    for any number)."""
    drives = [(name, TRAIN_SEEDS[seed_offset + i]) for i in range(drives_per_scenario) for name in world.SCENARIOS]
    render = functools.partial(_render_drive, t0_stride=t0_stride, offset_share=offset_share,
                               max_offset_m=max_offset_m, late_share=late_share, max_drift=max_drift,
                               light_futures=light_futures, late_ramp=late_ramp, early_share=early_share,
                               dense_stops=dense_stops, dense_curves=dense_curves, dense_late=dense_late,
                               rolling_stops=rolling_stops, limits=limits)
    return _rendered(render, [(k, name, seed) for k, (name, seed) in enumerate(drives)], workers)


def visited_examples(states: list[VisitedState], light_futures: str = "true", limits: world.ExpertLimits = world.LIMITS,
                     workers: int = 1) -> list[StoredExample]:
    """One example per state a driver visited in closed loop (`visited`): the world's `late` ego (ahead, faster)
    moved off the centre with its heading and curvature error (`model_sample`'s offset and drift): the cameras at
    the car's pose, and as the future the expert's recovery from there. `light_futures` as in `build_examples`."""
    drives = sorted({(s.scenario, s.seed) for s in states})
    jobs = [(name, seed, [s for s in states if (s.scenario, s.seed) == (name, seed)]) for name, seed in drives]
    return _rendered(functools.partial(_render_visited, light_futures=light_futures, limits=limits), jobs, workers)


def _rendered(render, jobs: list, workers: int) -> list[StoredExample]:
    """`render(job)` (a list of examples) for every job, in order, in `workers` processes."""
    progress = dict(desc="render drives", unit="drive", total=len(jobs), file=sys.stderr)
    if workers <= 1:
        per_drive = list(tqdm(map(render, jobs), **progress))
    else:  # spawned: a forked child would inherit torch's thread pools
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=torch.set_num_threads, initargs=(1,)) as pool:
            per_drive = list(tqdm(pool.map(render, jobs), **progress))
    return [example for examples in per_drive for example in examples]


def _render_visited(job: tuple[str, int, list[VisitedState]], *, light_futures: str,
                    limits: world.ExpertLimits) -> list[StoredExample]:
    """`visited_examples` for one drive (name, seed) and its states."""
    name, seed, states = job
    drive = world.generate(name, seed, limits)
    examples: list[StoredExample] = []
    for s in states:
        if _dropped(drive, s.t0_s, light_futures):
            continue
        examples.extend(drive_examples(_light_world(drive, s.t0_s, light_futures), [s.t0_s], offsets=[s.offset_m],
                                       lates=[(s.ahead_m, s.fast_mps)],
                                       drifts=[(s.heading_error_rad, s.curvature_error)]))
    return examples


def scene_examples(examples: list[StoredExample], drives: int, scene_drives: int, scene_t0_stride: int,
                   **options) -> list[StoredExample]:
    """Stage 0's examples: the joint stage's `examples` (the first `drives` training seeds per scenario) and, with
    `scene_drives`, that many more drives per scenario (the training seeds after those), t0 every
    `scene_t0_stride` steps, rendered alike (`options`: `build_examples`'). The release's vision tower arrives
    having seen far more of the world than its driving data shows; this one sees more drives, not only more
    steps on the same 84."""
    if not scene_drives:
        return examples
    return examples + build_examples(scene_drives, scene_t0_stride, seed_offset=drives, **options)


def _render_drive(job: tuple[int, str, int], *, t0_stride: int, offset_share: float, max_offset_m: float,
                  late_share: float, max_drift: tuple[float, float], light_futures: str, late_ramp: float,
                  early_share: float, dense_stops: int = 0, dense_curves: int = 0,
                  dense_late: float = 0.0, rolling_stops: int = 0,
                  limits: world.ExpertLimits = world.LIMITS) -> list[StoredExample]:
    """`build_examples` for drive number k (name, seed): its t0s and each one's offset, drift and lateness, from
    the drive's own streams."""
    k, name, seed = job
    examples: list[StoredExample] = []
    drive = world.generate(name, seed, limits)
    t0s = t0_grid(drive, t0_stride, phase=k % t0_stride)
    t0s = [t0 for t0 in t0s if not _dropped(drive, t0, light_futures)]
    rng = np.random.default_rng([world.SCENARIOS.index(name), seed, 1])
    offsets = np.where(rng.random(len(t0s)) < offset_share, rng.uniform(-max_offset_m, max_offset_m, len(t0s)), 0.0)
    late_rng = np.random.default_rng([world.SCENARIOS.index(name), seed, 2])
    late = (late_rng.random(len(t0s)) < late_share) & (offsets == 0.0)
    fast = np.where(late, late_rng.uniform(*LATE_MPS, len(t0s)), 0.0)
    ahead = fast * late_rng.uniform(*LATE_S, len(t0s))
    drift_rng = np.random.default_rng([world.SCENARIOS.index(name), seed, 3])
    drifts = np.where((offsets != 0.0)[:, None], drift_rng.uniform(-1.0, 1.0, (len(t0s), 2)) * max_drift, 0.0)
    if early_share:
        early_rng = np.random.default_rng([world.SCENARIOS.index(name), seed, 6])
        early = late & (early_rng.random(len(t0s)) < early_share)
        speed = np.interp(t0s, drive.drive.t, drive.drive.v)  # the expert's at t0
        fast = np.where(early, (early_rng.uniform(*EARLY_SPEED, len(t0s)) - 1.0) * speed, fast)
        ahead = np.where(early, early_rng.uniform(*EARLY_AHEAD_M, len(t0s)), ahead)
    lates = list(zip(ahead.tolist(), fast.tolist()))
    if late_ramp:
        ramp_rng = np.random.default_rng([world.SCENARIOS.index(name), seed, 5])
        ramps = np.where(late, ramp_rng.uniform(-late_ramp, late_ramp, len(t0s)), 0.0)
        lates = [(*pair, ramp) for pair, ramp in zip(lates, ramps.tolist())]
    for i, t0 in enumerate(t0s):  # one drive_examples call per t0: each may see another world
        examples.extend(drive_examples(_light_world(drive, t0, light_futures), [t0], offsets=offsets[i:i + 1],
                                       lates=lates[i:i + 1],
                                       drifts=drifts[i:i + 1].tolist()))
    dense_rng = np.random.default_rng([world.SCENARIOS.index(name), seed, 7])
    stops = [(t0, _dense_late(dense_rng, dense_late, late_ramp))
             for t0 in (stop_t0s(drive, dense_stops, phase=k % dense_stops) if dense_stops else [])]
    curves = [(t0, (0.0, 0.0)) for t0 in (curve_t0s(drive, dense_curves, phase=k % dense_curves) if dense_curves else [])]
    roll_rng = np.random.default_rng([world.SCENARIOS.index(name), seed, 8])
    rolls = [(t0, _rolling(roll_rng, late_ramp))
             for t0 in (stop_t0s(drive, rolling_stops, phase=k % rolling_stops, below_mps=STANDING_MPS)
                        if rolling_stops else [])]
    taken = set(t0s)
    chosen = [(t0, late, False) for t0, late in stops + curves] + [(t0, late, True) for t0, late in rolls]
    for t0, late, rolling in chosen:  # a rolling ego is another car than the one the t0 already shows
        if (rolling or t0 not in taken) and not _dropped(drive, t0, light_futures):
            taken.add(t0)
            examples.extend(drive_examples(_light_world(drive, t0, light_futures), [t0], offsets=[0.0],
                                           lates=[late], drifts=[(0.0, 0.0)]))
    return examples


def _dense_late(rng: np.random.Generator, share: float, late_ramp: float) -> tuple[float, ...]:
    """A dense stop's lateness: with probability `share` a late ego drawn as the stride's are (ahead, fast and,
    with `late_ramp`, the ramp), else centred (0, 0). Every call draws four numbers, so the share changes which
    stops are late, not how late."""
    take, fast_u, duration_u, ramp_u = rng.random(4)
    if take >= share:
        return (0.0, 0.0)
    fast = _between(fast_u, LATE_MPS)
    late = (fast * _between(duration_u, LATE_S), fast)
    return (*late, late_ramp * (2.0 * ramp_u - 1.0)) if late_ramp else late


def _rolling(rng: np.random.Generator, late_ramp: float) -> tuple[float, ...]:
    """A rolling stop's ego: (ahead, fast) with the speed U(ROLLING_MPS) and U(ROLLING_BACK_M) behind the expert
    that stands there and, with `late_ramp`, the history's extra acceleration U(-late_ramp, late_ramp). Every call
    draws three numbers."""
    fast_u, back_u, ramp_u = rng.random(3)
    late = (-_between(back_u, ROLLING_BACK_M), _between(fast_u, ROLLING_MPS))
    return (*late, late_ramp * (2.0 * ramp_u - 1.0)) if late_ramp else late


def _between(u: float, bounds: tuple[float, float]) -> float:
    """A uniform draw `u` in [0, 1) mapped onto [low, high)."""
    return bounds[0] + u * (bounds[1] - bounds[0])


def stop_t0s(drive, stride: int, phase: int = 0, below_mps: float = DENSE_STOP_MPS) -> list[float]:
    """Every `stride`-th grid t0 (`t0_grid`) where the drive's expert brakes for or stands at a light or a lead
    below `below_mps` (DENSE_STOP_MPS; STANDING_MPS: where it stands): the constraint that binds it
    (`world.Drive.binding`) is one of those."""
    d = drive.drive
    step = {t0: min(int(round(t0 / world.SIM_DT_S)), len(d.t) - 1) for t0 in t0_grid(drive, stride, phase)}
    return [t0 for t0, k in step.items() if d.binding[k] in ("light", "lead") and d.v[k] < below_mps]


def curve_t0s(drive, stride: int, phase: int = 0) -> list[float]:
    """Every `stride`-th grid t0 (`t0_grid`) whose future enters or leaves a curve: somewhere along the expert's
    next 6.4 s the road's curvature differs from the curvature under the car by more than CURVE_CHANGE_PER_M."""
    d, road = drive.drive, drive.road
    chosen = []
    for t0 in t0_grid(drive, stride, phase):
        s0, s1 = np.interp([t0, t0 + world.FUTURE_S], d.t, d.s)
        ahead = road.kappa[(road.s >= s0) & (road.s <= s1)]
        if ahead.size and float(np.abs(ahead - np.interp(s0, road.s, road.kappa)).max()) > CURVE_CHANGE_PER_M:
            chosen.append(t0)
    return chosen


def _dropped(drive, t0_s: float, light_futures: str) -> bool:
    """With "drop", a t0 whose 6.4 s future spans a change of the light is left out (`build_examples`)."""
    return light_futures == "drop" and drive.light_changes_within(t0_s, world.FUTURE_S)


def _light_world(drive, t0_s: float, light_futures: str):
    """The world a t0 learns from: with "as-seen", where its 6.4 s future spans a change of the light, the world
    whose light keeps the colour the cameras show at t0 (`world.World.as_seen`); otherwise the drive itself."""
    if light_futures == "as-seen" and drive.light_changes_within(t0_s, world.FUTURE_S):
        return drive.as_seen(t0_s)
    return drive


def ordinal_rows(bins: int, width: int, std: float, generator: torch.Generator) -> torch.Tensor:
    """(bins, width) embedding rows that vary smoothly with the bin they stand for: a fixed random mix of the
    sine and cosine of the bin's place in its range at geometric frequencies, from a quarter cycle over the
    range (nearly monotonic) to one cycle per 16 bins (neighbours still apart). Scaled to `std` per element."""
    place = torch.linspace(0.0, 1.0, bins, dtype=torch.float64)[:, None]
    cycles = torch.logspace(math.log10(0.25), math.log10(bins / 16), ORDINAL_FEATURES // 2, dtype=torch.float64)
    angle = 2 * math.pi * place * cycles
    features = torch.cat([torch.sin(angle), torch.cos(angle)], dim=1)
    rows = features @ torch.randn(ORDINAL_FEATURES, width, generator=generator, dtype=torch.float64)
    return (rows * (std / rows.std())).float()


def ordinal_tokens(model, seed: int) -> None:
    """Give the trajectory bins' token rows an order (`--ordinal-tokens`): the input embeddings of the future
    and history bins and the output rows of the future bins start as `ordinal_rows` instead of independent
    noise. A bin token then starts near its neighbours, so what the model learns for a speed or a curvature
    carries over to the bins beside it, where each row otherwise learns alone from the examples that hit it
    (the history's x bins are 8 mm of travel per 0.1 s apart). Only initial weights change; the rest of the
    model's draw is the same, from its own generator."""
    ids, cfg = model.token_ids, model.config
    generator = torch.Generator().manual_seed(seed)
    embed, head = model.vlm.get_input_embeddings().weight, model.vlm.get_output_embeddings().weight
    blocks = ((ids.traj_token_start_idx, cfg.traj_tokenizer_cfg.num_bins, (embed, head)),  # history: never an output
              (ids.hist_token_start_idx, cfg.hist_traj_tokenizer_cfg.num_bins, (embed,)))
    with torch.no_grad():
        for start, bins, weights in blocks:
            for weight in weights:
                rows = weight[start:start + bins]
                rows.copy_(ordinal_rows(bins, weight.shape[1], float(rows.std()), generator))


def integral_loss(error: torch.Tensor, weights: tuple[float, float] = (1.0, 1.0)) -> torch.Tensor:
    """Flow matching's velocity error (B, W, 2) summed along the horizon: the mean over every prefix k and both
    channels (acceleration, curvature) of (sum of the first k errors / sqrt(W))^2, each channel times its weight.

    A plan's speed is its accelerations summed, its heading its curvatures summed, so an error that keeps its
    sign along the horizon (a plan that brakes a little less at every step, the noise's slow part passed on)
    moves where the plan ends far more than its mean square says: plain flow matching weighs a constant error c
    as c^2, this term as about W c^2 / 3 (21 c^2 at W = 64), and white errors about as flow matching does (half).
    Any weighted square of the error has flow matching's minimiser (the velocity's conditional mean), so the
    term changes which errors a finite fit leaves, not what it fits."""
    scale = error.new_tensor(weights) / error.shape[1]
    return (error.cumsum(1).square() * scale).mean()


def learning_rate(step: int, steps: int, peak: float, warmup: int, minimum: float) -> float:
    """The recipe's `cosine_warmup_with_min_lr`: linear warmup (step + 1) / warmup, then a half cosine to `minimum`."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return minimum + (peak - minimum) * 0.5 * (1.0 + math.cos(math.pi * progress))


def recipe_optimiser(parameters: list[torch.nn.Parameter], lr: float) -> torch.optim.AdamW:
    """The recipe's optimiser: AdamW, beta (0.9, 0.999), eps 1e-8, no weight decay (clip 1.0 in `optimiser_step`).
    From scratch, one learning rate for every part (the recipe fine-tunes, and slows the vision tower 10x)."""
    return torch.optim.AdamW(parameters, lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)


def optimiser_step(optimiser: torch.optim.Optimizer, loss: torch.Tensor, parameters: list[torch.nn.Parameter]) -> None:
    """One update: gradients of `loss`, their norm clipped to 1.0 over `parameters`, a step."""
    optimiser.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(parameters, 1.0)
    optimiser.step()


def train(out: Path, steps: int, batch_size: int, drives: int, t0_stride: int, lr: float, warmup: int,
          min_lr: float, seed: int, threads: int, flow_draws: int, expert_trains_vlm: bool,
          save_every: int = 0, offset_share: float = 0.0, max_offset_m: float = 0.0, scene_steps: int = 0,
          scene_weight: float = 0.0, own_statistics: bool = False, late_share: float = 0.0,
          max_drift: tuple[float, float] = (0.0, 0.0), scene_lane: bool = False, mirror_share: float = 0.0,
          scene_pooling: str = "attention", scene_distances: bool = False, expert_width: int = 96,
          rare_weight: float = 0.0, expert_steps: int = 0, expert_batch_size: int = 16, expert_draws: int = 4,
          expert_lr: float = 5e-4, frozen_vision: bool = False, light_futures: str = "true",
          late_ramp: float = 0.0, early_share: float = 0.0, ordinal: bool = False, scene_far: bool = False,
          scene_brakes: bool = False, scene_curves: bool = False, curvature_spread: float = 1.0,
          accel_spread: float = 1.0, scene_drives: int = 0,
          scene_t0_stride: int = 12, visited: tuple[Path, ...] = (), vision_width: int = 96, action_max_freq: float = 0.1,
          text_layers: int = 3,
          dense_stops: int = 0, dense_curves: int = 0, dense_late: float = 0.0, rolling_stops: int = 0,
          limits: world.ExpertLimits = world.LIMITS, timestep_sampler: str = "beta",
          scene_distance_range: float = DISTANCE_RANGE_M, scene_distance_scale: float = DISTANCE_SCALE_M,
          integral_weights: tuple[float, float] = (0.0, 0.0)) -> dict:
    torch.set_num_threads(threads)
    started = time.perf_counter()
    rendering = dict(offset_share=offset_share, max_offset_m=max_offset_m, late_share=late_share, max_drift=max_drift,
                     light_futures=light_futures, late_ramp=late_ramp, early_share=early_share, limits=limits,
                     workers=threads)
    examples = build_examples(drives, t0_stride, dense_stops=dense_stops, dense_curves=dense_curves,
                              dense_late=dense_late, rolling_stops=rolling_stops, **rendering)
    logger.info("%d examples from %d drives in %.0f s", len(examples), drives * len(world.SCENARIOS),
                time.perf_counter() - started)
    expert_examples = len(examples)  # the action statistics are the expert's drives' (and their perturbations')
    if visited:
        states = [state for path in visited for state in read_states(path)]
        examples = examples + visited_examples(states, light_futures, limits, threads)
        logger.info("%d examples from the states in %s (%.0f s in)", len(examples) - expert_examples,
                    ", ".join(map(str, visited)), time.perf_counter() - started)
    seen = scene_examples(examples, drives, scene_drives, scene_t0_stride, **rendering)
    render_s = time.perf_counter() - started
    if scene_drives:
        logger.info("stage 0 also sees %d examples from %d more drives (%.0f s in)", len(seen) - len(examples),
                    scene_drives * len(world.SCENARIOS), render_s)

    config, vlm_config = driver_config(expert_width, vision_width, action_max_freq, text_layers)
    statistics = action_statistics(examples[:expert_examples], config.action_space_cfg, curvature_spread,
                                   accel_spread) if own_statistics else {}
    config = dataclasses.replace(config, action_space_cfg=dataclasses.replace(config.action_space_cfg, **statistics))
    logger.info("action statistics: %s", statistics or "the release's")
    torch.manual_seed(seed)
    model = random_model(config, vlm_config, seed=seed).train()
    if ordinal:
        ordinal_tokens(model, seed)
    probe = SceneProbe(model.vlm.config.text_config.hidden_size, lane=scene_lane, pooling=scene_pooling,
                       distances=scene_distances, far=scene_far, brakes=scene_brakes, curves=scene_curves,
                       distance_range=scene_distance_range, distance_scale=scene_distance_scale)
    order = np.random.default_rng(seed)
    mirrors = np.random.default_rng([seed, 4])  # its own stream: without mirroring the batches are those of before
    # Drawn in proportion to rarity ** rare_weight; 0: uniformly (p=None, the same batches as before).
    chance = None
    if rare_weight:
        rarity = action_rarity(examples, config.action_space_cfg)
        chance = rarity ** rare_weight / np.sum(rarity ** rare_weight)
        logger.info("rarity-weighted draws: examples with an action >= 3 standard deviations out are %.0f %% of the "
                    "data and %.0f %% of the draws", 100 * np.mean(rarity >= 3), 100 * chance[rarity >= 3].sum())

    if frozen_vision and mirror_share:
        raise ValueError("frozen vision encodes each example's images once; mirroring draws new images")

    def pick(size: int) -> np.ndarray:
        return order.choice(len(examples), size=size, replace=False, p=chance)

    def draw(size: int) -> list[StoredExample]:
        chosen = [examples[i] for i in pick(size)]
        if not mirror_share:
            return chosen
        return [e.mirror() if flip else e for e, flip in zip(chosen, mirrors.random(size) < mirror_share)]

    def scene_draw(size: int) -> list[StoredExample]:  # without more drives, `draw`: the batches of before
        return [seen[i] for i in order.choice(len(seen), size=size, replace=False)] if scene_drives else draw(size)

    log: list[dict] = []
    train_started, cpu_started = time.perf_counter(), time.process_time()
    if scene_steps:
        log.extend(pretrain_vision(model, probe, scene_draw, scene_steps, lr, started, anneal=frozen_vision))
    encodings: list[EncodedInputs] | None = None
    if frozen_vision:  # the recipe's stage 1 gives the tower a tenth of the learning rate; here none
        model.vlm.model.visual.requires_grad_(False)
        encodings = frozen_encodings(model, examples)
        scene_weight = 0.0  # the probe would read fixed tokens: nothing left for it to teach
        logger.info("vision tower frozen: %d examples encoded once (%.0f s in)", len(examples),
                    time.perf_counter() - started)
    parameters = [p for p in model.parameters() if p.requires_grad]
    scene = [*probe.parameters()] if scene_weight else []
    optimiser = recipe_optimiser(parameters + scene, lr)
    sums = np.zeros(6)
    bar = tqdm(range(steps), desc="train", unit="step", file=sys.stderr)
    for step in bar:
        for group in optimiser.param_groups:
            group["lr"] = learning_rate(step, steps, lr, warmup, min_lr)
        if encodings is None:
            chosen = draw(batch_size)
            with linear_patch_embedding(model):
                batch = make_batch(model, [example.training_example() for example in chosen])
        else:
            picked = pick(batch_size)
            chosen = [examples[i] for i in picked]
            batch = make_batch(model, [e.training_example(images=False) for e in chosen],
                               encoded=[encodings[i] for i in picked])
        with linear_patch_embedding(model):
            losses = training_losses(model, batch, causal_expert=False, stop_grad_from_vlm=not expert_trains_vlm,
                                     flow_draws=flow_draws, timestep_sampler=timestep_sampler)
            scene_loss, accuracy = probe.loss(batch.image_embeds, chosen) if scene_weight else (torch.zeros(()), 0.0)
        loss = losses.vlm + losses.flow + scene_weight * scene_loss
        if any(integral_weights):
            loss = loss + integral_loss(losses.flow_error, integral_weights)
        optimiser_step(optimiser, loss, parameters + scene)
        integral = integral_loss(losses.flow_error.detach())  # logged unweighted, as flow matching is
        values = np.array([losses.vlm_future.item(), losses.vlm_others.item(), losses.flow.item(),
                           scene_loss.item(), accuracy, integral.item()])
        sums += values
        bar.set_postfix(ce_future=f"{values[0]:.3f}", ce_coc=f"{values[1]:.3f}", flow=f"{values[2]:.3f}",
                        scene=f"{values[3]:.3f}")
        if save_every and (step + 1) % save_every == 0 and step + 1 < steps:  # a run cut short leaves a model
            save_pretrained(model.eval(), out)
            model.train()
        if (step + 1) % LOG_EVERY == 0:
            mean = sums / LOG_EVERY
            log.append({"step": step + 1, "ce_future": mean[0], "ce_coc": mean[1], "flow": mean[2],
                        "scene": mean[3], "scene_accuracy": mean[4], "flow_integral": mean[5],
                        "lr": optimiser.param_groups[0]["lr"], "elapsed_s": time.perf_counter() - started})
            sums[:] = 0.0
    if expert_steps:
        model.eval()
        prefixes = frozen_prefixes(model, examples, encodings=encodings)
        log.extend(train_expert(model, prefixes, expert_steps, expert_batch_size, expert_draws, expert_lr, seed, started,
                                timestep_sampler, integral_weights))
    train_s, train_cpu_s = time.perf_counter() - train_started, time.process_time() - cpu_started
    model.eval()
    save_pretrained(model, out)
    record = {"command": " ".join(["python -m alpamayo_ros.tools.train_driver", *sys.argv[1:]]),
              "steps": steps, "batch_size": batch_size, "drives_per_scenario": drives, "t0_stride": t0_stride,
              "examples": len(examples), "lr": lr, "warmup": warmup, "min_lr": min_lr, "seed": seed,
              "flow_draws": flow_draws, "expert_trains_vlm": expert_trains_vlm, "offset_share": offset_share,
              "max_offset_m": max_offset_m, "late_share": late_share, "max_drift": list(max_drift),
              "scene_steps": scene_steps, "scene_weight": scene_weight, "scene_lane": scene_lane,
              "scene_distances": scene_distances, "scene_distance_range": scene_distance_range,
              "scene_distance_scale": scene_distance_scale,
              "expert_width": expert_width, "vision_width": vision_width,
              "text_layers": text_layers,
              "action_max_freq": action_max_freq,
              "mirror_share": mirror_share, "scene_pooling": scene_pooling, "rare_weight": rare_weight,
              "expert_steps": expert_steps, "expert_batch_size": expert_batch_size, "expert_draws": expert_draws,
              "expert_lr": expert_lr, "frozen_vision": frozen_vision, "light_futures": light_futures,
              "late_ramp": late_ramp, "early_share": early_share, "ordinal_tokens": ordinal,
              "scene_far_lane": scene_far, "scene_brake_lights": scene_brakes, "scene_curve_speed": scene_curves,
              "curvature_spread": curvature_spread, "accel_spread": accel_spread, "scene_drives": scene_drives,
              "scene_t0_stride": scene_t0_stride,
              "scene_examples": len(seen) - len(examples), "dense_stops": dense_stops,
              "dense_curves": dense_curves, "dense_late": dense_late, "rolling_stops": rolling_stops,
              "expert_limits": dataclasses.asdict(limits), "timestep_sampler": timestep_sampler,
              "integral_weights": list(integral_weights),
              "visited": [{"file": str(path), "command": json.loads(Path(path).read_text())["command"]}
                          for path in visited],
              "visited_examples": len(examples) - expert_examples,
              "action_statistics": statistics,
              "threads": threads, "render_s": render_s, "train_s": train_s, "train_cpu_s": train_cpu_s,
              "parameters": sum(p.numel() for p in model.parameters()),
              "machine": f"{platform.machine()} {platform.processor()}", "torch": torch.__version__, "log": log}
    (out / "training_log.json").write_text(json.dumps(record, indent=1))
    return record


def frozen_encodings(model, examples: list[StoredExample]) -> list[EncodedInputs]:
    """Each example's prompt and image tokens (`encode_inputs`) from one pass of the vision tower, which the
    joint stage then leaves as it is (`--frozen-vision`): its steps skip the tower's pass forward and back."""
    with torch.no_grad(), linear_patch_embedding(model):
        return [model.encode_inputs(e.images(), e.ego_history_xyz)
                for e in tqdm(examples, desc="encode", unit="example", file=sys.stderr)]


def pretrain_vision(model, probe: SceneProbe, draw, steps: int, lr: float, started: float,
                    batch_size: int = 16, anneal: bool = False) -> list[dict]:
    """Stage 0: the vision tower and the probe alone, on each camera's latest frame (its log entries: step < 0).
    The rate warms up, then stays; with `anneal` (a tower trained no further after this) it decays as a cosine
    to lr / 100."""
    parameters = [*model.vlm.model.visual.parameters(), *probe.parameters()]
    optimiser = recipe_optimiser(parameters, lr)
    log, sums = [], np.zeros(2)
    bar = tqdm(range(steps), desc="see", unit="step", file=sys.stderr)
    for step in bar:
        for group in optimiser.param_groups:
            group["lr"] = (learning_rate(step, steps, lr, SCENE_WARMUP_STEPS, lr / 100) if anneal
                           else lr * min(1.0, (step + 1) / SCENE_WARMUP_STEPS))
        chosen = draw(batch_size)
        with linear_patch_embedding(model):
            loss, accuracy = probe.loss(latest_frames_embeds(model, chosen), chosen)
        optimiser_step(optimiser, loss, parameters)
        sums += (loss.item(), accuracy)
        bar.set_postfix(scene=f"{loss.item():.3f}", accuracy=f"{accuracy:.2f}")
        if (step + 1) % LOG_EVERY == 0:
            log.append({"step": step + 1 - steps, "scene": sums[0] / LOG_EVERY, "scene_accuracy": sums[1] / LOG_EVERY,
                        "elapsed_s": time.perf_counter() - started})
            sums[:] = 0.0
    return log


@dataclasses.dataclass(frozen=True)
class Prefix:
    """One example as the expert reads it: the frozen VLM's cache up to <|traj_future_start|>, and the target."""

    keys: tuple[torch.Tensor, ...]  # per layer (kv heads, crop, head dim)
    values: tuple[torch.Tensor, ...]
    rope_delta: torch.Tensor  # (1,)
    action: torch.Tensor  # (64, 2), normalised


def frozen_prefixes(model, examples: list[StoredExample], batch_size: int = 16,
                    encodings: list[EncodedInputs] | None = None) -> list[Prefix]:
    """Each example's prefix cache from one pass of the (now fixed) VLM over its training conversation;
    `encodings` (`frozen_encodings`, with a frozen tower): the images are not decoded and encoded again."""
    prefixes = []
    with torch.no_grad(), linear_patch_embedding(model):
        for first in tqdm(range(0, len(examples), batch_size), desc="cache", unit="batch", file=sys.stderr):
            chunk = examples[first:first + batch_size]
            kept = None if encodings is None else encodings[first:first + batch_size]
            batch = make_batch(model, [e.training_example(images=kept is None) for e in chunk],
                               fuse_future_bins=False, encoded=kept)
            _, cache, rope_delta = model.prefix_forward(batch.input_ids, batch.image_grid_thw, batch.image_embeds,
                                                        batch.deepstack)
            for i, crop in enumerate(batch.crop.tolist()):
                prefixes.append(Prefix(keys=tuple(layer.keys[i, :, :crop].clone() for layer in cache.layers),
                                       values=tuple(layer.values[i, :, :crop].clone() for layer in cache.layers),
                                       rope_delta=rope_delta[i].clone(), action=batch.action[i]))
    return prefixes


def prefix_batch(prefixes: list[Prefix]) -> tuple[DynamicCache, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded cache rows (zeros after each row's prefix, hidden by `build_context`'s `visible`), the crops,
    rope deltas (R, 1) and actions (R, 64, 2)."""
    def padded(rows: list[torch.Tensor]) -> torch.Tensor:  # (heads, crop_r, dim) each -> (R, heads, crop, dim)
        return pad_sequence([r.transpose(0, 1) for r in rows], batch_first=True).transpose(1, 2).contiguous()

    cache = DynamicCache()
    for layer in range(len(prefixes[0].keys)):
        cache.update(padded([p.keys[layer] for p in prefixes]), padded([p.values[layer] for p in prefixes]), layer)
    crop = torch.tensor([p.keys[0].shape[1] for p in prefixes])
    return cache, crop, torch.stack([p.rope_delta for p in prefixes]), torch.stack([p.action for p in prefixes])


def expert_parameters(model) -> list[torch.nn.Parameter]:
    """What reads the cache and writes actions: the expert and the action projections in and out."""
    return [*model.expert.parameters(), *model.action_in_proj.parameters(), *model.action_out_proj.parameters()]


def train_expert(model, prefixes: list[Prefix], steps: int, batch_size: int, flow_draws: int, lr: float,
                 seed: int, started: float, timestep_sampler: str = "beta",
                 integral_weights: tuple[float, float] = (0.0, 0.0)) -> list[dict]:
    """Stage 2 on the frozen VLM (the recipe's stop_grad_from_vlm): flow matching on the stored prefixes, the
    expert alone, warmup then cosine to lr / 100. The prefixes were stored without gradients, so none reaches
    the VLM; the optimiser holds only `expert_parameters`."""
    parameters = expert_parameters(model)
    optimiser = recipe_optimiser(parameters, lr)
    order = np.random.default_rng([seed, 5])
    log, total = [], 0.0
    bar = tqdm(range(steps), desc="expert", unit="step", file=sys.stderr)
    for step in bar:
        for group in optimiser.param_groups:
            group["lr"] = learning_rate(step, steps, lr, SCENE_WARMUP_STEPS, lr / 100)
        chosen = [prefixes[i] for i in order.choice(len(prefixes), size=batch_size, replace=False)]
        cache, crop, rope_delta, x = prefix_batch([p for p in chosen for _ in range(flow_draws)])
        t, noise = flow_training_data(x, timestep_sampler)
        loss, pred = flow_matching_loss(model, cache, crop, rope_delta, x, t, noise, causal=False)
        integral = integral_loss(pred - flow_target(x, noise), integral_weights) if any(integral_weights) else 0.0
        optimiser_step(optimiser, loss + integral, parameters)
        total += loss.item()
        bar.set_postfix(flow=f"{loss.item():.3f}")
        if (step + 1) % LOG_EVERY == 0:
            log.append({"expert_step": step + 1, "flow": total / LOG_EVERY, "lr": optimiser.param_groups[0]["lr"],
                        "elapsed_s": time.perf_counter() - started})
            total = 0.0
    return log


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="output checkpoint directory")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--drives", type=int, default=12, help="training drives per scenario")
    parser.add_argument("--t0-stride", type=int, default=4, help="t0 every N x 0.1 s along a drive")
    parser.add_argument("--lr", type=float, default=1.5e-3)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--min-lr", type=float, default=1e-5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2,
                        help="torch CPU threads, and processes rendering the drives (the driver: both of the 2 cores; "
                             "use 1 where another job shares them)")
    parser.add_argument("--flow-draws", type=int, default=8,
                        help="flow-matching (t, noise) draws per sample on its one VLM pass (the recipe: 1)")
    parser.add_argument("--expert-trains-vlm", action=argparse.BooleanOptionalAction, default=True,
                        help="flow matching's gradient reaches the VLM through the cache (the recipe's "
                             "stop_grad_from_vlm=False); --no-expert-trains-vlm detaches it (the recipe's default)")
    parser.add_argument("--offset-share", type=float, default=0.4,
                        help="share of examples that start off the lane centre and recover")
    parser.add_argument("--max-offset", type=float, default=1.5, help="m: their offsets are uniform within +-this")
    parser.add_argument("--max-heading-error", type=float, default=0.05,
                        help="rad: off-centre examples drifted there with a heading error within +-this ...")
    parser.add_argument("--max-curvature-error", type=float, default=0.006,
                        help="1/m: ... and turning by up to this more or less than the road")
    parser.add_argument("--late-share", type=float, default=0.3,
                        help="share of the centred examples whose ego reacted late: faster and further along than "
                             "the expert, braking harder (world.World.late)")
    parser.add_argument("--late-ramp", type=float, default=1.0,
                        help="m/s^2: the late examples' history acceleration differs from the expert's by "
                             "U(-this, this) (world.World.late)")
    parser.add_argument("--early-share", type=float, default=0.0,
                        help="share of the late examples that are early instead: slower than the expert and further "
                             "along, as after braking sooner (build_examples)")
    parser.add_argument("--scene-steps", type=int, default=1200,
                        help="stage 0: steps training the vision tower alone to read the scene (SceneProbe)")
    parser.add_argument("--scene-lane", action=argparse.BooleanOptionalAction, default=True,
                        help="the scene probe also reads where the lane centre is 10-40 m ahead (the road's bend)")
    parser.add_argument("--scene-distances", action=argparse.BooleanOptionalAction, default=True,
                        help="the scene probe also reads how far ahead the stop line and the lead vehicle are "
                             "(world.World.distances_ahead): where to stop")
    parser.add_argument("--scene-distance-range", type=float, default=DISTANCE_RANGE_M,
                        help="m: stop lines and leads farther than this are read as this far, so that the probe's "
                             "squared error weighs the range where the car brakes, not the far road "
                             f"(default {DISTANCE_RANGE_M:g}: every distance recorded)")
    parser.add_argument("--scene-distance-scale", type=float, default=DISTANCE_SCALE_M,
                        help="m: the probe's distances are read in these units, so an error of this many metres "
                             f"costs as much as a wrong lane offset of 1 m (default {DISTANCE_SCALE_M:g}; smaller "
                             "asks the tower for the line's distance more precisely)")
    parser.add_argument("--scene-far-lane", action=argparse.BooleanOptionalAction, default=False,
                        help="the scene probe also reads the lane centre's bearing 60 and 80 m ahead "
                             "(world.World.lane_bearing): a curve before it begins")
    parser.add_argument("--scene-brake-lights", action=argparse.BooleanOptionalAction, default=False,
                        help="the scene probe also reads whether the lead vehicle's brake lights are lit "
                             "(world.World.brake_lights): braking or following, which the cause alone does not say")
    parser.add_argument("--scene-curve-speed", action=argparse.BooleanOptionalAction, default=False,
                        help=f"the scene probe also reads the lowest speed the curves {CURVE_RANGE_M:g} m ahead allow "
                             "(world.World.curve_speed_ahead): how much to slow before a curve")
    parser.add_argument("--scene-drives", type=int, default=0,
                        help="stage 0 also reads this many more drives per scenario (the training seeds after "
                             "--drives'), which the joint stage never sees")
    parser.add_argument("--scene-t0-stride", type=int, default=12, help="their t0 every N x 0.1 s")
    parser.add_argument("--scene-weight", type=float, default=1.0,
                        help="weight of the scene probe's loss beside the release's losses in the joint run")
    parser.add_argument("--own-statistics", action=argparse.BooleanOptionalAction, default=True,
                        help="normalise actions with the training data's statistics (action_statistics) instead of "
                             "the release's")
    parser.add_argument("--curvature-spread", type=float, default=1.0,
                        help="with --own-statistics, the measured curvature spread times this: a 30 m curve, 4 "
                             "standard deviations out with 1, is 4/this")
    parser.add_argument("--accel-spread", type=float, default=1.0,
                        help="with --own-statistics, the measured acceleration spread times this: below 1, a plan's "
                             "mean acceleration error of 0.05 m/s^2 (the 0.3 m/s left at a stop, 1.8 m of creep in "
                             "6 s) is 1/this times more normalised units, 1/this^2 in the flow loss")
    parser.add_argument("--action-max-freq", type=float, default=0.1,
                        help="the action Fourier features' lowest frequency (upstream's max_freq), cycles per "
                             "normalised unit: over +-1/(2 x this) its (sin, cos) pair is one-to-one; with "
                             "--accel-spread 0.5 a 4 m/s^2 brake is 10 units out")
    parser.add_argument("--scene-pooling", choices=SCENE_POOLINGS, default="attention",
                        help="how the scene probe pools the image tokens: one learnt attention query, their mean "
                             "(the cause then has to be readable from every token's share alike), or one learnt "
                             "query per target (per-head)")
    parser.add_argument("--mirror-share", type=float, default=0.0,
                        help="share of the drawn examples mirrored left for right (StoredExample.mirror): each drive "
                             "gets a twin with the same pace and the other turn")
    parser.add_argument("--expert-width", type=int, default=96,
                        help="the action expert's hidden size (loading.driver_config; its MLP twice that)")
    parser.add_argument("--vision-width", type=int, default=96,
                        help="the vision tower's hidden size (loading.driver_config; its MLP twice that, two heads)")
    parser.add_argument("--text-layers", type=int, default=3,
                        help="the language model's layers, and so the expert's: it reads one cache layer per layer "
                             "(loading.driver_config)")
    parser.add_argument("--rare-weight", type=float, default=0.0,
                        help="draw examples in proportion to their rarity to this power (action_rarity: the largest "
                             "|normalised action| of the future, at least 1); 0 draws uniformly")
    parser.add_argument("--expert-steps", type=int, default=0,
                        help="then stage 2 on the frozen VLM (the recipe's stop_grad_from_vlm): the expert alone, on "
                             "each example's stored prefix cache; an expert step costs a quarter of a joint one")
    parser.add_argument("--expert-batch-size", type=int, default=16)
    parser.add_argument("--expert-draws", type=int, default=4, help="flow-matching draws per example in that stage")
    parser.add_argument("--expert-lr", type=float, default=5e-4, help="that stage's peak learning rate")
    parser.add_argument("--frozen-vision", action=argparse.BooleanOptionalAction, default=True,
                        help="after stage 0, freeze the vision tower and encode every example once: the joint "
                             "steps then cost about half as much (the recipe gives the tower 0.1x the rate)")
    parser.add_argument("--light-futures", choices=("true", "as-seen", "drop"), default="as-seen",
                        help="what a t0 whose future spans a change of the light no camera shows yet learns: the "
                             "world's true future, the light kept as seen, or nothing (build_examples)")
    parser.add_argument("--ordinal-tokens", action=argparse.BooleanOptionalAction, default=True,
                        help="the trajectory bins' token rows start smooth in the bin, neighbours near each other "
                             "(ordinal_tokens), instead of independent noise")
    parser.add_argument("--visited", type=Path, action="append", default=[],
                        help="JSON of states a driver visited in closed loop (python -m alpamayo_ros.tools.visited): "
                             "each also an example, labelled with the expert's recovery from there (DAgger; repeat "
                             "the option to add the states of several drivers)")
    parser.add_argument("--dense-stops", type=int, default=0, metavar="K",
                        help="also every K-th 0.1 s step the stride left out where the expert brakes for or stands at "
                             f"a light or a lead below {DENSE_STOP_MPS:g} m/s, centred (0: none)")
    parser.add_argument("--dense-late", type=float, default=0.0, metavar="SHARE",
                        help="share of the --dense-stops examples whose ego is late (as --late-share's): it reaches "
                             "the last metres before the line or the lead still moving (0: all centred)")
    parser.add_argument("--dense-curves", type=int, default=0, metavar="K",
                        help="also every K-th 0.1 s step the stride left out whose 6.4 s future enters or leaves a "
                             "curve, centred (0: none)")
    parser.add_argument("--rolling-stops", type=int, default=0, metavar="K",
                        help="also every K-th 0.1 s step where the expert stands at a light or a lead, with an ego "
                             f"still rolling there at {ROLLING_MPS[0]:g}-{ROLLING_MPS[1]:g} m/s up to "
                             f"{ROLLING_BACK_M[1]:g} m behind it (0: none)")
    parser.add_argument("--stop-margin", type=float, default=world.LIMITS.stop_margin_m, metavar="M",
                        help="the training drives' expert stops its front bumper this far before a red light's line "
                             f"(the world's expert, which the closed loop scores against: {world.LIMITS.stop_margin_m:g})")
    parser.add_argument("--standstill-gap", type=float, default=world.LIMITS.standstill_gap_m, metavar="M",
                        help="the training drives' expert stands this far behind the lead, bumper to bumper (IDM s0; "
                             f"the world's: {world.LIMITS.standstill_gap_m:g})")
    parser.add_argument("--time-gap", type=float, default=world.LIMITS.time_gap_s, metavar="S",
                        help="the training drives' expert follows the lead this many seconds behind (IDM T; the "
                             f"world's: {world.LIMITS.time_gap_s:g})")
    parser.add_argument("--timestep-sampler", choices=TIMESTEP_SAMPLERS, default="beta",
                        help="the flow time's distribution in training, the recipe's train_timestep_sampler: beta "
                             "(its default, t = 0.999 - 0.999 Beta(1.5, 1), weighted to the noisy end) or uniform")
    parser.add_argument("--integral-weight", type=float, default=0.0, metavar="W",
                        help="adds flow matching's velocity error summed along the horizon (`integral_loss`, averaged "
                             "over both channels as flow matching is) to its loss in both stages, the acceleration's "
                             "channel (what moves a plan's speed) weighted W (0: the recipe's loss)")
    parser.add_argument("--curvature-integral-weight", type=float, default=0.0, metavar="W",
                        help="the same term's curvature channel (what moves a plan's heading) weighted W")
    parser.add_argument("--save-every", type=int, default=0, help="also write OUT every N steps (0: only at the end)")
    args = parser.parse_args(argv)
    for name in ("curvature_spread", "accel_spread"):
        if getattr(args, name) <= 0.0 or (getattr(args, name) != 1.0 and not args.own_statistics):
            parser.error(f"--{name.replace('_', '-')} scales the measured statistics: a positive factor, with "
                         "--own-statistics")
    if args.scene_drives < 0 or args.scene_t0_stride < 1:
        parser.error("--scene-drives must be >= 0 and --scene-t0-stride >= 1")
    if args.scene_drives and (not args.scene_steps or args.mirror_share or args.rare_weight):
        parser.error("--scene-drives feeds stage 0 (--scene-steps > 0), whose draws are uniform and unmirrored: "
                     "not with --mirror-share or --rare-weight")
    if args.dense_stops < 0 or args.dense_curves < 0 or args.rolling_stops < 0:
        parser.error("--dense-stops, --dense-curves and --rolling-stops must be >= 0")
    if not 0.0 <= args.dense_late <= 1.0 or (args.dense_late and not args.dense_stops):
        parser.error("--dense-late is a share (0-1) of the --dense-stops examples: with --dense-stops K > 0")
    if min(args.stop_margin, args.standstill_gap, args.time_gap) <= 0.0:
        parser.error("--stop-margin, --standstill-gap and --time-gap must be positive")
    if not 0.0 < args.scene_distance_range <= DISTANCE_RANGE_M or (
            args.scene_distance_range != DISTANCE_RANGE_M and not args.scene_distances):
        parser.error(f"--scene-distance-range must be within (0, {DISTANCE_RANGE_M:g}] m, with --scene-distances")
    if not args.scene_distance_scale > 0.0 or (args.scene_distance_scale != DISTANCE_SCALE_M and not args.scene_distances):
        parser.error("--scene-distance-scale must be positive, with --scene-distances")
    if min(args.integral_weight, args.curvature_integral_weight) < 0.0:
        parser.error("--integral-weight and --curvature-integral-weight must be >= 0")
    if args.text_layers < 2:
        parser.error("--text-layers must be >= 2: the vision tower's deepstack feeds the language model's first two")
    if missing := [str(path) for path in args.visited if not path.is_file()]:
        parser.error(f"--visited: no such file: {', '.join(missing)}")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    record = train(args.out, args.steps, args.batch_size, args.drives, args.t0_stride, args.lr, args.warmup,
                   args.min_lr, args.seed, args.threads, args.flow_draws, args.expert_trains_vlm,
                   save_every=args.save_every, offset_share=args.offset_share, max_offset_m=args.max_offset,
                   scene_steps=args.scene_steps, scene_weight=args.scene_weight, own_statistics=args.own_statistics,
                   late_share=args.late_share, max_drift=(args.max_heading_error, args.max_curvature_error),
                   scene_lane=args.scene_lane, mirror_share=args.mirror_share, scene_pooling=args.scene_pooling,
                   scene_distances=args.scene_distances, expert_width=args.expert_width,
                   scene_distance_range=args.scene_distance_range, scene_distance_scale=args.scene_distance_scale,
                   rare_weight=args.rare_weight, expert_steps=args.expert_steps,
                   expert_batch_size=args.expert_batch_size, expert_draws=args.expert_draws, expert_lr=args.expert_lr,
                   frozen_vision=args.frozen_vision, light_futures=args.light_futures,
                   late_ramp=args.late_ramp, early_share=args.early_share, ordinal=args.ordinal_tokens,
                   scene_far=args.scene_far_lane, scene_brakes=args.scene_brake_lights,
                   scene_curves=args.scene_curve_speed,
                   curvature_spread=args.curvature_spread, accel_spread=args.accel_spread, scene_drives=args.scene_drives,
                   scene_t0_stride=args.scene_t0_stride, visited=tuple(args.visited), vision_width=args.vision_width,
                   text_layers=args.text_layers,
                   action_max_freq=args.action_max_freq,
                   dense_stops=args.dense_stops, dense_curves=args.dense_curves, dense_late=args.dense_late,
                   rolling_stops=args.rolling_stops,
                   limits=dataclasses.replace(world.LIMITS, stop_margin_m=args.stop_margin,
                                              standstill_gap_m=args.standstill_gap, time_gap_s=args.time_gap),
                   timestep_sampler=args.timestep_sampler,
                   integral_weights=(args.integral_weight, args.curvature_integral_weight))
    last = record["log"][-1] if record["log"] else {}
    print(f"wrote {args.out}: {record['examples']} examples rendered in {record['render_s']:.0f} s, "
          f"{record['steps']} steps in {record['train_s']:.0f} s; last losses {last}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Supervised examples for the synthetic-world driver, cut from the synthetic world's expert drives.

An example is the world's `model_sample` at one t0 with its 16 images JPEG round-tripped at the bag's
quality (the node only ever sees decoded JPEG, so training on the same pixels keeps direct and
bag-replayed inputs alike), kept in memory as JPEG bytes and decoded when a batch is built. Training
seeds and held-out seeds are disjoint ranges, fixed here.
"""

from __future__ import annotations

import dataclasses
import io
import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
from PIL import Image as PILImage

from alpamayo_ros.model.training import TrainingExample
from alpamayo_ros.tools import world as world_module

JPEG_QUALITY = 85  # world.write_bag / make_sample_bag encode every camera frame at this quality
TRAIN_SEEDS = range(0, 1000)  # training draws from these
HELD_OUT_SEEDS = range(1000, 2000)  # evaluation, tests, the demo: never used in training
T0_STEP_S = 0.1  # t0 grid along a drive (the camera rate)
LANE_AHEAD_M = (10.0, 20.0, 30.0, 40.0)  # road ahead of the ego where an example records the lane centre
CURVE_RANGE_M = 60.0  # ... and the lowest speed the curves within this much road ahead allow
FAR_LANE_M = (60.0, 80.0)  # ... and, beyond, the lane centre's bearing (where a curve shows before it begins)
DISTANCE_RANGE_M = 100.0  # an example records the stop line and the lead vehicle this far ahead (NaN: none)
MIRRORED_CAMERAS = (2, 1, 0, 3)  # the rig mirrored left for right: cross-left <-> cross-right (yaw +-60 deg, on
# the centre line), front-wide and front-tele stay (world.CAMERA_YAW_DEG)
FLIP_Y = np.diag(np.float32([1.0, -1.0, 1.0]))  # mirrors a position (y -> -y) and, as M R M, a rotation (yaw -> -yaw)
SIDES = re.compile(r"\b(left|right)\b")  # the words a mirrored label swaps


@dataclass(frozen=True, slots=True)
class StoredExample:
    """One example with its images as JPEG bytes (about 50 kB instead of 740 kB at 96 x 160)."""

    jpegs: tuple[bytes, ...]  # 16, camera-major: cam0 f0..f3, cam1 f0..f3, ...
    shape: tuple[int, int]  # (H, W)
    ego_history_xyz: np.ndarray
    ego_history_rot: np.ndarray
    future_xyz: np.ndarray
    future_rot: np.ndarray
    coc: str
    cause: str
    interesting: bool
    scenario: str
    seed: int
    t0_s: float
    offset_m: float = 0.0  # the ego's distance left of the lane centre at t0 (world.model_sample)
    lane_ahead: tuple[float, ...] = ()  # the lane centre's sideways position LANE_AHEAD_M ahead (world.lane_ahead)
    mirrored: bool = False  # left for right (`mirror`): the images are flipped when decoded
    distances: tuple[float, float] = (math.nan, math.nan)  # front bumper to the stop line, to the lead (m; NaN:
    # none within DISTANCE_RANGE_M; world.distances_ahead)
    far_bearing: tuple[float, ...] = ()  # the lane centre's bearing (rad, + left) FAR_LANE_M ahead (world.lane_bearing)
    brake_lights: float = math.nan  # the lead's brake lights at t0: 1.0 lit, 0.0 not; NaN: no lead within range
    curve_speed: float = math.nan  # the lowest speed (m/s) the curves CURVE_RANGE_M ahead allow (world.curve_speed_ahead)

    def images(self) -> np.ndarray:
        """(4, 4, H, W, 3) uint8 RGB, decoded."""
        return self._decoded(range(4))

    def latest_images(self) -> np.ndarray:
        """(4, H, W, 3): `images()[:, -1]`, each camera's latest frame, decoding only those 4 of the 16."""
        return self._decoded([3])[:, 0]

    def _decoded(self, frames) -> np.ndarray:
        """(4, len(frames), H, W, 3): those frames of each camera, decoded, mirrored if the example is."""
        cameras = MIRRORED_CAMERAS if self.mirrored else range(4)
        images = np.stack([[np.asarray(PILImage.open(io.BytesIO(self.jpegs[4 * c + f])).convert("RGB"))
                            for f in frames] for c in cameras])
        return images[:, :, :, ::-1] if self.mirrored else images

    def mirror(self) -> StoredExample:
        """The same moment in a world mirrored left for right: the rig is symmetric, so that is each image flipped
        with the cross cameras swapped, every y and yaw negated, and "left" and "right" swapped in the labels.
        The example's twin with the same speed profile and the other turn: what tells them apart is the images
        and the history's turn, never the drive's pace (a driver that memorised which drive turned which way).
        The world itself is not symmetric: mirrored, the opposite lane and the light's pole change sides, a
        left-hand-traffic road the real drives never show (`--mirror-share` did not help: driver README)."""
        def swap(text: str) -> str:
            return SIDES.sub(lambda m: "right" if m.group(1) == "left" else "left", text)

        return dataclasses.replace(
            self, ego_history_xyz=self.ego_history_xyz @ FLIP_Y, ego_history_rot=FLIP_Y @ self.ego_history_rot @ FLIP_Y,
            future_xyz=self.future_xyz @ FLIP_Y, future_rot=FLIP_Y @ self.future_rot @ FLIP_Y,
            coc=swap(self.coc), cause=swap(self.cause),
            offset_m=-self.offset_m, lane_ahead=tuple(-y for y in self.lane_ahead),
            far_bearing=tuple(-b for b in self.far_bearing), mirrored=not self.mirrored)

    def training_example(self, images: bool = True) -> TrainingExample:
        """`images`: decoded; False for a batch given the images already encoded (`training.make_batch`)."""
        return TrainingExample(images=self.images() if images else None, ego_history_xyz=self.ego_history_xyz,
                               ego_history_rot=self.ego_history_rot, future_xyz=self.future_xyz,
                               future_rot=self.future_rot, coc=self.coc)


def jpeg_bytes(image: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
    buffer = io.BytesIO()
    PILImage.fromarray(image).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def jpeg_round_trip(images: np.ndarray, quality: int = JPEG_QUALITY) -> np.ndarray:
    """(..., H, W, 3) uint8 -> the same images after JPEG encoding and decoding, as a bag replays them."""
    flat = images.reshape(-1, *images.shape[-3:])
    out = [np.asarray(PILImage.open(io.BytesIO(jpeg_bytes(image, quality))).convert("RGB")) for image in flat]
    return np.stack(out).reshape(images.shape)


def t0_grid(world, stride: int = 1, phase: int = 0) -> list[float]:
    """Every `stride`-th t0 on the 0.1 s grid with a full history and future, starting `phase` steps in."""
    first = int(np.ceil(world_module.HISTORY_S / T0_STEP_S - 1e-9))
    last = int(np.floor(world.duration_s / T0_STEP_S + 1e-9))
    return [round(k * T0_STEP_S, 6) for k in range(first + phase, last + 1, stride)]


def drive_examples(world, t0s: Iterable[float], height: int = world_module.DEFAULT_HEIGHT,
                   width: int = world_module.DEFAULT_WIDTH, offsets: Iterable[float] | None = None,
                   lates: Iterable[tuple[float, float]] | None = None,
                   drifts: Iterable[tuple[float, float]] | None = None) -> Iterator[StoredExample]:
    """The world's ground truth at each t0, images JPEG-encoded; one per t0, optionally: off the lane centre by
    `offsets` with `drifts` (heading, curvature errors: `world.World.model_sample`), and an ego (ahead m,
    faster m/s[, history acceleration offset m/s^2]) than the expert by `lates` (`world.World.late`)."""
    t0s = list(t0s)
    offsets = [0.0] * len(t0s) if offsets is None else list(offsets)
    lates = [(0.0, 0.0)] * len(t0s) if lates is None else list(lates)
    drifts = [(0.0, 0.0)] * len(t0s) if drifts is None else [(float(h), float(k)) for h, k in drifts]
    for t0, offset, (ahead, fast, *ramp), drift in zip(t0s, offsets, lates, drifts, strict=True):
        ego = world.late(t0, ahead, fast, *ramp) if any((ahead, fast, *ramp)) else world
        sample = ego.model_sample(t0, height, width, offset_m=float(offset), drift=drift)
        pose = ego.ego_pose(t0, t0, float(offset), drift)
        distances = ego.distances_ahead(pose, t0, DISTANCE_RANGE_M)
        lit = ego.brake_lights(t0)
        flat = sample.images.reshape(-1, height, width, 3)
        yield StoredExample(jpegs=tuple(jpeg_bytes(image) for image in flat), shape=(height, width),
                            ego_history_xyz=sample.ego_history_xyz, ego_history_rot=sample.ego_history_rot,
                            future_xyz=sample.future_xyz, future_rot=sample.future_rot, coc=sample.coc,
                            cause=sample.cause, interesting=bool(sample.interesting), scenario=world.scenario,
                            seed=world.seed, t0_s=t0, offset_m=float(offset),
                            lane_ahead=tuple(ego.lane_ahead(pose, LANE_AHEAD_M).tolist()),
                            distances=distances, far_bearing=tuple(ego.lane_bearing(pose, FAR_LANE_M).tolist()),
                            brake_lights=math.nan if math.isnan(distances[1]) else float(lit),
                            curve_speed=ego.curve_speed_ahead(pose, CURVE_RANGE_M))

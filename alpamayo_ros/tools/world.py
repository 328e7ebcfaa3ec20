"""A seeded synthetic world that needs eyes: a road, a traffic light, a lead vehicle, and an expert driver.

`generate(scenario, seed)` builds one drive: a two-lane road (the ego lane's centreline sampled every
`ROAD_STEP_M`, the opposite lane on its left), an optional stop line with a traffic light (a signal head
beside the line and one across the junction), an optional lead vehicle, and the generator's own EXPERT
driver, who follows the ego lane's centre: a speed profile that meets every curve within a
lateral-acceleration limit, a constant comfortable deceleration that stops it before the line on red, the
Intelligent Driver Model's time gap behind the lead vehicle; the least of these accelerations wins and
names the cause (`ExpertLimits`). The future is not readable from the history alone: the curve ahead, the
light and the lead vehicle's brake lights are only in the images.

`World.render` draws the four cameras of the release's rig (make_sample_bag's mounting) at any vehicle
pose and world time by casting every ground pixel's ray onto the ground plane (cached per image size),
reading its road coordinates (arc length s, lateral offset d) from a grid precomputed around the
centreline, and colouring asphalt, lane markings (box-filtered over the pixel's ground footprint), stop
line and grass; the traffic light and the lead vehicle are projected boxes drawn over it.
`World.model_sample` is the ground truth at t0 exactly as the model sees it; `World.coc_label` its
Chain-of-Causation sentence, one of `COC_LABELS`.

Frames: the world frame is the bag's `odom` (x east, y north, z up), the drive starts at its origin
heading +x. The ego frame at t0 is x forward, y left, z up (as pipeline/sync.py builds the history).

`write_bag` writes the expert drive as make_sample_bag does (cameras 10 Hz as JPEG CompressedImage,
odometry 50 Hz in `odom` with child `base_link`, /tf, /tf_static) and the ground truth as a sidecar
JSON file, `ground_truth.json`, in the bag directory: per 0.1 s the true future (64 poses, ego frame at
t0), the CoC label, its cause and the interesting flag.

    python -m alpamayo_ros.tools.world mixed --seed 7 OUT_DIR [--height 96 --width 160 --storage mcap]
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import io
import json
import math
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
from PIL import Image as PILImage
from PIL import ImageDraw
from scipy.spatial import cKDTree

from alpamayo_ros.pipeline.sync import CAMERA_NAMES
from alpamayo_ros.tools.make_sample_bag import (
    CAMERA_FORWARD_M,
    CAMERA_FOV_DEG,
    CAMERA_HEIGHT_M,
    CAMERA_HZ,
    CAMERA_YAW_DEG,
    HORIZON_ROW_FRACTION,
    LANE_HALF_WIDTH_M,
    NS_PER_S,
    ODOMETRY_HZ,
    START_NS,
    camera_topics_of,
    drive_connections,
    stamped_header,
    yaw_quaternion,
)

SCENARIOS = ("straight", "curve_left", "curve_right", "red_light", "green_light", "lead_brake", "mixed")
DEFAULT_HEIGHT, DEFAULT_WIDTH = 96, 160  # make_sample_bag's default image size (the demo's)

# Time grid of the model's inputs and outputs (release): 16 history poses, 64 future poses, 4 frames, 0.1 s apart.
STEP_S = 0.1
HISTORY_POSES, FUTURE_POSES, FRAMES = 16, 64, 4
HISTORY_S = (HISTORY_POSES - 1) * STEP_S  # 1.5 s: the earliest t0 with a full history
FUTURE_S = FUTURE_POSES * STEP_S  # 6.4 s
HISTORY_OFFSETS_S = STEP_S * (np.arange(HISTORY_POSES) - (HISTORY_POSES - 1))  # -1.5 ... 0 from t0
FUTURE_OFFSETS_S = STEP_S * np.arange(1, FUTURE_POSES + 1)  # 0.1 ... 6.4 from t0
FRAME_OFFSETS_S = STEP_S * (np.arange(FRAMES) - (FRAMES - 1))  # -0.3 ... 0 from t0

# Geometry (metres). base_link is the rear axle; the ego lane's centre is d = 0, the opposite lane on the left.
ROAD_STEP_M = 0.25  # centreline sampling
LANE_WIDTH_M = 2 * LANE_HALF_WIDTH_M
SHOULDER_M = 0.6  # asphalt beyond the edge lines
MARKING_WIDTH_M = 0.2  # wider than real (0.12-0.15 m) so a 160 px camera sees lines at 20-30 m
DASH_M, DASH_PERIOD_M = 3.0, 9.0  # centre line: 3 m painted, 6 m gap
STOP_LINE_WIDTH_M = 0.8  # wider than real (0.3-0.5 m), as the markings
VEHICLE_LENGTH_M, VEHICLE_WIDTH_M, VEHICLE_HEIGHT_M = 4.5, 1.8, 1.5
EGO_FRONT_M = 3.6  # front bumper ahead of base_link
SPEED_LIMITS_MPS = (10.0, 14.0)  # each drive's speed limit is drawn from this range (no camera shows it)
CURVE_SPEED_CAP_MPS = SPEED_LIMITS_MPS[1]  # `curve_speed_ahead` on a straight: the highest limit a drive draws
LIGHT_SIDE_M = -(LANE_HALF_WIDTH_M + SHOULDER_M + 0.8)  # pole on the right of the ego lane
LIGHT_AFTER_LINE_M = 1.0  # pole this far past the stop line
# A second head across the junction, as most signalised junctions have: the near one leaves the front-tele
# camera's view about 20 m before the line, the far one is in it until the car stands at the line.
FAR_LIGHT_AFTER_LINE_M = 25.0
LAMP_M = 1.0  # lamp square side; larger than real (0.3 m) so a 160 px camera shows it from braking distance
LAMP_HEIGHTS_M = (5.0, 3.8)  # red above green, centre heights
ROAD_BEYOND_M = 200.0  # road built past the last expert position, so the last frames see road ahead
VIEW_RANGE_M = 160.0  # beyond this the ground fades into haze; objects farther are not drawn
GRID_M = 0.5  # road-coordinate lookup grid for rendering (s and d are near-linear within a cell)
GRID_REACH_M = 10.0  # the grid covers this far either side of the centreline; beyond is grass

RECOVERY_M = 25.0  # model_sample(offset_m=...): an off-centre ego is back on the lane centre after this much road
SIM_DT_S = 0.01  # expert simulation step
FRAME_CACHE = 8  # expert frames kept for model_sample
STOP_SPEED_MPS = 0.3  # below this, braking for an obstacle brings the car to rest
LATE_LINE_MARGIN_M = 0.2  # World.late: a late ego can still stop this far before a red light's line
BRAKE_LIGHT_DECEL = 0.5  # m/s^2: the lead's brake lights are lit when it decelerates harder (or stands)
LIGHT_LABEL_S = 5.0  # the red light is named the cause from this long before the expert brakes for it
LEAD_MARGIN = 0.5  # m/s^2: the lead vehicle binds (and is named the cause) only when it costs this much
MIXED_RED_AT_M = (45.0, 60.0)  # mixed: the light turns red when the expert's front is this far from the line
SIM_EXTRA_S = FUTURE_S + 0.5  # simulated beyond duration_s so every t0 <= duration_s has its future

# Colours (RGB).
SKY_TOP, SKY_HORIZON = np.array([95, 145, 215.0]), np.array([190, 210, 230.0])
HAZE = np.array([180, 195, 205], dtype=np.float32)
ASPHALT = np.array([88, 88, 94], dtype=np.float32)
GRASS = np.array([72, 128, 52], dtype=np.float32)
MARKING = np.array([235, 235, 225], dtype=np.float32)
LEAD_COLOUR = (40, 70, 200)  # a blue car: nothing else in the world is blue below the horizon
LAMP_ON = {"red": (255, 40, 30), "green": (40, 235, 70)}
LAMP_OFF = {"red": (70, 25, 25), "green": (25, 60, 30)}
INTERESTING_FDE_M = 2.0  # the future "differs from the history": constant speed/yaw rate misses by more at 6.4 s


@dataclass(frozen=True)
class ExpertLimits:
    """The expert's driving style (SI units). IDM (cruise and lead vehicle): Treiber, Hennecke & Helbing 2000."""

    max_lateral_accel: float = 2.0  # m/s^2 in curves (comfortable)
    max_accel: float = 1.5  # IDM a: m/s^2
    comfortable_decel: float = 2.0  # IDM b: m/s^2
    max_decel: float = 6.0  # m/s^2, hard limit of the vehicle
    time_gap_s: float = 1.5  # IDM T
    standstill_gap_m: float = 2.5  # IDM s0, bumper to bumper
    stop_margin_m: float = 1.0  # the front bumper stops this far before the stop line
    light_decel: float = 1.8  # m/s^2: braking for a red light starts when stopping needs this much
    dilemma_decel: float = 3.5  # a red light needing more than this to stop is passed (never happens by design)
    curve_decel: float = 1.5  # m/s^2 braking into a curve
    curve_time_constant_s: float = 0.5  # speed tracking in curves; the curve speed is read this far ahead


LIMITS = ExpertLimits()


@dataclass(frozen=True)
class Pose2D:
    """A vehicle state in the world frame: position m, yaw rad (+ left), speed m/s, yaw rate rad/s, accel m/s^2."""

    x: float
    y: float
    yaw: float
    speed: float = 0.0
    yaw_rate: float = 0.0
    accel: float = 0.0


@dataclass(frozen=True)
class Sample:
    """Ground truth at t0 on the expert drive, exactly as the model sees it (ego frame at t0)."""

    t0_s: float
    images: np.ndarray  # (4 cameras, 4 frames at t0-0.3..t0, H, W, 3) uint8 RGB, model camera order
    ego_history_xyz: np.ndarray  # (16, 3) float32, t0-1.5..t0
    ego_history_rot: np.ndarray  # (16, 3, 3) float32
    future_xyz: np.ndarray  # (64, 3) float32, t0+0.1..t0+6.4
    future_rot: np.ndarray  # (64, 3, 3) float32
    coc: str  # one of COC_LABELS
    cause: str  # the key phrase `coc` contains
    interesting: bool  # the future differs from a constant speed / yaw rate extrapolation of the history


# The closed set of Chain-of-Causation sentences (release style: a decision and its cause) and their causes.
COC_LABELS: dict[str, str] = {
    "Keep lane and maintain speed because the road ahead is clear.": "road ahead is clear",
    "Accelerate to cruising speed because the road ahead is clear.": "road ahead is clear",
    "Slow down for the left curve ahead.": "left curve",
    "Slow down for the right curve ahead.": "right curve",
    "Keep lane and follow the left curve of the road.": "left curve",
    "Keep lane and follow the right curve of the road.": "right curve",
    "Decelerate to a stop because the traffic light ahead is red.": "red",
    "Stay stopped because the traffic light is red.": "red",
    "Accelerate because the traffic light turned green.": "green",
    "Keep speed and pass the stop line because the traffic light is green.": "green",
    "Decelerate because the lead vehicle ahead is braking.": "lead vehicle",
    "Stay stopped behind the lead vehicle.": "lead vehicle",
    "Follow the lead vehicle and keep a safe distance.": "lead vehicle",
}


@dataclass(frozen=True)
class LeadPlan:
    """The lead vehicle: start (rear bumper arc length, speed), cruise speed, and one braking event."""

    s0_m: float
    v0_mps: float
    cruise_mps: float
    brake_decel: float  # m/s^2 of its braking
    brake_to_mps: float  # speed it brakes to (0: a stop)
    hold_s: float  # how long it stays at that speed before resuming cruise
    brake_at_s: float | None = None  # world time the braking starts (mixed's Scenario: seconds after green) ...
    brake_at_gap_m: float | None = None  # ... or when the ego, driving, first comes this close (bumper to bumper)
    start_at_s: float = 0.0  # it stands still until then (mixed: when the light has turned green)


@dataclass(frozen=True)
class Scenario:
    """Everything random about a drive, drawn from the seed."""

    name: str
    seed: int
    duration_s: float
    curvature: tuple[tuple[float, float], ...]  # (arc length m, curvature 1/m) knots, linear in between
    speed_limit_mps: float
    ego_v0_mps: float
    stop_line_s: float | None
    light_changes: tuple[tuple[float, str], ...]  # (world time, state) with the state from then on
    lead: LeadPlan | None


def _curve_knots(start_m: float, radius_m: float, angle_rad: float, left: bool,
                 transition_m: float = 12.0) -> list[tuple[float, float]]:
    """Curvature knots of a curve with linear-curvature (clothoid) transitions, starting at `start_m`."""
    k = (1.0 if left else -1.0) / radius_m
    arc = max(angle_rad * radius_m - transition_m, 0.0)  # the transitions turn half their length each
    s1 = start_m + transition_m
    return [(start_m, 0.0), (s1, k), (s1 + arc, k), (s1 + arc + transition_m, 0.0)]


def make_scenario(name: str, seed: int) -> Scenario:
    """Draw a scenario's parameters from `seed`; the ranges are below, one branch per scenario."""
    if name not in SCENARIOS:
        raise ValueError(f"unknown scenario {name!r}; choose one of {SCENARIOS}")
    rng = np.random.default_rng([SCENARIOS.index(name), seed])
    limit = float(rng.uniform(*SPEED_LIMITS_MPS))
    standstill = bool(rng.random() < 0.3)
    v0 = 0.0 if standstill else float(rng.uniform(0.7, 1.0) * limit)
    knots: list[tuple[float, float]] = [(0.0, 0.0)]
    stop_line, changes, lead, duration = None, (), None, 18.0
    if name in ("curve_left", "curve_right"):
        radius = float(rng.choice([30.0, 45.0, 60.0, 90.0, 140.0]))
        angle = math.radians(float(rng.uniform(50.0, 110.0)))
        start = float(rng.uniform(25.0, 60.0)) + (15.0 if standstill else 0.0)
        knots = _curve_knots(start, radius, angle, left=name == "curve_left")
    elif name in ("red_light", "green_light"):
        stop_line = float(rng.uniform(55.0, 110.0))
        if name == "red_light":
            green_at = float(rng.uniform(12.0, 16.0)) if rng.random() < 0.6 else math.inf
            changes = ((0.0, "red"),) + (((green_at, "green"),) if math.isfinite(green_at) else ())
        else:
            # green all along, or red turning green while the expert approaches (it slows, then goes)
            turns_green = ((0.0, "red"), (float(rng.uniform(3.0, 6.0)), "green"))
            changes = ((0.0, "green"),) if rng.random() < 0.5 else turns_green
        if rng.random() < 0.4:  # a gentle curve before the light: the light must be found in the image
            radius = float(rng.uniform(150.0, 300.0))
            knots = _curve_knots(15.0, radius, math.radians(20.0), left=bool(rng.random() < 0.5))
    elif name == "lead_brake":
        cruise = float(rng.uniform(0.55, 0.8) * limit)
        lead = LeadPlan(s0_m=float(rng.uniform(18.0, 30.0)) + EGO_FRONT_M, v0_mps=cruise if v0 > 0 else 0.0,
                        cruise_mps=cruise, brake_decel=float(rng.uniform(2.5, 4.5)),
                        brake_to_mps=0.0 if rng.random() < 0.5 else float(rng.uniform(1.5, 4.0)),
                        hold_s=float(rng.uniform(2.0, 5.0)), brake_at_s=float(rng.uniform(5.0, 9.0)))
    elif name == "mixed":
        duration = 30.0
        v0 = float(rng.uniform(0.8, 1.0) * limit)
        knots = _curve_knots(float(rng.uniform(20.0, 30.0)), float(rng.choice([35.0, 45.0, 60.0])),
                             math.radians(float(rng.uniform(70.0, 100.0))), bool(rng.random() < 0.5))
        stop_line = knots[-1][0] + float(rng.uniform(35.0, 50.0))
        # the lead stands 35-45 m past the line, drives off when the light turns green and brakes to a stop 5-6.5 s
        # later, as the expert catches up (World sets both times once the light's timing is known)
        lead = LeadPlan(s0_m=stop_line + float(rng.uniform(35.0, 45.0)), v0_mps=0.0,
                        cruise_mps=float(rng.uniform(5.5, 7.0)), brake_decel=float(rng.uniform(2.5, 4.0)),
                        brake_to_mps=0.0, hold_s=float(rng.uniform(1.5, 3.0)), brake_at_s=float(rng.uniform(5.0, 6.5)),
                        start_at_s=math.inf)
        changes = ((0.0, "green"),)  # red when the expert is MIXED_RED_AT_M from the line (World), green after a wait
    return Scenario(name=name, seed=seed, duration_s=duration, curvature=tuple(knots), speed_limit_mps=limit,
                    ego_v0_mps=v0, stop_line_s=stop_line, light_changes=changes, lead=lead)


class Road:
    """The ego lane's centreline: dense samples of position, heading, curvature by arc length."""

    def __init__(self, knots: tuple[tuple[float, float], ...], length_m: float) -> None:
        self.s = np.arange(0.0, length_m + ROAD_STEP_M, ROAD_STEP_M)
        ks, kv = zip(*knots)
        self.kappa = np.interp(self.s, ks, kv)
        heading = np.concatenate([[0.0], np.cumsum(0.5 * (self.kappa[1:] + self.kappa[:-1]) * ROAD_STEP_M)])
        mid = heading[:-1] + 0.5 * np.diff(heading)
        self.x = np.concatenate([[0.0], np.cumsum(np.cos(mid) * ROAD_STEP_M)])
        self.y = np.concatenate([[0.0], np.cumsum(np.sin(mid) * ROAD_STEP_M)])
        self.heading = heading
        self.tree = cKDTree(np.stack([self.x, self.y], axis=1))

    def at(self, s: np.ndarray | float, d: np.ndarray | float = 0.0):
        """World (x, y, heading) of road coordinates (s, d), linearly interpolated between samples."""
        heading = np.interp(s, self.s, self.heading)
        x = np.interp(s, self.s, self.x) - np.sin(heading) * d
        y = np.interp(s, self.s, self.y) + np.cos(heading) * d
        return x, y, heading

    def project(self, x: np.ndarray, y: np.ndarray, max_distance_m: float = math.inf):
        """Road coordinates (s, d) of world points; points farther than max_distance_m get NaN."""
        dist, index = self.tree.query(np.stack([x, y], axis=-1), distance_upper_bound=max_distance_m)
        far = ~np.isfinite(dist)
        index = np.where(far, 0, index)
        dx, dy = x - self.x[index], y - self.y[index]
        c, s_ = np.cos(self.heading[index]), np.sin(self.heading[index])
        s = self.s[index] + c * dx + s_ * dy
        d = -s_ * dx + c * dy
        return np.where(far, np.nan, s), np.where(far, np.nan, d)

    @cached_property
    def _grid(self) -> tuple[float, float, np.ndarray, np.ndarray]:
        """(x0, y0, s, d): (ny, nx) float32 road coordinates at GRID_M cell corners, NaN beyond the corridor."""
        x0, y0 = self.x.min() - GRID_REACH_M - 1.0, self.y.min() - GRID_REACH_M - 1.0
        nx = int((self.x.max() + GRID_REACH_M + 1.0 - x0) / GRID_M) + 2
        ny = int((self.y.max() + GRID_REACH_M + 1.0 - y0) / GRID_M) + 2
        near = np.zeros((ny, nx), dtype=bool)
        for d in np.arange(-GRID_REACH_M, GRID_REACH_M + GRID_M / 2, GRID_M / 2):  # mark the corridor's corners
            px, py, _ = self.at(self.s, d)
            ix, iy = ((px - x0) / GRID_M).astype(int), ((py - y0) / GRID_M).astype(int)
            for ox in (0, 1):
                for oy in (0, 1):
                    near[iy + oy, ix + ox] = True
        iy, ix = np.nonzero(near)
        s, d = self.project(x0 + ix * GRID_M, y0 + iy * GRID_M)
        grid_s, grid_d = np.full((ny, nx), np.nan, dtype=np.float32), np.full((ny, nx), np.nan, dtype=np.float32)
        grid_s[iy, ix], grid_d[iy, ix] = s, d
        return x0, y0, grid_s, grid_d

    def lookup(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Road coordinates (s, d) of many world points, bilinear on the precomputed grid (fast, renders);
        NaN for points not within GRID_REACH_M of the centreline."""
        x0, y0, grid_s, grid_d = self._grid
        ny, nx = grid_s.shape
        fx, fy = (x - x0) * (1.0 / GRID_M), (y - y0) * (1.0 / GRID_M)
        inside = (fx >= 0) & (fy >= 0) & (fx < nx - 1) & (fy < ny - 1)
        fx, fy = np.where(inside, fx, 0.0), np.where(inside, fy, 0.0)
        ix, iy = fx.astype(np.int32), fy.astype(np.int32)
        wx, wy = (fx - ix).astype(np.float32), (fy - iy).astype(np.float32)
        corner = iy * nx + ix
        out = []
        for flat in (grid_s.reshape(-1), grid_d.reshape(-1)):
            top = flat[corner] + wx * (flat[corner + 1] - flat[corner])
            bottom = flat[corner + nx] + wx * (flat[corner + nx + 1] - flat[corner + nx])
            value = top + wy * (bottom - top)
            value[~inside] = np.nan
            out.append(value)
        return out[0], out[1]


def _idm(v: float, v_free: float, gap: float, closing: float, lim: ExpertLimits) -> float:
    """IDM acceleration towards free speed `v_free` behind an obstacle `gap` m ahead closing at `closing` m/s."""
    free = 1.0 - (v / max(v_free, 0.1)) ** 4 if v_free > 0.0 else -1.0
    if not math.isfinite(gap):
        return lim.max_accel * free
    dynamic = v * lim.time_gap_s + v * closing / (2 * math.sqrt(lim.max_accel * lim.comfortable_decel))
    desired = lim.standstill_gap_m + max(0.0, dynamic)
    return lim.max_accel * (free - (desired / max(gap, 0.1)) ** 2)


@dataclass(frozen=True)
class Drive:
    """A simulated drive sampled every SIM_DT_S: ego and lead states and which constraint bound the ego."""

    t: np.ndarray
    s: np.ndarray
    v: np.ndarray
    a: np.ndarray
    lead_s: np.ndarray  # NaN without a lead vehicle
    lead_v: np.ndarray
    lead_a: np.ndarray
    binding: np.ndarray  # per step: "cruise", "curve", "light" or "lead"


class World:
    """One generated drive: road, light, lead vehicle and the expert's trajectory. See the module docstring."""

    def __init__(self, scenario: Scenario, limits: ExpertLimits = LIMITS) -> None:
        self.scenario_params = scenario
        self.scenario, self.seed, self.duration_s = scenario.name, scenario.seed, scenario.duration_s
        self.limits = limits
        self.stop_line_s = scenario.stop_line_s
        reach = scenario.speed_limit_mps * (scenario.duration_s + SIM_EXTRA_S) + ROAD_BEYOND_M
        lead = scenario.lead
        lead_reach = lead.s0_m + lead.cruise_mps * (scenario.duration_s + SIM_EXTRA_S) if lead else 0.0
        self.road = Road(scenario.curvature, max(reach, lead_reach) + VEHICLE_LENGTH_M)
        self._changes = scenario.light_changes
        self.lead_plan = scenario.lead  # mixed: its start time is set once the light's timing is known
        self._v_allow = self._curve_speed_profile()
        self._v_allow_list = self._v_allow.tolist()  # read per simulation step: plain floats are faster
        self.drive = self._simulate()
        self.late_m = self.late_mps = self.late_mps2 = 0.0  # the expert's own drive (`late`)
        self._frames: dict[tuple[int, int, int], np.ndarray] = {}  # _expert_frame's cache, oldest first
        self.route_length_m = float(np.interp(self.duration_s, self.drive.t, self.drive.s))

    # --- the world's state -------------------------------------------------------------------------------------
    def light_state(self, t_s: float) -> str | None:
        """"red" / "green" at world time t, or None without a traffic light."""
        if self.stop_line_s is None:
            return None
        state = self._changes[0][1]
        for at, new in self._changes:
            if t_s >= at:
                state = new
        return state

    def as_seen(self, t0_s: float) -> "World":
        """This world with the light keeping, after t0, the colour it shows at t0: the drive the expert makes on
        what the cameras show at t0 (the same up to t0). Where the true future hinges on a change to come
        (`light_changes_within`), that is the future a driver can know."""
        other = copy.copy(self)
        other._frames = {}
        other.drive = other._run(tuple((at, state) for at, state in self._changes if at <= t0_s))
        return other

    def light_changes_within(self, t0_s: float, seconds: float) -> bool:
        """Whether the light changes colour in (t0, t0 + seconds]: a future that hinges on a moment no camera
        shows at t0 (this world's lights give no warning: no amber, no countdown)."""
        return any(t0_s < at <= t0_s + seconds for at, _ in self._changes)

    @property
    def light_changes(self) -> tuple[tuple[float, str], ...]:
        """The light's timing: (world time, state from then on), the first at 0; empty without a light."""
        return self._changes if self.stop_line_s is not None else ()

    def lead_vehicle(self, t_s: float) -> tuple[float, float] | None:
        """(arc length of the lead vehicle's rear bumper along the road, its speed) at t, or None."""
        if self.lead_plan is None:
            return None
        d = self.drive
        return float(np.interp(t_s, d.t, d.lead_s)), float(np.interp(t_s, d.t, d.lead_v))

    def lane_ahead(self, pose: Pose2D, distances_m: np.ndarray) -> np.ndarray:
        """(n,) where the ego lane's centre is, sideways (m, + left, in the frame of `pose`), `distances_m` of
        road ahead of the pose's nearest point on it: the road's shape as the cameras show it."""
        return self._lane_seen_from(pose, distances_m)[1]

    def lane_bearing(self, pose: Pose2D, distances_m: np.ndarray) -> np.ndarray:
        """(n,) the bearing (rad, + left) from `pose` of the same points as `lane_ahead`: where in the image the
        far road is, an angle where `lane_ahead`'s metres grow large through a tight curve."""
        forward, left = self._lane_seen_from(pose, distances_m)
        return np.arctan2(left, forward)

    def curve_speed_ahead(self, pose: Pose2D, range_m: float) -> float:
        """The lowest speed (m/s) at which the road's curves within `range_m` ahead of the pose's nearest point on
        it keep the expert's lateral-acceleration limit, at most CURVE_SPEED_CAP_MPS: what the road the cameras show
        asks of the pace, the drive's speed limit (no camera shows it) aside."""
        s, _ = self.lane_offset(pose.x, pose.y)
        ahead = (self.road.s >= s) & (self.road.s <= s + range_m)
        return float(np.min(self._cornering_speed(self.road.kappa[ahead]), initial=CURVE_SPEED_CAP_MPS))

    def _cornering_speed(self, kappa: np.ndarray) -> np.ndarray:
        """The speed at which curvature `kappa` (1/m) meets the expert's lateral-acceleration limit."""
        return np.sqrt(self.limits.max_lateral_accel / np.maximum(np.abs(kappa), 1e-6))

    def _lane_seen_from(self, pose: Pose2D, distances_m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(forward, left) in the frame of `pose` of the lane centre `distances_m` of road ahead of the pose's
        nearest point on it."""
        s, _ = self.lane_offset(pose.x, pose.y)
        x, y, _ = self.road.at(s + np.asarray(distances_m, dtype=float))
        c, si = math.cos(pose.yaw), math.sin(pose.yaw)
        return c * (x - pose.x) + si * (y - pose.y), -si * (x - pose.x) + c * (y - pose.y)

    def distances_ahead(self, pose: Pose2D, t_s: float, range_m: float) -> tuple[float, float]:
        """(to the stop line, to the lead vehicle's rear bumper): metres of road ahead of the front bumper of a car
        at `pose` at time t, each NaN where there is none ahead within `range_m` (the light's colour aside)."""
        front = self.lane_offset(pose.x, pose.y)[0] + EGO_FRONT_M

        def within(target: float | None) -> float:
            gap = math.nan if target is None else target - front
            return gap if 0.0 <= gap <= range_m else math.nan

        lead = self.lead_vehicle(t_s)
        return within(self.stop_line_s), within(None if lead is None else lead[0])

    def lane_offset(self, x: float, y: float) -> tuple[float, float]:
        """(arc length s, signed lateral offset m, + left) of a world point from the ego lane's centre."""
        s, d = self.road.project(np.array([x]), np.array([y]))
        return float(s[0]), float(d[0])

    # --- the expert --------------------------------------------------------------------------------------------
    def _curve_speed_profile(self) -> np.ndarray:
        """Highest speed per road sample from which every curve ahead is met at its lateral-acceleration limit."""
        lim = self.limits
        cap = np.minimum(self.scenario_params.speed_limit_mps, self._cornering_speed(self.road.kappa))
        allow = cap.copy()
        for i in range(len(allow) - 2, -1, -1):  # backward pass: braking at curve_decel into each curve
            allow[i] = min(allow[i], math.sqrt(allow[i + 1] ** 2 + 2 * lim.curve_decel * ROAD_STEP_M))
        return allow

    def _curve_accel(self, s: float, v: float) -> float:
        """Acceleration that tracks the curve speed profile (read one time constant ahead); inf on straights."""
        tau = self.limits.curve_time_constant_s
        x = min((s + v * tau) / ROAD_STEP_M, len(self._v_allow_list) - 1.001)  # uniform samples: index arithmetic
        i = int(x)
        allow = self._v_allow_list[i] + (x - i) * (self._v_allow_list[i + 1] - self._v_allow_list[i])
        if allow >= self.scenario_params.speed_limit_mps - 0.05:
            return math.inf
        return (allow - v) / tau

    def _light_accel(self, t: float, front: float, v: float, braking: bool,
                     dilemma_decel: float | None = None) -> tuple[float, bool]:
        """(acceleration the red light asks of a vehicle whose front bumper is at `front`, whether it brakes for it).

        It brakes at the constant deceleration that stops it `stop_margin_m` before the line, from when that
        reaches `light_decel`; a light turning red when more than `dilemma_decel` would be needed is passed. At
        or past that stop point it stays, or, still moving (a late ego that braked too little), brakes as hard as
        the vehicle can.
        """
        if self.stop_line_s is None or self.light_state(t) != "red" or front > self.stop_line_s:
            return math.inf, False
        gap = self.stop_line_s - self.limits.stop_margin_m - front
        if gap <= 0.0:
            return (-self.limits.max_decel if v > 0.0 else 0.0), True
        needed = v * v / (2 * gap)
        dilemma = self.limits.dilemma_decel if dilemma_decel is None else dilemma_decel
        if not braking and (needed < self.limits.light_decel or needed > dilemma):
            return math.inf, False
        return -needed, True

    def _simulate(self) -> Drive:
        """The drive; mixed first times its light and lead around the expert (three runs)."""
        sc = self.scenario_params
        if sc.name == "mixed" and sc.lead is not None:
            # The light turns red when the expert is MIXED_RED_AT_M from the line, green 2-3 s after the expert
            # has stopped; the lead drives off then, and brakes `brake_at_s` after.
            rng = np.random.default_rng([SCENARIOS.index(sc.name), sc.seed, 1])
            trial = self._run(((0.0, "green"),))
            near = np.flatnonzero(sc.stop_line_s - (trial.s + EGO_FRONT_M) <= rng.uniform(*MIXED_RED_AT_M))[0]
            red_at = float(trial.t[near])
            stopped = self._run(((0.0, "green"), (red_at, "red")))
            still = np.flatnonzero((stopped.t > red_at) & (stopped.v == 0.0))
            if len(still) == 0:
                raise RuntimeError(f"mixed seed {sc.seed}: the expert did not stop for red")
            green_at = float(stopped.t[still[0]]) + float(rng.uniform(2.0, 3.0))
            self._changes = ((0.0, "green"), (red_at, "red"), (green_at, "green"))
            self.lead_plan = dataclasses.replace(sc.lead, start_at_s=green_at,
                                                 brake_at_s=green_at + sc.lead.brake_at_s)
        return self._run(self._changes)

    def _run(self, changes: tuple[tuple[float, str], ...]) -> Drive:
        """Simulate lead and expert with `changes` as the light's timing (plain floats: this loop is the cost)."""
        self._changes = changes
        sc, lim, dt = self.scenario_params, self.limits, SIM_DT_S
        steps = int(round((sc.duration_s + SIM_EXTRA_S) / dt)) + 1
        s, v, a = [0.0] * steps, [0.0] * steps, [0.0] * steps
        ls, lv, la = [math.nan] * steps, [math.nan] * steps, [math.nan] * steps
        binding = [""] * steps
        v[0] = sc.ego_v0_mps
        lead = self.lead_plan
        if lead is not None:
            ls[0], lv[0] = lead.s0_m, lead.v0_mps
        brake_start = lead.brake_at_s if lead is not None else None
        braking = {"ego": False, "lead": False}  # braking for the red light
        for k in range(steps):
            tk = k * dt
            last = k + 1 == steps
            # lead vehicle: its own cruise/brake plan, the curves and the light
            if lead is not None:
                if brake_start is None and lead.brake_at_gap_m is not None and v[k] > 5.0 \
                        and ls[k] - (s[k] + EGO_FRONT_M) < lead.brake_at_gap_m:
                    brake_start = tk
                target = lead.cruise_mps if tk >= lead.start_at_s else 0.0
                if brake_start is not None and brake_start <= tk < brake_start + lead.hold_s + (
                        lead.cruise_mps - lead.brake_to_mps) / lead.brake_decel:
                    target = lead.brake_to_mps
                plan = min(max((target - lv[k]) / 0.5, -lead.brake_decel), lim.max_accel)
                light, braking["lead"] = self._light_accel(tk, ls[k] + VEHICLE_LENGTH_M, lv[k], braking["lead"])
                la[k] = max(min(plan, self._curve_accel(ls[k], lv[k]), light), -lim.max_decel)
                if not last:
                    lv[k + 1] = max(0.0, lv[k] + la[k] * dt)
                    ls[k + 1] = ls[k] + 0.5 * (lv[k] + lv[k + 1]) * dt
            a[k], binding[k], braking["ego"] = self._ego_accel(tk, s[k], v[k], ls[k], lv[k], braking["ego"])
            if not last:
                v[k + 1] = max(0.0, v[k] + a[k] * dt)
                s[k + 1] = s[k] + 0.5 * (v[k] + v[k + 1]) * dt
        t = np.arange(steps) * dt
        return Drive(t=t, s=np.array(s), v=np.array(v), a=np.array(a), lead_s=np.array(ls), lead_v=np.array(lv),
                     lead_a=np.array(la), binding=np.array(binding))

    def _ego_accel(self, t: float, s: float, v: float, lead_s: float, lead_v: float, braking: bool,
                   dilemma_decel: float | None = None) -> tuple[float, str, bool]:
        """The expert's (acceleration, binding constraint, braking for the light) at `t` in state (s, v): each
        constraint proposes an acceleration; the least wins and names the cause. `lead_s` is NaN without a lead."""
        lim = self.limits
        front = s + EGO_FRONT_M
        options = {"cruise": _idm(v, self.scenario_params.speed_limit_mps, math.inf, 0.0, lim),
                   "curve": self._curve_accel(s, v)}
        light, braking = self._light_accel(t, front, v, braking, dilemma_decel)
        if braking:
            options["light"] = light
        if self.lead_plan is not None:
            options["lead"] = _idm(v, self.scenario_params.speed_limit_mps, lead_s - front, v - lead_v, lim)
        name = min(options, key=options.get)
        a = min(max(options[name], -lim.max_decel), lim.max_accel)
        if name == "lead" and options["lead"] > min(options["cruise"], options["curve"]) - LEAD_MARGIN:
            name = min(("cruise", "curve"), key=options.get)  # a far lead barely matters: it is not the cause
        if name == "lead" and v < STOP_SPEED_MPS and a < 0.3:
            a = -min(v / SIM_DT_S, lim.comfortable_decel)  # end IDM's creep: rest until the lead moves off
        if v <= 0.0 and a < 0.0:
            a = 0.0
        return a, name, braking

    def late(self, t0_s: float, ahead_m: float, fast_mps: float, ramp_mps2: float = 0.0) -> "World":
        """This world with an ego that drove `fast_mps` faster than the expert and is `ahead_m` further along the
        road at t0 (over the history: the expert's arc length + ahead_m + fast_mps (t - t0)), and from t0 on
        drives as the expert would from there, braking for a red light as hard as the vehicle can
        (`max_decel`) where the expert's comfort would no longer stop it. Its `model_sample(t0)` is what a
        driver that reacted late sees and what it should do then (closed loop: a car that brakes too little
        arrives at the line or the lead faster and closer than the expert ever does). The light, the lead
        vehicle and the labels' causes are the world's; the labels follow this ego's drive.

        With `ramp_mps2` the history's acceleration also differs from the expert's by that much (the speed
        offset is fast_mps + ramp_mps2 (t - t0)): a car that braked or sped up otherwise than the expert and
        arrives at t0's state by another way, so that a history's deceleration alone no longer tells a light's
        colour (ramp 0: the history's acceleration is the expert's).

        The perturbation is limited so that it stays physical: the speed never below zero over the history,
        the front bumper at least `standstill_gap_m` behind the lead and, where the expert is still before a
        red light's line, no faster than it can stop before that line at `max_decel` and no further along than
        it can stop before the expert's stop point. The values used: `late_m`, `late_mps`, `late_mps2`."""
        d, lim = self.drive, self.limits
        k0 = min(int(round(t0_s / SIM_DT_S)), len(d.t) - 1)
        window = slice(max(0, k0 - int(round(HISTORY_S / SIM_DT_S))), k0 + 1)
        fast = max(fast_mps, -float(d.v[window].min()))
        front = d.s[k0] + EGO_FRONT_M
        before_red = self.stop_line_s is not None and self.light_state(t0_s) == "red" and front < self.stop_line_s
        if before_red:
            # no faster than it can still stop LATE_LINE_MARGIN_M before the line at max_decel, even with no `ahead`
            reach = max(self.stop_line_s - LATE_LINE_MARGIN_M - front, 0.0)
            fast = min(fast, math.sqrt(2 * lim.max_decel * reach) - float(d.v[k0]))
        tau = d.t[window] - d.t[k0]
        slower = d.v[window][:-1] + fast  # ramp * tau >= -slower over the history (tau < 0 there)
        ramp = min(ramp_mps2, float(np.min(slower / -tau[:-1]))) if ramp_mps2 > 0 and len(tau) > 1 else ramp_mps2
        shift = fast * tau + 0.5 * ramp * tau ** 2  # s offset over the history, before `ahead`
        room = [math.inf]
        if self.lead_plan is not None:
            room.append(float(np.min(d.lead_s[window] - d.s[window] - EGO_FRONT_M - shift)) - lim.standstill_gap_m)
        if before_red:  # it can still stop before the stop point at max_decel
            room.append(self.stop_line_s - lim.stop_margin_m - front - (d.v[k0] + fast) ** 2 / (2 * lim.max_decel))
        ahead = min(ahead_m, max(min(room), 0.0))
        s, v, a, binding = d.s.copy(), d.v.copy(), d.a.copy(), d.binding.copy()
        before = d.t[:k0 + 1] - d.t[k0]
        history = before >= -HISTORY_S  # the ramp spans the history; before it the speed offset stays
        s[:k0 + 1] += ahead + fast * before + ramp * np.where(history, 0.5 * before ** 2,
                                                              -0.5 * HISTORY_S ** 2 - HISTORY_S * before)
        v[:k0 + 1] = np.maximum(v[:k0 + 1] + fast + ramp * np.maximum(before, -HISTORY_S), 0.0)
        a[:k0 + 1] += np.where(history, ramp, 0.0)
        braking = d.binding[k0] == "light"
        for k in range(k0, len(d.t)):
            a[k], binding[k], braking = self._ego_accel(float(d.t[k]), float(s[k]), float(v[k]), float(d.lead_s[k]),
                                                        float(d.lead_v[k]), braking, math.inf)
            if k + 1 < len(d.t):
                v[k + 1] = max(0.0, v[k] + a[k] * SIM_DT_S)
                s[k + 1] = s[k] + 0.5 * (v[k] + v[k + 1]) * SIM_DT_S
        other = copy.copy(self)
        other.drive = dataclasses.replace(d, s=s, v=v, a=a, binding=binding)
        other._frames = {}
        other.late_m, other.late_mps, other.late_mps2 = ahead, fast, ramp
        return other

    def expert_pose(self, t_s: float) -> Pose2D:
        """The expert's state at world time t (0 <= t <= duration_s + 6.9 s), on the ego lane's centre."""
        d = self.drive
        if not (0.0 <= t_s <= d.t[-1] + 1e-9):
            raise ValueError(f"t={t_s:.3f} s is outside the simulated drive [0, {d.t[-1]:.2f}] s")
        s, v = float(np.interp(t_s, d.t, d.s)), float(np.interp(t_s, d.t, d.v))
        x, y, heading = self.road.at(s)
        kappa = float(np.interp(s, self.road.s, self.road.kappa))
        k = min(int(t_s / SIM_DT_S), len(d.t) - 1)
        return Pose2D(float(x), float(y), float(heading), v, v * kappa, float(d.a[k]))

    def _expert_arrays(self, times: np.ndarray, t0_s: float = 0.0, offset_m: float = 0.0,
                       drift: tuple[float, float] = (0.0, 0.0)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """World (x, y, yaw) of the expert at `times`; with `offset_m` or `drift`, of the recovering ego
        (`model_sample`)."""
        s = np.interp(times, self.drive.t, self.drive.s)
        if offset_m == 0.0 and drift == (0.0, 0.0):
            return self.road.at(s)
        ds = s - float(np.interp(t0_s, self.drive.t, self.drive.s))
        u = np.clip(ds / RECOVERY_M, 0.0, 1.0)
        d = offset_m * (1.0 - u * u * (3.0 - 2.0 * u))  # smoothstep from the offset down to the centre
        dd_ds = -offset_m * 6.0 * u * (1.0 - u) / RECOVERY_M
        if drift != (0.0, 0.0):  # before t0 the lateral offset is a parabola in arc length; after, a cubic
            slope, curvature = math.tan(drift[0]), drift[1]  # Hermite from (offset, slope) to the centre
            before = ds < 0.0
            d = np.where(before, offset_m + slope * ds + 0.5 * curvature * ds * ds,
                         d + slope * RECOVERY_M * u * (1.0 - u) ** 2)
            dd_ds = np.where(before, slope + curvature * ds, dd_ds + slope * (1.0 - u) * (1.0 - 3.0 * u))
        x, y, heading = self.road.at(s, d)
        return x, y, heading + np.arctan(dd_ds)

    # --- labels ------------------------------------------------------------------------------------------------
    def coc_label(self, t0_s: float) -> tuple[str, str]:
        """(Chain-of-Causation sentence, its cause) at t0: what shapes the expert's next seconds, named by a cause
        the cameras show at t0 (the light's colour now, the lead's brake lights now, the road ahead)."""
        d = self.drive
        k = min(int(round(t0_s / SIM_DT_S)), len(d.t) - 1)

        def binds_within(cause: str, seconds: float) -> bool:
            return cause in d.binding[k:min(k + int(round(seconds / SIM_DT_S)), len(d.t))]

        v, a = d.v[k], d.a[k]
        state = self.light_state(t0_s)
        has_lead = self.lead_plan is not None
        label = "Keep lane and maintain speed because the road ahead is clear."
        if state == "red" and binds_within("light", LIGHT_LABEL_S):
            label = ("Stay stopped because the traffic light is red." if v < STOP_SPEED_MPS
                     else "Decelerate to a stop because the traffic light ahead is red.")
        elif has_lead and d.binding[k] == "lead" and v < STOP_SPEED_MPS and d.lead_v[k] < STOP_SPEED_MPS:
            label = "Stay stopped behind the lead vehicle."
        elif has_lead and self._brake_lights(k) and binds_within("lead", 2.0) and a < 0.3:
            label = "Decelerate because the lead vehicle ahead is braking."
        elif self._turned_green(t0_s) and a > 0.2:
            label = "Accelerate because the traffic light turned green."
        elif has_lead and (d.binding[k] == "lead" or d.lead_s[k] - d.s[k] - EGO_FRONT_M < max(25.0, 2.5 * v)):
            label = "Follow the lead vehicle and keep a safe distance."
        elif (turn := self._curve_ahead(d.s[k], v)) is not None:
            window = d.a[k:min(k + int(round(3.0 / SIM_DT_S)), len(d.t))]
            slowing = binds_within("curve", 2.0) and float(window.min()) < -0.3
            label = (f"Slow down for the {turn} curve ahead." if slowing
                     else f"Keep lane and follow the {turn} curve of the road.")
        elif state == "green" and 0.0 < self.stop_line_s - d.s[k] < max(40.0, 4.0 * v):
            label = "Keep speed and pass the stop line because the traffic light is green."
        elif a > 0.3:
            label = "Accelerate to cruising speed because the road ahead is clear."
        return label, COC_LABELS[label]

    def brake_lights(self, t_s: float) -> bool | None:
        """Whether the lead's brake lights are lit at world time t (as the cameras show them); None without a lead."""
        if self.lead_plan is None:
            return None
        return self._brake_lights(min(int(round(t_s / SIM_DT_S)), len(self.drive.t) - 1))

    def _brake_lights(self, k: int) -> bool:
        """Whether the lead's brake lights are lit at simulation step k: braking or standing."""
        return bool(self.drive.lead_a[k] < -BRAKE_LIGHT_DECEL or self.drive.lead_v[k] < STOP_SPEED_MPS)

    def _turned_green(self, t0_s: float) -> bool:
        """The light turned green within the last 4 s and the ego has not yet passed the line."""
        if self.stop_line_s is None or self.light_state(t0_s) != "green":
            return False
        changed = [at for at, new in self._changes if new == "green" and 0.0 < at <= t0_s]
        s = float(np.interp(t0_s, self.drive.t, self.drive.s))
        return bool(changed) and t0_s - changed[-1] < 4.0 and s + EGO_FRONT_M < self.stop_line_s + 5.0

    def _curve_ahead(self, s: float, v: float) -> str | None:
        """"left"/"right" when the road within the next ~5 s (at least 40 m) curves, else None."""
        road = self.road
        ahead = (road.s >= s) & (road.s <= s + max(40.0, 5.0 * v))
        kappa = road.kappa[ahead]
        if len(kappa) == 0 or np.abs(kappa).max() < 1.0 / 400.0:
            return None
        return "left" if kappa[np.argmax(np.abs(kappa))] > 0 else "right"

    # --- ground truth ------------------------------------------------------------------------------------------
    def trajectory_in_ego(self, t0_s: float, times: np.ndarray, offset_m: float = 0.0,
                          drift: tuple[float, float] = (0.0, 0.0)) -> tuple[np.ndarray, np.ndarray]:
        """Expert poses at `times` in the ego frame at t0: xyz (n, 3) and rotations (n, 3, 3), float32."""
        x, y, yaw = self._expert_arrays(np.asarray(times, dtype=float), t0_s, offset_m, drift)
        x0, y0, yaw0 = self._expert_arrays(np.array([t0_s]), t0_s, offset_m, drift)
        c0, s0 = math.cos(yaw0[0]), math.sin(yaw0[0])
        dx, dy = x - x0[0], y - y0[0]
        xyz = np.stack([c0 * dx + s0 * dy, -s0 * dx + c0 * dy, np.zeros_like(dx)], axis=-1)
        rel = yaw - yaw0[0]
        c, s = np.cos(rel), np.sin(rel)
        rot = np.zeros((len(rel), 3, 3))
        rot[:, 0, 0], rot[:, 0, 1], rot[:, 1, 0], rot[:, 1, 1], rot[:, 2, 2] = c, -s, s, c, 1.0
        return xyz.astype(np.float32), rot.astype(np.float32)

    def model_sample(self, t0_s: float, height: int = DEFAULT_HEIGHT, width: int = DEFAULT_WIDTH,
                     offset_m: float = 0.0, drift: tuple[float, float] = (0.0, 0.0)) -> Sample:
        """Ground truth at t0 (HISTORY_S <= t0 <= duration_s) on the expert drive; see `Sample`.

        `offset_m` (+ left): the ego drove that far off the lane centre, parallel to it, until t0, and its
        future returns to the centre along the next RECOVERY_M of road (a smoothstep in arc length, at the
        expert's pace; standing, it stays where it is). The cameras, history and future are the recovering
        ego's; the labels are the expert's. Training on such samples teaches a driver to steer back when its
        own errors have moved it off the centre, which the expert's drive alone never shows (closed loop).
        `drift` (heading error rad, curvature error 1/m, + left): the ego also drifted off the lane over its
        history (at t0 it is `offset_m` off, heading that much off the lane, turning that much more than the
        road) and its future bends back onto the centre from there (a cubic in arc length): what a car
        that followed a wrongly bent plan sees, and whose history no longer agrees with the road.
        """
        if not (HISTORY_S - 1e-9 <= t0_s <= self.duration_s + 1e-9):
            raise ValueError(f"t0={t0_s:.2f} s: a sample needs {HISTORY_S:.1f} s of history and its future; "
                             f"t0 must be in [{HISTORY_S:.1f}, {self.duration_s:.1f}] s")
        if offset_m == 0.0 and drift == (0.0, 0.0):
            frames = [self._expert_frame(float(tf), height, width) for tf in t0_s + FRAME_OFFSETS_S]
        else:
            frames = [self.render(self.ego_pose(float(tf), t0_s, offset_m, drift), float(tf), height, width)
                      for tf in t0_s + FRAME_OFFSETS_S]
        images = np.stack(frames, axis=1)  # (cameras, frames, H, W, 3)
        history_xyz, history_rot = self.trajectory_in_ego(t0_s, t0_s + HISTORY_OFFSETS_S, offset_m, drift)
        future_xyz, future_rot = self.trajectory_in_ego(t0_s, t0_s + FUTURE_OFFSETS_S, offset_m, drift)
        coc, cause = self.coc_label(t0_s)
        return Sample(t0_s=t0_s, images=images, ego_history_xyz=history_xyz, ego_history_rot=history_rot,
                      future_xyz=future_xyz, future_rot=future_rot, coc=coc, cause=cause,
                      interesting=self.interesting(history_xyz, future_xyz))

    def ego_pose(self, t_s: float, t0_s: float, offset_m: float = 0.0,
                 drift: tuple[float, float] = (0.0, 0.0)) -> Pose2D:
        """The pose at t of `model_sample(t0, offset_m=..., drift=...)`'s ego: the expert's moved `offset_m` off the
        centre (t <= t0: parallel to the lane, unless `drift`); without either, the expert's."""
        pose = self.expert_pose(t_s)
        x, y, yaw = self._expert_arrays(np.array([t_s]), t0_s, offset_m, drift)
        return dataclasses.replace(pose, x=float(x[0]), y=float(y[0]), yaw=float(yaw[0]))

    def _expert_frame(self, t_s: float, height: int, width: int) -> np.ndarray:
        """render() at the expert's pose; the last few are kept, as consecutive samples share 3 of their 4 frames."""
        key = (round(t_s / SIM_DT_S), height, width)
        if key not in self._frames:
            if len(self._frames) >= FRAME_CACHE:
                self._frames.pop(next(iter(self._frames)))  # the oldest
            self._frames[key] = self.render(self.expert_pose(t_s), t_s, height, width)
            self._frames[key].flags.writeable = False
        return self._frames[key]

    @staticmethod
    def interesting(history_xyz: np.ndarray, future_xyz: np.ndarray) -> bool:
        """Whether a constant speed and yaw rate extrapolation of the history misses the 6.4 s pose by > 2 m."""
        step = history_xyz[-1, :2] - history_xyz[-2, :2]
        prev = history_xyz[-2, :2] - history_xyz[-3, :2]
        speed = float(np.linalg.norm(step)) / STEP_S
        turn = math.atan2(step[1], step[0]) - math.atan2(prev[1], prev[0]) if speed > 0.5 else 0.0
        yaw_rate = (turn + math.pi) % (2 * math.pi) - math.pi
        tau = FUTURE_OFFSETS_S
        yaw = yaw_rate / STEP_S * tau
        heading0 = math.atan2(step[1], step[0]) if speed > 0.5 else 0.0
        dx = np.cumsum(speed * STEP_S * np.cos(heading0 + yaw))
        dy = np.cumsum(speed * STEP_S * np.sin(heading0 + yaw))
        miss = math.hypot(dx[-1] - future_xyz[-1, 0], dy[-1] - future_xyz[-1, 1])
        return miss > INTERESTING_FDE_M

    # --- rendering ---------------------------------------------------------------------------------------------
    def render(self, pose: Pose2D, t_s: float, height: int = DEFAULT_HEIGHT, width: int = DEFAULT_WIDTH) -> np.ndarray:
        """(4, H, W, 3) uint8 RGB in the model's camera order, the vehicle at `pose`, the world at time t."""
        rays = _rays(height, width)
        c, s = math.cos(pose.yaw), math.sin(pose.yaw)
        gx = pose.x + c * rays.ground[:, 0] - s * rays.ground[:, 1]
        gy = pose.y + s * rays.ground[:, 0] + c * rays.ground[:, 1]
        rs, rd = self.road.lookup(gx, gy)
        colour = self._ground_colour(gx, gy, rs, rd, rays, pose.yaw)
        images = rays.sky.copy()
        flat = images.reshape(-1, 3)
        flat[rays.ground_index] = colour
        objects = self._objects(t_s)
        for cam in range(len(CAMERA_NAMES)):
            _draw_objects(images[cam], objects, pose, cam)
        return images

    def _ground_colour(self, gx, gy, rs, rd, rays: "_Rays", yaw: float) -> np.ndarray:
        """(n, 3) uint8 colours of ground points: grass, asphalt, markings (box-filtered over the pixel), haze."""
        # grass and asphalt tinted by 2 m cells fixed in the world: texture that moves with the ego motion
        cell = (np.floor(gx * 0.5).astype(np.int32) * np.int32(73856093)) ^ (
            np.floor(gy * 0.5).astype(np.int32) * np.int32(19349663))
        noise = (cell & 255).astype(np.float32) * (1.0 / 255.0) - 0.5
        on_road = np.flatnonzero(np.isfinite(rs))
        s, d = rs[on_road], rd[on_road]
        # the pixel's extent across (fp) and along (along_fp) the road: its ground Jacobian on the road's axes
        index = np.clip((s * (1.0 / ROAD_STEP_M)).astype(np.int64), 0, len(self.road.s) - 1)
        rel = self.road.heading[index].astype(np.float32) - np.float32(yaw)
        tx, ty = np.cos(rel), np.sin(rel)
        du, dv = rays.ground_du[on_road], rays.ground_dv[on_road]
        fp = np.abs(du[:, 1] * tx - du[:, 0] * ty) + np.abs(dv[:, 1] * tx - dv[:, 0] * ty) + 1e-3
        along_fp = np.abs(du[:, 0] * tx + du[:, 1] * ty) + np.abs(dv[:, 0] * tx + dv[:, 1] * ty) + 1e-3
        # asphalt: the ego lane (d = 0), the opposite lane on its left, shoulders
        inner, outer = -(LANE_HALF_WIDTH_M + SHOULDER_M), LANE_HALF_WIDTH_M + LANE_WIDTH_M + SHOULDER_M
        asphalt = _coverage(d, (inner + outer) / 2, outer - inner, fp)
        marks = np.maximum(_coverage(d, -LANE_HALF_WIDTH_M, MARKING_WIDTH_M, fp),
                           _coverage(d, LANE_HALF_WIDTH_M + LANE_WIDTH_M, MARKING_WIDTH_M, fp))
        phase = np.mod(s, DASH_PERIOD_M)  # a dash on [0, DASH_M) of every period; the next one counts too
        along = np.minimum(_coverage(phase, DASH_M / 2, DASH_M, along_fp)
                           + _coverage(phase - DASH_PERIOD_M, DASH_M / 2, DASH_M, along_fp), 1.0)
        along = np.where(along_fp > DASH_PERIOD_M, DASH_M / DASH_PERIOD_M, along)  # a pixel spanning dashes: the mean
        dashed = _coverage(d, LANE_HALF_WIDTH_M, MARKING_WIDTH_M, fp) * along
        marks = np.maximum(marks, dashed)
        if self.stop_line_s is not None:
            stop = _coverage(d, 0.0, LANE_WIDTH_M, fp) * _coverage(
                s, self.stop_line_s + STOP_LINE_WIDTH_M / 2, STOP_LINE_WIDTH_M, along_fp)
            marks = np.maximum(marks, stop)
        # per pixel weights of grass, asphalt, paint and haze; then one blend of the four colours
        w_asphalt = np.zeros_like(noise)
        w_paint = np.zeros_like(noise)
        w_asphalt[on_road] = asphalt * (1.0 - marks)
        w_paint[on_road] = asphalt * marks
        keep = 1.0 - rays.haze
        w_grass = (1.0 - w_asphalt - w_paint) * keep
        ground = ((w_grass * (1.0 + 0.25 * noise))[:, None] * GRASS
                  + (w_asphalt * keep * (1.0 + 0.06 * noise))[:, None] * ASPHALT
                  + (w_paint * keep)[:, None] * MARKING + rays.haze[:, None] * HAZE)
        return ground.clip(0, 255).astype(np.uint8)

    def _objects(self, t_s: float) -> list[tuple[str, np.ndarray, tuple[int, int, int]]]:
        """World boxes at t: (kind, 8 corners (8, 3), colour); lamps and brake lights are small boxes too."""
        boxes = []
        if self.stop_line_s is not None:
            state = self.light_state(t_s)
            top = LAMP_HEIGHTS_M[0] + LAMP_M
            for s_pole in (self.stop_line_s + LIGHT_AFTER_LINE_M, self.stop_line_s + FAR_LIGHT_AFTER_LINE_M):
                boxes.append(("pole", self._box(s_pole, LIGHT_SIDE_M, 0.15, 0.15, 0.0, top), (50, 50, 50)))
                boxes.append(("housing", self._box(s_pole - 0.2, LIGHT_SIDE_M, 0.2, LAMP_M + 0.2,
                                                   LAMP_HEIGHTS_M[1] - LAMP_M * 0.7, top), (25, 25, 25)))
                for colour, z in zip(("red", "green"), LAMP_HEIGHTS_M):
                    fill = LAMP_ON[colour] if state == colour else LAMP_OFF[colour]
                    boxes.append(("lamp", self._box(s_pole - 0.32, LIGHT_SIDE_M, 0.05, LAMP_M, z - LAMP_M / 2,
                                                    z + LAMP_M / 2), fill))
        lead = self.lead_vehicle(t_s)
        if lead is not None:
            s_rear, _ = lead
            k = min(int(round(t_s / SIM_DT_S)), len(self.drive.t) - 1)
            boxes.append(("vehicle", self._box(s_rear + VEHICLE_LENGTH_M / 2, 0.0, VEHICLE_LENGTH_M, VEHICLE_WIDTH_M,
                                               0.3, VEHICLE_HEIGHT_M), LEAD_COLOUR))
            lit = self._brake_lights(k)
            for side in (-1.0, 1.0):  # brake lights on the rear face
                boxes.append(("brake light", self._box(s_rear - 0.03, side * (VEHICLE_WIDTH_M / 2 - 0.25), 0.05, 0.35,
                                                0.75, 1.05), (255, 30, 30) if lit else (110, 20, 20)))
        return boxes

    def _box(self, s_centre: float, d_centre: float, length: float, width: float, z0: float, z1: float) -> np.ndarray:
        x, y, heading = self.road.at(s_centre, d_centre)
        c, s = math.cos(heading), math.sin(heading)
        corners = []
        for dl in (-length / 2, length / 2):
            for dw in (-width / 2, width / 2):
                for z in (z0, z1):
                    corners.append((x + c * dl - s * dw, y + s * dl + c * dw, z))
        return np.array(corners)

def _draw_objects(image: np.ndarray, objects: list, pose: Pose2D, cam: int) -> None:
    """Draw the world's boxes (far to near) over one camera's ground image, in place."""
    height, width = image.shape[:2]
    focal = (width / 2) / math.tan(math.radians(CAMERA_FOV_DEG[cam]) / 2)
    horizon = height * HORIZON_ROW_FRACTION
    heading = pose.yaw + math.radians(CAMERA_YAW_DEG[cam])
    cx = pose.x + CAMERA_FORWARD_M * math.cos(pose.yaw)
    cy = pose.y + CAMERA_FORWARD_M * math.sin(pose.yaw)
    c, s = math.cos(heading), math.sin(heading)
    drawn = []
    for kind, corners, fill in objects:
        dx, dy = corners[:, 0] - cx, corners[:, 1] - cy
        forward, left = c * dx + s * dy, -s * dx + c * dy
        if forward.min() < 0.3 or forward.min() > VIEW_RANGE_M:
            continue
        u = width / 2 - focal * left / forward
        v = horizon - focal * (corners[:, 2] - CAMERA_HEIGHT_M) / forward
        if u.max() < 0 or u.min() > width or v.max() < 0 or v.min() > height:
            continue
        drawn.append((float(forward.mean()), kind, u, v, fill, np.hypot(forward, left)))
    if not drawn:
        return
    canvas = PILImage.fromarray(image)
    draw = ImageDraw.Draw(canvas)
    for _, kind, u, v, fill, distance in sorted(drawn, key=lambda item: -item[0]):  # far to near
        if kind == "vehicle":
            # the box's outline in the body colour, the nearer of its rear and front faces darker (a 3-D cue)
            draw.polygon([tuple(p) for p in _hull(np.stack([u, v], axis=1))], fill=fill)
            face = slice(0, 4) if distance[:4].mean() < distance[4:].mean() else slice(4, 8)
            draw.polygon([tuple(p) for p in _hull(np.stack([u[face], v[face]], axis=1))],
                         fill=tuple(int(ch * 0.75) for ch in fill))
        else:
            left, right, top, bottom = u.min(), u.max(), v.min(), v.max()
            if kind == "lamp":  # at least a pixel, so the traffic light's colour is seen from afar
                mid_u, mid_v = (left + right) / 2, (top + bottom) / 2
                half = max((right - left) / 2, 0.75)
                left, right, top, bottom = mid_u - half, mid_u + half, mid_v - half, mid_v + half
            draw.rectangle([left, top, right, bottom], fill=fill)
    image[:] = np.asarray(canvas)


def _coverage(x: np.ndarray, centre: float, width: float, footprint: np.ndarray) -> np.ndarray:
    """Fraction of a pixel (box of `footprint` around x) covered by the stripe centre +- width / 2."""
    lo = np.maximum(x - footprint / 2, centre - width / 2)
    hi = np.minimum(x + footprint / 2, centre + width / 2)
    return np.clip((hi - lo) / footprint, 0.0, 1.0)


def _hull(points: np.ndarray) -> np.ndarray:
    """Convex hull of 2-D points (monotone chain), counter-clockwise."""
    pts = sorted(map(tuple, points))
    if len(pts) < 3:
        return np.array(pts)

    def cross(o, a, b):
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    lower, upper = [], []
    for p in pts:
        while len(lower) >= 2 and cross(lower[-2], lower[-1], p) <= 0:
            lower.pop()
        lower.append(p)
    for p in reversed(pts):
        while len(upper) >= 2 and cross(upper[-2], upper[-1], p) <= 0:
            upper.pop()
        upper.append(p)
    return np.array(lower[:-1] + upper[:-1])


@dataclass(frozen=True)
class _Rays:
    """Per image size: sky image, ground pixels (flat index into (4, H, W)), their ground points in base_link."""

    sky: np.ndarray  # (4, H, W, 3) uint8
    ground_index: np.ndarray  # (n,) into the (4*H*W) pixels
    ground: np.ndarray  # (n, 2) base_link x forward, y left
    ground_du: np.ndarray  # (n, 2) float32 m per pixel: how the ground point moves one column right ...
    ground_dv: np.ndarray  # (n, 2) float32 ... and one row down (base_link axes)
    haze: np.ndarray  # (n,) float32 0..1: how much of the ground colour the distance fades


_RAYS: dict[tuple[int, int], _Rays] = {}


def _rotate(forward: np.ndarray, left: np.ndarray, yaw: float) -> np.ndarray:
    """(n, 2) base_link vectors of (forward, left) given in a frame turned by `yaw`."""
    c, s = math.cos(yaw), math.sin(yaw)
    return np.stack([c * forward - s * left, s * forward + c * left], axis=1)


def _rays(height: int, width: int) -> _Rays:
    if (height, width) in _RAYS:
        return _RAYS[(height, width)]
    if height < 8 or width < 8:
        raise ValueError(f"image size {height}x{width} is too small (at least 8x8)")
    horizon = height * HORIZON_ROW_FRACTION
    rows = np.arange(height) + 0.5
    cols = np.arange(width) + 0.5
    sky_rows = np.clip(rows / horizon, 0.0, 1.0)[:, None]
    sky_line = SKY_TOP + sky_rows ** 2 * (SKY_HORIZON - SKY_TOP)
    sky = np.broadcast_to(sky_line[None, :, None, :], (len(CAMERA_NAMES), height, width, 3)).astype(np.uint8)
    indices, points, hazes, jacobians_u, jacobians_v = [], [], [], [], []
    for cam in range(len(CAMERA_NAMES)):
        focal = (width / 2) / math.tan(math.radians(CAMERA_FOV_DEG[cam]) / 2)
        yaw = math.radians(CAMERA_YAW_DEG[cam])
        v, u = np.meshgrid(rows, cols, indexing="ij")
        down = (v - horizon) / focal  # ray direction (forward 1, left, down) in the camera's yaw frame
        lateral = (width / 2 - u) / focal
        ground = down > 1e-3
        t = CAMERA_HEIGHT_M / down[ground]  # forward distance to the ground
        fwd, lft = t, t * lateral[ground]
        rng = np.sqrt(fwd ** 2 + lft ** 2 + CAMERA_HEIGHT_M ** 2)
        indices.append(np.flatnonzero(ground.reshape(-1)) + cam * height * width)
        points.append(_rotate(fwd, lft, yaw) + np.array([CAMERA_FORWARD_M, 0.0]))
        hazes.append(np.clip(rng / VIEW_RANGE_M, 0.0, 1.0) ** 1.5)
        # d(forward, left)/d(column) = (0, -t / focal); d(forward, left)/d(row) = -(t, t * lateral) / (down * focal)
        rows_rate = -t / (down[ground] * focal)
        jacobians_u.append(_rotate(np.zeros_like(t), -t / focal, yaw))
        jacobians_v.append(_rotate(rows_rate, rows_rate * lateral[ground], yaw))
    rays = _Rays(sky=sky.copy(), ground_index=np.concatenate(indices), ground=np.concatenate(points).astype(np.float32),
                 ground_du=np.concatenate(jacobians_u).astype(np.float32),
                 ground_dv=np.concatenate(jacobians_v).astype(np.float32),
                 haze=np.concatenate(hazes).astype(np.float32))
    _RAYS[(height, width)] = rays
    return rays


def generate(scenario: str, seed: int, limits: ExpertLimits = LIMITS) -> World:
    """A seeded drive of `scenario` (one of SCENARIOS), its expert driving with `limits`."""
    return World(make_scenario(scenario, seed), limits)


def ground_truth(world: World, times: np.ndarray) -> dict:
    """The sidecar's content: the scenario and per t0 the true future (ego frame at t0) and CoC."""
    ticks = []
    for t0 in times:
        history_xyz = world.trajectory_in_ego(t0, t0 + HISTORY_OFFSETS_S)[0] if t0 >= HISTORY_S - 1e-9 else None
        future_xyz, _ = world.trajectory_in_ego(t0, t0 + FUTURE_OFFSETS_S)
        coc, cause = world.coc_label(t0)
        pose = world.expert_pose(t0)
        ticks.append({"t0_ns": START_NS + round(t0 * NS_PER_S), "t0_s": round(float(t0), 3), "coc": coc, "cause": cause,
                      "interesting": None if history_xyz is None else world.interesting(history_xyz, future_xyz),
                      "pose": [pose.x, pose.y, pose.yaw, pose.speed], "light": world.light_state(t0),
                      "future_xyz": np.round(future_xyz[:, :2].astype(float), 4).tolist()})
    lead = world.lead_plan
    return {"scenario": world.scenario, "seed": world.seed, "duration_s": world.duration_s,
            "stop_line_s": world.stop_line_s, "route_length_m": world.route_length_m,
            "light_changes": [list(c) for c in world.light_changes],
            "lead": None if lead is None else vars(lead).copy(),
            "frame": "future_xyz: (64, 2) x forward, y left in the ego frame at t0, poses at t0+0.1 ... t0+6.4 s",
            "ticks": ticks}


GROUND_TRUTH_FILE = "ground_truth.json"


def write_bag(world: World, out_dir, height: int = DEFAULT_HEIGHT, width: int = DEFAULT_WIDTH,
              storage: str = "mcap") -> Path:
    """Write the expert drive as a new rosbag2 directory `out_dir` plus `ground_truth.json` in it; returns it."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    from alpamayo_ros.tools.bag_io import BAG_VERSION

    out = Path(out_dir)
    typestore = get_typestore(Stores.ROS2_HUMBLE)
    t = typestore.types
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    image_type = "sensor_msgs/msg/CompressedImage"
    with Writer(out, version=BAG_VERSION, storage_plugin=plugin) as writer:
        cams, odom, tf = drive_connections(writer, typestore, image_type, camera_topics_of(raw=False), "/odom")
        camera_ticks = int(round(world.duration_s * CAMERA_HZ))
        odom_ticks = int(round(world.duration_s * ODOMETRY_HZ))
        events = sorted([(round(k * NS_PER_S / ODOMETRY_HZ), 1) for k in range(odom_ticks + 1)]
                        + [(round(k * NS_PER_S / CAMERA_HZ), 0) for k in range(camera_ticks + 1)])
        for offset_ns, kind in events:  # at one instant: the cameras (model order), then odometry
            stamp = START_NS + offset_ns
            pose = world.expert_pose(offset_ns / NS_PER_S)
            if kind == 1:
                msg = t["nav_msgs/msg/Odometry"](
                    header=stamped_header(typestore, stamp, "odom"), child_frame_id="base_link",
                    pose=t["geometry_msgs/msg/PoseWithCovariance"](
                        pose=t["geometry_msgs/msg/Pose"](
                            position=t["geometry_msgs/msg/Point"](x=pose.x, y=pose.y, z=0.0),
                            orientation=yaw_quaternion(typestore, pose.yaw)),
                        covariance=np.zeros(36)),
                    twist=t["geometry_msgs/msg/TwistWithCovariance"](
                        twist=t["geometry_msgs/msg/Twist"](
                            linear=t["geometry_msgs/msg/Vector3"](x=pose.speed, y=0.0, z=0.0),
                            angular=t["geometry_msgs/msg/Vector3"](x=0.0, y=0.0, z=pose.yaw_rate)),
                        covariance=np.zeros(36)))
                writer.write(odom, stamp, typestore.serialize_cdr(msg, "nav_msgs/msg/Odometry"))
                transform = t["geometry_msgs/msg/TransformStamped"](
                    header=stamped_header(typestore, stamp, "odom"), child_frame_id="base_link",
                    transform=t["geometry_msgs/msg/Transform"](
                        translation=t["geometry_msgs/msg/Vector3"](x=pose.x, y=pose.y, z=0.0),
                        rotation=yaw_quaternion(typestore, pose.yaw)))
                writer.write(tf, stamp, typestore.serialize_cdr(t["tf2_msgs/msg/TFMessage"](transforms=[transform]),
                                                                "tf2_msgs/msg/TFMessage"))
                continue
            images = world.render(pose, offset_ns / NS_PER_S, height, width)
            for cam, name in enumerate(CAMERA_NAMES):
                buffer = io.BytesIO()
                PILImage.fromarray(images[cam]).save(buffer, format="JPEG", quality=85)
                msg = t["sensor_msgs/msg/CompressedImage"](
                    header=stamped_header(typestore, stamp, f"camera_{name}"), format="jpeg",
                    data=np.frombuffer(buffer.getvalue(), np.uint8))
                writer.write(cams[cam], stamp, typestore.serialize_cdr(msg, image_type))
    times = np.arange(camera_ticks + 1) * STEP_S
    (out / GROUND_TRUTH_FILE).write_text(json.dumps(ground_truth(world, times)))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenario", choices=SCENARIOS)
    parser.add_argument("out", type=Path, help="new bag directory (must not exist)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap")
    parser.add_argument("--height", type=int, default=DEFAULT_HEIGHT)
    parser.add_argument("--width", type=int, default=DEFAULT_WIDTH)
    args = parser.parse_args(argv)
    if args.out.exists():
        parser.error(f"{args.out} exists; rosbag2 writes a new directory")
    world = generate(args.scenario, args.seed)
    write_bag(world, args.out, args.height, args.width, args.storage)
    size = sum(f.stat().st_size for f in args.out.rglob("*") if f.is_file())
    print(f"wrote {args.out}: {args.scenario} seed {args.seed}, {world.duration_s:.0f} s, "
          f"{world.route_length_m:.0f} m, {size / 1e6:.1f} MB ({args.storage}, ground truth in {GROUND_TRUTH_FILE})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

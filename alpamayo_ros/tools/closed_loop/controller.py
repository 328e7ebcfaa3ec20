"""Tracking controller: pure pursuit for steering, feed-forward plus PD on the plan's timing for speed.

A `Plan` is one published trajectory in the world (`odom`) frame: poses at known times (the car's pose
at t0, then the model's 64 poses 0.1 s apart). Steering is pure pursuit (Coulter 1992): aim at the
point a speed-dependent look-ahead distance further along the plan's path and command the arc through
it. Speed follows the plan in time: the plan's acceleration as feed-forward (read one actuator lag
ahead), plus a PD law on the station error (where the plan is at this time minus where the car is along
it) and the speed error. A plan that stands still where the car stands is held on the brake; a plan
that has run out (the model stopped publishing for 6.4 s) brakes the car. The car drives forwards only:
where a plan runs backwards (the release's unicycle has no floor at zero speed, so a plan that brakes a
little too hard reverses after its standstill) the car holds where the plan got furthest (`forward_path`).
"""

from __future__ import annotations

import dataclasses
import enum
import math
from dataclasses import dataclass

import numpy as np

from alpamayo_ros.pipeline.outputs import progress_along
from alpamayo_ros.units import NS_PER_S

from .vehicle import LIMITS, Command, VehicleLimits, VehicleState

# Pure pursuit: look-ahead L = clip(LOOKAHEAD_TIME_S * speed + LOOKAHEAD_MIN_M, .., LOOKAHEAD_MAX_M). Too short
# oscillates with the steering rate limit; too long cuts corners entering a curve. 0.8 s is the usual 0.5-1 s
# preview of a human driver; 4 m at standstill pulls away straight without weaving.
LOOKAHEAD_MIN_M = 4.0
LOOKAHEAD_TIME_S = 0.8
LOOKAHEAD_MAX_M = 20.0
# Longitudinal PD on the plan's timing: a = a_plan(t + lag) + KV * (v_plan - v) + KS * (s_plan - s).
# KS / KV give natural frequency sqrt(KS) = 0.71 rad/s and damping KV / (2 sqrt(KS)) = 1.06 (no overshoot): slow
# next to a new plan every 0.5 s, so the feed-forward does the work and the feedback only removes drift.
KV_PER_S = 1.5
KS_PER_S2 = 0.5
MAX_STATION_ERROR_M = 5.0  # the position term never asks for more than KS * 5 = 2.5 m/s^2
# A plan that stands still: hold the car on the brake once it is this slow and this close to the plan's end.
HOLD_SPEED_MPS = 0.1  # the plan's speed below which it means "stand"
HOLD_CAR_SPEED_MPS = 0.5
HOLD_DISTANCE_M = 1.0
HOLD_DECEL_MPS2 = 2.0  # braking that holds a standing car (and stops a creeping one)
NO_PLAN_DECEL_MPS2 = 3.0  # firm braking when there is no plan to follow (none yet, or the last one ran out)


class Mode(enum.Enum):
    """What the controller did at a step."""

    TRACK = "track"  # following a plan
    HOLD = "hold"  # the plan stands still here: brake held
    NO_PLAN = "no plan"  # nothing published yet, or the last plan ran out: braking


@dataclass(frozen=True)
class Plan:
    """A trajectory to follow: times (n,) int64 ns (increasing) and world positions (n, 2) metres."""

    t_ns: np.ndarray
    xy: np.ndarray
    t0_ns: int  # the model input's time (the plan's first pose)
    tick: int = 0  # the node's tick that published it (0: not known)
    reasoning: str = ""
    yaw0: float | None = None  # the car's heading at t0, rad (None: the plan's first step is forwards)

    def __post_init__(self) -> None:
        if self.t_ns.ndim != 1 or self.xy.shape != (len(self.t_ns), 2) or len(self.t_ns) < 2:
            raise ValueError(f"plan: times {self.t_ns.shape} and positions {self.xy.shape}: expected (n,) and (n, 2), "
                             "n >= 2")
        if not np.all(np.diff(self.t_ns) > 0):
            raise ValueError("plan: pose times must increase")
        if not np.isfinite(self.xy).all():
            raise ValueError("plan: positions must be finite")

    @property
    def end_ns(self) -> int:
        return int(self.t_ns[-1])


@dataclass(frozen=True)
class _Profile:
    """A plan's arc lengths and speed profile, computed once per plan."""

    t_s: np.ndarray  # (n,) seconds since the plan's t0
    station: np.ndarray  # (n,) arc length along the path, m
    speed: np.ndarray  # (n,) speed at the poses, m/s
    accel: np.ndarray  # (n - 1,) per segment, m/s^2


def forward_path(xy: np.ndarray, yaw0: float | None = None) -> np.ndarray:
    """(n, 2) positions a car that only drives forwards takes along the path: each point, or the point of
    furthest progress before it where the path has since run back (`progress_along`, forwards along `yaw0`)."""
    progress = progress_along(xy, None if yaw0 is None else np.array([math.cos(yaw0), math.sin(yaw0)]))
    keep = np.zeros(len(xy), dtype=np.int64)
    for i in range(1, len(xy)):
        keep[i] = i if progress[i] >= progress[keep[i - 1]] else keep[i - 1]
    return xy[keep]


def _profile(plan: Plan) -> _Profile:
    t_s = (plan.t_ns - plan.t0_ns) / NS_PER_S
    segment = np.hypot(*np.diff(plan.xy, axis=0).T)
    station = np.concatenate([[0.0], np.cumsum(segment)])
    segment_speed = segment / np.diff(t_s)
    speed = np.concatenate([[segment_speed[0]], 0.5 * (segment_speed[1:] + segment_speed[:-1]), [segment_speed[-1]]])
    return _Profile(t_s, station, speed, np.diff(speed) / np.diff(t_s))


@dataclass(frozen=True)
class Step:
    """The controller's output at one instant, with what it saw (for metrics and plots)."""

    command: Command
    mode: Mode
    station_error_m: float = 0.0  # plan's station at this time minus the car's (+: the car is behind)
    lateral_error_m: float = 0.0  # the car's distance from the plan's path, + left of it


class Tracker:
    """Follows the newest plan it has been given (pure pursuit + feed-forward/PD speed)."""

    def __init__(self, limits: VehicleLimits = LIMITS) -> None:
        self.limits = limits
        self.plan: Plan | None = None
        self._profile: _Profile | None = None

    def follow(self, plan: Plan) -> None:
        """From now on track `plan` (the newest published trajectory), forwards only (`forward_path`)."""
        plan = dataclasses.replace(plan, xy=forward_path(plan.xy, plan.yaw0))
        self.plan, self._profile = plan, _profile(plan)

    def command(self, state: VehicleState, now_ns: int) -> Step:
        """The command for the car in `state` at time `now_ns`."""
        plan, profile = self.plan, self._profile
        if plan is None or now_ns > plan.end_ns:
            return Step(Command(0.0, -NO_PLAN_DECEL_MPS2), Mode.NO_PLAN)
        station, lateral = _project(plan.xy, profile.station, state.x, state.y)
        t_s = (now_ns - plan.t0_ns) / NS_PER_S
        v_plan = float(np.interp(t_s, profile.t_s, profile.speed))
        s_plan = float(np.interp(t_s, profile.t_s, profile.station))
        curvature = self._pure_pursuit(state, station, plan, profile)
        station_error = s_plan - station
        if (v_plan < HOLD_SPEED_MPS and state.speed < HOLD_CAR_SPEED_MPS
                and profile.station[-1] - station < HOLD_DISTANCE_M):
            return Step(Command(curvature, -HOLD_DECEL_MPS2), Mode.HOLD, station_error, lateral)
        preview = t_s + self.limits.accel_lag_s
        segment = min(max(int(np.searchsorted(profile.t_s, preview, side="right")) - 1, 0), len(profile.accel) - 1)
        a_ff = float(profile.accel[segment]) if preview <= profile.t_s[-1] else 0.0
        error = min(max(station_error, -MAX_STATION_ERROR_M), MAX_STATION_ERROR_M)
        accel = a_ff + KV_PER_S * (v_plan - state.speed) + KS_PER_S2 * error
        return Step(Command(curvature, accel), Mode.TRACK, station_error, lateral)

    def _pure_pursuit(self, state: VehicleState, station: float, plan: Plan, profile: _Profile) -> float:
        lookahead = min(LOOKAHEAD_TIME_S * state.speed + LOOKAHEAD_MIN_M, LOOKAHEAD_MAX_M)
        gx, gy = _point_at(plan.xy, profile.station, station + lookahead)
        if gx is None:
            return 0.0  # a plan that does not move: keep the wheels straight
        c, s = math.cos(state.yaw), math.sin(state.yaw)
        dx, dy = gx - state.x, gy - state.y
        ahead, left = c * dx + s * dy, -s * dx + c * dy
        distance2 = ahead * ahead + left * left
        if distance2 < 1e-6:
            return 0.0
        return 2.0 * left / distance2  # the arc through the car (tangent to its heading) and the goal point


def _project(xy: np.ndarray, station: np.ndarray, x: float, y: float) -> tuple[float, float]:
    """(arc length, signed lateral offset + left) of the nearest point of the polyline to (x, y)."""
    start, seg = xy[:-1], np.diff(xy, axis=0)
    length2 = np.einsum("ij,ij->i", seg, seg)
    rel = np.array([x, y]) - start
    u = np.clip(np.einsum("ij,ij->i", rel, seg) / np.maximum(length2, 1e-12), 0.0, 1.0)
    nearest = start + u[:, None] * seg
    distance = np.hypot(*(np.array([x, y]) - nearest).T)
    i = int(np.argmin(distance))
    side = seg[i, 0] * rel[i, 1] - seg[i, 1] * rel[i, 0]
    return float(station[i] + u[i] * math.sqrt(length2[i])), float(math.copysign(distance[i], side))


def _point_at(xy: np.ndarray, station: np.ndarray, s: float) -> tuple[float | None, float | None]:
    """The path's point at arc length `s`, extended straight past its end; (None, None) for a path < 0.5 m."""
    if station[-1] < 0.5:
        return None, None
    if s <= station[-1]:
        return float(np.interp(s, station, xy[:, 0])), float(np.interp(s, station, xy[:, 1]))
    last = int(np.searchsorted(station, station[-1] - 0.5, side="right")) - 1  # a direction over the last 0.5 m
    direction = (xy[-1] - xy[last]) / max(station[-1] - station[last], 1e-9)
    end = xy[-1] + (s - station[-1]) * direction
    return float(end[0]), float(end[1])

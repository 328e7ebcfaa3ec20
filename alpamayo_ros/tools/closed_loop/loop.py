"""The closed loop: the world renders the cameras where the car is, the node's tick engine plans, the car follows.

Simulated time advances in STEP_NS steps from the world's t = 0 (bag stamps START_NS + t). At each step:
the sensors that are due (cameras 10 Hz, JPEG round-tripped; odometry 50 Hz) go to the autopilot and the
run's bag; the autopilot ticks at `rate_hz` and releases what it has published by now; the controller
tracks the newest trajectory (read from the ~/trajectory message, in the frame it names); the car moves.
The world's light and lead vehicle are scripted in time (they do not react to the car).

Start: the model needs 1.5 s of history, so until HANDOVER_S the car is driven along the world's expert
drive, as a safety driver drives before engaging; from then on the loop is closed, and while nothing
has been published yet (or the newest trajectory has run out) the car brakes and the run says so.
A run ends at the world's duration, or early when the car collides with the lead vehicle or leaves
the road.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from alpamayo_ros.pipeline.sync import CAMERA_NAMES
from alpamayo_ros.tools.world import EGO_FRONT_M, HISTORY_S, VEHICLE_LENGTH_M, VEHICLE_WIDTH_M, Pose2D, World
from alpamayo_ros.units import NS_PER_S

from . import sensors
from .controller import Mode, Plan, Tracker
from .vehicle import LIMITS, VehicleLimits, VehicleState, steer_for, step

STEP_NS = 10_000_000  # physics and control at 100 Hz
CAMERA_PERIOD_NS = 100_000_000  # 10 Hz, as the world's bags
ODOMETRY_PERIOD_NS = 20_000_000  # 50 Hz
HANDOVER_S = HISTORY_S  # the model's history window: driven by the expert until then
FRONT_CAMERA = CAMERA_NAMES.index("front_wide")
OFF_ROAD_M = 3.0  # |lateral offset| beyond which the car has left the road (right shoulder ends at -2.4 m)
EGO_WIDTH_M = 1.8
COLLISION_LATERAL_M = (VEHICLE_WIDTH_M + EGO_WIDTH_M) / 2  # the lead and the car overlap sideways within this


class Autopilot(Protocol):
    """What drives the car: the node's tick engine in this process (lockstep) or the node over DDS."""

    def begin_step(self, stamp_ns: int) -> None:
        """Simulated time is now `stamp_ns` (before this step's sensors)."""

    def camera(self, camera: int, msg, stamp_ns: int) -> None: ...

    def odometry(self, msg, stamp_ns: int) -> None: ...

    def advance(self, stamp_ns: int) -> list:
        """Tick if due and return the trajectories (nav_msgs/Path, reasoning text, tick) published by `stamp_ns`."""


@dataclass(frozen=True)
class Published:
    """A trajectory the autopilot published: the message, when, and its reasoning text."""

    path: object  # nav_msgs/Path
    stamp_ns: int
    reasoning: str = ""
    tick: int = 0


@dataclass
class Trace:
    """Everything the metrics and the plots need, per step (from t = 0) and per published plan."""

    t_s: list = field(default_factory=list)
    state: list = field(default_factory=list)  # VehicleState
    mode: list = field(default_factory=list)  # "expert" before the handover, then the controller's Mode value
    s: list = field(default_factory=list)  # road arc length of base_link
    d: list = field(default_factory=list)  # lateral offset from the ego lane's centre, + left
    light: list = field(default_factory=list)
    lead_s: list = field(default_factory=list)  # rear bumper arc length, NaN without a lead
    plans: list = field(default_factory=list)  # (published t_s, Plan)
    frames: list = field(default_factory=list)  # (t_s, front camera as the model got it (JPEG round trip))
    end_reason: str = ""
    wall_s: float = 0.0


def plan_from_path(path, poses: dict[int, VehicleState], odom_frame: str = sensors.ODOM_FRAME, tick: int = 0,
                   reasoning: str = "") -> Plan:
    """A published nav_msgs/Path as a Plan in the world frame: poses in `odom` as they are, poses in the ego
    frame at t0 (`base_link`) moved by the car's odometry pose at t0; the t0 pose itself first."""
    t0_ns = path.header.stamp.sec * NS_PER_S + path.header.stamp.nanosec
    if t0_ns not in poses:
        raise ValueError(f"trajectory stamped {t0_ns / 1e9:.3f} s: no odometry pose of the car at that time")
    origin = poses[t0_ns]
    xy = np.array([[p.pose.position.x, p.pose.position.y] for p in path.poses], dtype=np.float64)
    if path.header.frame_id != odom_frame:
        c, s = math.cos(origin.yaw), math.sin(origin.yaw)
        xy = np.stack([origin.x + c * xy[:, 0] - s * xy[:, 1], origin.y + s * xy[:, 0] + c * xy[:, 1]], axis=1)
    stamps = [p.header.stamp.sec * NS_PER_S + p.header.stamp.nanosec for p in path.poses]
    return Plan(t_ns=np.array([t0_ns, *stamps], dtype=np.int64), xy=np.vstack([[origin.x, origin.y], xy]),
                t0_ns=t0_ns, tick=tick, reasoning=reasoning, yaw0=origin.yaw)


def _expert_state(world: World, t_s: float) -> VehicleState:
    pose = world.expert_pose(t_s)
    curvature = pose.yaw_rate / pose.speed if pose.speed > 0.1 else 0.0
    return VehicleState(pose.x, pose.y, pose.yaw, pose.speed, steer_for(curvature), pose.accel)


def simulate(world: World, autopilot: Autopilot, start_ns: int, compressed: bool, recorder=None,
             limits: VehicleLimits = LIMITS, keep_frames: bool = True, cameras: bool = True) -> Trace:
    """Run the loop over the world's duration; `recorder` (a RunBag) gets the sensors; returns the trace.

    `cameras=False` renders nothing (an autopilot that does not look: the oracle).
    """
    tracker, trace = Tracker(limits), Trace()
    end_ns = round(world.duration_s * NS_PER_S)
    handover_ns = round(HANDOVER_S * NS_PER_S)
    poses: dict[int, VehicleState] = {}  # odometry stamp -> the car's pose (what a TF lookup would give)
    state = _expert_state(world, 0.0)
    started = time.perf_counter()
    if recorder is not None:
        recorder.write_tf_static(start_ns)
        recorder.write_road(world, start_ns)
    for t_ns in range(0, end_ns + 1, STEP_NS):
        t_s, stamp = t_ns / NS_PER_S, start_ns + t_ns
        autopilot.begin_step(stamp)
        if recorder is not None and t_ns % CAMERA_PERIOD_NS == 0:
            recorder.write_world(world, t_s, stamp)
        if cameras and t_ns % CAMERA_PERIOD_NS == 0:
            images = world.render(Pose2D(state.x, state.y, state.yaw), t_s)
            for camera in range(len(CAMERA_NAMES)):
                msg = sensors.camera_message(camera, images[camera], stamp, compressed)
                autopilot.camera(camera, msg, stamp)
                if recorder is not None:
                    recorder.write(recorder.camera_topics[camera], msg, stamp)
            if keep_frames:
                trace.frames.append((t_s, sensors.jpeg_round_trip(images[FRONT_CAMERA])[1]))
        if t_ns % ODOMETRY_PERIOD_NS == 0:
            msg = sensors.odometry_message(state, stamp, limits)
            poses[stamp] = state
            autopilot.odometry(msg, stamp)
            if recorder is not None:
                recorder.write(recorder.odometry_topic, msg, stamp)
                recorder.write_tf(state, stamp)
        for published in autopilot.advance(stamp):
            plan = plan_from_path(published.path, poses, tick=published.tick, reasoning=published.reasoning)
            tracker.follow(plan)
            trace.plans.append(((published.stamp_ns - start_ns) / NS_PER_S, plan))
        s, d = world.lane_offset(state.x, state.y)
        lead = world.lead_vehicle(t_s)
        trace.t_s.append(t_s)
        trace.state.append(state)
        trace.s.append(s)
        trace.d.append(d)
        trace.light.append(world.light_state(t_s))
        trace.lead_s.append(math.nan if lead is None else lead[0])
        if t_ns < handover_ns:
            trace.mode.append("expert")
            state = _expert_state(world, (t_ns + STEP_NS) / NS_PER_S)
            continue
        control = tracker.command(state, stamp)
        trace.mode.append(control.mode.value)
        if not math.isfinite(d) or abs(d) > OFF_ROAD_M:
            trace.end_reason = f"left the road at t={t_s:.2f} s (lateral offset {d:+.2f} m)"
            break
        if lead is not None and _collides(s, d, lead[0]):
            trace.end_reason = f"collided with the lead vehicle at t={t_s:.2f} s"
            break
        state = step(state, control.command, STEP_NS / NS_PER_S, limits)
    trace.wall_s = time.perf_counter() - started
    return trace


@contextlib.contextmanager
def closing(autopilot: Autopilot, recorder=None) -> Iterator[None]:
    """Close the autopilot and the run's recorder (if any) however the run ends; a failed run's recorder is told why."""
    try:
        yield
    except BaseException as exc:
        autopilot.close()
        if recorder is not None:
            recorder.close(exc)
        raise
    autopilot.close()
    if recorder is not None:
        recorder.close()


def _collides(s: float, d: float, lead_rear_s: float) -> bool:
    """The car's front bumper reaches the lead's rear (which is ahead of the car's rear axle) side by side."""
    front = s + EGO_FRONT_M
    return abs(d) < COLLISION_LATERAL_M and front >= lead_rear_s and s <= lead_rear_s + VEHICLE_LENGTH_M


def held_messages(trace: Trace) -> list[str]:
    """Sentences for the times the car braked without a plan (none published yet, or the newest ran out)."""
    lines, start = [], None
    for t_s, mode in zip(trace.t_s + [math.inf], trace.mode + [""]):
        if mode == Mode.NO_PLAN.value and start is None:
            start = t_s
        elif mode != Mode.NO_PLAN.value and start is not None:
            first = not any(m == Mode.TRACK.value or m == Mode.HOLD.value for m in
                            trace.mode[:trace.t_s.index(start)])
            why = "no trajectory published yet" if first else "the newest trajectory ran out"
            end = t_s if math.isfinite(t_s) else trace.t_s[-1]
            lines.append(f"braking without a plan from t={start:.2f} s to {end:.2f} s: {why}")
            start = None
    return lines

"""Closed loop: the vehicle model's limits, the tracking controller, and lockstep runs of the node's tick engine."""

import csv
import dataclasses
import math

import numpy as np
import pytest

from alpamayo_ros.tools.closed_loop.controller import HOLD_DECEL_MPS2, NO_PLAN_DECEL_MPS2, Mode, Plan, Tracker, forward_path
from alpamayo_ros.tools.closed_loop.vehicle import LIMITS, Command, VehicleState, step

DT_S = 0.01
from alpamayo_ros.units import NS_PER_S

FLOAT_TOL = 1e-9  # float64 arithmetic on a few hundred steps


def drive(state: VehicleState, command: Command, seconds: float) -> VehicleState:
    for _ in range(round(seconds / DT_S)):
        state = step(state, command, DT_S)
    return state


def test_vehicle_steering_is_rate_limited_and_clipped():
    state = step(VehicleState(0.0, 0.0, 0.0, 5.0), Command(curvature=10.0, accel=0.0), DT_S)
    assert state.steer == pytest.approx(LIMITS.max_steer_rate_radps * DT_S, abs=FLOAT_TOL)
    state = drive(state, Command(curvature=10.0, accel=0.0), 3.0)
    assert state.steer == pytest.approx(LIMITS.max_steer_rad, abs=FLOAT_TOL)


def test_vehicle_acceleration_lags_and_is_clipped_and_never_reverses():
    state = step(VehicleState(0.0, 0.0, 0.0, 10.0), Command(0.0, -50.0), DT_S)
    assert state.accel == pytest.approx(-LIMITS.max_decel_mps2 * (1 - math.exp(-DT_S / LIMITS.accel_lag_s)))
    state = drive(state, Command(0.0, -50.0), 1.0)
    assert state.accel >= -LIMITS.max_decel_mps2 - FLOAT_TOL
    state = drive(state, Command(0.0, -50.0), 3.0)
    assert state.speed == 0.0 and state.accel == 0.0
    x_stopped = state.x
    assert drive(state, Command(0.0, -50.0), 1.0).x == x_stopped  # braking at rest: no motion backwards
    fast = drive(VehicleState(0.0, 0.0, 0.0, 29.0), Command(0.0, 50.0), 2.0)
    assert fast.speed == LIMITS.max_speed_mps and fast.accel <= LIMITS.max_accel_mps2 + FLOAT_TOL


def test_vehicle_follows_a_circle_of_the_commanded_curvature():
    radius, speed = 20.0, 5.0
    start = VehicleState(0.0, 0.0, 0.0, speed, steer=math.atan(LIMITS.wheelbase_m / radius))
    seconds = 12.0  # 60 m: most of half a turn
    end = drive(start, Command(1.0 / radius, 0.0), seconds)
    angle = speed * seconds / radius
    assert (end.x, end.y) == pytest.approx((radius * math.sin(angle), radius * (1 - math.cos(angle))), abs=1e-6)
    assert end.yaw == pytest.approx(angle, abs=1e-9)


def plan_of(xy_at, seconds: float = 6.4) -> Plan:
    times = np.arange(0.0, seconds + 1e-9, 0.1)
    return Plan(t_ns=np.round(times * NS_PER_S).astype(np.int64), xy=xy_at(times), t0_ns=0)


def track(plan: Plan, state: VehicleState, seconds: float) -> tuple[VehicleState, list]:
    tracker, steps = Tracker(), []
    tracker.follow(plan)
    for k in range(round(seconds / DT_S)):
        control = tracker.command(state, k * 10_000_000)
        steps.append(control)
        state = step(state, control.command, DT_S)
    return state, steps


def test_controller_tracks_a_straight_line_from_an_offset():
    speed = 10.0
    plan = plan_of(lambda t: np.stack([speed * t, np.zeros_like(t)], axis=1))
    end, steps = track(plan, VehicleState(0.0, 0.8, 0.0, speed), 6.0)
    assert abs(steps[0].lateral_error_m - 0.8) < 0.01
    assert max(abs(s.lateral_error_m) for s in steps[300:]) < 0.05  # settled within 3 s
    assert end.x == pytest.approx(speed * 6.0, abs=0.5) and end.speed == pytest.approx(speed, abs=0.1)


def test_controller_tracks_an_arc_and_its_speed_profile():
    radius, v0, decel = 40.0, 10.0, 1.0  # a left arc while slowing from 10 to 3.6 m/s

    def arc(t):
        s = v0 * t - 0.5 * decel * t ** 2
        return np.stack([radius * np.sin(s / radius), radius * (1 - np.cos(s / radius))], axis=1)

    end, steps = track(plan_of(arc), VehicleState(0.0, 0.0, 0.0, v0), 6.0)
    assert max(abs(s.lateral_error_m) for s in steps[100:]) < 0.15
    assert max(abs(s.station_error_m) for s in steps) < 0.5
    assert end.speed == pytest.approx(v0 - decel * 6.0, abs=0.3)
    assert all(s.mode is Mode.TRACK for s in steps)


def test_controller_holds_a_standing_plan_and_brakes_without_one():
    tracker = Tracker()
    assert tracker.command(VehicleState(0.0, 0.0, 0.0, 5.0), 0).command.accel == -NO_PLAN_DECEL_MPS2
    tracker.follow(plan_of(lambda t: np.zeros((len(t), 2))))
    control = tracker.command(VehicleState(0.0, 0.0, 0.0, 0.0), 1_000_000_000)
    assert control.mode is Mode.HOLD and control.command.accel == -HOLD_DECEL_MPS2
    assert tracker.command(VehicleState(0.0, 0.0, 0.0, 0.0), 7 * NS_PER_S).mode is Mode.NO_PLAN  # ran out



def test_the_car_holds_where_a_plan_turns_back_and_never_follows_it_backwards():
    """The release's unicycle has no floor at zero speed: a plan that brakes a little too hard runs back after its
    standstill. A car in drive stops where the plan got furthest, and a plan that first creeps back and then drives
    off is held at the start until it is ahead of it again."""
    x = np.concatenate([np.linspace(0.0, 5.0, 21), np.linspace(5.0, 2.0, 13)[1:]])  # 5 m forward, then 3 m back
    path = np.stack([x, np.zeros_like(x)], axis=1)
    held = forward_path(path, yaw0=0.0)
    np.testing.assert_array_equal(held[:21], path[:21])
    assert np.all(held[21:] == [5.0, 0.0])
    creep = np.stack([np.concatenate([-np.linspace(0.0, 0.3, 4), np.linspace(-0.2, 3.0, 9)]), np.zeros(13)], axis=1)
    off = forward_path(creep, yaw0=0.0)
    assert np.all(off[:5] == [0.0, 0.0]) and np.array_equal(off[5:], creep[5:])  # held until it passes the start
    assert np.all(forward_path(-path, yaw0=math.pi) == -held)  # heading west: the same plan, mirrored
    tracker = Tracker()  # 5 m/s braking at 2.5 m/s^2 and on past the standstill at 2 s, 5 m ahead: the car stops there
    tracker.follow(plan_of(lambda t: np.stack([5.0 * t - 1.25 * t * t, np.zeros_like(t)], axis=1)))
    assert np.all(tracker.plan.xy[20:] == [5.0, 0.0])
    state, steps = track(tracker.plan, VehicleState(0.0, 0.0, 0.0, 5.0), 6.0)
    assert 4.5 < state.x < 5.5 and state.speed < 0.05 and steps[-1].mode is Mode.HOLD

# -- lockstep runs of the node's tick engine (rclpy messages; the tiny random model) -----------------------------

rclpy = pytest.importorskip("rclpy", reason="rclpy is not installed")
pytest.importorskip("alpamayo_msgs.msg", reason="alpamayo_msgs is not built (make test builds it)")

from alpamayo_ros.tools import world as world_module  # noqa: E402
from alpamayo_ros.tools.closed_loop import metrics  # noqa: E402
from alpamayo_ros.tools.closed_loop.__main__ import node_config  # noqa: E402
from alpamayo_ros.tools.closed_loop.lockstep import Latency, run_lockstep  # noqa: E402
from alpamayo_ros.tools.closed_loop.loop import plan_from_path  # noqa: E402
from alpamayo_ros.tools.closed_loop.record import topic_digests  # noqa: E402

FAST = ["device:=cpu", "dtype:=float32", "max_reasoning_tokens:=8", "diffusion_steps:=4"]


def test_plan_from_an_ego_frame_path_equals_the_odom_frame_one():
    from alpamayo_ros.conversions import path_msg, to_output_frame

    yaw = 0.7
    origin = VehicleState(3.0, -2.0, yaw)
    rot = np.array([[math.cos(yaw), -math.sin(yaw), 0.0], [math.sin(yaw), math.cos(yaw), 0.0], [0.0, 0.0, 1.0]])
    xyz = np.stack([np.arange(1, 65) * 1.0, np.arange(1, 65) * 0.1, np.zeros(64)], axis=1)
    rots = np.repeat(np.eye(3)[None], 64, axis=0)
    t0_ns = 5 * NS_PER_S
    poses = {t0_ns: origin}
    ego = plan_from_path(path_msg(xyz, rots, t0_ns, "base_link"), poses)
    odom = plan_from_path(path_msg(*to_output_frame(xyz, rots, np.array([3.0, -2.0, 0.0]), rot), t0_ns, "odom"), poses)
    np.testing.assert_allclose(ego.xy, odom.xy, atol=1e-9)
    assert ego.t_ns[0] == t0_ns and ego.t_ns[1] == t0_ns + 100_000_000 and tuple(ego.xy[0]) == (3.0, -2.0)


def test_the_loop_refuses_cameras_its_world_does_not_render():
    with pytest.raises(ValueError, match="camera_ids \\['camera_front_wide_120fov'\\]: the synthetic world renders"):
        node_config(None, ["camera_topics:=[/cam/front_wide]", "camera_ids:=[camera_front_wide_120fov]"], None)


def test_lockstep_runs_with_a_fixed_latency_are_identical(tmp_path):
    cfg = node_config(None, FAST, rate_hz=2.0)
    runs = []
    for name in ("a", "b"):
        world = world_module.World(dataclasses.replace(world_module.make_scenario("lead_brake", 1001), duration_s=3.0))
        result = run_lockstep(world, cfg, Latency.parse("fixed:250"), tmp_path / name, keep_frames=False)
        measured = metrics.compute(result.trace, world, result.counts)
        del measured["wall_s"], measured["real_time_factor"]
        digests = topic_digests(tmp_path / name)
        runs.append((measured, {t: d for t, d in digests.items() if not t.endswith("/timings")}))
    assert runs[0][1]["/alpamayo/trajectory"]  # something was published
    assert runs[0][0]["published"] >= 3, runs[0][0]
    assert runs[0] == runs[1]


def test_closed_loop_benchmark_smoke_run_reports_every_model(tmp_path):
    import json
    import subprocess
    import sys

    from conftest import REPO

    out = tmp_path / "bench.json"
    subprocess.run([sys.executable, str(REPO / "bench" / "bench_closed_loop.py"), "--smoke", "--models", "random",
                    "--out", str(out)], check=True, timeout=300, capture_output=True)
    report = json.loads(out.read_text())
    assert report["summary"]["random"]["runs"] == 1 and report["runs"][0]["published"] >= 1
    assert set(report["runs"][0]) >= {"passed", "progress_ratio", "max_lane_offset_m", "red_violations", "collisions",
                                      "real_time_factor"}


def test_the_node_process_closes_the_loop_over_dds(tmp_path):
    from alpamayo_ros.tools.closed_loop.dds import run_dds

    cfg = node_config(None, FAST, rate_hz=2.0)
    world = world_module.World(dataclasses.replace(world_module.make_scenario("straight", 1002), duration_s=4.0))
    result = run_dds(world, cfg, tmp_path / "bag", None, FAST, keep_frames=False)
    assert result.counts.published >= 1, result.counts.summary()
    assert result.trace.plans and "track" in result.trace.mode  # the car followed what the node published
    digests = topic_digests(tmp_path / "bag")
    assert {"/alpamayo/trajectory", "/alpamayo/tick", "/odom", "/tf"} <= set(digests)


def test_the_lane_centre_oracle_passes_a_mixed_drive_so_the_loop_and_controller_do(tmp_path):
    from alpamayo_ros.pipeline.outcome import TickCounts
    from alpamayo_ros.tools.closed_loop.loop import simulate
    from alpamayo_ros.tools.closed_loop.oracle import LaneCentreOracle
    from alpamayo_ros.tools.closed_loop.report import plans_csv
    from alpamayo_ros.tools.make_sample_bag import START_NS

    world = world_module.generate("mixed", 1000)  # a curve, a red light it must stop for, a lead that brakes
    trace = simulate(world, LaneCentreOracle(world, START_NS), START_NS, True, keep_frames=False, cameras=False)
    measured = metrics.compute(trace, world, TickCounts())
    stood = [s for s, state, light in zip(trace.s, trace.state, trace.light) if light == "red" and state.speed == 0.0]
    assert stood and max(stood) + world_module.EGO_FRONT_M < world.stop_line_s  # it stood before the line on red
    assert metrics.passes(measured), measured
    assert measured["completed"] and measured["min_gap_m"] > 0

    table = tmp_path / "plans.csv"
    plans_csv(trace, world, table)
    rows = list(csv.DictReader(table.open()))
    assert len(rows) == len(trace.plans) > 10
    ahead = np.array([[float(row[f"plan_ahead_{t}s_m"]) for t in ("1.6", "3.2", "6.4")] for row in rows])
    offsets = np.array([[float(row[f"plan_d_{t}s_m"]) for t in ("1.6", "3.2", "6.4")] for row in rows])
    assert np.all(np.abs(offsets) < 0.05)  # the oracle plans on the lane centre, in the curve too
    assert np.all(np.diff(ahead, axis=1) >= -0.01) and ahead[:, 2].max() > 50.0  # forward along the road
    assert {row["light"] for row in rows} == {"red", "green"} and rows[0]["reasoning"] == trace.plans[0][1].reasoning
    line = np.array([float(row["stop_line_ahead_m"]) for row in rows])
    assert line[0] > 0 > line[-1] and np.all(np.diff(line) <= 0)  # the car reaches the line and passes it


def embedded_driver_run(scenario: str):
    """(world, result, metrics) of the trained driver with the node's defaults on the scenario's first held-out
    seed, lockstep with a fixed 300 ms latency, as the benchmark runs it."""
    from alpamayo_ros.tools.driver_data import HELD_OUT_SEEDS

    cfg = node_config(None, ["device:=cpu"], rate_hz=2.0)
    world = world_module.generate(scenario, HELD_OUT_SEEDS[0])
    result = run_lockstep(world, cfg, Latency.parse("fixed:300"), None, keep_frames=False)
    assert "embedded driver" in result.what, result.what
    return world, result, metrics.compute(result.trace, world, result.counts)


def test_the_embedded_driver_keeps_its_lane_on_a_held_out_straight_drive():
    """The trained driver closes the loop with the node's defaults (1 sample, lockstep, 300 ms): on the whole
    held-out straight drive it stays within the benchmark's 1.0 m of the lane centre and keeps the expert's pace
    (session 33's driver: 0.16 m and 97 %; session 19's: 0.14 m and 101 %). The car only sees the lane through the
    cameras: with the cameras in the wrong order, frames from the wrong times or the history in the wrong frame, it
    leaves the lane, as every earlier driver did (README, closed-loop table)."""
    _, _, measured = embedded_driver_run("straight")
    assert metrics.passes(measured) and measured["completed"], measured


CREEP_MPS = 0.5  # stopping for red: the car slows below this before the line while the light is red


def test_the_embedded_driver_stops_for_red_on_a_held_out_drive():
    """The trained driver with the node's defaults (lockstep, 300 ms) on the held-out red_light drive: it keeps its
    lane, slows below CREEP_MPS before the line while the light is red and never crosses it on red. Session 33's
    driver stands still 3.4 m before the line; with the node's `seed` 0-5 it slowed to 0.31 m/s or less 0.6-3.4 m
    before it in all six runs (standing still in four), so another CPU's last bits leave it a margin. Session 19's
    stood 4.3-5.4 m before it in 5 of 6; every driver shipped before that crossed on red here with some of those
    seeds (alpamayo_ros/driver/README.md)."""
    world, result, measured = embedded_driver_run("red_light")
    assert measured["red_violations"] == 0 and measured["max_lane_offset_m"] <= metrics.LANE_DEPARTURE_M, measured
    trace = result.trace
    ahead = world.stop_line_s - (np.asarray(trace.s) + world_module.EGO_FRONT_M)  # front bumper to the line
    speed = np.array([state.speed for state in trace.state])
    red = np.array([light == "red" for light in trace.light])
    assert np.any(red & (ahead > 0.0) & (speed < CREEP_MPS)), (
        f"slowest before the line on red: {speed[red & (ahead > 0.0)].min():.2f} m/s")

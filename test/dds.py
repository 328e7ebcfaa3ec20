"""Run the node and the synthetic publisher as processes and listen to every output over DDS.

Shared by the node and fault-matrix tests. Loopback only, ROS_DOMAIN_ID from conftest.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from nav_msgs.msg import Odometry, Path
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import QoSProfile, ReliabilityPolicy
from std_msgs.msg import String
from visualization_msgs.msg import MarkerArray

from alpamayo_msgs.msg import DrivingOutput, TickStatus
from alpamayo_ros.conversions import pose_from_odometry
from alpamayo_ros.conversions import stamp_to_ns as stamp_ns
from alpamayo_ros.pipeline.pose_history import discontinuity
from alpamayo_ros.tools.processes import stop
from conftest import REPO

NODE_START_TIMEOUT_S = 60.0  # imports and the tiny model
ODOMETRY_QUEUE = 500  # 10 s of 50 Hz odometry the listener may fall behind by


def ros_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    return env


@dataclass
class Received:
    paths: list = field(default_factory=list)
    reasoning: list = field(default_factory=list)
    outputs: list = field(default_factory=list)
    markers: list = field(default_factory=list)
    diagnostics: list = field(default_factory=list)
    odometry: list = field(default_factory=list)
    ticks: list = field(default_factory=list)
    node_log: str = ""
    publisher_log: str = ""
    node_returncode: int | None = None
    node_alive_at_end: bool = False

    def complete(self) -> bool:
        inference_ok = any(s.name.endswith("inference") and s.level == b"\x00" for d in self.diagnostics for s in d.status)
        return bool(self.paths and self.reasoning and self.outputs and self.markers and inference_ok)

    def statuses(self, level_at_least: bytes = b"\x01") -> list:
        return [s for d in self.diagnostics for s in d.status if s.level >= level_at_least]

    def published_t0s(self) -> list[int]:
        return [stamp_ns(t.t0) for t in self.ticks if t.outcome == TickStatus.PUBLISHED]


def run_scenario(node_params: dict[str, object], publisher_args: list[str], until: Callable[[Received], bool],
                 timeout_s: float, cpu_hogs: int = 0, extra_subscriptions: tuple = ()) -> Received:
    """Start publisher and node, listen until `until(received)` or the timeout, then stop both cleanly.

    `cpu_hogs` busy-loop processes run beside them from the node's first /diagnostics to the end (a loaded
    vehicle computer).
    `extra_subscriptions`: (message type, topic, QoS profile) the listener also subscribes with, hearing nothing.
    """
    env = ros_env()
    params = {"model_path": "tiny-random", "device": "cpu", "dtype": "float32", "rate_hz": 2.0, "max_reasoning_tokens": 6,
              **node_params}
    node_cmd = [sys.executable, "-m", "alpamayo_ros.node", "--ros-args"]
    for key, value in params.items():
        node_cmd += ["-p", f"{key}:={value}"]
    received = Received()
    context = rclpy.Context()
    rclpy.init(context=context)
    listener = rclpy.create_node("alpamayo_test_listener", context=context)
    for msg_type, topic, sink in [(Path, "/alpamayo/trajectory", received.paths),
                                  (String, "/alpamayo/reasoning", received.reasoning),
                                  (DrivingOutput, "/alpamayo/output", received.outputs),
                                  (MarkerArray, "/alpamayo/candidates", received.markers),
                                  (DiagnosticArray, "/diagnostics", received.diagnostics),
                                  (TickStatus, "/alpamayo/tick", received.ticks)]:
        listener.create_subscription(msg_type, topic, sink.append, 100)
    # Best effort, as the publisher sends it, but a deep queue: the listener must hear every pose even when the
    # busy node and publisher stall its executor for a while (sensor-data QoS keeps 5, 0.1 s of odometry).
    listener.create_subscription(Odometry, "/odom", received.odometry.append,
                                 QoSProfile(depth=ODOMETRY_QUEUE, reliability=ReliabilityPolicy.BEST_EFFORT))
    for msg_type, topic, qos in extra_subscriptions:
        listener.create_subscription(msg_type, topic, lambda msg: None, qos)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(listener)
    listening = threading.Event()
    listening.set()

    def spin() -> None:  # until cleared; shutting the executor down while it spins races its guard condition
        while listening.is_set():
            executor.spin_once(timeout_sec=0.1)

    spinner = threading.Thread(target=spin)
    spinner.start()
    hogs = []
    node = subprocess.Popen(node_cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    # The publisher creates its publishers while the node starts, and publishes only once the node runs (its first
    # /diagnostics) and both the node and this listener have matched its odometry: fault times count from a live
    # node, and the listener hears every pose the node plans from (on CI it once matched only after the third plan).
    publisher = subprocess.Popen([sys.executable, "-m", "alpamayo_ros.tools.synthetic_publisher", "--start-on-stdin",
                                  "--wait-for-subscribers", "2",
                                  "--duration", str(timeout_s + 10), *publisher_args], cwd=REPO, env=env,
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + NODE_START_TIMEOUT_S
        while not received.diagnostics and time.monotonic() < deadline and node.poll() is None:
            time.sleep(0.1)
        try:
            publisher.stdin.write("go\n")
            publisher.stdin.flush()
        except BrokenPipeError:  # the publisher died: its log says why
            pass
        hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(cpu_hogs)]
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and node.poll() is None and not until(received):
            time.sleep(0.2)
        received.node_alive_at_end = node.poll() is None
    finally:
        listening.clear()
        spinner.join()
        executor.shutdown()
        listener.destroy_node()
        rclpy.try_shutdown(context=context)
        received.node_log = stop(node)
        received.publisher_log = stop(publisher)
        received.node_returncode = node.returncode
        for hog in hogs:
            hog.kill()
            hog.wait()
    return received


def assert_paths_valid(received: Received) -> None:
    """Every published trajectory is complete, finite, with unit quaternions, from synchronised frames."""
    for path in received.paths:
        assert len(path.poses) == 64
        for pose in path.poses:
            p, q = pose.pose.position, pose.pose.orientation
            assert np.isfinite([p.x, p.y, p.z]).all()
            assert abs(np.linalg.norm([q.x, q.y, q.z, q.w]) - 1.0) < 1e-6
    for out in received.outputs:
        t0 = stamp_ns(out.header.stamp)
        offsets = np.array([stamp_ns(s) - t0 for s in out.camera_stamps]).reshape(4, 4) / 1e6
        assert np.all(np.abs(offsets - np.array([-300, -200, -100, 0])) <= 50), offsets


# -- egomotion: where the odometry jumped or changed frames, and whether outputs respect it ------------------

NEAR_CAR_M = 3.0  # a path's first pose lies ~0.8 m ahead of the car (8 m/s x 0.1 s); the output checks allow 0.5 m


def odometry_events(odometry: list, min_jump_m: float = 0.3, min_turn_deg: float = 2.0) -> list[tuple[int, str]]:
    """(stamp of the first pose after it, what) for every jump or change of frame in heard odometry messages.

    Thresholds far below the node's tolerance, so jumps it must ignore are found too.
    """
    events = []
    for before, after in zip(odometry, odometry[1:]):
        t = stamp_ns(after.header.stamp)
        if (before.header.frame_id, before.child_frame_id) != (after.header.frame_id, after.child_frame_id):
            events.append((t, f"frame {before.header.frame_id} -> {after.header.frame_id}"))
            continue
        jump = discontinuity(pose_from_odometry(before, "/odom"), pose_from_odometry(after, "/odom"), min_jump_m,
                             min_turn_deg)
        if jump is not None:
            events.append((t, jump.text()))
    return events


def spanning(outputs: list, t_ns: int) -> list[int]:
    """t0 of the outputs (DrivingOutput) whose history spans `t_ns`: begins before it and ends at or after it."""
    return [stamp_ns(o.header.stamp) for o in outputs if stamp_ns(o.history_start) < t_ns <= stamp_ns(o.history_end)]


def resumed_from(outputs: list, t_ns: int) -> bool:
    """Some output's whole history lies at or after `t_ns`."""
    return any(stamp_ns(o.history_start) >= t_ns for o in outputs)


def assert_paths_near_the_car(paths: list, odometry: list, max_m: float = NEAR_CAR_M) -> None:
    """Every path's first pose (t0 + 0.1 s) lies within `max_m` of the car's pose at t0, in the frame it names.

    A path in the vehicle frame (an odometry child_frame_id: the ego frame at t0) starts near its origin; one
    in an odometry frame starts near the odometry pose in that frame nearest t0 (the path's stamp): the node
    had odometry there, where after t0 a stalled publisher may have sent none for a while.
    """
    vehicle_frames = {m.child_frame_id for m in odometry}
    heard = [stamp_ns(m.header.stamp) for m in odometry]
    first_heard, last_heard = (min(heard), max(heard)) if heard else (None, None)
    checked = 0
    for path in paths:
        frame, first = path.header.frame_id, path.poses[0]
        p = np.array([first.pose.position.x, first.pose.position.y])
        if frame in vehicle_frames:
            assert np.linalg.norm(p) < max_m, f"path in {frame} starts at {p}, not at the car"
            checked += 1
            continue
        t0 = stamp_ns(path.header.stamp)
        if not heard or not first_heard <= t0 <= last_heard:
            # Odometry is best effort and volatile: the node may match the publisher and plan from poses sent
            # before the listener matched it (seen: a first path 0.45 s before the listener's first pose).
            continue
        same_frame = [m for m in odometry if m.header.frame_id == frame]
        assert same_frame, f"path labelled {frame!r}: no odometry pose was in that frame"
        car = min(same_frame, key=lambda m: abs(stamp_ns(m.header.stamp) - t0))
        gap_s = abs(stamp_ns(car.header.stamp) - t0) / 1e9
        assert gap_s <= 0.2, f"no odometry in {frame} near t0 {t0 / 1e9:.3f} s: the nearest heard is {gap_s:.3f} s away"
        c = np.array([car.pose.pose.position.x, car.pose.pose.position.y])
        assert np.linalg.norm(p - c) < max_m, f"path in {frame} starts {np.linalg.norm(p - c):.1f} m from the car"
        checked += 1
    assert checked or not paths, f"none of {len(paths)} paths lies within the odometry the listener heard"

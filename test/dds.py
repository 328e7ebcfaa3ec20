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
from rclpy.qos import qos_profile_sensor_data
from std_msgs.msg import String
from visualization_msgs.msg import MarkerArray

from alpamayo_msgs.msg import DrivingOutput, TickStatus
from alpamayo_ros.conversions import stamp_to_ns as stamp_ns
from alpamayo_ros.tools.processes import stop
from conftest import REPO

NODE_START_TIMEOUT_S = 60.0  # imports and the tiny model


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
                 timeout_s: float, cpu_hogs: int = 0) -> Received:
    """Start publisher and node, listen until `until(received)` or the timeout, then stop both cleanly.

    `cpu_hogs` busy-loop processes run beside them the whole time (a loaded vehicle computer).
    """
    env = ros_env()
    params = {"device": "cpu", "dtype": "float32", "rate_hz": 2.0, "max_reasoning_tokens": 6, **node_params}
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
    listener.create_subscription(Odometry, "/odom", received.odometry.append, qos_profile_sensor_data)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(listener)
    spinner = threading.Thread(target=executor.spin)
    spinner.start()
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(cpu_hogs)]
    node = subprocess.Popen(node_cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    publisher = None
    try:
        # Feed the node only once it runs (its first /diagnostics), so fault times count from a live node.
        deadline = time.monotonic() + NODE_START_TIMEOUT_S
        while not received.diagnostics and time.monotonic() < deadline and node.poll() is None:
            time.sleep(0.1)
        publisher = subprocess.Popen([sys.executable, "-m", "alpamayo_ros.tools.synthetic_publisher", "--duration",
                                      str(timeout_s + 10), *publisher_args],
                                     cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and node.poll() is None and not until(received):
            time.sleep(0.2)
        received.node_alive_at_end = node.poll() is None
    finally:
        executor.shutdown()
        spinner.join()
        listener.destroy_node()
        rclpy.try_shutdown(context=context)
        received.node_log = stop(node)
        received.publisher_log = stop(publisher) if publisher is not None else ""
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

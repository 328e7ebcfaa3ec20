"""The same loop over DDS: the real node process on sim time, the simulator publishing its sensors and /clock.

The node runs as `python -m alpamayo_ros.node` with use_sim_time:=true on loopback DDS (this process's
ROS_DOMAIN_ID, ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST). The simulator publishes the cameras, the
odometry and /clock at each 10 ms step, paced to at most real time (slower when rendering cannot keep
up: the node's compute then costs less simulated time, which the printed real-time factor shows), and
the car follows whatever arrives on ~/trajectory. Every output the node publishes is recorded in the
run's bag at the simulated time it arrived. Not reproducible by nature; `--mode lockstep` is.
"""

from __future__ import annotations

import collections
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

import rclpy
from nav_msgs.msg import Odometry
from nav_msgs.msg import Path as PathMsg
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.serialization import deserialize_message
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CompressedImage, Image

from alpamayo_msgs.msg import TickStatus
from alpamayo_ros.conversions import message_class, ns_to_stamp
from alpamayo_ros.parameters import ImageTransport, NodeConfig
from alpamayo_ros.pipeline.outcome import Status, TickCounts
from alpamayo_ros.pipeline.sync import Missing
from alpamayo_ros.tools.make_sample_bag import START_NS
from alpamayo_ros.tools.processes import stop
from alpamayo_ros.tools.replay import OUTPUT_TYPES
from alpamayo_ros.tools.world import World
from alpamayo_ros.units import NS_PER_S

from .lockstep import RunResult
from .loop import Published, closing, simulate
from .record import RunBag

DISCOVERY_TIMEOUT_S = 90.0  # the node's start: imports, the model, its subscriptions
DISCOVERY_SETTLE_S = 1.0
OUTPUT_WAIT_S = 2.0  # after the last step, for outputs in flight
RELIABLE = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)


class DdsError(RuntimeError):
    """The node did not come up or answer; the message says what is missing, with its log's tail."""


class DdsAutopilot:
    """The node process fed over DDS; see the module docstring."""

    def __init__(self, cfg: NodeConfig, node_args: list[str], bag: RunBag | None, node: str = "/alpamayo",
                 pace: float = 1.0) -> None:
        self.cfg, self.bag, self.node, self.pace = cfg, bag, node, pace
        self.context = rclpy.Context()
        rclpy.init(args=[], context=self.context)  # not sys.argv: the CLI's NAME:=VALUE would read as remaps
        self.ros = rclpy.create_node("alpamayo_closed_loop", context=self.context)
        image_type = CompressedImage if cfg.image_transport is ImageTransport.COMPRESSED else Image
        self.cameras = [self.ros.create_publisher(image_type, topic, qos_profile_sensor_data)
                        for topic in cfg.subscribed_camera_topics]
        self.odom = self.ros.create_publisher(Odometry, cfg.odometry_topic, qos_profile_sensor_data)
        self.clock = self.ros.create_publisher(Clock, "/clock", RELIABLE)
        self._received: queue.SimpleQueue = queue.SimpleQueue()
        for name, msgtype in OUTPUT_TYPES.items():
            self.ros.create_subscription(message_class(msgtype), f"{node}/{name}",
                                         lambda raw, n=name: self._received.put((n, raw)), RELIABLE, raw=True)
        self.ticks: dict[int, list[TickStatus]] = collections.defaultdict(list)
        self._reasoning = ""
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.ros)
        self._spinner = threading.Thread(target=self.executor.spin, name="closed-loop-spin")
        self._spinner.start()
        self.process = subprocess.Popen([sys.executable, "-m", "alpamayo_ros.node", "--ros-args", "-p",
                                         "use_sim_time:=true", *node_args], stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True)
        self.node_log = ""
        self._wall_start: float | None = None
        self._sim_start_ns = START_NS

    def wait_for_node(self) -> None:
        deadline = time.monotonic() + DISCOVERY_TIMEOUT_S
        publishers = {**{p.topic_name: p for p in self.cameras}, self.odom.topic_name: self.odom, "/clock": self.clock}
        while True:
            unheard = [topic for topic, pub in publishers.items() if pub.get_subscription_count() == 0]
            if not unheard:
                time.sleep(DISCOVERY_SETTLE_S)
                return
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise DdsError(f"the node never subscribed to {unheard} (exit code {self.process.returncode}); its "
                               f"log ends:\n{self.node_log[-2000:]}")
            time.sleep(0.1)

    def close(self) -> None:
        if self.executor is not None:
            self.executor.shutdown()
            self._spinner.join()
            self.ros.destroy_node()
            rclpy.try_shutdown(context=self.context)
            self.executor = None
        if self.process.poll() is None or not self.node_log:
            self.node_log = stop(self.process)

    def camera(self, camera: int, msg, stamp_ns: int) -> None:
        self.cameras[camera].publish(msg)

    def odometry(self, msg, stamp_ns: int) -> None:
        self.odom.publish(msg)

    def begin_step(self, stamp_ns: int) -> None:
        """Wait until `stamp_ns` is due on the wall clock (at most real time x pace), then publish /clock."""
        if self._wall_start is None:
            self._wall_start, self._sim_start_ns = time.monotonic(), stamp_ns
        ahead = (stamp_ns - self._sim_start_ns) / NS_PER_S / self.pace - (time.monotonic() - self._wall_start)
        if ahead > 0:
            time.sleep(ahead)
        self.clock.publish(Clock(clock=ns_to_stamp(stamp_ns)))

    def advance(self, stamp_ns: int) -> list[Published]:
        return self.drain(stamp_ns)

    def drain(self, stamp_ns: int) -> list[Published]:
        """Record what the node published since the last step (at this simulated time); the new trajectories."""
        published = []
        while True:
            try:
                name, raw = self._received.get_nowait()
            except queue.Empty:
                return published
            if self.bag is not None:
                self.bag.writer.write(self.bag.connections[f"{self.node}/{name}"], stamp_ns, bytes(raw))
            if name == "tick":
                msg = deserialize_message(bytes(raw), TickStatus)
                self.ticks[msg.tick].append(msg)
            elif name == "reasoning":
                self._reasoning = deserialize_message(bytes(raw), message_class(OUTPUT_TYPES["reasoning"])).data
            elif name == "trajectory":
                published.append(Published(deserialize_message(bytes(raw), PathMsg), stamp_ns, self._reasoning))

    def counts(self) -> TickCounts:
        """The node's tick outcomes as it reported them on ~/tick (the last report of each tick)."""
        counts = TickCounts(ticks=len(self.ticks))
        for reports in self.ticks.values():
            final = Status(reports[-1].outcome)
            if final is Status.PUBLISHED:
                counts.published += 1
            elif final is Status.NOT_READY:
                counts.not_ready[_missing(reports[-1].reason)] += 1
            elif final is Status.DROPPED_BUSY:
                counts.dropped += 1
            elif final is Status.REJECTED:
                counts.rejected += 1
            elif final is Status.MODEL_ERROR:
                counts.model_errors += 1
        return counts


def _missing(reason: str) -> Missing:
    """The not-ready kind a reason text names (the node's ~/tick carries the text only)."""
    for kind in Missing:
        if kind.value in reason:
            return kind
    return Missing.NO_FRAMES if "without frames" in reason else Missing.STALE


def node_arguments(cfg: NodeConfig, params_file: Path | None, overrides: list[str]) -> list[str]:
    """--ros-args for the node: the user's file and overrides, plus the loop's transport and rate."""
    args = ["--params-file", str(params_file)] if params_file is not None else []
    for text in overrides:
        args += ["-p", text]
    args += ["-p", f"image_transport:={cfg.image_transport.value}", "-p", f"rate_hz:={cfg.rate_hz}"]
    return args


def run_dds(world: World, cfg: NodeConfig, bag_path: Path | None, params_file: Path | None,
            overrides: list[str], pace: float = 1.0, keep_frames: bool = True) -> RunResult:
    """One run of `world` against the node process over DDS (bag written to `bag_path` if given)."""
    compressed = cfg.image_transport is ImageTransport.COMPRESSED
    bag = None if bag_path is None else RunBag(bag_path, list(cfg.subscribed_camera_topics), compressed,
                                               cfg.odometry_topic)
    autopilot = DdsAutopilot(cfg, node_arguments(cfg, params_file, overrides), bag, pace=pace)
    with closing(autopilot, bag):
        autopilot.wait_for_node()
        trace = simulate(world, autopilot, START_NS, compressed, bag, keep_frames=keep_frames)
        time.sleep(OUTPUT_WAIT_S)
        autopilot.drain(START_NS + round(trace.t_s[-1] * NS_PER_S))
    model_line = next((line for line in autopilot.node_log.splitlines() if "model" in line.lower()), "")
    what = f"the node process over DDS ({model_line.strip()[-160:] or 'its configured model'})"
    return RunResult(trace, autopilot.counts(), what)

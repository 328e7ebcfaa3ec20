"""Real-time replay over DDS: a rosbag2 played into a running node on sim time, its outputs recorded.

The bag's messages are republished as raw CDR (no decode) at the bag's pace times `rate`, with
`/clock` following the bag's time; the node must run with `use_sim_time:=true`. Ticks the model
cannot keep up with are dropped by the node, as on a car: this is the test of a running node, not a
reproducible evaluation (that is `replay --mode lockstep`, in-process). The output bag gets the
node's outputs and a copy of the odometry (the ground truth `evaluate` needs).
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rosgraph_msgs.msg import Clock

from alpamayo_msgs.msg import TickStatus
from alpamayo_ros.conversions import message_class, ns_to_stamp
from alpamayo_ros.tools.bag_io import (
    OUTPUT_QOS,
    SENSOR_QOS,
    alpamayo_typestore,
    new_bag,
    open_bag,
    read_messages,
    require_topics,
    storage_of,
)
from alpamayo_ros.units import NS_PER_S

DISCOVERY_TIMEOUT_S = 60.0  # for the node's subscriptions to appear
DISCOVERY_SETTLE_S = 1.0
OUTPUT_WAIT_S = 2.0  # after the bag's end, for the node's last outputs


OUTPUT_TYPES = {"trajectory": "nav_msgs/msg/Path", "reasoning": "std_msgs/msg/String",
                "output": "alpamayo_msgs/msg/DrivingOutput", "candidates": "visualization_msgs/msg/MarkerArray",
                "tick": "alpamayo_msgs/msg/TickStatus"}
RELIABLE = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)


class ReplayError(RuntimeError):
    """The node did not answer as the replay needs; the message says what is missing."""


@dataclass
class Counts:
    """Ticks reported by the node (tick -> outcomes in order) and outputs recorded."""

    ticks: dict[int, list[int]] = field(default_factory=dict)
    published: int = 0
    last_reason: str = ""


def parse_remaps(remaps: list[str]) -> dict[str, str]:
    """['/a:=/b'] -> {'/a': '/b'}."""
    out = {}
    for remap in remaps:
        source, sep, target = remap.partition(":=")
        if not sep or not source.startswith("/") or not target.startswith("/"):
            raise ReplayError(f"--remap {remap!r}: expected /from:=/to")
        out[source] = target
    return out


class Replayer:
    """Publishes one bag into the node and records the node's answers; see the module docstring."""

    def __init__(self, reader, writer, typestore, node: str, odometry_topic: str,
                 remaps: dict[str, str]) -> None:
        self.reader, self.writer, self.typestore, self.node = reader, writer, typestore, node
        self.odometry_topic, self.remaps = odometry_topic, remaps
        self.counts = Counts()
        self._reports = threading.Condition()
        self._received: queue.SimpleQueue = queue.SimpleQueue()
        self._clock_ns = reader.start_time
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.ros = rclpy.create_node("alpamayo_replay", context=self.context)
        self.publishers, skipped = {}, set()
        for connection in reader.connections:
            topic = remaps.get(connection.topic, connection.topic)
            if topic in ("/clock", "/diagnostics") or topic.startswith(f"{node}/"):
                continue  # the replay drives the clock; a recording's own node outputs must not be replayed
            cls = message_class(connection.msgtype)
            if cls is None:
                skipped.add(f"{topic} ({connection.msgtype})")
            elif topic not in self.publishers:
                durability = DurabilityPolicy.TRANSIENT_LOCAL if topic == "/tf_static" else DurabilityPolicy.VOLATILE
                self.publishers[topic] = self.ros.create_publisher(
                    cls, topic, QoSProfile(depth=100, durability=durability, reliability=ReliabilityPolicy.RELIABLE))
        if skipped:
            print(f"replay: not republished (no Python message package here): {', '.join(sorted(skipped))}")
        self.clock_pub = self.ros.create_publisher(Clock, "/clock", RELIABLE)
        self.outputs = {}
        for name, msgtype in OUTPUT_TYPES.items():
            topic = f"{node}/{name}"
            self.outputs[topic] = writer.add_connection(topic, msgtype, typestore=typestore,
                                                        offered_qos_profiles=OUTPUT_QOS)
            self.ros.create_subscription(message_class(msgtype), topic,
                                         lambda raw, t=topic: self._received.put((t, raw)), RELIABLE, raw=True)
        self.ros.create_subscription(TickStatus, f"{node}/tick", self._on_tick, RELIABLE)
        self.odometry_out = None
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.ros)
        self._spinner = threading.Thread(target=self.executor.spin, name="replay-spin")
        self._spinner.start()

    def close(self) -> None:
        self.executor.shutdown()
        self._spinner.join()
        self.ros.destroy_node()
        rclpy.try_shutdown(context=self.context)

    def _on_tick(self, msg: TickStatus) -> None:
        with self._reports:
            self.counts.ticks.setdefault(msg.tick, []).append(msg.outcome)
            self.counts.last_reason = msg.reason or self.counts.last_reason
            self._reports.notify_all()

    def wait_for_node(self, required: list[str]) -> None:
        deadline = time.monotonic() + DISCOVERY_TIMEOUT_S
        while True:
            unheard = [t for t in required if self.publishers[t].get_subscription_count() == 0]
            if self.clock_pub.get_subscription_count() == 0:
                unheard.append("/clock")
            if not unheard:
                time.sleep(DISCOVERY_SETTLE_S)  # the node's side of the match may lag the publishers' view
                return
            if time.monotonic() > deadline:
                raise ReplayError(f"no subscriber on {unheard} after {DISCOVERY_TIMEOUT_S:.0f} s: is the node running "
                                  "with use_sim_time:=true on these topics (and this ROS_DOMAIN_ID)?")
            time.sleep(0.1)

    def publish_clock(self, stamp_ns: int) -> None:
        self._clock_ns = stamp_ns
        self.clock_pub.publish(Clock(clock=ns_to_stamp(stamp_ns)))

    def drain(self) -> None:
        """Write what the node published so far, stamped with the sim time it arrived at."""
        while True:
            try:
                topic, raw = self._received.get_nowait()
            except queue.Empty:
                return
            self.writer.write(self.outputs[topic], self._clock_ns, bytes(raw))
            self.counts.published += topic.endswith("/output")

    def send(self, topic: str, msgtype: str, stamp_ns: int, raw) -> None:
        if topic in self.publishers:
            self.publishers[topic].publish(bytes(raw))
        if topic == self.odometry_topic:  # ground truth for evaluate
            if self.odometry_out is None:
                self.odometry_out = self.writer.add_connection(topic, msgtype, typestore=self.typestore,
                                                               offered_qos_profiles=SENSOR_QOS)
            self.writer.write(self.odometry_out, stamp_ns, bytes(raw))

    def run(self, rate: float) -> Counts:
        wall_start, bag_start = time.monotonic(), self.reader.start_time
        self.publish_clock(bag_start)
        for connection, stamp, raw in read_messages(self.reader):
            delay = (stamp - bag_start) / NS_PER_S / rate - (time.monotonic() - wall_start)
            if delay > 0:
                time.sleep(delay)
            self.publish_clock(stamp)
            self.drain()
            self.send(self.remaps.get(connection.topic, connection.topic), connection.msgtype, stamp, raw)
        time.sleep(1.0 + OUTPUT_WAIT_S)  # the last ticks' outputs still in flight
        self.drain()
        return self.counts


def replay_realtime(bag: Path, out: Path, rate: float = 1.0, node: str = "/alpamayo",
                    camera_topics: list[str] | None = None, odometry_topic: str = "/odom",
                    remaps: dict[str, str] | None = None) -> Counts:
    """Play `bag` into the running node at `rate` x real time and write its outputs (plus the odometry) to `out`."""
    remaps = remaps or {}
    typestore = alpamayo_typestore()
    reader = open_bag([bag], typestore)
    try:
        images = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
        cameras = camera_topics or sorted({remaps.get(c.topic, c.topic) for c in reader.connections if c.msgtype in images})
        required = list(cameras) + [odometry_topic]
        require_topics(reader, required, remaps)
        with new_bag(out, storage_of(reader)) as writer:
            replayer = Replayer(reader, writer, typestore, node, odometry_topic, remaps)
            try:
                replayer.wait_for_node(required)
                return replayer.run(rate)
            finally:
                replayer.close()
    finally:
        reader.close()

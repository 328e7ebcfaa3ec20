"""Replay a rosbag2 (mcap or sqlite3) into the running node on sim time, and record what it publishes.

The bag's messages are republished as raw CDR (no decode) with `/clock` following the bag's time; the
node must run with `use_sim_time:=true`. Two modes:

- lockstep: the clock advances one node tick period at a time (on the grid of whole periods); after
  each step the replay waits for the node's `~/tick` report of that tick and, if it reached the model,
  for its outcome. Every tick sees the same data whatever the machine speed.
- realtime: messages go out at the bag's pace times `--rate`; ticks the model cannot keep up with
  are dropped by the node, as on a car.

The output bag gets the node's outputs and a copy of the odometry (the ground truth `evaluate` needs).

    python -m alpamayo_ros.tools.replay sample_bag --out replay_out --mode lockstep
"""

from __future__ import annotations

import argparse
import importlib
import os
import queue
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rosbags.rosbag2 import Writer
from rosgraph_msgs.msg import Clock

from alpamayo_msgs.msg import TickStatus
from alpamayo_ros.conversions import ns_to_stamp, stamp_to_ns
from alpamayo_ros.tools.bag_io import BagError, alpamayo_typestore, open_bag, read_messages, require_topics, storage_of

NS_PER_S = 1_000_000_000
DISCOVERY_TIMEOUT_S = 60.0  # for the node's subscriptions to appear
DISCOVERY_SETTLE_S = 1.0
NOT_READY_TIMEOUT_S = 5.0  # a tick report is this late at most when no model runs
SETTLE_S = 0.03  # between a step's data and its /clock, so the data is delivered first


OUTPUT_TYPES = {"trajectory": "nav_msgs/msg/Path", "reasoning": "std_msgs/msg/String",
                "output": "alpamayo_msgs/msg/DrivingOutput", "candidates": "visualization_msgs/msg/MarkerArray",
                "tick": "alpamayo_msgs/msg/TickStatus"}
FINAL_OUTCOMES = (TickStatus.PUBLISHED, TickStatus.REJECTED, TickStatus.MODEL_ERROR)
RELIABLE = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)


class ReplayError(RuntimeError):
    """The node did not answer as the replay needs; the message says what is missing."""


@dataclass
class Counts:
    """Ticks reported by the node (tick -> outcomes in order) and outputs recorded."""

    ticks: dict[int, list[int]] = field(default_factory=dict)
    published: int = 0
    steps_without_tick: int = 0
    last_tick_stamp_ns: int = -1
    last_reason: str = ""


def message_class(msgtype: str):
    """'sensor_msgs/msg/Image' -> the rclpy message class, or None if its package is not installed."""
    package, _, name = msgtype.split("/")
    try:
        return getattr(importlib.import_module(f"{package}.msg"), name)
    except (ImportError, AttributeError):
        return None


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

    def __init__(self, reader, writer: Writer, typestore, node: str, odometry_topic: str,
                 remaps: dict[str, str], model_timeout_s: float) -> None:
        self.reader, self.writer, self.typestore, self.node = reader, writer, typestore, node
        self.odometry_topic, self.remaps, self.model_timeout_s = odometry_topic, remaps, model_timeout_s
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
            self.outputs[topic] = writer.add_connection(topic, msgtype, typestore=typestore)
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
            self.counts.last_tick_stamp_ns = stamp_to_ns(msg.header.stamp)
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

    def step(self, stamp_ns: int) -> None:
        """Lockstep: advance the clock to `stamp_ns` and wait for that tick, and its outcome if it reached the model."""
        time.sleep(SETTLE_S)
        self.publish_clock(stamp_ns)
        with self._reports:
            if not self._reports.wait_for(lambda: self.counts.last_tick_stamp_ns >= stamp_ns, NOT_READY_TIMEOUT_S):
                self.counts.steps_without_tick += 1  # reported at the end: --tick-hz differs from rate_hz?
                return
            tick = max(self.counts.ticks)
            if self.counts.ticks[tick][-1] == TickStatus.SUBMITTED and not self._reports.wait_for(
                    lambda: self.counts.ticks[tick][-1] in FINAL_OUTCOMES, self.model_timeout_s):
                raise ReplayError(f"tick {tick}: no result from the model within {self.model_timeout_s:.0f} s")
        self.drain()

    def send(self, topic: str, msgtype: str, stamp_ns: int, raw) -> None:
        if topic in self.publishers:
            self.publishers[topic].publish(bytes(raw))
        if topic == self.odometry_topic:  # ground truth for evaluate
            if self.odometry_out is None:
                self.odometry_out = self.writer.add_connection(topic, msgtype, typestore=self.typestore)
            self.writer.write(self.odometry_out, stamp_ns, bytes(raw))

    def run(self, mode: str, rate: float, tick_hz: float) -> Counts:
        period_ns = round(NS_PER_S / tick_hz)
        next_step = (self.reader.start_time // period_ns + 1) * period_ns  # the node's timer grid: whole periods
        wall_start, bag_start = time.monotonic(), self.reader.start_time
        self.publish_clock(bag_start)
        for connection, stamp, raw in read_messages(self.reader):
            topic = self.remaps.get(connection.topic, connection.topic)
            if mode == "lockstep":
                while stamp > next_step:
                    self.step(next_step)
                    next_step += period_ns
                # Keep the clock with the data (never far behind it) without reaching the next tick's time.
                self.publish_clock(min(stamp, next_step - 1))
            else:
                delay = (stamp - bag_start) / NS_PER_S / rate - (time.monotonic() - wall_start)
                if delay > 0:
                    time.sleep(delay)
                self.publish_clock(stamp)
                self.drain()
            self.send(topic, connection.msgtype, stamp, raw)
        if mode == "lockstep":
            self.step(next_step)
        else:
            time.sleep(1.0)
        time.sleep(0.2)  # outputs still in flight
        self.drain()
        return self.counts


def replay(bag: Path, out: Path, mode: str = "lockstep", rate: float = 1.0, tick_hz: float = 2.0,
           node: str = "/alpamayo", camera_topics: list[str] | None = None, odometry_topic: str = "/odom",
           remaps: dict[str, str] | None = None, model_timeout_s: float = 300.0) -> Counts:
    """Replay `bag` into the running node and write its outputs (plus the odometry) to the new bag `out`."""
    remaps = remaps or {}
    typestore = alpamayo_typestore()
    reader = open_bag([bag], typestore)
    try:
        images = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
        cameras = camera_topics or sorted({remaps.get(c.topic, c.topic) for c in reader.connections if c.msgtype in images})
        required = list(cameras) + [odometry_topic]
        require_topics(reader, required, remaps)
        with Writer(out, version=8, storage_plugin=storage_of(reader)) as writer:
            replayer = Replayer(reader, writer, typestore, node, odometry_topic, remaps, model_timeout_s)
            try:
                replayer.wait_for_node(required)
                return replayer.run(mode, rate, tick_hz)
            finally:
                replayer.close()
    finally:
        reader.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bag", type=Path, help="rosbag2 directory or file (mcap or sqlite3)")
    parser.add_argument("--out", type=Path, required=True, help="new bag directory for the node's outputs")
    parser.add_argument("--mode", choices=("lockstep", "realtime"), default="lockstep")
    parser.add_argument("--rate", type=float, default=1.0, help="realtime: playback speed factor")
    parser.add_argument("--tick-hz", type=float, default=2.0, help="the node's rate_hz (lockstep steps)")
    parser.add_argument("--node", default="/alpamayo", help="the node's fully qualified name")
    parser.add_argument("--camera-topics", nargs=4, default=None, help="must be in the bag (after --remap)")
    parser.add_argument("--odometry-topic", default="/odom")
    parser.add_argument("--remap", action="append", default=[], metavar="/FROM:=/TO")
    args = parser.parse_args(argv)
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    if args.out.exists():
        parser.error(f"{args.out} exists; rosbag2 writes a new directory")
    try:
        counts = replay(args.bag, args.out, args.mode, args.rate, args.tick_hz, args.node, args.camera_topics,
                        args.odometry_topic, parse_remaps(args.remap))
    except (ReplayError, BagError) as exc:
        print(f"replay: {exc}", file=sys.stderr)
        return 2
    if counts.steps_without_tick:
        print(f"replay: {counts.steps_without_tick} lockstep steps saw no tick: is --tick-hz the node's rate_hz?",
              file=sys.stderr)
    outcomes = [o[-1] for o in counts.ticks.values()]
    print(f"replay: {len(counts.ticks)} ticks, {counts.published} outputs recorded to {args.out} "
          f"(final outcomes: {dict(sorted((o, outcomes.count(o)) for o in set(outcomes)))}); "
          f"last reason: {counts.last_reason or '-'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

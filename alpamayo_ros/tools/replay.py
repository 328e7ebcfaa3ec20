"""Replay a rosbag2 (mcap or sqlite3) through the node's pipeline and record what it would publish.

- lockstep (default): in this process, no node and no DDS. Messages are fed in log order to the same
  `Inputs` the node's callbacks fill, and the node's tick engine (`pipeline.engine`, without its worker thread)
  runs a tick at every exact multiple of 1 / tick_hz of bag time, to completion before the next message. Same bag and
  parameters give bitwise identical outputs under any machine load (the `torch_threads` parameter fixes
  torch's thread count, which can change float reductions; machines whose CPUs make torch choose other
  kernels may differ in the last bits). Wall-clock stage timings, which differ run to run by
  nature, go to their own topic `<node>/timings`; `DrivingOutput.timings` carries only the
  deterministic fields (latency on bag time, decode tokens).
- realtime: play the bag over DDS into a running node (`use_sim_time:=true`), at `--rate` x real time.

The output bag holds `<node>/output`, `/trajectory`, `/reasoning`, `/candidates`, `/tick` and a copy of
the odometry: what `tools.evaluate` reads. With `route_topic` / `route_path_topic` (Alpamayo 1.5) the bag's
route is fed too; `route_variant` "none" leaves it out, "swapped" swaps left and right (`tools.route_compare`).

    python -m alpamayo_ros.tools.replay BAG --out DIR --mode lockstep --tick-hz 2 \\
        --camera-topics T1 T2 T3 T4 --odometry-topic /odom [--params-file YAML] [--param NAME:=VALUE ...]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from tqdm import tqdm

from alpamayo_ros import parameters
from alpamayo_ros.parameters import NodeConfig, OutputFrame
from alpamayo_ros.pipeline.engine import build_model, model_engine
from alpamayo_ros.pipeline.inputs import Inputs
from alpamayo_ros.pipeline.outcome import Status, TickCounts, TickReport
from alpamayo_ros.pipeline.route import RouteInput
from alpamayo_ros.ros_env import loopback_dds_env
from alpamayo_ros.tools.bag_io import (
    OUTPUT_QOS,
    SENSOR_QOS,
    BagError,
    alpamayo_typestore,
    new_bag,
    open_bag,
    read_messages,
    require_topics,
    storage_of,
)
from alpamayo_ros.units import NS_PER_S

IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
OUTPUT_TYPES = {"trajectory": "nav_msgs/msg/Path", "reasoning": "std_msgs/msg/String",
                "output": "alpamayo_msgs/msg/DrivingOutput", "candidates": "visualization_msgs/msg/MarkerArray",
                "tick": "alpamayo_msgs/msg/TickStatus", "timings": "alpamayo_msgs/msg/StageTimings"}
ROUTE_VARIANTS = ("as_recorded", "none", "swapped")  # the bag's route, no route, left and right swapped


class Lockstep:
    """The pipeline over one bag: feed messages, tick at exact times, write every output."""

    def __init__(self, cfg: NodeConfig, model, writer, typestore, node: str = "/alpamayo",
                 camera_topics: list[str] | None = None, route_variant: str = "as_recorded") -> None:
        from rclpy.serialization import deserialize_message, serialize_message

        from alpamayo_ros import conversions

        self._conversions, self._serialize, self._deserialize = conversions, serialize_message, deserialize_message
        self.cfg, self.model, self.writer, self.typestore = cfg, model, writer, typestore
        self.camera_topics = list(camera_topics or cfg.subscribed_camera_topics)
        route = None
        if cfg.has_route and route_variant != "none":
            route = RouteInput(cfg.max_route_age_ns, swap_left_right=route_variant == "swapped")
        self.inputs = Inputs(self.camera_topics, cfg.odometry_topic, cfg.sync, route, cfg.camera_names)
        self.engine = model_engine(self.inputs, model, cfg.tick_settings, cfg.sampling)  # no worker: lockstep
        self.outputs = {name: writer.add_connection(f"{node}/{name}", msgtype, typestore=typestore,
                                                    offered_qos_profiles=OUTPUT_QOS)
                        for name, msgtype in OUTPUT_TYPES.items()}
        self._classes: dict[str, type] = {}
        self._odometry_out = None
        self.refused: list[str] = []
        self.model_seconds = 0.0

    def feed(self, topic: str, msgtype: str, raw: bytes, now_ns: int) -> None:
        """One bag message at bag time `now_ns`, as the node's callback would take it."""
        conversions = self._conversions
        now_s = now_ns / NS_PER_S  # the monitors' arrival clock: bag time, so diagnostics replay too
        msg = self._deserialize(raw, self._class(msgtype))
        if topic == self.cfg.odometry_topic:
            if self._odometry_out is None:
                self._odometry_out = self.writer.add_connection(topic, msgtype, typestore=self.typestore,
                                                                offered_qos_profiles=SENSOR_QOS)
            self.writer.write(self._odometry_out, now_ns, raw)  # ground truth for evaluate
            refused = conversions.take_odometry(self.inputs, msg, now_ns, now_s)
        elif topic in (self.cfg.route_topic, self.cfg.route_path_topic):
            if self.inputs.route is None:  # route_variant "none"
                return
            take = conversions.take_route_text if topic == self.cfg.route_topic else conversions.take_route_path
            refused = take(self.inputs, msg, topic, now_ns)
        else:
            refused = conversions.take_image(self.inputs, self.camera_topics.index(topic), msg, now_ns, now_s)
        if refused is not None:
            self.refused.append(refused.text)

    def tick(self, now_ns: int) -> None:
        """One tick at bag time `now_ns`, run to completion."""
        started = time.perf_counter()
        events = self.engine.tick(now_ns)
        self.model_seconds += time.perf_counter() - started
        for report in events:
            if not isinstance(report, TickReport):
                continue  # a clock jump: bag time only goes forward here
            if report.refused is not None:
                self.refused.append(report.refused.text)
            if report.status is Status.PUBLISHED:
                self._write_outputs(report, now_ns)
            self._write_tick(report.tick, report.status, now_ns, report.reason, report.t0_ns)

    def _write_outputs(self, report: TickReport, now_ns: int) -> None:
        conversions = self._conversions
        in_odom = self.cfg.output_frame is OutputFrame.ODOM
        messages = conversions.output_messages(report.outcome, in_odom, self.camera_topics,
                                               self.cfg.selection.value, report.latency_ms)
        measured = messages.output.timings
        timings = type(measured)(latency_ms=measured.latency_ms, decode_tokens=measured.decode_tokens)
        messages.output.timings = timings  # wall-clock times vary by run: they go to <node>/timings
        for name, msg in (("output", messages.output), ("trajectory", messages.trajectory),
                          ("reasoning", messages.reasoning), ("candidates", messages.candidates),
                          ("timings", measured)):
            self._write(name, msg, now_ns)

    def _write_tick(self, tick: int, status: Status, now_ns: int, reason: str = "", t0_ns: int = 0) -> None:
        self._write("tick", self._conversions.tick_status(tick, status, now_ns, reason, t0_ns), now_ns)

    def _write(self, name: str, msg, now_ns: int) -> None:
        # rclpy's serializer leaves CDR alignment padding uninitialised (bytes differ run to run); a round
        # trip through rosbags writes the same message with zero padding, so equal outputs are equal bytes.
        msgtype = OUTPUT_TYPES[name]
        canonical = self.typestore.serialize_cdr(self.typestore.deserialize_cdr(self._serialize(msg), msgtype), msgtype)
        self.writer.write(self.outputs[name], now_ns, canonical)

    def _class(self, msgtype: str) -> type:
        if msgtype not in self._classes:
            cls = self._conversions.message_class(msgtype)
            if cls is None:
                raise BagError(f"no Python message package for {msgtype} here")
            self._classes[msgtype] = cls
        return self._classes[msgtype]


def replay_lockstep(bag: Path, out: Path, cfg: NodeConfig, model=None, camera_topics: list[str] | None = None,
                    node: str = "/alpamayo", route_variant: str = "as_recorded",
                    progress: bool = False) -> tuple[TickCounts, Lockstep]:
    """Run the pipeline over `bag` in lockstep (ticks at multiples of 1 / cfg.rate_hz) and write `out`.

    `route_variant` (with a route topic configured): one of ROUTE_VARIANTS. `progress`: a progress bar of
    the ticks (ticks per second, ETA) on stderr.
    """
    if route_variant not in ROUTE_VARIANTS:
        raise ValueError(f"route_variant={route_variant!r}, expected one of {list(ROUTE_VARIANTS)}")
    model, _ = build_model(cfg.model_settings, model)
    model.clear_vision_cache()  # an injected model may hold encodings keyed by another bag's (camera, stamp)
    typestore = alpamayo_typestore()
    reader = open_bag([bag], typestore)
    try:
        cameras = list(camera_topics or cfg.subscribed_camera_topics)
        routes = {topic: msgtype for topic, msgtype in ((cfg.route_topic, "std_msgs/msg/String"),
                                                         (cfg.route_path_topic, "nav_msgs/msg/Path")) if topic}
        require_topics(reader, cameras + [cfg.odometry_topic, *routes], remaps=None)
        wanted = [c for c in reader.connections if c.topic in (*cameras, cfg.odometry_topic, *routes)]
        for connection in wanted:
            expected = IMAGE_TYPES if connection.topic in cameras else (routes[connection.topic],) \
                if connection.topic in routes else ("nav_msgs/msg/Odometry",)
            if connection.msgtype not in expected:
                raise BagError(f"bag topic {connection.topic} holds {connection.msgtype}, expected one of "
                               f"{list(expected)}")
        period_ns = round(NS_PER_S / cfg.rate_hz)
        with new_bag(out, storage_of(reader)) as writer:
            lockstep = Lockstep(cfg, model, writer, typestore, node, cameras, route_variant)
            next_tick = (reader.start_time // period_ns + 1) * period_ns  # the node timer's grid: whole periods
            last_ns = reader.end_time - 1  # rosbags: the last stamp + 1
            ticks = max(0, -(-(last_ns - next_tick) // period_ns)) + 1  # grid points before the last message, + 1
            with tqdm(total=ticks, unit="tick", desc="replay", disable=not progress, file=sys.stderr) as bar:
                for connection, stamp, raw in read_messages(reader, wanted):
                    while stamp > next_tick:
                        lockstep.tick(next_tick)
                        bar.update()
                        next_tick += period_ns
                    lockstep.feed(connection.topic, connection.msgtype, raw, stamp)
                lockstep.tick(next_tick)
                bar.update()
    finally:
        reader.close()
    return lockstep.engine.counts, lockstep


def config_from_args(args: argparse.Namespace) -> NodeConfig:
    """Parameters as the node would get them: params file, then --param overrides, then the topic options."""
    values = parameters.read_params_file(args.params_file) if args.params_file else {}
    for text in args.param:
        name, value = parameters.parse_override(text)
        values[name] = value
    values.pop("use_sim_time", None)
    if args.tick_hz is not None:
        values["rate_hz"] = float(args.tick_hz)
    if args.odometry_topic is not None:
        values["odometry_topic"] = args.odometry_topic
    for name in ("route_topic", "route_path_topic"):
        if getattr(args, name, None) is not None:
            values[name] = getattr(args, name)
    return parameters.from_values(values)


def print_summary(counts: TickCounts, out: Path, refused: list[str] | None = None) -> None:
    print(f"replay: {counts.summary()}")
    if refused:
        print(f"replay: {len(refused)} message(s) refused, first: {refused[0]}")
    if counts.published == 0:
        print(f"replay: NO outputs were published, so {out} holds no trajectories to evaluate; the tick summary "
              "above says why (e.g. camera topics or rate that do not match the bag)")
    else:
        print(f"replay: {counts.published} outputs written to {out}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bag", type=Path, help="rosbag2 directory or file (mcap or sqlite3)")
    parser.add_argument("--out", type=Path, required=True, help="new bag directory for the outputs")
    parser.add_argument("--mode", choices=("lockstep", "realtime"), default="lockstep")
    parser.add_argument("--tick-hz", type=float, default=None, help="ticks per bag second (default: rate_hz)")
    parser.add_argument("--camera-topics", nargs=4, default=None, metavar="TOPIC",
                        help="the 4 image topics in the bag, model order (default: the parameters' topics)")
    parser.add_argument("--odometry-topic", default=None, help="default: the parameters' odometry_topic")
    parser.add_argument("--route-topic", default=None, help="Alpamayo 1.5: the bag's std_msgs/String route text")
    parser.add_argument("--route-path-topic", default=None, help="Alpamayo 1.5: the bag's nav_msgs/Path planned route")
    parser.add_argument("--params-file", type=Path, default=None, help="node parameter YAML")
    parser.add_argument("--param", action="append", default=[], metavar="NAME:=VALUE", help="parameter override")
    parser.add_argument("--node", default="/alpamayo", help="output topic prefix (realtime: the node's name)")
    parser.add_argument("--rate", type=float, default=1.0, help="realtime: playback speed factor")
    args = parser.parse_args(argv)
    if not args.bag.exists():
        parser.error(f"bag {args.bag} does not exist")
    if args.out.exists():
        parser.error(f"{args.out} exists; rosbag2 writes a new directory")
    loopback_dds_env()  # realtime mode starts DDS; before rclpy initialises
    try:
        cfg = config_from_args(args)
        if args.mode == "realtime":
            from alpamayo_ros.tools.replay_dds import replay_realtime

            counts = replay_realtime(args.bag, args.out, args.rate, args.node, list(cfg.subscribed_camera_topics)
                                     if args.camera_topics is None else args.camera_topics, cfg.odometry_topic)
            outcomes = [o[-1] for o in counts.ticks.values()]
            print(f"replay: {len(counts.ticks)} ticks heard, {counts.published} outputs recorded to {args.out} "
                  f"(final outcomes: {dict(sorted((o, outcomes.count(o)) for o in set(outcomes)))}); "
                  f"last reason: {counts.last_reason or '-'}")
            return 0 if counts.published else 1
        counts, lockstep = replay_lockstep(args.bag, args.out, cfg, camera_topics=args.camera_topics, node=args.node,
                                           progress=True)
    except (ValueError, BagError) as exc:
        print(f"replay: {exc}", file=sys.stderr)
        return 2
    print_summary(counts, args.out, lockstep.refused)
    return 0 if counts.published else 1


if __name__ == "__main__":
    raise SystemExit(main())

"""alpamayo_ros node: four cameras and odometry in; AlpamayoR1 trajectories, reasoning and diagnostics out.

Callbacks only convert and buffer. A timer at `rate_hz` picks a time-consistent input
(`pipeline.select_inputs`) and hands it to the runner's worker thread; a busy runner drops the tick.
Results come back through a guard condition, so all publishing happens on the executor's thread.
Every output is stamped with the input time t0, never the publication time.

    ros2 run alpamayo_ros alpamayo_node --ros-args --params-file config/alpamayo.yaml
    python -m alpamayo_ros.node --ros-args -p model_path:=/models/Alpamayo-R1-10B
"""

from __future__ import annotations

import collections
import enum
import queue
import signal
import sys
import threading
import time
import traceback
from dataclasses import dataclass

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from nav_msgs.msg import Odometry, Path
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.clock import Clock, ClockType
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header, String
from visualization_msgs.msg import MarkerArray

try:  # Jazzy and later
    from rclpy.event_handler import SubscriptionEventCallbacks
except ImportError:  # Humble
    from rclpy.qos_event import SubscriptionEventCallbacks

from alpamayo_msgs.msg import DrivingOutput, StageTimings, TickStatus
from alpamayo_ros import conversions
from alpamayo_ros.pipeline.camera_buffer import CameraBuffer
from alpamayo_ros.pipeline.outputs import OutputLimits, Selection, sample_problems, select_sample
from alpamayo_ros.pipeline.pose_history import PoseHistory
from alpamayo_ros.pipeline.runner import RunResult, Runner, SamplingSettings, model_inference
from alpamayo_ros.pipeline.sync import CAMERA_NAMES, InputLimits, ModelInput, NotReady, SyncConfig, input_problems, select_inputs

NS_PER_S = 1_000_000_000
LOG_THROTTLE_S = 5.0
RATE_WINDOW_S = 5.0  # input rates: messages per second between the first and last arrival in this window
LATENCY_WINDOW = 200  # latencies kept for percentiles
RECENT_FAULT_S = 5.0  # an invalid message keeps its topic flagged in /diagnostics this long
CLOCK_JUMP_FORWARD_S = 5.0  # a tick this much later than the previous one means the clock jumped
ODOMETRY_RESTART_COUNT = 25  # this many consecutive backwards odometry stamps mean the source restarted
STOP_POLL_S = 0.1  # the executor checks this often whether a signal asked it to stop
OUTPUT_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
# Sensor-data QoS (best effort, volatile) with queues deep enough for bursts while the executor is busy
# decoding images: 1 s of 50-100 Hz odometry, 0.8 s of 10 Hz frames per camera.
CAMERA_QOS = QoSProfile(depth=8, reliability=qos_profile_sensor_data.reliability,
                        durability=qos_profile_sensor_data.durability, history=qos_profile_sensor_data.history)
ODOMETRY_QOS = QoSProfile(depth=100, reliability=qos_profile_sensor_data.reliability,
                          durability=qos_profile_sensor_data.durability, history=qos_profile_sensor_data.history)


class OutputFrame(enum.Enum):
    """`odom`: transformed by the odometry pose at t0; `base_link`: the ego frame at t0."""

    ODOM = "odom"
    BASE_LINK = "base_link"


class ImageTransport(enum.Enum):
    RAW = "raw"
    COMPRESSED = "compressed"


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """Every parameter, read once at start-up and checked."""

    model_path: str
    base_model_dir: str
    device: str
    dtype: str
    camera_topics: tuple[str, ...]
    image_transport: ImageTransport
    odometry_topic: str
    rate_hz: float
    num_samples: int
    diffusion_steps: int
    max_reasoning_tokens: int
    temperature: float
    top_p: float
    seed: int
    sync_tolerance_s: float
    max_input_age_s: float
    max_odometry_gap_s: float
    output_frame: OutputFrame
    selection: Selection
    max_speed_mismatch_mps: float
    max_first_pose_error_m: float
    max_reverse_m: float
    reasoning_mode: str
    image_preprocessing: str
    compile_flow: str

    @property
    def input_limits(self) -> InputLimits:
        return InputLimits(max_speed_mismatch_mps=self.max_speed_mismatch_mps)

    @property
    def output_limits(self) -> OutputLimits:
        return OutputLimits(max_first_pose_error_m=self.max_first_pose_error_m, max_reverse_m=self.max_reverse_m)

    @property
    def sync(self) -> SyncConfig:
        return SyncConfig(sync_tolerance_ns=round(self.sync_tolerance_s * NS_PER_S),
                          max_input_age_ns=round(self.max_input_age_s * NS_PER_S),
                          max_odometry_gap_ns=round(self.max_odometry_gap_s * NS_PER_S))

    @property
    def sampling(self) -> SamplingSettings:
        return SamplingSettings(num_samples=self.num_samples, diffusion_steps=self.diffusion_steps,
                                max_reasoning_tokens=self.max_reasoning_tokens, temperature=self.temperature,
                                top_p=self.top_p, seed=self.seed, reasoning=self.reasoning_mode)


# name -> (default, description, extra descriptor fields). Types follow the defaults.
_PARAMETERS: dict[str, tuple[object, str, dict]] = {
    "model_path": ("", "Local AlpamayoR1 checkpoint directory; empty runs the TINY RANDOM demo model", {}),
    "base_model_dir": ("", "Local base Qwen3-VL directory (config.json, processor files); empty: resolve "
                           "the checkpoint's vlm_name_or_path locally", {}),
    "device": ("cuda", "torch device: cuda, cuda:1, cpu", {}),
    "dtype": ("bfloat16", "Model dtype: bfloat16, float16 or float32", {"additional_constraints": "bfloat16|float16|float32"}),
    "camera_topics": (["/cameras/cross_left/image", "/cameras/front_wide/image", "/cameras/cross_right/image",
                       "/cameras/front_tele/image"],
                      "4 image topics in the model's order: cross-left, front-wide, cross-right, front-tele", {}),
    "image_transport": ("raw", "raw (sensor_msgs/Image) or compressed (sensor_msgs/CompressedImage)",
                        {"additional_constraints": "raw|compressed"}),
    "odometry_topic": ("/odom", "nav_msgs/Odometry of the vehicle (base frame in the odometry frame)", {}),
    "rate_hz": (2.0, "Inference ticks per second", {"floating_point_range": [FloatingPointRange(from_value=0.05, to_value=50.0)]}),
    "num_samples": (1, "Reasoning/trajectory samples per tick", {"integer_range": [IntegerRange(from_value=1, to_value=16)]}),
    "diffusion_steps": (10, "Euler steps of the flow-matching expert", {"integer_range": [IntegerRange(from_value=1, to_value=100)]}),
    "max_reasoning_tokens": (256, "Chain-of-Causation token limit", {"integer_range": [IntegerRange(from_value=1, to_value=4096)]}),
    "temperature": (0.6, "Reasoning sampling temperature; 0 = greedy", {"floating_point_range": [FloatingPointRange(from_value=0.0, to_value=5.0)]}),
    "top_p": (0.98, "Nucleus sampling mass", {"floating_point_range": [FloatingPointRange(from_value=0.01, to_value=1.0)]}),
    "seed": (0, "Base seed; tick k uses seed + k", {}),
    "sync_tolerance": (0.05, "Seconds a camera frame may be from its target time", {"floating_point_range": [FloatingPointRange(from_value=0.001, to_value=0.05)]}),
    "max_input_age": (0.5, "Seconds t0 may lag the node clock", {"floating_point_range": [FloatingPointRange(from_value=0.01, to_value=10.0)]}),
    "max_odometry_gap": (0.25, "Seconds between odometry messages beyond which the history is refused", {"floating_point_range": [FloatingPointRange(from_value=0.01, to_value=2.0)]}),
    "output_frame": ("odom", "odom (transform by the pose at t0) or base_link (ego frame at t0)", {"additional_constraints": "odom|base_link"}),
    "selection": ("first", "Published sample: first, or medoid of the valid samples", {"additional_constraints": "first|medoid"}),
    "reasoning_mode": ("per_sample", "per_sample: every sample writes its own reasoning (the reference); shared: one "
                       "reasoning for all samples, which then differ only in the flow's noise (faster)",
                       {"additional_constraints": "per_sample|shared"}),
    "image_preprocessing": ("host", "host: the transformers processor (PIL) on the CPU, the reference's pixels; device: "
                            "raw frames uploaded and resized/normalised on the model's device (faster; within 2 "
                            "uint8 levels of PIL on a few pixels)", {"additional_constraints": "host|device"}),
    "compile_flow": ("off", "off | default | reduce-overhead: torch.compile the expert's Euler loop (reduce-overhead "
                     "replays CUDA graphs on a GPU); the first tick compiles, which takes seconds",
                     {"additional_constraints": "off|default|reduce-overhead"}),
    "max_speed_mismatch": (2.0, "m/s the history-implied speed may differ from the odometry twist before the tick is skipped", {"floating_point_range": [FloatingPointRange(from_value=0.1, to_value=50.0)]}),
    "max_first_pose_error": (0.5, "m the first pose may be from v0 * 0.1 s ahead before the sample is withheld", {"floating_point_range": [FloatingPointRange(from_value=0.05, to_value=10.0)]}),
    "max_reverse": (1.0, "m a pose may lie behind the vehicle before the sample is withheld", {"floating_point_range": [FloatingPointRange(from_value=0.0, to_value=100.0)]}),
}


class AlpamayoNode(Node):
    """The driving node; `model` may be injected (tests), otherwise it is loaded from the parameters."""

    def __init__(self, model=None, **kwargs) -> None:
        super().__init__("alpamayo", **kwargs)
        self.cfg = self._declare_parameters()
        self.model = model if model is not None else self._load_model()
        self.model.set_image_preprocessing(self.cfg.image_preprocessing)
        if self.cfg.compile_flow != "off":
            self.model.compile_flow(self.cfg.compile_flow)
        self.cameras = [CameraBuffer(name) for name in CAMERA_NAMES]
        self.poses = PoseHistory()
        self._odom_frame, self._base_frame = "odom", "base_link"
        self._arrivals = {topic: collections.deque(maxlen=1000) for topic in (*self.cfg.camera_topics, self.cfg.odometry_topic)}
        self._last_stamp_ns: dict[str, int] = {}
        self._invalid = collections.Counter()
        self._last_invalid: dict[str, tuple[float, str]] = {}  # topic -> (monotonic time, what was wrong)
        self._image_shapes: dict[int, tuple[int, int]] = {}  # camera index -> (H, W) of its first frame
        self._camera_lag: dict[str, tuple[float, str]] = {}  # camera -> (monotonic time, lag seen)
        self._odometry_backwards = 0
        self._last_tick_now_ns: int | None = None
        self._latencies_ms: collections.deque[float] = collections.deque(maxlen=LATENCY_WINDOW)
        self._tick = 0
        self._last_t0_ns = -1
        self._epoch = 0  # counts input resets (clock jumps back, odometry restarts)
        self._submitted_epoch: dict[int, int] = {}  # tick -> epoch at submission
        self._not_ready = 0
        self._published = 0
        self._rejected = 0
        self._last_not_ready = ""
        self._last_error = ""
        self._last_outcome = "starting"
        self._last_clock_jump = ""
        self._reported_drops = 0

        self._lost = collections.Counter()
        image_type = Image if self.cfg.image_transport is ImageTransport.RAW else CompressedImage
        for index, topic in enumerate(self.cfg.camera_topics):
            self._subscribe(image_type, topic, lambda msg, i=index, t=topic: self._on_image(msg, i, t), CAMERA_QOS)
        self._subscribe(Odometry, self.cfg.odometry_topic, self._on_odometry, ODOMETRY_QOS)
        self._trajectory_pub = self.create_publisher(Path, "~/trajectory", OUTPUT_QOS)
        self._reasoning_pub = self.create_publisher(String, "~/reasoning", OUTPUT_QOS)
        self._output_pub = self.create_publisher(DrivingOutput, "~/output", OUTPUT_QOS)
        self._candidates_pub = self.create_publisher(MarkerArray, "~/candidates", OUTPUT_QOS)
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", OUTPUT_QOS)
        self._tick_pub = self.create_publisher(TickStatus, "~/tick", QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))

        self._results: queue.SimpleQueue[RunResult] = queue.SimpleQueue()
        self._result_ready = self.create_guard_condition(self._on_results)
        self.runner = Runner(model_inference(self.model, self.cfg.sampling), self._on_result_from_worker)
        self.create_timer(1.0 / self.cfg.rate_hz, self._on_tick)
        # Diagnostics run on the steady clock: they must keep coming when sim time stalls or jumps.
        self.create_timer(1.0, self._publish_diagnostics, clock=Clock(clock_type=ClockType.STEADY_TIME))
        self.get_logger().info(f"ready: {len(self.cfg.camera_topics)} {self.cfg.image_transport.value} cameras, "
                               f"odometry {self.cfg.odometry_topic}, {self.cfg.rate_hz} Hz, "
                               f"{self.cfg.num_samples} sample(s), output frame {self.cfg.output_frame.value}")

    # -- set-up ------------------------------------------------------------------------------------

    def _declare_parameters(self) -> NodeConfig:
        for name, (default, description, extra) in _PARAMETERS.items():
            descriptor = ParameterDescriptor(description=description, read_only=True, **extra)
            self.declare_parameter(name, default, descriptor)
        value = {name: self.get_parameter(name).value for name in _PARAMETERS}
        topics = tuple(value["camera_topics"])
        if len(topics) != len(CAMERA_NAMES):
            raise ValueError(f"parameter camera_topics has {len(topics)} topics {list(topics)}, expected "
                             f"{len(CAMERA_NAMES)} in the order {list(CAMERA_NAMES)}")
        for name, (_, _, extra) in _PARAMETERS.items():  # choices: the descriptor's "a|b|c" constraint
            allowed = extra.get("additional_constraints", "").split("|")
            if len(allowed) > 1 and value[name] not in allowed:
                raise ValueError(f"parameter {name}={value[name]!r}: expected one of {allowed}")
        return NodeConfig(
            model_path=value["model_path"], base_model_dir=value["base_model_dir"], device=value["device"],
            dtype=value["dtype"], camera_topics=topics,
            image_transport=ImageTransport(value["image_transport"]),
            odometry_topic=value["odometry_topic"], rate_hz=float(value["rate_hz"]), num_samples=value["num_samples"],
            diffusion_steps=value["diffusion_steps"], max_reasoning_tokens=value["max_reasoning_tokens"],
            temperature=float(value["temperature"]), top_p=float(value["top_p"]), seed=value["seed"],
            sync_tolerance_s=float(value["sync_tolerance"]), max_input_age_s=float(value["max_input_age"]),
            max_odometry_gap_s=float(value["max_odometry_gap"]),
            output_frame=OutputFrame(value["output_frame"]),
            selection=Selection(value["selection"]),
            max_speed_mismatch_mps=float(value["max_speed_mismatch"]),
            max_first_pose_error_m=float(value["max_first_pose_error"]), max_reverse_m=float(value["max_reverse"]),
            reasoning_mode=value["reasoning_mode"], image_preprocessing=value["image_preprocessing"],
            compile_flow=value["compile_flow"])

    def _load_model(self):
        from alpamayo_ros.model.loading import from_pretrained, tiny

        if not self.cfg.model_path:
            self.get_logger().warning("model_path is empty: running the TINY RANDOM demo model on the CPU; its "
                                   "trajectories and reasoning are noise, never drive with them")
            return tiny(seed=self.cfg.seed)
        self.get_logger().info(f"loading AlpamayoR1 from {self.cfg.model_path} on {self.cfg.device} ({self.cfg.dtype})")
        return from_pretrained(self.cfg.model_path, base_model_dir=self.cfg.base_model_dir or None,
                               device=self.cfg.device, dtype=self.cfg.dtype)

    def _subscribe(self, msg_type, topic: str, callback, qos: QoSProfile) -> None:
        """A subscription whose lost-message events are counted for /diagnostics.

        Sensor-data QoS (best effort, volatile, no deadline) accepts every publisher, so no
        incompatible-QoS event can occur; lost messages (queue overflow under load) can.
        """
        def lost(event, topic=topic) -> None:
            self._lost[topic] += event.total_count_change

        try:
            self.create_subscription(msg_type, topic, callback, qos,
                                     event_callbacks=SubscriptionEventCallbacks(message_lost=lost))
        except Exception:  # an RMW without the message-lost event: subscribe without it
            self.get_logger().info(f"{topic}: lost-message events unavailable on this RMW", once=True)
            self.create_subscription(msg_type, topic, callback, qos)

    # -- inputs --------------------------------------------------------------------------------------

    def _on_image(self, msg: Image | CompressedImage, index: int, topic: str) -> None:
        self._arrivals[topic].append(time.monotonic())
        try:
            frame = (conversions.image_from_msg(msg, topic) if isinstance(msg, Image)
                     else conversions.compressed_image_from_msg(msg, topic))
        except conversions.InvalidMessage as exc:
            self._reject(topic, f"camera {CAMERA_NAMES[index]}: {exc}; frame dropped")
            return
        if self._from_the_future(topic, f"camera {CAMERA_NAMES[index]}", frame.stamp_ns, "frame"):
            return
        shape = frame.image.shape[:2]
        expected = self._image_shapes.setdefault(index, shape)
        if shape != expected:
            self._reject(topic, f"camera {CAMERA_NAMES[index]}: {topic}: image is {shape[1]}x{shape[0]}, expected "
                                f"{expected[1]}x{expected[0]} (its first frame's size); frame dropped")
            return
        self._last_stamp_ns[topic] = frame.stamp_ns
        self.cameras[index].push(frame)
        if index == self.cfg.sync.reference_camera:
            self._check_camera_lag(frame.stamp_ns)

    def _check_camera_lag(self, reference_stamp_ns: int) -> None:
        """As a reference frame arrives, note every camera whose newest frame is older than tolerance allows."""
        for camera in self.cameras:
            newest = camera.newest_stamp_ns
            if newest is None or camera.name == CAMERA_NAMES[self.cfg.sync.reference_camera]:
                continue
            lag_ns = reference_stamp_ns - newest
            if lag_ns > self.cfg.sync.sync_tolerance_ns:
                self._camera_lag[camera.name] = (
                    time.monotonic(), f"camera {camera.name}: newest frame {lag_ns / 1e6:.0f} ms behind "
                    f"{CAMERA_NAMES[self.cfg.sync.reference_camera]} (sync_tolerance "
                    f"{self.cfg.sync.sync_tolerance_ns / 1e6:.0f} ms)")

    def _from_the_future(self, topic: str, source: str, stamp_ns: int, what: str) -> bool:
        """Reject (and say so) a stamp further ahead of the node clock than max_input_age."""
        ahead_ns = stamp_ns - self._now_ns()
        if ahead_ns <= self.cfg.sync.max_input_age_ns:
            return False
        self._reject(topic, f"{source}: {topic}: stamp is {ahead_ns / 1e9:.2f} s ahead of the node clock; {what} dropped")
        return True

    def _reject(self, topic: str, text: str) -> None:
        """Count, remember for /diagnostics, and log (throttled) a message that cannot be used."""
        self._invalid[topic] += 1
        self._last_invalid[topic] = (time.monotonic(), text)
        self.get_logger().warning(text, throttle_duration_sec=LOG_THROTTLE_S)

    def _on_odometry(self, msg: Odometry) -> None:
        topic = self.cfg.odometry_topic
        self._arrivals[topic].append(time.monotonic())
        try:
            sample = conversions.pose_from_odometry(msg, topic)
        except conversions.InvalidMessage as exc:
            self._reject(topic, f"odometry: {exc}; message dropped")
            return
        if self._from_the_future(topic, "odometry", sample.stamp_ns, "message"):
            return
        newest = self.poses.newest_stamp_ns
        if newest is not None and sample.stamp_ns < newest - self.cfg.sync.max_odometry_gap_ns:
            self._odometry_backwards += 1
            if self._odometry_backwards < ODOMETRY_RESTART_COUNT:
                self._reject(topic, f"odometry: {topic}: stamp went back {(newest - sample.stamp_ns) / 1e9:.2f} s; "
                                    "message dropped")
                return
            self._reject(topic, f"odometry: {topic}: stamp went back {(newest - sample.stamp_ns) / 1e9:.2f} s "
                                f"{ODOMETRY_RESTART_COUNT} times in a row: the source restarted; history cleared")
            self.poses.clear()
            self._epoch += 1
        self._odometry_backwards = 0
        self._odom_frame = msg.header.frame_id or self._odom_frame
        self._base_frame = msg.child_frame_id or self._base_frame
        self._last_stamp_ns[topic] = sample.stamp_ns
        self.poses.push(sample)

    # -- ticks ---------------------------------------------------------------------------------------

    def _now_ns(self) -> int:
        return self.get_clock().now().nanoseconds

    def _report_tick(self, tick: int, outcome: int, reason: str = "", t0_ns: int = 0) -> None:
        self._tick_pub.publish(TickStatus(header=Header(stamp=self.get_clock().now().to_msg()), tick=tick,
                                          outcome=outcome, reason=reason, t0=conversions.ns_to_stamp(t0_ns)))

    def _on_tick(self) -> None:
        self._tick += 1
        now = self._now_ns()
        if self._last_tick_now_ns is not None and now < self._last_tick_now_ns:
            # The clock went back (a replayed bag looping): buffered data lies in this clock's future.
            jump_s = (self._last_tick_now_ns - now) / 1e9
            for camera in self.cameras:
                camera.clear()
            self.poses.clear()
            self._last_t0_ns = -1
            self._epoch += 1
            self._last_clock_jump = f"clock jumped back {jump_s:.1f} s: input buffers cleared"
            self.get_logger().warning(self._last_clock_jump, throttle_duration_sec=LOG_THROTTLE_S)
        elif self._last_tick_now_ns is not None and now - self._last_tick_now_ns > max(
                CLOCK_JUMP_FORWARD_S, 3.0 / self.cfg.rate_hz) * NS_PER_S:
            # Jumped ahead (a bag skipped, sim time resumed): buffered data is now stale and ages out.
            self._last_clock_jump = f"clock jumped forward {(now - self._last_tick_now_ns) / 1e9:.1f} s"
            self.get_logger().warning(self._last_clock_jump, throttle_duration_sec=LOG_THROTTLE_S)
        self._last_tick_now_ns = now
        selected = select_inputs(self.cameras, self.poses, now, self.cfg.sync)
        if isinstance(selected, ModelInput) and selected.t0_ns <= self._last_t0_ns:
            selected = NotReady(f"no camera frames newer than the last input (t0 {selected.t0_ns / 1e9:.3f} s)")
        if isinstance(selected, ModelInput):
            problems = input_problems(selected, self.cfg.input_limits)
            if problems:
                selected = NotReady("input rejected: " + "; ".join(problems))
        if isinstance(selected, NotReady):
            self._not_ready += 1
            self._last_not_ready = selected.reason
            self._last_outcome = f"not ready: {selected.reason}"
            self.get_logger().info(f"tick {self._tick}: not ready: {selected.reason}",
                                   throttle_duration_sec=LOG_THROTTLE_S)
            self._report_tick(self._tick, TickStatus.NOT_READY, selected.reason)
            return
        if self.runner.submit(self._tick, selected):
            self._last_t0_ns = selected.t0_ns
            self._submitted_epoch[self._tick] = self._epoch
            self._report_tick(self._tick, TickStatus.SUBMITTED, t0_ns=selected.t0_ns)
        else:
            self.get_logger().debug(f"tick {self._tick}: model busy, dropped")
            self._report_tick(self._tick, TickStatus.DROPPED_BUSY, "model busy with an earlier tick", selected.t0_ns)

    def _on_result_from_worker(self, result: RunResult) -> None:
        self._results.put(result)  # worker thread: hand over, publish on the executor's thread
        self._result_ready.trigger()

    def _on_results(self) -> None:
        while True:
            try:
                result = self._results.get_nowait()
            except queue.Empty:
                return
            try:
                self._handle_result(result)
            except Exception:  # a bug in output handling must not take the node down
                self._last_error = traceback.format_exc().strip().splitlines()[-1]
                self._last_outcome = f"model error: output handling failed: {self._last_error}"
                self.get_logger().error(f"tick {result.tick}: output handling failed, nothing published:\n"
                                        f"{traceback.format_exc()}")
                self._report_tick(result.tick, TickStatus.MODEL_ERROR, self._last_error, result.model_input.t0_ns)

    def _handle_result(self, result: RunResult) -> None:
        if self._submitted_epoch.pop(result.tick, self._epoch) != self._epoch or result.model_input.t0_ns > self._now_ns():
            # The inputs were reset (clock jumped back, odometry restarted) while the model ran.
            self._last_outcome = "output withheld: the inputs were reset while the model ran"
            self._report_tick(result.tick, TickStatus.REJECTED, self._last_outcome, result.model_input.t0_ns)
            return
        if result.error is not None:
            self._last_error = result.error.strip().splitlines()[-1]
            self._last_outcome = f"model error: {self._last_error}"
            self.get_logger().error(f"tick {result.tick}: model failed, nothing published:\n{result.error}")
            self._report_tick(result.tick, TickStatus.MODEL_ERROR, self._last_error, result.model_input.t0_ns)
            return
        pred, model_input = result.prediction, result.model_input
        problems = sample_problems(pred, self.model.action_space, model_input.ego_history_xyz,
                                   model_input.ego_history_rot, self.cfg.output_limits)
        valid = [i for i, reasons in enumerate(problems) if not reasons]
        if not valid:
            self._rejected += 1
            self._last_outcome = f"output withheld, every sample failed the checks: {'; '.join(problems[0])}"
            self.get_logger().warning(f"tick {result.tick}: every sample rejected ({problems}); nothing published",
                                   throttle_duration_sec=LOG_THROTTLE_S)
            self._report_tick(result.tick, TickStatus.REJECTED, "; ".join(problems[0]), result.model_input.t0_ns)
            return
        self._publish(result, valid, select_sample(pred.xyz.numpy(), valid, self.cfg.selection))

    def _publish(self, result: RunResult, valid: list[int], selected: int) -> None:
        pred, model_input = result.prediction, result.model_input
        if self.cfg.output_frame is OutputFrame.ODOM:
            frame_id, p0, r0 = self._odom_frame, model_input.t0_position, model_input.t0_rotation
        else:
            frame_id, p0, r0 = self._base_frame, None, None
        xyz, rot = pred.xyz.numpy(), pred.rot.numpy()
        paths = {i: conversions.path_msg(*conversions.to_output_frame(xyz[i], rot[i], p0, r0), model_input.t0_ns, frame_id)
                 for i in valid}
        latency_ms = (self._now_ns() - model_input.t0_ns) / 1e6
        self._latencies_ms.append(latency_ms)
        self._trajectory_pub.publish(paths[selected])
        self._reasoning_pub.publish(String(data=pred.reasoning[selected]))
        self._output_pub.publish(self._driving_output(result, paths, selected, frame_id, latency_ms))
        ordered = [paths[i] for i in valid]
        self._candidates_pub.publish(conversions.candidate_markers(
            ordered, valid.index(selected), pred.reasoning[selected], frame_id, model_input.t0_ns))
        self._published += 1
        self._last_outcome = "published"
        self._report_tick(result.tick, TickStatus.PUBLISHED, t0_ns=model_input.t0_ns)

    def _driving_output(self, result: RunResult, paths: dict[int, Path], selected: int, frame_id: str,
                        latency_ms: float) -> DrivingOutput:
        pred, model_input = result.prediction, result.model_input
        order = sorted(paths)
        t = pred.timings
        return DrivingOutput(
            header=Header(stamp=conversions.ns_to_stamp(model_input.t0_ns), frame_id=frame_id),
            trajectories=[paths[i] for i in order], reasoning=[pred.reasoning[i] for i in order],
            reasoning_complete=[pred.complete[i] for i in order], selected=order.index(selected),
            selection=self.cfg.selection.value, tick=result.tick,
            timings=StageTimings(vision_ms=t.vision_ms, prefill_ms=t.prefill_ms, decode_ms=t.decode_ms,
                                 expert_ms=t.expert_ms, trajectory_ms=t.trajectory_ms, total_ms=t.total_ms,
                                 latency_ms=latency_ms, decode_tokens=t.decode_tokens),
            camera_stamps=[conversions.ns_to_stamp(s) for s in model_input.frame_stamps_ns.reshape(-1)],
            camera_topics=list(self.cfg.camera_topics),
            history_start=conversions.ns_to_stamp(model_input.history_span_ns[0]),
            history_end=conversions.ns_to_stamp(model_input.history_span_ns[1]))

    # -- diagnostics ---------------------------------------------------------------------------------

    def _input_faults(self, now_mono: float, now_ns: int) -> tuple[list[str], dict[str, object]]:
        """What is wrong with the inputs right now, in words, and the per-topic numbers."""
        faults, values = [], {}
        stale_ns = self.cfg.sync.max_input_age_ns
        names = {topic: f"camera {name}" for topic, name in zip(self.cfg.camera_topics, CAMERA_NAMES)}
        names[self.cfg.odometry_topic] = "odometry"
        for topic, arrivals in self._arrivals.items():
            recent = [a for a in arrivals if now_mono - a <= RATE_WINDOW_S]
            rate = (len(recent) - 1) / (recent[-1] - recent[0]) if len(recent) > 1 and recent[-1] > recent[0] else 0.0
            stamp = self._last_stamp_ns.get(topic)
            values[f"{topic} rate_hz"] = f"{rate:.1f}"
            values[f"{topic} age_ms"] = "never" if stamp is None else f"{(now_ns - stamp) / 1e6:.0f}"
            values[f"{topic} invalid"] = self._invalid[topic]
            values[f"{topic} lost"] = self._lost[topic]
            if stamp is None:
                faults.append(f"{names[topic]}: no valid message on {topic}")
            elif now_ns - stamp > stale_ns:
                faults.append(f"{names[topic]}: last valid message on {topic} is {(now_ns - stamp) / 1e9:.1f} s old")
            invalid = self._last_invalid.get(topic)
            if invalid and now_mono - invalid[0] <= RECENT_FAULT_S:
                faults.append(invalid[1])
        faults += [text for seen, text in self._camera_lag.values() if now_mono - seen <= RECENT_FAULT_S]
        if self._last_clock_jump:
            faults.append(self._last_clock_jump)
            self._last_clock_jump = ""
        return faults, values

    def _publish_diagnostics(self) -> None:
        now_mono, now_ns = time.monotonic(), self._now_ns()
        faults, inputs = self._input_faults(now_mono, now_ns)
        lat = np.percentile(self._latencies_ms, [50, 90]) if self._latencies_ms else None
        ticks = {"ticks": self._tick, "published": self._published, "not_ready": self._not_ready,
                 "dropped_busy": self.runner.dropped, "model_errors": self.runner.failed,
                 "rejected_outputs": self._rejected, "last_not_ready": self._last_not_ready or "-",
                 "latency_ms_p50": "-" if lat is None else f"{lat[0]:.0f}",
                 "latency_ms_p90": "-" if lat is None else f"{lat[1]:.0f}",
                 "latency_ms_max": "-" if lat is None else f"{max(self._latencies_ms):.0f}"}
        new_drops = self.runner.dropped != self._reported_drops
        if self._last_outcome.startswith("model error"):
            level = DiagnosticStatus.ERROR
        elif self._last_outcome == "published" and not new_drops:
            level = DiagnosticStatus.OK
        else:
            level = DiagnosticStatus.WARN
        message = self._last_outcome
        if new_drops:
            message += f"; {self.runner.dropped - self._reported_drops} tick(s) dropped: the model is slower than rate_hz"
            self._reported_drops = self.runner.dropped
        model = {"model_path": self.cfg.model_path or "(tiny random demo model)", "device": self.cfg.device,
                 "dtype": self.cfg.dtype, "reasoning_mode": self.cfg.reasoning_mode,
                 "image_preprocessing": self.cfg.image_preprocessing, "compile_flow": self.cfg.compile_flow,
                 "last_error": self._last_error or "-"}
        name = self.get_fully_qualified_name()
        status = [
            conversions.diagnostic_status(f"{name}: inputs", DiagnosticStatus.WARN if faults else DiagnosticStatus.OK,
                                          "; ".join(faults) if faults else "all inputs arriving", inputs, name),
            conversions.diagnostic_status(f"{name}: inference", level, message, ticks, name),
            conversions.diagnostic_status(f"{name}: model", DiagnosticStatus.ERROR if level == DiagnosticStatus.ERROR
                                          else DiagnosticStatus.OK,
                                          f"the model raised: {self._last_error}" if level == DiagnosticStatus.ERROR
                                          else "loaded", model, name),
        ]
        self._diagnostics_pub.publish(DiagnosticArray(header=Header(stamp=self.get_clock().now().to_msg()), status=status))

    def shutdown(self) -> None:
        """Stop the runner (finishing its tick) before the node is destroyed."""
        self.runner.stop()


def main(args: list[str] | None = None) -> int:
    """Entry point for `ros2 run` and `python -m alpamayo_ros.node`."""
    rclpy.init(args=args if args is not None else sys.argv)
    node = None
    executor = SingleThreadedExecutor()
    try:
        try:
            node = AlpamayoNode()
        except (ValueError, FileNotFoundError, ParameterException) as exc:  # parameters or checkpoint
            rclpy.logging.get_logger("alpamayo").fatal(f"cannot start: {exc}")
            return 1
        executor.add_node(node)
        # SIGINT/SIGTERM only set a flag. Left to Python's default handler, a KeyboardInterrupt that lands
        # while rclpy's C++ code is taking a message surfaces as a RuntimeError ("Unable to convert call
        # argument") and the node would exit 1 with a traceback instead of shutting down cleanly.
        stop = threading.Event()
        previous = {signum: signal.signal(signum, lambda *_: stop.set()) for signum in (signal.SIGINT, signal.SIGTERM)}
        try:
            while not stop.is_set() and rclpy.ok():
                executor.spin_once(timeout_sec=STOP_POLL_S)
        finally:  # a second signal during the clean-up below (a tick still running) acts as usual again
            for signum, handler in previous.items():
                signal.signal(signum, handler)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.shutdown()
            executor.remove_node(node)
            node.destroy_node()
        executor.shutdown()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

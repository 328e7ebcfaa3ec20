"""alpamayo_ros node: four cameras and odometry in; AlpamayoR1 trajectories, reasoning and diagnostics out.

Callbacks cost O(1): they keep the message's bytes with its stamp (`pipeline.Inputs`). A timer at
`rate_hz` selects a time-consistent input by stamps (`pipeline.Ticker.select`) and hands it to the
runner's worker thread, which decodes only the selected frames and runs the model. A tick that finds
the model busy waits and runs, with the inputs of that moment, as soon as the model is free; only
one waits, and a newer tick takes its place (the older is dropped and counted). Results come back
through a guard condition, so all publishing happens on the executor's thread. Every output is stamped with the input time t0, never the publication time.

    ros2 run alpamayo_ros alpamayo_node --ros-args --params-file config/alpamayo.yaml
    python -m alpamayo_ros.node --ros-args -p model_path:=/models/Alpamayo-R1-10B
"""

from __future__ import annotations

import collections
import functools
import queue
import signal
import sys
import threading
import time
import traceback

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from nav_msgs.msg import Odometry, Path
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, ParameterType
from rclpy.clock import Clock, ClockType
from rclpy.exceptions import NameValidationException, ParameterException
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

from alpamayo_msgs.msg import DrivingOutput, TickStatus
from alpamayo_ros import conversions, parameters
from alpamayo_ros.output_qos import OutputQosWatch
from alpamayo_ros.parameters import ImageTransport, NodeConfig, OutputFrame
from alpamayo_ros.pipeline.inputs import Inputs, Refused
from alpamayo_ros.pipeline.runner import Runner, model_inference
from alpamayo_ros.pipeline.sync import CAMERA_NAMES, NotReady
from alpamayo_ros.pipeline.ticker import Outcome, Status, Ticker

LOG_THROTTLE_S = 5.0
LATENCY_WINDOW = 200  # latencies kept for percentiles
STOP_POLL_S = 0.1  # the executor checks this often whether a signal asked it to stop
OUTPUT_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
TICK_QOS = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
# Sensor-data QoS (best effort, volatile) with queues for bursts: 0.8 s of 10 Hz frames per camera,
# 1 s of 50-100 Hz odometry.
CAMERA_QOS = QoSProfile(depth=8, reliability=qos_profile_sensor_data.reliability,
                        durability=qos_profile_sensor_data.durability, history=qos_profile_sensor_data.history)
ODOMETRY_QOS = QoSProfile(depth=100, reliability=qos_profile_sensor_data.reliability,
                          durability=qos_profile_sensor_data.durability, history=qos_profile_sensor_data.history)
MESSAGE_TYPE_NAMES = {Image: "sensor_msgs/msg/Image", CompressedImage: "sensor_msgs/msg/CompressedImage",
                      Odometry: "nav_msgs/msg/Odometry"}


def declare_config(node: Node) -> NodeConfig:
    """Declare every parameter of `NodeConfig` (read-only, described, ranged) and read them once."""
    for spec in parameters.parameter_specs():
        descriptor = ParameterDescriptor(description=spec.description, read_only=True)
        if spec.choices:
            descriptor.additional_constraints = "|".join(spec.choices)
        if isinstance(spec.default, float):
            # Dynamic typing lets `-p rate_hz:=2` (an integer to ROS) through; NodeConfig checks the value.
            descriptor.dynamic_typing = True
            if spec.low is not None:
                descriptor.floating_point_range = [FloatingPointRange(from_value=spec.low, to_value=spec.high)]
        elif isinstance(spec.default, int) and spec.low is not None:
            descriptor.integer_range = [IntegerRange(from_value=int(spec.low), to_value=int(spec.high))]
        if isinstance(spec.default, list):
            descriptor.type = ParameterType.PARAMETER_STRING_ARRAY
        node.declare_parameter(spec.name, spec.default, descriptor)
    return parameters.from_values({spec.name: node.get_parameter(spec.name).value
                                   for spec in parameters.parameter_specs()})


class DrivingNode:
    """The driving node's behaviour, shared by the plain node and the lifecycle (managed) node.

    Set-up comes in steps so a lifecycle node can take them on its transitions:
    `_configure` (model, buffers, runner, publishers), `_start_inputs` (subscriptions, tick timer),
    `_stop_inputs`, `_teardown`. A plain node runs the first two in its constructor.
    """

    # What exists only between `_configure` and `_teardown`; None (or empty) outside, so tearing down is
    # safe at any point, also after a `_configure` that failed half-way.
    model = ticker = inputs = runner = None
    _trajectory_pub = _reasoning_pub = _output_pub = _candidates_pub = _tick_pub = None
    _diagnostics_pub = _diagnostics_timer = _outcome_ready = _tick_timer = _waiting_tick = None
    _input_subscriptions: tuple | list = ()
    _inputs_active = False

    def _configure(self, model=None, create_output_publisher=None, destroy_output_publisher=None) -> None:
        """Load the model and build everything but the inputs; `create_/destroy_output_publisher`: the outputs'
        factory and its undo (lifecycle publishers for the managed node)."""
        if model is None and not self.cfg.model_path:
            self.get_logger().warning("model_path is empty: running the TINY RANDOM demo model on the CPU; its "
                                      "trajectories and reasoning are noise, never drive with them")
        elif model is None:
            self.get_logger().info(f"loading AlpamayoR1 from {self.cfg.model_path} on {self.cfg.device} "
                                   f"({self.cfg.dtype})")
        self.model, _ = parameters.load_model(self.cfg, model)
        self.inputs = Inputs(self.cfg.subscribed_camera_topics, self.cfg.odometry_topic, self.cfg.sync)
        self.ticker = Ticker(self.inputs, self.cfg.tick_settings, model_inference(self.model, self.cfg.sampling),
                             self.model.action_space, on_reset=self.model.clear_vision_cache)
        self._latencies_ms: collections.deque[float] = collections.deque(maxlen=LATENCY_WINDOW)
        self._last_not_ready = ""
        self._last_error = ""
        self._last_outcome = "starting"
        self._reported_drops = 0
        self._image_type = Image if self.cfg.image_transport is ImageTransport.RAW else CompressedImage
        self._input_subscriptions = []
        self._waiting_tick = None  # a tick that found the model busy, run when it is free

        self._output_qos = OutputQosWatch(self)  # names subscribers whose QoS cannot match an output
        publish = functools.partial(self._output_qos.publisher, create_output_publisher or self.create_publisher)
        self._destroy_output_publisher = destroy_output_publisher or self.destroy_publisher
        self._trajectory_pub = publish(Path, "~/trajectory", OUTPUT_QOS)
        self._reasoning_pub = publish(String, "~/reasoning", OUTPUT_QOS)
        self._output_pub = publish(DrivingOutput, "~/output", OUTPUT_QOS)
        self._candidates_pub = publish(MarkerArray, "~/candidates", OUTPUT_QOS)
        self._tick_pub = publish(TickStatus, "~/tick", TICK_QOS)
        # /diagnostics is a plain publisher: an inactive or failing node still reports.
        self._diagnostics_pub = self._output_qos.publisher(self.create_publisher, DiagnosticArray, "/diagnostics", OUTPUT_QOS)
        self._outcomes: queue.SimpleQueue[Outcome] = queue.SimpleQueue()
        self._outcome_ready = self.create_guard_condition(self._on_outcomes)
        self.runner = Runner(self._on_outcome_from_worker)
        # Diagnostics run on the steady clock: they must keep coming when sim time stalls or jumps.
        self._diagnostics_timer = self.create_timer(1.0, self._publish_diagnostics,
                                                    clock=Clock(clock_type=ClockType.STEADY_TIME))

    def _start_inputs(self) -> None:
        """Subscribe to the cameras and odometry and start ticking."""
        for index, topic in enumerate(self.cfg.subscribed_camera_topics):
            self._input_subscriptions.append(self._subscribe(
                self._image_type, topic, lambda msg, i=index: self._on_image(msg, i), CAMERA_QOS))
        self._input_subscriptions.append(self._subscribe(Odometry, self.cfg.odometry_topic, self._on_odometry,
                                                         ODOMETRY_QOS))
        self._tick_timer = self.create_timer(1.0 / self.cfg.rate_hz, self._on_tick)
        self._inputs_active = True
        cameras = ", ".join(f"{name} {topic}" for name, topic in zip(CAMERA_NAMES, self.cfg.subscribed_camera_topics))
        self.get_logger().info(f"subscribed: cameras ({MESSAGE_TYPE_NAMES[self._image_type]}) {cameras}; odometry "
                               f"(nav_msgs/msg/Odometry) {self.cfg.odometry_topic}")
        self.get_logger().info(f"ready: {self.cfg.rate_hz} Hz, {self.cfg.num_samples} sample(s), output frame "
                               f"{self.cfg.output_frame.value}, model on {self.model.device} ({self._dtype_name})")

    def _stop_inputs(self) -> None:
        """Unsubscribe and stop ticking; a tick already running finishes, its outputs withheld."""
        self._inputs_active = False
        for subscription in self._input_subscriptions:
            self.destroy_subscription(subscription)
        self._input_subscriptions = []
        if self._tick_timer is not None:
            self.destroy_timer(self._tick_timer)
            self._tick_timer = None
        if self._waiting_tick is not None:
            self._drop(self._waiting_tick, "the node stopped ticking")
            self._waiting_tick = None
        if self.ticker is not None:
            self.ticker.forget_clock()

    def _teardown(self) -> None:
        """Stop the runner (finishing its tick) and release what `_configure` made (idempotent; also after a
        `_configure` that failed half-way)."""
        self._stop_inputs()
        if self.runner is not None:
            self.runner.stop()
        self.runner = None
        for name in ("_trajectory_pub", "_reasoning_pub", "_output_pub", "_candidates_pub", "_tick_pub"):
            if getattr(self, name) is not None:
                self._destroy_output_publisher(getattr(self, name))
                setattr(self, name, None)
        for name, destroy in (("_diagnostics_pub", self.destroy_publisher), ("_diagnostics_timer", self.destroy_timer),
                              ("_outcome_ready", self.destroy_guard_condition)):
            if getattr(self, name) is not None:
                destroy(getattr(self, name))
                setattr(self, name, None)
        # The ticker holds the model (its inference closure, the cache reset, the action space) and the
        # inputs hold buffered frames: let all of it go.
        self.model = self.ticker = self.inputs = None

    def shutdown(self) -> None:
        """Stop everything before the node is destroyed (idempotent)."""
        self._teardown()

    # -- set-up ------------------------------------------------------------------------------------

    @property
    def _dtype_name(self) -> str:
        return str(self.model.dtype).removeprefix("torch.")

    def _subscribe(self, msg_type, topic: str, callback, qos: QoSProfile):
        """A subscription whose lost-message events are counted for /diagnostics.

        Sensor-data QoS (best effort, volatile, no deadline) accepts every publisher, so no
        incompatible-QoS event can occur; lost messages (queue overflow under load) can.
        """
        def lost(event, topic=topic) -> None:
            self.inputs.monitors[topic].lost_events += event.total_count_change

        try:
            return self.create_subscription(msg_type, topic, callback, qos,
                                            event_callbacks=SubscriptionEventCallbacks(message_lost=lost))
        except Exception:  # an RMW without the message-lost event: subscribe without it
            self.get_logger().info(f"{topic}: lost-message events unavailable on this RMW", once=True)
            return self.create_subscription(msg_type, topic, callback, qos)

    # -- inputs: O(1) per message --------------------------------------------------------------------

    def _now_ns(self) -> int:
        return self.get_clock().now().nanoseconds

    def _on_image(self, msg: Image | CompressedImage, index: int) -> None:
        self._log_refused(conversions.take_image(self.inputs, index, msg, self._now_ns(), time.monotonic()))

    def _on_odometry(self, msg: Odometry) -> None:
        self._log_refused(conversions.take_odometry(self.inputs, msg, self._now_ns(), time.monotonic()))

    def _log_refused(self, refused: Refused | None) -> None:
        if refused is not None:  # one call site for every topic: the text names the source
            self.get_logger().warning(refused.text, throttle_duration_sec=LOG_THROTTLE_S)

    # -- ticks ---------------------------------------------------------------------------------------

    def _report_tick(self, tick: int, status: Status, reason: str = "", t0_ns: int = 0) -> None:
        self._tick_pub.publish(conversions.tick_status(tick, status, self._now_ns(), reason, t0_ns))

    def _on_tick(self) -> None:
        if self._waiting_tick is not None:  # waiting still (or freed an instant ago): this newer tick replaces it
            self._drop(self._waiting_tick, "model busy with an earlier tick; a newer tick took its place")
            self._waiting_tick = None
        if self.runner.busy:
            # The model is still on an earlier tick: this one waits and runs, with the inputs of that moment,
            # as soon as the model is free. Only one waits; a newer tick takes an older waiting one's place.
            self.ticker.observe_clock(self._now_ns())
            self._waiting_tick = self.ticker.new_tick()
            return
        self._run_tick(self.ticker.new_tick())

    def _run_tick(self, tick: int) -> None:
        tick, selected = self.ticker.select(self._now_ns(), tick)
        if self.ticker.last_clock_jump:
            self.get_logger().warning(self.ticker.last_clock_jump, throttle_duration_sec=LOG_THROTTLE_S)
        if isinstance(selected, NotReady):
            self._last_not_ready = selected.reason
            self._last_outcome = f"not ready: {selected.reason}"
            self.get_logger().info(f"tick {tick}: not ready: {selected.reason}", throttle_duration_sec=LOG_THROTTLE_S)
            self._report_tick(tick, Status.NOT_READY, selected.reason)
            return
        epoch = self.inputs.epoch
        if self.runner.submit(lambda: self.ticker.run(tick, selected, epoch)):
            self.ticker.submitted(tick, selected)
            self._report_tick(tick, Status.SUBMITTED, t0_ns=selected.t0_ns)
        else:  # cannot happen from the executor's thread (only it submits), kept for safety
            self._drop(tick, "model busy with an earlier tick", selected.t0_ns)

    def _drop(self, tick: int, reason: str, t0_ns: int = 0) -> None:
        self.ticker.dropped()
        self.get_logger().debug(f"tick {tick}: dropped: {reason}")
        self._report_tick(tick, Status.DROPPED_BUSY, reason, t0_ns)

    def _on_outcome_from_worker(self, outcome: Outcome) -> None:
        self._outcomes.put(outcome)  # worker thread: hand over, publish on the executor's thread
        self._outcome_ready.trigger()

    def _on_outcomes(self) -> None:
        while True:
            try:
                outcome = self._outcomes.get_nowait()
            except queue.Empty:
                break
            if self.ticker is None:
                break  # torn down while the last tick ran
            if outcome.status is Status.PUBLISHED and not self._inputs_active:
                outcome = Outcome(outcome.tick, Status.REJECTED, outcome.model_input, outcome.prediction,
                                  reason="the node stopped ticking (deactivated) while the model ran",
                                  epoch=outcome.epoch)
            outcome, refused = self.ticker.finish(outcome, self._now_ns())
            self._log_refused(refused)
            t0_ns = outcome.model_input.t0_ns
            if outcome.status is Status.PUBLISHED:
                try:
                    self._publish(outcome)
                    continue
                except Exception as exc:  # a bug in output handling must not take the node down
                    error = traceback.format_exc()
                    self.ticker.counts.published -= 1
                    self.ticker.counts.model_errors += 1
                    outcome = Outcome(outcome.tick, Status.MODEL_ERROR, outcome.model_input,
                                      reason=f"output handling failed: {exc!r}", error=error)
            if outcome.status is Status.MODEL_ERROR:
                self._last_error = outcome.reason
                self._last_outcome = f"model error: {outcome.reason}"
                self.get_logger().error(f"tick {outcome.tick}: model failed, nothing published:\n{outcome.error}")
            elif outcome.bad_frame is not None:
                self._last_outcome = f"input rejected: {outcome.reason}"
                self.get_logger().warning(f"tick {outcome.tick}: {outcome.reason}; nothing published",
                                          throttle_duration_sec=LOG_THROTTLE_S)
            else:
                self._last_outcome = f"output withheld: {outcome.reason}"
                self.get_logger().warning(f"tick {outcome.tick}: {outcome.reason}; nothing published",
                                          throttle_duration_sec=LOG_THROTTLE_S)
            self._report_tick(outcome.tick, outcome.status, outcome.reason, t0_ns)
        if self._waiting_tick is not None and self._inputs_active and not self.runner.busy:
            tick, self._waiting_tick = self._waiting_tick, None
            self._run_tick(tick)

    def _publish(self, outcome: Outcome) -> None:
        in_odom = self.cfg.output_frame is OutputFrame.ODOM
        latency_ms = (self._now_ns() - outcome.model_input.t0_ns) / 1e6
        messages = conversions.output_messages(outcome, in_odom, list(self.cfg.subscribed_camera_topics),
                                               self.cfg.selection.value, latency_ms)
        self._trajectory_pub.publish(messages.trajectory)
        self._reasoning_pub.publish(messages.reasoning)
        self._output_pub.publish(messages.output)
        self._candidates_pub.publish(messages.candidates)
        self._latencies_ms.append(latency_ms)
        self._last_outcome = "published"
        self._report_tick(outcome.tick, Status.PUBLISHED, t0_ns=outcome.model_input.t0_ns)

    # -- diagnostics ---------------------------------------------------------------------------------

    def _check_publisher_types(self) -> None:
        """Name a publisher of another message type on a subscribed topic (it would never be heard)."""
        expected = {topic: self._image_type for topic in self.cfg.subscribed_camera_topics}
        expected[self.cfg.odometry_topic] = Odometry
        for topic, msg_type in expected.items():
            want = MESSAGE_TYPE_NAMES[msg_type]
            others = sorted({info.topic_type for info in self.get_publishers_info_by_topic(topic)} - {want})
            problem = ""
            if others:
                problem = f"published as {', '.join(t.replace('/msg/', '/') for t in others)}, expected " \
                          f"{want.replace('/msg/', '/')}"
            self.inputs.monitors[topic].type_problem = problem

    def _publish_diagnostics(self) -> None:
        now_mono, now_ns = time.monotonic(), self._now_ns()
        self._check_publisher_types()
        faults = self.inputs.faults(now_mono, now_ns)
        if self.ticker.last_clock_jump:
            faults.append(self.ticker.last_clock_jump)
            self.ticker.last_clock_jump = ""
        counts = self.ticker.counts
        lat = np.percentile(self._latencies_ms, [50, 90]) if self._latencies_ms else None
        ticks = {"ticks": counts.ticks, "published": counts.published, "not_ready": sum(counts.not_ready.values()),
                 "dropped_busy": counts.dropped, "model_errors": counts.model_errors + self.runner.failed,
                 "rejected_outputs": counts.rejected, "last_not_ready": self._last_not_ready or "-",
                 "frames_decoded": self.ticker.decoder.decoded, "frames_reused": self.ticker.decoder.reused,
                 "latency_ms_p50": "-" if lat is None else f"{lat[0]:.0f}",
                 "latency_ms_p90": "-" if lat is None else f"{lat[1]:.0f}",
                 "latency_ms_max": "-" if lat is None else f"{max(self._latencies_ms):.0f}"}
        new_drops = counts.dropped != self._reported_drops
        if self._last_outcome.startswith("model error"):
            level = DiagnosticStatus.ERROR
        elif self._last_outcome == "published" and not new_drops:
            level = DiagnosticStatus.OK
        else:
            level = DiagnosticStatus.WARN
        message = self._last_outcome
        if new_drops:
            message += f"; {counts.dropped - self._reported_drops} tick(s) dropped: the model is slower than rate_hz"
            self._reported_drops = counts.dropped
        model = {"model_path": self.cfg.model_path or "(tiny random demo model)", "device": str(self.model.device),
                 "dtype": self._dtype_name, "reasoning_mode": self.cfg.reasoning_mode,
                 "image_preprocessing": self.cfg.image_preprocessing, "compile_flow": self.cfg.compile_flow,
                 "last_error": self._last_error or "-"}
        name = self.get_fully_qualified_name()
        failed = level == DiagnosticStatus.ERROR
        unmatched = self._output_qos.problems()
        status = [
            conversions.diagnostic_status(f"{name}: inputs", DiagnosticStatus.WARN if faults else DiagnosticStatus.OK,
                                          "; ".join(faults) if faults else "all inputs arriving",
                                          self.inputs.values(now_mono, now_ns), name),
            conversions.diagnostic_status(f"{name}: inference", level, message, ticks, name),
            conversions.diagnostic_status(f"{name}: model", DiagnosticStatus.ERROR if failed else DiagnosticStatus.OK,
                                          f"the model raised: {self._last_error}" if failed else
                                          f"running on {self.model.device} ({self._dtype_name})", model, name),
            conversions.diagnostic_status(f"{name}: outputs", DiagnosticStatus.WARN if unmatched else DiagnosticStatus.OK,
                                          "; ".join(unmatched) or "no subscriber with incompatible QoS",
                                          self._output_qos.values(), name),
        ]
        self._diagnostics_pub.publish(DiagnosticArray(header=Header(stamp=self.get_clock().now().to_msg()), status=status))



class AlpamayoNode(DrivingNode, Node):
    """The driving node; `model` may be injected (tests), otherwise it is loaded from the parameters."""

    def __init__(self, model=None, **kwargs) -> None:
        Node.__init__(self, "alpamayo", **kwargs)
        self.cfg = declare_config(self)
        try:
            self._configure(model)
            self._start_inputs()
        except BaseException:  # e.g. an invalid topic name: stop the runner thread, or the process never exits
            self._teardown()
            raise


USAGE = """usage: alpamayo_node [--ros-args -p NAME:=VALUE ... | --params-file FILE]

AlpamayoR1 driving node: 4 cameras + odometry in, nav_msgs/Path trajectories, reasoning and
/diagnostics out. Parameters (all read-only, read once at start-up):
"""


def usage() -> str:
    lines = [USAGE]
    for spec in parameters.parameter_specs():
        extra = f" [{'|'.join(spec.choices)}]" if spec.choices else ""
        lines.append(f"  {spec.name} (default {spec.default!r}){extra}\n      {spec.description}")
    return "\n".join(lines)


def main(args: list[str] | None = None, node_class: type[Node] | None = None) -> int:
    """Entry point for `ros2 run` and `python -m alpamayo_ros.node` (`node_class`: the lifecycle node's main)."""
    args = list(args if args is not None else sys.argv)
    own = args[1:args.index("--ros-args")] if "--ros-args" in args else args[1:]
    if "-h" in own or "--help" in own:
        print(usage())
        return 0
    rclpy.init(args=args)
    node = None
    executor = SingleThreadedExecutor()
    try:
        try:
            node = (node_class or AlpamayoNode)()
        except (ValueError, FileNotFoundError, ParameterException, NameValidationException) as exc:  # parameters,
            # topic names or checkpoint
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

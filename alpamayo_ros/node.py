"""alpamayo_ros node: four cameras and odometry in; AlpamayoR1 trajectories, reasoning and diagnostics out.

With an Alpamayo 1.5 checkpoint it also takes navigation: a route text (`route_topic`) or the planned path
(`route_path_topic`), from which the pipeline words the next turn at t0 (`pipeline/route.py`); and a rig of 1
or 2 cameras (`camera_topics` with `camera_ids`) as well as 4.

One lifecycle node serves both executables: `alpamayo_lifecycle_node` waits for a lifecycle manager;
`alpamayo_node` brings itself to active at start, as Nav2's servers are brought up by a plain launch.

    unconfigured --configure--> inactive --activate--> active --deactivate--> inactive --cleanup--> unconfigured

configure reads the parameters, loads the model and builds the tick engine (`pipeline.engine`); activate
subscribes and starts the tick timer; deactivate stops both (outputs are lifecycle publishers); cleanup frees the
model. This file is ROS wiring only: callbacks hand messages to `pipeline.Inputs` (`conversions`), the timer hands
the clock to the engine, and what the engine reports is published. Results come back from the engine's worker
through a guard condition, so all publishing happens on the executor's thread. Every output is stamped with the
input time t0, never the publication time. `/diagnostics` reports in every state.

    ros2 run alpamayo_ros alpamayo_node --ros-args --params-file config/alpamayo.yaml
    python -m alpamayo_ros.node --ros-args -p model_path:=/models/Alpamayo-R1-10B
    ros2 run alpamayo_ros alpamayo_lifecycle_node   # then: ros2 lifecycle set /alpamayo configure / activate
"""

from __future__ import annotations

import signal
import sys
import threading
import time
import traceback

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from nav_msgs.msg import Odometry, Path
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, ParameterType
from rclpy.clock import Clock, ClockType
from rclpy.exceptions import NameValidationException, ParameterException
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, State, TransitionCallbackReturn
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
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
from alpamayo_ros.pipeline.outcome import ClockJump, Level, Status, TickReport
from alpamayo_ros.pipeline.route import RouteInput
from alpamayo_ros.pipeline.settings import TINY_RANDOM

LOG_THROTTLE_S = 5.0
STOP_POLL_S = 0.1  # the executor checks this often whether a signal asked it to stop
OUTPUT_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
TICK_QOS = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
# Sensor-data QoS (best effort, volatile) with queues for bursts: 0.8 s of 10 Hz frames per camera,
# 1 s of 50-100 Hz odometry.
CAMERA_QOS = QoSProfile(depth=8, reliability=qos_profile_sensor_data.reliability,
                        durability=qos_profile_sensor_data.durability, history=qos_profile_sensor_data.history)
ODOMETRY_QOS = QoSProfile(depth=100, reliability=qos_profile_sensor_data.reliability,
                          durability=qos_profile_sensor_data.durability, history=qos_profile_sensor_data.history)
# A route text is latched: the last one reaches a late joiner (its publisher must be transient-local as well).
ROUTE_TEXT_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
# A planner's path: reliable and volatile, which matches volatile and transient-local publishers alike (Nav2's /plan).
ROUTE_PATH_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
MESSAGE_TYPE_NAMES = {Image: "sensor_msgs/msg/Image", CompressedImage: "sensor_msgs/msg/CompressedImage",
                      Odometry: "nav_msgs/msg/Odometry"}
# A bad parameter, topic name or checkpoint: `cannot start: ...` (plain) or a failed transition (managed).
START_ERRORS = (ValueError, FileNotFoundError, OSError, ParameterException, NameValidationException)


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


class AlpamayoNode(LifecycleNode):
    """The driving node. `model` may be injected (tests). `managed=False` (the `alpamayo_node` executable): start-up
    failures are raised by `start_node` instead of logged as failed transitions."""

    def __init__(self, model=None, *, managed: bool = True, **kwargs) -> None:
        super().__init__(parameters.NODE_NAME, **kwargs)
        # Jazzy's (and Humble's) rclpy raises out of the executor on a transition the current state does not have,
        # so `ros2 lifecycle set` with the wrong one ended the node; Kilted's answers it refused, as this does.
        self._service_change_state.callback = self._refusing_unavailable(self._service_change_state.callback)
        self._injected_model = model
        self._managed = managed
        self.cfg: NodeConfig | None = None
        self.start_error: BaseException | None = None  # why the last configure or activate failed
        try:  # declared at once so `ros2 param` shows them; a bad value fails `configure`, naming it
            self.cfg = declare_config(self)
        except (ValueError, ParameterException) as exc:
            self.start_error = exc
        self.model = self.engine = self.inputs = None
        self._outputs: dict[str, object] = {}
        self._input_subscriptions: list = []
        self._tick_timer = self._results_ready = None
        self._output_qos = OutputQosWatch(self)  # names subscribers whose QoS cannot match an output
        # The one /diagnostics publisher, on the steady clock: it reports in every state, and when sim time stalls.
        self._diagnostics_pub = self._output_qos.publisher(self.create_publisher, DiagnosticArray, "/diagnostics",
                                                           OUTPUT_QOS)
        self.create_timer(1.0, self._publish_diagnostics, clock=Clock(clock_type=ClockType.STEADY_TIME))

    def _refusing_unavailable(self, change_state):
        """~/change_state's callback, answering success=False to a transition not available from the current state."""
        def callback(request, response):
            wanted = request.transition
            available = [(number, label) for number, label, *_ in self._state_machine.available_transitions]
            if not any(wanted.label == label if wanted.label else wanted.id == number for number, label in available):
                self.get_logger().error(f"transition {wanted.label or wanted.id} refused: not available from "
                                        f"state {self._state_machine.current_state[1]}")
                response.success = False
                return response
            return change_state(request, response)
        return callback

    @property
    def _config_error(self) -> str:
        return "" if self.start_error is None else str(self.start_error)

    # -- lifecycle -----------------------------------------------------------------------------------

    def on_configure(self, state: State) -> TransitionCallbackReturn:
        if self.cfg is None:
            return self._failed("configure", self.start_error)
        from alpamayo_ros.pipeline.engine import build_model, model_engine  # torch: loaded with the model

        try:
            if self._injected_model is None and self.cfg.model_path == TINY_RANDOM:
                self.get_logger().warning(f"model_path is '{TINY_RANDOM}': running the TINY RANDOM model on the CPU; "
                                          "its trajectories and reasoning are noise, never drive with them")
            elif self._injected_model is None and not self.cfg.model_path:
                self.get_logger().warning("model_path is empty: running the embedded driver on the CPU, a small model "
                                          "trained on the synthetic world; never drive a car with it")
            elif self._injected_model is None:
                self.get_logger().info(f"loading the checkpoint {self.cfg.model_path} on {self.cfg.device} "
                                       f"({self.cfg.dtype})")
            self.model, _ = build_model(self.cfg.model_settings, self._injected_model)
            route = RouteInput(self.cfg.max_route_age_ns) if self.cfg.has_route else None
            self.inputs = Inputs(self.cfg.subscribed_camera_topics, self.cfg.odometry_topic, self.cfg.sync, route,
                                 self.cfg.camera_names)
            self._results_ready = self.create_guard_condition(self._on_results)
            self.engine = model_engine(self.inputs, self.model, self.cfg.tick_settings, self.cfg.sampling,
                                       worker=True, on_result=self._results_ready.trigger)
            outputs = (("trajectory", Path, OUTPUT_QOS), ("reasoning", String, OUTPUT_QOS),
                       ("output", DrivingOutput, OUTPUT_QOS), ("candidates", MarkerArray, OUTPUT_QOS),
                       ("tick", TickStatus, TICK_QOS))
            self._outputs = {name: self._output_qos.publisher(self.create_lifecycle_publisher, msg_type, f"~/{name}", qos)
                             for name, msg_type, qos in outputs}
        except Exception as exc:  # checkpoint missing, mismatched, unreadable, or a bug: say what and where
            self._teardown()
            return self._failed("configure", exc)
        self.start_error = None
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: State) -> TransitionCallbackReturn:
        try:
            self._subscribe_inputs()
        except Exception as exc:  # e.g. an invalid topic name
            self._stop_inputs()
            return self._failed("activate", exc)
        self.engine.resume()
        return super().on_activate(state)

    def on_deactivate(self, state: State) -> TransitionCallbackReturn:
        self._stop_inputs()
        return super().on_deactivate(state)

    def on_cleanup(self, state: State) -> TransitionCallbackReturn:
        self._teardown()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: State) -> TransitionCallbackReturn:
        self._teardown()
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: State) -> TransitionCallbackReturn:
        self._teardown()
        return TransitionCallbackReturn.SUCCESS

    def _failed(self, transition: str, exc: BaseException) -> TransitionCallbackReturn:
        """A transition failed: keep why; a managed node logs it (rclpy would not say a word)."""
        self.start_error = exc
        if self._managed:
            detail = "" if isinstance(exc, START_ERRORS) else f"\n{traceback.format_exc()}"
            text = str(exc) if isinstance(exc, START_ERRORS) else f"{type(exc).__name__}: {exc}"
            self.get_logger().fatal(f"cannot {transition}: {text}{detail}")
        return TransitionCallbackReturn.FAILURE

    def _subscribe_inputs(self) -> None:
        image_type = self._image_type
        for index, topic in enumerate(self.cfg.subscribed_camera_topics):
            self._input_subscriptions.append(self._subscribe(
                image_type, topic, lambda msg, i=index: self._on_image(msg, i), CAMERA_QOS))
        self._input_subscriptions.append(self._subscribe(Odometry, self.cfg.odometry_topic, self._on_odometry,
                                                         ODOMETRY_QOS))
        if self.cfg.route_topic:
            self._input_subscriptions.append(self.create_subscription(String, self.cfg.route_topic, self._on_route_text,
                                                                      ROUTE_TEXT_QOS))
        if self.cfg.route_path_topic:
            self._input_subscriptions.append(self.create_subscription(Path, self.cfg.route_path_topic,
                                                                      self._on_route_path, ROUTE_PATH_QOS))
        if self.cfg.has_route:
            self.get_logger().info(f"navigation: route text {self.cfg.route_topic or '-'}, route path "
                                   f"{self.cfg.route_path_topic or '-'}, max age {self.cfg.max_route_age_s} s, guidance "
                                   f"weight {self.cfg.nav_guidance_weight}")
        self._tick_timer = self.create_timer(1.0 / self.cfg.rate_hz, self._on_tick)
        cameras = ", ".join(f"{name} {topic}"
                            for name, topic in zip(self.cfg.camera_names, self.cfg.subscribed_camera_topics))
        self.get_logger().info(f"subscribed: cameras ({MESSAGE_TYPE_NAMES[image_type]}) {cameras}; odometry "
                               f"(nav_msgs/msg/Odometry) {self.cfg.odometry_topic}")
        self.get_logger().info(f"ready: {self.cfg.rate_hz} Hz, {self.cfg.num_samples} sample(s), output frame "
                               f"{self.cfg.output_frame.value}, model on {self.model.device} ({self._dtype_name})")

    def _stop_inputs(self) -> None:
        """Unsubscribe and stop ticking; a tick already running finishes, its outputs withheld."""
        for subscription in self._input_subscriptions:
            self.destroy_subscription(subscription)
        self._input_subscriptions = []
        if self._tick_timer is not None:
            self.destroy_timer(self._tick_timer)
            self._tick_timer = None
        if self.engine is not None:
            self._publish_events(self.engine.pause())

    def shutdown(self) -> None:
        """Stop everything before the node is destroyed (idempotent)."""
        self._teardown()

    def _teardown(self) -> None:
        """Stop the worker (finishing its tick) and release what configure made (idempotent, also half-way)."""
        self._stop_inputs()
        if self.engine is not None:
            self.engine.close()
        for publisher in self._outputs.values():
            self.destroy_lifecycle_publisher(publisher)
        self._outputs = {}
        if self._results_ready is not None:
            self.destroy_guard_condition(self._results_ready)
            self._results_ready = None
        # The engine holds the model (its inference closure, the cache reset) and the inputs hold buffered
        # frames: let all of it go.
        self.model = self.engine = self.inputs = None

    # -- inputs: O(1) per message --------------------------------------------------------------------

    @property
    def _image_type(self) -> type:
        return Image if self.cfg.image_transport is ImageTransport.RAW else CompressedImage

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
        except NameValidationException:
            raise
        except Exception:  # an RMW without the message-lost event: subscribe without it
            self.get_logger().info(f"{topic}: lost-message events unavailable on this RMW", once=True)
            return self.create_subscription(msg_type, topic, callback, qos)

    def _now_ns(self) -> int:
        return self.get_clock().now().nanoseconds

    def _on_image(self, msg: Image | CompressedImage, index: int) -> None:
        self._log_refused(conversions.take_image(self.inputs, index, msg, self._now_ns(), time.monotonic()))

    def _on_odometry(self, msg: Odometry) -> None:
        self._log_refused(conversions.take_odometry(self.inputs, msg, self._now_ns(), time.monotonic()))

    def _on_route_text(self, msg: String) -> None:
        self._log_refused(conversions.take_route_text(self.inputs, msg, self.cfg.route_topic, self._now_ns()))

    def _on_route_path(self, msg: Path) -> None:
        self._log_refused(conversions.take_route_path(self.inputs, msg, self.cfg.route_path_topic, self._now_ns()))

    def _log_refused(self, refused: Refused | None) -> None:
        if refused is not None:  # one call site for every topic: the text names the source
            self.get_logger().warning(refused.text, throttle_duration_sec=LOG_THROTTLE_S)

    # -- ticks: the engine decides, the node publishes -------------------------------------------------

    def _on_tick(self) -> None:
        self._publish_events(self.engine.tick(self._now_ns()))

    def _on_results(self) -> None:
        if self.engine is not None:  # torn down while the last tick ran
            self._publish_events(self.engine.collect(self._now_ns()))

    def _publish_events(self, events: list) -> None:
        for event in events:
            if isinstance(event, ClockJump):
                self.get_logger().warning(event.text, throttle_duration_sec=LOG_THROTTLE_S)
                continue
            report = event
            self._log_refused(report.refused)
            if report.status is Status.PUBLISHED:
                try:
                    self._publish_outputs(report)
                except Exception:  # a bug in output handling must not take the node down
                    report = self.engine.output_failed(report, traceback.format_exc())
            self._log_report(report)
            if "tick" in self._outputs:
                self._outputs["tick"].publish(conversions.tick_status(report.tick, report.status, self._now_ns(),
                                                                      report.reason, report.t0_ns))

    def _log_report(self, report: TickReport) -> None:
        if report.status is Status.NOT_READY:
            self.get_logger().info(f"tick {report.tick}: not ready: {report.reason}",
                                   throttle_duration_sec=LOG_THROTTLE_S)
        elif report.level is Level.ERROR:
            self.get_logger().error(f"tick {report.tick}: model failed, nothing published:\n{report.outcome.error}")
        elif report.status is Status.REJECTED:
            self.get_logger().warning(f"tick {report.tick}: {report.reason}; nothing published",
                                      throttle_duration_sec=LOG_THROTTLE_S)
        elif report.status is Status.DROPPED_BUSY:
            self.get_logger().debug(f"tick {report.tick}: dropped: {report.reason}")

    def _publish_outputs(self, report: TickReport) -> None:
        in_odom = self.cfg.output_frame is OutputFrame.ODOM
        messages = conversions.output_messages(report.outcome, in_odom,
                                               list(self.cfg.subscribed_camera_topics), self.cfg.selection.value,
                                               report.latency_ms)
        for name in ("trajectory", "reasoning", "output", "candidates"):
            self._outputs[name].publish(getattr(messages, name))

    # -- diagnostics ---------------------------------------------------------------------------------

    @property
    def _dtype_name(self) -> str:
        return str(self.model.dtype).removeprefix("torch.")

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
        name = self.get_fully_qualified_name()
        if self.engine is None:  # unconfigured, or configure failed: say where the node stands
            error = self._config_error
            status = [conversions.diagnostic_status(
                f"{name}: model", DiagnosticStatus.ERROR if error else DiagnosticStatus.WARN,
                f"cannot configure: {error}" if error else "unconfigured (lifecycle)", {}, name)]
        else:
            status = self._engine_diagnostics(name)
        self._diagnostics_pub.publish(DiagnosticArray(header=Header(stamp=self.get_clock().now().to_msg()),
                                                      status=status))

    def _engine_diagnostics(self, name: str) -> list[DiagnosticStatus]:
        now_mono, now_ns = time.monotonic(), self._now_ns()
        self._check_publisher_types()
        engine = self.engine.status()
        faults = self.inputs.faults(now_mono, now_ns) + ([engine.clock_jump] if engine.clock_jump else [])
        failed = engine.level is Level.ERROR
        model = {"model_path": self.cfg.model_path or "(embedded driver)", "device": str(self.model.device),
                 "dtype": self._dtype_name, "reasoning_mode": self.cfg.reasoning_mode,
                 "image_preprocessing": self.cfg.image_preprocessing, "compile_flow": self.cfg.compile_flow,
                 "model_type": self.model.config.model_type,
                 "last_error": engine.model_error or "-"}
        unmatched = self._output_qos.problems()
        return [
            conversions.diagnostic_status(f"{name}: inputs", DiagnosticStatus.WARN if faults else DiagnosticStatus.OK,
                                          "; ".join(faults) if faults else "all inputs arriving",
                                          self.inputs.values(now_mono, now_ns), name),
            conversions.diagnostic_status(f"{name}: inference", bytes([engine.level]), engine.message, engine.values,
                                          name),
            conversions.diagnostic_status(f"{name}: model", DiagnosticStatus.ERROR if failed else DiagnosticStatus.OK,
                                          f"the model raised: {engine.model_error}" if failed else
                                          f"running on {self.model.device} ({self._dtype_name})", model, name),
            conversions.diagnostic_status(f"{name}: outputs", DiagnosticStatus.WARN if unmatched else DiagnosticStatus.OK,
                                          "; ".join(unmatched) or "no subscriber with incompatible QoS",
                                          self._output_qos.values(), name),
        ]


def start_node(model=None, **kwargs) -> AlpamayoNode:
    """An `AlpamayoNode` brought to active (the `alpamayo_node` executable, and tests); raises what stopped it."""
    node = AlpamayoNode(model, managed=False, **kwargs)
    for transition in (node.trigger_configure, node.trigger_activate):
        if transition() != TransitionCallbackReturn.SUCCESS:
            node.shutdown()
            node.destroy_node()
            raise node.start_error
    return node


USAGE = """usage: alpamayo_node [--ros-args -p NAME:=VALUE ... | --params-file FILE]
       alpamayo_lifecycle_node [the same]   (waits for configure / activate from a lifecycle manager)

AlpamayoR1 driving node: 4 cameras (1 or 2 with Alpamayo 1.5) + odometry in, nav_msgs/Path trajectories,
reasoning and /diagnostics out. Parameters (all read-only, read once at start-up):
"""


def usage() -> str:
    lines = [USAGE]
    for spec in parameters.parameter_specs():
        extra = f" [{'|'.join(spec.choices)}]" if spec.choices else ""
        lines.append(f"  {spec.name} (default {spec.default!r}){extra}\n      {spec.description}")
    return "\n".join(lines)


def main(args: list[str] | None = None, managed: bool = False) -> int:
    """Entry point for `ros2 run` and `python -m alpamayo_ros.node` (`managed`: the lifecycle node's main)."""
    args = list(args if args is not None else sys.argv)
    own = args[1:args.index("--ros-args")] if "--ros-args" in args else args[1:]
    if "-h" in own or "--help" in own:
        print(usage())
        return 0
    try:  # rcl parses --ros-args here: a bad --log-level or -p rule is a start-up error like a bad parameter
        rclpy.init(args=args)
    except RuntimeError as exc:  # rclpy's RCLError
        rclpy.logging.get_logger(parameters.NODE_NAME).fatal(f"cannot start: {exc}")
        return 1
    node = None
    exiting = False  # the node ran and is stopping: the process ends after main returns
    executor = SingleThreadedExecutor()
    try:
        try:
            node = AlpamayoNode() if managed else start_node()
        except START_ERRORS as exc:
            rclpy.logging.get_logger(parameters.NODE_NAME).fatal(f"cannot start: {exc}")
            return 1
        executor.add_node(node)
        # SIGINT/SIGTERM only set a flag. Left to Python's default handler, a KeyboardInterrupt that lands
        # while rclpy's C++ code is taking a message surfaces as a RuntimeError ("Unable to convert call
        # argument") and the node would exit 1 with a traceback instead of shutting down cleanly.
        stop = threading.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stop.set())
        try:
            while not stop.is_set() and rclpy.ok():
                executor.spin_once(timeout_sec=STOP_POLL_S)
        finally:
            # During the clean-up below (a tick may still be running) SIGTERM ends the process, as launch
            # escalates. A second SIGINT (a terminal's Ctrl-C and the one launch forwards arrive as two) only
            # sets the flag again, then is ignored: Python resets SIGINT to the default action while the
            # interpreter exits (torch's teardown takes a while), and the process would die of it (exit -2).
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            exiting = True
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.shutdown()
            executor.remove_node(node)
            node.destroy_node()
        executor.shutdown()
        rclpy.try_shutdown()
        if exiting:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

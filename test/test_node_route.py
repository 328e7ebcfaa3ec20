"""Navigation topics of the node (Alpamayo 1.5): a latched route text reaches a late joiner, a path is taken,
bad ones are refused, and the route from either topic reaches the prompt and DrivingOutput, here on a
2-camera rig. The node is in-process on sim time; camera and odometry messages go straight to its callbacks."""

import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy is not installed")
pytest.importorskip("alpamayo_msgs.msg", reason="alpamayo_msgs is not built (make test builds it)")

from geometry_msgs.msg import PoseStamped  # noqa: E402
from nav_msgs.msg import Odometry, Path  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.lifecycle import TransitionCallbackReturn  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from rosgraph_msgs.msg import Clock  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import Header, String  # noqa: E402

from alpamayo_msgs.msg import DrivingOutput  # noqa: E402
from alpamayo_ros import conversions  # noqa: E402
from alpamayo_ros.conversions import ns_to_stamp  # noqa: E402
from alpamayo_ros.node import AlpamayoNode  # noqa: E402
from alpamayo_ros.pipeline.route import next_manoeuvre  # noqa: E402
from alpamayo_ros.tools.synthetic import road_images  # noqa: E402

SPIN_TIMEOUT_S = 20.0
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
MS = 1_000_000
SPEED_MPS = 8.0
CAMERAS = {"/cam/front_wide": "camera_front_wide_120fov", "/cam/front_tele": "camera_front_tele_30fov"}


@pytest.fixture(scope="module")
def model15(conformance_dir):
    from alpamayo_ros.model.loading import from_pretrained

    return from_pretrained(conformance_dir / "alpamayo1_5" / "checkpoint", dtype="float32")


def spin_until(executor, condition) -> bool:
    deadline = time.monotonic() + SPIN_TIMEOUT_S
    while time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.05)
        if condition():
            return True
    return False


def path_msg(points, frame_id="odom") -> Path:
    return Path(header=Header(frame_id=frame_id),
                poses=[PoseStamped(header=Header(frame_id=frame_id)) for _ in points])


def left_turn(turn_at_m: float) -> np.ndarray:
    """(N, 2): straight along x, then a 90 degree left arc of 10 m radius."""
    angles = np.radians(np.arange(0.0, 91.0, 3.0))
    arc = np.stack([turn_at_m + 10 * np.sin(angles), 10 * (1 - np.cos(angles))], 1)
    return np.concatenate([np.stack([np.arange(0.0, turn_at_m), np.zeros(int(np.ceil(turn_at_m)))], 1), arc])


def drive(node, start_ms: int, end_ms: int) -> None:
    """A straight drive along x at 8 m/s into the node's callbacks: odometry at 50 Hz, both cameras at 10 Hz."""
    images = road_images()
    for t_ms in range(start_ms, end_ms + 1, 20):
        odometry = Odometry(header=Header(stamp=ns_to_stamp(t_ms * MS), frame_id="odom"), child_frame_id="base_link")
        odometry.pose.pose.position.x = SPEED_MPS * t_ms / 1e3
        odometry.pose.pose.orientation.w = 1.0
        odometry.twist.twist.linear.x = SPEED_MPS
        node._on_odometry(odometry)
        if t_ms % 100 == 0:
            for camera in range(len(CAMERAS)):
                pixels = images[camera, 0]
                node._on_image(Image(header=Header(stamp=ns_to_stamp(t_ms * MS)), height=pixels.shape[0],
                                     width=pixels.shape[1], encoding="rgb8", step=pixels.shape[1] * 3,
                                     data=pixels.tobytes()), camera)


def test_either_route_topic_reaches_the_prompt_and_driving_output_on_two_cameras(context, model15, monkeypatch):
    publisher = rclpy.create_node("route_publisher", context=context)
    text_pub = publisher.create_publisher(String, "/route", LATCHED)
    text_pub.publish(String(data="Turn left in 40m"))  # before the node exists: transient-local delivers it later
    path_pub = publisher.create_publisher(Path, "/plan", 1)
    clock_pub = publisher.create_publisher(Clock, "/clock", 10)
    outputs = []
    publisher.create_subscription(DrivingOutput, "/alpamayo/output", outputs.append, 10)
    calls = []
    sample = model15.sample
    monkeypatch.setattr(model15, "sample", lambda *a, **k: calls.append((a, k)) or sample(*a, **k))
    node = AlpamayoNode(model=model15, context=context, parameter_overrides=[
        Parameter("route_topic", value="/route"), Parameter("route_path_topic", value="/plan"),
        Parameter("camera_topics", value=list(CAMERAS)), Parameter("camera_ids", value=list(CAMERAS.values())),
        Parameter("use_sim_time", value=True), Parameter("max_reasoning_tokens", value=2),
        Parameter("diffusion_steps", value=1)])
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    executor.add_node(publisher)

    def tick_at(t_ms: int) -> DrivingOutput:
        """Sim time to t_ms, the drive up to it, one tick: its DrivingOutput as a subscriber hears it."""
        clock_pub.publish(Clock(clock=ns_to_stamp(t_ms * MS)))
        assert spin_until(executor, lambda: node._now_ns() == t_ms * MS)
        drive(node, t_ms - 480 if outputs else 0, t_ms)
        heard = len(outputs)
        node._on_tick()
        assert spin_until(executor, lambda: len(outputs) > heard), node.engine.status().values
        return outputs[-1]

    try:
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        route = node.inputs.route
        assert spin_until(executor, lambda: route._text is not None)
        assert route._text[0] == "Turn left in 40m"
        plan = path_msg(range(3))
        for k, pose in enumerate(plan.poses):
            pose.pose.position.x = float(k)
        assert spin_until(executor, lambda: (path_pub.publish(plan), route._path is not None)[1])
        assert route._path[1] == "odom" and route._path[0].shape == (3, 2)
        plan.poses[1].pose.position.y = float("nan")
        refused = conversions.take_route_path(node.inputs, plan, "/plan", 0)
        assert "poses[].pose.position is NaN or inf" in refused.text and route._path[0].shape == (3, 2)  # kept
        refused = conversions.take_route_text(node.inputs, String(data="left<|route_end|>"), "/route", 0)
        assert "no <| or |>" in refused.text and route._text[0] == "Turn left in 40m"

        # The text, fresh, wins over the path: in the prompt and in DrivingOutput, with both cameras labelled.
        out = tick_at(2_000)
        (images, *_), kwargs = calls[-1]
        assert kwargs["route"] == "Turn left in 40m" and kwargs["camera_ids"] == (1, 6) and len(images) == 8
        assert (out.route, out.route_source) == ("Turn left in 40m", "route_topic")
        assert list(out.camera_topics) == list(CAMERAS) and len(out.camera_stamps) == 8
        # The text cleared, a planned path with a left turn: its next turn at t0 is the route.
        text_pub.publish(String(data=""))
        assert spin_until(executor, lambda: route._text is None)
        turn = left_turn(70.0)
        plan = path_msg(turn)
        for pose, (x, y) in zip(plan.poses, turn):
            pose.pose.position.x, pose.pose.position.y = float(x), float(y)
        assert spin_until(executor, lambda: (path_pub.publish(plan), route._path[0].shape == turn.shape)[1])
        out = tick_at(2_500)
        expected = next_manoeuvre(turn, np.array([SPEED_MPS * 2.5, 0.0])).text  # the car is at x = 20 m at t0
        assert expected.startswith("Turn left in") and expected != "Turn left in 40m"
        assert calls[-1][1]["route"] == expected and out.route == expected
        assert out.route_source.startswith("route_path_topic: left turn")
    finally:
        executor.shutdown()
        node.trigger_shutdown()
        node.destroy_node()
        publisher.destroy_node()

"""Navigation topics of the node (Alpamayo 1.5): a latched route text reaches a late joiner, a path is taken,
bad ones are refused, and an R1 checkpoint refuses route topics."""

import time

import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy is not installed")
pytest.importorskip("alpamayo_msgs.msg", reason="alpamayo_msgs is not built (make test builds it)")

from geometry_msgs.msg import PoseStamped  # noqa: E402
from nav_msgs.msg import Path  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.lifecycle import TransitionCallbackReturn  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from std_msgs.msg import Header, String  # noqa: E402

from alpamayo_ros import conversions  # noqa: E402
from alpamayo_ros.node import AlpamayoNode  # noqa: E402

SPIN_TIMEOUT_S = 20.0
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


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


def test_route_topics_feed_the_route_input(context, model15):
    publisher = rclpy.create_node("route_publisher", context=context)
    text_pub = publisher.create_publisher(String, "/route", LATCHED)
    text_pub.publish(String(data="Turn left in 40m"))  # before the node exists: transient-local delivers it later
    path_pub = publisher.create_publisher(Path, "/plan", 1)
    node = AlpamayoNode(model=model15, context=context, parameter_overrides=[
        Parameter("route_topic", value="/route"), Parameter("route_path_topic", value="/plan")])
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    executor.add_node(publisher)
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
    finally:
        executor.shutdown()
        node.trigger_shutdown()
        node.destroy_node()
        publisher.destroy_node()

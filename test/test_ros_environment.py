"""The ROS 2 wheels work here, loopback-only, as the node will need them."""

import os

import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy is not installed (pip ros-rclpy==9.1.2, see README)")


def test_rclpy_starts_with_loopback_discovery():
    assert os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        node = rclpy.create_node("alpamayo_env_probe", context=context)
        from nav_msgs.msg import Path

        publisher = node.create_publisher(Path, "probe_path", 10)
        publisher.publish(Path())
        node.destroy_node()
    finally:
        rclpy.try_shutdown(context=context)

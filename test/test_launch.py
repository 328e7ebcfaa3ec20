"""drive.launch.py on a real ROS 2 install: the node starts with the tiny model and publishes diagnostics.

Skips where launch_pytest (a ROS 2 install, not a PyPI wheel) is absent, e.g. in this project's CI.
"""

from pathlib import Path

import pytest

LAUNCH_FILE = Path(__file__).resolve().parents[1] / "launch" / "drive.launch.py"
OUTPUT_WAIT_TIMEOUT_S = 120


launch_pytest = pytest.importorskip("launch_pytest", reason="launch_pytest is not installed (needs a ROS 2 install)")

import launch  # noqa: E402
from launch.actions import IncludeLaunchDescription  # noqa: E402
from launch.launch_description_sources import PythonLaunchDescriptionSource  # noqa: E402


@launch_pytest.fixture
def drive_launch():
    include = IncludeLaunchDescription(PythonLaunchDescriptionSource(str(LAUNCH_FILE)),
                                       launch_arguments={"device": "cpu", "log_level": "info"}.items())
    return launch.LaunchDescription([include, launch_pytest.actions.ReadyToTest()])


@pytest.mark.launch(fixture=drive_launch)
async def test_node_starts_and_reports_ready(launch_context):
    import asyncio

    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray

    rclpy.init()
    node = rclpy.create_node("launch_test_listener")
    seen = []
    node.create_subscription(DiagnosticArray, "/diagnostics", seen.append, 10)
    try:
        for _ in range(OUTPUT_WAIT_TIMEOUT_S * 10):
            rclpy.spin_once(node, timeout_sec=0.1)
            if any(s.name.endswith(": model") for d in seen for s in d.status):
                break
            await asyncio.sleep(0)
        assert seen, "no /diagnostics from the launched node"
    finally:
        node.destroy_node()
        rclpy.shutdown()

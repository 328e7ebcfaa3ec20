"""drive.launch.py on a real ROS 2 install (colcon-built, install/setup.bash sourced).

launch_pytest: the node starts with the tiny model, its own diagnostics arrive, params_file's values hold
where no launch argument is given and given arguments override them. `ros2 launch`: bad arguments and a node
that cannot start end the launch with a message. Skips with the reason where launch_pytest, ros2cli or the
installed package are absent (as in this project's CI, which has PyPI wheels only).
"""

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml

from conftest import REPO

DIAGNOSTICS_TIMEOUT_S = 120  # imports and the tiny model on a slow machine
LAUNCH_EXIT_TIMEOUT_S = 120
POLL_S = 0.05
NAMESPACE = f"launch_test_{os.getpid()}"  # only this test's node reports under it
NODE = f"/{NAMESPACE}/alpamayo"
CAMERA_TOPICS = ["/lt/cross_left", "/lt/front_wide", "/lt/cross_right", "/lt/front_tele"]

launch_pytest = pytest.importorskip("launch_pytest", reason="launch_pytest is not installed (needs a ROS 2 install)")
ament_index = pytest.importorskip("ament_index_python.packages", reason="ament_index_python is not installed")
try:
    SHARE = Path(ament_index.get_package_share_directory("alpamayo_ros"))
    ament_index.get_package_share_directory("alpamayo_msgs")
except ament_index.PackageNotFoundError as missing:
    pytest.skip(f"{missing}: build with colcon (README) and source install/setup.bash", allow_module_level=True)

import launch  # noqa: E402
from launch.actions import IncludeLaunchDescription  # noqa: E402
from launch.launch_description_sources import PythonLaunchDescriptionSource  # noqa: E402

LAUNCH_FILE = SHARE / "launch" / "drive.launch.py"


def _params_file() -> Path:
    """The shipped YAML on the CPU and on sim time (which no launch argument below overrides)."""
    document = yaml.safe_load((REPO / "config" / "alpamayo.yaml").read_text())
    document["/**"]["ros__parameters"].update(device="cpu", use_sim_time=True)
    path = Path(tempfile.mkdtemp(prefix="alpamayo_launch_test_")) / "params.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


PARAMS_FILE = _params_file()


@launch_pytest.fixture
def drive_launch():
    arguments = {"params_file": str(PARAMS_FILE), "namespace": NAMESPACE, "camera_topics": ",".join(CAMERA_TOPICS)}
    include = IncludeLaunchDescription(PythonLaunchDescriptionSource(str(LAUNCH_FILE)),
                                       launch_arguments=arguments.items())
    return launch.LaunchDescription([include, launch_pytest.actions.ReadyToTest()])


async def _spin_until(executor, done, timeout_s: float, clock_publisher, clock_ns: list[int]) -> bool:
    import asyncio

    from rosgraph_msgs.msg import Clock

    from alpamayo_ros.conversions import ns_to_stamp

    for _ in range(round(timeout_s / POLL_S)):
        clock_ns[0] += round(POLL_S * 1e9)  # the node is on sim time: its timers need /clock
        clock_publisher.publish(Clock(clock=ns_to_stamp(clock_ns[0])))
        executor.spin_once(timeout_sec=0)
        if done():
            return True
        await asyncio.sleep(POLL_S)  # the launch runs on this event loop
    return False


@pytest.mark.launch(fixture=drive_launch)
async def test_node_reports_and_keeps_params_file_values(launch_context):
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rcl_interfaces.srv import GetParameters
    from rclpy.executors import SingleThreadedExecutor
    from rosgraph_msgs.msg import Clock

    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("launch_test_listener", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    try:
        ours = []
        node.create_subscription(DiagnosticArray, "/diagnostics",
                                 lambda m: ours.extend(s for s in m.status if s.name.startswith(f"{NODE}: ")), 10)
        clock = node.create_publisher(Clock, "/clock", 10)
        clock_ns = [1_000_000_000]
        assert await _spin_until(executor, lambda: any(s.name == f"{NODE}: model" for s in ours),
                                 DIAGNOSTICS_TIMEOUT_S, clock, clock_ns), \
            f"no diagnostics from {NODE} within {DIAGNOSTICS_TIMEOUT_S} s"
        assert all(s.hardware_id == NODE for s in ours)

        client = node.create_client(GetParameters, f"{NODE}/get_parameters")
        assert await _spin_until(executor, client.service_is_ready, DIAGNOSTICS_TIMEOUT_S, clock, clock_ns), \
            f"{NODE}/get_parameters never appeared"
        future = client.call_async(GetParameters.Request(names=["use_sim_time", "device", "camera_topics"]))
        assert await _spin_until(executor, future.done, DIAGNOSTICS_TIMEOUT_S, clock, clock_ns), \
            "get_parameters timed out"
        use_sim_time, device, camera_topics = future.result().values
        assert use_sim_time.bool_value is True  # params_file's; the launch argument was not given
        assert device.string_value == "cpu"
        assert list(camera_topics.string_array_value) == CAMERA_TOPICS  # given: overrides params_file
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown(context=context)


ros2 = shutil.which("ros2")
requires_ros2cli = pytest.mark.skipif(ros2 is None, reason="ros2cli (`ros2`) is not installed")


def _ros2_launch(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run([ros2, "launch", "alpamayo_ros", "drive.launch.py", *arguments], capture_output=True,
                          text=True, timeout=LAUNCH_EXIT_TIMEOUT_S, stdin=subprocess.DEVNULL)


@requires_ros2cli
def test_missing_params_file_stops_the_launch_naming_it(tmp_path):
    result = _ros2_launch(f"params_file:={tmp_path / 'missing.yaml'}")
    assert result.returncode != 0
    assert "params_file:=" in result.stdout + result.stderr and "no readable file there" in result.stdout + result.stderr


@requires_ros2cli
def test_node_that_cannot_start_ends_the_launch(tmp_path):
    """A checkpoint directory that does not exist: the node stops at start-up, and the launch ends too."""
    result = _ros2_launch(f"params_file:={PARAMS_FILE}", f"model_path:={tmp_path / 'no_checkpoint'}",
                          "use_sim_time:=false", f"namespace:={NAMESPACE}_bad")
    output = result.stdout + result.stderr
    assert "cannot start" in output
    assert "alpamayo_node exited with code 1" in output and "ending the launch" in output

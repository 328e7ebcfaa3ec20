"""drive.launch.py on a real ROS 2 install (colcon-built, install/setup.bash sourced).

launch_pytest: the node starts with the tiny model, its own diagnostics arrive, params_file's values hold
where no launch argument is given and given arguments override them; managed:=true brings the lifecycle node
to active (autostart) or leaves it unconfigured (autostart:=false). `ros2 launch`: bad arguments, a node that
cannot start and a lifecycle node that cannot configure end the launch with a message. Skips with the reason
where launch_pytest, ros2cli or the installed package are absent (as in this project's CI, which has PyPI
wheels only).
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
LIFECYCLE_POLL_S = 0.5  # between ~/get_state calls while autostart configures
NAMESPACE = f"launch_test_{os.getpid()}"  # only this test's node reports under it
NODE = f"/{NAMESPACE}/alpamayo"
MANAGED_NAMESPACE = f"{NAMESPACE}_managed"
MANAGED_NODE = f"/{MANAGED_NAMESPACE}/alpamayo"
MANUAL_NAMESPACE = f"{NAMESPACE}_manual"  # managed, autostart:=false
MANUAL_NODE = f"/{MANUAL_NAMESPACE}/alpamayo"
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


def _managed(**arguments: str) -> launch.LaunchDescription:
    arguments = {"params_file": str(PARAMS_FILE), "namespace": MANAGED_NAMESPACE, "managed": "true", **arguments}
    include = IncludeLaunchDescription(PythonLaunchDescriptionSource(str(LAUNCH_FILE)),
                                       launch_arguments=arguments.items())
    return launch.LaunchDescription([include, launch_pytest.actions.ReadyToTest()])


@launch_pytest.fixture
def managed_launch():
    return _managed()


@launch_pytest.fixture
def managed_launch_without_autostart():
    return _managed(namespace=MANUAL_NAMESPACE, autostart="false")


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


class Listener:
    """An rclpy node of the test's own on the launch's event loop: /diagnostics, /clock, service calls."""

    def __init__(self) -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.executors import SingleThreadedExecutor
        from rosgraph_msgs.msg import Clock

        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("launch_test_listener", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.statuses = []
        self.node.create_subscription(DiagnosticArray, "/diagnostics", lambda m: self.statuses.extend(m.status), 10)
        self.clock = self.node.create_publisher(Clock, "/clock", 10)
        self.clock_ns = [1_000_000_000]

    async def until(self, done, timeout_s: float = DIAGNOSTICS_TIMEOUT_S) -> bool:
        return await _spin_until(self.executor, done, timeout_s, self.clock, self.clock_ns)

    async def spin_for(self, seconds: float) -> None:
        await self.until(lambda: False, seconds)

    def reports_of(self, node: str) -> list:
        return [s for s in self.statuses if s.name.startswith(f"{node}: ")]

    async def call(self, srv_type, service: str, request):
        """The response of `service`, waiting for it to appear; AssertionError naming what timed out."""
        client = self.node.create_client(srv_type, service)
        assert await self.until(client.service_is_ready), f"{service} never appeared"
        future = client.call_async(request)
        assert await self.until(future.done), f"{service} timed out"
        return future.result()

    async def lifecycle_state(self, node: str) -> str:
        from lifecycle_msgs.srv import GetState

        return (await self.call(GetState, f"{node}/get_state", GetState.Request())).current_state.label

    def close(self) -> None:
        import rclpy

        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)


@pytest.mark.launch(fixture=drive_launch)
async def test_node_reports_and_keeps_params_file_values(launch_context):
    from rcl_interfaces.srv import GetParameters

    listener = Listener()
    try:
        assert await listener.until(lambda: any(s.name == f"{NODE}: model" for s in listener.reports_of(NODE))), \
            f"no diagnostics from {NODE} within {DIAGNOSTICS_TIMEOUT_S} s"
        assert all(s.hardware_id == NODE for s in listener.reports_of(NODE))

        response = await listener.call(GetParameters, f"{NODE}/get_parameters",
                                       GetParameters.Request(names=["use_sim_time", "device", "camera_topics"]))
        use_sim_time, device, camera_topics = response.values
        assert use_sim_time.bool_value is True  # params_file's; the launch argument was not given
        assert device.string_value == "cpu"
        assert list(camera_topics.string_array_value) == CAMERA_TOPICS  # given: overrides params_file
    finally:
        listener.close()


@pytest.mark.launch(fixture=managed_launch)
async def test_managed_node_autostarts_to_active_and_reports(launch_context):
    listener = Listener()
    try:
        states = [await listener.lifecycle_state(MANAGED_NODE)]
        for _ in range(round(DIAGNOSTICS_TIMEOUT_S / LIFECYCLE_POLL_S)):  # configure loads the model first
            if states[-1] == "active":
                break
            await listener.spin_for(LIFECYCLE_POLL_S)
            states.append(await listener.lifecycle_state(MANAGED_NODE))
        assert states[-1] == "active", f"{MANAGED_NODE} states seen: {states}"
        assert await listener.until(lambda: any(s.name == f"{MANAGED_NODE}: model"
                                                for s in listener.reports_of(MANAGED_NODE))), \
            f"no diagnostics from {MANAGED_NODE} within {DIAGNOSTICS_TIMEOUT_S} s"
        assert all(s.hardware_id == MANAGED_NODE for s in listener.reports_of(MANAGED_NODE))
    finally:
        listener.close()


@pytest.mark.launch(fixture=managed_launch_without_autostart)
async def test_managed_node_without_autostart_waits_unconfigured_for_a_manager(launch_context):
    listener = Listener()
    try:
        assert await listener.lifecycle_state(MANUAL_NODE) == "unconfigured"
    finally:
        listener.close()


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


@requires_ros2cli
def test_lifecycle_node_that_cannot_configure_ends_the_launch(tmp_path):
    """managed:=true: the node starts, its configure fails on the missing checkpoint, autostart ends the launch."""
    result = _ros2_launch(f"params_file:={PARAMS_FILE}", f"model_path:={tmp_path / 'no_checkpoint'}",
                          "use_sim_time:=false", f"namespace:={MANAGED_NAMESPACE}_bad", "managed:=true")
    output = result.stdout + result.stderr
    assert "cannot configure" in output
    assert f"/{MANAGED_NAMESPACE}_bad/alpamayo failed to configure" in output and "ending the launch" in output


@requires_ros2cli
def test_bad_managed_value_stops_the_launch_naming_it():
    result = _ros2_launch(f"params_file:={PARAMS_FILE}", "managed:=yes")
    assert result.returncode != 0
    assert "managed:=yes: expected true or false" in result.stdout + result.stderr

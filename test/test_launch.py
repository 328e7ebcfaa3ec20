"""drive.launch.py on a real ROS 2 install (colcon-built, install/setup.bash sourced).

launch_pytest: the node starts with the tiny model, its own diagnostics arrive, params_file's values hold
where no launch argument is given and given arguments override them; managed:=true brings the lifecycle node
to active (autostart) or leaves it unconfigured (autostart:=false). `ros2 launch`: bad arguments, a node that
cannot start and a lifecycle node that cannot configure end the launch with a message and a non-zero exit code.

Each test skips with its reason where launch_pytest, ros2cli or the installed package are absent (as in this
project's CI, which has PyPI wheels only), or where the installed launch_pytest cannot run under this pytest.
Nothing skips at import: launch_testing's pytest plugin imports every test module while collecting, and a
module-level skip there skips the whole test directory.
"""

import functools
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
ANSWER_TIMEOUT_S = 5.0  # before a service call is asked again (Listener.call)
NAMESPACE = f"launch_test_{os.getpid()}"  # only this test's node reports under it
NODE = f"/{NAMESPACE}/alpamayo"
MANAGED_NAMESPACE = f"{NAMESPACE}_managed"
MANAGED_NODE = f"/{MANAGED_NAMESPACE}/alpamayo"
MANUAL_NAMESPACE = f"{NAMESPACE}_manual"  # managed, autostart:=false
MANUAL_NODE = f"/{MANUAL_NAMESPACE}/alpamayo"
CAMERA_TOPICS = ["/lt/cross_left", "/lt/front_wide", "/lt/cross_right", "/lt/front_tele"]
# pytest 8.4 made fixtures objects without `_pytestfixturefunction`, which launch_pytest read until
# ros2/launch#949 (README: which launch releases carry it).
FIXED_IN = "ros2/launch#949"


def _installed_share() -> tuple[Path | None, str]:
    """alpamayo_ros's installed share directory, or why there is none."""
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory
    except ImportError:
        return None, "ament_index_python is not installed (needs a ROS 2 install)"
    try:
        share = Path(get_package_share_directory("alpamayo_ros"))
        get_package_share_directory("alpamayo_msgs")
    except (PackageNotFoundError, OSError) as missing:  # OSError: AMENT_PREFIX_PATH is not set
        return None, f"{missing}: build with colcon (README) and source install/setup.bash"
    return share, ""


def _launch_pytest_problem() -> str:
    """Why launch_pytest cannot run these tests here, or ""."""
    try:
        import launch_pytest
        import launch_pytest.plugin
    except ImportError as missing:
        return f"launch_pytest is not installed (needs a ROS 2 install): {missing}"
    if hasattr(launch_pytest.plugin, "get_launch_test_fixture_scope"):
        return ""  # reads the scope from both fixture representations

    @launch_pytest.fixture
    def probe():
        return None

    if hasattr(probe, "_pytestfixturefunction"):
        return ""  # pytest before 8.4: what this launch_pytest reads is there
    return (f"the installed launch_pytest predates {FIXED_IN} and cannot collect launch tests under pytest "
            f"{pytest.__version__} ('FixtureFunctionDefinition' object has no attribute '_pytestfixturefunction'); "
            f"update launch (README)")


SHARE, NOT_INSTALLED = _installed_share()
LAUNCH_PROBLEM = _launch_pytest_problem() or NOT_INSTALLED
if LAUNCH_PROBLEM:
    launch_fixture = pytest.fixture

    def launch_test(fixture):
        return pytest.mark.skip(reason=LAUNCH_PROBLEM)
else:
    import launch_pytest

    launch_fixture = launch_pytest.fixture

    def launch_test(fixture):
        return pytest.mark.launch(fixture=fixture)


def _launch_file() -> Path:
    return SHARE / "launch" / "drive.launch.py"


@functools.cache
def _params_file() -> Path:
    """The shipped YAML on the CPU and on sim time (which no launch argument below overrides)."""
    document = yaml.safe_load((REPO / "config" / "alpamayo.yaml").read_text())
    document["/**"]["ros__parameters"].update(device="cpu", use_sim_time=True,
                                                      model_path="tiny-random")
    path = Path(tempfile.mkdtemp(prefix="alpamayo_launch_test_")) / "params.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def _include(**arguments: str):
    import launch
    from launch.actions import IncludeLaunchDescription
    from launch.launch_description_sources import PythonLaunchDescriptionSource

    include = IncludeLaunchDescription(PythonLaunchDescriptionSource(str(_launch_file())),
                                       launch_arguments={"params_file": str(_params_file()), **arguments}.items())
    return launch.LaunchDescription([include, launch_pytest.actions.ReadyToTest()])


@launch_fixture
def drive_launch():
    return _include(namespace=NAMESPACE, camera_topics=",".join(CAMERA_TOPICS))


@launch_fixture
def managed_launch():
    return _include(namespace=MANAGED_NAMESPACE, managed="true")


@launch_fixture
def managed_launch_without_autostart():
    return _include(namespace=MANUAL_NAMESPACE, managed="true", autostart="false")


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
        """The response of `service` (a call without side effects), waiting for it to appear; AssertionError naming
        what timed out. Asked again while unanswered: a service can be ready to this client before the node has
        matched the client's response reader, and Fast DDS then drops the response."""
        client = self.node.create_client(srv_type, service)
        assert await self.until(client.service_is_ready), f"{service} never appeared"
        for _ in range(round(DIAGNOSTICS_TIMEOUT_S / ANSWER_TIMEOUT_S)):
            future = client.call_async(request)
            if await self.until(future.done, ANSWER_TIMEOUT_S):
                return future.result()
        raise AssertionError(f"{service} timed out")

    async def lifecycle_state(self, node: str) -> str:
        from lifecycle_msgs.srv import GetState

        return (await self.call(GetState, f"{node}/get_state", GetState.Request())).current_state.label

    def close(self) -> None:
        import rclpy

        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)


@launch_test(drive_launch)
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


@launch_test(managed_launch)
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


@launch_test(managed_launch_without_autostart)
async def test_managed_node_without_autostart_waits_unconfigured_for_a_manager(launch_context):
    listener = Listener()
    try:
        assert await listener.lifecycle_state(MANUAL_NODE) == "unconfigured"
    finally:
        listener.close()


ros2 = shutil.which("ros2")
requires_ros2cli = [pytest.mark.skipif(ros2 is None, reason="ros2cli (`ros2`) is not installed"),
                    pytest.mark.skipif(bool(NOT_INSTALLED), reason=NOT_INSTALLED)]


def requires_ros2_launch(test):
    for mark in requires_ros2cli:
        test = mark(test)
    return test


def _ros2_launch(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run([ros2, "launch", "alpamayo_ros", "drive.launch.py", *arguments], capture_output=True,
                          text=True, timeout=LAUNCH_EXIT_TIMEOUT_S, stdin=subprocess.DEVNULL)


def _stopped_naming(result: subprocess.CompletedProcess, *words: str) -> None:
    """`ros2 launch` exited non-zero and its output says all of `words`."""
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-4000:]
    assert all(word in output for word in words), output[-4000:]


@requires_ros2_launch
def test_missing_params_file_stops_the_launch_naming_it(tmp_path):
    _stopped_naming(_ros2_launch(f"params_file:={tmp_path / 'missing.yaml'}"), "params_file:=",
                    "no readable file there")


@requires_ros2_launch
@pytest.mark.parametrize(("argument", "message"), [
    ("log_level:=verbose", "log_level:=verbose: expected one of debug, info, warn, error, fatal"),
    ("device:=nonsense", "device:=nonsense: expected cpu, cuda or cuda:N"),
    ("managed:=yes", "managed:=yes: expected true or false"),
])
def test_bad_argument_stops_the_launch_naming_it(argument, message):
    result = _ros2_launch(f"params_file:={_params_file()}", argument)
    _stopped_naming(result, message)
    assert "alpamayo_node" not in result.stdout + result.stderr  # checked before any process started


@requires_ros2_launch
def test_node_that_cannot_start_ends_the_launch(tmp_path):
    """A checkpoint directory that does not exist: the node stops at start-up, and the launch exits non-zero."""
    result = _ros2_launch(f"params_file:={_params_file()}", f"model_path:={tmp_path / 'no_checkpoint'}",
                          "use_sim_time:=false", f"namespace:={NAMESPACE}_bad")
    _stopped_naming(result, "cannot start", "alpamayo_node exited with code 1", "ending the launch")


@requires_ros2_launch
def test_lifecycle_node_that_cannot_configure_ends_the_launch(tmp_path):
    """managed:=true: the node starts, its configure fails on the missing checkpoint, autostart ends the launch."""
    result = _ros2_launch(f"params_file:={_params_file()}", f"model_path:={tmp_path / 'no_checkpoint'}",
                          "use_sim_time:=false", f"namespace:={MANAGED_NAMESPACE}_bad", "managed:=true")
    _stopped_naming(result, "cannot configure", f"/{MANAGED_NAMESPACE}_bad/alpamayo failed to configure",
                    "ending the launch")

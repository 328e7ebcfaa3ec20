"""The lifecycle node as its own process, driven through ~/change_state and ~/get_state as a manager drives it.

What a lifecycle manager (Nav2's, or drive.launch.py's autostart) relies on, checked without launch or ros2cli:
the services appear, a transition the current state does not have is refused (Jazzy's rclpy let it end the node),
configure and activate succeed, the state reads back, deactivate succeeds and SIGINT still ends the process
cleanly.
"""

import os
import signal
import subprocess
import sys
import time

import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy is not installed")
pytest.importorskip("lifecycle_msgs.srv", reason="lifecycle_msgs is not installed (ros-lifecycle-msgs)")
pytest.importorskip("alpamayo_msgs.msg", reason="alpamayo_msgs is not built (make test builds it)")

from lifecycle_msgs.msg import Transition  # noqa: E402
from lifecycle_msgs.srv import ChangeState, GetState  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402

from alpamayo_ros.tools.processes import stop  # noqa: E402
from conftest import REPO  # noqa: E402

SERVICE_TIMEOUT_S = 120.0  # imports (torch) before the node's services exist, on a loaded machine
TRANSITION_TIMEOUT_S = 120.0  # configure builds the tiny model
# A service can be ready to this client before the node has matched the client's response reader; Fast DDS then
# drops the response ("failed to send response (timeout)"). Calls with no side effect are retried until one answers,
# which proves the path back; after it, every response arrives.
ANSWER_TIMEOUT_S = 5.0
POLL_S = 0.2
SECOND_SIGINT_AFTER_S = 0.15  # the first has ended the spin loop (polled every 0.1 s): the second lands in teardown
NAMESPACE = f"lifecycle_test_{os.getpid()}"
NODE = f"/{NAMESPACE}/alpamayo"


def _start_node() -> subprocess.Popen:
    env = dict(os.environ)  # conftest set loopback DDS and this run's ROS_DOMAIN_ID
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    return subprocess.Popen([sys.executable, "-m", "alpamayo_ros.lifecycle_node", "--ros-args", "-p", "device:=cpu",
                             "-p", "dtype:=float32", "-p", "model_path:=tiny-random", "-r", f"__ns:=/{NAMESPACE}"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


class Manager:
    """rclpy clients of the node's lifecycle services, on their own context and executor."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("lifecycle_test_manager", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.change_state = self.node.create_client(ChangeState, f"{NODE}/change_state")
        self.get_state = self.node.create_client(GetState, f"{NODE}/get_state")

    def wait_for_services(self) -> bool:
        deadline = time.monotonic() + SERVICE_TIMEOUT_S
        while time.monotonic() < deadline and self.proc.poll() is None:
            if self.change_state.wait_for_service(timeout_sec=POLL_S) and self.get_state.service_is_ready():
                return True
        return False

    def _call(self, client, request, timeout_s: float = TRANSITION_TIMEOUT_S):
        """The response, or None when the node did not answer in time (or exited)."""
        future = client.call_async(request)
        deadline = time.monotonic() + timeout_s
        while not future.done() and time.monotonic() < deadline and self.proc.poll() is None:
            self.executor.spin_once(timeout_sec=POLL_S)
        return future.result() if future.done() else None

    def _first_answer(self, client, request):
        """The response to a call without side effects, asked again until the node answers one (or SERVICE_TIMEOUT_S)."""
        deadline = time.monotonic() + SERVICE_TIMEOUT_S
        while time.monotonic() < deadline and self.proc.poll() is None:
            response = self._call(client, request, ANSWER_TIMEOUT_S)
            if response is not None:
                return response
        return None

    def transition(self, transition_id: int, first: bool = False) -> str:
        request = ChangeState.Request(transition=Transition(id=transition_id))
        response = (self._first_answer if first else self._call)(self.change_state, request)
        return "no answer" if response is None else ("success" if response.success else "failure")

    def state(self, first: bool = False) -> str:
        response = (self._first_answer if first else self._call)(self.get_state, GetState.Request())
        return "no answer" if response is None else response.current_state.label

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)


STEPS = (("configure", Transition.TRANSITION_CONFIGURE, "inactive"),
         ("activate", Transition.TRANSITION_ACTIVATE, "active"),
         ("deactivate", Transition.TRANSITION_DEACTIVATE, "inactive"))


def _drive(manager: Manager) -> list[str]:
    """What the manager saw, a line per call; stops once the node no longer answers."""
    if not manager.wait_for_services():
        return [f"{NODE}/change_state and get_state never appeared"]
    seen = [f"state: {manager.state(first=True)}"]
    # A transition the unconfigured node refuses changes nothing, so it may be asked again until change_state answers.
    seen += [f"deactivate: {manager.transition(Transition.TRANSITION_DEACTIVATE, first=True)}",
             f"state: {manager.state()}"]
    for name, transition_id, _ in STEPS:
        if seen[-1] == "state: no answer":
            break
        seen += [f"{name}: {manager.transition(transition_id)}", f"state: {manager.state()}"]
    return seen


def test_configure_activate_deactivate_through_the_services_then_sigint_exits_0():
    proc = _start_node()
    manager = Manager(proc)
    try:
        seen = _drive(manager)
    finally:
        manager.close()
        if proc.poll() is None:  # a terminal's Ctrl-C and the SIGINT launch forwards arrive as two signals
            proc.send_signal(signal.SIGINT)
            time.sleep(SECOND_SIGINT_AFTER_S)
        output = stop(proc)
    steps = [line for name, _, state in STEPS for line in (f"{name}: success", f"state: {state}")]
    expected = ["state: unconfigured", "deactivate: failure", "state: unconfigured", *steps]
    assert seen == expected, f"{seen}\n--- node output ---\n{output}"
    assert proc.returncode == 0, f"exit code {proc.returncode} after SIGINT\n--- node output ---\n{output}"
    assert "Traceback" not in output, output

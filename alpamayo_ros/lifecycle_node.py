"""The driving node as a managed (lifecycle) node, for vehicle stacks that bring nodes up in order.

    unconfigured --configure--> inactive --activate--> active --deactivate--> inactive --cleanup--> unconfigured

configure reads the parameters and loads the model (a bad parameter or checkpoint fails the transition
with the reason logged); activate subscribes to the cameras and odometry and starts ticking; deactivate
stops both (outputs are lifecycle publishers: nothing is published while inactive); cleanup stops the
runner and frees the model. `/diagnostics` keeps reporting while inactive.

    ros2 run alpamayo_ros alpamayo_lifecycle_node --ros-args --params-file config/alpamayo.yaml
    ros2 lifecycle set /alpamayo configure && ros2 lifecycle set /alpamayo activate
"""

from __future__ import annotations

import traceback

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.clock import Clock, ClockType
from rclpy.exceptions import ParameterException
from rclpy.lifecycle import LifecycleNode, State, TransitionCallbackReturn
from std_msgs.msg import Header

from alpamayo_ros import conversions
from alpamayo_ros import node as driving


class AlpamayoLifecycleNode(driving.DrivingNode, LifecycleNode):
    """Lifecycle transitions over the same behaviour as `AlpamayoNode`; `model` may be injected (tests)."""

    def __init__(self, model=None, **kwargs) -> None:
        LifecycleNode.__init__(self, "alpamayo", **kwargs)
        self._injected_model = model
        self.cfg = None
        try:  # declared at once so `ros2 param` shows them; a bad value fails `configure`, naming it
            self.cfg = driving.declare_config(self)
        except (ValueError, ParameterException) as exc:
            self._config_error = str(exc)
        else:
            self._config_error = ""
        # Until configured (or after a failed configure, or cleanup) the node still says where it stands.
        self._state_pub = self.create_publisher(DiagnosticArray, "/diagnostics", driving.OUTPUT_QOS)
        self.create_timer(1.0, self._report_unconfigured, clock=Clock(clock_type=ClockType.STEADY_TIME))

    def on_configure(self, state: State) -> TransitionCallbackReturn:
        if self.cfg is None:
            self.get_logger().fatal(f"cannot configure: {self._config_error}")
            return TransitionCallbackReturn.FAILURE
        try:
            self._configure(self._injected_model, create_output_publisher=self.create_lifecycle_publisher,
                            destroy_output_publisher=self.destroy_lifecycle_publisher)
        except (ValueError, FileNotFoundError, OSError) as exc:  # checkpoint: missing, mismatched, unreadable
            self._config_error = str(exc)
            self.get_logger().fatal(f"cannot configure: {exc}")
            self._teardown()
            return TransitionCallbackReturn.FAILURE
        except Exception as exc:  # rclpy would swallow it without a word: say what and where
            self._config_error = f"{type(exc).__name__}: {exc}"
            self.get_logger().fatal(f"cannot configure: {self._config_error}\n{traceback.format_exc()}")
            self._teardown()
            return TransitionCallbackReturn.FAILURE
        self._config_error = ""
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: State) -> TransitionCallbackReturn:
        try:
            self._start_inputs()
        except Exception as exc:
            self.get_logger().fatal(f"cannot activate: {type(exc).__name__}: {exc}\n{traceback.format_exc()}")
            self._stop_inputs()
            return TransitionCallbackReturn.FAILURE
        return super().on_activate(state)

    def _report_unconfigured(self) -> None:
        if self.runner is not None:
            return  # configured: the driving node's own diagnostics report
        name = self.get_fully_qualified_name()
        status = conversions.diagnostic_status(
            f"{name}: model", DiagnosticStatus.ERROR if self._config_error else DiagnosticStatus.WARN,
            f"cannot configure: {self._config_error}" if self._config_error else "unconfigured (lifecycle)", {}, name)
        self._state_pub.publish(DiagnosticArray(header=Header(stamp=self.get_clock().now().to_msg()), status=[status]))

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


def main(args: list[str] | None = None) -> int:
    """Entry point for `ros2 run alpamayo_ros alpamayo_lifecycle_node` and `python -m alpamayo_ros.lifecycle_node`."""
    return driving.main(args, node_class=AlpamayoLifecycleNode)


if __name__ == "__main__":
    raise SystemExit(main())

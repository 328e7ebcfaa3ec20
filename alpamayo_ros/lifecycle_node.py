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

from rclpy.exceptions import ParameterException
from rclpy.lifecycle import LifecycleNode, State, TransitionCallbackReturn

from alpamayo_ros import node as driving


class AlpamayoLifecycleNode(driving.DrivingNode, LifecycleNode):
    """Lifecycle transitions over the same behaviour as `AlpamayoNode`; `model` may be injected (tests)."""

    def __init__(self, model=None, **kwargs) -> None:
        LifecycleNode.__init__(self, "alpamayo", **kwargs)
        self._injected_model = model
        self.cfg = None
        self.runner = None
        try:  # declared at once so `ros2 param` shows them; a bad value fails `configure`, naming it
            self.cfg = driving.declare_config(self)
        except (ValueError, ParameterException) as exc:
            self._config_error = str(exc)
        else:
            self._config_error = ""

    def on_configure(self, state: State) -> TransitionCallbackReturn:
        if self.cfg is None:
            self.get_logger().fatal(f"cannot configure: {self._config_error}")
            return TransitionCallbackReturn.FAILURE
        try:
            self._configure(self._injected_model, create_output_publisher=self.create_lifecycle_publisher)
        except (ValueError, FileNotFoundError, OSError) as exc:  # checkpoint: missing, mismatched, unreadable
            self.get_logger().fatal(f"cannot configure: {exc}")
            return TransitionCallbackReturn.FAILURE
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: State) -> TransitionCallbackReturn:
        self._start_inputs()
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


def main(args: list[str] | None = None) -> int:
    """Entry point for `ros2 run alpamayo_ros alpamayo_lifecycle_node` and `python -m alpamayo_ros.lifecycle_node`."""
    return driving.main(args, node_class=AlpamayoLifecycleNode)


if __name__ == "__main__":
    raise SystemExit(main())

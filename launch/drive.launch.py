"""Launch the AlpamayoR1 driving node, and with rviz:=true RViz on its outputs.

    ros2 launch alpamayo_ros drive.launch.py model_path:=/models/Alpamayo-R1-10B \
        base_model_dir:=/models/Qwen3-VL-8B-Instruct

Parameters come from `params_file`; the launch arguments below override it only when given (empty = keep
params_file's value). The DDS settings are set on this file's processes only, never on a launch file that
includes it. When the node ends the launch ends with it; when it cannot start (or, managed, cannot be configured
and activated) `ros2 launch` exits 1 with the reason. managed:=true starts the lifecycle node instead;
autostart (default) configures and then activates it; with autostart:=false a lifecycle manager brings it up.
The checks, messages and the RViz config live in alpamayo_ros/launch_args.py, unit-tested without ROS.
"""

import os
import tempfile
from pathlib import Path

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, EmitEvent, LogInfo, OpaqueFunction, RegisterEventHandler, Shutdown
from launch.event_handlers import OnProcessExit
from launch.events import matches_action
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode, Node
from launch_ros.event_handlers import OnStateTransition
from launch_ros.events.lifecycle import ChangeState
from lifecycle_msgs.msg import Transition

from alpamayo_ros import launch_args

SHARE = get_package_share_directory("alpamayo_ros")
ARGUMENTS = {  # name: (default, description)
    "params_file": (os.path.join(SHARE, "config", "alpamayo.yaml"), "Node parameters (YAML)"),
    "model_path": ("", "Local AlpamayoR1 checkpoint directory (empty: params_file's; empty there too runs the "
                       "embedded driver)"),
    "base_model_dir": ("", "Local base Qwen3-VL directory (config.json, processor files); empty: params_file's"),
    "device": ("", "torch device, e.g. cuda or cpu; empty: params_file's"),
    "camera_topics": ("", "Four camera base topics, comma-separated, in the model's order: cross-left, front-wide, "
                          "cross-right, front-tele (compressed transport adds /compressed); empty: params_file's"),
    "image_transport": ("", "raw (sensor_msgs/Image) or compressed (sensor_msgs/CompressedImage on "
                            "<base>/compressed); empty: params_file's"),
    "odometry_topic": ("", "nav_msgs/Odometry input topic; empty: params_file's"),
    "use_sim_time": ("", "true: follow /clock (bag replay); false: wall clock; empty: params_file's"),
    "namespace": ("", "Namespace of the node (its topics become <namespace>/alpamayo/...)"),
    "log_level": ("info", "Logging level: debug, info, warn, error or fatal"),
    "discovery_range": ("LOCALHOST", "ROS_AUTOMATIC_DISCOVERY_RANGE for these processes (on Humble LOCALHOST sets "
                                     "ROS_LOCALHOST_ONLY=1). For a multi-computer vehicle: SUBNET and "
                                     "fastdds_profile:=''"),
    "fastdds_profile": (os.path.join(SHARE, "config", "fastdds_profile.xml"),
                        "Fast DDS profile for these processes (128 MB shared memory for camera images, UDP on "
                        "127.0.0.1 only), set as FASTDDS_/FASTRTPS_DEFAULT_PROFILES_FILE as the distro reads it; "
                        "empty: leave the environment's"),
    "node_stop_timeout": ("30", "Seconds between Ctrl-C (SIGINT) and SIGTERM for the node: stopping the model and "
                                "freeing torch can take longer than launch's default 5 s"),
    "managed": ("false", "true: start the lifecycle (managed) node alpamayo_lifecycle_node, which loads the model on "
                         "configure and subscribes and ticks only while active; false: the plain alpamayo_node"),
    "autostart": ("true", "With managed:=true: true configures and then activates the node from this launch (the "
                          "launch ends if either fails); false leaves it unconfigured for a lifecycle manager. The "
                          "launch drives the node over its ~/change_state service, so this launch's own ROS_DOMAIN_ID "
                          "and discovery settings must reach the node"),
    "rviz": ("false", "true: also start RViz (rviz2) on the node's outputs"),
    "fixed_frame": ("odom", "RViz fixed frame: the odometry frame, or map when TF has map -> odom"),
    "vehicle_frame": ("base_link", "RViz view and grid follow this TF frame (empty: stay at the fixed frame)"),
}


def _stop_timeout(value: str) -> str:
    try:
        if float(value) > 0:
            return value
    except ValueError:
        pass
    raise launch_args.LaunchArgumentError(f"node_stop_timeout:={value}: expected seconds > 0")


def _end_launch_with_node(executable: str):
    def on_exit(event, context):
        if context.is_shutdown:  # Ctrl-C or another process ended the launch first
            return None
        reason = launch_args.exit_reason(executable, event.returncode)
        if event.returncode != 0:  # `ros2 launch` exits 1 with this line (a Shutdown would exit 0)
            raise launch_args.NodeFailed(reason)
        return [LogInfo(msg=reason), Shutdown(reason=reason)]
    return on_exit


def _fail(reason: str) -> OpaqueFunction:
    def fail(context):
        raise launch_args.NodeFailed(reason)
    return OpaqueFunction(function=fail)


def _change_state(node: LifecycleNode, transition_id: int) -> EmitEvent:
    return EmitEvent(event=ChangeState(lifecycle_node_matcher=matches_action(node), transition_id=transition_id))


def _autostart(node: LifecycleNode, node_name: str) -> list:
    """Configure now; activate once configure succeeded; end the launch where the node cannot go on."""
    start_state, goal_state = launch_args.ACTIVATE_AFTER
    actions = [RegisterEventHandler(OnStateTransition(
        target_lifecycle_node=node, start_state=start_state, goal_state=goal_state,
        entities=[_change_state(node, Transition.TRANSITION_ACTIVATE)]))]
    for start_state, goal_state in launch_args.AUTOSTART_FAILURES:
        reason = launch_args.autostart_failure_reason(node_name, start_state, goal_state)
        actions.append(RegisterEventHandler(OnStateTransition(
            target_lifecycle_node=node, start_state=start_state, goal_state=goal_state,
            entities=[_fail(reason)])))
    return [*actions, _change_state(node, Transition.TRANSITION_CONFIGURE)]


def _processes(context, *args, **kwargs):
    value = {name: LaunchConfiguration(name).perform(context) for name in ARGUMENTS}
    params_file = launch_args.existing_file("params_file", value["params_file"])
    overrides = launch_args.parameter_overrides(value)
    env = launch_args.node_environment(getattr(context, "environment", os.environ), value["discovery_range"],
                                       value["fastdds_profile"])
    managed = launch_args.parse_boolean("managed", value["managed"])
    autostart = launch_args.parse_boolean("autostart", value["autostart"])
    rviz = launch_args.parse_boolean("rviz", value["rviz"])
    log_level = launch_args.parse_log_level(value["log_level"])
    executable = launch_args.node_executable(managed)
    node_class = LifecycleNode if managed else Node  # LifecycleNode requires name and namespace: both given
    node = node_class(package="alpamayo_ros", executable=executable, name=launch_args.NODE_NAME,
                      namespace=value["namespace"], output="screen", emulate_tty=True,
                      parameters=[str(params_file), overrides], env=env,
                      arguments=["--ros-args", "--log-level", log_level],
                      sigterm_timeout=_stop_timeout(value["node_stop_timeout"]))
    actions = [node, RegisterEventHandler(OnProcessExit(target_action=node, on_exit=_end_launch_with_node(executable)))]
    if managed and autostart:
        actions += _autostart(node, launch_args.resolve_topic(value["namespace"], launch_args.NODE_NAME))
    if rviz:
        template = Path(SHARE, "config", "alpamayo.rviz").read_text()
        config = launch_args.rviz_config(template, fixed_frame=value["fixed_frame"],
                                         vehicle_frame=value["vehicle_frame"], namespace=value["namespace"],
                                         odometry=launch_args.odometry_topic(value, params_file))
        with tempfile.NamedTemporaryFile("w", prefix="alpamayo_", suffix=".rviz", delete=False) as rviz_file:
            rviz_file.write(config)
        actions.append(Node(package="rviz2", executable="rviz2", name="alpamayo_rviz", output="log", env=env,
                            arguments=["-d", rviz_file.name]))
    return actions


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription([
        *(DeclareLaunchArgument(name, default_value=default, description=description)
          for name, (default, description) in ARGUMENTS.items()),
        OpaqueFunction(function=_processes),
    ])

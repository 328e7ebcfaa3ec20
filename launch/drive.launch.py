"""Launch the AlpamayoR1 driving node, and with rviz:=true RViz on its outputs.

    ros2 launch alpamayo_ros drive.launch.py model_path:=/models/Alpamayo-R1-10B \
        base_model_dir:=/models/Qwen3-VL-8B-Instruct

Parameters come from `params_file`; the launch arguments below override it only when given (empty = keep
params_file's value). The DDS settings are set on this file's processes only, never on a launch file that
includes it. When the node ends (or cannot start) the launch ends with it. The checks and the RViz config
live in alpamayo_ros/launch_args.py, unit-tested without ROS.
"""

import os
import tempfile
from pathlib import Path

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, LogInfo, OpaqueFunction, RegisterEventHandler, Shutdown
from launch.event_handlers import OnProcessExit
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from alpamayo_ros import launch_args

SHARE = get_package_share_directory("alpamayo_ros")
ARGUMENTS = {  # name: (default, description)
    "params_file": (os.path.join(SHARE, "config", "alpamayo.yaml"), "Node parameters (YAML)"),
    "model_path": ("", "Local AlpamayoR1 checkpoint directory (empty: params_file's; empty there too runs the "
                       "tiny random demo model)"),
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


def _end_launch_with_node(event, context):
    if context.is_shutdown:  # Ctrl-C or another process ended the launch first
        return None
    if event.returncode == 0:
        reason = "alpamayo_node exited; ending the launch"
    else:
        reason = (f"alpamayo_node exited with code {event.returncode}: it could not start or stopped on an error "
                  "(its log above says why); ending the launch")
    return [LogInfo(msg=reason), Shutdown(reason=reason)]


def _processes(context, *args, **kwargs):
    value = {name: LaunchConfiguration(name).perform(context) for name in ARGUMENTS}
    params_file = launch_args.existing_file("params_file", value["params_file"])
    overrides = launch_args.parameter_overrides(value)
    env = launch_args.node_environment(getattr(context, "environment", os.environ), value["discovery_range"],
                                       value["fastdds_profile"])
    node = Node(package="alpamayo_ros", executable="alpamayo_node", name=launch_args.NODE_NAME,
                namespace=value["namespace"], output="screen", emulate_tty=True,
                parameters=[str(params_file), overrides], env=env,
                arguments=["--ros-args", "--log-level", value["log_level"]],
                sigterm_timeout=_stop_timeout(value["node_stop_timeout"]))
    actions = [node, RegisterEventHandler(OnProcessExit(target_action=node, on_exit=_end_launch_with_node))]
    if value["rviz"].lower() == "true":
        template = Path(SHARE, "config", "alpamayo.rviz").read_text()
        config = launch_args.rviz_config(template, fixed_frame=value["fixed_frame"],
                                         vehicle_frame=value["vehicle_frame"], namespace=value["namespace"],
                                         odometry=launch_args.odometry_topic(value, params_file))
        with tempfile.NamedTemporaryFile("w", prefix="alpamayo_", suffix=".rviz", delete=False) as rviz_file:
            rviz_file.write(config)
        actions.append(Node(package="rviz2", executable="rviz2", name="alpamayo_rviz", output="log", env=env,
                            arguments=["-d", rviz_file.name]))
    elif value["rviz"].lower() != "false":
        raise launch_args.LaunchArgumentError(f"rviz:={value['rviz']}: expected true or false")
    return actions


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription([
        *(DeclareLaunchArgument(name, default_value=default, description=description)
          for name, (default, description) in ARGUMENTS.items()),
        OpaqueFunction(function=_processes),
    ])

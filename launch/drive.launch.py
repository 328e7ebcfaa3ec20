"""Launch the AlpamayoR1 driving node.

    ros2 launch alpamayo_ros drive.launch.py model_path:=/models/Alpamayo-R1-10B \
        base_model_dir:=/models/Qwen3-VL-8B-Instruct

Parameters come from `params_file`; the launch arguments below override it only when given.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue

OVERRIDES = ("model_path", "base_model_dir", "device", "odometry_topic")  # strings; empty = keep params_file


def _node(context, *args, **kwargs):
    value = {name: LaunchConfiguration(name).perform(context) for name in
             (*OVERRIDES, "params_file", "use_sim_time", "namespace", "log_level", "discovery_range", "fastdds_profile")}
    overrides = {name: ParameterValue(value[name], value_type=str) for name in OVERRIDES if value[name]}
    overrides["use_sim_time"] = value["use_sim_time"].lower() == "true"
    actions = [SetEnvironmentVariable("ROS_AUTOMATIC_DISCOVERY_RANGE", value["discovery_range"]),
               SetEnvironmentVariable("RCUTILS_LOGGING_BUFFERED_STREAM", "1")]
    if value["discovery_range"] == "LOCALHOST":
        actions.append(SetEnvironmentVariable("ROS_LOCALHOST_ONLY", "1"))  # Humble has no discovery range
    if value["fastdds_profile"]:
        actions.append(SetEnvironmentVariable("FASTDDS_DEFAULT_PROFILES_FILE", value["fastdds_profile"]))
    actions.append(Node(package="alpamayo_ros", executable="alpamayo_node", name="alpamayo",
                        namespace=value["namespace"], output="screen", emulate_tty=True,
                        parameters=[value["params_file"], overrides],
                        arguments=["--ros-args", "--log-level", value["log_level"]]))
    return actions


def generate_launch_description() -> LaunchDescription:
    share = get_package_share_directory("alpamayo_ros")
    return LaunchDescription([
        DeclareLaunchArgument("params_file", default_value=os.path.join(share, "config", "alpamayo.yaml"),
                              description="Node parameters (YAML)"),
        DeclareLaunchArgument("model_path", default_value="",
                              description="Local AlpamayoR1 checkpoint directory (empty: keep params_file's; "
                                          "empty there too runs the tiny random demo model)"),
        DeclareLaunchArgument("base_model_dir", default_value="",
                              description="Local base Qwen3-VL directory (config.json, processor files)"),
        DeclareLaunchArgument("device", default_value="", description="torch device, e.g. cuda or cpu"),
        DeclareLaunchArgument("odometry_topic", default_value="", description="nav_msgs/Odometry input topic"),
        DeclareLaunchArgument("namespace", default_value="", description="Namespace of the node"),
        DeclareLaunchArgument("use_sim_time", default_value="false", description="Use /clock (bag replay)"),
        DeclareLaunchArgument("log_level", default_value="info", description="Logging level"),
        DeclareLaunchArgument("discovery_range", default_value="LOCALHOST",
                              description="ROS_AUTOMATIC_DISCOVERY_RANGE; LOCALHOST also sets ROS_LOCALHOST_ONLY=1 "
                                          "for Humble. For a multi-computer vehicle: SUBNET and fastdds_profile:=''"),
        DeclareLaunchArgument("fastdds_profile", default_value=os.path.join(share, "config", "fastdds_profile.xml"),
                              description="Fast DDS profile (128 MB shared memory for camera images, UDP on "
                                          "127.0.0.1 only); empty: Fast DDS defaults"),
        OpaqueFunction(function=_node),
    ])

"""Launch the AlpamayoR1 driving node.

    ros2 launch alpamayo_ros drive.launch.py model_path:=/models/Alpamayo-R1-10B \
        base_model_dir:=/models/Qwen3-VL-8B-Instruct
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, SetEnvironmentVariable
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node


def generate_launch_description() -> LaunchDescription:
    share = get_package_share_directory("alpamayo_ros")
    arg = LaunchConfiguration
    arguments = [
        DeclareLaunchArgument("params_file", default_value=os.path.join(share, "config", "alpamayo.yaml"),
                              description="Node parameters (YAML)"),
        DeclareLaunchArgument("model_path", default_value="",
                              description="Local AlpamayoR1 checkpoint directory; empty runs the tiny random demo model"),
        DeclareLaunchArgument("base_model_dir", default_value="",
                              description="Local base Qwen3-VL directory (config.json, processor files)"),
        DeclareLaunchArgument("device", default_value="cuda", description="torch device"),
        DeclareLaunchArgument("namespace", default_value="", description="Namespace of the node"),
        DeclareLaunchArgument("use_sim_time", default_value="false", description="Use /clock (bag replay)"),
        DeclareLaunchArgument("log_level", default_value="info", description="Logging level"),
        DeclareLaunchArgument("odometry_topic", default_value="/odom", description="Remap of the odometry input"),
        DeclareLaunchArgument("discovery_range", default_value="LOCALHOST",
                              description="ROS_AUTOMATIC_DISCOVERY_RANGE (LOCALHOST keeps DDS off the network; "
                                          "SUBNET for a multi-machine vehicle)"),
        DeclareLaunchArgument("fastdds_profile", default_value=os.path.join(share, "config", "fastdds_profile.xml"),
                              description="Fast DDS profile: 128 MB shared memory for camera images"),
    ]
    node = Node(
        package="alpamayo_ros", executable="alpamayo_node", name="alpamayo", namespace=arg("namespace"),
        output="screen", emulate_tty=True,
        parameters=[arg("params_file"), {"model_path": arg("model_path"), "base_model_dir": arg("base_model_dir"),
                                         "device": arg("device"), "use_sim_time": arg("use_sim_time"),
                                         "odometry_topic": arg("odometry_topic")}],
        arguments=["--ros-args", "--log-level", arg("log_level")],
    )
    return LaunchDescription([
        *arguments,
        SetEnvironmentVariable("ROS_AUTOMATIC_DISCOVERY_RANGE", arg("discovery_range")),
        SetEnvironmentVariable("FASTDDS_DEFAULT_PROFILES_FILE", arg("fastdds_profile")),
        SetEnvironmentVariable("RCUTILS_LOGGING_BUFFERED_STREAM", "1"),
        node,
    ])

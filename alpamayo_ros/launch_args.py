"""drive.launch.py's logic without launch: argument checks, parameter overrides, the node's environment, RViz config,
which executable runs and how autostart brings a managed (lifecycle) node up.

Launch arguments arrive as strings; an empty string means "keep params_file's value". Every check raises
LaunchArgumentError naming the argument, what it got and what it expects, so `ros2 launch` stops with that
line before any process starts. Names, defaults and choices come from the parameter schema (`parameters`). No rclpy,
launch, torch or transformers import: unit-tested where no ROS 2 install exists, and cheap for `ros2 launch`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import yaml

from alpamayo_ros import devices, parameters
from alpamayo_ros.devices import device_problem
from alpamayo_ros.ros_env import DISCOVERY_RANGES, dds_env

STRING_OVERRIDES = ("model_path", "base_model_dir", "device", "odometry_topic")  # launch argument = parameter name
IMAGE_TRANSPORTS = tuple(transport.value for transport in parameters.ImageTransport)
BOOLEANS = {"true": True, "false": False}
LOG_LEVELS = ("debug", "info", "warn", "error", "fatal")  # rcutils' severities (any case), as --log-level takes them
NODE_NAME = parameters.NODE_NAME
PLAIN_EXECUTABLE = "alpamayo_node"  # setup.py console scripts
LIFECYCLE_EXECUTABLE = "alpamayo_lifecycle_node"
DEFAULT_ODOMETRY_TOPIC = parameters.NodeConfig().odometry_topic
# Display name in config/alpamayo.rviz -> node output it shows ("" = the odometry input).
RVIZ_TOPICS = {"AlpamayoR1 trajectory": "trajectory", "Candidates and reasoning": "candidates", "Odometry": ""}


class LaunchArgumentError(ValueError):
    """A launch argument that cannot be used; the message names it, the value and what is expected."""


class NodeFailed(RuntimeError):
    """The node could not start or go on: raised from an event handler so that `ros2 launch` exits non-zero.

    launch's `Shutdown` action is an orderly end (exit code 0); an exception in an event handler makes
    LaunchService log "Caught exception in launch (see debug for traceback): <message>", shut down and return 1.
    """


# Autostart (managed:=true autostart:=true) watches the node's lifecycle transition events, named by the
# (start_state, goal_state) labels lifecycle_msgs/TransitionEvent carries. Only configure's own success leads to
# activate: a failed activate also returns to inactive, and activating again would loop.
ACTIVATE_AFTER = ("configuring", "inactive")
# rclpy's LifecycleNode turns an exception in a transition callback into ERROR without logging it (measured:
# a checkpoint whose config.json is a list, AttributeError in configure, leaves no line at all).
RAISED = ("raised an exception during a transition, which rclpy does not log (managed:=false runs the plain "
          "node, which prints the traceback)")
AUTOSTART_FAILURES = {
    ("configuring", "unconfigured"): "failed to configure (its `cannot configure: ...` line above says why)",
    ("activating", "inactive"): "failed to activate",
    ("errorprocessing", "unconfigured"): RAISED,
    ("errorprocessing", "finalized"): RAISED,
}


def existing_file(argument: str, value: str) -> Path:
    """The file a path-valued launch argument names; raises unless it is a readable file."""
    path = Path(value).expanduser()
    if not path.is_file() or not os.access(path, os.R_OK):
        raise LaunchArgumentError(f"{argument}:={value}: no readable file there")
    return path


def parse_boolean(argument: str, value: str) -> bool:
    """A true/false launch argument (any case); raises naming the argument otherwise."""
    if value.lower() not in BOOLEANS:
        raise LaunchArgumentError(f"{argument}:={value}: expected true or false")
    return BOOLEANS[value.lower()]


def node_executable(managed: bool) -> str:
    """The console script drive.launch.py starts: the lifecycle node when managed, else the plain node."""
    return LIFECYCLE_EXECUTABLE if managed else PLAIN_EXECUTABLE


def exit_reason(executable: str, returncode: int) -> str:
    """What the launch says when the node's process ends before the launch does."""
    if returncode == 0:
        return f"{executable} exited; ending the launch"
    return (f"{executable} exited with code {returncode}: it could not start or stopped on an error "
            "(its log above says why); ending the launch")


def autostart_failure_reason(node: str, start_state: str, goal_state: str) -> str:
    """The launch's last line when autostart's node lands in a state it cannot go on from (AUTOSTART_FAILURES)."""
    what = AUTOSTART_FAILURES[(start_state, goal_state)]
    return f"{node} {what}; it is {goal_state}, autostart cannot go on: ending the launch"


def parse_log_level(value: str) -> str:
    """The `log_level` argument as `--log-level` takes it; raises naming the argument unless rcutils knows it."""
    if value.lower() not in LOG_LEVELS:
        raise LaunchArgumentError(f"log_level:={value}: expected one of {', '.join(LOG_LEVELS)}")
    return value.lower()


def parse_camera_topics(value: str) -> list[str]:
    """Base topics, comma-separated (`/a,/b,/c,/d` or `[/a, /b, /c, /d]`), in the model's camera order: 4, or
    1 or 2 for Alpamayo 1.5 (whose `camera_ids` in params_file name them)."""
    topics = [t.strip().strip("'\"") for t in value.strip().strip("[]").split(",")]
    if len(topics) not in parameters.CAMERA_COUNTS or not all(topics):
        raise LaunchArgumentError(f"camera_topics:={value}: expected 4 comma-separated topics (cross-left, "
                                  "front-wide, cross-right, front-tele) or, for Alpamayo 1.5, 1 or 2 (params_file's "
                                  "camera_ids naming them)")
    return topics


def parameter_overrides(arguments: Mapping[str, str]) -> dict[str, object]:
    """Node parameters from the launch arguments that were given; empty or absent ones keep params_file's."""
    overrides: dict[str, object] = {name: arguments[name] for name in STRING_OVERRIDES if arguments.get(name)}
    if "device" in overrides and device_problem(arguments["device"]):
        raise LaunchArgumentError(f"device:={arguments['device']}: {devices.EXPECTED}")
    if arguments.get("camera_topics"):
        overrides["camera_topics"] = parse_camera_topics(arguments["camera_topics"])
    transport = arguments.get("image_transport", "")
    if transport:
        if transport not in IMAGE_TRANSPORTS:
            raise LaunchArgumentError(f"image_transport:={transport}: expected one of {', '.join(IMAGE_TRANSPORTS)}")
        overrides["image_transport"] = transport
    sim_time = arguments.get("use_sim_time", "").lower()
    if sim_time:
        if sim_time not in BOOLEANS:
            raise LaunchArgumentError(f"use_sim_time:={arguments['use_sim_time']}: expected true or false "
                                      "(or empty: params_file's value)")
        overrides["use_sim_time"] = BOOLEANS[sim_time]
    return overrides


def node_environment(base: Mapping[str, str], discovery_range: str, fastdds_profile: str) -> dict[str, str]:
    """The node's whole environment: `base` plus the discovery range and profile as the installed distro reads them.

    Set on the node's process only, so a launch file including drive.launch.py keeps its own environment.
    """
    if discovery_range not in DISCOVERY_RANGES:
        raise LaunchArgumentError(f"discovery_range:={discovery_range}: expected one of {', '.join(DISCOVERY_RANGES)}")
    profile = existing_file("fastdds_profile", fastdds_profile) if fastdds_profile else None
    env = dict(base)
    dds_env(env, discovery_range=discovery_range, profile=profile)
    env["RCUTILS_LOGGING_BUFFERED_STREAM"] = "1"  # log lines reach the launch screen as they are written
    return env


def node_topic(namespace: str, name: str) -> str:
    """Absolute name of the node's private topic `~/<name>` under the launch namespace."""
    return resolve_topic(namespace, f"{NODE_NAME}/{name}")


def resolve_topic(namespace: str, topic: str) -> str:
    """An absolute topic: `topic` itself if absolute, else under the launch namespace (as rcl resolves it)."""
    if topic.startswith("/"):
        return topic
    parts = [p for p in namespace.strip("/").split("/") if p]
    return "/" + "/".join([*parts, topic])


def odometry_topic(arguments: Mapping[str, str], params_file: Path) -> str:
    """The odometry topic the node will use: the launch argument, else params_file's, else the node default."""
    if arguments.get("odometry_topic"):
        return arguments["odometry_topic"]
    document = yaml.safe_load(params_file.read_text()) or {}
    for node in document.values():
        topic = ((node or {}).get("ros__parameters") or {}).get("odometry_topic")
        if topic:
            return topic
    return DEFAULT_ODOMETRY_TOPIC


def rviz_config(template: str, *, fixed_frame: str, vehicle_frame: str, namespace: str, odometry: str) -> str:
    """config/alpamayo.rviz with the fixed frame, the node's topics under `namespace` and a view on the vehicle.

    The top-down view and the grid follow `vehicle_frame` (TF from the fixed frame), so a car far from the
    fixed frame's origin (a `map` frame 1 km away) is on screen.
    """
    if not fixed_frame:
        raise LaunchArgumentError("fixed_frame:='': expected a TF frame, e.g. odom or map")
    config = yaml.safe_load(template)
    manager = config["Visualization Manager"]
    manager["Global Options"]["Fixed Frame"] = fixed_frame
    target = vehicle_frame or "<Fixed Frame>"
    manager["Views"]["Current"]["Target Frame"] = target
    for display in manager["Displays"]:
        if display["Class"] == "rviz_default_plugins/Grid":
            display["Reference Frame"] = target
        output = RVIZ_TOPICS.get(display["Name"])
        if output is not None:
            display["Topic"]["Value"] = node_topic(namespace, output) if output else resolve_topic(namespace, odometry)
    return yaml.safe_dump(config, sort_keys=False)

"""drive.launch.py's checks, overrides, environment and RViz config (alpamayo_ros.launch_args), without ROS 2."""

import pytest
import yaml

from alpamayo_ros import launch_args
from alpamayo_ros.launch_args import LaunchArgumentError
from conftest import REPO

RVIZ = (REPO / "config" / "alpamayo.rviz").read_text()
PARAMS = REPO / "config" / "alpamayo.yaml"
PROFILE = REPO / "config" / "fastdds_profile.xml"
TOPICS = "/cam/cross_left,/cam/front_wide,/cam/cross_right,/cam/front_tele"


def test_no_arguments_override_nothing():
    """use_sim_time in particular: an empty launch argument must not replace params_file's value."""
    assert launch_args.parameter_overrides({name: "" for name in (*launch_args.STRING_OVERRIDES, "camera_topics",
                                                                  "image_transport", "use_sim_time")}) == {}


def test_given_arguments_become_typed_parameters():
    overrides = launch_args.parameter_overrides({"device": "cpu", "camera_topics": f"[{TOPICS}]",
                                                 "image_transport": "compressed", "use_sim_time": "True"})
    assert overrides == {"device": "cpu", "camera_topics": TOPICS.split(","), "image_transport": "compressed",
                         "use_sim_time": True}
    assert launch_args.parameter_overrides({"use_sim_time": "false"}) == {"use_sim_time": False}
    assert launch_args.parameter_overrides({"camera_topics": "/cam/front_wide, /cam/front_tele"}) == {
        "camera_topics": ["/cam/front_wide", "/cam/front_tele"]}  # Alpamayo 1.5: 1 or 2 cameras too


@pytest.mark.parametrize(("arguments", "message"), [
    ({"camera_topics": "/a,/b,/c"}, "camera_topics:=/a,/b,/c: expected 4"),
    ({"camera_topics": "/a,,/c,/d"}, "expected 4"),
    ({"image_transport": "theora"}, "image_transport:=theora: expected one of raw, compressed"),
    ({"use_sim_time": "yes"}, "use_sim_time:=yes: expected true or false"),
    ({"device": "nonsense"}, "device:=nonsense: expected cpu, cuda or cuda:N"),
    ({"device": "gpu:0"}, "device:=gpu:0: expected cpu, cuda or cuda:N"),
])
def test_bad_arguments_are_refused_by_name(arguments, message):
    with pytest.raises(LaunchArgumentError, match=message):
        launch_args.parameter_overrides(arguments)


def test_path_arguments_must_name_files(tmp_path):
    assert launch_args.existing_file("params_file", str(PARAMS)) == PARAMS
    with pytest.raises(LaunchArgumentError, match="params_file:=.*missing.yaml: no readable file"):
        launch_args.existing_file("params_file", str(tmp_path / "missing.yaml"))
    with pytest.raises(LaunchArgumentError, match="fastdds_profile:="):
        launch_args.node_environment({}, "LOCALHOST", str(tmp_path))  # a directory is not a profile


def test_node_environment_is_a_copy_with_range_and_profile():
    base = {"PATH": "/usr/bin", "ROS_DOMAIN_ID": "7"}
    env = launch_args.node_environment(base, "LOCALHOST", str(PROFILE))
    assert base == {"PATH": "/usr/bin", "ROS_DOMAIN_ID": "7"}  # the launch's own environment is untouched
    assert env["ROS_DOMAIN_ID"] == "7" and env["PATH"] == "/usr/bin"
    assert env["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"
    assert env["FASTDDS_DEFAULT_PROFILES_FILE"] == str(PROFILE)
    subnet = launch_args.node_environment({"FASTDDS_DEFAULT_PROFILES_FILE": "/vehicle.xml"}, "SUBNET", "")
    assert subnet["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "SUBNET" and "ROS_LOCALHOST_ONLY" not in subnet
    assert subnet["FASTDDS_DEFAULT_PROFILES_FILE"] == "/vehicle.xml"
    with pytest.raises(LaunchArgumentError, match="discovery_range:=lan"):
        launch_args.node_environment({}, "lan", "")


def _displays(config: dict) -> dict[str, dict]:
    return {d["Name"]: d for d in config["Visualization Manager"]["Displays"]}


def test_shipped_rviz_config_shows_the_default_launch():
    config = yaml.safe_load(RVIZ)
    assert config["Visualization Manager"]["Global Options"]["Fixed Frame"] == "odom"
    assert config["Visualization Manager"]["Views"]["Current"]["Target Frame"] == "base_link"
    displays = _displays(config)
    assert displays["AlpamayoR1 trajectory"]["Topic"]["Value"] == "/alpamayo/trajectory"
    assert displays["Candidates and reasoning"]["Topic"]["Value"] == "/alpamayo/candidates"
    assert displays["Odometry"]["Topic"]["Value"] == "/odom"
    assert set(launch_args.RVIZ_TOPICS) <= set(displays)


def test_rviz_config_follows_frame_namespace_and_vehicle():
    text = launch_args.rviz_config(RVIZ, fixed_frame="map", vehicle_frame="ego", namespace="/car1/",
                                   odometry="localization/odom")
    config = yaml.safe_load(text)
    manager = config["Visualization Manager"]
    assert manager["Global Options"]["Fixed Frame"] == "map"
    assert manager["Views"]["Current"]["Target Frame"] == "ego"
    displays = _displays(config)
    assert displays["Grid"]["Reference Frame"] == "ego"
    assert displays["AlpamayoR1 trajectory"]["Topic"]["Value"] == "/car1/alpamayo/trajectory"
    assert displays["Candidates and reasoning"]["Topic"]["Value"] == "/car1/alpamayo/candidates"
    assert displays["Odometry"]["Topic"]["Value"] == "/car1/localization/odom"
    with pytest.raises(LaunchArgumentError, match="fixed_frame"):
        launch_args.rviz_config(RVIZ, fixed_frame="", vehicle_frame="", namespace="", odometry="/odom")


def test_odometry_topic_comes_from_the_argument_then_the_params_file(tmp_path):
    assert launch_args.odometry_topic({"odometry_topic": "/gnss/odom"}, PARAMS) == "/gnss/odom"
    assert launch_args.odometry_topic({}, PARAMS) == yaml.safe_load(PARAMS.read_text())["/**"]["ros__parameters"][
        "odometry_topic"]
    other = tmp_path / "p.yaml"
    other.write_text("alpamayo:\n  ros__parameters:\n    device: cpu\n")
    assert launch_args.odometry_topic({}, other) == launch_args.DEFAULT_ODOMETRY_TOPIC


def test_diagnostic_analyzer_groups_the_nodes_statuses_in_any_namespace():
    document = yaml.safe_load((REPO / "config" / "diagnostic_analyzers.yaml").read_text())
    analyzer = document["/**"]["ros__parameters"]["alpamayo"]
    assert analyzer["type"] == "diagnostic_aggregator/GenericAnalyzer"

    def matches(name: str) -> bool:
        return any(pattern in name for pattern in analyzer["contains"])

    for namespace in ("", "car1", "fleet/car1"):
        node = launch_args.resolve_topic(namespace, launch_args.NODE_NAME)
        assert all(matches(f"{node}: {item}") for item in ("inputs", "inference", "model"))
    assert not matches("/camera_driver: inputs")


@pytest.mark.parametrize(("value", "expected"), [("true", True), ("True", True), ("false", False), ("FALSE", False)])
def test_boolean_arguments_take_true_or_false(value, expected):
    assert launch_args.parse_boolean("managed", value) is expected


@pytest.mark.parametrize("value", ["yes", "1", "", "ture"])
def test_other_boolean_values_are_refused_by_name(value):
    with pytest.raises(LaunchArgumentError, match=f"autostart:={value}: expected true or false"):
        launch_args.parse_boolean("autostart", value)


def test_managed_starts_the_lifecycle_node():
    assert launch_args.node_executable(False) == "alpamayo_node"
    assert launch_args.node_executable(True) == "alpamayo_lifecycle_node"


def test_autostart_activates_only_after_configure_succeeded():
    """A failed activate also goes back to inactive: activating again from there would loop."""
    assert launch_args.ACTIVATE_AFTER == ("configuring", "inactive")
    assert ("activating", "inactive") in launch_args.AUTOSTART_FAILURES
    assert launch_args.ACTIVATE_AFTER not in launch_args.AUTOSTART_FAILURES


def test_a_failed_configure_ends_the_launch_saying_so():
    reason = launch_args.autostart_failure_reason("/car1/alpamayo", "configuring", "unconfigured")
    assert reason.startswith("/car1/alpamayo failed to configure")
    assert "cannot configure" in reason and reason.endswith("ending the launch")


def test_every_state_autostart_cannot_leave_has_a_reason():
    """Labels as lifecycle_msgs/State names them; every failure ends in a primary state."""
    primary = {"unconfigured", "inactive", "active", "finalized"}
    transitional = {"configuring", "cleaningup", "shuttingdown", "activating", "deactivating", "errorprocessing"}
    for start_state, goal_state in launch_args.AUTOSTART_FAILURES:
        assert start_state in transitional and goal_state in primary
        assert launch_args.autostart_failure_reason("/alpamayo", start_state, goal_state).startswith("/alpamayo ")


def test_exit_reason_names_the_executable_and_the_code():
    assert launch_args.exit_reason("alpamayo_lifecycle_node", 0) == "alpamayo_lifecycle_node exited; ending the launch"
    failed = launch_args.exit_reason("alpamayo_node", 1)
    assert failed.startswith("alpamayo_node exited with code 1: it could not start") and "ending the launch" in failed


def test_an_exception_in_a_transition_points_to_where_its_traceback_shows():
    reason = launch_args.autostart_failure_reason("/alpamayo", "errorprocessing", "unconfigured")
    assert "does not log" in reason and "managed:=false" in reason


@pytest.mark.parametrize("device", ["cpu", "cuda", "cuda:0", "cuda:12"])
def test_devices_the_node_runs_on_pass(device):
    assert launch_args.parameter_overrides({"device": device}) == {"device": device}


@pytest.mark.parametrize(("value", "level"), [("info", "info"), ("DEBUG", "debug"), ("Warn", "warn"),
                                              ("fatal", "fatal")])
def test_log_levels_are_rcutils_severities_in_any_case(value, level):
    assert launch_args.parse_log_level(value) == level


@pytest.mark.parametrize("value", ["verbose", "", "warning", "rcl:=debug"])
def test_other_log_levels_are_refused_by_name(value):
    with pytest.raises(LaunchArgumentError, match=f"log_level:={value}: expected one of debug, info, warn, error, "
                                                  "fatal"):
        launch_args.parse_log_level(value)


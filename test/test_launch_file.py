"""drive.launch.py declares what the README documents, every argument described (checked without ROS 2)."""

import ast
import re
from pathlib import Path

from alpamayo_ros import launch_args

REPO = Path(__file__).resolve().parents[1]
LAUNCH_FILE = REPO / "launch" / "drive.launch.py"
DOCUMENTED = {"params_file", "model_path", "base_model_dir", "device", "camera_topics", "image_transport",
              "odometry_topic", "use_sim_time", "namespace", "log_level", "discovery_range", "fastdds_profile",
              "node_stop_timeout", "managed", "autostart", "rviz", "fixed_frame", "vehicle_frame"}


def _arguments() -> dict[str, tuple]:
    tree = ast.parse(LAUNCH_FILE.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "ARGUMENTS" for t in node.targets):
            return {key.value: value for key, value in zip(node.value.keys, node.value.values)}
    raise AssertionError("drive.launch.py has no ARGUMENTS table")


def test_launch_file_declares_its_documented_arguments():
    assert set(_arguments()) == DOCUMENTED


def test_every_launch_argument_has_a_description():
    for name, value in _arguments().items():
        assert isinstance(value, ast.Tuple) and len(value.elts) == 2, name
        description = value.elts[1]
        text = ast.literal_eval(description) if isinstance(description, (ast.Constant, ast.BinOp)) else ""
        assert len(text) > 10, f"{name}: no description"


def test_overridable_parameters_default_to_empty_so_the_yaml_wins():
    arguments = _arguments()
    for name in ("model_path", "base_model_dir", "device", "camera_topics", "image_transport", "odometry_topic",
                 "use_sim_time"):
        assert ast.literal_eval(arguments[name].elts[0]) == "", name


def test_launch_file_sets_no_environment_on_the_launch():
    """Environment goes on the node (env=), not SetEnvironmentVariable, which leaks into an including launch."""
    assert "SetEnvironmentVariable" not in LAUNCH_FILE.read_text()


def test_plain_and_managed_defaults():
    """managed:=false keeps today's plain node; a managed node comes up on its own unless told otherwise."""
    arguments = _arguments()
    assert ast.literal_eval(arguments["managed"].elts[0]) == "false"
    assert ast.literal_eval(arguments["autostart"].elts[0]) == "true"


def test_launched_executables_are_console_scripts():
    """setup.py's entry points read `f"<script> = {PACKAGE}.<module>:main"`."""
    scripts = set(re.findall(r'f"(\w+) = \{PACKAGE\}\.', (REPO / "setup.py").read_text()))
    assert {launch_args.PLAIN_EXECUTABLE, launch_args.LIFECYCLE_EXECUTABLE} <= scripts, sorted(scripts)

"""drive.launch.py declares what the README documents (checked without a ROS 2 install)."""

import ast
from pathlib import Path

LAUNCH_FILE = Path(__file__).resolve().parents[1] / "launch" / "drive.launch.py"


def test_launch_file_declares_its_documented_arguments():
    tree = ast.parse(LAUNCH_FILE.read_text())
    declared = {node.args[0].value for node in ast.walk(tree)
                if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "DeclareLaunchArgument"}
    assert {"params_file", "model_path", "use_sim_time", "namespace", "log_level", "odometry_topic",
            "discovery_range", "fastdds_profile"} <= declared

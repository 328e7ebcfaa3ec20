"""Dependencies point one way: model/ and pipeline/ never import ROS."""

import subprocess
import sys

from conftest import REPO

PROBE = """
import sys
for name in ("rclpy", "std_msgs", "sensor_msgs", "nav_msgs", "geometry_msgs"):
    sys.modules[name] = None  # any import of these now raises ImportError
import alpamayo_ros.model.loading, alpamayo_ros.model.alpamayo_r1, alpamayo_ros.pipeline
import alpamayo_ros.tools.synthetic
print("ok")
"""


def test_model_and_pipeline_import_without_ros():
    result = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_no_ros_import_statement_below_model_or_pipeline():
    offenders = [str(path.relative_to(REPO)) for package in ("model", "pipeline")
                 for path in (REPO / "alpamayo_ros" / package).rglob("*.py")
                 if any(line.lstrip().startswith(("import rclpy", "from rclpy")) for line in path.read_text().splitlines())]
    assert offenders == []

"""Dependencies point one way: model/ and pipeline/ never import ROS; the parameter schema, `--help` and the launch
file's helper import no torch or transformers."""

import subprocess
import sys

from conftest import REPO

ROS_PACKAGES = ("rclpy", "std_msgs", "sensor_msgs", "nav_msgs", "geometry_msgs", "diagnostic_msgs",
                "visualization_msgs", "builtin_interfaces", "rcl_interfaces", "lifecycle_msgs", "rosgraph_msgs",
                "alpamayo_msgs")
# Every module under model/ and pipeline/, imported with the ROS packages made unimportable; then none may be loaded.
PROBE = """
import importlib, pkgutil, sys
ros = {ros!r}
for name in ros:
    sys.modules[name] = None  # any import of these now raises ImportError
import alpamayo_ros.model, alpamayo_ros.pipeline
modules = [info.name for package in (alpamayo_ros.model, alpamayo_ros.pipeline)
           for info in pkgutil.iter_modules(package.__path__, package.__name__ + ".")]
for name in modules:
    importlib.import_module(name)
import alpamayo_ros.tools.synthetic
loaded = sorted(name for name in sys.modules if name.split(".")[0] in ros and sys.modules[name] is not None)
print(len(modules), loaded)
"""
LIGHT = """
import sys
import alpamayo_ros.parameters, alpamayo_ros.launch_args
from alpamayo_ros.node import main
assert main(["alpamayo_node", "--help"]) == 0
print(sorted(name for name in ("torch", "transformers") if name in sys.modules))
"""


def _run(code: str) -> str:
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    return result.stdout.strip().splitlines()[-1]


def test_every_model_and_pipeline_module_imports_without_ros():
    count, loaded = _run(PROBE.format(ros=ROS_PACKAGES)).split(" ", 1)
    assert int(count) >= 20 and loaded == "[]"  # 12 model modules, 13 pipeline modules today


def test_no_ros_import_statement_below_model_or_pipeline():
    offenders = [str(path.relative_to(REPO)) for package in ("model", "pipeline")
                 for path in (REPO / "alpamayo_ros" / package).rglob("*.py")
                 if any(line.lstrip().startswith(("import rclpy", "from rclpy")) for line in path.read_text().splitlines())]
    assert offenders == []


def test_schema_help_and_launch_helper_load_no_torch_or_transformers():
    assert _run(LIGHT) == "[]"

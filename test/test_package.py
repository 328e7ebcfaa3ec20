"""package.xml and setup.py declare what the code imports and what colcon needs to run the tests."""

import ast
import re
import sys
import xml.etree.ElementTree as ET

from conftest import REPO

# Imported top-level modules that are ROS packages (rosdep keys of the same name).
NOT_ROS = set(sys.stdlib_module_names) | {"alpamayo_ros", "numpy", "scipy", "PIL", "torch", "transformers",
                                          "safetensors", "tokenizers", "rosbags", "yaml", "matplotlib", "pytest",
                                          "hypothesis", "conftest", "dds", "catkin_pkg", "launch_pytest", "tqdm",
                                          "ray"}
SOURCES = [*(REPO / "alpamayo_ros").rglob("*.py"), *(REPO / "launch").glob("*.py")]


def _manifest(tag: str) -> set[str]:
    return {e.text for e in ET.parse(REPO / "package.xml").getroot().iter(tag)}


def _imported_ros_packages() -> set[str]:
    names = set()
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names.add(node.module.split(".")[0])
    return names - NOT_ROS


def test_every_imported_ros_package_is_an_exec_depend():
    missing = _imported_ros_packages() - _manifest("exec_depend")
    assert not missing, f"package.xml lacks <exec_depend> for {sorted(missing)}"


def test_colcon_test_finds_pytest():
    """colcon runs pytest for an ament_python package only when setup.py declares it for tests."""
    setup = ast.parse((REPO / "setup.py").read_text())
    call = next(n for n in ast.walk(setup) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "setup")
    keywords = {k.arg: k.value for k in call.keywords}
    assert "pytest" in ast.literal_eval(keywords["extras_require"])["test"]
    assert "python3-pytest" in _manifest("test_depend")


def test_pytest_pin_is_one_launch_testing_loads_with():
    """pytest 9 removed the py.path hook arguments launch_testing's plugin declares: every run fails with it."""
    pin = re.search(r"^pytest==(\d+)\.", (REPO / "requirements-common.txt").read_text(), re.MULTILINE)
    assert pin and int(pin.group(1)) < 9

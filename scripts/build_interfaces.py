"""Build the alpamayo_msgs interface package into this Python environment's ROS 2 prefix.

Used where ROS 2 comes from PyPI wheels instead of a ROS install (`make test`, `make demo`); on a
ROS 2 install `colcon build` does this. Recipe: ../shared/ros2_env.md. The wheels' exported CMake
files name the wheel builder's Python and numpy include directories; they are rewritten to this
interpreter's (idempotent) before CMake runs. Run with the environment's python:

    .venv/bin/python scripts/build_interfaces.py
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import numpy

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "alpamayo_msgs"
PREFIX = Path(sys.prefix)
BUILDER_PATH = re.compile(r"/opt/python/cp3\d+-cp3\d+/(include/python3\.\d+|lib/python3\.\d+/site-packages/numpy/_core/include)")


def fix_exported_include_dirs() -> int:
    """Point the wheels' `*Export.cmake` files at this interpreter's include directories."""
    python_include = sysconfig.get_paths()["include"]
    numpy_include = numpy.get_include()
    changed = 0
    for path in PREFIX.glob("share/*/cmake/*Export.cmake"):
        text = path.read_text()
        fixed = BUILDER_PATH.sub(lambda m: python_include if m.group(1).startswith("include") else numpy_include, text)
        if fixed != text:
            path.write_text(fixed)
            changed += 1
    return changed


def build() -> None:
    cmake = shutil.which("cmake")
    if cmake is None:
        raise SystemExit("cmake not found: install cmake (>= 3.16), gcc and g++ to build alpamayo_msgs")
    env = dict(os.environ, AMENT_PREFIX_PATH=str(PREFIX), CMAKE_PREFIX_PATH=str(PREFIX))
    generator = ["-G", "Ninja"] if shutil.which("ninja") else []
    with tempfile.TemporaryDirectory(prefix="alpamayo_msgs_build_") as build_dir:
        subprocess.run([cmake, "-S", str(PACKAGE), "-B", build_dir, *generator, f"-DCMAKE_PREFIX_PATH={PREFIX}",
                        f"-DCMAKE_INSTALL_PREFIX={PREFIX}", f"-DPython3_EXECUTABLE={sys.executable}",
                        "-DBUILD_TESTING=OFF", "-DCMAKE_BUILD_TYPE=Release"], check=True, env=env,
                       stdout=subprocess.DEVNULL)
        subprocess.run([cmake, "--build", build_dir, "--parallel", str(os.cpu_count() or 1)], check=True, env=env,
                       stdout=subprocess.DEVNULL)
        subprocess.run([cmake, "--install", build_dir], check=True, env=env, stdout=subprocess.DEVNULL)


def main() -> int:
    print(f"alpamayo_msgs: rewrote {fix_exported_include_dirs()} exported CMake files; building into {PREFIX}")
    build()
    check = subprocess.run([sys.executable, "-c", "from alpamayo_msgs.msg import DrivingOutput; print(DrivingOutput())"],
                           capture_output=True, text=True)
    if check.returncode != 0:
        raise SystemExit(f"alpamayo_msgs built but does not import:\n{check.stderr}")
    print("alpamayo_msgs: installed and importable")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

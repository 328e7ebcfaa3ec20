"""The suite behaves the same where a ROS 2 install's pytest plugins (launch_testing, launch_pytest) are loaded.

Those plugins are not on PyPI, so CI checks their two effects directly:
- importing `launch` sets a logger class whose loggers do not propagate to the root logger, where `caplog`
  listens: the tests that read log records run here in a pytest whose logger class is such a class;
- launch_testing's collector imports every test module, and a module that skips at import skips the whole
  directory: every test module must import and yield its tests at collection (skips go on the tests).
"""

import re
import subprocess
import sys

from conftest import REPO

TEST_DIR = REPO / "test"
TIMEOUT_S = 600  # imports torch, transformers and rclpy once on a loaded machine
NON_PROPAGATING_PYTEST = """
import logging
import sys


class NonPropagatingLogger(logging.getLoggerClass()):  # what launch.logging installs
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.propagate = False


logging.setLoggerClass(NonPropagatingLogger)
import pytest

sys.exit(pytest.main(["-q", "-p", "no:cacheprovider", *sys.argv[1:]]))
"""


def _test_modules() -> list:
    return sorted(path for path in TEST_DIR.rglob("test_*.py"))


def test_tests_that_read_log_records_pass_with_non_propagating_loggers():
    readers = [path for path in _test_modules()
               if path.name != "test_suite_guards.py" and re.search(r"\bcaplog\b|getLogger\(", path.read_text())]
    assert readers  # test/pipeline/test_runner.py at least
    result = subprocess.run([sys.executable, "-c", NON_PROPAGATING_PYTEST, *map(str, readers)], cwd=REPO,
                            capture_output=True, text=True, timeout=TIMEOUT_S)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def test_collection_imports_every_test_module_and_finds_its_tests():
    result = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                             str(TEST_DIR)], cwd=REPO, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    collected = {line.split("::")[0] for line in result.stdout.splitlines() if "::" in line}
    expected = {str(path.relative_to(REPO)) for path in _test_modules()}
    assert expected - collected == set(), f"modules with no test collected:\n{result.stdout[-4000:]}"

# The README's commands. Everything runs from this checkout with its own venv; nothing is cached elsewhere.
# Two lanes of ROS 2 PyPI wheels: Kilted (default, .venv, the whole suite) and Jazzy (`make test ROS_DISTRO=jazzy`,
# .venv-jazzy, the tests whose ROS 2 code differs between distros). On a ROS 2 install use colcon instead (README).
SHELL := /bin/bash
PYTHON ?= python3

# Only a ROS_DISTRO given on the make command line picks the lane: a sourced ROS 2 setup.bash exports ROS_DISTRO too.
ifeq ($(origin ROS_DISTRO),command line)
LANE := $(ROS_DISTRO)
else
LANE := kilted
endif
ifeq ($(LANE),kilted)
VENV := .venv
REQUIREMENTS := requirements.txt
TESTS := test
SELECT :=
else ifeq ($(LANE),jazzy)
VENV := .venv-jazzy
REQUIREMENTS := requirements-jazzy.txt
TESTS := test/test_ros_environment.py test/test_node.py test/test_lifecycle_node.py test/test_lifecycle_services.py \
	test/test_node_route.py test/test_faults.py test/tools/test_replay.py \
	test/tools/test_closed_loop.py::test_the_node_process_closes_the_loop_over_dds
# Tests that run no ROS 2 code the lane's other tests leave unrun (test/conftest.py) run in the Kilted lane only.
SELECT := -m "not distro_independent"
else
$(error ROS_DISTRO=$(ROS_DISTRO): the wheel lanes are kilted (default) and jazzy; on a ROS 2 install use colcon)
endif

PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
MSGS_STAMP := $(VENV)/.alpamayo_msgs

# rclpy must never multicast onto the machine's network (../shared/ros2_env.md); the test suite, demo and
# replay also set this through alpamayo_ros/ros_env.py, with the distro's other variables.
export ROS_AUTOMATIC_DISCOVERY_RANGE := LOCALHOST
export PYTHONPATH := $(CURDIR)$(if $(PYTHONPATH),:$(PYTHONPATH))
export TOKENIZERS_PARALLELISM := false

.PHONY: setup demo test bench clean

setup: $(MSGS_STAMP)

$(STAMP): $(REQUIREMENTS) requirements-common.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --requirement $(REQUIREMENTS)
	touch $@

# alpamayo_msgs compiled into the venv's ROS prefix (on a ROS 2 install, colcon does this).
$(MSGS_STAMP): $(STAMP) scripts/build_interfaces.py alpamayo_msgs/CMakeLists.txt alpamayo_msgs/package.xml $(wildcard alpamayo_msgs/msg/*.msg)
	$(PY) scripts/build_interfaces.py
	touch $@

demo: $(MSGS_STAMP)
	$(PY) -m alpamayo_ros.tools.demo $(DEMO_ARGS)

test: $(MSGS_STAMP)
	$(PY) -m ruff check .
	$(PY) -m pytest -q $(SELECT) $(TESTS)

bench: $(MSGS_STAMP)
	$(PY) bench/bench_model.py
	$(PY) bench/bench_ingest.py

clean:
	rm -rf .venv .venv-jazzy .pytest_cache bench/results

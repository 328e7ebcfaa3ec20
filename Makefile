# The README's commands. Everything runs from this checkout with its own .venv; nothing is cached elsewhere.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
MSGS_STAMP := $(VENV)/.alpamayo_msgs

# rclpy must never multicast onto the machine's network (../shared/ros2_env.md).
export ROS_AUTOMATIC_DISCOVERY_RANGE := LOCALHOST
export PYTHONPATH := $(CURDIR)$(if $(PYTHONPATH),:$(PYTHONPATH))
export TOKENIZERS_PARALLELISM := false

.PHONY: setup demo test bench clean

setup: $(MSGS_STAMP)

$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --requirement requirements.txt
	touch $@

# alpamayo_msgs compiled into the venv's ROS prefix (on a ROS 2 install, colcon does this).
$(MSGS_STAMP): $(STAMP) scripts/build_interfaces.py alpamayo_msgs/CMakeLists.txt alpamayo_msgs/package.xml $(wildcard alpamayo_msgs/msg/*.msg)
	$(PY) scripts/build_interfaces.py
	touch $@

demo: $(MSGS_STAMP)
	$(PY) -m alpamayo_ros.tools.demo $(DEMO_ARGS)

test: $(MSGS_STAMP)
	$(PY) -m pytest -q test

bench: $(MSGS_STAMP)
	$(PY) bench/bench_model.py
	$(PY) bench/bench_node_tick.py

clean:
	rm -rf $(VENV) .pytest_cache bench/results

# The README's commands. Everything runs from this checkout with its own .venv; nothing is cached elsewhere.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# rclpy must never multicast onto the machine's network (../shared/ros2_env.md).
export ROS_AUTOMATIC_DISCOVERY_RANGE := LOCALHOST
export PYTHONPATH := $(CURDIR)$(if $(PYTHONPATH),:$(PYTHONPATH))
export TOKENIZERS_PARALLELISM := false

.PHONY: setup demo test bench clean

setup: $(STAMP)

$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --requirement requirements.txt
	touch $@

demo: $(STAMP)
	$(PY) -m alpamayo_ros.tools.demo

test: $(STAMP)
	$(PY) -m pytest -q test

bench: $(STAMP)
	$(PY) bench/bench_model.py

clean:
	rm -rf $(VENV) .pytest_cache bench/results

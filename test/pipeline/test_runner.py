"""Runner: one job at a time on its worker thread; a busy worker drops, a job that raises is logged and counted."""

import logging
import threading

import pytest

from alpamayo_ros.pipeline.runner import Runner

WAIT_S = 10.0


def test_busy_runner_drops_and_counts_jobs():
    release, results, done = threading.Event(), [], threading.Event()

    def job(n):
        def run():
            release.wait(WAIT_S)
            return f"result {n}"
        return run

    runner = Runner(lambda r: (results.append(r), done.set()))
    try:
        assert runner.submit(job(1))
        assert not runner.submit(job(2))  # worker busy: dropped
        assert runner.dropped == 1 and runner.busy
        release.set()
        assert done.wait(WAIT_S)
    finally:
        runner.stop(WAIT_S)
    assert results == ["result 1"] and not runner.busy


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_job_that_raises_is_counted_and_the_next_job_runs():
    # A handler on the runner's own logger, not caplog: launch (imported by launch_pytest on any ROS 2
    # machine) sets a logger class whose loggers do not propagate to the root, where caplog listens.
    results, seen, records = [], threading.Semaphore(0), _Records()

    def failing():
        raise RuntimeError("a bug in the tick")

    runner = Runner(lambda r: (results.append(r), seen.release()))
    runner_logger = logging.getLogger(Runner.__module__)
    runner_logger.addHandler(records)
    try:
        runner.submit(failing)
        for _ in range(100):  # the worker frees itself after logging the failure
            if not runner.busy:
                break
            threading.Event().wait(0.05)
        assert runner.submit(lambda: "ok")
        assert seen.acquire(timeout=WAIT_S)
    finally:
        runner.stop(WAIT_S)
        runner_logger.removeHandler(records)
    assert results == ["ok"] and runner.failed == 1
    assert any(r.levelno == logging.ERROR and "RuntimeError: a bug in the tick" in r.getMessage()
               for r in records.records)


def test_stopped_runner_refuses_work():
    runner = Runner(lambda r: None)
    runner.stop(WAIT_S)
    with pytest.raises(RuntimeError, match="stopped"):
        runner.submit(lambda: None)

"""Runner: one tick at a time on its worker thread; busy drops, errors come back as tracebacks."""

import threading

import numpy as np
import pytest

from alpamayo_ros.pipeline.runner import Runner
from alpamayo_ros.pipeline.sync import ModelInput

WAIT_S = 10.0


def model_input(t0_ns=1):
    return ModelInput(t0_ns=t0_ns, images=(), frame_stamps_ns=np.zeros((4, 4), np.int64),
                      ego_history_xyz=np.zeros((16, 3), np.float32), ego_history_rot=np.zeros((16, 3, 3), np.float32),
                      t0_position=np.zeros(3), t0_rotation=np.eye(3), history_span_ns=(0, 0))


def test_busy_runner_drops_and_counts_ticks():
    release, results, done = threading.Event(), [], threading.Event()

    def infer(tick, mi):
        release.wait(WAIT_S)
        return f"prediction {tick}"

    runner = Runner(infer, lambda r: (results.append(r), done.set()))
    try:
        assert runner.submit(1, model_input(10))
        assert not runner.submit(2, model_input(20))  # worker busy: dropped
        assert runner.dropped == 1 and runner.busy
        release.set()
        assert done.wait(WAIT_S)
    finally:
        runner.stop(WAIT_S)
    assert [(r.tick, r.model_input.t0_ns, r.prediction, r.error) for r in results] == [(1, 10, "prediction 1", None)]
    assert results[0].finished_ns >= results[0].started_ns


def test_model_exception_is_reported_and_the_next_tick_runs():
    results, seen = [], threading.Semaphore(0)

    def infer(tick, mi):
        if tick == 1:
            raise RuntimeError("CUDA out of memory")
        return "ok"

    runner = Runner(infer, lambda r: (results.append(r), seen.release()))
    try:
        runner.submit(1, model_input())
        assert seen.acquire(timeout=WAIT_S)
        runner.submit(2, model_input())
        assert seen.acquire(timeout=WAIT_S)
    finally:
        runner.stop(WAIT_S)
    assert results[0].prediction is None and "RuntimeError: CUDA out of memory" in results[0].error
    assert results[1].prediction == "ok" and runner.failed == 1


def test_stopped_runner_refuses_work():
    runner = Runner(lambda tick, mi: None, lambda r: None)
    runner.stop(WAIT_S)
    with pytest.raises(RuntimeError, match="stopped"):
        runner.submit(1, model_input())

"""The tick engine's protocol: the one waiting tick, withholding after pause, output failures, diagnostics once."""

import threading

import pytest
from test_ticker import MS, TOPICS, fill

from alpamayo_ros.pipeline.engine import TickEngine
from alpamayo_ros.pipeline.inputs import Inputs
from alpamayo_ros.pipeline.outcome import ClockJump, Level, Status, TickReport
from alpamayo_ros.pipeline.runner import SamplingSettings, model_inference
from alpamayo_ros.pipeline.settings import TickSettings
from alpamayo_ros.pipeline.sync import SyncConfig

WAIT_S = 60.0


class Blocking:
    """The tiny model's inference, held until `release` is set; `finished` is set when a result waits."""

    def __init__(self, model) -> None:
        self.infer = model_inference(model, SamplingSettings(num_samples=1, max_reasoning_tokens=3))
        self.release, self.finished = threading.Event(), threading.Event()

    def __call__(self, tick, model_input, images):
        assert self.release.wait(WAIT_S)
        return self.infer(tick, model_input, images)


def statuses(events) -> list:
    return [(e.tick, e.status) for e in events if isinstance(e, TickReport)]


@pytest.fixture
def threaded(tiny_model):
    blocking = Blocking(tiny_model)
    engine = TickEngine(Inputs(TOPICS, "/odom", SyncConfig()), TickSettings(rate_hz=2.0), blocking,
                        tiny_model.action_space, worker=True, on_result=blocking.finished.set)
    engine.blocking = blocking
    yield engine
    blocking.release.set()
    engine.close()


def test_a_tick_finding_the_model_busy_waits_and_a_newer_one_takes_its_place(threaded):
    fill(threaded.inputs, 0, 2_000)
    assert statuses(threaded.tick(2_000 * MS)) == [(1, Status.SUBMITTED)]
    assert statuses(threaded.tick(2_500 * MS)) == []  # tick 2 waits
    assert statuses(threaded.tick(3_000 * MS)) == [(2, Status.DROPPED_BUSY)]  # tick 3 takes its place
    threaded.blocking.release.set()
    assert threaded.blocking.finished.wait(WAIT_S)
    events = threaded.collect(3_100 * MS)
    assert statuses(events)[:2] == [(1, Status.PUBLISHED), (3, Status.NOT_READY)]  # then the waiting tick runs
    assert threaded.counts.published == 1 and threaded.counts.dropped == 1 and threaded.counts.ticks == 3
    status = threaded.status()
    assert status.level is Level.WARN and "1 tick(s) dropped" in status.message
    assert "dropped" not in threaded.status().message  # reported once


def test_a_tick_settles_the_result_handed_over_before_it_starts(threaded):
    # The worker frees the model before the executor collects its result: a tick due in between must report the
    # finished tick first, so no SUBMITTED overtakes the previous tick's outcome on ~/tick.
    fill(threaded.inputs, 0, 2_000)
    assert statuses(threaded.tick(2_000 * MS)) == [(1, Status.SUBMITTED)]
    threaded.blocking.release.set()
    assert threaded.blocking.finished.wait(WAIT_S)
    assert statuses(threaded.tick(2_500 * MS)) == [(1, Status.PUBLISHED), (2, Status.NOT_READY)]
    assert statuses(threaded.collect(2_600 * MS)) == []


def test_a_result_finishing_after_pause_is_withheld_and_paused_engines_do_not_tick(threaded):
    fill(threaded.inputs, 0, 2_000)
    threaded.tick(2_000 * MS)
    threaded.tick(2_500 * MS)  # waits
    assert statuses(threaded.pause()) == [(2, Status.DROPPED_BUSY)]
    assert threaded.tick(3_000 * MS) == []
    threaded.blocking.release.set()
    assert threaded.blocking.finished.wait(WAIT_S)
    (report,) = threaded.collect(3_000 * MS)
    assert report.status is Status.REJECTED and "stopped ticking" in report.reason
    assert threaded.counts.rejected == 1 and threaded.counts.published == 0


@pytest.fixture
def lockstep(tiny_model):
    return TickEngine(Inputs(TOPICS, "/odom", SyncConfig()), TickSettings(rate_hz=2.0),
                      model_inference(tiny_model, SamplingSettings(num_samples=1, max_reasoning_tokens=3)),
                      tiny_model.action_space)


def test_without_a_worker_a_tick_runs_to_completion(lockstep):
    fill(lockstep.inputs, 0, 2_000)
    events = lockstep.tick(2_000 * MS)
    assert statuses(events) == [(1, Status.SUBMITTED), (1, Status.PUBLISHED)]
    assert events[-1].t0_ns == 2_000 * MS and events[-1].latency_ms == 0.0 and events[-1].level is Level.OK
    assert lockstep.status().level is Level.OK


def test_a_failure_to_publish_counts_as_a_model_error_once(lockstep):
    fill(lockstep.inputs, 0, 2_000)
    published = lockstep.tick(2_000 * MS)[-1]
    failed = lockstep.output_failed(published, "Traceback ...\nValueError: bad frame id\n")
    assert failed.status is Status.MODEL_ERROR and failed.level is Level.ERROR
    assert (lockstep.counts.published, lockstep.counts.model_errors) == (0, 1)
    status = lockstep.status()
    assert status.level is Level.ERROR and status.model_error == "output handling failed: ValueError: bad frame id"


def test_a_clock_jump_is_an_event_and_reported_once(lockstep):
    fill(lockstep.inputs, 10_000, 12_000)
    lockstep.tick(12_000 * MS)
    events = lockstep.tick(2_000 * MS)
    jumps = [e for e in events if isinstance(e, ClockJump)]
    assert len(jumps) == 1 and jumps[0].text.startswith("clock jumped back 10.0 s")
    assert lockstep.status().clock_jump == jumps[0].text and lockstep.status().clock_jump == ""

"""The node's tick engine (`pipeline.engine.TickEngine`) on simulated time, each run's compute charged to that time.

The engine runs with its worker thread, as in the node; the model call on that thread is wrapped so that,
once the model has answered, the worker holds its result until the simulated clock reaches the run's start
plus its latency: the measured wall time from submission to the model's answer (realistic) or a fixed
time (deterministic). Until then the engine sees the model busy, so ticks that fall meanwhile wait or are
dropped by the engine's own rules. The loop's thread advances the clock and waits for the worker at each
point where the result is due, so the order of events never depends on thread timing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from alpamayo_ros import conversions
from alpamayo_ros.parameters import NodeConfig
from alpamayo_ros.pipeline.engine import Event, TickEngine
from alpamayo_ros.pipeline.inputs import Inputs, Refused
from alpamayo_ros.pipeline.outcome import Status, TickCounts, TickReport
from alpamayo_ros.pipeline.runner import model_inference
from alpamayo_ros.units import NS_PER_S

FOREVER_NS = 2 ** 62


class SimClockEngine:
    """A `TickEngine` whose worker's results are released on the loop's simulated clock."""

    def __init__(self, cfg: NodeConfig, model, camera_topics: list[str], latency_ns: Callable[[float], int]) -> None:
        """`latency_ns(compute_s)`: simulated nanoseconds a run whose model answered after `compute_s` wall seconds
        occupies the model."""
        self.inputs = Inputs(camera_topics, cfg.odometry_topic, cfg.sync, camera_names=cfg.camera_names)
        self._infer = model_inference(model, cfg.sampling)
        self.engine = TickEngine(self.inputs, cfg.tick_settings, self._held_infer, model.action_space,
                                 on_reset=model.clear_vision_cache, worker=True, on_result=self._handed_over)
        self.latency_ns = latency_ns
        self.refused: list[str] = []
        self.compute_s: list[float] = []
        self._cv = threading.Condition()
        self._now_ns = 0  # the simulated clock (the worker waits on it)
        self._release_ns: int | None = None  # when the running job's result may be handed over
        self._handed = False  # the worker handed the job's result to the engine
        self._pending = False  # a job runs (or waits to be collected)
        self._job_start_ns, self._submitted_wall = 0, 0.0

    @property
    def counts(self) -> TickCounts:
        return self.engine.counts

    def take_image(self, camera: int, msg, now_ns: int) -> None:
        self._note(conversions.take_image(self.inputs, camera, msg, now_ns, now_ns / NS_PER_S))

    def take_odometry(self, msg, now_ns: int) -> None:
        self._note(conversions.take_odometry(self.inputs, msg, now_ns, now_ns / NS_PER_S))

    def step(self, now_ns: int, tick_due: bool) -> list[Event]:
        """Simulated time is `now_ns`: collect a result that is due, then tick if the node's timer fires."""
        with self._cv:
            self._now_ns = now_ns
            self._cv.notify_all()
        events = self._collect_due(now_ns)
        if tick_due:
            events += self._call(lambda: self.engine.tick(now_ns), now_ns)
        for event in events:
            if isinstance(event, TickReport) and event.refused is not None:
                self._note(event.refused)
        return events

    def close(self) -> None:
        """Release a held result and end the worker."""
        with self._cv:
            self._now_ns = FOREVER_NS
            self._cv.notify_all()
        self.engine.close()

    def _call(self, call: Callable[[], list[Event]], now_ns: int) -> list[Event]:
        """Call the engine; if it started a job, wait until the model has answered, then collect it if due."""
        if not self._pending:  # a job the call may start begins now
            with self._cv:
                self._release_ns, self._handed = None, False
            self._job_start_ns, self._submitted_wall = now_ns, time.perf_counter()
        events = call()
        if any(isinstance(e, TickReport) and e.status is Status.SUBMITTED for e in events):
            with self._cv:  # the model answered (release time known), or the run failed before the model
                self._cv.wait_for(lambda: self._release_ns is not None or self._handed)
                if self._release_ns is None:
                    self._release_ns = now_ns
            self._pending = True
            events += self._collect_due(now_ns)
        return events

    def _collect_due(self, now_ns: int) -> list[Event]:
        if not self._pending or self._release_ns > now_ns:
            return []
        with self._cv:
            self._cv.wait_for(lambda: self._handed)
        self._pending = False
        return self._call(lambda: self.engine.collect(now_ns), now_ns)  # may start the waiting tick

    def _held_infer(self, tick, model_input, images):  # the worker thread
        try:
            return self._infer(tick, model_input, images)
        finally:
            compute_s = time.perf_counter() - self._submitted_wall
            with self._cv:
                self.compute_s.append(compute_s)
                self._release_ns = self._job_start_ns + max(int(self.latency_ns(compute_s)), 0)
                self._cv.notify_all()
                self._cv.wait_for(lambda: self._now_ns >= self._release_ns)

    def _handed_over(self) -> None:  # the worker thread
        with self._cv:
            self._handed = True
            self._cv.notify_all()

    def _note(self, refused: Refused | None) -> None:
        if refused is not None:
            self.refused.append(refused.text)

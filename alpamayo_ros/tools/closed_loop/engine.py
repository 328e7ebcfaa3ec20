"""The node's tick engine on simulated time, with each run's compute time charged to that time.

The ONLY place the closed loop touches the tick protocol. It drives `pipeline.ticker.Ticker`'s public
steps (select, submitted, run, finish, dropped, observe_clock) the way `node.py` does: a tick that finds
the model busy waits and runs, with the inputs of that moment, as soon as the model is free; only one
waits, and a newer tick takes its place (the older one is dropped). The model runs at once, in this
thread, but its outcome is released only `latency` later on the simulated clock: the measured wall time
of the run (realistic) or a fixed time (deterministic). Inputs keep arriving meanwhile, as in the node.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from alpamayo_ros import conversions
from alpamayo_ros.parameters import NodeConfig
from alpamayo_ros.pipeline.inputs import Inputs, Refused
from alpamayo_ros.pipeline.runner import model_inference
from alpamayo_ros.pipeline.sync import NotReady
from alpamayo_ros.pipeline.ticker import Outcome, Status, TickCounts, Ticker

NS_PER_S = 1_000_000_000


@dataclass(frozen=True, slots=True)
class TickReport:
    """One ~/tick message's content: a tick's status at simulated time `stamp_ns`."""

    tick: int
    status: Status
    stamp_ns: int
    reason: str = ""
    t0_ns: int = 0


@dataclass(frozen=True, slots=True)
class Released:
    """A run's outcome released at `stamp_ns` (the first loop step after its charged latency)."""

    outcome: Outcome
    stamp_ns: int
    compute_s: float  # wall time the run took here


Event = TickReport | Released


class SimEngine:
    """Ticks, a worker that is busy for the charged latency, and the node's one waiting tick."""

    def __init__(self, cfg: NodeConfig, model, camera_topics: list[str], latency_ns: Callable[[float], int]) -> None:
        """`latency_ns(compute_s)`: simulated nanoseconds a run that took `compute_s` wall seconds occupies."""
        self.cfg = cfg
        self.inputs = Inputs(camera_topics, cfg.odometry_topic, cfg.sync)
        self.ticker = Ticker(self.inputs, cfg.tick_settings, model_inference(model, cfg.sampling), model.action_space,
                             on_reset=model.clear_vision_cache)
        self.latency_ns = latency_ns
        self.refused: list[str] = []
        self.compute_s: list[float] = []
        self._running: tuple[Outcome, int, float] | None = None  # (outcome, release time, compute s)
        self._waiting: int | None = None  # a tick that found the model busy

    @property
    def counts(self) -> TickCounts:
        return self.ticker.counts

    def take_image(self, camera: int, msg, now_ns: int) -> None:
        self._note(conversions.take_image(self.inputs, camera, msg, now_ns, now_ns / NS_PER_S))

    def take_odometry(self, msg, now_ns: int) -> None:
        self._note(conversions.take_odometry(self.inputs, msg, now_ns, now_ns / NS_PER_S))

    def release(self, now_ns: int) -> list[Event]:
        """The running tick's outcome if its latency has passed by `now_ns`, then the waiting tick's start."""
        if self._running is None or self._running[1] > now_ns:
            return []
        outcome, _, compute_s = self._running
        self._running = None
        outcome, refused = self.ticker.finish(outcome, now_ns)
        self._note(refused)
        events: list[Event] = [Released(outcome, now_ns, compute_s)]
        if outcome.status is not Status.PUBLISHED:  # a published tick's report follows its outputs (the loop's)
            events.append(TickReport(outcome.tick, outcome.status, now_ns, outcome.reason, outcome.model_input.t0_ns))
        if self._waiting is not None:
            tick, self._waiting = self._waiting, None
            events += self._run_tick(tick, now_ns)
        return events

    def tick(self, now_ns: int) -> list[Event]:
        """The node's timer fired at `now_ns`."""
        events: list[Event] = []
        if self._waiting is not None:
            self.ticker.dropped()
            events.append(TickReport(self._waiting, Status.DROPPED_BUSY, now_ns,
                                     "model busy with an earlier tick; a newer tick took its place"))
            self._waiting = None
        if self._running is not None:
            self.ticker.observe_clock(now_ns)
            self._waiting = self.ticker.new_tick()
            return events
        return events + self._run_tick(self.ticker.new_tick(), now_ns)

    def _run_tick(self, tick: int, now_ns: int) -> list[Event]:
        tick, selected = self.ticker.select(now_ns, tick)
        if isinstance(selected, NotReady):
            return [TickReport(tick, Status.NOT_READY, now_ns, selected.reason)]
        self.ticker.submitted(tick, selected)
        started = time.perf_counter()
        outcome = self.ticker.run(tick, selected, self.inputs.epoch)
        compute_s = time.perf_counter() - started
        self.compute_s.append(compute_s)
        self._running = (outcome, now_ns + max(int(self.latency_ns(compute_s)), 0), compute_s)
        return [TickReport(tick, Status.SUBMITTED, now_ns, t0_ns=selected.t0_ns)]

    def _note(self, refused: Refused | None) -> None:
        if refused is not None:
            self.refused.append(refused.text)

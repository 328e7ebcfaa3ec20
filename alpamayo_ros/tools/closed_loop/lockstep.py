"""The lockstep autopilot: the node's tick engine in this process, on the loop's simulated clock.

Ticks fall on the node timer's grid (whole periods of 1 / rate_hz from the bag epoch, on the loop's
10 ms steps). Every output goes to the run's bag as the node publishes it: ~/output, ~/trajectory,
~/reasoning, ~/candidates, ~/tick, and the wall-clock ~/timings. Latency `fixed:MS` makes the run
deterministic; `measured` charges each run's wall time to simulated time (realistic: a slow model
drives late) and is not reproducible.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from alpamayo_ros import conversions
from alpamayo_ros.parameters import ImageTransport, NodeConfig, OutputFrame
from alpamayo_ros.pipeline.engine import build_model
from alpamayo_ros.pipeline.outcome import Status, TickCounts, TickReport
from alpamayo_ros.tools.make_sample_bag import START_NS
from alpamayo_ros.tools.world import World
from alpamayo_ros.units import NS_PER_S

from .engine import SimClockEngine
from .loop import Published, Trace, closing, simulate
from .record import RunBag


@dataclass(frozen=True)
class Latency:
    """How long a run occupies the model on simulated time: its measured wall time, or a fixed time."""

    fixed_ms: float | None = None  # None: measured

    @staticmethod
    def parse(text: str) -> Latency:
        """'measured' or 'fixed:MS' (MS >= 0)."""
        if text == "measured":
            return Latency()
        kind, _, value = text.partition(":")
        try:
            ms = float(value)
        except ValueError:
            ms = math.nan
        if kind != "fixed" or not (math.isfinite(ms) and ms >= 0.0):
            raise ValueError(f"--latency {text!r}: expected 'measured' or 'fixed:MS' with MS >= 0")
        return Latency(ms)

    @property
    def label(self) -> str:
        return ("measured (realistic: each tick's wall time is charged to simulated time; not reproducible)"
                if self.fixed_ms is None else f"fixed {self.fixed_ms:g} ms (deterministic)")

    def __call__(self, compute_s: float) -> int:
        seconds = compute_s if self.fixed_ms is None else self.fixed_ms / 1e3
        return round(seconds * NS_PER_S)


class LockstepAutopilot:
    """The node's tick engine fed the loop's messages, ticking on the node timer's grid, its outputs written to `bag`."""

    def __init__(self, cfg: NodeConfig, model, latency: Latency, start_ns: int, bag=None) -> None:
        self.cfg, self.bag = cfg, bag
        self.camera_topics = list(cfg.subscribed_camera_topics)
        self.engine = SimClockEngine(cfg, model, self.camera_topics, latency)
        self.period_ns = round(NS_PER_S / cfg.rate_hz)
        self.next_tick_ns = (start_ns // self.period_ns + 1) * self.period_ns  # the timer's first firing

    def begin_step(self, stamp_ns: int) -> None:
        pass  # the engine's clock is the time `advance` hands it

    def camera(self, camera: int, msg, stamp_ns: int) -> None:
        self.engine.take_image(camera, msg, stamp_ns)

    def odometry(self, msg, stamp_ns: int) -> None:
        self.engine.take_odometry(msg, stamp_ns)

    def advance(self, stamp_ns: int) -> list[Published]:
        tick_due = self.next_tick_ns <= stamp_ns  # a timer firing between steps ticks at the step (10 ms grid)
        while self.next_tick_ns <= stamp_ns:
            self.next_tick_ns += self.period_ns
        published = []
        for report in self.engine.step(stamp_ns, tick_due):
            if not isinstance(report, TickReport):
                continue  # a clock jump: simulated time only goes forward
            if report.status is Status.PUBLISHED:
                published.append(self._publish(report, stamp_ns))
            self._write("tick", conversions.tick_status(report.tick, report.status, stamp_ns, report.reason,
                                                        report.t0_ns), stamp_ns)
        return published

    def close(self) -> None:
        self.engine.close()

    def _publish(self, report: TickReport, stamp_ns: int) -> Published:
        in_odom = self.cfg.output_frame is OutputFrame.ODOM
        messages = conversions.output_messages(report.outcome, in_odom, self.camera_topics,
                                               self.cfg.selection.value, report.latency_ms)
        measured = messages.output.timings
        messages.output.timings = type(measured)(latency_ms=measured.latency_ms,
                                                 decode_tokens=measured.decode_tokens)  # wall times: ~/timings
        for name, msg in (("output", messages.output), ("trajectory", messages.trajectory),
                          ("reasoning", messages.reasoning), ("candidates", messages.candidates),
                          ("timings", measured)):
            self._write(name, msg, stamp_ns)
        return Published(messages.trajectory, stamp_ns, messages.reasoning.data, report.tick)

    def _write(self, name: str, msg, stamp_ns: int) -> None:
        if self.bag is not None:
            self.bag.write_output(name, msg, stamp_ns)


@dataclass(frozen=True)
class RunResult:
    """A finished run: its trace, the engine's tick counts, what model drove."""

    trace: Trace
    counts: TickCounts
    what: str
    compute_s: tuple[float, ...] = ()


def run_lockstep(world: World, cfg: NodeConfig, latency: Latency, bag_path: Path | None = None, model=None,
                 keep_frames: bool = True) -> RunResult:
    """One lockstep run of `world` (bag written to `bag_path` if given) with the configured (or given) model."""
    model, what = build_model(cfg.model_settings, model)
    compressed = cfg.image_transport is ImageTransport.COMPRESSED
    bag = None if bag_path is None else RunBag(bag_path, list(cfg.subscribed_camera_topics), compressed,
                                               cfg.odometry_topic)
    autopilot = LockstepAutopilot(cfg, model, latency, START_NS, bag)
    with closing(autopilot, bag):
        trace = simulate(world, autopilot, START_NS, compressed, bag, keep_frames=keep_frames)
    return RunResult(trace, autopilot.engine.counts, what, tuple(autopilot.engine.compute_s))

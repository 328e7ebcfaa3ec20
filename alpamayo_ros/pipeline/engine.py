"""The tick engine: the whole protocol of a tick, written once, ROS-free; the node, the lockstep replay and the tests
drive it through `tick`, `collect`, `pause` / `resume` and `status`.

    tick(now_ns)      a tick is due. The model busy: this tick waits (only one waits; a newer one takes an older
                      waiting one's place, which is dropped). Else select its input by stamps and start it on the
                      worker (or, without a worker, run it to completion at once: lockstep).
    collect(now_ns)   settle what the worker finished (withhold results of inputs reset, or of ticks that ran
                      while paused; forget undecodable frames; count), then start the waiting tick.
    pause() / resume()  ticking stops (lifecycle deactivate) / starts again.

Each returns `TickReport`s (one per state a tick reached, with its diagnostics `Level`) and `ClockJump`s; the
caller publishes them. `status()` is the inference and model state for diagnostics. Nobody else edits the counts.
"""

from __future__ import annotations

import collections
import queue
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from alpamayo_ros.model.action_space import UnicycleAccelCurvatureActionSpace
from alpamayo_ros.model.cameras import RELEASE_CAMERAS, camera_ids_of

from .inputs import Inputs
from .outcome import ClockJump, Level, Outcome, Status, TickCounts, TickReport
from .runner import Runner, model_inference
from .settings import TINY_RANDOM, ModelSettings, SamplingSettings, TickSettings
from .sync import ModelInput, NotReady
from .ticker import Infer, Ticker

LATENCY_WINDOW = 200  # latencies kept for percentiles
RELEASE_CAMERA_IDS = camera_ids_of(RELEASE_CAMERAS)  # (0, 1, 2, 6)


@dataclass(frozen=True, slots=True)
class EngineStatus:
    """Inference and model state for diagnostics since the previous `status()`."""

    level: Level
    message: str  # the last outcome, e.g. "published", "not ready: ...", "model error: ..."
    values: dict[str, str]  # counts, last not-ready reason, frames decoded/reused, latency percentiles
    model_error: str  # the last model error ("" if none)
    clock_jump: str  # the last clock jump since the previous status ("" if none)


Event = TickReport | ClockJump


class TickEngine:
    """Ticks over one `Inputs`. `worker=True` runs the model on a worker thread and calls `on_result` (from that
    thread) when a result waits to be `collect`ed; `worker=False` runs each tick to completion inside `tick`."""

    def __init__(self, inputs: Inputs, settings: TickSettings, infer: Infer,
                 action_space: UnicycleAccelCurvatureActionSpace, *, on_reset: Callable[[], None] | None = None,
                 worker: bool = False, on_result: Callable[[], None] | None = None) -> None:
        self.inputs = inputs
        self._ticker = Ticker(inputs, settings, infer, action_space, on_reset=on_reset)
        self._on_result = on_result
        self._results: queue.SimpleQueue[Outcome] = queue.SimpleQueue()
        self._runner = Runner(self._hand_over) if worker else None
        self._waiting: int | None = None  # a tick that found the model busy
        self._active = True
        self._latencies_ms: collections.deque[float] = collections.deque(maxlen=LATENCY_WINDOW)
        self._last = (Level.WARN, "starting")
        self._last_not_ready = self._last_error = self._clock_jump = ""
        self._last_route = ("-", "no tick selected an input yet")  # (text in the prompt, where it came from / why none)
        self._reported_drops = 0

    @property
    def counts(self) -> TickCounts:
        """Ticks by outcome (read only: the engine alone counts)."""
        return self._ticker.counts

    @property
    def busy(self) -> bool:
        return self._runner is not None and self._runner.busy

    # -- the protocol --------------------------------------------------------------------------------

    def tick(self, now_ns: int) -> list[Event]:
        """A tick is due at clock `now_ns`."""
        if not self._active:
            return []
        # A result the worker handed over before this tick is settled first: outcomes come out in the order the
        # ticks ran, and a tick submitted now never overtakes the report of the one before it.
        events: list[Event] = self._settle_handed_over(now_ns)
        if self._waiting is not None:  # waiting still (or freed an instant ago): this newer tick replaces it
            events.append(self._drop(self._waiting, "model busy with an earlier tick; a newer tick took its place"))
            self._waiting = None
        if self.busy:
            # The model is still on an earlier tick: this one waits and runs, with the inputs of that moment, as
            # soon as the model is free.
            self._ticker.observe_clock(now_ns)
            events += self._clock_events()
            self._waiting = self._ticker.new_tick()
            return events
        return events + self._start(self._ticker.new_tick(), now_ns)

    def collect(self, now_ns: int) -> list[Event]:
        """Settle the results the worker handed over, then start the waiting tick if the model is free."""
        events = self._settle_handed_over(now_ns)
        if self._waiting is not None and self._active and not self.busy:
            tick, self._waiting = self._waiting, None
            events += self._start(tick, now_ns)
        return events

    def pause(self) -> list[Event]:
        """Ticking stops (deactivate): the waiting tick is dropped; a result still running will be withheld."""
        self._active = False
        events: list[Event] = []
        if self._waiting is not None:
            events.append(self._drop(self._waiting, "the node stopped ticking"))
            self._waiting = None
        self._ticker.forget_clock()
        return events

    def resume(self) -> None:
        """Ticking starts again (activate)."""
        self._active = True

    def output_failed(self, report: TickReport, error: str) -> TickReport:
        """Publishing `report`'s outputs raised (`error`: the traceback): the tick counts as a model error."""
        self.counts.published -= 1
        self.counts.model_errors += 1
        reason = f"output handling failed: {error.strip().splitlines()[-1]}"
        outcome = Outcome(report.tick, Status.MODEL_ERROR, report.outcome.model_input, reason=reason, error=error)
        self._last_error = reason
        self._last = (Level.ERROR, f"model error: {reason}")
        return TickReport(report.tick, Status.MODEL_ERROR, reason, report.t0_ns, outcome)

    def close(self) -> None:
        """Finish the running tick and end the worker (idempotent)."""
        if self._runner is not None:
            self._runner.stop()
        self._runner = None
        self._active = False

    def status(self) -> EngineStatus:
        """Inference and model state for diagnostics; drops and clock jumps are reported once."""
        counts = self.counts
        lat = np.percentile(self._latencies_ms, [50, 90]) if self._latencies_ms else None
        failed_jobs = self._runner.failed if self._runner is not None else 0
        values = {"ticks": counts.ticks, "published": counts.published, "not_ready": sum(counts.not_ready.values()),
                  "dropped_busy": counts.dropped, "model_errors": counts.model_errors + failed_jobs,
                  "rejected_outputs": counts.rejected, "last_not_ready": self._last_not_ready or "-",
                  "frames_decoded": self._ticker.decoder.decoded, "frames_reused": self._ticker.decoder.reused,
                  "latency_ms_p50": "-" if lat is None else f"{lat[0]:.0f}",
                  "latency_ms_p90": "-" if lat is None else f"{lat[1]:.0f}",
                  "latency_ms_max": "-" if lat is None else f"{max(self._latencies_ms):.0f}"}
        if self.inputs.route is not None:  # Alpamayo 1.5 navigation: the last input's route and its source
            values["route"], values["route_source"] = self._last_route
        level, message = self._last
        new_drops = counts.dropped - self._reported_drops
        if new_drops:
            level = max(level, Level.WARN)
            message += f"; {new_drops} tick(s) dropped: the model is slower than rate_hz"
            self._reported_drops = counts.dropped
        jump, self._clock_jump = self._clock_jump, ""
        return EngineStatus(level, message, {k: str(v) for k, v in values.items()}, self._last_error, jump)

    # -- steps ---------------------------------------------------------------------------------------

    def _settle_handed_over(self, now_ns: int) -> list[Event]:
        events: list[Event] = []
        while True:
            try:
                outcome = self._results.get_nowait()
            except queue.Empty:
                return events
            events.append(self._settle(outcome, now_ns))

    def _start(self, tick: int, now_ns: int) -> list[Event]:
        tick, selected = self._ticker.select(now_ns, tick)
        events: list[Event] = self._clock_events()
        if isinstance(selected, NotReady):
            self._last_not_ready = selected.reason
            self._last = (Level.WARN, f"not ready: {selected.reason}")
            return [*events, TickReport(tick, Status.NOT_READY, selected.reason)]
        epoch = self.inputs.epoch
        self._last_route = (selected.route or "-", selected.route_note)
        if self._runner is None:  # lockstep: run to completion now
            self._ticker.submitted(tick, selected)
            submitted = TickReport(tick, Status.SUBMITTED, t0_ns=selected.t0_ns)
            return [*events, submitted, self._settle(self._ticker.run(tick, selected, epoch), now_ns)]
        if not self._runner.submit(lambda: self._ticker.run(tick, selected, epoch)):
            return [*events, self._drop(tick, "model busy with an earlier tick", selected)]  # only this thread submits
        self._ticker.submitted(tick, selected)
        return [*events, TickReport(tick, Status.SUBMITTED, t0_ns=selected.t0_ns)]

    def _settle(self, outcome: Outcome, now_ns: int) -> TickReport:
        if outcome.status is Status.PUBLISHED and not self._active:
            outcome = Outcome(outcome.tick, Status.REJECTED, outcome.model_input, outcome.prediction,
                              reason="the node stopped ticking (deactivated) while the model ran", epoch=outcome.epoch)
        outcome, refused = self._ticker.finish(outcome, now_ns)
        t0_ns = outcome.model_input.t0_ns
        if outcome.status is Status.PUBLISHED:
            latency_ms = (now_ns - t0_ns) / 1e6
            self._latencies_ms.append(latency_ms)
            self._last = (Level.OK, "published")
            return TickReport(outcome.tick, Status.PUBLISHED, t0_ns=t0_ns, outcome=outcome, latency_ms=latency_ms)
        if outcome.status is Status.MODEL_ERROR:
            self._last_error = outcome.reason
            self._last = (Level.ERROR, f"model error: {outcome.reason}")
        elif outcome.bad_frame is not None:
            self._last = (Level.WARN, f"input rejected: {outcome.reason}")
        else:
            self._last = (Level.WARN, f"output withheld: {outcome.reason}")
        return TickReport(outcome.tick, outcome.status, outcome.reason, t0_ns, outcome, refused=refused)

    def _drop(self, tick: int, reason: str, selected: ModelInput | None = None) -> TickReport:
        self._ticker.dropped()
        return TickReport(tick, Status.DROPPED_BUSY, reason, selected.t0_ns if selected is not None else 0)

    def _clock_events(self) -> list[Event]:
        jump, self._ticker.last_clock_jump = self._ticker.last_clock_jump, ""
        if not jump:
            return []
        self._clock_jump = jump
        return [ClockJump(jump)]

    def _hand_over(self, outcome: Outcome) -> None:  # the worker thread
        self._results.put(outcome)
        if self._on_result is not None:
            self._on_result()


def build_model(settings: ModelSettings, model=None):
    """The model to run: `model` if given (tests), else the checkpoint at `model_path`: empty is the embedded
    driver and TINY_RANDOM the tiny random model (both on the CPU in float32, whatever `device` says), with the
    preprocessing and compile options applied. Returns (model, what was loaded in words)."""
    import torch

    from alpamayo_ros.model.loading import EMBEDDED_DRIVER_DIR, from_pretrained, tiny

    torch.set_num_threads(settings.torch_threads)  # process-wide: the node's (and replay's) only torch user
    if model is not None:
        what = "an injected model"
    elif settings.model_path == TINY_RANDOM:
        model, what = tiny(seed=settings.seed), "the TINY RANDOM model (its trajectories and reasoning are noise)"
    elif not settings.model_path:
        model = from_pretrained(EMBEDDED_DRIVER_DIR)
        what = "the embedded driver (a small AlpamayoR1 trained on the synthetic world; never drive a car with it)"
    else:
        model = from_pretrained(settings.model_path, base_model_dir=settings.base_model_dir or None,
                                device=settings.device, dtype=settings.dtype)
        what = f"{'Alpamayo 1.5' if model.is_1_5 else 'AlpamayoR1'} from {settings.model_path}"
    model.set_image_preprocessing(settings.image_preprocessing)
    if settings.compile_flow != "off":
        model.compile_flow(settings.compile_flow)
    return model, what


def model_engine(inputs: Inputs, model, settings: TickSettings, sampling: SamplingSettings, **kwargs) -> TickEngine:
    """A `TickEngine` running `model` (its inference, action space and vision-cache reset)."""
    if inputs.route is not None and not model.is_1_5:
        raise ValueError("route_topic / route_path_topic need an Alpamayo 1.5 checkpoint (model_type alpamayo1_5); "
                         "the loaded model is AlpamayoR1, trained without navigation text")
    check_cameras(len(inputs.cameras), sampling.camera_ids, model.is_1_5)
    return TickEngine(inputs, settings, model_inference(model, sampling), model.action_space,
                      on_reset=model.clear_vision_cache, **kwargs)


def check_cameras(cameras: int, camera_ids: tuple[int, ...] | None, is_1_5: bool) -> None:
    """Raise unless the model takes this camera set: `cameras` buffers, named by NVIDIA `camera_ids` (None: unnamed).

    AlpamayoR1 takes the release's four cameras only: its prompt is 16 unlabelled images, camera-major in the
    order (0, 1, 2, 6) (reference/alpamayo_r1.md 4.4-4.5), so nothing tells it which camera an image is, and
    fewer or other cameras (or blank stand-ins) would be a prompt it never saw. Alpamayo 1.5 labels each camera.
    """
    if not is_1_5 and (cameras != len(RELEASE_CAMERA_IDS) or camera_ids not in (None, RELEASE_CAMERA_IDS)):
        ids = "" if camera_ids is None else f", camera ids {list(camera_ids)}"
        raise ValueError(f"the loaded model is AlpamayoR1, which takes the release's four cameras "
                         f"{list(RELEASE_CAMERAS)} (its prompt does not say which camera an image is); got {cameras} "
                         f"camera topic(s){ids}: 1 or 2 cameras, or other cameras, need an Alpamayo 1.5 checkpoint")
    named = len(RELEASE_CAMERA_IDS) if camera_ids is None else len(camera_ids)  # unnamed: the release's four
    if named != cameras:
        raise ValueError(f"{cameras} camera topic(s) for {named} cameras (camera ids {camera_ids})")

"""One inference tick, ROS-free: select inputs -> input checks -> decode -> model -> output checks -> outcome.

The tick engine (`engine.TickEngine`, which the node, the lockstep replay and the tests drive) runs these steps:

    select(now_ns)        caller's thread   stamps only: which t0, frames and history poses, or NotReady
    run(tick, input)      worker thread     decode the input's frames, run the model, check every sample
    finish(outcome)       caller's thread   withhold results of reset inputs, forget undecodable frames, count

`run` touches nothing `select` and `finish` use except the frame decoder, which only it uses, so the
engine may run it on its worker thread while the node's executor keeps buffering messages.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import traceback
from collections.abc import Callable, Sequence

import numpy as np

from alpamayo_ros.model.action_space import UnicycleAccelCurvatureActionSpace
from alpamayo_ros.model.alpamayo_r1 import Prediction
from alpamayo_ros.units import NS_PER_S

from .frames import FrameDecodeError, FrameDecoder
from .inputs import Inputs, Refused
from .outcome import Outcome, Status, TickCounts
from .outputs import sample_problems, select_sample
from .settings import TickSettings
from .sync import Missing, ModelInput, NotReady, input_problems, select_inputs

logger = logging.getLogger(__name__)

CLOCK_JUMP_FORWARD_S = 5.0  # a tick this much later than the previous one (and > 3 periods) means a jump


Infer = Callable[[int, ModelInput, Sequence[np.ndarray]], Prediction]  # (tick, input, its images: 4 per camera)


class Ticker:
    """Ticks over one `Inputs`; `infer` runs the model on decoded images."""

    def __init__(self, inputs: Inputs, settings: TickSettings, infer: Infer,
                 action_space: UnicycleAccelCurvatureActionSpace, on_reset: Callable[[], None] | None = None) -> None:
        self.inputs, self.settings, self.infer, self.action_space = inputs, settings, infer, action_space
        self.on_reset = on_reset  # clears what else depends on the inputs (the model's vision cache)
        self.decoder = FrameDecoder()
        self._run_epoch = inputs.epoch  # the input epoch the decoder's and the model's caches belong to
        self.counts = TickCounts()
        self.tick = 0
        self.last_clock_jump = ""
        self._last_now_ns: int | None = None
        self._last_t0_ns = -1
        self._t0_before: dict[int, int] = {}  # tick -> the newest t0 run before it (for a tick that never ran)

    def new_tick(self) -> int:
        """Number (and count) a tick; `select` does this itself unless given one made earlier."""
        self.tick += 1
        self.counts.ticks += 1
        return self.tick

    def select(self, now_ns: int, tick: int | None = None) -> tuple[int, ModelInput | NotReady]:
        """Tick `tick` (a new one if None) at clock `now_ns`: the input it would run, or why there is none."""
        tick = self.new_tick() if tick is None else tick
        selected = self._clock_check(now_ns)
        if selected is None:
            selected = select_inputs(self.inputs.cameras, self.inputs.poses, now_ns, self.inputs.sync)
        if isinstance(selected, ModelInput) and selected.t0_ns <= self._last_t0_ns:
            selected = NotReady(Missing.NO_NEW_FRAME,
                                f"no camera frames newer than the last input (t0 {selected.t0_ns / 1e9:.3f} s)")
        if isinstance(selected, ModelInput):
            problems = input_problems(selected, self.settings.input_limits)
            if problems:
                selected = NotReady(Missing.INPUT_REJECTED, "input rejected: " + "; ".join(problems))
            elif self.inputs.route is not None:  # the route at t0: text, or the next turn along the path
                choice = self.inputs.route.choose(now_ns, selected.odom_frame, selected.t0_position[:2])
                selected = dataclasses.replace(selected, route=choice.text, route_note=choice.note)
        if isinstance(selected, NotReady):
            self.counts.not_ready[selected.kind] += 1
        return tick, selected

    def submitted(self, tick: int, model_input: ModelInput) -> None:
        """Tick `tick`'s input went to the model: later ticks need newer frames."""
        self._t0_before[tick] = self._last_t0_ns
        self._last_t0_ns = model_input.t0_ns

    def dropped(self) -> None:
        """The current tick's input found the model busy."""
        self.counts.dropped += 1

    def run(self, tick: int, model_input: ModelInput, epoch: int) -> Outcome:
        """Decode, infer and check (the worker's part). Never raises: failures become outcomes.

        `epoch` is `inputs.epoch` when the input was selected; after a reset the caches keyed by
        (camera, stamp) are cleared here, on the thread that uses them.
        """
        try:
            if epoch != self._run_epoch:
                self.decoder.clear()
                if self.on_reset is not None:
                    self.on_reset()
                self._run_epoch = epoch
            images = self.decoder.decode(model_input.frames, model_input.frame_cameras)
        except FrameDecodeError as exc:
            name = self.inputs.cameras[exc.camera].name
            text = (f"camera {name}: {self.inputs.camera_topics[exc.camera]}: frame {exc.stamp_ns / 1e9:.3f} s: "
                    f"{exc}; frame dropped")
            return Outcome(tick, Status.REJECTED, model_input, reason=text, bad_frame=(exc.camera, exc.stamp_ns, text),
                           epoch=epoch)
        except Exception:  # a bug before the model: still an outcome, never a silent stall
            error = traceback.format_exc()
            return Outcome(tick, Status.MODEL_ERROR, model_input, reason=error.strip().splitlines()[-1], error=error,
                           epoch=epoch)
        try:
            prediction = self.infer(tick, model_input, images)
            problems = sample_problems(prediction, self.action_space, model_input.ego_history_xyz,
                                       model_input.ego_history_rot, self.settings.output_limits)
        except Exception:  # a model failure is reported; the next tick runs
            error = traceback.format_exc()
            return Outcome(tick, Status.MODEL_ERROR, model_input, reason=error.strip().splitlines()[-1], error=error,
                           epoch=epoch)
        valid = tuple(i for i, reasons in enumerate(problems) if not reasons)
        if not valid:
            return Outcome(tick, Status.REJECTED, model_input, prediction,
                           reason="every sample failed the output checks: " + "; ".join(problems[0]), epoch=epoch)
        selected = select_sample(prediction.xyz.numpy(), list(valid), self.settings.selection)
        return Outcome(tick, Status.PUBLISHED, model_input, prediction, valid, selected, epoch=epoch)

    def finish(self, outcome: Outcome, now_ns: int) -> tuple[Outcome, Refused | None]:
        """Settle a run's outcome on the caller's thread; returns it (possibly withheld) and any refused frame."""
        refused = None
        t0_before = self._t0_before.pop(outcome.tick, None)
        if outcome.bad_frame is not None:
            camera, stamp_ns, text = outcome.bad_frame
            refused = self.inputs.forget_frame(camera, stamp_ns, text, time.monotonic())
            if t0_before is not None and self._last_t0_ns == outcome.model_input.t0_ns:
                self._last_t0_ns = t0_before  # this input never ran: an older one not yet run may stand in
        if outcome.status is Status.PUBLISHED and (outcome.epoch != self.inputs.epoch
                                                   or outcome.model_input.t0_ns > now_ns):
            outcome = Outcome(outcome.tick, Status.REJECTED, outcome.model_input, outcome.prediction,
                              reason="the inputs were reset while the model ran", epoch=outcome.epoch)
        if outcome.status is Status.PUBLISHED:
            self.counts.published += 1
        elif outcome.status is Status.REJECTED:
            self.counts.rejected += 1
        else:
            self.counts.model_errors += 1
        return outcome, refused

    def observe_clock(self, now_ns: int) -> None:
        """See the clock at a tick that does not select (the model is busy): jumps are judged tick to tick."""
        self._clock_check(now_ns)

    def forget_clock(self) -> None:
        """Ticking stopped (lifecycle deactivate): the next tick starts a new comparison."""
        self._last_now_ns = None

    def _clock_check(self, now_ns: int) -> NotReady | None:
        """Notice clock jumps; a jump back clears every input (and, at the next run, the caches)."""
        last, self._last_now_ns = self._last_now_ns, now_ns
        if last is None:
            return None
        if now_ns < last:
            self.inputs.reset()
            self._last_t0_ns = -1
            self.last_clock_jump = f"clock jumped back {(last - now_ns) / 1e9:.1f} s: input buffers cleared"
            return NotReady(Missing.CLOCK_JUMP, self.last_clock_jump)
        if now_ns - last > max(CLOCK_JUMP_FORWARD_S, 3.0 / self.settings.rate_hz) * NS_PER_S:
            # Jumped ahead (a bag skipped, sim time resumed): buffered data is now stale and ages out.
            self.last_clock_jump = f"clock jumped forward {(now_ns - last) / 1e9:.1f} s"
        return None

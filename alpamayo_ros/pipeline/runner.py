"""The model on one worker thread: submit returns at once, a busy worker drops the tick.

Results (or the exception's traceback) come back through a callback on the worker thread, carrying
the tick id, the input's t0 and the stage timings; the caller hands them to its own thread.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass

from alpamayo_ros.model.alpamayo_r1 import AlpamayoR1, Prediction

from .sync import ModelInput

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SamplingSettings:
    """How each tick samples the model."""

    num_samples: int = 1
    diffusion_steps: int = 10
    max_reasoning_tokens: int = 256
    temperature: float = 0.6  # 0 = greedy reasoning
    top_p: float = 0.98
    seed: int = 0  # tick k uses seed + k: reproducible under replay, different across ticks
    reasoning: str = "per_sample"  # or "shared": one reasoning for all samples


@dataclass(frozen=True, slots=True)
class RunResult:
    """The outcome of one submitted tick: a prediction or an error traceback."""

    tick: int
    model_input: ModelInput
    prediction: Prediction | None
    error: str | None  # formatted traceback when the model raised
    started_ns: int  # monotonic clock
    finished_ns: int


def model_inference(model: AlpamayoR1, settings: SamplingSettings) -> Callable[[int, ModelInput], Prediction]:
    """The per-tick call the runner makes."""

    def infer(tick: int, model_input: ModelInput) -> Prediction:
        greedy = settings.temperature == 0
        # (camera, stamp) identifies a frame: frames shared with earlier ticks reuse their vision encoding.
        keys = [(camera, int(stamp)) for camera, stamps in enumerate(model_input.frame_stamps_ns) for stamp in stamps]
        return model.sample(list(model_input.images), model_input.ego_history_xyz, model_input.ego_history_rot,
                            image_keys=keys, num_samples=settings.num_samples, diffusion_steps=settings.diffusion_steps,
                            max_reasoning_tokens=settings.max_reasoning_tokens,
                            temperature=settings.temperature if not greedy else 1.0, top_p=settings.top_p,
                            greedy=greedy, seed=settings.seed + tick, reasoning=settings.reasoning)

    return infer


class Runner:
    """Runs `infer(tick, model_input)` on one worker thread, one tick at a time."""

    def __init__(self, infer: Callable[[int, ModelInput], Prediction], on_result: Callable[[RunResult], None]) -> None:
        self._infer = infer
        self._on_result = on_result
        self._wake = threading.Condition()
        self._pending: tuple[int, ModelInput] | None = None
        self._busy = False
        self._stopping = False
        self.submitted = 0
        self.dropped = 0
        self.failed = 0
        self._thread = threading.Thread(target=self._work, name="alpamayo-runner")
        self._thread.start()

    @property
    def busy(self) -> bool:
        with self._wake:
            return self._busy

    def submit(self, tick: int, model_input: ModelInput) -> bool:
        """Queue the tick if the worker is idle; otherwise drop it (counted) and return False."""
        with self._wake:
            if self._stopping:
                raise RuntimeError("runner is stopped")
            if self._busy:
                self.dropped += 1
                return False
            self._busy = True
            self._pending = (tick, model_input)
            self.submitted += 1
            self._wake.notify()
            return True

    def stop(self, timeout_s: float | None = None) -> None:
        """Finish the running tick, then end and join the worker."""
        with self._wake:
            self._stopping = True
            self._wake.notify()
        self._thread.join(timeout_s)

    def _work(self) -> None:
        while True:
            with self._wake:
                while self._pending is None and not self._stopping:
                    self._wake.wait()
                if self._pending is None:
                    return
                tick, model_input = self._pending
                self._pending = None
            started = time.monotonic_ns()
            prediction, error = None, None
            try:
                prediction = self._infer(tick, model_input)
            except Exception:  # a model failure is reported; the next tick runs
                error = traceback.format_exc()
                with self._wake:
                    self.failed += 1
            result = RunResult(tick=tick, model_input=model_input, prediction=prediction, error=error,
                               started_ns=started, finished_ns=time.monotonic_ns())
            with self._wake:
                self._busy = False  # before handing the result over: the next tick may start at once
            try:
                self._on_result(result)
            except Exception:
                logger.error("result callback failed:\n%s", traceback.format_exc())

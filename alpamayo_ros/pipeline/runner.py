"""The model on one worker thread: submit returns at once, a busy worker drops the tick.

A job (a tick's `Ticker.run`) runs on the worker; its result comes back through a callback on the
worker thread, and the tick engine hands it to its caller's thread. `model_inference` is the model call a tick makes.
"""

from __future__ import annotations

import logging
import threading
import traceback
from collections.abc import Callable, Sequence
from typing import TypeVar

import numpy as np

from alpamayo_ros.model.alpamayo_r1 import AlpamayoR1, Prediction

from .settings import SamplingSettings
from .sync import ModelInput

logger = logging.getLogger(__name__)
Result = TypeVar("Result")


def sampling_arguments(settings: SamplingSettings, tick: int) -> dict:
    """`AlpamayoR1.sample`'s sampling arguments for tick `tick` (its seed is `seed + tick`): what a call outside
    the node passes to reproduce the node's sampling on the same inputs (bench/bench_driver.py)."""
    greedy = settings.temperature == 0
    return dict(num_samples=settings.num_samples, diffusion_steps=settings.diffusion_steps,
                max_reasoning_tokens=settings.max_reasoning_tokens,
                temperature=settings.temperature if not greedy else 1.0, top_p=settings.top_p,
                greedy=greedy, seed=settings.seed + tick, reasoning=settings.reasoning,
                noise_temperature=settings.noise_temperature)


def model_inference(model: AlpamayoR1,
                    settings: SamplingSettings) -> Callable[[int, ModelInput, Sequence[np.ndarray]], Prediction]:
    """The model call of tick `tick` on its decoded images."""

    def infer(tick: int, model_input: ModelInput, images: Sequence[np.ndarray]) -> Prediction:
        # (camera, stamp) identifies a frame: frames shared with earlier ticks reuse their vision encoding.
        keys = [(camera, int(stamp)) for camera, stamps in enumerate(model_input.frame_stamps_ns) for stamp in stamps]
        release_1_5 = {}
        if model.is_1_5:  # labelled cameras; the route and its guidance when the tick has a route
            route = model_input.route
            release_1_5 = dict(camera_ids=settings.camera_ids, route=route,
                               nav_guidance_weight=settings.nav_guidance_weight if route is not None else 1.0)
        return model.sample(list(images), model_input.ego_history_xyz, model_input.ego_history_rot,
                            image_keys=keys, **sampling_arguments(settings, tick), **release_1_5)

    return infer


class Runner:
    """Runs one job at a time on its worker thread; a job submitted while one runs is refused (dropped)."""

    def __init__(self, on_result: Callable[[Result], None]) -> None:
        self._on_result = on_result
        self._wake = threading.Condition()
        self._pending: Callable[[], Result] | None = None
        self._busy = False
        self._stopping = False
        self.submitted = 0
        self.dropped = 0
        self.failed = 0  # jobs that raised (a bug: ticks turn failures into outcomes)
        self._thread = threading.Thread(target=self._work, name="alpamayo-runner")
        self._thread.start()

    @property
    def busy(self) -> bool:
        with self._wake:
            return self._busy

    def submit(self, job: Callable[[], Result]) -> bool:
        """Start `job` if the worker is idle; otherwise drop it (counted) and return False."""
        with self._wake:
            if self._stopping:
                raise RuntimeError("runner is stopped")
            if self._busy:
                self.dropped += 1
                return False
            self._busy = True
            self._pending = job
            self.submitted += 1
            self._wake.notify()
            return True

    def stop(self, timeout_s: float | None = None) -> None:
        """Finish the running job, then end and join the worker."""
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
                job, self._pending = self._pending, None
            try:
                result = job()
            except Exception:
                logger.error("runner job failed:\n%s", traceback.format_exc())
                with self._wake:
                    self.failed += 1
                    self._busy = False
                continue
            with self._wake:
                self._busy = False  # before handing the result over: the next job may start at once
            try:
                self._on_result(result)
            except Exception:
                logger.error("result callback failed:\n%s", traceback.format_exc())

"""Ticks with navigation: the route at t0 reaches the 1.5 model's prompt, the outcome and diagnostics."""

import numpy as np
import pytest
from test_ticker import MS, TOPICS, fill

from alpamayo_ros.pipeline.engine import model_engine
from alpamayo_ros.pipeline.inputs import Inputs
from alpamayo_ros.pipeline.outcome import Status, TickReport
from alpamayo_ros.pipeline.route import RouteInput, next_manoeuvre
from alpamayo_ros.pipeline.settings import SamplingSettings, TickSettings
from alpamayo_ros.pipeline.sync import SyncConfig

MAX_ROUTE_AGE_NS = 3_000 * MS


@pytest.fixture(scope="module")
def model15(conformance_dir):
    from alpamayo_ros.model.loading import from_pretrained

    return from_pretrained(conformance_dir / "alpamayo1_5" / "checkpoint", dtype="float32")


def left_turn_path(turn_at_m: float) -> np.ndarray:
    xs = np.arange(0.0, turn_at_m, 1.0)
    angles = np.radians(np.arange(0.0, 91.0, 3.0))
    arc = np.stack([turn_at_m + 10 * np.sin(angles), 10 * (1 - np.cos(angles))], 1)
    return np.concatenate([np.stack([xs, np.zeros_like(xs)], 1), arc, arc[-1] + [[0.0, 5.0], [0.0, 10.0]]])


def published(events) -> list:
    return [e for e in events if isinstance(e, TickReport) and e.status is Status.PUBLISHED]


def test_the_next_turn_at_t0_goes_into_the_prompt_and_diagnostics(model15, monkeypatch):
    inputs = Inputs(TOPICS, "/odom", SyncConfig(), RouteInput(MAX_ROUTE_AGE_NS))
    sampling = SamplingSettings(max_reasoning_tokens=2, diffusion_steps=1, camera_ids=(0, 1, 2, 6),
                                nav_guidance_weight=1.5)
    engine = model_engine(inputs, model15, TickSettings(rate_hz=2.0), sampling)
    calls = []
    sample = model15.sample
    monkeypatch.setattr(model15, "sample", lambda *args, **kwargs: calls.append(kwargs) or sample(*args, **kwargs))
    path = left_turn_path(60.0)
    inputs.route.set_path(path, "odom", received_ns=0)
    fill(inputs, 0, 2_000)
    (report,) = published(engine.tick(2_000 * MS))
    model_input = report.outcome.model_input
    expected = next_manoeuvre(path, model_input.t0_position[:2]).text
    assert expected.startswith("Turn left in") and model_input.route == expected
    assert calls[-1]["route"] == expected and calls[-1]["camera_ids"] == (0, 1, 2, 6)
    assert calls[-1]["nav_guidance_weight"] == 1.5 and report.outcome.prediction.timings.unguided_ms > 0
    values = engine.status().values
    assert values["route"] == expected and values["route_source"].startswith("route_path_topic")
    # Too old: the plain prompt, and diagnostics say why.
    fill(inputs, 2_020, 4_000)
    (report,) = published(engine.tick(4_000 * MS))
    assert report.outcome.model_input.route is None and calls[-1]["route"] is None
    assert calls[-1]["nav_guidance_weight"] == 1.0  # no guidance without a route
    assert "route path 4.0 s old" in engine.status().values["route_source"]

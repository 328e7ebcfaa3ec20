"""The ROS-free tick over the tiny model: select -> run -> finish, and every way a tick can end."""

import io

import numpy as np
import pytest
from PIL import Image as PILImage
from scipy.spatial.transform import Rotation

from alpamayo_ros.pipeline.frames import CameraFrame, compressed_image, rgb_frame
from alpamayo_ros.pipeline.inputs import Inputs
from alpamayo_ros.pipeline.pose_history import PoseSample
from alpamayo_ros.pipeline.runner import SamplingSettings, model_inference
from alpamayo_ros.pipeline.sync import Missing, ModelInput, NotReady, SyncConfig
from alpamayo_ros.pipeline.ticker import Status, Ticker, TickSettings
from alpamayo_ros.tools.synthetic import road_images

MS = 1_000_000
SPEED_MPS = 8.0
TOPICS = ["/c0", "/c1", "/c2", "/c3"]


def fill(inputs: Inputs, start_ms: int, end_ms: int, broken: tuple[int, int] | None = None) -> None:
    """A straight drive at 8 m/s: the inputs' cameras (camera k shows `road_images()[k]`) at 10 Hz, odometry at
    50 Hz, in arrival order."""
    images = road_images()
    for t_ms in range(start_ms, end_ms + 1, 20):
        inputs.add_pose(PoseSample(stamp_ns=t_ms * MS, position=np.array([SPEED_MPS * t_ms / 1e3, 0.0, 0.0]),
                                   orientation=Rotation.identity().as_quat(), speed_mps=SPEED_MPS), t_ms * MS, t_ms / 1e3)
        if t_ms % 100 == 0:
            for camera in range(len(inputs.cameras)):
                frame = rgb_frame(t_ms * MS, images[camera, 0])
                if broken == (camera, t_ms):
                    frame = CameraFrame(t_ms * MS, broken_jpeg(images[camera, 0]))
                inputs.add_frame(camera, frame, t_ms * MS, t_ms / 1e3)


def broken_jpeg(pixels: np.ndarray):
    buffer = io.BytesIO()
    noisy = np.random.default_rng(0).integers(0, 256, pixels.shape, dtype=np.uint8)
    PILImage.fromarray(noisy).save(buffer, format="JPEG")
    return compressed_image("jpeg", buffer.getvalue()[:len(buffer.getvalue()) // 2])


@pytest.fixture
def ticker(tiny_model):
    inputs = Inputs(TOPICS, "/odom", SyncConfig())
    resets = []
    infer = model_inference(tiny_model, SamplingSettings(num_samples=2, max_reasoning_tokens=4))
    ticker = Ticker(inputs, TickSettings(rate_hz=2.0), infer, tiny_model.action_space, on_reset=lambda: resets.append(1))
    ticker.resets = resets
    return ticker


def run_tick(ticker: Ticker, now_ns: int):
    tick, selected = ticker.select(now_ns)
    if isinstance(selected, NotReady):
        return selected
    ticker.submitted(tick, selected)
    outcome, refused = ticker.finish(ticker.run(tick, selected, ticker.inputs.epoch), now_ns)
    return outcome


def test_a_complete_input_is_published_with_its_t0_and_checked_samples(ticker):
    fill(ticker.inputs, 0, 2_000)
    outcome = run_tick(ticker, 2_000 * MS)
    assert outcome.status is Status.PUBLISHED, outcome.reason
    assert outcome.model_input.t0_ns == 2_000 * MS and outcome.prediction.xyz.shape[0] == 2
    assert outcome.selected in outcome.valid
    assert ticker.counts.published == 1 and ticker.decoder.decoded == 16


def test_short_history_is_not_ready_and_grouped_by_kind(ticker):
    fill(ticker.inputs, 0, 1_000)
    result = run_tick(ticker, 1_000 * MS)
    assert isinstance(result, NotReady) and result.kind is Missing.ODOMETRY
    assert "odometry covers" in result.reason
    assert "1 not ready (odometry does not cover the history: 1)" in ticker.counts.summary()


def test_the_same_input_is_not_run_twice(ticker):
    fill(ticker.inputs, 0, 2_000)
    run_tick(ticker, 2_000 * MS)
    again = run_tick(ticker, 2_100 * MS)
    assert isinstance(again, NotReady) and again.kind is Missing.NO_NEW_FRAME


def test_an_undecodable_selected_frame_rejects_the_tick_and_is_forgotten(ticker):
    fill(ticker.inputs, 0, 2_000, broken=(2, 2_000))
    outcome = run_tick(ticker, 2_000 * MS)
    assert outcome.status is Status.REJECTED and outcome.prediction is None
    assert outcome.reason.startswith("camera cross_right: /c2: frame 2.000 s: data is undecodable")
    assert 2_000 * MS not in ticker.inputs.cameras[2].stamps_ns()
    assert ticker.inputs.monitors["/c2"].invalid == 1
    retry = run_tick(ticker, 2_000 * MS)  # the next tick falls back to the newest complete input
    assert isinstance(retry.model_input, ModelInput) and retry.model_input.t0_ns == 1_900 * MS
    assert retry.status is Status.PUBLISHED
    again = run_tick(ticker, 2_050 * MS)  # ...which is not run twice
    assert isinstance(again, NotReady) and again.kind is Missing.NO_NEW_FRAME


def test_clock_jump_back_clears_inputs_then_the_caches_on_the_next_run(ticker):
    fill(ticker.inputs, 10_000, 12_000)
    assert run_tick(ticker, 12_000 * MS).status is Status.PUBLISHED
    jumped = run_tick(ticker, 2_000 * MS)
    assert isinstance(jumped, NotReady) and jumped.kind is Missing.CLOCK_JUMP
    assert len(ticker.inputs.poses) == 0 and ticker.resets == []  # the caches belong to the worker's thread
    fill(ticker.inputs, 0, 2_000)
    assert run_tick(ticker, 2_000 * MS).status is Status.PUBLISHED
    assert ticker.resets == [1]


def test_result_of_inputs_reset_while_the_model_ran_is_withheld(ticker):
    fill(ticker.inputs, 0, 2_000)
    tick, selected = ticker.select(2_000 * MS)
    outcome = ticker.run(tick, selected, ticker.inputs.epoch)
    ticker.inputs.reset()  # e.g. the odometry source restarted meanwhile
    final, _ = ticker.finish(outcome, 2_000 * MS)
    assert final.status is Status.REJECTED and "reset while the model ran" in final.reason


def test_model_exception_becomes_a_model_error_outcome(tiny_model):
    def failing(tick, model_input, images):
        raise RuntimeError("CUDA out of memory")

    inputs = Inputs(TOPICS, "/odom", SyncConfig())
    ticker = Ticker(inputs, TickSettings(rate_hz=2.0), failing, tiny_model.action_space)
    fill(inputs, 0, 2_000)
    outcome = run_tick(ticker, 2_000 * MS)
    assert outcome.status is Status.MODEL_ERROR and outcome.reason == "RuntimeError: CUDA out of memory"
    assert "Traceback" in outcome.error and ticker.counts.model_errors == 1


def test_ticks_skipped_while_the_model_is_busy_do_not_look_like_a_clock_jump(ticker):
    fill(ticker.inputs, 0, 2_000)
    ticker.select(2_000 * MS)
    for busy_ms in range(2_500, 9_000, 500):  # the model took 7 s; the timer kept firing
        ticker.observe_clock(busy_ms * MS)
    ticker.select(9_000 * MS)
    assert ticker.last_clock_jump == ""

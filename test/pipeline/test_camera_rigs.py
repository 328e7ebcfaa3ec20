"""Rigs of 1 and 2 cameras (Alpamayo 1.5): the parameters' rules, the ticks over N cameras, R1 refusing them."""

import numpy as np
import pytest
from test_ticker import MS, fill

from alpamayo_ros import parameters
from alpamayo_ros.pipeline.engine import model_engine
from alpamayo_ros.pipeline.inputs import Inputs
from alpamayo_ros.pipeline.outcome import Status, TickReport
from alpamayo_ros.pipeline.settings import SamplingSettings, TickSettings
from alpamayo_ros.pipeline.sync import CAMERA_NAMES
from alpamayo_ros.tools.synthetic import road_images

FRONT_WIDE, FRONT_TELE = "camera_front_wide_120fov", "camera_front_tele_30fov"


@pytest.fixture(scope="module")
def model15(conformance_dir):
    from alpamayo_ros.model.loading import from_pretrained

    return from_pretrained(conformance_dir / "alpamayo1_5" / "checkpoint", dtype="float32")


def rig(camera_ids: list[str]) -> parameters.NodeConfig:
    topics = [f"/cameras/{name}/image" for name in camera_ids]
    return parameters.from_values({"camera_topics": topics, "camera_ids": camera_ids, "max_reasoning_tokens": 2,
                                   "diffusion_steps": 1})


def test_the_default_rig_is_the_release_four_and_t0_follows_front_wide_else_the_first_camera():
    cfg = parameters.NodeConfig()
    assert cfg.camera_names == CAMERA_NAMES and cfg.sync.reference_camera == 1
    assert cfg.sampling.camera_ids == (0, 1, 2, 6)
    assert rig(["camera_cross_left_120fov", FRONT_WIDE]).sync.reference_camera == 1
    cfg = rig(["camera_cross_left_120fov", "camera_cross_right_120fov"])
    assert cfg.sync.reference_camera == 0 and cfg.camera_names == ("cross_left", "cross_right")


@pytest.mark.parametrize("camera_ids", [[FRONT_WIDE], [FRONT_WIDE, FRONT_TELE]])
def test_a_1_5_model_ticks_on_one_or_two_cameras_with_their_labels(model15, monkeypatch, camera_ids):
    cfg = rig(camera_ids)
    assert cfg.sync.reference_camera == 0 and cfg.camera_names == tuple(["front_wide", "front_tele"][:len(camera_ids)])
    inputs = Inputs(cfg.camera_topics, cfg.odometry_topic, cfg.sync, camera_names=cfg.camera_names)
    calls = []
    sample = model15.sample
    monkeypatch.setattr(model15, "sample", lambda *a, **k: calls.append((a, k)) or sample(*a, **k))
    engine = model_engine(inputs, model15, cfg.tick_settings, cfg.sampling)
    fill(inputs, 0, 2_000)
    reports = [e for e in engine.tick(2_000 * MS) if isinstance(e, TickReport)]
    (report,) = [r for r in reports if r.status is Status.PUBLISHED] or reports[-1:]
    assert report.status is Status.PUBLISHED, report.reason
    assert report.outcome.model_input.frame_stamps_ns.shape == (len(camera_ids), 4)
    (images, *_), kwargs = calls[-1]
    assert kwargs["camera_ids"] == (1, 6)[:len(camera_ids)] and len(images) == 4 * len(camera_ids)
    road = road_images()
    for camera in range(len(camera_ids)):  # camera k's newest frame is image 4k + 3, in the topics' order
        assert np.array_equal(images[4 * camera + 3], road[camera, 0])


@pytest.mark.parametrize(("values", "message"), [
    ({"camera_topics": ["/a", "/b", "/c"]}, "camera_topics has 3 topics .* expected 4 .* or, with an Alpamayo 1.5 "
                                            "checkpoint, 1 or 2"),
    ({"camera_topics": ["/a", "/b"]}, "camera_topics \\['/a', '/b'\\] and camera_ids \\['camera_cross_left_120fov', "
                                      ".*\\] differ in length"),
    ({"camera_topics": ["/a", "/b"], "camera_ids": [FRONT_WIDE, "camera_front"]},
     "camera_ids \\['camera_front_wide_120fov', 'camera_front'\\] \\(for camera_topics \\['/a', '/b'\\]\\): unknown "
     "NVIDIA camera name\\(s\\) \\['camera_front'\\]"),
    ({"camera_topics": ["/a", "/b"], "camera_ids": [FRONT_TELE, FRONT_WIDE]},
     "list the cameras by NVIDIA camera index, .* \\(\\['camera_front_wide_120fov', 'camera_front_tele_30fov'\\]\\)"),
    ({"camera_topics": ["/a", "/b"], "camera_ids": [FRONT_WIDE, FRONT_WIDE]}, "names a camera twice"),
])
def test_a_camera_set_that_does_not_match_is_refused_naming_both_parameters(values, message):
    with pytest.raises(ValueError, match=message):
        parameters.from_values(values)


def test_an_r1_model_refuses_fewer_cameras_instead_of_padding(tiny_model):
    cfg = rig([FRONT_WIDE, FRONT_TELE])
    inputs = Inputs(cfg.camera_topics, cfg.odometry_topic, cfg.sync, camera_names=cfg.camera_names)
    with pytest.raises(ValueError, match="AlpamayoR1, which takes the release's four cameras .* got 2 camera "
                                         "topic\\(s\\), camera ids \\[1, 6\\]: 1 or 2 cameras, or other cameras, need "
                                         "an Alpamayo 1.5 checkpoint"):
        model_engine(inputs, tiny_model, TickSettings(rate_hz=2.0), cfg.sampling)
    inputs4 = Inputs(["/a", "/b", "/c", "/d"], "/odom", cfg.sync.__class__())
    with pytest.raises(ValueError, match="camera ids \\[3, 4, 5, 6\\]"):  # four, but not the release's
        model_engine(inputs4, tiny_model, TickSettings(rate_hz=2.0), SamplingSettings(camera_ids=(3, 4, 5, 6)))

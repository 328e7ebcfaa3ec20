"""Fuzz: conversions and bag reading meet random or damaged input with a result or a named error, nothing else."""

import shutil

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

pytest.importorskip("rclpy", reason="ROS 2 message packages are not installed")

from nav_msgs.msg import Odometry  # noqa: E402
from sensor_msgs.msg import CompressedImage, Image  # noqa: E402

from alpamayo_ros import conversions  # noqa: E402
from alpamayo_ros.conversions import InvalidMessage  # noqa: E402
from alpamayo_ros.pipeline.frames import InvalidImage, decode  # noqa: E402
from alpamayo_ros.tools.bag_io import BagError, alpamayo_typestore, open_bag, read_messages  # noqa: E402

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ENCODINGS = st.sampled_from(["rgb8", "bgr8", "rgba8", "bgra8", "mono8", "16UC1", "yuv422", "", "RGB8"])
FLOATS = st.floats(allow_nan=True, allow_infinity=True, width=64)


@FUZZ
@given(height=st.integers(0, 40), width=st.integers(0, 40), step_pad=st.integers(-8, 8), encoding=ENCODINGS,
       data_delta=st.integers(-20, 20), seed=st.integers(0, 2**16))
def test_raw_image_gives_rgb_or_invalid_message(height, width, step_pad, encoding, data_delta, seed):
    channels = {"rgba8": 4, "bgra8": 4, "mono8": 1}.get(encoding, 3)
    step = max(0, width * channels + step_pad)
    size = max(0, step * height + data_delta)
    data = np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes()
    msg = Image(height=height, width=width, encoding=encoding, step=step, data=data)
    try:
        frame = conversions.camera_frame(msg, "/cam")
    except InvalidMessage as exc:
        assert str(exc).startswith("/cam: ")
        return
    image = decode(frame.image)  # passed the arrival checks: must decode
    assert image.shape == (height, width, 3) and image.dtype == np.uint8


@FUZZ
@given(fmt=st.sampled_from(["jpeg", "png", "rgb8; jpeg compressed bgr8", "tiff", ""]), payload=st.binary(max_size=300))
def test_compressed_image_gives_rgb_or_invalid_message(fmt, payload):
    try:
        frame = conversions.camera_frame(CompressedImage(format=fmt, data=payload), "/cam")
    except InvalidMessage:
        return
    try:
        image = decode(frame.image)
    except InvalidImage:  # a readable header over broken data: named when the tick decodes it
        return
    assert image.shape == (*frame.size, 3)


@FUZZ
@given(position=st.tuples(FLOATS, FLOATS, FLOATS), quat=st.tuples(FLOATS, FLOATS, FLOATS, FLOATS),
       linear=st.tuples(FLOATS, FLOATS, FLOATS))
@example(position=(0.0, 0.0, 0.0), quat=(0.0, 0.0, 0.5, 0.75), linear=(0.0, 0.0, 1.3407807929942597e+154))  # CI found
def test_odometry_gives_a_finite_unit_pose_or_invalid_message(position, quat, linear):
    msg = Odometry()
    p, q, v = msg.pose.pose.position, msg.pose.pose.orientation, msg.twist.twist.linear
    p.x, p.y, p.z = position
    q.x, q.y, q.z, q.w = quat
    v.x, v.y, v.z = linear
    try:
        sample = conversions.pose_from_odometry(msg, "/odom")
    except InvalidMessage:
        return
    assert np.isfinite(sample.position).all() and np.isfinite(sample.speed_mps)
    assert abs(np.linalg.norm(sample.orientation) - 1.0) < 1e-9


@pytest.fixture(scope="module", params=["mcap", "sqlite3"])
def small_bag(request, tmp_path_factory):
    from alpamayo_ros.tools.make_sample_bag import write_bag

    return write_bag(tmp_path_factory.mktemp(request.param) / "bag", duration_s=2.0, storage=request.param)


def _messages(bag):
    reader = open_bag([bag], alpamayo_typestore())
    try:
        return [(c.topic, t, bytes(raw)) for c, t, raw in read_messages(reader)]
    finally:
        reader.close()


@pytest.fixture(scope="module")
def intact_messages(small_bag):
    return _messages(small_bag)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fraction=st.floats(0.0, 0.999))
def test_truncated_bag_reads_as_a_prefix_or_fails_with_a_named_error(small_bag, intact_messages, tmp_path_factory,
                                                                     fraction):
    damaged = tmp_path_factory.mktemp("damaged") / "bag"
    shutil.copytree(small_bag, damaged)
    storage = max((f for f in damaged.iterdir() if f.suffix in (".mcap", ".db3")), key=lambda f: f.stat().st_size)
    content = storage.read_bytes()
    storage.write_bytes(content[: int(len(content) * fraction)])
    try:
        read = _messages(damaged)
    except BagError as exc:
        assert str(damaged) in str(exc)  # names the bag
        return
    assert read == intact_messages[:len(read)]  # whatever is read is the intact bag's, never garbage

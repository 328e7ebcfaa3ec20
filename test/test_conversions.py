"""Message conversions: image encodings, odometry checks, and trajectory geometry from known outputs."""

import io

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="ROS 2 message packages are not installed")

from builtin_interfaces.msg import Time  # noqa: E402
from nav_msgs.msg import Odometry  # noqa: E402
from PIL import Image as PILImage  # noqa: E402
from scipy.spatial.transform import Rotation  # noqa: E402
from sensor_msgs.msg import CompressedImage, Image  # noqa: E402

from alpamayo_ros import conversions  # noqa: E402
from alpamayo_ros.conversions import InvalidMessage  # noqa: E402
from alpamayo_ros.pipeline.frames import InvalidImage, decode  # noqa: E402

TOPIC = "/cameras/front_wide/image"
RGB = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3) * 10


def raw(encoding, pixels, step_pad=0):
    h, w = pixels.shape[:2]
    rows = pixels.reshape(h, -1)
    padded = np.concatenate([rows, np.zeros((h, step_pad), np.uint8)], axis=1)
    return Image(header=_header(1_500_000_000), height=h, width=w, encoding=encoding, step=padded.shape[1],
                 data=padded.tobytes())


def decoded(msg):
    """What a tick would feed the model: the arrival conversion, then the decode."""
    frame = conversions.camera_frame(msg, TOPIC)
    return frame.stamp_ns, decode(frame.image)


def _header(ns):
    from std_msgs.msg import Header

    return Header(stamp=conversions.ns_to_stamp(ns))


@pytest.mark.parametrize("encoding,pixels", [
    ("rgb8", RGB), ("bgr8", RGB[..., ::-1]), ("rgba8", np.concatenate([RGB, np.full((2, 3, 1), 255, np.uint8)], -1)),
    ("bgra8", np.concatenate([RGB[..., ::-1], np.full((2, 3, 1), 7, np.uint8)], -1)),
])
def test_raw_encodings_become_rgb(encoding, pixels):
    stamp_ns, image = decoded(raw(encoding, np.ascontiguousarray(pixels), step_pad=2))
    assert stamp_ns == 1_500_000_000
    assert image.dtype == np.uint8 and np.array_equal(image, RGB) and not image.flags.writeable


def test_mono8_becomes_grey_rgb():
    _, image = decoded(raw("mono8", RGB[..., :1].copy()))
    assert np.array_equal(image, np.repeat(RGB[..., :1], 3, axis=-1))


def test_bad_images_are_named():
    with pytest.raises(InvalidMessage, match="front_wide/image: encoding is '16UC1', expected one of"):
        conversions.camera_frame(raw("16UC1", RGB), TOPIC)
    short = raw("rgb8", RGB)
    short.data = short.data[:-3]
    with pytest.raises(InvalidMessage, match="data length is 15, expected step \\* height = 18"):
        conversions.camera_frame(short, TOPIC)
    with pytest.raises(InvalidMessage, match="format is 'tiff'"):
        conversions.camera_frame(CompressedImage(format="tiff", data=b"x"), TOPIC)
    with pytest.raises(InvalidMessage, match="data is undecodable"):
        conversions.camera_frame(CompressedImage(format="jpeg", data=b"not a jpeg"), TOPIC)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_compressed_images_decode_to_rgb(fmt):
    picture = np.zeros((16, 16, 3), np.uint8)
    picture[:, :, 0] = 200
    buffer = io.BytesIO()
    PILImage.fromarray(picture).save(buffer, format=fmt)
    frame = conversions.camera_frame(CompressedImage(format=fmt.lower(), data=buffer.getvalue()), TOPIC)
    assert frame.size == (16, 16)  # read from the header on arrival, before any decoding
    image = decode(frame.image)
    assert image.shape == (16, 16, 3)
    assert np.abs(image.astype(int) - picture).max() <= (0 if fmt == "PNG" else 4)


def test_jpeg_with_a_valid_header_and_a_broken_body_fails_when_decoded():
    buffer = io.BytesIO()
    noise = np.random.default_rng(0).integers(0, 256, (32, 48, 3), dtype=np.uint8)
    PILImage.fromarray(noise).save(buffer, format="JPEG")
    broken = buffer.getvalue()[:len(buffer.getvalue()) // 2]  # header intact, entropy-coded data cut off
    frame = conversions.camera_frame(CompressedImage(format="jpeg", data=broken), TOPIC)  # cheap check passes
    assert frame.size == (32, 48)
    with pytest.raises(InvalidImage, match="data is undecodable"):
        decode(frame.image)


def odometry(x=1.0, quat=(0.0, 0.0, 0.0, 1.0)):
    msg = Odometry()
    msg.header.stamp = Time(sec=3, nanosec=5)
    msg.pose.pose.position.x = x
    msg.pose.pose.orientation.x, msg.pose.pose.orientation.y, msg.pose.pose.orientation.z, msg.pose.pose.orientation.w = quat
    return msg


def test_odometry_conversion_and_rejection():
    sample = conversions.pose_from_odometry(odometry(quat=(0, 0, 0, 1.02)), "/odom")
    assert sample.stamp_ns == 3_000_000_005 and np.isclose(np.linalg.norm(sample.orientation), 1.0)
    with pytest.raises(InvalidMessage, match="/odom: pose.pose.position is \\[nan"):
        conversions.pose_from_odometry(odometry(x=float("nan")), "/odom")
    with pytest.raises(InvalidMessage, match="expected a unit quaternion"):
        conversions.pose_from_odometry(odometry(quat=(0, 0, 0, 0)), "/odom")


def test_stamps_are_exact_integers():
    t0 = 1_700_000_000_123_456_789
    path = conversions.path_msg(np.zeros((64, 3)), np.tile(np.eye(3), (64, 1, 1)), t0, "odom")
    assert conversions.stamp_to_ns(path.header.stamp) == t0
    assert conversions.stamp_to_ns(path.poses[42].header.stamp) == t0 + 43 * 100_000_000  # 4.3 s, exactly


def test_known_ego_trajectory_lands_ahead_of_the_vehicle_in_odom():
    # The model says: 1 m/step straight ahead, turning left by 1 deg per step. The vehicle is at (10, 5)
    # heading 90 deg (north) in odom.
    k = np.arange(1, 65)
    yaw = np.radians(k * 1.0)
    xyz = np.stack([k * 1.0, np.zeros(64), np.zeros(64)], axis=1)
    rot = Rotation.from_euler("z", yaw[:, None]).as_matrix()
    p0, r0 = np.array([10.0, 5.0, 0.2]), Rotation.from_euler("z", 90, degrees=True).as_matrix()
    out_xyz, out_rot = conversions.to_output_frame(xyz, rot, p0, r0)
    assert np.allclose(out_xyz[0], [10.0, 6.0, 0.2]) and np.allclose(out_xyz[-1], [10.0, 69.0, 0.2])
    path = conversions.path_msg(out_xyz, out_rot, 0, "odom")
    q = path.poses[9].pose.orientation
    assert np.isclose(np.linalg.norm([q.x, q.y, q.z, q.w]), 1.0)
    assert np.isclose(Rotation.from_quat([q.x, q.y, q.z, q.w]).as_euler("zyx", degrees=True)[0], 100.0)
    ego_xyz, _ = conversions.to_output_frame(xyz, rot, None, None)  # base_link output: unchanged
    assert np.allclose(ego_xyz, xyz)


def test_candidate_markers_highlight_the_selected_sample():
    paths = [conversions.path_msg(np.full((64, 3), float(i)), np.tile(np.eye(3), (64, 1, 1)), 0, "odom") for i in range(3)]
    markers = conversions.candidate_markers(paths, selected=1, reasoning="Yield to the cyclist.", frame_id="odom", t0_ns=0)
    strips = [m for m in markers.markers if m.ns == "candidates" and m.action == m.ADD]
    assert len(strips) == 3 and len(strips[1].points) == 64
    assert strips[1].scale.x > strips[0].scale.x
    assert markers.markers[0].action == markers.markers[0].DELETEALL
    assert markers.markers[-1].text == "Yield to the cyclist."


def test_unfinished_reasoning_is_published_flagged_and_kept_apart_from_the_reference_text():
    import torch

    from alpamayo_ros.model.alpamayo_r1 import Prediction, Timings
    from alpamayo_ros.pipeline.sync import ModelInput
    from alpamayo_ros.pipeline.ticker import Outcome, Status

    xyz = torch.zeros(2, 64, 3)
    xyz[:, :, 0] = torch.arange(1, 65) * 0.8
    pred = Prediction(xyz=xyz, rot=torch.eye(3).expand(2, 64, 3, 3), action=torch.zeros(2, 64, 2),
                      reasoning=["", "Slow for the bus."], complete=[False, True],
                      timings=Timings(1.0, 1.0, 1.0, 1.0, 1.0, decode_tokens=6),
                      partial_reasoning=["Nudge left to pass", "Slow for the bus."], reasoning_closed=[False, True])
    model_input = ModelInput(t0_ns=5 * 10**9, frames=(), frame_stamps_ns=np.full((4, 4), 5 * 10**9),
                             ego_history_xyz=np.zeros((16, 3), np.float32),
                             ego_history_rot=np.tile(np.eye(3, dtype=np.float32), (16, 1, 1)),
                             t0_position=np.zeros(3), t0_rotation=np.eye(3), history_span_ns=(35 * 10**8, 5 * 10**9),
                             odom_frame="odom", base_frame="base_link")
    outcome = Outcome(tick=7, status=Status.PUBLISHED, model_input=model_input, prediction=pred, valid=(0, 1), selected=0)
    messages = conversions.output_messages(outcome, True, ["/a", "/b", "/c", "/d"], "first", 12.0)
    assert messages.reasoning.data == "[truncated] Nudge left to pass"
    assert list(messages.output.reasoning) == ["", "Slow for the bus."]  # the reference's text
    assert list(messages.output.partial_reasoning) == ["Nudge left to pass", "Slow for the bus."]
    assert list(messages.output.reasoning_closed) == [False, True]
    text = [m for m in messages.candidates.markers if m.type == m.TEXT_VIEW_FACING][0].text
    assert text == "[truncated] Nudge left to pass"
    assert messages.trajectory.header.stamp == conversions.ns_to_stamp(5 * 10**9)
    assert (messages.output.route, messages.output.route_source) == ("", "")  # no route topics: the plain prompt

"""ROS messages <-> pipeline types, and nothing else (no torch, no model).

Shared representation: images are (H, W, 3) uint8 RGB; stamps are integer nanoseconds; poses are
numpy float64 in the message's frame. Trajectories are 64 poses 0.1 s apart, the first at t0 + 0.1 s,
in the ego frame at t0 (x forward, y left, z up); `to_output_frame` maps them to the odometry frame by
the pose at t0: p_odom = p0 + R0 p_ego, R_odom = R0 R_ego. A malformed message raises `InvalidMessage`
naming the topic, the field, what it held and what was expected.
"""

from __future__ import annotations

import io

import numpy as np
from builtin_interfaces.msg import Duration, Time
from diagnostic_msgs.msg import DiagnosticStatus, KeyValue
from geometry_msgs.msg import Point, Pose, PoseStamped, Quaternion
from nav_msgs.msg import Odometry, Path
from PIL import Image as PILImage
from scipy.spatial.transform import Rotation
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import ColorRGBA, Header
from visualization_msgs.msg import Marker, MarkerArray

from alpamayo_ros.pipeline.camera_buffer import CameraFrame
from alpamayo_ros.pipeline.pose_history import PoseSample

NS_PER_S = 1_000_000_000
QUATERNION_NORM_TOL = 0.1  # |q| may be this far from 1 before the odometry message is rejected
MAX_COMPRESSED_PIXELS = 40_000_000  # 8K is 33 Mpx; a larger header is a malformed or hostile image

# encoding -> (channels, channel order to RGB)
_RAW_ENCODINGS = {"rgb8": (3, [0, 1, 2]), "bgr8": (3, [2, 1, 0]), "rgba8": (4, [0, 1, 2]),
                  "bgra8": (4, [2, 1, 0]), "mono8": (1, [0, 0, 0])}


class InvalidMessage(ValueError):
    """A message that cannot be used: which topic, which field, what it held, what was expected."""

    def __init__(self, topic: str, field: str, got: object, expected: str) -> None:
        super().__init__(f"{topic}: {field} is {got}, expected {expected}")
        self.topic, self.field = topic, field


def stamp_to_ns(stamp: Time) -> int:
    """builtin_interfaces/Time -> integer nanoseconds."""
    return stamp.sec * NS_PER_S + stamp.nanosec


def ns_to_stamp(ns: int) -> Time:
    """Integer nanoseconds -> builtin_interfaces/Time (exact, no float rounding)."""
    sec, nanosec = divmod(int(ns), NS_PER_S)
    return Time(sec=sec, nanosec=nanosec)


def ns_to_duration(ns: int) -> Duration:
    sec, nanosec = divmod(int(ns), NS_PER_S)
    return Duration(sec=sec, nanosec=nanosec)


def image_from_msg(msg: Image, topic: str) -> CameraFrame:
    """sensor_msgs/Image (rgb8, bgr8, rgba8, bgra8, mono8) -> RGB frame; rgb8 without padding is zero-copy."""
    if msg.encoding not in _RAW_ENCODINGS:
        raise InvalidMessage(topic, "encoding", repr(msg.encoding), f"one of {sorted(_RAW_ENCODINGS)}")
    channels, order = _RAW_ENCODINGS[msg.encoding]
    height, width, step = msg.height, msg.width, msg.step
    if height == 0 or width == 0:
        raise InvalidMessage(topic, "height x width", f"{height} x {width}", "a non-empty image")
    if step < width * channels:
        raise InvalidMessage(topic, "step", step, f">= width * {channels} = {width * channels}")
    if len(msg.data) != step * height:
        raise InvalidMessage(topic, "data length", len(msg.data), f"step * height = {step * height}")
    rows = np.frombuffer(msg.data, dtype=np.uint8).reshape(height, step)
    pixels = rows[:, :width * channels].reshape(height, width, channels)
    if msg.encoding == "rgb8":
        rgb = pixels
    else:
        rgb = np.ascontiguousarray(pixels[..., order])
    return CameraFrame(stamp_ns=stamp_to_ns(msg.header.stamp), image=rgb)


def compressed_image_from_msg(msg: CompressedImage, topic: str) -> CameraFrame:
    """sensor_msgs/CompressedImage (JPEG or PNG) -> RGB frame."""
    fmt = msg.format.lower()
    if "jpeg" not in fmt and "jpg" not in fmt and "png" not in fmt:
        raise InvalidMessage(topic, "format", repr(msg.format), "a JPEG or PNG compressed image")
    try:
        with PILImage.open(io.BytesIO(bytes(msg.data))) as decoded:
            width, height = decoded.size
            if width * height > MAX_COMPRESSED_PIXELS:
                raise InvalidMessage(topic, "image size", f"{width}x{height}", f"at most {MAX_COMPRESSED_PIXELS} pixels")
            rgb = np.asarray(decoded.convert("RGB"))
    except (OSError, ValueError, PILImage.DecompressionBombError) as exc:
        if isinstance(exc, InvalidMessage):
            raise
        raise InvalidMessage(topic, "data", f"undecodable ({exc})", f"{msg.format} bytes") from exc
    return CameraFrame(stamp_ns=stamp_to_ns(msg.header.stamp), image=rgb)


def pose_from_odometry(msg: Odometry, topic: str) -> PoseSample:
    """nav_msgs/Odometry -> pose sample in its header frame, quaternion normalised."""
    p, q = msg.pose.pose.position, msg.pose.pose.orientation
    position = np.array([p.x, p.y, p.z], dtype=np.float64)
    quat = np.array([q.x, q.y, q.z, q.w], dtype=np.float64)
    if not np.isfinite(position).all():
        raise InvalidMessage(topic, "pose.pose.position", position.tolist(), "finite coordinates")
    norm = float(np.linalg.norm(quat)) if np.isfinite(quat).all() else float("nan")
    if not abs(norm - 1.0) <= QUATERNION_NORM_TOL:
        raise InvalidMessage(topic, "pose.pose.orientation", quat.tolist(), "a unit quaternion")
    linear = msg.twist.twist.linear
    speed = float(np.linalg.norm([linear.x, linear.y, linear.z]))
    if not np.isfinite(speed):
        raise InvalidMessage(topic, "twist.twist.linear", [linear.x, linear.y, linear.z], "finite velocity")
    return PoseSample(stamp_ns=stamp_to_ns(msg.header.stamp), position=position, orientation=quat / norm,
                      speed_mps=speed)


def to_output_frame(xyz: np.ndarray, rot: np.ndarray, t0_position: np.ndarray | None,
                    t0_rotation: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Ego-frame poses (W, 3), (W, 3, 3) -> the odometry frame by the t0 pose, or unchanged if it is None."""
    if t0_position is None or t0_rotation is None:
        return xyz.astype(np.float64), rot.astype(np.float64)
    return t0_position + xyz.astype(np.float64) @ t0_rotation.T, t0_rotation @ rot.astype(np.float64)


def path_msg(xyz: np.ndarray, rot: np.ndarray, t0_ns: int, frame_id: str, dt_ns: int = 100_000_000) -> Path:
    """Poses (W, 3) and rotations (W, 3, 3) -> nav_msgs/Path; pose k stamped t0 + (k + 1) dt exactly."""
    quats = Rotation.from_matrix(rot).as_quat()  # x y z w, unit
    path = Path(header=Header(stamp=ns_to_stamp(t0_ns), frame_id=frame_id))
    for k in range(xyz.shape[0]):
        x, y, z = (float(v) for v in xyz[k])
        qx, qy, qz, qw = (float(v) for v in quats[k])
        path.poses.append(PoseStamped(
            header=Header(stamp=ns_to_stamp(t0_ns + (k + 1) * dt_ns), frame_id=frame_id),
            pose=Pose(position=Point(x=x, y=y, z=z), orientation=Quaternion(x=qx, y=qy, z=qz, w=qw))))
    return path


def candidate_markers(paths: list[Path], selected: int, reasoning: str, frame_id: str, t0_ns: int) -> MarkerArray:
    """Every sample as a line strip (the selected one wide and green), and the reasoning as text."""
    header = Header(stamp=ns_to_stamp(t0_ns), frame_id=frame_id)
    markers = [Marker(header=header, ns="candidates", action=Marker.DELETEALL)]
    for i, path in enumerate(paths):
        chosen = i == selected
        marker = Marker(header=header, ns="candidates", id=i, type=Marker.LINE_STRIP, action=Marker.ADD,
                        color=ColorRGBA(r=0.1, g=0.9, b=0.2, a=1.0) if chosen else ColorRGBA(r=0.3, g=0.6, b=1.0, a=0.6))
        marker.pose.orientation.w = 1.0
        marker.scale.x = 0.5 if chosen else 0.15
        marker.points = [p.pose.position for p in path.poses]
        markers.append(marker)
    text = Marker(header=header, ns="reasoning", id=0, type=Marker.TEXT_VIEW_FACING, action=Marker.ADD,
                  text=reasoning or "(no reasoning text)", color=ColorRGBA(r=1.0, g=1.0, b=1.0, a=1.0))
    text.pose = Pose(position=Point(x=paths[selected].poses[0].pose.position.x,
                                    y=paths[selected].poses[0].pose.position.y,
                                    z=paths[selected].poses[0].pose.position.z + 3.0))
    text.pose.orientation.w = 1.0
    text.scale.z = 0.8
    markers.append(text)
    return MarkerArray(markers=markers)


def diagnostic_status(name: str, level: bytes, message: str, values: dict[str, object], hardware_id: str) -> DiagnosticStatus:
    """One diagnostic_msgs/DiagnosticStatus (level: DiagnosticStatus.OK/WARN/ERROR) with values as strings."""
    return DiagnosticStatus(level=level, name=name, message=message, hardware_id=hardware_id,
                            values=[KeyValue(key=k, value=str(v)) for k, v in values.items()])

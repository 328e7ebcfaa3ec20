"""ROS messages <-> pipeline types, and nothing else (no torch, no model).

Shared representation: camera frames stay undecoded (`pipeline.frames`); stamps are integer nanoseconds; poses are
numpy float64 in the message's frame. Trajectories are 64 poses 0.1 s apart, the first at t0 + 0.1 s,
in the ego frame at t0 (x forward, y left, z up); `to_output_frame` maps them to the odometry frame by
the pose at t0: p_odom = p0 + R0 p_ego, R_odom = R0 R_ego. A malformed message raises `InvalidMessage`
naming the topic, the field, what it held and what was expected.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticStatus, KeyValue
from geometry_msgs.msg import Point, Pose, PoseStamped, Quaternion
from nav_msgs.msg import Odometry, Path
from scipy.spatial.transform import Rotation
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import ColorRGBA, Header, String
from visualization_msgs.msg import Marker, MarkerArray

from alpamayo_msgs.msg import DrivingOutput, StageTimings, TickStatus
from alpamayo_ros.pipeline import frames
from alpamayo_ros.pipeline.frames import CameraFrame
from alpamayo_ros.pipeline.inputs import Inputs, Refused
from alpamayo_ros.pipeline.pose_history import PoseSample
from alpamayo_ros.units import NS_PER_S

if TYPE_CHECKING:  # the ticker imports the model (torch); conversions only reads its outcomes
    from alpamayo_ros.pipeline.ticker import Outcome

QUATERNION_NORM_TOL = 0.1  # |q| may be this far from 1 before the odometry message is rejected


class InvalidMessage(ValueError):
    """A message that cannot be used: which topic, which field, what it held, what was expected."""

    def __init__(self, topic: str, field: str, got: object, expected: str) -> None:
        super().__init__(f"{topic}: {field} is {got}, expected {expected}")
        self.topic, self.field = topic, field


def message_class(msgtype: str):
    """'sensor_msgs/msg/Image' -> the rclpy message class, or None if its package is not installed here."""
    package, _, name = msgtype.split("/")
    try:
        return getattr(importlib.import_module(f"{package}.msg"), name)
    except (ImportError, AttributeError):
        return None


def stamp_to_ns(stamp: Time) -> int:
    """builtin_interfaces/Time -> integer nanoseconds."""
    return stamp.sec * NS_PER_S + stamp.nanosec


def ns_to_stamp(ns: int) -> Time:
    """Integer nanoseconds -> builtin_interfaces/Time (exact, no float rounding)."""
    sec, nanosec = divmod(int(ns), NS_PER_S)
    return Time(sec=sec, nanosec=nanosec)


def camera_frame(msg: Image | CompressedImage, topic: str) -> CameraFrame:
    """sensor_msgs/Image or CompressedImage -> an undecoded frame, after the cheap header checks.

    O(1) in the pixels: the message's buffer is kept, not copied; `pipeline.frames.decode` converts it
    when a tick selects the frame.
    """
    try:
        if isinstance(msg, Image):
            image = frames.raw_image(msg.encoding, msg.height, msg.width, msg.step, msg.data)
        else:
            image = frames.compressed_image(msg.format, msg.data)
    except frames.InvalidImage as exc:
        raise InvalidMessage(topic, exc.field, exc.got, exc.expected) from exc
    return CameraFrame(stamp_to_ns(msg.header.stamp), image)


def pose_from_odometry(msg: Odometry, topic: str) -> PoseSample:
    """nav_msgs/Odometry -> pose sample in its header frame, quaternion normalised, twist in the child frame."""
    p, q = msg.pose.pose.position, msg.pose.pose.orientation
    position = np.array([p.x, p.y, p.z], dtype=np.float64)
    quat = np.array([q.x, q.y, q.z, q.w], dtype=np.float64)
    if not np.isfinite(position).all():
        raise InvalidMessage(topic, "pose.pose.position", position.tolist(), "finite coordinates")
    norm = float(np.linalg.norm(quat)) if np.isfinite(quat).all() else float("nan")
    if not abs(norm - 1.0) <= QUATERNION_NORM_TOL:
        raise InvalidMessage(topic, "pose.pose.orientation", quat.tolist(), "a unit quaternion")
    linear, angular = msg.twist.twist.linear, msg.twist.twist.angular
    velocity = np.array([linear.x, linear.y, linear.z], dtype=np.float64)
    angular_velocity = np.array([angular.x, angular.y, angular.z], dtype=np.float64)
    speed = math.hypot(*velocity)  # inf where the components are finite but their norm is not (1e154 each)
    if not math.isfinite(speed):
        raise InvalidMessage(topic, "twist.twist.linear", velocity.tolist(), "a finite velocity")
    if not np.isfinite(angular_velocity).all():
        raise InvalidMessage(topic, "twist.twist.angular", angular_velocity.tolist(), "finite angular velocity")
    return PoseSample(stamp_ns=stamp_to_ns(msg.header.stamp), position=position, orientation=quat / norm,
                      speed_mps=speed, velocity_mps=velocity,
                      angular_velocity_rps=angular_velocity)


def take_image(inputs: Inputs, camera: int, msg: Image | CompressedImage, now_ns: int,
               now_mono_s: float) -> Refused | None:
    """One camera message into `inputs` as the node's callback takes it (O(1): no decoding); None if buffered."""
    topic = inputs.camera_topics[camera]
    inputs.monitors[topic].arrived(now_mono_s)
    try:
        frame = camera_frame(msg, topic)
    except InvalidMessage as exc:
        return inputs.refuse(topic, f"{inputs.monitors[topic].label}: {exc}; frame dropped", now_mono_s)
    return inputs.add_frame(camera, frame, now_ns, now_mono_s)


def take_odometry(inputs: Inputs, msg: Odometry, now_ns: int, now_mono_s: float) -> Refused | None:
    """One odometry message into `inputs` as the node's callback takes it; None if buffered."""
    topic = inputs.odometry_topic
    inputs.monitors[topic].arrived(now_mono_s)
    try:
        sample = pose_from_odometry(msg, topic)
    except InvalidMessage as exc:
        return inputs.refuse(topic, f"odometry: {exc}; message dropped", now_mono_s)
    return inputs.add_pose(sample, now_ns, now_mono_s, msg.header.frame_id, msg.child_frame_id)


def take_route_text(inputs: Inputs, msg: String, topic: str, now_ns: int) -> Refused | None:
    """A navigation instruction ("Turn left in 40m"; "" clears it) into `inputs.route`; None if taken."""
    text = msg.data
    if "<|" in text or "|>" in text:
        return Refused(topic, f"route text: {InvalidMessage(topic, 'data', repr(text), 'no <| or |>')}; ignored")
    inputs.route.set_text(text, now_ns)
    return None


def take_route_path(inputs: Inputs, msg: Path, topic: str, now_ns: int) -> Refused | None:
    """A planned path (its poses' x, y in `header.frame_id`; empty clears it) into `inputs.route`; None if taken."""
    xy = np.array([(pose.pose.position.x, pose.pose.position.y) for pose in msg.poses], dtype=np.float64).reshape(-1, 2)
    if not np.isfinite(xy).all():
        return Refused(topic, f"route path: {InvalidMessage(topic, 'poses[].pose.position', 'NaN or inf', 'finite')}; "
                              "path ignored")
    if len(xy) == 1:
        return Refused(topic, f"route path: {InvalidMessage(topic, 'poses', '1 pose', '0 (clear) or >= 2')}; "
                              "path ignored")
    inputs.route.set_path(xy, msg.header.frame_id, now_ns)
    return None


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


@dataclass(frozen=True, slots=True)
class OutputMessages:
    """What one published tick sends, every message stamped with the input's t0."""

    trajectory: Path
    reasoning: String
    output: DrivingOutput
    candidates: MarkerArray


def output_messages(outcome: Outcome, in_odometry_frame: bool, camera_topics: list[str],
                    selection: str, latency_ms: float) -> OutputMessages:
    """The messages of a PUBLISHED outcome; trajectories in the odometry frame (by the t0 pose) or the ego frame.

    Every message is labelled with the frame its poses are in: the input's own odometry frame (its t0
    pose's `header.frame_id`), or its vehicle frame (`child_frame_id`, the ego frame at t0).
    """
    pred, model_input, selected = outcome.prediction, outcome.model_input, outcome.selected
    p0, r0 = (model_input.t0_position, model_input.t0_rotation) if in_odometry_frame else (None, None)
    frame_id = model_input.odom_frame if in_odometry_frame else model_input.base_frame
    xyz, rot = pred.xyz.numpy(), pred.rot.numpy()
    order = list(outcome.valid)
    paths = {i: path_msg(*to_output_frame(xyz[i], rot[i], p0, r0), model_input.t0_ns, frame_id) for i in order}
    t = pred.timings
    output = DrivingOutput(
        header=Header(stamp=ns_to_stamp(model_input.t0_ns), frame_id=frame_id),
        trajectories=[paths[i] for i in order], reasoning=[pred.reasoning[i] for i in order],
        partial_reasoning=[pred.partial_reasoning[i] for i in order],
        reasoning_closed=[pred.reasoning_closed[i] for i in order],
        reasoning_complete=[pred.complete[i] for i in order], selected=order.index(selected),
        selection=selection, tick=outcome.tick,
        timings=StageTimings(vision_ms=t.vision_ms, prefill_ms=t.prefill_ms, decode_ms=t.decode_ms,
                             expert_ms=t.expert_ms, trajectory_ms=t.trajectory_ms, total_ms=t.total_ms,
                             latency_ms=latency_ms, decode_tokens=t.decode_tokens),
        camera_stamps=[ns_to_stamp(s) for s in model_input.frame_stamps_ns.reshape(-1)],
        camera_topics=list(camera_topics),
        history_start=ns_to_stamp(model_input.history_span_ns[0]),
        history_end=ns_to_stamp(model_input.history_span_ns[1]),
        route=model_input.route or "", route_source=model_input.route_note)
    text = shown_reasoning(pred.reasoning[selected], pred.partial_reasoning[selected], pred.reasoning_closed[selected])
    markers = candidate_markers([paths[i] for i in order], order.index(selected), text, frame_id, model_input.t0_ns)
    return OutputMessages(trajectory=paths[selected], reasoning=String(data=text), output=output, candidates=markers)


TRUNCATED = "[truncated] "


def shown_reasoning(reasoning: str, partial: str, closed: bool) -> str:
    """What ~/reasoning and RViz show: the reasoning, or the unfinished text flagged as truncated."""
    return reasoning if closed else TRUNCATED + partial


def tick_status(tick: int, status: int, now_ns: int, reason: str = "", t0_ns: int = 0) -> TickStatus:
    """alpamayo_msgs/TickStatus of one tick (status: a `pipeline.ticker.Status`)."""
    return TickStatus(header=Header(stamp=ns_to_stamp(now_ns)), tick=tick, outcome=int(status), reason=reason,
                      t0=ns_to_stamp(t0_ns))

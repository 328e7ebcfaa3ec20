"""Write a small rosbag2 of a synthetic drive: 4 cameras (10 Hz) and odometry (50 Hz), with TF.

The drive goes straight, takes a left curve, brakes to a stop, waits, and drives off again. Cameras
render the road the car is on (lane lines, horizon, roadside posts) from the car's pose, so images
change consistently with the ego motion. Frames follow REP-105: odometry in `odom` with child
`base_link`, `/tf` odom->base_link, `/tf_static` base_link->camera frames. Images are JPEG
`CompressedImage` by default (a few MB for 16 s); --raw writes `Image` rgb8.

    python -m alpamayo_ros.tools.make_sample_bag sample_bag --duration 16 --storage mcap
"""

from __future__ import annotations

import argparse
import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image as PILImage
from PIL import ImageDraw
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from alpamayo_ros.pipeline.sync import CAMERA_NAMES
from alpamayo_ros.tools.bag_io import SENSOR_QOS, TF_QOS, TF_STATIC_QOS
from alpamayo_ros.tools.synthetic import OdometryEvent, ReportedOdometry
from alpamayo_ros.units import NS_PER_S

START_NS = 1_700_000_000 * NS_PER_S  # bag start time (sim time), an arbitrary epoch
CAMERA_HZ, ODOMETRY_HZ = 10, 50
ODOMETRY = len(CAMERA_NAMES)  # event kind of an odometry message; cameras are 0-3
CAMERA_YAW_DEG = (60.0, 0.0, -60.0, 0.0)  # mounting yaw, + left
CAMERA_FOV_DEG = (120.0, 120.0, 120.0, 30.0)
CAMERA_HEIGHT_M = 1.5
CAMERA_FORWARD_M = 1.5  # mounting position ahead of base_link
HORIZON_ROW_FRACTION = 0.4  # principal point row / image height: more ground than sky in view
LANE_HALF_WIDTH_M = 1.8
# (duration s, acceleration m/s^2, yaw rate rad/s): straight, left curve, brake, stand, drive off.
SEGMENTS = ((4.0, 0.0, 0.0), (4.0, 0.0, 0.2), (3.0, -8.0 / 3.0, 0.0), (2.0, 0.0, 0.0), (3.0, 2.0, 0.0))
START_SPEED_MPS = 8.0
INTEGRATION_DT_S = 0.001


@dataclass(frozen=True)
class Trajectory:
    """The drive sampled every INTEGRATION_DT_S: time, x, y, yaw, speed, yaw rate."""

    t: np.ndarray
    x: np.ndarray
    y: np.ndarray
    yaw: np.ndarray
    speed: np.ndarray
    yaw_rate: np.ndarray

    def at(self, t_s: float) -> tuple[float, float, float, float, float]:
        i = min(int(round(t_s / INTEGRATION_DT_S)), len(self.t) - 1)
        return self.x[i], self.y[i], self.yaw[i], self.speed[i], self.yaw_rate[i]


def drive(duration_s: float) -> Trajectory:
    """Integrate the segment profile (speed clamped at 0) for `duration_s`, cycling the segments."""
    steps = int(round(duration_s / INTEGRATION_DT_S)) + 1
    t = np.arange(steps) * INTEGRATION_DT_S
    bounds = np.cumsum([s[0] for s in SEGMENTS])
    phase = np.mod(t, bounds[-1])
    index = np.searchsorted(bounds, phase, side="right").clip(0, len(SEGMENTS) - 1)
    accel = np.array([s[1] for s in SEGMENTS])[index]
    yaw_rate = np.array([s[2] for s in SEGMENTS])[index]
    speed = np.empty(steps)
    speed[0] = START_SPEED_MPS
    for k in range(1, steps):
        speed[k] = max(0.0, speed[k - 1] + accel[k - 1] * INTEGRATION_DT_S)
    yaw = np.concatenate([[0.0], np.cumsum(yaw_rate[:-1] * INTEGRATION_DT_S)])
    x = np.concatenate([[0.0], np.cumsum(speed[:-1] * np.cos(yaw[:-1]) * INTEGRATION_DT_S)])
    y = np.concatenate([[0.0], np.cumsum(speed[:-1] * np.sin(yaw[:-1]) * INTEGRATION_DT_S)])
    return Trajectory(t=t, x=x, y=y, yaw=yaw, speed=speed, yaw_rate=yaw_rate)


class RoadRenderer:
    """Lane lines along the driven path and roadside posts, drawn by a pinhole camera on the car."""

    def __init__(self, path: Trajectory, height: int, width: int) -> None:
        self.height, self.width = height, width
        stride = int(0.5 / INTEGRATION_DT_S / max(path.speed.mean(), 1.0)) or 1
        xs, ys, yaws = path.x[::stride], path.y[::stride], path.yaw[::stride]
        # Extend the road 60 m past the end so the last frames still see it.
        extra = np.arange(1, 121) * 0.5
        xs = np.concatenate([xs, xs[-1] + extra * math.cos(yaws[-1])])
        ys = np.concatenate([ys, ys[-1] + extra * math.sin(yaws[-1])])
        yaws = np.concatenate([yaws, np.full(extra.shape, yaws[-1])])
        normal = np.stack([-np.sin(yaws), np.cos(yaws)], axis=1)
        centre = np.stack([xs, ys], axis=1)
        self.lanes = [centre + side * LANE_HALF_WIDTH_M * normal for side in (-1.0, 1.0)]
        arc = np.concatenate([[0.0], np.cumsum(np.hypot(np.diff(xs), np.diff(ys)))])
        posts = np.searchsorted(arc, np.arange(10.0, arc[-1], 15.0))
        self.posts = np.concatenate([centre[posts] + 4.5 * normal[posts], centre[posts] - 4.5 * normal[posts]])

    def render(self, x: float, y: float, yaw: float, camera: int) -> np.ndarray:
        heading = yaw + math.radians(CAMERA_YAW_DEG[camera])
        focal = (self.width / 2) / math.tan(math.radians(CAMERA_FOV_DEG[camera]) / 2)
        horizon = self.height * HORIZON_ROW_FRACTION
        image = PILImage.new("RGB", (self.width, self.height), (150, 180, 215))
        draw = ImageDraw.Draw(image)
        draw.rectangle([0, horizon, self.width, self.height], fill=(80, 80, 85))
        cos, sin = math.cos(heading), math.sin(heading)

        def project(points: np.ndarray, z: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            dx, dy = points[:, 0] - x, points[:, 1] - y
            forward, left = cos * dx + sin * dy, -sin * dx + cos * dy
            u = self.width / 2 - focal * left / np.maximum(forward, 1e-3)
            v = horizon + focal * (CAMERA_HEIGHT_M - z) / np.maximum(forward, 1e-3)
            return u, v, forward

        for lane in self.lanes:
            u, v, forward = project(lane, 0.0)
            visible = (forward > 1.0) & (forward < 80.0)
            for k in np.flatnonzero(visible[:-1] & visible[1:]):
                draw.line([(u[k], v[k]), (u[k + 1], v[k + 1])], fill=(245, 245, 240), width=2 if forward[k] < 15 else 1)
        u, v, forward = project(self.posts, 0.0)
        _, top, _ = project(self.posts, 1.2)
        for k in np.flatnonzero((forward > 1.0) & (forward < 60.0)):
            half = max(1.0, 0.2 * focal / forward[k])
            draw.rectangle([u[k] - half, top[k], u[k] + half, v[k]], fill=(230, 120, 20))
        return np.asarray(image)


def stamped_header(typestore, stamp_ns: int, frame_id: str):
    """A std_msgs/Header at `stamp_ns`."""
    sec, nanosec = divmod(stamp_ns, NS_PER_S)
    return typestore.types["std_msgs/msg/Header"](
        stamp=typestore.types["builtin_interfaces/msg/Time"](sec=sec, nanosec=nanosec), frame_id=frame_id)


def yaw_quaternion(typestore, yaw: float):
    """A geometry_msgs/Quaternion of a rotation by `yaw` about z."""
    return typestore.types["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=math.sin(yaw / 2), w=math.cos(yaw / 2))


ROUTE_TOPIC = "/route"  # `write_bag(route_text=...)`


def camera_topics_of(raw: bool) -> tuple[str, ...]:
    """The sample bag's camera topics, in the model's order."""
    suffix = "image" if raw else "image/compressed"
    return tuple(f"/cameras/{name}/{suffix}" for name in CAMERA_NAMES)


def drive_connections(writer: Writer, typestore, image_type: str, camera_topics: list[str],
                      odometry_topic: str) -> tuple[list, object, object]:
    """The cameras', odometry's and /tf's connections of a drive bag, and its /tf_static (the camera mounts).

    Offered QoS as the drivers' publishers would offer it, so `ros2 bag play` offers the same.
    """
    t = typestore.types
    cams = [writer.add_connection(topic, image_type, typestore=typestore, offered_qos_profiles=SENSOR_QOS)
            for topic in camera_topics]
    odom = writer.add_connection(odometry_topic, "nav_msgs/msg/Odometry", typestore=typestore,
                                 offered_qos_profiles=SENSOR_QOS)
    tf = writer.add_connection("/tf", "tf2_msgs/msg/TFMessage", typestore=typestore, offered_qos_profiles=TF_QOS)
    tf_static = writer.add_connection("/tf_static", "tf2_msgs/msg/TFMessage", typestore=typestore,
                                      offered_qos_profiles=TF_STATIC_QOS)
    statics = [t["geometry_msgs/msg/TransformStamped"](
        header=stamped_header(typestore, START_NS, "base_link"), child_frame_id=f"camera_{name}",
        transform=t["geometry_msgs/msg/Transform"](
            translation=t["geometry_msgs/msg/Vector3"](x=CAMERA_FORWARD_M, y=0.0, z=CAMERA_HEIGHT_M),
            rotation=yaw_quaternion(typestore, math.radians(CAMERA_YAW_DEG[i]))))
        for i, name in enumerate(CAMERA_NAMES)]
    writer.write(tf_static, START_NS, typestore.serialize_cdr(t["tf2_msgs/msg/TFMessage"](transforms=statics),
                                                            "tf2_msgs/msg/TFMessage"))
    return cams, odom, tf


def write_bag(out: Path, duration_s: float = 16.0, storage: str = "mcap", raw: bool = False,
              height: int = 96, width: int = 160, camera_topics: tuple[str, ...] | None = None,
              odometry_topic: str = "/odom", camera_hz: float = CAMERA_HZ, odometry_hz: float = ODOMETRY_HZ,
              odom_frame: str = "odom", origin_xy: tuple[float, float] = (0.0, 0.0), jitter_ms: float = 0.0,
              seed: int = 0, odometry_events: tuple[OdometryEvent, ...] = (),
              route_text: str | None = None) -> Path:
    """Write the synthetic drive to `out` (a new rosbag2 directory); returns it.

    The defaults are the sample bag; the options make a bag as another stack records one: other rates,
    each camera's stamps jittered by up to +-`jitter_ms` (messages logged at their stamps), odometry in
    another frame far from its origin, relocalization jumps and changes of frame (`odometry_events`).
    `route_text`: also an Alpamayo 1.5 route instruction on ROUTE_TOPIC (std_msgs/String) once a second.
    """
    rng = np.random.default_rng(seed)
    typestore = get_typestore(Stores.ROS2_HUMBLE)
    t = typestore.types
    camera_topics = camera_topics or camera_topics_of(raw)
    path = drive(duration_s)
    renderer = RoadRenderer(path, height, width)
    reported = ReportedOdometry(odometry_events, odom_frame)
    image_type = "sensor_msgs/msg/Image" if raw else "sensor_msgs/msg/CompressedImage"
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    with Writer(out, version=8, storage_plugin=plugin) as writer:
        cams, odom, tf = drive_connections(writer, typestore, image_type, camera_topics, odometry_topic)
        if route_text is not None:
            route = writer.add_connection(ROUTE_TOPIC, "std_msgs/msg/String", typestore=typestore)
            for k in range(int(duration_s) + 1):
                writer.write(route, START_NS + k * NS_PER_S,
                             typestore.serialize_cdr(t["std_msgs/msg/String"](data=route_text), "std_msgs/msg/String"))
        events: list[tuple[int, int]] = [(round(k * NS_PER_S / odometry_hz), ODOMETRY)
                                          for k in range(int(duration_s * odometry_hz) + 1)]
        jitter_ns = round(jitter_ms * 1e6)
        for camera in range(len(cams)):
            for k in range(int(duration_s * camera_hz) + 1):
                jitter = int(rng.integers(-jitter_ns, jitter_ns + 1)) if jitter_ns else 0
                events.append((max(round(k * NS_PER_S / camera_hz) + jitter, 0), camera))
        for offset_ns, kind in sorted(events):  # cameras at one instant in model order, then odometry
            stamp = START_NS + offset_ns
            x, y, yaw, speed, yaw_rate = path.at(offset_ns / NS_PER_S)
            x, y = x + origin_xy[0], y + origin_xy[1]
            if kind == ODOMETRY:
                frame, (x, y), yaw = reported.report(offset_ns / NS_PER_S, np.array([x, y]), yaw)
                msg = t["nav_msgs/msg/Odometry"](
                    header=stamped_header(typestore, stamp, frame), child_frame_id="base_link",
                    pose=t["geometry_msgs/msg/PoseWithCovariance"](
                        pose=t["geometry_msgs/msg/Pose"](position=t["geometry_msgs/msg/Point"](x=x, y=y, z=0.0),
                                                         orientation=yaw_quaternion(typestore, yaw)),
                        covariance=np.zeros(36)),
                    twist=t["geometry_msgs/msg/TwistWithCovariance"](
                        twist=t["geometry_msgs/msg/Twist"](linear=t["geometry_msgs/msg/Vector3"](x=speed, y=0.0, z=0.0),
                                                           angular=t["geometry_msgs/msg/Vector3"](x=0.0, y=0.0, z=yaw_rate)),
                        covariance=np.zeros(36)))
                writer.write(odom, stamp, typestore.serialize_cdr(msg, "nav_msgs/msg/Odometry"))
                transform = t["geometry_msgs/msg/TransformStamped"](
                    header=stamped_header(typestore, stamp, frame), child_frame_id="base_link",
                    transform=t["geometry_msgs/msg/Transform"](
                        translation=t["geometry_msgs/msg/Vector3"](x=x, y=y, z=0.0), rotation=yaw_quaternion(typestore, yaw)))
                writer.write(tf, stamp, typestore.serialize_cdr(t["tf2_msgs/msg/TFMessage"](transforms=[transform]),
                                                                "tf2_msgs/msg/TFMessage"))
                continue
            pixels = renderer.render(x - origin_xy[0], y - origin_xy[1], yaw, kind)
            header = stamped_header(typestore, stamp, f"camera_{CAMERA_NAMES[kind]}")
            if raw:
                msg = t["sensor_msgs/msg/Image"](header=header, height=height, width=width, encoding="rgb8",
                                                 is_bigendian=0, step=width * 3, data=pixels.reshape(-1))
            else:
                buffer = io.BytesIO()
                PILImage.fromarray(pixels).save(buffer, format="JPEG", quality=85)
                msg = t["sensor_msgs/msg/CompressedImage"](header=header, format="jpeg",
                                                           data=np.frombuffer(buffer.getvalue(), np.uint8))
            writer.write(cams[kind], stamp, typestore.serialize_cdr(msg, image_type))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="new bag directory (must not exist)")
    parser.add_argument("--duration", type=float, default=16.0, help="seconds of driving")
    parser.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap")
    parser.add_argument("--raw", action="store_true", help="sensor_msgs/Image rgb8 instead of JPEG CompressedImage")
    parser.add_argument("--height", type=int, default=96)
    parser.add_argument("--width", type=int, default=160)
    args = parser.parse_args(argv)
    if args.out.exists():
        parser.error(f"{args.out} exists; rosbag2 writes a new directory")
    write_bag(args.out, args.duration, args.storage, args.raw, args.height, args.width)
    size = sum(f.stat().st_size for f in args.out.rglob("*") if f.is_file())
    print(f"wrote {args.out} ({args.storage}, {args.duration:.0f} s, {size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The run's rosbag2: cameras, odometry, TF and every output, written as the lockstep replay writes them.

rclpy's serializer leaves CDR alignment padding uninitialised, so every rclpy message goes through one
rosbags round trip (zero padding): equal messages are equal bytes, and two lockstep runs with a fixed
latency give identical bytes on every topic but `<node>/timings` (wall-clock stage times, by nature).
`DrivingOutput.timings` keeps only its deterministic fields, as in `tools/replay.py`.
"""

from __future__ import annotations

import math
from pathlib import Path

from rosbags.rosbag2 import StoragePlugin

from alpamayo_ros.pipeline.sync import CAMERA_NAMES
from alpamayo_ros.tools.bag_io import OUTPUT_QOS, SENSOR_QOS, TF_QOS, TF_STATIC_QOS, alpamayo_typestore, new_bag
from alpamayo_ros.tools.make_sample_bag import CAMERA_FORWARD_M, CAMERA_HEIGHT_M, CAMERA_YAW_DEG, stamped_header
from alpamayo_ros.tools.replay import OUTPUT_TYPES

from .sensors import BASE_FRAME, ODOM_FRAME
from .vehicle import VehicleState

TF_TYPE = "tf2_msgs/msg/TFMessage"


class RunBag:
    """An open bag for one run; `close` finishes it (a failed run's partial bag is removed)."""

    def __init__(self, path: Path, camera_topics: list[str], compressed: bool, odometry_topic: str,
                 node: str = "/alpamayo") -> None:
        from rclpy.serialization import serialize_message

        self._serialize = serialize_message
        self.typestore = alpamayo_typestore()
        self._context = new_bag(Path(path), StoragePlugin.MCAP)
        self.writer = self._context.__enter__()
        image_type = "sensor_msgs/msg/CompressedImage" if compressed else "sensor_msgs/msg/Image"
        add = self.writer.add_connection
        self.types: dict[str, str] = {topic: image_type for topic in camera_topics}
        self.types[odometry_topic] = "nav_msgs/msg/Odometry"
        self.connections = {topic: add(topic, msgtype, typestore=self.typestore, offered_qos_profiles=SENSOR_QOS)
                            for topic, msgtype in self.types.items()}
        self.camera_topics, self.odometry_topic = list(camera_topics), odometry_topic
        self.tf = add("/tf", TF_TYPE, typestore=self.typestore, offered_qos_profiles=TF_QOS)
        self.tf_static = add("/tf_static", TF_TYPE, typestore=self.typestore, offered_qos_profiles=TF_STATIC_QOS)
        for name, msgtype in OUTPUT_TYPES.items():
            topic = f"{node}/{name}"
            self.types[topic] = msgtype
            self.connections[topic] = add(topic, msgtype, typestore=self.typestore, offered_qos_profiles=OUTPUT_QOS)
        self.node = node

    def write(self, topic: str, msg, stamp_ns: int) -> None:
        """An rclpy message on `topic` (a camera, the odometry or `<node>/<output>`), canonical bytes."""
        msgtype = self.types[topic]
        ts = self.typestore
        self.writer.write(self.connections[topic], stamp_ns,
                          ts.serialize_cdr(ts.deserialize_cdr(self._serialize(msg), msgtype), msgtype))

    def write_output(self, name: str, msg, stamp_ns: int) -> None:
        self.write(f"{self.node}/{name}", msg, stamp_ns)

    def write_tf(self, state: VehicleState, stamp_ns: int) -> None:
        """/tf odom -> base_link at the car's pose."""
        t = self.typestore.types
        transform = t["geometry_msgs/msg/TransformStamped"](
            header=stamped_header(self.typestore, stamp_ns, ODOM_FRAME), child_frame_id=BASE_FRAME,
            transform=t["geometry_msgs/msg/Transform"](
                translation=t["geometry_msgs/msg/Vector3"](x=float(state.x), y=float(state.y), z=0.0),
                rotation=_quaternion(self.typestore, state.yaw)))
        self.writer.write(self.tf, stamp_ns, self.typestore.serialize_cdr(t[TF_TYPE](transforms=[transform]), TF_TYPE))

    def write_tf_static(self, stamp_ns: int) -> None:
        """/tf_static base_link -> camera_<name> (make_sample_bag's rig)."""
        t = self.typestore.types
        statics = [t["geometry_msgs/msg/TransformStamped"](
            header=stamped_header(self.typestore, stamp_ns, BASE_FRAME), child_frame_id=f"camera_{name}",
            transform=t["geometry_msgs/msg/Transform"](
                translation=t["geometry_msgs/msg/Vector3"](x=CAMERA_FORWARD_M, y=0.0, z=CAMERA_HEIGHT_M),
                rotation=_quaternion(self.typestore, math.radians(CAMERA_YAW_DEG[i]))))
            for i, name in enumerate(CAMERA_NAMES)]
        self.writer.write(self.tf_static, stamp_ns,
                          self.typestore.serialize_cdr(t[TF_TYPE](transforms=statics), TF_TYPE))

    def close(self, failed: BaseException | None = None) -> None:
        if failed is None:
            self._context.__exit__(None, None, None)
        else:
            self._context.__exit__(type(failed), failed, failed.__traceback__)


def _quaternion(typestore, yaw: float):
    return typestore.types["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=math.sin(yaw / 2), w=math.cos(yaw / 2))


def topic_digests(path: Path) -> dict[str, str]:
    """sha256 per topic of a bag's (stamp, bytes) in log order: equal digests, equal messages at equal times."""
    import hashlib

    from alpamayo_ros.tools.bag_io import open_bag, read_messages

    reader = open_bag([Path(path)], alpamayo_typestore())
    try:
        hashes: dict[str, hashlib._Hash] = {}
        for connection, stamp, raw in read_messages(reader):
            digest = hashes.setdefault(connection.topic, hashlib.sha256())
            digest.update(int(stamp).to_bytes(8, "little"))
            digest.update(bytes(raw))
    finally:
        reader.close()
    return {topic: digest.hexdigest() for topic, digest in sorted(hashes.items())}

"""The run's rosbag2: cameras, odometry, TF and every output, written as the lockstep replay writes them.

rclpy's serializer leaves CDR alignment padding uninitialised, so every rclpy message goes through one
rosbags round trip (zero padding): equal messages are equal bytes, and two lockstep runs with a fixed
latency give identical bytes on every topic but `<node>/timings` (wall-clock stage times, by nature).
`DrivingOutput.timings` keeps only its deterministic fields, as in `tools/replay.py`.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from rosbags.rosbag2 import StoragePlugin

from alpamayo_ros.pipeline.sync import CAMERA_NAMES
from alpamayo_ros.tools.bag_io import OUTPUT_QOS, SENSOR_QOS, TF_QOS, TF_STATIC_QOS, alpamayo_typestore, new_bag
from alpamayo_ros.tools.make_sample_bag import CAMERA_FORWARD_M, CAMERA_HEIGHT_M, CAMERA_YAW_DEG, stamped_header
from alpamayo_ros.tools.replay import OUTPUT_TYPES
from alpamayo_ros.tools.world import VEHICLE_HEIGHT_M, VEHICLE_LENGTH_M, VEHICLE_WIDTH_M, World

from .report import LANE_LINES_D
from .sensors import BASE_FRAME, ODOM_FRAME
from .vehicle import VehicleState

TF_TYPE = "tf2_msgs/msg/TFMessage"
MARKERS_TYPE = "visualization_msgs/msg/MarkerArray"
ROAD_TOPIC, WORLD_TOPIC = "/closed_loop/road", "/closed_loop/world"  # lane lines once (latched); light and lead


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
        self.road = add(ROAD_TOPIC, MARKERS_TYPE, typestore=self.typestore, offered_qos_profiles=TF_STATIC_QOS)
        self.world = add(WORLD_TOPIC, MARKERS_TYPE, typestore=self.typestore, offered_qos_profiles=OUTPUT_QOS)

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

    def write_road(self, world: World, stamp_ns: int) -> None:
        """The lane lines (right edge, centre, left edge) in `odom`, once, latched."""
        markers = [self._marker(stamp_ns, "road", i, 4, [world.road.at(s, d)[:2] for s in _road_samples(world)],
                                (0.9, 0.9, 0.85, 1.0), 0.15)
                   for i, d in enumerate(LANE_LINES_D)]
        self._write_markers(self.road, markers, stamp_ns)

    def write_world(self, world: World, t_s: float, stamp_ns: int) -> None:
        """The stop line in the light's colour and the lead vehicle's box at world time t."""
        markers = []
        if world.stop_line_s is not None:
            colour = {"red": (0.9, 0.1, 0.1, 1.0), "green": (0.1, 0.8, 0.2, 1.0)}[world.light_state(t_s)]
            ends = [world.road.at(world.stop_line_s, d)[:2] for d in LANE_LINES_D[:2]]
            markers.append(self._marker(stamp_ns, "stop line", 0, 4, ends, colour, 0.8))
        lead = world.lead_vehicle(t_s)
        if lead is not None:
            x, y, heading = world.road.at(lead[0] + VEHICLE_LENGTH_M / 2)
            box = self._marker(stamp_ns, "lead vehicle", 0, 1, [], (0.15, 0.3, 0.8, 1.0), 0.0)
            box.pose.position.x, box.pose.position.y, box.pose.position.z = float(x), float(y), VEHICLE_HEIGHT_M / 2
            box.pose.orientation = _quaternion(self.typestore, float(heading))
            box.scale.x, box.scale.y, box.scale.z = VEHICLE_LENGTH_M, VEHICLE_WIDTH_M, VEHICLE_HEIGHT_M
            markers.append(box)
        self._write_markers(self.world, markers, stamp_ns)

    def _marker(self, stamp_ns: int, ns: str, marker_id: int, kind: int, points, rgba, width: float):
        t = self.typestore.types
        marker = t["visualization_msgs/msg/Marker"](
            header=stamped_header(self.typestore, stamp_ns, ODOM_FRAME), ns=ns, id=marker_id, type=kind, action=0,
            pose=t["geometry_msgs/msg/Pose"](position=t["geometry_msgs/msg/Point"](x=0.0, y=0.0, z=0.0),
                                             orientation=_quaternion(self.typestore, 0.0)),
            scale=t["geometry_msgs/msg/Vector3"](x=width, y=0.0, z=0.0),
            color=t["std_msgs/msg/ColorRGBA"](r=rgba[0], g=rgba[1], b=rgba[2], a=rgba[3]),
            lifetime=t["builtin_interfaces/msg/Duration"](sec=0, nanosec=0), frame_locked=False,
            points=[t["geometry_msgs/msg/Point"](x=float(x), y=float(y), z=0.05) for x, y in points], colors=[],
            texture_resource="", texture=t["sensor_msgs/msg/CompressedImage"](
                header=stamped_header(self.typestore, 0, ""), format="", data=np.zeros(0, np.uint8)),
            uv_coordinates=[], text="", mesh_resource="",
            mesh_file=t["visualization_msgs/msg/MeshFile"](filename="", data=np.zeros(0, np.uint8)),
            mesh_use_embedded_materials=False)
        return marker

    def _write_markers(self, connection, markers: list, stamp_ns: int) -> None:
        msg = self.typestore.types[MARKERS_TYPE](markers=markers)
        self.writer.write(connection, stamp_ns, self.typestore.serialize_cdr(msg, MARKERS_TYPE))

    def close(self, failed: BaseException | None = None) -> None:
        if failed is None:
            self._context.__exit__(None, None, None)
        else:
            self._context.__exit__(type(failed), failed, failed.__traceback__)


def _road_samples(world: World) -> np.ndarray:
    return np.arange(0.0, float(world.road.s[-1]), 2.0)


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

"""The simulated car's sensors as the ROS messages a car sends: cameras and odometry.

Cameras are JPEG round-tripped at the quality `world.write_bag` uses, so the model sees in the loop the
pixels it sees in a replayed world bag: `CompressedImage` for image_transport `compressed`, the decoded
JPEG as rgb8 `Image` for `raw`. Odometry is in `odom` with child `base_link` (the world frame is `odom`).
(TF goes only into the run's bag: `record.py`.)
"""

from __future__ import annotations

import io
import math

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Quaternion
from nav_msgs.msg import Odometry
from PIL import Image as PILImage
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from alpamayo_ros.pipeline.sync import CAMERA_NAMES
from alpamayo_ros.units import NS_PER_S

from .vehicle import LIMITS, VehicleLimits, VehicleState

JPEG_QUALITY = 85  # as world.write_bag writes the bags the driver is trained and replayed on
ODOM_FRAME, BASE_FRAME = "odom", "base_link"


def header(stamp_ns: int, frame_id: str) -> Header:
    sec, nanosec = divmod(int(stamp_ns), NS_PER_S)
    return Header(stamp=Time(sec=sec, nanosec=nanosec), frame_id=frame_id)


def yaw_quaternion(yaw: float) -> Quaternion:
    return Quaternion(x=0.0, y=0.0, z=math.sin(yaw / 2), w=math.cos(yaw / 2))


def jpeg_round_trip(image: np.ndarray) -> tuple[bytes, np.ndarray]:
    """(JPEG bytes, the pixels they decode to) of one (H, W, 3) uint8 RGB image."""
    buffer = io.BytesIO()
    PILImage.fromarray(image).save(buffer, format="JPEG", quality=JPEG_QUALITY)
    data = buffer.getvalue()
    return data, np.asarray(PILImage.open(io.BytesIO(data)).convert("RGB"))


def camera_message(camera: int, image: np.ndarray, stamp_ns: int, compressed: bool) -> CompressedImage | Image:
    """Camera `camera`'s (H, W, 3) uint8 RGB frame, JPEG round-tripped, as the transport carries it."""
    data, decoded = jpeg_round_trip(image)
    frame = header(stamp_ns, f"camera_{CAMERA_NAMES[camera]}")
    if compressed:
        return CompressedImage(header=frame, format="jpeg", data=data)
    height, width = decoded.shape[:2]
    return Image(header=frame, height=height, width=width, encoding="rgb8", is_bigendian=0, step=3 * width,
                 data=decoded.tobytes())


def odometry_message(state: VehicleState, stamp_ns: int, limits: VehicleLimits = LIMITS) -> Odometry:
    """nav_msgs/Odometry of base_link in odom: pose, forward speed and yaw rate."""
    msg = Odometry(header=header(stamp_ns, ODOM_FRAME), child_frame_id=BASE_FRAME)
    msg.pose.pose.position.x, msg.pose.pose.position.y = float(state.x), float(state.y)
    msg.pose.pose.orientation = yaw_quaternion(state.yaw)
    msg.twist.twist.linear.x = float(state.speed)
    msg.twist.twist.angular.z = float(state.yaw_rate(limits))
    return msg

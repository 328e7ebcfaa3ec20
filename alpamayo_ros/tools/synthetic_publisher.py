"""Publish a synthetic drive: 4 cameras (raw or compressed) and odometry, stamped with this clock.

The vehicle drives a constant-speed left arc in the `odom` frame; cameras publish at 10 Hz, odometry
at 50 Hz. Used by the DDS tests and the demo to feed the node without a bag.

    python -m alpamayo_ros.tools.synthetic_publisher --transport compressed --duration 30
"""

from __future__ import annotations

import argparse
import io
import math
import sys

import numpy as np
import rclpy
from geometry_msgs.msg import Quaternion
from nav_msgs.msg import Odometry
from PIL import Image as PILImage
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from alpamayo_ros.conversions import ns_to_stamp
from alpamayo_ros.tools.synthetic import road_images

DEFAULT_TOPICS = ("/cameras/cross_left/image", "/cameras/front_wide/image", "/cameras/cross_right/image",
                  "/cameras/front_tele/image")
START_XY = (5.0, -3.0)  # odom position and heading at the publisher's first instant
START_YAW_RAD = math.radians(30.0)


def arc_pose(elapsed_s: float, speed_mps: float, yaw_rate_rps: float) -> tuple[np.ndarray, float]:
    """Position (x, y, 0) and yaw in `odom` after `elapsed_s` on the arc."""
    yaw = START_YAW_RAD + yaw_rate_rps * elapsed_s
    if abs(yaw_rate_rps) < 1e-9:
        x = START_XY[0] + speed_mps * elapsed_s * math.cos(START_YAW_RAD)
        y = START_XY[1] + speed_mps * elapsed_s * math.sin(START_YAW_RAD)
    else:
        radius = speed_mps / yaw_rate_rps
        x = START_XY[0] + radius * (math.sin(yaw) - math.sin(START_YAW_RAD))
        y = START_XY[1] - radius * (math.cos(yaw) - math.cos(START_YAW_RAD))
    return np.array([x, y, 0.0]), yaw


class SyntheticPublisher(Node):
    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__("synthetic_drive")
        self.args = args
        message_type = Image if args.transport == "raw" else CompressedImage
        self.camera_pubs = [self.create_publisher(message_type, t, qos_profile_sensor_data) for t in args.camera_topics]
        self.odom_pub = self.create_publisher(Odometry, args.odometry_topic, qos_profile_sensor_data)
        self.start_ns = self.get_clock().now().nanoseconds
        self.frames = road_images(args.height, args.width)  # (4 cameras, 4 variants, H, W, 3)
        self.encoded = [[self._encode(self.frames[c, f]) for f in range(4)] for c in range(4)]
        self.camera_count = 0
        self.create_timer(0.1, self._publish_cameras)
        self.create_timer(0.02, self._publish_odometry)

    def _encode(self, rgb: np.ndarray):
        if self.args.transport == "raw":
            return rgb.tobytes()
        buffer = io.BytesIO()
        PILImage.fromarray(rgb).save(buffer, format="JPEG", quality=90)
        return buffer.getvalue()

    def _publish_cameras(self) -> None:
        stamp = ns_to_stamp(self.get_clock().now().nanoseconds)
        variant = self.camera_count % 4
        self.camera_count += 1
        for c, pub in enumerate(self.camera_pubs):
            header = Header(stamp=stamp, frame_id=f"camera_{c}")
            if self.args.transport == "raw":
                msg = Image(header=header, height=self.args.height, width=self.args.width, encoding="rgb8",
                            step=self.args.width * 3, data=self.encoded[c][variant])
            else:
                msg = CompressedImage(header=header, format="jpeg", data=self.encoded[c][variant])
            pub.publish(msg)

    def _publish_odometry(self) -> None:
        now_ns = self.get_clock().now().nanoseconds
        position, yaw = arc_pose((now_ns - self.start_ns) / 1e9, self.args.speed, self.args.yaw_rate)
        msg = Odometry(header=Header(stamp=ns_to_stamp(now_ns), frame_id="odom"), child_frame_id="base_link")
        msg.pose.pose.position.x, msg.pose.pose.position.y = float(position[0]), float(position[1])
        msg.pose.pose.orientation = Quaternion(z=math.sin(yaw / 2), w=math.cos(yaw / 2))
        msg.twist.twist.linear.x = self.args.speed
        msg.twist.twist.angular.z = self.args.yaw_rate
        self.odom_pub.publish(msg)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--transport", choices=("raw", "compressed"), default="raw")
    parser.add_argument("--camera-topics", nargs=4, default=list(DEFAULT_TOPICS))
    parser.add_argument("--odometry-topic", default="/odom")
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--width", type=int, default=96)
    parser.add_argument("--speed", type=float, default=8.0, help="m/s")
    parser.add_argument("--yaw-rate", type=float, default=0.1, help="rad/s, positive turns left")
    parser.add_argument("--duration", type=float, default=0.0, help="seconds; 0 runs until interrupted")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(rclpy.utilities.remove_ros_args(sys.argv if argv is None else argv)[1:])
    rclpy.init()
    node = SyntheticPublisher(args)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        if args.duration > 0:
            end = node.get_clock().now().nanoseconds + args.duration * 1e9
            while rclpy.ok() and node.get_clock().now().nanoseconds < end:
                executor.spin_once(timeout_sec=0.05)
        else:
            executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

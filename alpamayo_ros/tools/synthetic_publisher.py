"""Publish a synthetic drive: 4 cameras (raw or compressed) and odometry, optionally with an injected fault.

The vehicle drives a constant-speed left arc in the `odom` frame; cameras publish at 10 Hz, odometry
at 50 Hz (--odometry-hz). Used by the DDS tests and the fault matrix to feed the node without a bag. A fault applies
between --fault-start and --fault-end seconds after start (to one camera where it concerns cameras).
--odometry-event T:FRAME[:SHIFT_M[:TURN_DEG]] (repeatable) reports odometry in FRAME from T s on, the pose
snapped SHIFT_M to the car's left and TURN_DEG about it (a relocalization; `tools.synthetic.ReportedOdometry`).
With --sim-time the publisher also drives `/clock`, and every stamp follows that clock.

    python -m alpamayo_ros.tools.synthetic_publisher --transport compressed --duration 30
    python -m alpamayo_ros.tools.synthetic_publisher --fault stop --fault-camera 2 --fault-start 4 --fault-end 8
"""

from __future__ import annotations

import argparse
import io
import math
import sys
import time

import numpy as np
import rclpy
from geometry_msgs.msg import Quaternion
from nav_msgs.msg import Odometry
from PIL import Image as PILImage
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from alpamayo_ros.conversions import ns_to_stamp
from alpamayo_ros.tools.synthetic import OdometryEvent, ReportedOdometry, road_images

DEFAULT_TOPICS = ("/cameras/cross_left/image", "/cameras/front_wide/image", "/cameras/cross_right/image",
                  "/cameras/front_tele/image")
START_XY = (5.0, -3.0)  # odom position and heading at the publisher's first instant
START_YAW_RAD = math.radians(30.0)
FAULTS = ("none", "silent", "stop", "late", "encoding", "resolution", "truncated", "corrupt_jpeg", "nan_pose",
          "odom_gap", "odom_backwards", "clock_back", "clock_forward", "extreme_aspect", "wrong_type")
LATE_NS = 80_000_000  # the "late" camera's frames go out this much after their stamp
CLOCK_JUMP_NS = 20_000_000_000
SIM_START_NS = 1_000 * 1_000_000_000


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
        # image_transport's convention: raw on the base topic, compressed on <base>/compressed.
        topics = [t if args.transport == "raw" else f"{t}/compressed" for t in args.camera_topics]
        types = [message_type] * len(topics)
        if args.fault == "wrong_type":  # the fault camera's topic carries the other image type (and is silent)
            types[args.fault_camera] = CompressedImage if message_type is Image else Image
        self.camera_pubs = [self.create_publisher(t, topic, qos_profile_sensor_data) for t, topic in zip(types, topics)]
        self.odom_pub = self.create_publisher(Odometry, args.odometry_topic, qos_profile_sensor_data)
        self.clock_pub = self.create_publisher(Clock, "/clock", QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
        self.wall_start_ns = 0  # set by start()
        self.clock_offset_ns = 0  # sim time = SIM_START + elapsed + offset (the clock faults move it)
        self.frames = road_images(args.height, args.width)  # (4 cameras, 4 variants, H, W, 3)
        self.encoded = [[self._encode(self.frames[c, f]) for f in range(4)] for c in range(4)]
        self.camera_count = 0
        self.pending: list[tuple[int, int, object]] = []  # (due wall ns, camera, message): the late camera
        self.reported = ReportedOdometry(args.odometry_event)

    def start(self) -> None:
        """The drive (and every fault time) begins now; the publishers existed before, so peers may have matched them."""
        self.wall_start_ns = self.get_clock().now().nanoseconds
        self.create_timer(0.1, self._publish_cameras)
        self.create_timer(1.0 / self.args.odometry_hz, self._publish_odometry)
        self.create_timer(0.01, self._publish_pending_and_clock)

    # -- time and faults ---------------------------------------------------------------------------

    def _elapsed_s(self) -> float:
        return (self.get_clock().now().nanoseconds - self.wall_start_ns) / 1e9

    def _stamp_ns(self, now: int | None = None) -> int:
        """The stamp of data produced now (or at wall time `now`): wall time, or the simulated clock."""
        now = self.get_clock().now().nanoseconds if now is None else now
        if not self.args.sim_time:
            return now
        return SIM_START_NS + (now - self.wall_start_ns) + self.clock_offset_ns

    def _fault(self, kind: str, camera: int | None = None) -> bool:
        if self.args.fault != kind or (camera is not None and camera != self.args.fault_camera):
            return False
        return self.args.fault_start <= self._elapsed_s() < self.args.fault_end

    def _publish_pending_and_clock(self) -> None:
        if self.args.sim_time:
            for kind, sign in (("clock_back", -1), ("clock_forward", 1)):
                if self.args.fault == kind and self._elapsed_s() >= self.args.fault_start and self.clock_offset_ns == 0:
                    self.clock_offset_ns = sign * CLOCK_JUMP_NS
            self.clock_pub.publish(Clock(clock=ns_to_stamp(self._stamp_ns())))
        now = self.get_clock().now().nanoseconds
        due = [p for p in self.pending if p[0] <= now]
        self.pending = [p for p in self.pending if p[0] > now]
        for _, camera, msg in due:
            self.camera_pubs[camera].publish(msg)

    # -- messages ------------------------------------------------------------------------------------

    def _encode(self, rgb: np.ndarray):
        if self.args.transport == "raw":
            return rgb.tobytes()
        buffer = io.BytesIO()
        PILImage.fromarray(rgb).save(buffer, format="JPEG", quality=90)
        return buffer.getvalue()

    def _camera_msg(self, c: int, variant: int, header: Header):
        height, width, data, encoding = self.args.height, self.args.width, self.encoded[c][variant], "rgb8"
        if self.args.fault == "extreme_aspect" and c == self.args.fault_camera:
            height, width = 8, 2000  # consistent, valid, but no image processor accepts a 250:1 image
            data = bytes(height * width * 3)
        if self._fault("resolution", c):
            height, width = height // 2, width // 2
            data = self.frames[c, variant][::2, ::2].tobytes()
        if self._fault("encoding", c):
            encoding = "16UC1"
        if self._fault("truncated", c):
            data = data[: len(data) // 2]
        if self.args.transport == "compressed":
            payload = b"\xff\xd8 not a jpeg" if self._fault("corrupt_jpeg", c) else data
            return CompressedImage(header=header, format="jpeg", data=payload)
        return Image(header=header, height=height, width=width, encoding=encoding, step=width * 3, data=data)

    def _publish_cameras(self) -> None:
        stamp_ns = self._stamp_ns()
        variant = self.camera_count % 4
        self.camera_count += 1
        for c, pub in enumerate(self.camera_pubs):
            if (self.args.fault in ("silent", "wrong_type") and c == self.args.fault_camera) or self._fault("stop", c):
                continue
            msg = self._camera_msg(c, variant, Header(stamp=ns_to_stamp(stamp_ns), frame_id=f"camera_{c}"))
            if self._fault("late", c):
                self.pending.append((self.get_clock().now().nanoseconds + LATE_NS, c, msg))
            else:
                pub.publish(msg)

    def _publish_odometry(self) -> None:
        if self._fault("odom_gap"):
            return
        now = self.get_clock().now().nanoseconds  # one reading for the stamp and the pose, however loaded the CPU
        stamp_ns, elapsed_s = self._stamp_ns(now), (now - self.wall_start_ns) / 1e9
        position, yaw = arc_pose(elapsed_s, self.args.speed, self.args.yaw_rate)
        frame_id, xy, yaw = self.reported.report(elapsed_s, position[:2], yaw)
        position = np.array([xy[0], xy[1], 0.0])
        if self._fault("odom_backwards"):
            stamp_ns -= 5_000_000_000
        if self._fault("nan_pose"):
            position = np.array([float("nan"), 0.0, 0.0])
        msg = Odometry(header=Header(stamp=ns_to_stamp(stamp_ns), frame_id=frame_id), child_frame_id="base_link")
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
    parser.add_argument("--odometry-hz", type=float, default=50.0)
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--width", type=int, default=96)
    parser.add_argument("--speed", type=float, default=8.0, help="m/s")
    parser.add_argument("--yaw-rate", type=float, default=0.1, help="rad/s, positive turns left")
    parser.add_argument("--duration", type=float, default=0.0, help="seconds; 0 runs until interrupted")
    parser.add_argument("--start-on-stdin", action="store_true",
                        help="create the publishers, then wait for a line on stdin before publishing (end of input: "
                             "exit); lets a caller start the publisher beside the node and set it going once the node runs")
    parser.add_argument("--wait-for-subscribers", type=int, default=0, metavar="N",
                        help="before publishing, wait until N subscriptions have matched the odometry publisher (the "
                             "node and a recorder), so that none of them misses the start of the drive")
    parser.add_argument("--sim-time", action="store_true", help="publish /clock and stamp with it")
    parser.add_argument("--fault", choices=FAULTS, default="none")
    parser.add_argument("--fault-camera", type=int, default=2, help="camera index the fault applies to")
    parser.add_argument("--fault-start", type=float, default=4.0, help="s after start")
    parser.add_argument("--fault-end", type=float, default=8.0, help="s after start")
    parser.add_argument("--odometry-event", type=OdometryEvent.parse, action="append", default=[],
                        metavar="T:FRAME[:SHIFT_M[:TURN_DEG]]", help="from T s on, odometry in FRAME, snapped (repeatable)")
    return parser.parse_args(argv)


def wait_for_subscribers(node: SyntheticPublisher, count: int, report_every_s: float = 5.0) -> bool:
    """Block until `count` subscriptions have matched the odometry publisher (DDS matches in its own threads);
    False if rclpy shut down first (a signal)."""
    next_report = time.monotonic() + report_every_s
    while rclpy.ok() and (matched := node.odom_pub.get_subscription_count()) < count:
        if time.monotonic() >= next_report:
            node.get_logger().info(f"waiting for {count} subscribers on {node.odom_pub.topic_name} ({matched} matched)")
            next_report += report_every_s
        time.sleep(0.05)
    return rclpy.ok()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(rclpy.utilities.remove_ros_args(sys.argv if argv is None else argv)[1:])
    rclpy.init()
    node = SyntheticPublisher(args)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        if (args.start_on_stdin and not sys.stdin.readline()) or not wait_for_subscribers(node, args.wait_for_subscribers):
            return 0
        node.start()
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

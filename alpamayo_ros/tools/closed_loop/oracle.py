"""A reference autopilot that reads the world instead of the cameras: the loop and the controller alone.

At every tick it publishes 64 poses along the ego lane's centre from where the car is, spaced as the
world's expert driver moves over the next 6.4 s (so it slows for curves, the red light and the lead as
the expert does, at the expert's times). No model, no cameras: its score bounds what the vehicle model
and the controller allow; a model's shortfall beyond it is the model's.
"""

from __future__ import annotations

import numpy as np

from alpamayo_ros.conversions import path_msg
from alpamayo_ros.tools.world import FUTURE_OFFSETS_S, World
from alpamayo_ros.units import NS_PER_S

from .loop import Published
from .sensors import ODOM_FRAME


class LaneCentreOracle:
    """Publishes the lane centre ahead at the expert's pace, every 1 / rate_hz, with no latency."""

    def __init__(self, world: World, start_ns: int, rate_hz: float = 2.0) -> None:
        self.world, self.start_ns = world, start_ns
        self.period_ns = round(NS_PER_S / rate_hz)
        self.next_tick_ns = start_ns
        self._odometry: tuple[int, float, float] | None = None  # (stamp, x, y) of the newest message

    def begin_step(self, stamp_ns: int) -> None:
        pass

    def camera(self, camera: int, msg, stamp_ns: int) -> None:
        pass

    def odometry(self, msg, stamp_ns: int) -> None:
        self._odometry = (stamp_ns, msg.pose.pose.position.x, msg.pose.pose.position.y)

    def advance(self, stamp_ns: int) -> list[Published]:
        if stamp_ns < self.next_tick_ns or self._odometry is None:
            return []
        self.next_tick_ns += self.period_ns
        t0_ns, x, y = self._odometry
        drive, t0_s = self.world.drive, (t0_ns - self.start_ns) / NS_PER_S
        s0, _ = self.world.lane_offset(x, y)
        ahead = np.interp(t0_s + FUTURE_OFFSETS_S, drive.t, drive.s) - np.interp(t0_s, drive.t, drive.s)
        px, py, heading = self.world.road.at(s0 + ahead)
        c, s = np.cos(heading), np.sin(heading)
        rot = np.zeros((len(px), 3, 3))
        rot[:, 0, 0], rot[:, 0, 1], rot[:, 1, 0], rot[:, 1, 1], rot[:, 2, 2] = c, -s, s, c, 1.0
        xyz = np.stack([px, py, np.zeros_like(px)], axis=1)
        return [Published(path_msg(xyz, rot, t0_ns, ODOM_FRAME), stamp_ns, "lane-centre oracle")]

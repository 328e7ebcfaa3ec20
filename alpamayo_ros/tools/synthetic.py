"""A synthetic drive: camera images and an egomotion history on a constant-curvature road.

Used by the demo, the tests and the benchmarks, so that every run exercises the real code paths on
inputs with the release's shapes. The ego frame at t0 is x forward, y left, z up. `ReportedOdometry`
turns a true pose into what a localizer reports: relocalization jumps and changes of frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

HISTORY_POSES = 16  # t0 - 1.5 s ... t0
HISTORY_DT_S = 0.1


@dataclass(frozen=True, slots=True)
class SyntheticDrive:
    """One model input: images (4 cameras, 4 frames, H, W, 3) uint8 and the history in the t0 ego frame."""

    images: np.ndarray  # (4, 4, H, W, 3) uint8 RGB
    ego_history_xyz: np.ndarray  # (16, 3) float32, metres
    ego_history_rot: np.ndarray  # (16, 3, 3) float32


def arc_history(speed_mps: float, yaw_rate_rps: float, poses: int = HISTORY_POSES,
                dt_s: float = HISTORY_DT_S) -> tuple[np.ndarray, np.ndarray]:
    """Poses of a vehicle on a circular arc, ending at the origin with identity rotation."""
    tau = (np.arange(poses) - (poses - 1)) * dt_s  # -1.5 ... 0
    yaw = yaw_rate_rps * tau
    if abs(yaw_rate_rps) < 1e-9:
        x, y = speed_mps * tau, np.zeros_like(tau)
    else:
        radius = speed_mps / yaw_rate_rps
        x, y = radius * np.sin(yaw), radius * (1.0 - np.cos(yaw))
    xyz = np.stack([x, y, np.zeros_like(x)], axis=-1)
    c, s = np.cos(yaw), np.sin(yaw)
    rot = np.zeros((poses, 3, 3))
    rot[:, 0, 0], rot[:, 0, 1], rot[:, 1, 0], rot[:, 1, 1], rot[:, 2, 2] = c, -s, s, c, 1.0
    return xyz.astype(np.float32), rot.astype(np.float32)


def road_images(height: int = 64, width: int = 96, lane_shift_px: float = 0.0, seed: int = 0) -> np.ndarray:
    """(4, 4, H, W, 3) uint8: sky, road and lane markings that move between frames, one tint per camera."""
    rng = np.random.default_rng(seed)
    rows = np.arange(height)[:, None]
    cols = np.arange(width)[None, :]
    images = np.empty((4, 4, height, width, 3), dtype=np.uint8)
    for cam in range(4):
        tint = np.array([40 * cam, 20, 60 - 10 * cam])
        for frame in range(4):
            horizon = height // 3
            img = np.where(rows < horizon, 170, 70)[..., None] + tint  # sky / road
            centre = width / 2 + lane_shift_px + 3 * frame + 7 * (cam - 1.5)
            slope = (rows - horizon).clip(0) * 0.6
            for lane in (-1, 1):
                near = np.abs(cols - (centre + lane * slope)) < 1.5
                img = np.where((near & (rows > horizon))[..., None], 240, img)
            img = img + rng.integers(0, 8, size=img.shape)
            images[cam, frame] = np.clip(img, 0, 255)
    return images


def synthetic_drive(speed_mps: float = 8.0, yaw_rate_rps: float = 0.05, height: int = 64, width: int = 96,
                    lane_shift_px: float = 0.0, seed: int = 0) -> SyntheticDrive:
    """A complete model input for a gentle left curve at `speed_mps`."""
    xyz, rot = arc_history(speed_mps, yaw_rate_rps)
    return SyntheticDrive(images=road_images(height, width, lane_shift_px, seed), ego_history_xyz=xyz,
                          ego_history_rot=rot)


# Where frames other than the drive's own odometry frame sit: (x m, y m, yaw deg) of the odometry frame's
# origin in them. Far away and turned, so a pose labelled with the wrong frame is obviously misplaced.
FRAME_OFFSETS = {"map": (1700.0, -300.0, 40.0)}


@dataclass(frozen=True, slots=True)
class OdometryEvent:
    """From `t_s` on, odometry is reported in `frame`, and there the pose snaps `shift_m` to the car's left and
    turns `turn_deg` about the car (a relocalization; the twist, in the body frame, is unaffected)."""

    t_s: float
    frame: str
    shift_m: float = 0.0
    turn_deg: float = 0.0

    @classmethod
    def parse(cls, text: str) -> OdometryEvent:
        """'T:FRAME[:SHIFT_M[:TURN_DEG]]', e.g. '5:odom:31.2:20' or '4:map'."""
        parts = text.split(":")
        if not 2 <= len(parts) <= 4:
            raise ValueError(f"odometry event {text!r}: expected T:FRAME[:SHIFT_M[:TURN_DEG]]")
        return cls(float(parts[0]), parts[1], *(float(p) for p in parts[2:]))


class ReportedOdometry:
    """The planar pose an odometry source reports for the true one (in `base_frame`), through `events`.

    Each frame holds a rigid transform of the true pose; an event changes the reporting frame and snaps
    that frame's transform about the car's position at the first pose reported at or after it.
    """

    def __init__(self, events: tuple[OdometryEvent, ...] | list[OdometryEvent], base_frame: str = "odom") -> None:
        self._events = sorted(events, key=lambda e: e.t_s)
        self.frame = base_frame
        self._transforms = {base_frame: (0.0, np.zeros(2))}  # frame -> (yaw rad, translation): true -> reported
        for name, (x, y, yaw_deg) in FRAME_OFFSETS.items():
            self._transforms.setdefault(name, (np.radians(yaw_deg), np.array([x, y])))

    def report(self, t_s: float, xy: np.ndarray, yaw: float) -> tuple[str, np.ndarray, float]:
        """(frame, position (2,), yaw rad) reported at time `t_s` for the true position `xy` and `yaw`."""
        while self._events and self._events[0].t_s <= t_s:
            event = self._events.pop(0)
            theta, shift = self._transforms.get(event.frame, (0.0, np.zeros(2)))
            before = _rotate(theta, xy) + shift
            heading = yaw + theta
            left = event.shift_m * np.array([-np.sin(heading), np.cos(heading)])
            theta += np.radians(event.turn_deg)
            self._transforms[event.frame] = (theta, before + left - _rotate(theta, xy))
            self.frame = event.frame
        theta, shift = self._transforms[self.frame]
        return self.frame, _rotate(theta, xy) + shift, yaw + theta


def _rotate(theta: float, xy: np.ndarray) -> np.ndarray:
    c, s = np.cos(theta), np.sin(theta)
    return np.array([c * xy[0] - s * xy[1], s * xy[0] + c * xy[1]])

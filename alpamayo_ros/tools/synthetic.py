"""A synthetic drive: camera images and an egomotion history on a constant-curvature road.

Used by the demo, the tests and the benchmarks, so that every run exercises the real code paths on
inputs with the release's shapes. The ego frame at t0 is x forward, y left, z up.
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

"""NVIDIA's camera names and indices, and the labels Alpamayo 1.5's prompt gives them (no torch: the parameter
schema reads these). Sources: NVlabs/alpamayo1.5 `load_physical_aiavdataset.py` (names -> indices) and
`helper.CAMERA_DISPLAY_NAMES` (indices -> labels; any other index reads "Camera {i}")."""

from __future__ import annotations

import re

NVIDIA_CAMERA_IDS = {
    "camera_cross_left_120fov": 0, "camera_front_wide_120fov": 1, "camera_cross_right_120fov": 2,
    "camera_rear_left_70fov": 3, "camera_rear_tele_30fov": 4, "camera_rear_right_70fov": 5,
    "camera_front_tele_30fov": 6,
}
CAMERA_LABELS = {0: "Front left camera", 1: "Front camera", 2: "Front right camera", 3: "Rear left camera",
                 4: "Rear camera", 5: "Rear right camera", 6: "Front telephoto camera"}
# The release's four cameras in the model's camera order (cross-left, front-wide, cross-right, front-tele).
RELEASE_CAMERAS = ("camera_cross_left_120fov", "camera_front_wide_120fov", "camera_cross_right_120fov",
                   "camera_front_tele_30fov")
FRONT_WIDE = "camera_front_wide_120fov"  # the reference camera (t0 is one of its frames) of a rig that has it


def camera_label(camera_id: int) -> str:
    """The text 1.5 writes before a camera's first frame, without the ": "."""
    return CAMERA_LABELS.get(camera_id, f"Camera {camera_id}")


def camera_name(nvidia_name: str) -> str:
    """The short name logs and diagnostics use: camera_front_wide_120fov -> front_wide."""
    return re.sub(r"_\d+fov$", "", nvidia_name.removeprefix("camera_"))


def camera_ids_of(names: tuple[str, ...] | list[str]) -> tuple[int, ...]:
    """NVIDIA camera names -> indices; raises ValueError naming an unknown one."""
    unknown = [name for name in names if name not in NVIDIA_CAMERA_IDS]
    if unknown:
        raise ValueError(f"unknown NVIDIA camera name(s) {unknown}; expected some of {list(NVIDIA_CAMERA_IDS)}")
    return tuple(NVIDIA_CAMERA_IDS[name] for name in names)

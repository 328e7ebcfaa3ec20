"""The torch devices the node accepts, checked as text before anything loads: `cpu`, `cuda`, `cuda:N`.

No torch import: drive.launch.py checks its `device` argument with this before any process starts, and the
node checks its `device` parameter with it at start-up, so both refuse `device:=nonsense` in the same words.
"""

from __future__ import annotations

import re

DEVICE = re.compile(r"cpu|cuda(:\d+)?")
EXPECTED = "expected cpu, cuda or cuda:N"


def device_problem(device: str) -> str:
    """Why `device` is not a device the node runs on (e.g. "device 'gpu': expected cpu, cuda or cuda:N"), or ""."""
    if DEVICE.fullmatch(device):
        return ""
    return f"device {device!r}: {EXPECTED}"

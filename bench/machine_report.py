"""What every benchmark's JSON says about the machine it ran on, and how it is written."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path


def machine() -> dict:
    """CPU count, load average, platform, Python and the time: the context of a run's numbers."""
    return {"cpu_count": os.cpu_count(), "load_average": os.getloadavg(), "platform": platform.platform(),
            "python": platform.python_version(), "when": time.strftime("%Y-%m-%d %H:%M:%S")}


def write(out: Path, report: dict) -> None:
    """`report` as indented JSON at `out` (its folder made), and a line saying where."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")

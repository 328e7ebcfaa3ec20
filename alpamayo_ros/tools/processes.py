"""Stopping the node and publisher processes the demo, tests and benchmarks start."""

from __future__ import annotations

import signal
import subprocess

SHUTDOWN_TIMEOUT_S = 20.0


def stop(proc: subprocess.Popen, timeout_s: float = SHUTDOWN_TIMEOUT_S) -> str:
    """SIGINT (a clean rclpy shutdown), then kill if it outlives `timeout_s`; returns its captured output."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    try:
        output = proc.communicate(timeout=timeout_s)[0]
    except subprocess.TimeoutExpired:
        proc.kill()
        output = proc.communicate()[0]
    return output or ""

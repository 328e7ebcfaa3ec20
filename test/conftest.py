"""Test-suite set-up: loopback-only DDS with a per-run domain, shared fixtures, skip helpers."""

from __future__ import annotations

import os
from pathlib import Path

from alpamayo_ros.ros_env import loopback_dds_env

# Before anything can import rclpy: never multicast onto the machine's network, whichever distro is
# installed; a per-run ROS_DOMAIN_ID; the Fast DDS profile for both Fast DDS 2 and 3 (../shared/ros2_env.md).
# Child processes inherit os.environ.
loopback_dds_env()
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
# NVIDIA reference outputs on a tiny checkpoint, kept in the repository (test/conformance/README.md);
# ALPAMAYO_CONFORMANCE_DIR points at another copy with the same layout.
CONFORMANCE = Path(os.environ.get("ALPAMAYO_CONFORMANCE_DIR", REPO / "test" / "conformance"))


def pytest_configure(config) -> None:
    config.addinivalue_line(
        "markers", "distro_independent: runs ROS 2 code, but none that the lane's other tests leave unrun; the "
        "Jazzy lane (`make test ROS_DISTRO=jazzy`) deselects it, the Kilted lane runs it")


@pytest.fixture(scope="session")
def conformance_dir() -> Path:
    """The conformance vectors' folder; their absence fails the test (a clone without them checks nothing)."""
    if not (CONFORMANCE / "vectors.json").is_file():
        pytest.fail(f"conformance vectors missing: no vectors.json in {CONFORMANCE}", pytrace=False)
    return CONFORMANCE


@pytest.fixture(scope="session")
def tiny_model():
    from alpamayo_ros.model.loading import tiny

    return tiny(seed=0)


@pytest.fixture(scope="session")
def reference_model(conformance_dir):
    """The conformance checkpoint loaded by our loader."""
    from alpamayo_ros.model.loading import from_pretrained

    return from_pretrained(conformance_dir / "checkpoint")


@pytest.fixture(scope="session")
def drive():
    from alpamayo_ros.tools.synthetic import synthetic_drive

    return synthetic_drive()


@pytest.fixture
def context():
    """An initialised rclpy context of its own (in-process nodes), shut down afterwards."""
    rclpy = pytest.importorskip("rclpy", reason="rclpy is not installed")
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    yield ctx
    rclpy.try_shutdown(context=ctx)


def prefilled(model, drive, rows: int = 1):
    """The synthetic drive's prompt prefilled once and its cache expanded to `rows` decode rows."""
    inputs = model.encode_inputs(drive.images, drive.ego_history_xyz)
    logits, cache, rope_delta = model.prefill(inputs.input_ids, inputs.image_grid_thw, inputs.image_embeds,
                                              inputs.deepstack)
    if rows > 1:
        cache.batch_repeat_interleave(rows)
        logits, rope_delta = logits.expand(rows, -1), rope_delta.expand(rows, 1)
    return logits, cache, rope_delta

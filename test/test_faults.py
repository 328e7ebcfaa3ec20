"""The fault matrix, each row against the real node over DDS (tiny model).

For every fault: the node process stays alive, no invalid trajectory is published (complete, finite,
unit quaternions, synchronised camera stamps), /diagnostics names the fault at WARN or ERROR, and
normal output resumes when the fault clears. Faults are injected by the synthetic publisher between
FAULT_START_S and FAULT_END_S after it starts.
"""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy is not installed")
pytest.importorskip("alpamayo_msgs.msg", reason="alpamayo_msgs is not built (make test builds it)")

from alpamayo_msgs.msg import TickStatus  # noqa: E402
from alpamayo_ros.units import NS_PER_S  # noqa: E402
from conftest import REPO  # noqa: E402
from dds import Received, assert_paths_valid, ros_env, run_scenario, stamp_ns  # noqa: E402

FAULT_START_S, FAULT_END_S = 4.0, 7.0
SCENARIO_TIMEOUT_S = 90.0  # an upper bound: each scenario ends as soon as its condition holds
STARTUP_TIMEOUT_S = 60.0
COMPRESSED = {"image_transport": "compressed"}


def fault_args(kind: str, *extra: str, start: float = FAULT_START_S, end: float = FAULT_END_S) -> list[str]:
    return ["--fault", kind, "--fault-start", str(start), "--fault-end", str(end), *extra]


def named(received: Received, *words: str, level: bytes = b"\x01") -> bool:
    """Some /diagnostics status at `level` or worse says all of `words`."""
    return any(all(w in s.message for w in words) for s in received.statuses(level))


def resumed_after(received: Received, seconds: float) -> bool:
    """A trajectory was published from an input newer than `seconds` after the publisher started."""
    if not received.odometry:
        return False
    start = stamp_ns(received.odometry[0].header.stamp)
    return any(t0 > start + seconds * NS_PER_S for t0 in received.published_t0s())


def check(received: Received, *words: str, resume_after_s: float | None, level: bytes = b"\x01") -> None:
    log = f"\nnode log:\n{received.node_log[-3000:]}"
    assert received.node_alive_at_end, "the node died" + log
    assert received.node_returncode == 0, f"node exited {received.node_returncode}" + log
    assert_paths_valid(received)
    assert named(received, *words, level=level), (
        f"no /diagnostics status says {words}; seen: {sorted({s.message for s in received.statuses()})[:10]}" + log)
    if resume_after_s is not None:
        assert resumed_after(received, resume_after_s), "output did not resume after the fault cleared" + log


# (id, node params, publisher args, words /diagnostics must say, resume after s or None)
CAMERA_FAULTS = [
    ("one camera stops mid-run", {}, fault_args("stop"), ("camera cross_right",), FAULT_END_S),
    ("one camera 80 ms late", {}, fault_args("late"), ("camera cross_right", "later than front_wide"), FAULT_END_S),
    ("wrong encoding", {}, fault_args("encoding"), ("camera cross_right", "encoding is '16UC1'"), FAULT_END_S),
    ("wrong resolution", {}, fault_args("resolution"), ("camera cross_right", "image is 48x32, expected 96x64"),
     FAULT_END_S),
    ("truncated image data", {}, fault_args("truncated"), ("camera cross_right", "data length is"), FAULT_END_S),
    ("corrupt JPEG", COMPRESSED, ["--transport", "compressed", *fault_args("corrupt_jpeg")],
     ("camera cross_right", "undecodable"), FAULT_END_S),
    # Half a JPEG: its header passes the arrival check; the tick that selects the frame finds it broken.
    ("truncated JPEG, found when decoded", COMPRESSED, ["--transport", "compressed", *fault_args("truncated")],
     ("camera cross_right", "frame", "undecodable"), FAULT_END_S),
    ("another message type on a camera topic", {}, ["--fault", "wrong_type"],
     ("/cameras/cross_right/image: published as sensor_msgs/CompressedImage, expected sensor_msgs/Image",), None),
    ("NaN pose", {}, fault_args("nan_pose"), ("odometry", "position is [nan"), FAULT_END_S),
    ("odometry gap longer than the history", {}, fault_args("odom_gap", end=FAULT_START_S + 2.5), ("odometry",),
     FAULT_START_S + 2.5 + 1.5),
    ("odometry time going backwards", {}, fault_args("odom_backwards", end=FAULT_START_S + 1.0),
     ("odometry: /odom: stamp went back",), FAULT_START_S + 1.0 + 1.5),
]


@pytest.mark.parametrize("name,params,publisher,words,resume_s", CAMERA_FAULTS, ids=[c[0] for c in CAMERA_FAULTS])
def test_fault_is_named_and_output_resumes(name, params, publisher, words, resume_s):
    received = run_scenario(params, publisher, timeout_s=SCENARIO_TIMEOUT_S,
                            until=lambda r: named(r, *words) and resumed_after(r, resume_s))
    check(received, *words, resume_after_s=resume_s)


def test_camera_silent_from_start():
    received = run_scenario({}, ["--fault", "silent"], timeout_s=SCENARIO_TIMEOUT_S,
                            until=lambda r: named(r, "camera cross_right: no valid message") and len(r.ticks) >= 6
                            and r.ticks[-1].reason == "camera cross_right: no frames received")
    check(received, "camera cross_right: no valid message", resume_after_s=None)
    assert not received.paths and not received.outputs
    not_ready = [t.reason for t in received.ticks if t.outcome == TickStatus.NOT_READY]
    assert not_ready[-1] == "camera cross_right: no frames received"


def sim_time_params() -> dict:
    return {"use_sim_time": "true"}


def test_sim_clock_jumping_back_clears_the_buffers_and_recovers():
    jump_s = 6.0

    def recovered(r: Received) -> bool:
        t0s = r.published_t0s()
        return named(r, "clock jumped back") and len(t0s) >= 2 and t0s[-1] < max(t0s)  # outputs in the new time base

    received = run_scenario(sim_time_params(), ["--sim-time", *fault_args("clock_back", start=jump_s)],
                            timeout_s=SCENARIO_TIMEOUT_S, until=recovered)
    check(received, "clock jumped back", resume_after_s=None)
    assert recovered(received), "no output after the clock jumped back"


def test_sim_clock_jumping_forward_is_named_and_recovers():
    jump_s = 6.0

    def recovered(r: Received) -> bool:
        t0s = r.published_t0s()
        return named(r, "clock jumped forward") and len(t0s) >= 2 and t0s[-1] - t0s[0] > 15 * NS_PER_S

    received = run_scenario(sim_time_params(), ["--sim-time", *fault_args("clock_forward", start=jump_s)],
                            timeout_s=SCENARIO_TIMEOUT_S, until=recovered)
    check(received, "clock jumped forward", resume_after_s=None)
    assert recovered(received), "no output after the clock jumped forward"


def test_model_exception_is_an_error_and_the_node_keeps_ticking():
    # A 2000x8 camera is consistent, so it passes the input checks, but the image processor refuses it.
    received = run_scenario({}, ["--fault", "extreme_aspect"], timeout_s=SCENARIO_TIMEOUT_S,
                            until=lambda r: sum(t.outcome == TickStatus.MODEL_ERROR for t in r.ticks) >= 3
                            and named(r, "the model raised", level=b"\x02"))
    check(received, "the model raised", resume_after_s=None, level=b"\x02")
    assert not received.paths
    assert "Traceback" in received.node_log  # logged with its traceback


def test_model_slower_than_the_tick_period_drops_and_counts():
    # New frames arrive every 100 ms: the model must take longer than that to be busy when one does
    # (6 samples x 256 tokens and 100 Euler steps: several hundred ms on the tiny model).
    slow = {"rate_hz": 50.0, "num_samples": 6, "max_reasoning_tokens": 256, "diffusion_steps": 100}
    received = run_scenario(slow, [], timeout_s=SCENARIO_TIMEOUT_S,
                            until=lambda r: len(r.paths) >= 3 and named(r, "dropped: the model is slower than rate_hz"))
    check(received, "dropped: the model is slower than rate_hz", resume_after_s=None)
    outcomes = [t.outcome for t in received.ticks]
    assert TickStatus.DROPPED_BUSY in outcomes
    submitted = outcomes.count(TickStatus.SUBMITTED)
    finished = sum(outcomes.count(o) for o in (TickStatus.PUBLISHED, TickStatus.REJECTED, TickStatus.MODEL_ERROR))
    assert submitted - finished <= 1  # at most the tick in flight is unfinished
    dropped = [t for t in received.ticks if t.outcome == TickStatus.DROPPED_BUSY]
    assert all("a newer tick took its place" in t.reason for t in dropped)  # one waits, the rest give way


def test_checkpoint_with_a_missing_shard_stops_startup_naming_it(tmp_path, tiny_model):
    from alpamayo_ros.model.loading import save_pretrained

    checkpoint = tmp_path / "checkpoint"
    save_pretrained(tiny_model, checkpoint, max_shard_bytes=2 * 1024**2)
    shard = sorted(checkpoint.glob("model-*.safetensors"))[1]
    shard.unlink()
    result = subprocess.run([sys.executable, "-m", "alpamayo_ros.node", "--ros-args", "-p", f"model_path:={checkpoint}",
                             "-p", "device:=cpu", "-p", "dtype:=float32"],
                            cwd=REPO, env=ros_env(), capture_output=True, text=True, timeout=STARTUP_TIMEOUT_S)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"cannot start: cannot read shard {shard}" in result.stdout + result.stderr
    shutil.rmtree(checkpoint)

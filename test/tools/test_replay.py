"""Replay: in-process lockstep (deterministic, any bag layout, any load), its CLI, and realtime over DDS."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("rclpy", reason="rclpy is not installed")
pytest.importorskip("alpamayo_msgs.msg", reason="alpamayo_msgs is not built (make test builds it)")

from alpamayo_ros import parameters  # noqa: E402
from alpamayo_ros.tools.bag_io import BagError, alpamayo_typestore, open_bag, read_messages  # noqa: E402
from alpamayo_ros.tools.evaluate import evaluate  # noqa: E402
from alpamayo_ros.tools.make_sample_bag import camera_topics_of, write_bag  # noqa: E402
from alpamayo_ros.tools.processes import stop  # noqa: E402
from alpamayo_ros.tools.replay import main, replay_lockstep  # noqa: E402
from conftest import REPO  # noqa: E402

CAMERA_TOPICS = list(camera_topics_of(raw=False))
BAG_S = 4.0
FOREIGN_CAMERAS = ["/sensors/cam_left/compressed", "/sensors/cam_front/compressed", "/sensors/cam_right/compressed",
                   "/sensors/cam_tele/compressed"]
TINY = {"model_path": "tiny-random", "device": "cpu", "dtype": "float32", "image_transport": "compressed",
        "max_reasoning_tokens": 4, "num_samples": 2, "rate_hz": 2.0}


def outputs(bag: Path) -> list[tuple[str, int, bytes]]:
    """Every message of an output bag except the wall-clock timings, in order."""
    reader = open_bag([bag], alpamayo_typestore())
    try:
        return [(c.topic, t, bytes(raw)) for c, t, raw in read_messages(reader) if not c.topic.endswith("/timings")]
    finally:
        reader.close()


def test_lockstep_replay_publishes_one_output_per_new_input(tmp_path):
    bag = write_bag(tmp_path / "drive", duration_s=BAG_S, storage="sqlite3")
    counts, _ = replay_lockstep(bag, tmp_path / "out", parameters.from_values(TINY))
    # t0 needs 1.5 s of history: inputs at 1.5, 2.0, ..., 4.0 s; the tick after the bag's end has no new frame.
    assert counts.published == 6 and counts.ticks == 8 and counts.dropped == 0, counts.summary()
    summary = evaluate([tmp_path / "out"])
    assert summary["outputs"] == 6
    assert summary["metrics"]["1s"]["n"] == 4  # t0 of 3.5 and 4.0 s: the 4 s bag ends before t0 + 1 s
    assert summary["metrics"]["1s"]["ade_m"] is not None and summary["metrics"]["3s"]["n"] == 0
    assert summary["ticks"]["published"] == 6 and summary["ticks"]["dropped_busy"] == 0


@pytest.fixture(scope="module")
def foreign_bag(tmp_path_factory):
    """As another stack records: 15 Hz jittered cameras under other names, 100 Hz odometry in `map` 1 km out, /tf."""
    return write_bag(tmp_path_factory.mktemp("foreign") / "bag", duration_s=5.0, camera_topics=tuple(FOREIGN_CAMERAS),
                     odometry_topic="/vehicle/odometry", camera_hz=15.0, odometry_hz=100.0, odom_frame="map",
                     origin_xy=(1000.0, -400.0), jitter_ms=4.0, seed=3)


def replay_cli(bag: Path, out: Path, cpu_hogs: int = 0) -> subprocess.CompletedProcess:
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(cpu_hogs)]
    try:
        return subprocess.run(
            [sys.executable, "-m", "alpamayo_ros.tools.replay", str(bag), "--out", str(out), "--mode", "lockstep",
             "--tick-hz", "2", "--camera-topics", *FOREIGN_CAMERAS, "--odometry-topic", "/vehicle/odometry",
             "--params-file", str(REPO / "config" / "alpamayo.yaml"),
             *[arg for k, v in TINY.items() for arg in ("--param", f"{k}:={v}")], "--param", "num_samples:=3"],
            cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True, text=True, timeout=600)
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()


# The foreign layout (names, rates, frame, jitter) and determinism under load are the ROS-free pipeline's; the
# rclpy message and serialization path is test_lockstep_replay_publishes_one_output_per_new_input's too.
@pytest.mark.distro_independent
def test_lockstep_replay_of_a_foreign_bag_is_bitwise_identical_alone_and_beside_cpu_hogs(foreign_bag, tmp_path):
    alone = replay_cli(foreign_bag, tmp_path / "alone")
    loaded = replay_cli(foreign_bag, tmp_path / "loaded", cpu_hogs=2)
    assert alone.returncode == 0 and loaded.returncode == 0, alone.stdout + alone.stderr + loaded.stderr
    # Ticks at 0.5 ... 5.5 s: the newest 15 Hz frame at 1.5 s is 1.467 s, short of 1.5 s of history; the tick
    # at 5.5 s finds only frames older than max_input_age.
    assert ("replay: 11 ticks: 7 published, 4 not ready (odometry does not cover the history: 3, stale input: 1)"
            in alone.stdout), alone.stdout
    first, second = outputs(tmp_path / "alone"), outputs(tmp_path / "loaded")
    assert len(first) == len(second) and first == second
    summary = evaluate([tmp_path / "alone"], odometry_topic="/vehicle/odometry")
    assert summary["outputs"] == 7 and summary["metrics"]["1s"]["ade_m"] < 50  # in `map`, 1 km from its origin


def test_replay_names_topics_the_bag_lacks(tmp_path):
    bag = write_bag(tmp_path / "drive", duration_s=1.0)
    with pytest.raises(BagError, match=r"lacks topics \['/cameras/front_wide/image'\]"):
        replay_lockstep(bag, tmp_path / "out", parameters.from_values(TINY),
                        camera_topics=[CAMERA_TOPICS[0], "/cameras/front_wide/image", *CAMERA_TOPICS[2:]])
    assert not (tmp_path / "out").exists()


def test_replay_cli_says_why_nothing_was_published_and_leaves_no_folder_behind(tmp_path, capsys):
    bag = write_bag(tmp_path / "short", duration_s=1.0)  # shorter than the 1.5 s history
    args = [str(bag), "--out", str(tmp_path / "out"), *[a for k, v in TINY.items() for a in ("--param", f"{k}:={v}")]]
    assert main(args) == 1
    out = capsys.readouterr().out
    assert "2 ticks: 0 published, 2 not ready (odometry does not cover the history: 2)" in out
    assert "NO outputs were published" in out and "Traceback" not in out
    with pytest.raises(SystemExit) as usage_error:  # argparse: exit 2 with the reason, no traceback
        main([str(tmp_path / "missing_bag"), "--out", str(tmp_path / "out2")])
    assert usage_error.value.code == 2 and "missing_bag does not exist" in capsys.readouterr().err
    assert main([*args[:2], str(tmp_path / "out3"), "--param", "rate_hz:=fast"]) == 2
    assert "rate_hz='fast': expected type float" in capsys.readouterr().err
    assert not (tmp_path / "out3").exists()


@pytest.fixture
def node_process():
    env = dict(os.environ, PYTHONPATH=str(REPO))  # conftest set the loopback DDS environment
    base_topics = [t.removesuffix("/compressed") for t in CAMERA_TOPICS]
    proc = subprocess.Popen(
        [sys.executable, "-m", "alpamayo_ros.node", "--ros-args", "-p", "use_sim_time:=true",
         "-p", f"camera_topics:=[{','.join(base_topics)}]", *[a for k, v in TINY.items() for a in ("-p", f"{k}:={v}")]],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    yield proc
    log = stop(proc)
    assert proc.returncode == 0, log[-3000:]


def test_realtime_replay_drives_a_running_node_over_dds(tmp_path, node_process):
    from alpamayo_ros.tools.replay_dds import replay_realtime

    bag = write_bag(tmp_path / "drive", duration_s=BAG_S)
    counts = replay_realtime(bag, tmp_path / "out", camera_topics=CAMERA_TOPICS)
    assert counts.published >= 1 and counts.ticks, counts
    assert evaluate([tmp_path / "out"])["outputs"] == counts.published

"""End to end: sample bag -> replay (lockstep, sim time) into the node process -> output bag -> evaluate."""

import os
import subprocess
import sys

import pytest

pytest.importorskip("rclpy", reason="rclpy is not installed")
pytest.importorskip("alpamayo_msgs.msg", reason="alpamayo_msgs is not built (make test builds it)")

from alpamayo_ros.tools.bag_io import BagError  # noqa: E402
from alpamayo_ros.tools.evaluate import evaluate  # noqa: E402
from alpamayo_ros.tools.make_sample_bag import START_NS, camera_topics_of, write_bag  # noqa: E402
from alpamayo_ros.tools.processes import stop  # noqa: E402
from alpamayo_ros.tools.replay import replay  # noqa: E402
from conftest import REPO  # noqa: E402

CAMERA_TOPICS = list(camera_topics_of(raw=False))
BAG_S = 4.0
NS = 1_000_000_000


@pytest.fixture
def node_process():
    env = dict(os.environ, PYTHONPATH=str(REPO), FASTDDS_DEFAULT_PROFILES_FILE=str(REPO / "config" / "fastdds_profile.xml"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "alpamayo_ros.node", "--ros-args", "-p", "device:=cpu", "-p", "dtype:=float32",
         "-p", "use_sim_time:=true", "-p", "image_transport:=compressed", "-p", f"camera_topics:=[{','.join(CAMERA_TOPICS)}]",
         "-p", "max_reasoning_tokens:=4", "-p", "num_samples:=2", "-p", "rate_hz:=2.0"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    yield proc
    log = stop(proc)
    assert proc.returncode == 0, log[-3000:]


def test_lockstep_replay_publishes_one_output_per_new_input(tmp_path, node_process):
    bag = write_bag(tmp_path / "drive", duration_s=BAG_S, storage="sqlite3")
    counts = replay(bag, tmp_path / "out", mode="lockstep", tick_hz=2.0, camera_topics=CAMERA_TOPICS)
    final = {tick: outcomes[-1] for tick, outcomes in counts.ticks.items()}
    published = [t for t, o in final.items() if o == 3]
    # t0 needs 1.5 s of history: inputs at 1.5, 2.0, ..., 4.0 s; the step after the bag's end has no new frame.
    assert counts.published == len(published) == 6 and counts.steps_without_tick == 0, counts
    summary = evaluate([tmp_path / "out"])
    assert summary["outputs"] == 6
    assert summary["metrics"]["1s"]["n"] == 4  # t0 of 3.5 and 4.0 s: the 4 s bag ends before t0 + 1 s
    assert summary["metrics"]["1s"]["ade_m"] is not None and summary["metrics"]["3s"]["n"] == 0
    assert summary["ticks"]["published"] == 6 and summary["ticks"]["dropped_busy"] == 0


def test_replay_names_topics_the_bag_lacks(tmp_path):
    bag = write_bag(tmp_path / "drive", duration_s=1.0)
    with pytest.raises(BagError, match=r"lacks topics \['/cameras/front_wide/image'\]"):
        replay(bag, tmp_path / "out", camera_topics=["/cameras/cross_left/image/compressed", "/cameras/front_wide/image",
                                                    "/cameras/cross_right/image/compressed",
                                                    "/cameras/front_tele/image/compressed"])
    assert START_NS % NS == 0

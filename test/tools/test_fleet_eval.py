"""Fleet evaluation on a local Ray (2 CPUs, one session for the module): bad bags recorded, dead workers retried,
re-runs resumed, and every bag's outputs the same bytes as `tools.replay` alone."""

import importlib.util
import os
import signal
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("rclpy", reason="rclpy is not installed")
pytest.importorskip("alpamayo_msgs.msg", reason="alpamayo_msgs is not built (make test builds it)")

from test_replay import TINY, outputs  # noqa: E402

from alpamayo_ros import parameters  # noqa: E402
from alpamayo_ros.pipeline.pose_history import HistoryGap  # noqa: E402
from alpamayo_ros.tools import replay  # noqa: E402
from alpamayo_ros.tools.evaluate import read_bag, score, summarise  # noqa: E402
from alpamayo_ros.tools.fleet_bag import ATTEMPTS, RESULT  # noqa: E402
from alpamayo_ros.tools.fleet_eval import (  # noqa: E402
    find_bags,
    jobs_for,
    main,
    run_fleet,
    start_ray,
    stop_ray,
    write_report,
)
from alpamayo_ros.tools.fleet_report import HORIZONS, METRICS  # noqa: E402
from alpamayo_ros.tools.make_sample_bag import write_bag  # noqa: E402

PARAMS = parameters.from_values(TINY)
# Fleet means combine per-bag float64 means weighted by their counts: they differ from one mean over all outputs
# by float64 rounding of sums of a few metres.
COMBINED_TOL_M = 1e-12
KILL_POLL_S = 0.02
KILL_WAIT_S = 120.0
# /proc/net/tcp{,6}: 127.0.0.1, ::1, ::ffff:127.0.0.1
LOOPBACK_HEX = {"0100007F", "00000000000000000000000001000000", "0000000000000000FFFF00000100007F"}
TCP_LISTEN = "0A"


@pytest.fixture(scope="module")
def ray_session():
    # Skip here, not at import (a module skipping at import skips the whole directory under launch_testing's
    # collector, see test_suite_guards), and without importing ray: start_ray sets its environment first.
    if importlib.util.find_spec("ray") is None:
        pytest.skip("ray is not installed")
    start_ray(None, num_cpus=2)
    yield
    stop_ray()


def descendants(pid: int) -> set[int]:
    """Every process below `pid` (Ray's GCS, raylet, workers and agents below this test's process)."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # ended meanwhile
        parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def listening_addresses(pids: set[int]) -> list[str]:
    """The local addresses (hex, as /proc/net/tcp{,6} write them) of the TCP sockets `pids` listen on."""
    inodes = set()
    for pid in pids:
        try:
            links = [os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()]
        except OSError:
            continue
        inodes.update(link[len("socket:["):-1] for link in links if link.startswith("socket:["))
    rows = [line.split() for table in ("tcp", "tcp6") for line in
            Path(f"/proc/net/{table}").read_text().splitlines()[1:]]
    return [row[1] for row in rows if row[3] == TCP_LISTEN and row[9] in inodes]


@pytest.fixture(scope="module")
def bags(tmp_path_factory):
    """Three tiny drives (the same synthetic stamps: a worker's second bag meets a model that saw the first) and
    one whose mcap is cut in half."""
    root = tmp_path_factory.mktemp("drives")
    for name, seconds, storage in (("a", 2.5, "mcap"), ("b", 3.0, "sqlite3"), ("c", 3.0, "mcap")):
        write_bag(root / name, duration_s=seconds, storage=storage)
    corrupt = write_bag(root / "corrupt", duration_s=2.5)
    mcap = next(corrupt.glob("*.mcap"))
    mcap.write_bytes(mcap.read_bytes()[: mcap.stat().st_size // 2])
    return root


@pytest.fixture(scope="module")
def first_run(ray_session, bags, tmp_path_factory):
    out = tmp_path_factory.mktemp("fleet")
    jobs = jobs_for(find_bags([bags]), out, PARAMS, None, "/alpamayo")
    records = run_fleet(jobs, gpus_per_bag=0, cpus_per_bag=1, progress=False)
    return out, jobs, records


def test_local_ray_listens_on_loopback_only(first_run):
    if not Path("/proc/net/tcp").exists():
        pytest.skip("reads Linux's /proc")
    addresses = listening_addresses(descendants(os.getpid()))
    assert addresses and {a.split(":")[0] for a in addresses} <= LOOPBACK_HEX, addresses


def test_a_corrupt_bag_is_recorded_by_name_and_the_others_are_scored(first_run):
    out, jobs, records = first_run
    by_name = {job.bag.name: record for job, record in zip(jobs, records)}
    assert sorted(by_name) == ["a", "b", "c", "corrupt"]
    assert all(by_name[n]["status"] == "ok" and by_name[n]["evaluation"]["outputs"] >= 3 for n in "abc"), records
    assert by_name["corrupt"]["status"] == "bad_bag" and "BagError: cannot read bag" in by_name["corrupt"]["error"]
    assert by_name["corrupt"]["bag"].endswith("corrupt")
    # The model is loaded once per worker process, not once per bag.
    loaded = [r for r in records if "model_loaded" in r["worker"]]
    assert sum(r["worker"]["model_loaded"] for r in loaded) == len({r["worker"]["pid"] for r in loaded}) <= 2
    summary = write_report(out, records)
    assert summary["ok"] == 3 and [f["status"] for f in summary["failed"]] == ["bad_bag"]
    report = (out / "report.md").read_text()
    assert "| 1s | 3 |" in report and "corrupt | bad_bag | BagError" in report
    assert (out / "error_by_horizon.png").stat().st_size > 0 and (out / "per_bag.png").stat().st_size > 0


def test_fleet_metrics_equal_one_evaluation_over_every_output(first_run):
    out, jobs, records = first_run
    summary = write_report(out, records)
    scored, ticks = [], 0
    for job, record in zip(jobs, records):
        if record["status"] != "ok":
            continue
        history, frame, outputs_, bag_ticks = read_bag([job.result_dir / "replay"], "/odom", "/alpamayo/output",
                                                       "/alpamayo/tick")
        for output in outputs_:
            try:
                scored.append(score(history, frame, output))
            except HistoryGap:
                pass
        ticks += len(bag_ticks)
    together = summarise(scored, {})
    assert summary["outputs"] == together["outputs"] and summary["ticks"]["total"] == ticks
    for horizon in HORIZONS:
        fleet, one = summary["metrics"][horizon], together["metrics"][horizon]
        assert fleet["n"] == one["n"]
        for key in METRICS:
            if one[key] is None:
                assert fleet[key] is None
            else:
                assert abs(fleet[key] - one[key]) < COMBINED_TOL_M, (horizon, key)


def test_a_bag_replayed_by_the_fleet_matches_tools_replay_alone(first_run, tmp_path):
    _, jobs, records = first_run
    # A worker's later bag: its model had already run a bag with the same (camera, stamp) keys.
    job = next(j for j, r in zip(jobs, records) if r["status"] == "ok" and not r["worker"]["model_loaded"])
    args = [str(job.bag), "--out", str(tmp_path / "alone"), *[a for k, v in TINY.items() for a in ("--param", f"{k}:={v}")]]
    assert replay.main(args) == 0
    alone, fleet = outputs(tmp_path / "alone"), outputs(job.result_dir / "replay")
    assert len(alone) > 10 and alone == fleet


def test_a_rerun_skips_every_complete_result(first_run):
    out, jobs, records = first_run
    stamps = {job.bag.name: (job.result_dir / RESULT).stat().st_mtime_ns for job in jobs}
    again = run_fleet(jobs, gpus_per_bag=0, cpus_per_bag=1, progress=False)
    assert all(r["skipped"] for r in again)
    assert [r["status"] for r in again] == [r["status"] for r in records]
    assert {job.bag.name: (job.result_dir / RESULT).stat().st_mtime_ns for job in jobs} == stamps
    assert [r["evaluation"] for r in again if r["status"] == "ok"] == [r["evaluation"] for r in records
                                                                      if r["status"] == "ok"]


def test_a_bag_whose_worker_is_killed_completes_on_retry(ray_session, tmp_path):
    bag = write_bag(tmp_path / "long", duration_s=4.0)
    (job,) = jobs_for([bag], tmp_path / "out", PARAMS, None, "/alpamayo")
    result: list = []
    runner = threading.Thread(target=lambda: result.extend(run_fleet([job], 0, 1, progress=False)))
    runner.start()
    attempts = job.result_dir / ATTEMPTS
    deadline = time.monotonic() + KILL_WAIT_S
    while not (attempts.exists() and attempts.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(KILL_POLL_S)
    killed = int(attempts.read_text().split()[0])
    os.kill(killed, signal.SIGKILL)  # mid-bag: the attempt is recorded before the replay starts
    runner.join(KILL_WAIT_S)
    (record,) = result
    assert record["status"] == "ok" and record["attempts"] == 2 and record["worker"]["pid"] != killed, record
    assert record["evaluation"]["outputs"] == record["replay"]["published"] > 0


def test_cli_says_when_it_finds_no_bags(tmp_path, capsys):
    assert main([str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    assert "no rosbag2 found under" in capsys.readouterr().err
    assert main([str(tmp_path / "missing"), "--out", str(tmp_path / "out")]) == 2
    assert "missing does not exist" in capsys.readouterr().err


def test_find_bags_takes_bag_folders_whole_and_loose_bag_files(tmp_path):
    for path in ("day1/drive_a/metadata.yaml", "day1/drive_a/drive_a_0.mcap", "day1/notes.txt", "day2/b.mcap",
                 "day2/deep/drive_c/metadata.yaml", "day2/deep/drive_c/drive_c_0.db3", "given.bin"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text("")
    found = find_bags([tmp_path / "day1", tmp_path / "day2", tmp_path / "day1" / "drive_a", tmp_path / "given.bin"])
    assert [p.relative_to(tmp_path).as_posix() for p in found] == ["day1/drive_a", "day2/b.mcap",
                                                                   "day2/deep/drive_c", "given.bin"]

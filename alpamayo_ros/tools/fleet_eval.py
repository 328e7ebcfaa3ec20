"""Fleet evaluation: replay and score many recorded drives, one Ray task per bag, on this machine or a Ray cluster.

Each task runs `fleet_bag.run_bag`: the lockstep replay (`tools.replay`) and the evaluation (`tools.evaluate`) of
one bag, into `--out/bags/<bag>-<path hash>/`. A worker process loads the model once and keeps it for its later
bags. A worker that dies (killed, out of memory) has its bag retried (`--max-retries`); a bag that fails by itself
(corrupt, missing topics, nothing published) is recorded with its error and the run goes on. Results are written
as each bag finishes; a re-run with the same `--out` reuses every complete result whose bag content and parameters
are unchanged, so an interrupted run continues where it stopped. At the end: `report.md`, `fleet.json` and plots.

Without `--address` Ray starts on this machine, bound to 127.0.0.1, no dashboard, no usage reporting, and stops
at the end. `--address auto` or `ray://host:10001` joins a running cluster: the bags and `--out` must then be at
the same paths on every node (a shared file system), with this package installed there.

    python -m alpamayo_ros.tools.fleet_eval /data/drives --out fleet_out --params-file config/alpamayo.yaml \\
        --param model_path:=/models/Alpamayo-R1-10B --gpus-per-bag 1
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

from tqdm import tqdm

from alpamayo_ros.parameters import NodeConfig
from alpamayo_ros.tools.fleet_bag import BagJob, params_digest, run_bag, write_result
from alpamayo_ros.tools.fleet_report import aggregate, markdown, plot
from alpamayo_ros.tools.replay import config_from_args

BAG_SUFFIXES = (".mcap", ".db3")
DEFAULT_MAX_RETRIES = 3  # attempts after a worker death, per bag
WAIT_S = 0.5  # the driver collects finished bags (and redraws the bar) at least this often
LOCAL_RAY_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",  # no usage report sent anywhere
    # Linux clusters bind Ray's servers to the machine's address; this (Ray's Windows/macOS default) keeps every
    # server of a local instance on 127.0.0.1.
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
}
LOCAL_RAY_CONFIG = {
    # Ray ends a worker idle for 1 s when it has more than its CPUs' worth (measured: a run after a pause got a
    # fresh process, so a fresh model load); a worker here keeps its model between bags however long it waits.
    "idle_worker_killing_time_threshold_ms": 24 * 3600 * 1000,
    # Ray's workers run at nice 15 by default: beside other busy processes they got a fraction of the CPU that
    # tools.replay gets. Here they run at the priority this command has.
    "worker_niceness": 0,
}


def find_bags(paths: Iterable[Path]) -> list[Path]:
    """Every rosbag2 under `paths`: a folder with metadata.yaml, or a lone .mcap/.db3 file; sorted, each once.

    A path given is a bag if it is a file or holds metadata.yaml; other folders are searched.
    """
    found: set[Path] = set()
    for path in map(Path, paths):
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist")
        found.update(_bags_in(path, given=True))
    return sorted(found)


def _bags_in(path: Path, given: bool = False) -> Iterable[Path]:
    if path.is_file():
        if given or path.suffix in BAG_SUFFIXES:
            yield path.resolve()
    elif (path / "metadata.yaml").is_file():
        yield path.resolve()  # its files are this bag's
    elif path.is_dir():
        for child in sorted(path.iterdir()):
            yield from _bags_in(child)


def result_dir_of(out: Path, bag: Path) -> Path:
    """`out/bags/<name>-<hash of the bag's path>`: readable, and distinct for equal names in different folders."""
    name = re.sub(r"[^A-Za-z0-9._-]", "_", bag.name)
    return Path(out) / "bags" / f"{name}-{hashlib.sha1(str(bag).encode()).hexdigest()[:8]}"


def start_ray(address: str | None, num_cpus: int | None = None, num_gpus: int | None = None) -> None:
    """Join the cluster at `address`, or start Ray on this machine bound to 127.0.0.1 (no dashboard)."""
    if address is None:
        if "ray" in sys.modules and any(os.environ.get(k) != v for k, v in LOCAL_RAY_ENV.items()):
            raise RuntimeError("ray was imported before start_ray set its loopback-only environment: a local Ray "
                               "would listen on every interface; call start_ray before importing ray")
        os.environ.update(LOCAL_RAY_ENV)  # before ray is imported: it reads them at import
        # Local workers inherit this environment: they import this package from where this process did.
        package_root = str(Path(__file__).resolve().parents[2])
        paths = os.environ.get("PYTHONPATH", "").split(os.pathsep)
        if package_root not in paths:
            os.environ["PYTHONPATH"] = os.pathsep.join([package_root, *filter(None, paths)])
    import ray

    if address is None:
        ray.init(num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=False, logging_level="warning",
                 _node_ip_address="127.0.0.1", _system_config=LOCAL_RAY_CONFIG)
    else:
        ray.init(address=address, logging_level="warning")


def stop_ray() -> None:
    """Disconnect; a Ray started by `start_ray` on this machine stops with it."""
    import ray

    ray.shutdown()


def run_fleet(jobs: list[BagJob], gpus_per_bag: float, cpus_per_bag: float, max_retries: int = DEFAULT_MAX_RETRIES,
              progress: bool = True, on_result: Callable[[dict], None] | None = None) -> list[dict]:
    """Run every job as a Ray task (Ray already started); return the result records in job order.

    A bag whose worker died more than `max_retries` times gets a `lost` record (written here, retried next run).
    """
    import ray

    # max_calls=0: GPU tasks would otherwise get a fresh process (and model load) per bag.
    task = ray.remote(num_cpus=cpus_per_bag, num_gpus=gpus_per_bag, max_retries=max_retries, retry_exceptions=False,
                      max_calls=0)(run_bag)
    pending = {task.remote(job): i for i, job in enumerate(jobs)}
    records: list[dict | None] = [None] * len(jobs)
    failed = 0
    with tqdm(total=len(jobs), unit="bag", desc="fleet", disable=not progress, file=sys.stderr) as bar:
        while pending:
            finished, _ = ray.wait(list(pending), num_returns=len(pending), timeout=WAIT_S)
            for ready in finished:
                i = pending.pop(ready)
                records[i] = _record(ready, jobs[i], max_retries)
                failed += records[i]["status"] != "ok"
                bar.set_postfix(done=bar.n + 1 - failed, failed=failed, refresh=False)
                bar.update()
                if on_result is not None:
                    on_result(records[i])
    return records


def _record(ref, job: BagJob, max_retries: int) -> dict:
    """A finished task's record; a task whose worker died on every attempt gets a `lost` one, written here."""
    import ray

    try:
        return ray.get(ref)
    except ray.exceptions.RayError as exc:
        record = {"bag": str(job.bag), "params_sha256": job.params_sha256, "status": "lost",
                  "error": f"{type(exc).__name__}: the worker died {max_retries + 1} times: {exc}", "skipped": False}
        job.result_dir.mkdir(parents=True, exist_ok=True)
        write_result(job.result_dir, record)
        return record


def write_report(out: Path, records: list[dict]) -> dict:
    """fleet.json (summary and every record), the plots and report.md in `out`; returns the summary."""
    summary = aggregate(records)
    plots = plot(summary, records, Path(out))
    (Path(out) / "fleet.json").write_text(json.dumps({"summary": summary, "bags": records}, indent=2))
    (Path(out) / "report.md").write_text(markdown(summary, plots))
    return summary


def jobs_for(bags: list[Path], out: Path, cfg: NodeConfig, camera_topics: list[str] | None, node: str,
             rerun_failed: bool = False) -> list[BagJob]:
    """One BagJob per bag, all with the same parameters."""
    cameras = tuple(camera_topics) if camera_topics else None
    digest = params_digest(cfg, cameras, node)
    return [BagJob(bag=bag, result_dir=result_dir_of(out, bag), cfg=cfg, params_sha256=digest, camera_topics=cameras,
                   node=node, rerun_failed=rerun_failed) for bag in bags]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bags", type=Path, nargs="+", metavar="BAG_OR_DIR",
                        help="rosbag2 folders or .mcap/.db3 files, or folders searched for them")
    parser.add_argument("--out", type=Path, required=True, help="result folder (a re-run reuses complete results)")
    parser.add_argument("--address", default=None, help="Ray cluster to join (auto, ray://host:port); "
                        "default: start Ray on this machine")
    parser.add_argument("--gpus-per-bag", type=float, default=None,
                        help="GPUs a bag's task holds (fractions share one); default: 1 for a cuda device, else 0")
    parser.add_argument("--cpus-per-bag", type=float, default=1.0, help="CPUs a bag's task holds")
    parser.add_argument("--num-cpus", type=int, default=None, help="local Ray only: CPUs it may use (default: all)")
    parser.add_argument("--max-retries", type=int, default=DEFAULT_MAX_RETRIES,
                        help="re-runs of a bag whose worker died")
    parser.add_argument("--rerun-failed", action="store_true", help="replay bags recorded as bad_bag again too")
    parser.add_argument("--tick-hz", type=float, default=None, help="ticks per bag second (default: rate_hz)")
    parser.add_argument("--camera-topics", nargs=4, default=None, metavar="TOPIC",
                        help="the 4 image topics in the bags, model order (default: the parameters' topics)")
    parser.add_argument("--odometry-topic", default=None, help="default: the parameters' odometry_topic")
    parser.add_argument("--params-file", type=Path, default=None, help="node parameter YAML")
    parser.add_argument("--param", action="append", default=[], metavar="NAME:=VALUE", help="parameter override")
    parser.add_argument("--node", default="/alpamayo", help="output topic prefix")
    args = parser.parse_args(argv)
    try:
        cfg = config_from_args(args)
        bags = find_bags(args.bags)
    except (ValueError, FileNotFoundError) as exc:
        print(f"fleet_eval: {exc}", file=sys.stderr)
        return 2
    if not bags:
        print(f"fleet_eval: no rosbag2 found under {[str(p) for p in args.bags]}", file=sys.stderr)
        return 2
    gpus = args.gpus_per_bag if args.gpus_per_bag is not None else (1.0 if cfg.device.startswith("cuda") else 0.0)
    args.out.mkdir(parents=True, exist_ok=True)
    jobs = jobs_for(bags, args.out.resolve(), cfg, args.camera_topics, args.node, args.rerun_failed)
    print(f"fleet_eval: {len(jobs)} bags, {args.cpus_per_bag:g} CPU and {gpus:g} GPU each, "
          f"{'on this machine' if args.address is None else f'on the cluster at {args.address}'}", file=sys.stderr)
    start_ray(args.address, num_cpus=args.num_cpus)
    try:
        records = run_fleet(jobs, gpus, args.cpus_per_bag, args.max_retries)
    finally:
        stop_ray()
    summary = write_report(args.out, records)
    print(f"fleet_eval: {summary['bags']} bags: {summary['ok']} evaluated, {len(summary['failed'])} failed "
          f"({summary['skipped']} results taken from an earlier run); report {args.out / 'report.md'}")
    for failure in summary["failed"]:
        print(f"  {failure['status']}: {failure['bag']}: {failure['error'].splitlines()[0]}")
    return 0 if summary["ok"] and not summary["failed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())

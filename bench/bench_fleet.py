"""Fleet evaluation throughput: the same bags evaluated in this process without Ray, then as Ray tasks with 1 and 2
workers at a time (local Ray; torch_threads 1 in every worker).

Every worker first evaluates one bag (its model load), so the timed runs compare warm workers. Ray's overhead per
bag is the 1-worker run's wall time minus the time spent inside the tasks, per bag (scheduling, argument and result
transfer, result collection); the difference to the serial in-process run per bag is printed beside it. On a shared
machine the 2-worker figure depends on what else runs: the load average is recorded.

    python bench/bench_fleet.py [--bags 8] [--duration 16] [--smoke]
Prints a table and writes JSON to bench/results/bench_fleet.json (--out to change).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from alpamayo_ros.ros_env import loopback_dds_env  # noqa: E402

loopback_dds_env()  # rclpy's serializer is used; never multicast

import machine_report  # noqa: E402  (bench/, the script's own folder)

from alpamayo_ros import parameters  # noqa: E402
from alpamayo_ros.tools.fleet_bag import run_bag  # noqa: E402
from alpamayo_ros.tools.fleet_eval import jobs_for, run_fleet, start_ray, stop_ray  # noqa: E402
from alpamayo_ros.tools.make_sample_bag import write_bag  # noqa: E402

# The README demo's replay settings (tools/demo.py) with the tiny random model, on the CPU.
DEMO = {"model_path": "tiny-random", "image_transport": "compressed", "device": "cpu", "dtype": "float32", "num_samples": 3,
        "max_reasoning_tokens": 32, "rate_hz": 2.0, "selection": "medoid", "torch_threads": 1}
SMOKE = {**DEMO, "num_samples": 2, "max_reasoning_tokens": 4}
SMOKE_BAGS, SMOKE_DURATION_S = 2, 2.5
WORKER_CPUS = 2  # the local Ray's CPUs: 2 workers at 1 CPU per bag, 1 worker at 2


def timed_run(label: str, bags: list[Path], root: Path, cfg, cpus_per_bag: float | None) -> dict:
    """Evaluate `bags` into a fresh folder: in this process (cpus_per_bag None) or as Ray tasks."""
    out = root / label.replace(" ", "_")
    jobs = jobs_for(bags, out, cfg, None, "/alpamayo")
    started = time.perf_counter()
    if cpus_per_bag is None:
        records = [run_bag(job) for job in jobs]
    else:
        records = run_fleet(jobs, gpus_per_bag=0, cpus_per_bag=cpus_per_bag, progress=False)
    wall = time.perf_counter() - started
    failed = [r["error"] for r in records if r["status"] != "ok"]
    if failed:
        raise RuntimeError(f"{label}: {len(failed)} bag(s) failed, first: {failed[0]}")
    in_task = sum(r["seconds"] for r in records)
    return {"label": label, "bags": len(bags), "wall_s": round(wall, 3), "in_task_s": round(in_task, 3),
            "bags_per_hour": round(len(bags) * 3600 / wall, 1),
            "workers": len({r["worker"]["pid"] for r in records}),
            "model_loads": sum(r["worker"]["model_loaded"] for r in records),
            "outputs": sum(r["evaluation"]["outputs"] for r in records)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bags", type=int, default=8)
    parser.add_argument("--duration", type=float, default=16.0, help="seconds per bag (the demo's 16)")
    parser.add_argument("--smoke", action="store_true", help="2 short bags, a tiny decode (checks the script works)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "bench_fleet.json")
    args = parser.parse_args(argv)
    values = SMOKE if args.smoke else DEMO
    n_bags, duration = (SMOKE_BAGS, SMOKE_DURATION_S) if args.smoke else (args.bags, args.duration)
    cfg = parameters.from_values(values)
    root = Path(tempfile.mkdtemp(prefix="bench_fleet_"))
    try:
        bags = [write_bag(root / "bags" / f"drive{i:02d}", duration_s=duration, seed=i) for i in range(n_bags)]
        started = time.perf_counter()
        start_ray(None, num_cpus=WORKER_CPUS)
        ray_start_s = time.perf_counter() - started
        try:
            warm = timed_run("warm-up", bags[:WORKER_CPUS], root, cfg, cpus_per_bag=1)  # each worker loads its model
            run_bag(jobs_for(bags[:1], root / "warm-up-here", cfg, None, "/alpamayo")[0])  # and this process
            runs = [timed_run("serial, no Ray", bags, root, cfg, None),
                    timed_run("Ray, 1 worker", bags, root, cfg, cpus_per_bag=WORKER_CPUS),
                    timed_run("Ray, 2 workers", bags, root, cfg, cpus_per_bag=1)]
        finally:
            stop_ray()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    serial, one, two = runs
    ratios = {"throughput 2 workers / 1 worker": round(one["wall_s"] / two["wall_s"], 3),
              "Ray overhead per bag [s] (1-worker wall - time in tasks)":
                  round((one["wall_s"] - one["in_task_s"]) / n_bags, 3),
              "1 worker vs serial per bag [s]": round((one["wall_s"] - serial["wall_s"]) / n_bags, 3)}
    print(f"{n_bags} bags of {duration:g} s, {values['num_samples']} samples, {values['max_reasoning_tokens']} "
          f"reasoning tokens, {values['rate_hz']:g} Hz ticks; Ray start {ray_start_s:.1f} s; warm-up {warm['wall_s']} s")
    print(f"{'run':<16} {'wall [s]':>9} {'in tasks [s]':>13} {'bags/hour':>10} {'workers':>8} {'model loads':>12}")
    for run in runs:
        print(f"{run['label']:<16} {run['wall_s']:>9.1f} {run['in_task_s']:>13.1f} {run['bags_per_hour']:>10.1f} "
              f"{run['workers']:>8} {run['model_loads']:>12}")
    for name, value in ratios.items():
        print(f"{name}: {value}")
    report = {"bags": n_bags, "duration_s": duration, "parameters": values, "smoke": args.smoke,
              "ray_start_s": round(ray_start_s, 3), "warm_up": warm, "runs": runs, "ratios": ratios,
              **machine_report.machine()}
    machine_report.write(args.out, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Closed-loop driving: every scenario of the synthetic world, held-out seeds, the default model and the random one.

Each run is `tools.closed_loop` in lockstep (the node's tick engine on simulated time, a fixed latency so
the table is reproducible). A run passes when the car never leaves its lane by more than 1.0 m, never
crosses the stop line on red, never touches the lead vehicle and gets at least 90 % as far as the world's
expert driver. The real-time factor (simulated s / wall s, rendering and JPEG included) is measured on
this machine; on a shared machine it varies with the load.

    python bench/bench_closed_loop.py [--seeds 1000 1001 1002] [--latency fixed:300] [--models default random] [--smoke]
Prints a table and writes JSON to bench/results/bench_closed_loop.json (--out to change).

A candidate driver: `--models default --param model_path:=DIR --param dtype:=float32`. The embedded driver
runs in float32 whatever `dtype` says; a checkpoint named by model_path runs in the node's `dtype`, bfloat16
by default, and the same weights then drive differently (session 17: 9 and 11 of 21 in bfloat16, 8 and 9 in
float32).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from alpamayo_ros.ros_env import loopback_dds_env  # noqa: E402

loopback_dds_env()  # rclpy's serializer is used; never multicast

import machine_report  # noqa: E402  (bench/, the script's own folder)

from alpamayo_ros.model.loading import tiny  # noqa: E402
from alpamayo_ros.pipeline.engine import build_model  # noqa: E402
from alpamayo_ros.pipeline.outcome import TickCounts  # noqa: E402
from alpamayo_ros.tools import world as world_module  # noqa: E402
from alpamayo_ros.tools.closed_loop import metrics  # noqa: E402
from alpamayo_ros.tools.closed_loop.__main__ import node_config  # noqa: E402
from alpamayo_ros.tools.closed_loop.lockstep import Latency, RunResult, run_lockstep  # noqa: E402
from alpamayo_ros.tools.closed_loop.loop import simulate  # noqa: E402
from alpamayo_ros.tools.closed_loop.oracle import LaneCentreOracle  # noqa: E402
from alpamayo_ros.tools.make_sample_bag import START_NS  # noqa: E402

HELD_OUT_SEEDS = (1000, 1001, 1002)  # the driver trains on seeds below 1000 (tools/train_driver.py)
SMOKE_DURATION_S = 2.5


def causes_named(trace) -> dict[str, int]:
    """How many published plans' reasoning names each of the world's causes ("left curve", "red", ...; "none":
    no known cause): on a curve_right run, how often the driver said left."""
    causes = sorted(set(world_module.COC_LABELS.values()))
    named = dict.fromkeys([*causes, "none"], 0)
    for _, plan in trace.plans:
        for cause in [c for c in causes if c in plan.reasoning] or ["none"]:
            named[cause] += 1
    return {cause: n for cause, n in named.items() if n}


def run_model(label: str, model, cfg, latency: Latency, scenarios, seeds, duration_s: float | None) -> list[dict]:
    rows = []
    for scenario in scenarios:
        for seed in seeds:
            params = world_module.make_scenario(scenario, seed)
            if duration_s is not None:
                params = dataclasses.replace(params, duration_s=duration_s)
            world = world_module.World(params)
            if model == "oracle":
                trace = simulate(world, LaneCentreOracle(world, START_NS, cfg.rate_hz), START_NS, True,
                                 keep_frames=False, cameras=False)
                result = RunResult(trace, TickCounts(), "lane-centre oracle")
            else:
                result = run_lockstep(world, cfg, latency, model=model, keep_frames=False)
            row = metrics.compute(result.trace, world, result.counts)
            row.update(model=label, passed=metrics.passes(row), causes_named=causes_named(result.trace),
                       compute_p50_s=round(statistics.median(result.compute_s), 4) if result.compute_s else None)
            rows.append(row)
            print(f"{label:>8} {scenario:>12} {seed}: {'PASS' if row['passed'] else 'fail'} "
                  f"progress {row['progress_ratio']} offset {row['max_lane_offset_m']} red {row['red_violations']} "
                  f"collisions {row['collisions']} RTF {row['real_time_factor']}  ({row['end_reason']}); named "
                  f"{row['causes_named']}", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=list(HELD_OUT_SEEDS))
    parser.add_argument("--scenarios", nargs="+", default=list(world_module.SCENARIOS),
                        choices=world_module.SCENARIOS)
    parser.add_argument("--latency", default="fixed:300", help="measured | fixed:MS (default %(default)s)")
    parser.add_argument("--rate-hz", type=float, default=2.0)
    parser.add_argument("--param", action="append", default=[], metavar="NAME:=VALUE", help="node parameter")
    parser.add_argument("--models", nargs="+", default=["default", "random", "oracle"],
                        choices=("default", "random", "oracle"),
                        help="default: the package's default model (model_path empty); random: tiny random weights; "
                             "oracle: the lane centre at the expert's pace, no model (the controller's bound)")
    parser.add_argument("--smoke", action="store_true", help="one short run per model (checks the script works)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "bench_closed_loop.json")
    args = parser.parse_args(argv)
    latency = Latency.parse(args.latency)
    overrides = ["device:=cpu", *args.param]
    duration = None
    if args.smoke:
        args.scenarios, args.seeds, duration = ["lead_brake"], args.seeds[:1], SMOKE_DURATION_S
        overrides += ["max_reasoning_tokens:=8", "diffusion_steps:=4"]
    cfg = node_config(None, overrides, args.rate_hz)
    model, what = build_model(cfg.model_settings) if "default" in args.models else (None, "not run")
    print(f"default model: {what}; latency {latency.label}; rate {cfg.rate_hz:g} Hz; seeds {args.seeds}")
    rows = []
    if "default" in args.models:
        rows += run_model("default", model, cfg, latency, args.scenarios, args.seeds, duration)
    if "random" in args.models:
        rows += run_model("random", tiny(seed=cfg.seed), cfg, latency, args.scenarios, args.seeds, duration)
    if "oracle" in args.models:
        rows += run_model("oracle", "oracle", cfg, latency, args.scenarios, args.seeds, duration)
    summary = {}
    for label in sorted({r["model"] for r in rows}):
        mine = [r for r in rows if r["model"] == label]
        simulated, wall = sum(r["simulated_s"] for r in mine), sum(r["wall_s"] for r in mine)
        summary[label] = {"runs": len(mine), "passed": sum(r["passed"] for r in mine),
                          "completed": sum(r["completed"] for r in mine),
                          "max_lane_offset_m": max(r["max_lane_offset_m"] for r in mine),
                          "red_violations": sum(r["red_violations"] for r in mine),
                          "collisions": sum(r["collisions"] for r in mine),
                          "min_progress_ratio": min(r["progress_ratio"] or 0.0 for r in mine),
                          "real_time_factor": round(simulated / wall, 3) if wall else None}
    print()
    print(metrics.table(rows, ("model", "scenario", "seed", "passed", "completed", "progress_ratio",
                               "max_lane_offset_m", "red_violations", "min_gap_m", "collisions",
                               "max_long_decel_mps2", "max_lat_accel_mps2", "published", "not_ready", "dropped",
                               "real_time_factor")))
    print()
    for label, s in summary.items():
        print(f"{label}: {s['passed']}/{s['runs']} passed, {s['completed']} completed, max lane offset "
              f"{s['max_lane_offset_m']} m, {s['red_violations']} red violations, {s['collisions']} collisions, "
              f"least progress {s['min_progress_ratio']:.0%} of the expert, real-time factor {s['real_time_factor']}")
    report = {"model": what, "latency": latency.label, "rate_hz": cfg.rate_hz, "seeds": args.seeds,
              "scenarios": args.scenarios, "smoke": args.smoke, **machine_report.machine(),
              "torch_threads": cfg.torch_threads, "summary": summary, "runs": rows}
    machine_report.write(args.out, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

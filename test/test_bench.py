"""Every benchmark runs (`--smoke`: tiny sizes, a few iterations) and reports what it measures; timings are never
asserted, only that each stage was measured and the report has its parts."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parents[1] / "bench"
TIMEOUT_S = 600  # a loaded 2-core machine; each smoke run takes seconds to a few minutes there
# Pipeline and direct baselines extrapolate the same poses (the 50 Hz odometry hits t0 - 0.2 s exactly), from
# float64 odometry and a float32 history: they differ by float32 rounding of ~100 m positions, far below this.
BASELINE_TOL_M = 1e-3


def smoke(tmp_path: Path, script: str, *extra: str) -> dict:
    out = tmp_path / f"{script}.json"
    result = subprocess.run([sys.executable, str(BENCH / script), "--smoke", "--out", str(out), *extra],
                            capture_output=True, text=True, timeout=TIMEOUT_S)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return json.loads(out.read_text())


def test_model_benchmark_reports_each_option_against_the_plain_path(tmp_path):
    report = smoke(tmp_path, "bench_model.py", "--device", "cpu")["reports"][0]
    assert list(report["results"]) == ["plain", "vision reuse", "device preprocessing", "6 shared reasoning",
                                       "reference-shaped", "route", "guided route"]
    for label, stats in report["results"].items():
        assert all(stats[stage]["p50"] > 0 and stats[stage]["p90"] >= stats[stage]["p50"]
                   for stage in ("vision_ms", "decode_ms", "expert_ms", "total_ms")), label
        assert stats["decode_tokens"] == [3], label  # equal work in every option, the baseline's included
        assert stats["arithmetic_ms"] > 0, label  # the profiled tick: time in the kernels an exact path runs
    assert report["results"]["guided route"]["unguided_ms"]["p50"] > 0  # the second prefix was built
    assert {"vision stage: plain / vision reuse", "total: 6 shared reasoning / plain",
            "cost of guidance, total: guided route / route",
            "speed-up, 1 sample, fresh call: reference-shaped / plain",
            "ceiling, 1 sample, fresh call: reference-shaped / plain's arithmetic"} <= set(report["ratios"])


def test_full_size_benchmark_refuses_to_run_without_a_gpu(tmp_path):
    result = subprocess.run([sys.executable, str(BENCH / "bench_model.py"), "--configs", "full", "--device", "cpu",
                             "--out", str(tmp_path / "x.json")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "needs a GPU" in result.stderr


def test_ingest_benchmark_times_the_callback_and_a_dds_run(tmp_path):
    report = smoke(tmp_path, "bench_ingest.py")
    assert set(report["callbacks"]) == {"raw rgb8", "JPEG"}
    assert all(c["callback_us_p50"] > 0 and c["decode_on_arrival_us_p50"] > 0 for c in report["callbacks"].values())
    (run,) = report["dds"]
    assert run["ticks"] >= 1 and sum(run["outcomes"].values()) == run["ticks"]
    assert run["odometry_rate_hz"] is not None  # the node's own /diagnostics arrived


def test_soak_benchmark_samples_memory_and_latency(tmp_path):
    report = smoke(tmp_path, "bench_soak.py")
    assert report["node_alive"] and len(report["memory_samples"]) >= 2
    assert report["outputs"] >= 1 and report["ticks"]["model_error"] == 0


def test_driver_benchmark_smoke_scores_every_path(tmp_path):
    """bench_driver --smoke: one held-out red-light drive through bag, replay and evaluate, and the direct calls."""
    report = smoke(tmp_path, "bench_driver.py")
    assert set(report["summaries"]) == {"pipeline", "direct", "direct, cameras blanked"}
    pipeline = report["summaries"]["pipeline"]
    assert pipeline["overall"]["n"] > 0 and pipeline["overall"]["min_ade_m@6.4s"] > 0
    # Both paths score the same ticks against the same truth: the baseline columns are equal.
    direct = report["summaries"]["direct"]["overall"]
    assert abs(direct["baseline_fde_m@6.4s"] - pipeline["overall"]["baseline_fde_m@6.4s"]) < BASELINE_TOL_M


def test_plan_fit_benchmark_smoke_reports_both_splits(tmp_path):
    """bench_plan_fit --smoke: one training and one held-out red-light tick, direct calls, every metric."""
    report = smoke(tmp_path, "bench_plan_fit.py")
    assert set(report["summary"]) == {"training", "held-out"}
    assert report["seeds"] == {"training": [0], "held-out": [1000]}
    for split in report["summary"].values():
        assert split["all"]["ticks"] == split["red_light"]["ticks"] == 1
        assert split["all"]["end_6_4s_m"] > 0 and split["all"]["spread_m"] >= 0


def test_plan_fit_metrics_read_a_plan_against_the_truth():
    sys.path.insert(0, str(BENCH))
    from bench_plan_fit import path_length, tick_fit

    t = np.arange(1, 65)[:, None] * 0.1
    truth = np.concatenate([10.0 * t, 0.05 * t * t], axis=1)  # 10 m/s, bending left
    assert all(v == 0.0 for v in tick_fit(truth[None], truth).values())
    sideways = tick_fit((truth + [0.0, 1.0])[None], truth)  # the same path 1 m to the left
    assert np.isclose(sideways["sideways_3_2s_m"], 1.0) and np.isclose(sideways["end_6_4s_m"], 1.0)
    assert sideways["length_bias_m"] > 0  # its first step starts 1 m sideways: a longer path
    faster = tick_fit(np.stack([truth * [1.1, 1.0], truth * [0.9, 1.0]]), truth)  # one draw 10 % long, one short
    assert np.isclose(faster["spread_m"], 0.1 * truth[-1, 0], rtol=1e-3)
    assert abs(faster["length_bias_m"]) < 0.01 * path_length(truth)


def test_fleet_benchmark_smoke_times_serial_and_ray_runs(tmp_path):
    """bench_fleet --smoke: 2 short bags in this process, then on a local Ray with 1 and 2 workers, all warm."""
    report = smoke(tmp_path, "bench_fleet.py")
    assert [run["label"] for run in report["runs"]] == ["serial, no Ray", "Ray, 1 worker", "Ray, 2 workers"]
    assert all(run["outputs"] > 0 and run["model_loads"] == 0 for run in report["runs"])  # workers were warm
    assert report["warm_up"]["model_loads"] == report["warm_up"]["workers"]
    assert set(report["ratios"]) == {"throughput 2 workers / 1 worker",
                                     "Ray overhead per bag [s] (1-worker wall - time in tasks)",
                                     "1 worker vs serial per bag [s]"}


def test_driver_benchmark_scores_each_curve_entry_once():
    """bench_driver's curve entries: one per curve drive, none for other scenarios, every count within the draws."""
    sys.path.insert(0, str(BENCH))
    from bench_driver import ENTRY_DRAWS, curve_entries

    from alpamayo_ros.model.loading import tiny

    entries = curve_entries(tiny(seed=0), ["straight", "curve_right"], [1000])
    (entry,) = entries
    assert (entry["scenario"], entry["seed"]) == ("curve_right", 1000) and entry["truth_y_m"] < -4.0
    assert len(entry["planned_y_m"]) == ENTRY_DRAWS
    assert entry["turned"] == sum(y <= 0.5 * entry["truth_y_m"] for y in entry["planned_y_m"])
    assert 0 <= entry["named"] <= ENTRY_DRAWS

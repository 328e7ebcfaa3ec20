"""The model benchmark runs and reports every stage and ratio (timings themselves are never asserted)."""

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench" / "bench_model.py"


def tiny_report(tmp_path: Path, options: list[str], ticks: int) -> dict:
    """The tiny config's report for these options (3 greedy tokens, CPU)."""
    out = tmp_path / "bench.json"
    subprocess.run([sys.executable, str(BENCH), "--configs", "tiny", "--ticks", str(ticks), "--tokens", "3",
                    "--device", "cpu", "--out", str(out), "--options", *options], check=True, timeout=300,
                   capture_output=True)
    return json.loads(out.read_text())["reports"][0]


def test_model_benchmark_reports_each_option_against_the_plain_path(tmp_path):
    options = ["plain", "vision reuse", "6 shared reasoning"]
    report = tiny_report(tmp_path, options, ticks=2)
    assert list(report["results"]) == options
    for stats in report["results"].values():
        assert all(stats[stage]["p50"] > 0 and stats[stage]["p90"] >= stats[stage]["p50"]
                   for stage in ("vision_ms", "prefill_ms", "decode_ms", "expert_ms", "total_ms"))
        assert stats["decode_tokens"] == [3, 3]  # equal work in every option
    assert {"vision stage: plain / vision reuse", "total: 6 shared reasoning / plain"} <= set(report["ratios"])


def test_full_size_benchmark_refuses_to_run_without_a_gpu(tmp_path):
    result = subprocess.run([sys.executable, str(BENCH), "--configs", "full", "--device", "cpu",
                             "--out", str(tmp_path / "x.json")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "needs a GPU" in result.stderr


def test_reference_shaped_baseline_does_the_options_work_and_is_compared(tmp_path):
    # Greedy tokens through vlm.generate: the baseline decodes as many tokens as the options do.
    options = ["plain", "vision reuse", "reference-shaped"]
    report = tiny_report(tmp_path, options, ticks=1)
    assert [report["results"][label]["decode_tokens"] for label in options] == [[3]] * 3
    assert report["results"]["reference-shaped"]["decode_ms"]["p50"] > 0
    assert {"speed-up, 1 sample, fresh call: reference-shaped / plain",
            "speed-up, 1 sample, tick with reuse: reference-shaped / vision reuse"} <= set(report["ratios"])
    # The profiled ticks (not the timed ones): every option's time in the kernels an exact path runs,
    # measured and of the order of its timed total.
    for label in options:
        stats = report["results"][label]
        assert 0 < stats["arithmetic_ms"] < stats["total_ms"]["max"] * 2
    assert {"ceiling, 1 sample, fresh call: reference-shaped / plain's arithmetic",
            "ceiling, 1 sample, tick with reuse: reference-shaped / vision reuse's arithmetic"} <= set(report["ratios"])

"""Per-stage AlpamayoR1 timings, and shared vs per-sample prefill, as ratios within one run.

Configs: `tiny` (the tests' model) and `medium` (a few M parameters, 16 images of 128x224). Variants:
1 sample; 6 samples sharing one prefill (the cache expanded to 6 rows); 6 samples with 6 prefills
(what `generate(num_return_sequences=6)` does). Greedy decoding of a fixed number of tokens keeps the
work equal across variants. Prints a table and writes JSON to bench/results/.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import torch
import transformers

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from alpamayo_ros.model.config import ActionInProjConfig, ExpertConfig  # noqa: E402
from alpamayo_ros.model.loading import random_model, tiny_config  # noqa: E402
from alpamayo_ros.tools.synthetic import synthetic_drive  # noqa: E402

STAGES = ("vision_ms", "prefill_ms", "decode_ms", "expert_ms", "trajectory_ms")
# (label, samples, share_prefill, reasoning)
VARIANTS = (("1 sample", 1, True, "per_sample"), ("6 shared prefill", 6, True, "per_sample"),
            ("6 per-sample prefill", 6, False, "per_sample"), ("6 shared reasoning", 6, True, "shared"))


def medium_config():
    config, vlm = tiny_config()
    config = dataclasses.replace(
        config, min_pixels=128 * 224, max_pixels=128 * 224, action_in_proj_cfg=ActionInProjConfig(hidden_size=128),
        expert_cfg=ExpertConfig(hidden_size=256, intermediate_size=512, num_attention_heads=8, head_dim=64))
    vlm.text_config.update(dict(hidden_size=512, intermediate_size=1024, num_hidden_layers=4, num_attention_heads=8,
                                num_key_value_heads=4, head_dim=64))
    vlm.text_config.rope_scaling = {"rope_type": "default", "mrope_section": [12, 10, 10], "mrope_interleaved": True}
    vlm.vision_config.update(dict(depth=4, hidden_size=256, intermediate_size=512, num_heads=4, out_hidden_size=512,
                                  num_position_embeddings=256, deepstack_visual_indexes=[1, 2, 3]))
    return config, vlm, (128, 224)


CONFIGS = {"tiny": lambda: (*tiny_config(), (64, 96)), "medium": medium_config}


def summarise(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {"mean": statistics.fmean(values), "p50": statistics.median(values),
            "p90": ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))], "max": ordered[-1]}


def run_config(name: str, runs: int, tokens: int) -> dict:
    config, vlm_config, (height, width) = CONFIGS[name]()
    model = random_model(config, vlm_config, seed=0)
    drive = synthetic_drive(height=height, width=width)
    params = sum(p.numel() for p in model.parameters())
    results = {}
    for label, samples, shared, reasoning in VARIANTS:
        def once():
            start = time.perf_counter_ns()
            pred = model.sample(drive.images, drive.ego_history_xyz, drive.ego_history_rot, num_samples=samples,
                                greedy=True, max_reasoning_tokens=tokens, share_prefill=shared, reasoning=reasoning)
            return pred.timings, (time.perf_counter_ns() - start) / 1e6

        once()  # warm-up
        timings = [once() for _ in range(runs)]
        results[label] = {stage: summarise([getattr(t, stage) for t, _ in timings]) for stage in STAGES}
        results[label]["total_ms"] = summarise([wall for _, wall in timings])
        results[label]["decode_tokens"] = timings[0][0].decode_tokens
    results["vision reuse"] = vision_reuse(model, height, width, runs)
    return {"config": name, "parameters": params, "image_hw": [height, width], "runs": runs, "results": results}


def vision_reuse(model, height: int, width: int, runs: int) -> dict:
    """Vision stage over consecutive ticks: every camera's window moves one frame (4 new images, 12 reused)."""
    frames = [synthetic_drive(height=height, width=width, lane_shift_px=k, seed=k).images[:, 0] for k in range(runs + 5)]
    drive = synthetic_drive(height=height, width=width)

    def tick(k: int, reuse: bool) -> float:
        images = [frames[k + f][cam] for cam in range(4) for f in range(4)]
        keys = [(cam, k + f) for cam in range(4) for f in range(4)] if reuse else None
        pred = model.sample(images, drive.ego_history_xyz, drive.ego_history_rot, greedy=True, max_reasoning_tokens=1,
                            diffusion_steps=1, image_keys=keys)
        return pred.timings.vision_ms

    model.vision_cache.clear()
    tick(0, True)  # fills the cache: steady state from the next tick on
    reused = [tick(k, True) for k in range(1, runs + 1)]
    plain = [tick(k, False) for k in range(1, runs + 1)]
    return {"vision_ms": summarise(reused), "vision_ms_plain": summarise(plain)}


def print_table(report: dict) -> None:
    print(f"\n{report['config']}: {report['parameters'] / 1e6:.2f} M parameters, 16 images "
          f"{report['image_hw'][0]}x{report['image_hw'][1]}, n={report['runs']} (p50 ms)")
    header = f"{'variant':<22}" + "".join(f"{s.removesuffix('_ms'):>11}" for s in STAGES) + f"{'total':>10}"
    print(header)
    reuse = report["results"].pop("vision reuse")
    for label, stats in report["results"].items():
        print(f"{label:<22}" + "".join(f"{stats[s]['p50']:>11.1f}" for s in STAGES) + f"{stats['total_ms']['p50']:>10.1f}")
    r = {k: v["total_ms"]["p50"] for k, v in report["results"].items()}
    pre = {k: v["vision_ms"]["p50"] + v["prefill_ms"]["p50"] for k, v in report["results"].items()}
    ratios = {
        "6 shared reasoning / 1 sample (total)": r["6 shared reasoning"] / r["1 sample"],
        "vision stage, plain / reused at steady state": reuse["vision_ms_plain"]["p50"] / reuse["vision_ms"]["p50"],
        "6 shared / 1 sample (total)": r["6 shared prefill"] / r["1 sample"],
        "6 per-sample / 6 shared (total)": r["6 per-sample prefill"] / r["6 shared prefill"],
        "6 per-sample / 6 shared (vision+prefill)": pre["6 per-sample prefill"] / pre["6 shared prefill"],
    }
    report["ratios"] = ratios
    report["vision_reuse"] = reuse
    print(f"{'vision, 12 of 16 reused':<22}{reuse['vision_ms']['p50']:>11.1f}   (plain {reuse['vision_ms_plain']['p50']:.1f})")
    for label, value in ratios.items():
        print(f"  {label}: {value:.2f}x")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=32, help="reasoning tokens decoded per sample")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "bench_model.json"))
    args = parser.parse_args()
    torch.manual_seed(0)
    reports = []
    for name in args.configs:
        report = run_config(name, args.runs, args.tokens)
        print_table(report)
        reports.append(report)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"device": "cpu", "threads": torch.get_num_threads(), "torch": torch.__version__,
            "transformers": transformers.__version__, "python": platform.python_version(), "dtype": "float32",
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    out.write_text(json.dumps({"meta": meta, "reports": reports}, indent=2))
    print(f"\npeak RSS {meta['peak_rss_mb']:.0f} MB; wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""How far the plans are from the truth where the driver has seen the answer: training drives beside held-out ones.

For each scenario, some training seeds (driver_data.TRAIN_SEEDS, the drives `train_driver` learns from) and some
held-out seeds (HELD_OUT_SEEDS), at the world expert's own states every `--every` seconds: the model is called
directly on `world.model_sample` (images JPEG round-tripped as a bag delivers them) with the node's sampling
settings, `--num-samples` draws per tick. Per draw, against the true 6.4 s future:

- sideways miss at 3.2 s (m): the plan's lateral position in the ego frame at t0 against the truth's;
- end error at 6.4 s (m);
- length bias (m): the plan's 6.4 s path length minus the truth's (+: it runs long, too fast or braking too little);

and per tick the spread (m): the draws' mean distance at 6.4 s from their centroid. Means per scenario and split.
A driver that fits what it trained on has small numbers on the training side; the gap to the held-out side is
what it fails to generalise; the spread is how much one published draw differs from the next.

    python bench/bench_plan_fit.py [--model-path DIR] [--train-seeds 3] [--held-out-seeds 3] [--every 2] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from alpamayo_ros import parameters  # noqa: E402
from alpamayo_ros.model.loading import EMBEDDED_DRIVER_DIR, from_pretrained, tiny  # noqa: E402
from alpamayo_ros.pipeline.runner import sampling_arguments  # noqa: E402
from alpamayo_ros.tools import world as world_module  # noqa: E402
from alpamayo_ros.tools.driver_data import HELD_OUT_SEEDS, TRAIN_SEEDS, jpeg_round_trip  # noqa: E402

SIDEWAYS_AT = int(np.argmin(np.abs(world_module.FUTURE_OFFSETS_S - 3.2)))  # the 3.2 s pose among the 64
METRICS = ("sideways_3_2s_m", "end_6_4s_m", "length_bias_m", "spread_m")
SMOKE_DURATION_S = 6.0  # a short drive; --smoke scores its one tick at t0 = 2 s
RESULTS = REPO / "bench" / "results"


def path_length(xy: np.ndarray) -> np.ndarray:
    """(..., N, 2) poses after t0 -> (...,) metres driven from t0 (the origin) through them."""
    start = np.zeros((*xy.shape[:-2], 1, 2))
    return np.linalg.norm(np.diff(np.concatenate([start, xy], axis=-2), axis=-2), axis=-1).sum(-1)


def tick_fit(draws: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """draws (S, 64, 2) and truth (64, 2), ego frame at t0 -> the tick's metrics (draws averaged)."""
    ends = draws[:, -1]
    return {"sideways_3_2s_m": float(np.abs(draws[:, SIDEWAYS_AT, 1] - truth[SIDEWAYS_AT, 1]).mean()),
            "end_6_4s_m": float(np.linalg.norm(ends - truth[-1], axis=-1).mean()),
            "length_bias_m": float((path_length(draws) - path_length(truth)).mean()),
            "spread_m": float(np.linalg.norm(ends - ends.mean(0), axis=-1).mean())}


def mean_fit(rows: list[dict]) -> dict:
    return {"ticks": len(rows), **{m: float(np.mean([r[m] for r in rows])) for m in METRICS}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-path", default=str(EMBEDDED_DRIVER_DIR), help="checkpoint (default: the embedded driver)")
    parser.add_argument("--scenarios", nargs="+", default=list(world_module.SCENARIOS), choices=world_module.SCENARIOS)
    parser.add_argument("--train-seeds", type=int, default=3, help="the first N training seeds per scenario")
    parser.add_argument("--held-out-seeds", type=int, default=3, help="the first N held-out seeds per scenario")
    parser.add_argument("--every", type=float, default=2.0, help="seconds between ticks, from t0 = 2 s")
    parser.add_argument("--num-samples", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--param", action="append", default=[], metavar="NAME:=VALUE",
                        help="node parameter (sampling: temperature:=0.0, noise_temperature:=0.5, seed:=1)")
    parser.add_argument("--smoke", action="store_true",
                        help="the tiny random model, one red-light drive per split, one tick, 2 draws: the code path")
    parser.add_argument("--out", type=Path, default=RESULTS / "plan_fit.json")
    args = parser.parse_args(argv)
    if args.smoke:
        args.model_path, args.scenarios, args.train_seeds, args.held_out_seeds = "", ["red_light"], 1, 1
        args.num_samples, args.every = 2, SMOKE_DURATION_S
    values = {"device": "cpu", "dtype": "float32", "num_samples": args.num_samples, "torch_threads": args.threads}
    values.update(parameters.parse_override(text) for text in args.param)
    cfg = parameters.from_values(values)
    torch.set_num_threads(args.threads)
    model = from_pretrained(args.model_path) if args.model_path else tiny(seed=0)
    started = time.perf_counter()
    splits = {"training": TRAIN_SEEDS[:args.train_seeds], "held-out": HELD_OUT_SEEDS[:args.held_out_seeds]}
    fits: dict[str, dict[str, list[dict]]] = {split: {} for split in splits}
    for split, seeds in splits.items():
        for scenario in args.scenarios:
            for seed in seeds:
                world = world_module.generate(scenario, seed)
                if args.smoke:
                    world = world_module.World(replace(world.scenario_params, duration_s=SMOKE_DURATION_S))
                for tick, t0_s in enumerate(np.arange(2.0, world.duration_s + 1e-6, args.every)):
                    sample = world.model_sample(float(t0_s))
                    pred = model.sample(jpeg_round_trip(sample.images), sample.ego_history_xyz,
                                        sample.ego_history_rot, **sampling_arguments(cfg.sampling, tick))
                    fits[split].setdefault(scenario, []).append(
                        tick_fit(pred.xyz.numpy()[..., :2], sample.future_xyz[:, :2]))
            print(f"{split} {scenario}: {len(fits[split][scenario])} ticks ({time.perf_counter() - started:.0f} s)",
                  flush=True)
    summary = {split: {"all": mean_fit([r for rows in by.values() for r in rows]),
                       **{scenario: mean_fit(rows) for scenario, rows in by.items()}} for split, by in fits.items()}
    print(f"\n{'':12s} | {'training':^41s} | {'held-out':^41s}")
    print(f"{'scenario':12s} | " + " | ".join(["sideways 3.2s  end 6.4s  length  spread"] * 2))
    for row in ["all", *args.scenarios]:
        cells = [summary[split][row] for split in splits]
        print(f"{row:12s} | " + " | ".join(f"{c['sideways_3_2s_m']:12.2f} {c['end_6_4s_m']:9.2f} "
                                           f"{c['length_bias_m']:+7.2f} {c['spread_m']:7.2f}" for c in cells))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "model_path": args.model_path, "scenarios": args.scenarios, "seeds": {s: list(v) for s, v in splits.items()},
        "every_s": args.every, "num_samples": args.num_samples, "params": args.param, "summary": summary,
        "wall_s": time.perf_counter() - started, "torch": torch.__version__, "machine": platform.machine()}, indent=1))
    print(f"results: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Does the embedded driver drive? Held-out synthetic drives through bag -> lockstep replay -> evaluate.

For every scenario of `tools.world` and each held-out seed (driver_data.HELD_OUT_SEEDS, never trained on):
write the drive's bag (JPEG cameras, odometry), replay it through the node's pipeline in lockstep
(tools/replay.py) and score the published outputs with tools/evaluate.py against the bag's odometry, beside
the constant speed and yaw rate extrapolation of the history. Three more scorings on the same t0s, calling
the model directly on the world's `model_sample` inputs (images JPEG round-tripped at the bag's quality, the
pixels a camera delivers and the driver trained on): with the true images (must agree with the pipeline
within AGREEMENT), and with every camera image blanked (black; should fall to about the baseline).

Reported per path, overall and on the interesting ticks (the future differs from the history: the world's
flag): minADE (over samples) and FDE (published sample) at 3 s and 6.4 s, and the baseline's; on drives
with a stop line, the fraction of ticks where the published trajectory keeps the front bumper before the
line among the ticks where the ground truth does and the baseline would cross it; the fraction of ticks
whose published reasoning contains the world's cause phrase. On the curve drives, at the first tick of each
curve's entry (the one test_driver's curve test uses), how many of 8 sampled plans turn the truth's way at
least half as far and how many of their reasonings name the curve.

    python bench/bench_driver.py [--seeds 2] [--tick-hz 2] [--num-samples 3] [--model-path DIR] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from alpamayo_ros import parameters  # noqa: E402
from alpamayo_ros.model.loading import from_pretrained, tiny  # noqa: E402
from alpamayo_ros.model.training import (  # noqa: E402
    IGNORE,
    TrainingExample,
    cropped_cache,
    flow_matching_loss,
    flow_training_data,
    make_batch,
    token_cross_entropy,
)
from alpamayo_ros.pipeline.outputs import select_sample  # noqa: E402
from alpamayo_ros.pipeline.runner import sampling_arguments  # noqa: E402
from alpamayo_ros.tools import world as world_module  # noqa: E402
from alpamayo_ros.tools.driver_data import HELD_OUT_SEEDS, jpeg_round_trip  # noqa: E402
from alpamayo_ros.tools.driving_scores import (  # noqa: E402
    constant_velocity,
    curve_entry_tick,
    red_light_tick,
    stops_before_line,
    turns_at_entry,
)
from alpamayo_ros.tools.evaluate import read_bag, score  # noqa: E402
from alpamayo_ros.tools.replay import replay_lockstep  # noqa: E402

HORIZONS_S = (3.0, 6.4)
DT_S = 0.1
NS_PER_S = 1_000_000_000
AGREEMENT = 0.10  # direct and pipeline scores agree within this relative difference
FLOW_DRAWS = 16  # seeded (t, noise) draws per tick for the expert's teacher-forced loss
# --smoke's drive ends after 10.5 s: at 0.25 Hz its tick at 4 s has its whole 6.4 s future in the bag (one scored
# tick; the full drive's 18 s gave two, rendering 70 % more frames for the same code path).
SMOKE_DURATION_S = 10.5
ENTRY_DRAWS = 8  # plans sampled at each curve entry (seed 0, the node's sampling settings)
RESULTS = REPO / "bench" / "results"


@dataclass(frozen=True)
class TickScore:
    """One published tick, scored."""

    scenario: str
    seed: int
    t0_s: float
    min_ade_m: dict  # horizon -> minADE over samples
    fde_m: dict  # horizon -> FDE of the published sample
    baseline_ade_m: dict
    baseline_fde_m: dict
    interesting: bool
    red_stop: bool | None  # None: not a tick where the truth stops before the line and the baseline crosses it
    names_cause: bool
    reasoning: str
    cause: str
    tick: int  # the node's tick that published it; the direct call samples with that tick's seed


def red_stop(world, t0_s: float, truth: np.ndarray, baseline: np.ndarray, published: np.ndarray) -> bool | None:
    """Whether the published trajectory stops before the line, on the ticks where that matters; else None."""
    return stops_before_line(world, t0_s, published) if red_light_tick(world, t0_s, truth, baseline) else None


def tick_score(world, t0_s: float, errors: np.ndarray, baseline_errors: np.ndarray, selected: int,
               truth: np.ndarray, baseline: np.ndarray, published: np.ndarray, reasoning: str, tick: int) -> TickScore:
    """errors: (S, 64) per-sample per-waypoint distances; baseline_errors (64,); xy arrays (64, 2), ego frame."""
    sample = world.model_sample(t0_s, 8, 8)  # only the labels and flags are read: tiny images
    min_ade, fde, base_ade, base_fde = {}, {}, {}, {}
    for horizon in HORIZONS_S:
        n = round(horizon / DT_S)
        min_ade[horizon] = float(errors[:, :n].mean(axis=1).min())
        fde[horizon] = float(errors[selected, n - 1])
        base_ade[horizon] = float(baseline_errors[:n].mean())
        base_fde[horizon] = float(baseline_errors[n - 1])
    return TickScore(scenario=world.scenario, seed=world.seed, t0_s=t0_s, min_ade_m=min_ade, fde_m=fde,
                     baseline_ade_m=base_ade, baseline_fde_m=base_fde, interesting=bool(sample.interesting),
                     red_stop=red_stop(world, t0_s, truth, baseline, published),
                     names_cause=sample.cause.lower() in reasoning.lower(), reasoning=reasoning, cause=sample.cause,
                     tick=tick)


def pipeline_scores(world, model, cfg, work: Path) -> list[TickScore]:
    """The drive's bag through the node's pipeline in lockstep, scored by tools/evaluate on the bag's odometry."""
    bag = world_module.write_bag(world, work / f"{world.scenario}_{world.seed}")
    out = work / f"{world.scenario}_{world.seed}_replay"
    replay_lockstep(bag, out, cfg, model=model)
    history, odom_frame, outputs, _ = read_bag([out], cfg.odometry_topic, "/alpamayo/output", "/alpamayo/tick")
    scores = []
    for output in outputs:
        t0_ns = output.header.stamp.sec * NS_PER_S + output.header.stamp.nanosec
        t0_s = round((t0_ns - world_module.START_NS) / NS_PER_S, 6)
        scored = score(history, odom_frame, output)
        if np.isnan(scored.errors).any():
            continue  # the bag ends before t0 + 6.4 s
        sample = world.model_sample(t0_s, 8, 8)
        truth = sample.future_xyz[:, :2]
        baseline = constant_velocity(sample.ego_history_xyz, sample.ego_history_rot)
        published = _ego(world, t0_s, scored.pred_odom)
        scores.append(tick_score(world, t0_s, scored.errors, scored.baseline_errors, scored.selected, truth, baseline,
                                 published, output.reasoning[output.selected], int(output.tick)))
    return scores


def _ego(world, t0_s: float, xy_world: np.ndarray) -> np.ndarray:
    pose = world.expert_pose(t0_s)
    c, s = math.cos(pose.yaw), math.sin(pose.yaw)
    d = xy_world - np.array([pose.x, pose.y])
    return np.stack([c * d[:, 0] + s * d[:, 1], -s * d[:, 0] + c * d[:, 1]], axis=-1)


def direct_scores(world, model, ticks: list[int], t0s: list[float], samples: list, cfg, blank: bool) -> list[TickScore]:
    """The model called on the world's ground-truth inputs (`samples`, `world.model_sample` at each of `t0s`),
    images blanked if `blank`, sampling as the node's tick `ticks[i]` did (the same seed and settings) and
    publishing the sample the node's selection picks among all of them (the node first drops any its output
    checks refuse, which would show here as a difference): with the true images, what differs from the pipeline's
    call is only the inputs the bag and the pipeline made (history resampled from odometry, frames chosen by
    time), so the scores' agreement checks the data path rather than the spread between random draws."""
    scores = []
    for tick, t0_s, sample in zip(ticks, t0s, samples, strict=True):
        images = np.zeros_like(sample.images) if blank else sample.images
        pred = model.sample(images, sample.ego_history_xyz, sample.ego_history_rot,
                            **sampling_arguments(cfg.sampling, tick))
        xyz = pred.xyz.numpy()
        selected = select_sample(xyz, list(range(len(xyz))), cfg.selection)
        xy = xyz[..., :2]
        truth = sample.future_xyz[:, :2]
        baseline = constant_velocity(sample.ego_history_xyz, sample.ego_history_rot)
        errors = np.linalg.norm(xy - truth, axis=-1)
        scores.append(tick_score(world, t0_s, errors, np.linalg.norm(baseline - truth, axis=-1), selected, truth,
                                 baseline, xy[selected], pred.reasoning[selected], tick))
    return scores


def teacher_forced(model, example: TrainingExample, seed: int) -> tuple[float, float]:
    """The training pass (model/training.py) on `example`, without gradients: the cross-entropy (nats) of its
    Chain-of-Causation through <|cot_end|>, and the expert's flow-matching loss over FLOW_DRAWS (t, noise)
    draws seeded by `seed` (the same draws for every variant of one tick)."""
    batch = make_batch(model, [example])
    with torch.no_grad():
        hidden, cache, rope_delta = model.prefix_forward(batch.input_ids, batch.image_grid_thw, batch.image_embeds,
                                                         batch.deepstack)
        _, _, per_token = token_cross_entropy(hidden, batch.labels, model.vlm.lm_head, model.token_ids)
        x = batch.action.repeat_interleave(FLOW_DRAWS, 0)
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            t, noise = flow_training_data(x)
        flow, _ = flow_matching_loss(model, cropped_cache(cache, batch.crop, repeat=FLOW_DRAWS),
                                     batch.crop.repeat_interleave(FLOW_DRAWS), rope_delta.repeat_interleave(FLOW_DRAWS, 0),
                                     x, t, noise, causal=False)
    targets = batch.labels[0, 1:][batch.labels[0, 1:] != IGNORE]
    end = int((targets == model.token_ids.special["cot_end"]).nonzero()[0, 0])
    return float(per_token[:end + 1].sum()), float(flow)


def what_it_reads(model, examples: list[TrainingExample], drives: list[int]) -> dict:
    """Teacher-forced losses with each tick's own inputs, and with the images or the history of the tick half
    the list away (`drives[i]`: the drive of example i; a swap always comes from another drive). A swap that
    raises a loss shows what that part of the model takes from that input. The history swap also moves the
    expert's target (actions are relative to the history), so only the reasoning is scored on it."""
    n = len(examples)
    partner = [next((j % n for j in range(i + n // 2, i + n // 2 + n) if drives[j % n] != drives[i]), i)
               for i in range(n)]
    own = np.array([teacher_forced(model, e, i) for i, e in enumerate(examples)])
    images = np.array([teacher_forced(model, replace(e, images=examples[j].images), i)
                       for i, (e, j) in enumerate(zip(examples, partner))])
    history = np.array([teacher_forced(model, replace(e, ego_history_xyz=examples[j].ego_history_xyz,
                                                      ego_history_rot=examples[j].ego_history_rot), i)
                        for i, (e, j) in enumerate(zip(examples, partner))])
    return {"ticks": n, "coc_nats": {"own": own[:, 0].mean(), "other_images": images[:, 0].mean(),
                                     "other_history": history[:, 0].mean()},
            "flow_loss": {"own": own[:, 1].mean(), "other_images": images[:, 1].mean()}}


def curve_entries(model, scenarios: list[str], seeds: list[int]) -> list[dict]:
    """At the first curve-entry tick of each curve drive (driving_scores.curve_entry_tick: the truth ends 4 m or
    more sideways at 6.4 s, the history's constant velocity less than half that), ENTRY_DRAWS plans called
    directly on the world's inputs (as test_driver's curve test, which reads the first draw of held-out seed
    1000): how many turn the truth's way at least half as far, and how many of their reasonings name the curve."""
    entries = []
    for scenario in (s for s in scenarios if s.startswith("curve_")):
        for seed in seeds:
            world = world_module.generate(scenario, seed)
            t0_s = curve_entry_tick(world)
            sample = world.model_sample(t0_s)
            with torch.no_grad():
                pred = model.sample(jpeg_round_trip(sample.images), sample.ego_history_xyz, sample.ego_history_rot,
                                    seed=0, num_samples=ENTRY_DRAWS)
            planned_y = pred.xyz[:, -1, 1].numpy()
            truth_y = float(sample.future_xyz[-1, 1])
            entries.append({"scenario": scenario, "seed": seed, "t0_s": t0_s, "truth_y_m": truth_y,
                            "planned_y_m": planned_y.tolist(),
                            "turned": int(sum(turns_at_entry(y, truth_y) for y in planned_y)),
                            "named": int(sum(sample.cause in r for r in pred.reasoning)), "draws": ENTRY_DRAWS})
    return entries


def summarise(scores: list[TickScore]) -> dict:
    def block(selected: list[TickScore]) -> dict:
        out = {"n": len(selected)}
        for h in HORIZONS_S:
            for name in ("min_ade_m", "fde_m", "baseline_ade_m", "baseline_fde_m"):
                out[f"{name}@{h:g}s"] = float(np.mean([getattr(s, name)[h] for s in selected])) if selected else None
        return out

    red = [s.red_stop for s in scores if s.red_stop is not None]
    return {"overall": block(scores), "interesting": block([s for s in scores if s.interesting]),
            "red_light_ticks": len(red), "red_light_stops": float(np.mean(red)) if red else None,
            "names_cause": float(np.mean([s.names_cause for s in scores])) if scores else None}


def print_summary(name: str, summary: dict) -> None:
    print(f"\n{name}: {summary['overall']['n']} ticks ({summary['interesting']['n']} interesting)")
    print(f"{'':>12} {'minADE 3s':>10} {'FDE 3s':>8} {'minADE 6.4s':>12} {'FDE 6.4s':>9} | {'CV ADE 3s':>9} "
          f"{'CV FDE 3s':>9} {'CV ADE 6.4s':>11} {'CV FDE 6.4s':>11}")
    for part in ("overall", "interesting"):
        b = summary[part]
        cells = [b[k] for k in ("min_ade_m@3s", "fde_m@3s", "min_ade_m@6.4s", "fde_m@6.4s", "baseline_ade_m@3s",
                                "baseline_fde_m@3s", "baseline_ade_m@6.4s", "baseline_fde_m@6.4s")]
        widths = (10, 8, 12, 9, 9, 9, 11, 11)
        text = [f"{c:>{w}.2f}" if c is not None else f"{'-':>{w}}" for c, w in zip(cells, widths)]
        print(f"{part:>12} " + " ".join(text[:4]) + " | " + " ".join(text[4:]))
    red = summary["red_light_stops"]
    print(f"stops before the line: {'-' if red is None else f'{100 * red:.0f} %'} of {summary['red_light_ticks']} "
          f"red-light ticks; reasoning names the cause: {100 * (summary['names_cause'] or 0):.0f} %")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-path", default="",
                        help="checkpoint trained by tools/train_driver.py; empty: the tiny random model (the code path)")
    parser.add_argument("--scenarios", nargs="+", default=list(world_module.SCENARIOS), choices=world_module.SCENARIOS)
    parser.add_argument("--seeds", type=int, default=2, help="held-out seeds per scenario")
    parser.add_argument("--tick-hz", type=float, default=2.0)
    parser.add_argument("--num-samples", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--smoke", action="store_true",
                        help=f"one red-light drive, its first {SMOKE_DURATION_S:g} s, at 0.25 Hz, 1 sample: the code path")
    parser.add_argument("--param", action="append", default=[], metavar="NAME:=VALUE",
                        help="node parameter (sampling: temperature:=0.0 for greedy reasoning, noise_temperature:=0.5)")
    parser.add_argument("--out", type=Path, default=RESULTS / "driver.json")
    args = parser.parse_args(argv)
    if args.smoke:
        args.scenarios, args.seeds, args.tick_hz, args.num_samples = ["red_light"], 1, 0.25, 1
    values = {"device": "cpu", "dtype": "float32", "image_transport": "compressed", "num_samples": args.num_samples,
              "rate_hz": args.tick_hz, "selection": "medoid", "torch_threads": args.threads,
              "model_path": args.model_path}
    values.update(parameters.parse_override(text) for text in args.param)
    cfg = parameters.from_values(values)
    model = from_pretrained(args.model_path) if args.model_path else tiny(seed=0)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    paths: dict[str, list[TickScore]] = {"pipeline": [], "direct": [], "direct, cameras blanked": []}
    examples: list[TrainingExample] = []
    drives: list[int] = []
    work = Path(tempfile.mkdtemp(prefix="bench_driver_"))
    try:
        for scenario in args.scenarios:
            for seed in HELD_OUT_SEEDS[:args.seeds]:
                world = world_module.generate(scenario, seed)
                if args.smoke:
                    world = world_module.World(replace(world.scenario_params, duration_s=SMOKE_DURATION_S))
                piped = pipeline_scores(world, model, cfg, work)
                t0s, ticks = [s.t0_s for s in piped], [s.tick for s in piped]
                paths["pipeline"] += piped
                # rendered once for the three uses, JPEG round-tripped as the bag's cameras deliver them
                samples = [replace(sample, images=jpeg_round_trip(sample.images))
                           for sample in map(world.model_sample, t0s)]
                paths["direct"] += direct_scores(world, model, ticks, t0s, samples, cfg, blank=False)
                paths["direct, cameras blanked"] += direct_scores(world, model, ticks, t0s, samples, cfg, blank=True)
                drives += [len(set(drives))] * len(t0s)  # this drive's index
                for sample in samples:
                    examples.append(TrainingExample(images=sample.images, ego_history_xyz=sample.ego_history_xyz,
                                                    ego_history_rot=sample.ego_history_rot, future_xyz=sample.future_xyz,
                                                    future_rot=sample.future_rot, coc=sample.coc))
                print(f"{scenario} seed {seed}: {len(piped)} ticks ({time.perf_counter() - started:.0f} s)", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    summaries = {name: summarise(scores) for name, scores in paths.items()}
    for name, summary in summaries.items():
        print_summary(name, summary)
    entries = curve_entries(model, args.scenarios, list(HELD_OUT_SEEDS[:args.seeds]))
    if entries:
        draws = sum(e["draws"] for e in entries)
        print(f"\ncurve entries ({len(entries)}, {ENTRY_DRAWS} draws each): the plan turns the truth's way at least "
              f"half as far in {sum(e['turned'] for e in entries)} of {draws} draws, the reasoning names the curve in "
              f"{sum(e['named'] for e in entries)}")
        for e in entries:
            print(f"  {e['scenario']} {e['seed']} t0 = {e['t0_s']:.1f} s: truth {e['truth_y_m']:+.1f} m, planned "
                  f"{' '.join(f'{y:+.1f}' for y in e['planned_y_m'])}; turned {e['turned']}, named {e['named']}")
    reads = what_it_reads(model, examples, drives)
    coc, flow = reads["coc_nats"], reads["flow_loss"]
    print(f"\nwhat it reads ({reads['ticks']} ticks, teacher-forced): the reasoning's cross-entropy per sentence "
          f"{coc['own']:.2f} nats, with another drive's images {coc['other_images']:.2f}, with another drive's "
          f"history {coc['other_history']:.2f}; the expert's flow-matching loss {flow['own']:.3f}, with another "
          f"drive's images {flow['other_images']:.3f}")
    pipe, direct = summaries["pipeline"]["overall"], summaries["direct"]["overall"]
    agreement = {key: abs(direct[key] - pipe[key]) / pipe[key] for key in pipe if key != "n" and pipe[key]}
    print(f"\ndirect vs pipeline: largest relative difference {max(agreement.values()):.1%} "
          f"({max(agreement, key=agreement.get)}); agree within {AGREEMENT:.0%}: "
          f"{all(v <= AGREEMENT for v in agreement.values())}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "model_path": args.model_path, "scenarios": args.scenarios, "seeds": list(HELD_OUT_SEEDS[:args.seeds]),
        "tick_hz": args.tick_hz, "num_samples": args.num_samples, "params": args.param, "summaries": summaries,
        "agreement": agreement,
        "curve_entries": entries,
        "what_it_reads": reads,
        "wall_s": time.perf_counter() - started, "torch": torch.__version__, "machine": platform.machine(),
        "ticks": {name: [asdict(s) for s in scores] for name, scores in paths.items()}}, indent=1, default=str))
    print(f"results: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""AlpamayoR1 per-stage and end-to-end latency for each performance option, as ratios within one run.

Every option runs the same sequence of ticks: each tick, every camera's 4-frame window moves on by one
frame (4 new images, 12 seen on the previous tick), as in the node at 10 Hz. The options take turns
tick by tick on one model. Greedy decoding of a fixed token budget keeps the work equal. Options:

  plain                 1 sample; images preprocessed on the host and all 16 encoded; eager expert
  vision reuse          plain + image encodings kept across ticks (keyed by camera and frame)
  device preprocessing  plain + resize/normalise on the model's device (DevicePixels)
  compiled flow         plain + the Euler loop as one torch.compile region (CUDA graphs on a GPU)
  6 shared prefill      6 samples, each writing its own reasoning, one prefill (the reference)
  6 per-sample prefill  6 samples, 6 prefills (what generate(num_return_sequences=6) does)
  6 shared reasoning    6 samples sharing one reasoning, one cache row
  6 fastest             6 shared reasoning + vision reuse + device preprocessing + compiled flow
  reference-shaped      1 sample run the way NVIDIA's `sample_trajectories_from_data_with_vlm_rollout`
                        runs (the baseline): one processor call, `vlm.generate` (vision, prefill and
                        decode inside, stopping as `StopAfterEOS`), then the expert through transformers
                        over the `DynamicCache` with its float32 4D mask, cropped after every Euler step
  reference-shaped 6    the same with 6 samples (`num_return_sequences=6`)
  route                 plain on an Alpamayo 1.5 model: cameras labelled, "Turn left in 40m" in the route span
  guided route          route + 1.5's classifier-free guidance (weight 1.5): a second prefill without the
                        route span, the reasoning fed to it, and the expert on both prefixes every Euler step

When a route option is chosen the model is built as Alpamayo 1.5 (same weights and layout; the options without
a route then write R1's prompt, as 1.5 does without camera ids).

The baseline uses this process's weights and code versions, so its ratios to the options are the
speed-up over the reference's structure on the same machine. Its stage columns: "vision" is the
processor, "decode" is all of `generate` (vision tower, prefill and decode), "prefill" is not split out.

On the CPU, a few more ticks per option run under the torch profiler: "arithmetic" is the time spent in
matrix products, the patch convolution, attention and activations, which any implementation with the
reference's results must run too. The baseline's time over a path's arithmetic ("ceiling") is the most
an exact change to that path could gain, were everything else (Python, elementwise ops, copies) to take
no time.

Configs: `tiny` (the tests' model); `medium` (30 M parameters with the release's proportions: expert half
the VLM's width, attention width = hidden, MLP 3x / 4x, 2 KV heads for 8 query heads; 16 images of
128x224); `full` (the release architecture, 11.08 B random parameters, bfloat16, 16 frames of 1920x1080,
needs a GPU). Prints a table and writes JSON to bench/results/.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import transformers
from transformers import LogitsProcessor, LogitsProcessorList, StoppingCriteria, StoppingCriteriaList

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from alpamayo_ros.model.alpamayo_r1 import Timings  # noqa: E402
from alpamayo_ros.model.config import ALPAMAYO1_5, ActionInProjConfig, ExpertConfig  # noqa: E402
from alpamayo_ros.model.flow_matching import euler_integrate, time_grid  # noqa: E402
from alpamayo_ros.model.loading import QWEN_BASE_VOCAB, random_model, release_config, tiny_config  # noqa: E402
from alpamayo_ros.model.trajectory_tokens import history_token_ids  # noqa: E402
from alpamayo_ros.tools.synthetic import road_images, synthetic_drive  # noqa: E402

STAGES = ("vision_ms", "prefill_ms", "decode_ms", "unguided_ms", "expert_ms", "trajectory_ms")
WARMUP = 3  # untimed ticks per option: they fill the vision cache, compile, and record CUDA graphs
ARITHMETIC_TICKS = 3  # profiled ticks per option after the timed ones (see `arithmetic_ms`)
# --smoke: a check that the benchmark runs (the test suite), seconds not minutes; its numbers mean nothing.
# One option of each kind, and the baseline: compiling takes 10-40 s on a CPU and the 6-sample prefills are the
# slowest ticks (tests/model check those paths themselves).
SMOKE = {"configs": ["tiny"], "ticks": 1, "tokens": 3, "warmup": 0, "arithmetic_ticks": 1,
         "options": ["plain", "vision reuse", "device preprocessing", "6 shared reasoning", "reference-shaped", "route",
                     "guided route"]}
ROUTE = "Turn left in 40m"
GUIDANCE_WEIGHT = 1.5  # the release notebook's
RELEASE_CAMERA_IDS = (0, 1, 2, 6)


class LapClock:
    """Milliseconds between successive `lap()` calls, waiting for queued GPU work first."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.last = self.now()

    def now(self) -> int:
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter_ns()

    def lap(self) -> float:
        now = self.now()
        elapsed, self.last = (now - self.last) / 1e6, now
        return elapsed


@dataclasses.dataclass(frozen=True)
class Option:
    samples: int = 1
    share_prefill: bool = True
    reasoning: str = "per_sample"
    reuse: bool = False
    preprocessing: str = "host"
    compiled: bool = False
    reference: bool = False  # run `reference_shaped_sample` instead of `AlpamayoR1.sample`
    route: bool = False  # Alpamayo 1.5 prompt: camera labels and ROUTE
    guidance: float = 1.0  # nav_guidance_weight (1: the plain sampler)


OPTIONS = {
    "plain": Option(),
    "vision reuse": Option(reuse=True),
    "device preprocessing": Option(preprocessing="device"),
    "compiled flow": Option(compiled=True),
    "6 shared prefill": Option(samples=6),
    "6 per-sample prefill": Option(samples=6, share_prefill=False),
    "6 shared reasoning": Option(samples=6, reasoning="shared"),
    "6 fastest": Option(samples=6, reasoning="shared", reuse=True, preprocessing="device", compiled=True),
    "reference-shaped": Option(reference=True),
    "reference-shaped 6": Option(samples=6, reference=True),
    "route": Option(route=True),
    "guided route": Option(route=True, guidance=GUIDANCE_WEIGHT),
}


class _StopAfterFutureStart(StoppingCriteria):
    """Upstream's `StopAfterEOS`: stop at the step after every row has had <|traj_future_start|>."""

    def __init__(self, token_id: int) -> None:
        self.token_id, self.seen = token_id, None

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs) -> bool:
        if self.seen is not None and bool(self.seen.all()):
            return True
        last = input_ids[:, -1] == self.token_id
        self.seen = last if self.seen is None else self.seen | last
        return False


class _MaskTrajectoryTokens(LogitsProcessor):
    """Upstream's `ExpertLogitsProcessor`: <i*> tokens are never generated."""

    def __init__(self, start: int, count: int) -> None:
        self.start, self.count = start, count

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        scores[:, self.start:self.start + self.count] = -torch.inf
        return scores


@torch.inference_mode()
def reference_shaped_sample(model, images: list[np.ndarray], hist_xyz: np.ndarray, hist_rot: np.ndarray,
                            samples: int, tokens: int) -> tuple[Timings, torch.Tensor]:
    """One inference laid out as upstream's `sample_trajectories_from_data_with_vlm_rollout`, on greedy
    tokens. Returns the stage times and the (S, 64, 3) positions."""
    ids, device = model.token_ids, model.device
    clock = LapClock(device)
    processed = model.prompt_encoder.image_processor(images=images, return_tensors="pt")
    grids = processed["image_grid_thw"]
    history = history_token_ids(torch.as_tensor(hist_xyz)[None], model.config.hist_traj_tokenizer_cfg,
                                ids.hist_token_start_idx)
    input_ids = model.prompt_encoder.input_ids(grids, history).to(device)
    vision_ms = clock.lap()
    config = copy.deepcopy(model.vlm.generation_config)
    # Sampling as upstream, kept to the greedy tokens by top_k=1 (generate allows no greedy decoding of
    # several sequences): the same tokens, so the same work, as the options' greedy runs.
    config.update(do_sample=True, top_k=1, top_p=1.0, temperature=1.0, num_return_sequences=samples,
                  max_new_tokens=tokens, output_logits=True, return_dict_in_generate=True, pad_token_id=ids.pad,
                  eos_token_id=ids.eos)
    out = model.vlm.generate(
        input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
        pixel_values=processed["pixel_values"].to(device, model.vlm.model.visual.dtype),
        image_grid_thw=grids.to(device), generation_config=config,
        stopping_criteria=StoppingCriteriaList([_StopAfterFutureStart(ids.traj_future_start)]),
        logits_processor=LogitsProcessorList([_MaskTrajectoryTokens(ids.traj_token_start_idx, ids.traj_vocab_size)]))
    decode_ms = clock.lap()
    cache = out.past_key_values
    prefix = cache.get_seq_length()
    sequences = out.sequences
    rows, waypoints = sequences.shape[0], model.config.action_space_cfg.n_waypoints
    has = (sequences == ids.traj_future_start).any(dim=1)
    first = (sequences == ids.traj_future_start).int().argmax(dim=1)
    offset = torch.where(has, first, torch.full_like(first, sequences.shape[1] - 1)) + 1
    positions = torch.arange(waypoints, device=device).view(1, 1, -1).repeat(3, rows, 1)
    positions = positions + (model.vlm.model.rope_deltas + offset[:, None])
    mask = torch.zeros(rows, 1, waypoints, prefix + waypoints, dtype=torch.float32, device=device)
    for r in range(rows):
        mask[r, :, :, offset[r]:-waypoints] = torch.finfo(mask.dtype).min

    def step_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        embeds = model.action_in_proj(x, t).to(model.expert.dtype)
        hidden = model.expert(inputs_embeds=embeds, position_ids=positions, past_key_values=cache,
                              attention_mask=mask.to(embeds.dtype), use_cache=True, is_causal=False)
        cache.crop(prefix)
        return model.action_out_proj(hidden.last_hidden_state[:, -waypoints:]).float()

    noise = torch.randn(rows, waypoints, 2, generator=torch.Generator(device=device).manual_seed(0), device=device)
    action = euler_integrate(step_fn, noise, time_grid(model.config.diffusion_cfg.num_inference_steps, device))
    expert_ms = clock.lap()
    xyz, _ = model.action_space.action_to_traj(
        action, torch.as_tensor(hist_xyz, device=device).expand(rows, -1, -1),
        torch.as_tensor(hist_rot, device=device).expand(rows, -1, -1, -1))
    xyz = xyz.cpu()
    trajectory_ms = clock.lap()
    timings = Timings(vision_ms=vision_ms, prefill_ms=0.0, decode_ms=decode_ms, expert_ms=expert_ms,
                      trajectory_ms=trajectory_ms, decode_tokens=sequences.shape[1] - input_ids.shape[1])
    return timings, xyz


def medium_config():
    """The release's proportions at 1/8 of its width and 4 layers (see the module docstring)."""
    config, vlm = tiny_config()
    config = dataclasses.replace(
        config, min_pixels=128 * 224, max_pixels=128 * 224, action_in_proj_cfg=ActionInProjConfig(hidden_size=128),
        expert_cfg=ExpertConfig(hidden_size=256, intermediate_size=1032, num_attention_heads=4, head_dim=64))
    vlm.text_config.update(dict(hidden_size=512, intermediate_size=1536, num_hidden_layers=4, num_attention_heads=8,
                                num_key_value_heads=2, head_dim=64))
    vlm.text_config.rope_scaling = {"rope_type": "default", "mrope_section": [12, 10, 10], "mrope_interleaved": True}
    vlm.vision_config.update(dict(depth=4, hidden_size=256, intermediate_size=960, num_heads=4, out_hidden_size=512,
                                  num_position_embeddings=256, deepstack_visual_indexes=[1, 2, 3]))
    return config, vlm


# name -> (configs, frame height, width, dtype, base vocabulary)
CONFIGS = {
    "tiny": (tiny_config, 64, 96, "float32", 256),
    "medium": (medium_config, 128, 224, "float32", 256),
    "full": (release_config, 1080, 1920, "bfloat16", QWEN_BASE_VOCAB),
}


# The kernels whose arithmetic every implementation with the reference's results runs, as the reference
# does: matrix products, the patch convolution, attention, activations. A path's time in them is what
# would be left if everything else (Python, elementwise ops, copies, allocation) took no time.
ARITHMETIC = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::mkldnn_convolution",
              "aten::_scaled_dot_product_flash_attention_for_cpu", "aten::_softmax", "aten::gelu", "aten::silu")


def arithmetic_ms(call) -> float:
    """Milliseconds one `call()` spends in ARITHMETIC kernels (torch profiler, CPU: self time of each op,
    its intra-op threads included)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        call()
    return sum(event.self_cpu_time_total for event in prof.key_averages() if event.key in ARITHMETIC) / 1e3


def summarise(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {"p50": statistics.median(values), "p90": ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))],
            "max": ordered[-1], "mean": statistics.fmean(values)}


def camera_frames(height: int, width: int, count: int) -> list[np.ndarray]:
    """`count` consecutive frames per camera: (count, 4 cameras) images, the road moving a little each frame."""
    return [road_images(height=height, width=width, lane_shift_px=0.5 * k, seed=k)[:, 0] for k in range(count)]


def run_config(name: str, ticks: int, tokens: int, device: str, options: list[str],
               frames_hw: tuple[int, int] | None = None, profile_arithmetic: bool = False, warmup: int = WARMUP,
               arithmetic_ticks: int = ARITHMETIC_TICKS) -> dict:
    make_config, height, width, dtype, vocab = CONFIGS[name]
    height, width = frames_hw or (height, width)
    config, vlm_config = make_config()
    if any(OPTIONS[label].route for label in options):
        config = dataclasses.replace(config, model_type=ALPAMAYO1_5)
    frames = camera_frames(height, width, warmup + ticks + arithmetic_ticks + 3)
    drive = synthetic_drive(height=height, width=width)
    history = (drive.ego_history_xyz, drive.ego_history_rot)
    model = random_model(config, vlm_config, seed=0, device=device, dtype=dtype, base_vocab_size=vocab)
    compile_mode = "reduce-overhead" if device.startswith("cuda") else "default"
    measured = {label: [] for label in options}

    def tick(label: str, k: int) -> tuple[Timings, float]:
        option = OPTIONS[label]
        model.set_image_preprocessing(option.preprocessing)
        model.compile_flow(compile_mode) if option.compiled else model.eager_flow()
        images = [frames[k + f][cam] for cam in range(4) for f in range(4)]
        keys = [(label, cam, k + f) for cam in range(4) for f in range(4)] if option.reuse else None
        start = time.perf_counter_ns()
        if option.reference:
            timings, _ = reference_shaped_sample(model, images, *history, option.samples, tokens)
        else:
            route = dict(camera_ids=RELEASE_CAMERA_IDS, route=ROUTE, nav_guidance_weight=option.guidance) \
                if option.route else {}
            timings = model.sample(images, *history, num_samples=option.samples, greedy=True,
                                   max_reasoning_tokens=tokens, share_prefill=option.share_prefill,
                                   reasoning=option.reasoning, image_keys=keys, **route).timings
        return timings, (time.perf_counter_ns() - start) / 1e6

    # Options take turns tick by tick on the same model, so slow drifts of the machine affect all alike.
    for k in range(warmup + ticks):
        for label in options:
            timings, wall_ms = tick(label, k)
            if k >= warmup:
                measured[label].append((timings, wall_ms))
        print(f"  {name}: tick {k + 1}/{warmup + ticks}" + (" (warm-up)" if k < warmup else ""), flush=True)
    # A few more ticks per option under the profiler: the median time in the kernels every exact path runs.
    arithmetic = {}
    if profile_arithmetic:
        for label in options:
            arithmetic[label] = statistics.median(arithmetic_ms(lambda: tick(label, warmup + ticks + j))
                                                  for j in range(arithmetic_ticks))
    results = {}
    for label, runs in measured.items():
        results[label] = {stage: summarise([getattr(t, stage) for t, _ in runs]) for stage in STAGES}
        results[label]["total_ms"] = summarise([wall for _, wall in runs])
        results[label]["decode_tokens"] = [t.decode_tokens for t, _ in runs]
        if label in arithmetic:
            results[label]["arithmetic_ms"] = arithmetic[label]
    params = sum(p.numel() for p in model.parameters())
    return {"config": name, "parameters": params, "frames_hw": [height, width], "dtype": dtype, "ticks": ticks,
            "tokens": tokens, "results": results, "ratios": ratios(results)}


def ratios(results: dict) -> dict[str, float]:
    """Each option's p50 against the plain path's, plus the figures the performance issue asks for."""
    def p50(label, stage="total_ms"):
        return results[label][stage]["p50"]

    out = {}
    if "plain" in results:
        for label in results:
            out[f"{label} / plain (total)"] = p50(label) / p50("plain")
    pairs = [("vision stage: plain / vision reuse", "plain", "vision reuse", "vision_ms"),
             ("vision stage: plain / device preprocessing", "plain", "device preprocessing", "vision_ms"),
             ("expert stage: eager / compiled (1 sample)", "plain", "compiled flow", "expert_ms"),
             ("total: 6 per-sample prefill / 6 shared prefill", "6 per-sample prefill", "6 shared prefill", "total_ms"),
             ("total: 6 shared reasoning / plain", "6 shared reasoning", "plain", "total_ms"),
             ("total: 6 fastest / plain", "6 fastest", "plain", "total_ms"),
             # The speed-ups over the reference's structure (issue #13: >= 1.5x fresh, >= 2.5x with reuse).
             ("speed-up, 1 sample, fresh call: reference-shaped / plain", "reference-shaped", "plain", "total_ms"),
             ("speed-up, 1 sample, tick with reuse: reference-shaped / vision reuse", "reference-shaped",
              "vision reuse", "total_ms"),
             ("speed-up, 6 samples: reference-shaped 6 / 6 shared prefill", "reference-shaped 6", "6 shared prefill",
              "total_ms"),
             ("speed-up, 6 samples: reference-shaped 6 / 6 fastest", "reference-shaped 6", "6 fastest", "total_ms"),
             # The cost of 1.5's guided sampling over the plain call with the same route prompt.
             ("cost of guidance, total: guided route / route", "guided route", "route", "total_ms"),
             ("cost of guidance, expert stage: guided route / route", "guided route", "route", "expert_ms")]
    for text, a, b, stage in pairs:
        if a in results and b in results:
            out[text] = p50(a, stage) / p50(b, stage)
    # The most any exact change could give: the baseline's time over the path's arithmetic alone.
    for text, label in (("ceiling, 1 sample, fresh call: reference-shaped / plain's arithmetic", "plain"),
                        ("ceiling, 1 sample, tick with reuse: reference-shaped / vision reuse's arithmetic",
                         "vision reuse")):
        if "reference-shaped" in results and "arithmetic_ms" in results.get(label, {}):
            out[text] = p50("reference-shaped") / results[label]["arithmetic_ms"]
    return out


def print_table(report: dict) -> None:
    print(f"\n{report['config']}: {report['parameters'] / 1e6:.1f} M parameters ({report['dtype']}), 16 frames "
          f"{report['frames_hw'][0]}x{report['frames_hw'][1]}, {report['tokens']} reasoning tokens, "
          f"{report['ticks']} ticks (p50 ms, total also p90)")
    profiled = any("arithmetic_ms" in stats for stats in report["results"].values())
    print(f"{'option':<22}" + "".join(f"{s.removesuffix('_ms'):>11}" for s in STAGES) + f"{'total':>10}{'p90':>9}"
          + (f"{'arithmetic':>12}" if profiled else ""))
    for label, stats in report["results"].items():
        arithmetic = f"{stats['arithmetic_ms']:>12.1f}" if "arithmetic_ms" in stats else ""
        print(f"{label:<22}" + "".join(f"{stats[s]['p50']:>11.1f}" for s in STAGES)
              + f"{stats['total_ms']['p50']:>10.1f}{stats['total_ms']['p90']:>9.1f}" + arithmetic)
    for text, value in report["ratios"].items():
        print(f"  {text}: {value:.2f}x")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", choices=list(CONFIGS),
                        help="default: tiny and medium on the CPU; full as well on a GPU")
    parser.add_argument("--options", nargs="+", default=list(OPTIONS), choices=list(OPTIONS))
    parser.add_argument("--ticks", type=int, default=6, help=f"timed ticks per option, after {WARMUP} warm-up ticks")
    parser.add_argument("--tokens", type=int, default=32, help="reasoning tokens decoded per sample (greedy)")
    parser.add_argument("--frames", help="HxW camera frames instead of the config's (e.g. 1080x1920: resized "
                        "by the preprocessing, host or device)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--no-arithmetic", action="store_true", help=f"skip the {ARITHMETIC_TICKS} profiled ticks "
                        "per option that measure its time in matrix products, convolution, attention and "
                        "activations (CPU only)")
    parser.add_argument("--smoke", action="store_true", help=f"a quick check that it runs: {SMOKE}; the numbers "
                        "mean nothing")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "bench_model.json"))
    args = parser.parse_args()
    warmup, arithmetic_ticks = WARMUP, ARITHMETIC_TICKS
    if args.smoke:
        args.configs, args.ticks, args.tokens = SMOKE["configs"], SMOKE["ticks"], SMOKE["tokens"]
        warmup, arithmetic_ticks = SMOKE["warmup"], SMOKE["arithmetic_ticks"]
        args.options = SMOKE["options"]
    configs = args.configs or (["tiny", "medium"] + (["full"] if args.device.startswith("cuda") else []))
    if "full" in configs and not args.device.startswith("cuda"):
        parser.error("the full-size config needs a GPU (--device cuda)")
    reports = []
    for name in configs:
        frames = tuple(int(v) for v in args.frames.split("x")) if args.frames else None
        report = run_config(name, args.ticks, args.tokens, args.device, args.options, frames,
                            profile_arithmetic=not args.no_arithmetic and not args.device.startswith("cuda"),
                            warmup=warmup, arithmetic_ticks=arithmetic_ticks)
        print_table(report)
        reports.append(report)
    meta = {"device": args.device, "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda") else None,
            "threads": torch.get_num_threads(), "torch": torch.__version__, "transformers": transformers.__version__,
            "python": platform.python_version(), "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20 if args.device.startswith("cuda") else None}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "reports": reports}, indent=2))
    print(f"\npeak RSS {meta['peak_rss_mb']:.0f} MB; wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

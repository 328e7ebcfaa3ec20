"""Train the synthetic-world driver: a small AlpamayoR1 (`loading.driver_config`) on the synthetic world, on the CPU.

Both of the release's losses (model/training.py) in one joint run: each step runs the VLM once over the
training conversation (Chain-of-Causation + discrete future tokens), takes stage 1's cross-entropy from
it, and trains the expert with stage 2's flow matching on that pass's cache, cropped after
<|traj_future_start|>. Joint rather than two stages because on two cores the VLM pass is most of a step's
cost and the stage-2 cache is exactly a prefix of it. By default the cache is not detached (the recipe's
option stop_grad_from_vlm=False): flow matching's gradient then also reaches the VLM and its vision tower,
a dense signal of what the trajectory needs, where the reasoning's cross-entropy alone gives them a few
decision tokens per sample; `--no-expert-trains-vlm` detaches it (the recipe's default, whose expert
gradients are those of its stage 2: conformance/training README). The patch embedding runs as a matmul
(`training.linear_patch_embedding`). The
expert is trained with the bidirectional attention the release's inference uses, not the recipe's
accidental causal mask: the model is run by `AlpamayoR1.sample`. Each sample's one VLM pass serves
`--flow-draws` flow-matching draws (the recipe draws one): the expert is cheap beside the VLM.

Examples: every scenario of `tools.world`, `--drives` training seeds each, t0 every `--t0-stride` x 0.1 s
along each drive, rendered once and kept in memory as JPEG (driver_data.py). Seeded; writes OUT in the
release layout (`save_pretrained`, self-contained: config, weights, tokenizer, processor, base config)
plus `training_log.json` (the losses along the run).

    python -m alpamayo_ros.tools.train_driver OUT [--steps 840 --batch-size 8 --drives 12 --threads 2 --seed 0]

The defaults are the embedded driver's run (alpamayo_ros/driver/README.md).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from alpamayo_ros.model.loading import driver_config, random_model, save_pretrained
from alpamayo_ros.model.training import linear_patch_embedding, make_batch, training_losses
from alpamayo_ros.tools import world
from alpamayo_ros.tools.driver_data import TRAIN_SEEDS, StoredExample, drive_examples, t0_grid

logger = logging.getLogger(__name__)

LOG_EVERY = 10  # steps between entries of training_log.json


def build_examples(drives_per_scenario: int, t0_stride: int, seed_offset: int = 0, offset_share: float = 0.0,
                   max_offset_m: float = 0.0) -> list[StoredExample]:
    """Every scenario's first `drives_per_scenario` training seeds (after `seed_offset`), t0 every
    `t0_stride` grid steps with a per-drive phase so that the drives together cover the whole grid.

    A share `offset_share` of the examples (drawn per drive from its seed) starts off the lane centre by
    U(-max_offset_m, max_offset_m) and recovers (`world.World.model_sample`): what a driver sees after its own
    errors, which the expert's drive alone never shows."""
    examples: list[StoredExample] = []
    drives = [(name, TRAIN_SEEDS[seed_offset + i]) for i in range(drives_per_scenario) for name in world.SCENARIOS]
    for k, (name, seed) in enumerate(tqdm(drives, desc="render drives", unit="drive", file=sys.stderr)):
        drive = world.generate(name, seed)
        t0s = t0_grid(drive, t0_stride, phase=k % t0_stride)
        rng = np.random.default_rng([world.SCENARIOS.index(name), seed, 1])
        offsets = np.where(rng.random(len(t0s)) < offset_share, rng.uniform(-max_offset_m, max_offset_m, len(t0s)), 0.0)
        examples.extend(drive_examples(drive, t0s, offsets=offsets))
    return examples


def learning_rate(step: int, steps: int, peak: float, warmup: int, minimum: float) -> float:
    """The recipe's `cosine_warmup_with_min_lr`: linear warmup (step + 1) / warmup, then a half cosine to `minimum`."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return minimum + (peak - minimum) * 0.5 * (1.0 + math.cos(math.pi * progress))


def train(out: Path, steps: int, batch_size: int, drives: int, t0_stride: int, lr: float, warmup: int,
          min_lr: float, seed: int, threads: int, flow_draws: int, expert_trains_vlm: bool,
          save_every: int = 0, offset_share: float = 0.0, max_offset_m: float = 0.0) -> dict:
    torch.set_num_threads(threads)
    started = time.perf_counter()
    examples = build_examples(drives, t0_stride, offset_share=offset_share, max_offset_m=max_offset_m)
    render_s = time.perf_counter() - started
    logger.info("%d examples from %d drives in %.0f s", len(examples), drives * len(world.SCENARIOS), render_s)

    torch.manual_seed(seed)
    model = random_model(*driver_config(), seed=seed).train()
    parameters = [p for p in model.parameters() if p.requires_grad]
    # The recipe's optimiser (AdamW, beta (0.9, 0.999), eps 1e-8, no weight decay, clip 1.0); from scratch,
    # one learning rate for every part (the recipe fine-tunes, and slows the vision tower 10x).
    optimiser = torch.optim.AdamW(parameters, lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    order = np.random.default_rng(seed)
    log: list[dict] = []
    sums = np.zeros(3)
    bar = tqdm(range(steps), desc="train", unit="step", file=sys.stderr)
    train_started, cpu_started = time.perf_counter(), time.process_time()
    for step in bar:
        for group in optimiser.param_groups:
            group["lr"] = learning_rate(step, steps, lr, warmup, min_lr)
        chosen = order.choice(len(examples), size=batch_size, replace=False)
        with linear_patch_embedding(model):
            batch = make_batch(model, [examples[i].training_example() for i in chosen])
            losses = training_losses(model, batch, causal_expert=False, stop_grad_from_vlm=not expert_trains_vlm,
                                     flow_draws=flow_draws)
        optimiser.zero_grad(set_to_none=True)
        (losses.vlm + losses.flow).backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimiser.step()
        values = np.array([losses.vlm_future.item(), losses.vlm_others.item(), losses.flow.item()])
        sums += values
        bar.set_postfix(ce_future=f"{values[0]:.3f}", ce_coc=f"{values[1]:.3f}", flow=f"{values[2]:.3f}")
        if save_every and (step + 1) % save_every == 0 and step + 1 < steps:  # a run cut short leaves a model
            save_pretrained(model.eval(), out)
            model.train()
        if (step + 1) % LOG_EVERY == 0:
            mean = sums / LOG_EVERY
            log.append({"step": step + 1, "ce_future": mean[0], "ce_coc": mean[1], "flow": mean[2],
                        "lr": optimiser.param_groups[0]["lr"], "elapsed_s": time.perf_counter() - started})
            sums[:] = 0.0
    train_s, train_cpu_s = time.perf_counter() - train_started, time.process_time() - cpu_started
    model.eval()
    save_pretrained(model, out)
    record = {"command": " ".join(["python -m alpamayo_ros.tools.train_driver", *sys.argv[1:]]),
              "steps": steps, "batch_size": batch_size, "drives_per_scenario": drives, "t0_stride": t0_stride,
              "examples": len(examples), "lr": lr, "warmup": warmup, "min_lr": min_lr, "seed": seed,
              "flow_draws": flow_draws, "expert_trains_vlm": expert_trains_vlm, "offset_share": offset_share,
              "max_offset_m": max_offset_m,
              "threads": threads, "render_s": render_s, "train_s": train_s, "train_cpu_s": train_cpu_s,
              "parameters": sum(p.numel() for p in model.parameters()),
              "machine": f"{platform.machine()} {platform.processor()}", "torch": torch.__version__, "log": log}
    (out / "training_log.json").write_text(json.dumps(record, indent=1))
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="output checkpoint directory")
    parser.add_argument("--steps", type=int, default=840)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--drives", type=int, default=12, help="training drives per scenario")
    parser.add_argument("--t0-stride", type=int, default=4, help="t0 every N x 0.1 s along a drive")
    parser.add_argument("--lr", type=float, default=1.5e-3)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--min-lr", type=float, default=1e-5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2,
                        help="torch CPU threads (the driver: both of the 2 cores; use 1 where another job shares them)")
    parser.add_argument("--flow-draws", type=int, default=8,
                        help="flow-matching (t, noise) draws per sample on its one VLM pass (the recipe: 1)")
    parser.add_argument("--expert-trains-vlm", action=argparse.BooleanOptionalAction, default=True,
                        help="flow matching's gradient reaches the VLM through the cache (the recipe's "
                             "stop_grad_from_vlm=False); --no-expert-trains-vlm detaches it (the recipe's default)")
    parser.add_argument("--offset-share", type=float, default=0.0,
                        help="share of examples that start off the lane centre and recover")
    parser.add_argument("--max-offset", type=float, default=1.5, help="m: their offsets are uniform within +-this")
    parser.add_argument("--save-every", type=int, default=0, help="also write OUT every N steps (0: only at the end)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    record = train(args.out, args.steps, args.batch_size, args.drives, args.t0_stride, args.lr, args.warmup,
                   args.min_lr, args.seed, args.threads, args.flow_draws, args.expert_trains_vlm,
                   args.save_every, args.offset_share, args.max_offset)
    last = record["log"][-1] if record["log"] else {}
    print(f"wrote {args.out}: {record['examples']} examples rendered in {record['render_s']:.0f} s, "
          f"{record['steps']} steps in {record['train_s']:.0f} s; last losses {last}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

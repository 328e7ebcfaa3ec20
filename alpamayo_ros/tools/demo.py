"""The README's demo: replay a synthetic drive through the node and score it; or (--model-only) one inference.

By default: write the bag of a held-out synthetic-world drive (tools/world.py; 'mixed': a curve, a red
light, a lead vehicle; a seed never used in training), run it through the node's own pipeline in lockstep
in this process (the embedded driver unless --model-path names a checkpoint; no DDS, the same result
under any load), evaluate the outputs against the bag's future odometry beside the constant-velocity
baseline, print the tick summary, the table and where the plot is. --model-only prints one direct
inference in full.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
from pathlib import Path

import numpy as np

from alpamayo_ros.model.loading import EMBEDDED_DRIVER_DIR, from_pretrained
from alpamayo_ros.tools import world
from alpamayo_ros.tools.driver_data import HELD_OUT_SEEDS

SUMMARY_TIMES_S = (0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 6.4)


REPO = Path(__file__).resolve().parents[2]
TICK_HZ = 2.0
MODEL_ONLY_T0_S = 6.0  # --model-only: the drive's model input at this time


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model-only", action="store_true", help="one direct inference, no ROS")
    parser.add_argument("--model-path", default="", help="local checkpoint directory; empty: the embedded driver")
    parser.add_argument("--base-model-dir", default=None, help="local base Qwen3-VL directory")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--num-samples", type=int, default=3)
    parser.add_argument("--max-reasoning-tokens", type=int, default=96)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scenario", default="mixed", choices=world.SCENARIOS, help="synthetic-world scenario")
    parser.add_argument("--world-seed", type=int, default=HELD_OUT_SEEDS[0], help="its seed (held out from training)")
    parser.add_argument("--out-dir", default=str(REPO / "demo_output"), help="bag, replay, plot and summary")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return model_demo(args) if args.model_only else replay_demo(args)


def replay_demo(args: argparse.Namespace) -> int:
    """Sample bag -> the node's pipeline in lockstep (in-process, no DDS) -> evaluation table and plot."""
    from alpamayo_ros import parameters
    from alpamayo_ros.ros_env import loopback_dds_env
    from alpamayo_ros.tools.bag_io import BagError
    from alpamayo_ros.tools.evaluate import evaluate, print_table
    from alpamayo_ros.tools.replay import print_summary, replay_lockstep

    loopback_dds_env()  # no DDS runs here, but rclpy's message libraries load: never let them multicast
    out_dir = Path(args.out_dir).resolve()
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    drive = world.generate(args.scenario, args.world_seed)
    bag = world.write_bag(drive, out_dir / "sample_bag")
    print(f"1/3 wrote the bag {bag}: the synthetic world's '{args.scenario}' drive, seed {args.world_seed} "
          f"({drive.duration_s:.0f} s; 4 JPEG cameras at 10 Hz, odometry at 50 Hz)", flush=True)
    cfg = parameters.from_values({
        "image_transport": "compressed", "device": args.device,
        "dtype": "float32" if args.device == "cpu" else "bfloat16", "num_samples": args.num_samples,
        "max_reasoning_tokens": args.max_reasoning_tokens, "rate_hz": TICK_HZ, "seed": args.seed,
        "selection": "medoid", "model_path": args.model_path, "base_model_dir": args.base_model_dir or ""})
    print(f"2/3 replaying it through the node's pipeline in lockstep at {TICK_HZ:g} Hz "
          f"({'the embedded driver' if not args.model_path else args.model_path}; every tick runs to completion)",
          flush=True)
    counts, _ = replay_lockstep(bag, out_dir / "replay", cfg)
    print_summary(counts, out_dir / "replay")
    if counts.published == 0:
        return 1
    print("3/3 evaluating against the bag's own future odometry\n", flush=True)
    try:
        summary = evaluate([out_dir / "replay"], json_path=out_dir / "evaluation.json",
                           plot_path=out_dir / "evaluation.png")
    except BagError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 1
    print_table(summary)
    print(f"\nplot: {out_dir / 'evaluation.png'}\nsummary: {out_dir / 'evaluation.json'}")
    if not args.model_path:
        print("\nThe embedded driver is a small AlpamayoR1 trained on this synthetic world (alpamayo_ros/driver/README.md), "
              "not NVIDIA's model. For the released checkpoint: make demo DEMO_ARGS='--model-path "
              "/models/Alpamayo-R1-10B --base-model-dir /models/Qwen3-VL-8B-Instruct --device cuda'")
    return 0


def model_demo(args: argparse.Namespace) -> int:
    """One inference printed in full."""
    drive = world.generate(args.scenario, args.world_seed)
    if args.model_path:
        model = from_pretrained(args.model_path, base_model_dir=args.base_model_dir, device=args.device)
        sample = drive.model_sample(MODEL_ONLY_T0_S, height=320, width=576)
    else:
        model = from_pretrained(EMBEDDED_DRIVER_DIR, device=args.device)
        sample = drive.model_sample(MODEL_ONLY_T0_S)
    pred = model.sample(sample.images, sample.ego_history_xyz, sample.ego_history_rot, num_samples=args.num_samples,
                        max_reasoning_tokens=args.max_reasoning_tokens, seed=args.seed)

    dt = model.config.action_space_cfg.dt
    print(f"'{args.scenario}' drive, seed {args.world_seed}, t0 = {MODEL_ONLY_T0_S} s; ground-truth Chain-of-Causation "
          f"{sample.coc!r}")
    print(f"AlpamayoR1 ({'embedded driver' if not args.model_path else args.model_path}): "
          f"{pred.xyz.shape[0]} samples x {pred.xyz.shape[1]} poses ({dt * pred.xyz.shape[1]:.1f} s at {1 / dt:.0f} Hz), "
          "ego frame at t0 (x forward, y left)")
    for s in range(pred.xyz.shape[0]):
        xyz = pred.xyz[s].numpy()
        yaw = np.degrees(np.arctan2(pred.rot[s, :, 1, 0].numpy(), pred.rot[s, :, 0, 0].numpy()))
        print(f"\nsample {s}: reached <|traj_future_start|>: {pred.complete[s]}")
        print("   t [s]    x [m]    y [m]  yaw [deg]")
        for t in SUMMARY_TIMES_S:
            k = round(t / dt) - 1
            print(f"  {t:6.1f} {xyz[k, 0]:8.2f} {xyz[k, 1]:8.2f} {yaw[k]:9.2f}")
        print(f"  reasoning: {pred.reasoning[s]!r}")
    print("\nsample 0, all poses (t [s]: x, y [m]):")
    xyz0 = pred.xyz[0].numpy()
    per_line = 4
    for start in range(0, len(xyz0), per_line):
        print("  " + "   ".join(f"{(k + 1) * dt:4.1f}: {xyz0[k, 0]:7.2f} {xyz0[k, 1]:6.2f}"
                                for k in range(start, min(start + per_line, len(xyz0)))))
    t = pred.timings
    print(f"\ntimings [ms]: vision {t.vision_ms:.1f}, prefill {t.prefill_ms:.1f}, decode {t.decode_ms:.1f} "
          f"({t.decode_tokens} tokens), expert {t.expert_ms:.1f}, trajectory {t.trajectory_ms:.1f}, "
          f"total {t.total_ms:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

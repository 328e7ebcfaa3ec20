"""One AlpamayoR1 inference on a synthetic drive, printed as a trajectory summary and reasoning text.

Runs the tiny random model (no checkpoint needed) unless --model-path names a local checkpoint.
"""

from __future__ import annotations

import argparse
import logging

import numpy as np

from alpamayo_ros.model.loading import from_pretrained, tiny
from alpamayo_ros.tools.synthetic import synthetic_drive

SUMMARY_TIMES_S = (0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 6.4)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model-path", default="", help="local checkpoint directory; empty: tiny random model")
    parser.add_argument("--base-model-dir", default=None, help="local base Qwen3-VL directory")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--num-samples", type=int, default=3)
    parser.add_argument("--max-reasoning-tokens", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    if args.model_path:
        model = from_pretrained(args.model_path, base_model_dir=args.base_model_dir, device=args.device)
        drive = synthetic_drive(height=320, width=576)
    else:
        logging.warning("no --model-path: using the TINY RANDOM model; its trajectories and text are noise")
        model = tiny(seed=args.seed, device=args.device)
        drive = synthetic_drive()
    pred = model.sample(drive.images, drive.ego_history_xyz, drive.ego_history_rot, num_samples=args.num_samples,
                        max_reasoning_tokens=args.max_reasoning_tokens, seed=args.seed)

    dt = model.config.action_space_cfg.dt
    print(f"AlpamayoR1 ({'tiny random' if not args.model_path else args.model_path}): "
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

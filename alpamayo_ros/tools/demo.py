"""The README's demo: the node driving on a synthetic drive, or (--model-only) one direct inference.

By default it starts the synthetic publisher (4 cameras + odometry) and the node (tiny random model
unless --model-path names a checkpoint) as separate processes on loopback-only DDS, prints what the
node publishes, and stops both. --model-only skips ROS and prints one inference in full.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from alpamayo_ros.model.loading import from_pretrained, tiny
from alpamayo_ros.tools.synthetic import synthetic_drive

SUMMARY_TIMES_S = (0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 6.4)


REPO = Path(__file__).resolve().parents[2]
OUTPUTS_SHOWN = 3
OUTPUT_WAIT_TIMEOUT_S = 120.0
SHUTDOWN_TIMEOUT_S = 20.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model-only", action="store_true", help="one direct inference, no ROS")
    parser.add_argument("--model-path", default="", help="local checkpoint directory; empty: tiny random model")
    parser.add_argument("--base-model-dir", default=None, help="local base Qwen3-VL directory")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--num-samples", type=int, default=3)
    parser.add_argument("--max-reasoning-tokens", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return model_demo(args) if args.model_only else node_demo(args)


def node_demo(args: argparse.Namespace) -> int:
    """Publisher and node as processes; print the node's outputs as they arrive."""
    # Loopback-only DDS on a domain of its own, set before rclpy loads (here and in the children).
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    os.environ.setdefault("ROS_DOMAIN_ID", str(random.Random(os.getpid()).randint(1, 101)))
    os.environ.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(REPO / "config" / "fastdds_profile.xml"))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    import rclpy
    from alpamayo_msgs.msg import DrivingOutput
    from rclpy.executors import SingleThreadedExecutor

    node_cmd = [sys.executable, "-m", "alpamayo_ros.node", "--ros-args", "-p", f"device:={args.device}",
                "-p", f"num_samples:={args.num_samples}", "-p", f"max_reasoning_tokens:={args.max_reasoning_tokens}",
                "-p", "rate_hz:=1.0", "-p", f"seed:={args.seed}", "-p", "selection:=medoid",
                "-p", f"dtype:={'float32' if args.device == 'cpu' else 'bfloat16'}"]
    if args.model_path:
        node_cmd += ["-p", f"model_path:={args.model_path}"]
        if args.base_model_dir:
            node_cmd += ["-p", f"base_model_dir:={args.base_model_dir}"]
    print(f"starting the synthetic drive publisher and the node (ROS_DOMAIN_ID={os.environ['ROS_DOMAIN_ID']}, "
          "loopback only)...", flush=True)
    publisher = subprocess.Popen([sys.executable, "-m", "alpamayo_ros.tools.synthetic_publisher"], env=env, cwd=REPO,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    node = subprocess.Popen(node_cmd, env=env, cwd=REPO)
    outputs: list = []
    context = rclpy.Context()
    rclpy.init(context=context)
    listener = rclpy.create_node("alpamayo_demo_listener", context=context)
    listener.create_subscription(DrivingOutput, "/alpamayo/output", outputs.append, 10)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(listener)
    spinner = threading.Thread(target=executor.spin)
    spinner.start()
    shown = 0
    try:
        deadline = time.monotonic() + OUTPUT_WAIT_TIMEOUT_S
        while shown < OUTPUTS_SHOWN and time.monotonic() < deadline and node.poll() is None:
            if len(outputs) > shown:
                print_output(outputs[shown])
                shown += 1
            time.sleep(0.1)
    finally:
        executor.shutdown()
        spinner.join()
        listener.destroy_node()
        rclpy.try_shutdown(context=context)
        for proc in (node, publisher):
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=SHUTDOWN_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
    if shown < OUTPUTS_SHOWN:
        print(f"the node published {shown} of {OUTPUTS_SHOWN} outputs before the timeout", file=sys.stderr)
        return 1
    print(f"\nthe node published {shown} driving outputs on /alpamayo/trajectory, /alpamayo/reasoning, "
          "/alpamayo/output, /alpamayo/candidates and /diagnostics")
    return 0


def print_output(out) -> None:
    """One DrivingOutput: its samples, the selected path at a few horizons, reasoning and timings."""
    t0 = out.header.stamp.sec + out.header.stamp.nanosec / 1e9
    path = out.trajectories[out.selected]
    print(f"\n/alpamayo/output tick {out.tick}: t0 {t0:.3f} s, frame {out.header.frame_id}, "
          f"{len(out.trajectories)} samples, selected {out.selected} ({out.selection}), "
          f"{len(path.poses)} poses")
    for horizon in SUMMARY_TIMES_S:
        p = path.poses[round(horizon / 0.1) - 1].pose.position
        print(f"  t0+{horizon:.1f} s: x {p.x:8.2f}  y {p.y:8.2f}")
    print(f"  reasoning: {out.reasoning[out.selected]!r}")
    t = out.timings
    print(f"  timings [ms]: vision {t.vision_ms:.0f}, prefill {t.prefill_ms:.0f}, decode {t.decode_ms:.0f} "
          f"({t.decode_tokens} tokens), expert {t.expert_ms:.0f}, trajectory {t.trajectory_ms:.0f}; "
          f"t0 to publication {t.latency_ms:.0f}", flush=True)


def model_demo(args: argparse.Namespace) -> int:
    """One inference printed in full."""
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

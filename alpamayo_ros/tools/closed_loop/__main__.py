"""Closed loop: the node's tick engine drives a simulated car through a synthetic-world scenario.

    python -m alpamayo_ros.tools.closed_loop --scenario NAME --seed N --out DIR [--rate-hz HZ]
        [--latency measured|fixed:MS] [--params-file YAML] [--param NAME:=VALUE ...] [--mode lockstep|dds]

DIR (new) gets metrics.json, plans.csv, bird_eye.png, run.gif and bag/ (rosbag2 MCAP: cameras, odometry, TF and every
output). Parameters are the node's (model_path empty: the package's default model); the cameras are sent
as image_transport `compressed` unless the parameters say otherwise. `--latency fixed:MS` (default
fixed:300) is deterministic; `measured` charges each tick's wall time to simulated time (realistic).
`--mode dds` runs the node as its own process over loopback DDS on sim time instead (real time).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from alpamayo_ros import parameters
from alpamayo_ros.model.cameras import RELEASE_CAMERAS
from alpamayo_ros.ros_env import loopback_dds_env
from alpamayo_ros.tools.world import SCENARIOS, generate

from . import metrics as run_metrics
from . import report
from .lockstep import Latency
from .loop import held_messages

DEFAULT_LATENCY = "fixed:300"


def node_config(params_file: Path | None, overrides: list[str], rate_hz: float | None) -> parameters.NodeConfig:
    """The node's parameters for the loop: image_transport compressed unless set, then the file, the overrides."""
    values: dict[str, object] = {"image_transport": "compressed"}
    if params_file is not None:
        values.update(parameters.read_params_file(params_file))
    for text in overrides:
        name, value = parameters.parse_override(text)
        values[name] = value
    values.pop("use_sim_time", None)
    if rate_hz is not None:
        values["rate_hz"] = float(rate_hz)
    cfg = parameters.from_values(values)
    if cfg.camera_ids != RELEASE_CAMERAS:
        raise ValueError(f"camera_ids {list(cfg.camera_ids)}: the synthetic world renders the release's four cameras "
                         f"{list(RELEASE_CAMERAS)} only")
    return cfg


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", required=True, choices=SCENARIOS)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True, help="new directory for the run's files")
    parser.add_argument("--rate-hz", type=float, default=None, help="ticks per simulated second (default: rate_hz)")
    parser.add_argument("--latency", default=DEFAULT_LATENCY, help="measured | fixed:MS (default %(default)s)")
    parser.add_argument("--params-file", type=Path, default=None, help="node parameter YAML")
    parser.add_argument("--param", action="append", default=[], metavar="NAME:=VALUE", help="parameter override")
    parser.add_argument("--mode", choices=("lockstep", "dds"), default="lockstep")
    parser.add_argument("--no-animation", action="store_true", help="skip run.gif (faster)")
    args = parser.parse_args(argv)
    if args.out.exists() and any(args.out.iterdir()):
        parser.error(f"{args.out} exists and is not empty")
    loopback_dds_env()  # before rclpy initialises (message serialization; the DDS mode's graph)
    try:
        latency = Latency.parse(args.latency)
        cfg = node_config(args.params_file, args.param, args.rate_hz)
    except ValueError as exc:
        print(f"closed_loop: {exc}", file=sys.stderr)
        return 2
    world = generate(args.scenario, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.mode == "dds":
        from .dds import run_dds

        result = run_dds(world, cfg, args.out / "bag", args.params_file, args.param)
        what, latency_label = result.what, "the node's own (real time over DDS)"
    else:
        from .lockstep import run_lockstep

        result = run_lockstep(world, cfg, latency, args.out / "bag", keep_frames=not args.no_animation)
        what, latency_label = result.what, latency.label
    measured = run_metrics.compute(result.trace, world, result.counts)
    measured.update(mode=args.mode, latency=latency_label if args.mode == "lockstep" else "real time",
                    model=what, rate_hz=cfg.rate_hz)
    (args.out / "metrics.json").write_text(json.dumps(measured, indent=2) + "\n")
    report.plans_csv(result.trace, world, args.out / "plans.csv")
    report.bird_eye_png(result.trace, world, measured, args.out / "bird_eye.png")
    if not args.no_animation:
        report.animation_gif(result.trace, world, args.out / "run.gif")
    print(f"closed_loop: {args.scenario} seed {args.seed}, {args.mode}, model: {what}")
    print(f"closed_loop: latency {latency_label}; {result.counts.summary()}")
    for line in held_messages(result.trace):
        print(f"closed_loop: {line}")
    print(run_metrics.key_value_table(measured))
    print(f"closed_loop: wrote {args.out}/metrics.json, plans.csv, bird_eye.png{'' if args.no_animation else ', run.gif'}, bag/")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The states a driver visits in closed loop, as examples the world's expert labels (DAgger).

A driver trained on the expert's drive and on synthetic perturbations of it still meets, in closed loop, states
neither shows: in a 30 m curve the car runs 2 m/s faster than the expert *and* drifts outside, and from
there its plans keep the speed. This module runs a driver in lockstep closed loop on training drives and
writes down where the car was every `every_s` seconds after the handover, relative to the expert at that time:
how far ahead along the road and how much faster (`world.World.late`), how far off the lane centre, at what
heading and curvature error (`world.World.model_sample`'s offset and drift). `train_driver --visited FILE`
renders each state as an example: the cameras at the car's pose and the expert's recovery from it as the future
(Ross et al., "A Reduction of Imitation Learning and Structured Prediction to No-Regret Online Learning",
2011: label the learner's own states with the expert).

    python -m alpamayo_ros.tools.visited OUT.json [--model-path DIR] [--drives 3] [--every 0.5]

Training seeds only (`driver_data.TRAIN_SEEDS`), the node's defaults and a fixed 300 ms latency, as the
closed-loop benchmark runs them.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from alpamayo_ros.tools import world as world_module
from alpamayo_ros.tools.driver_data import TRAIN_SEEDS
from alpamayo_ros.tools.world import World

# What a state may ask of the world's perturbations: beyond these the car has left the road or turned around,
# and the recovery the expert would drive is no longer one smoothstep over RECOVERY_M.
MAX_OFFSET_M = 3.0
MAX_HEADING_ERROR_RAD = 0.3
MAX_CURVATURE_ERROR = 0.05  # 1/m


@dataclass(frozen=True, slots=True)
class VisitedState:
    """The car at t0_s of a closed-loop run on `scenario`/`seed`, relative to the expert at t0_s."""

    scenario: str
    seed: int
    t0_s: float
    ahead_m: float  # further along the road than the expert (world.World.late)
    fast_mps: float  # faster than the expert
    offset_m: float  # left of the lane centre (world.World.model_sample)
    heading_error_rad: float  # + left of the lane's heading
    curvature_error: float  # 1/m, turning that much more to the left than the road


def states_from_trace(world: World, trace, every_s: float = 0.5) -> list[VisitedState]:
    """The car's state every `every_s` seconds of a closed-loop `trace` (loop.Trace) on `world`, from its
    handover on, while it has a full history and the world a 6.4 s future; clipped to what the world's
    perturbations can show (MAX_*)."""
    from alpamayo_ros.tools.closed_loop.vehicle import LIMITS

    drive, road = world.drive, world.road
    states, next_t = [], world_module.HISTORY_S
    for t_s, state, mode, s, d in zip(trace.t_s, trace.state, trace.mode, trace.s, trace.d, strict=True):
        if mode == "expert" or t_s < next_t - 1e-9 or not math.isfinite(d):
            continue
        if t_s > world.duration_s + 1e-9:
            break
        next_t = t_s + every_s
        heading = float(road.at(s)[2])
        kappa = float(np.interp(s, road.s, road.kappa))
        error = math.remainder(state.yaw - heading, math.tau)
        states.append(VisitedState(
            scenario=world.scenario, seed=world.seed, t0_s=round(t_s, 3),
            ahead_m=float(s - np.interp(t_s, drive.t, drive.s)), fast_mps=float(state.speed - np.interp(t_s, drive.t, drive.v)),
            offset_m=float(np.clip(d, -MAX_OFFSET_M, MAX_OFFSET_M)),
            heading_error_rad=float(np.clip(error, -MAX_HEADING_ERROR_RAD, MAX_HEADING_ERROR_RAD)),
            curvature_error=float(np.clip(state.curvature(LIMITS) - kappa, -MAX_CURVATURE_ERROR, MAX_CURVATURE_ERROR))))
    return states


def collect(model_path: str, drives: int, every_s: float) -> list[VisitedState]:
    """Every scenario's first `drives` training seeds driven in lockstep closed loop by `model_path` (empty: the
    embedded driver) with the node's defaults (float32 on the CPU) and the closed loop's default fixed latency (300 ms)."""
    from alpamayo_ros.pipeline.engine import build_model
    from alpamayo_ros.tools.closed_loop.__main__ import DEFAULT_LATENCY, node_config
    from alpamayo_ros.tools.closed_loop.lockstep import Latency, run_lockstep

    cfg = node_config(None, [f"model_path:={model_path}", "dtype:=float32", "device:=cpu"], None)
    model, _ = build_model(cfg.model_settings)  # loaded once for every run
    states: list[VisitedState] = []
    for seed in TRAIN_SEEDS[:drives]:
        for name in world_module.SCENARIOS:
            world = world_module.generate(name, seed)
            trace = run_lockstep(world, cfg, Latency.parse(DEFAULT_LATENCY), model=model, keep_frames=False).trace
            found = states_from_trace(world, trace, every_s)
            print(f"visited: {name} {seed}: {len(found)} states ({trace.end_reason or 'completed'})", file=sys.stderr)
            states.extend(found)
    return states


def read_states(path: Path) -> list[VisitedState]:
    """The states in a file `main` wrote; a state on a seed outside TRAIN_SEEDS (held out for evaluation, the
    tests and the demo) is refused."""
    states = [VisitedState(**row) for row in json.loads(Path(path).read_text())["states"]]
    if held_out := sorted({(s.scenario, s.seed) for s in states if s.seed not in TRAIN_SEEDS}):
        raise ValueError(f"{path}: states on seeds that are not training seeds: {held_out[:5]}"
                         f"{' ...' if len(held_out) > 5 else ''}")
    return states


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="JSON file to write")
    parser.add_argument("--model-path", default="", help="checkpoint directory (default: the embedded driver)")
    parser.add_argument("--drives", type=int, default=3, help="training seeds per scenario")
    parser.add_argument("--every", type=float, default=0.5, help="s between recorded states")
    args = parser.parse_args(argv)
    if args.drives < 1 or args.every <= 0.0:
        parser.error("--drives must be >= 1 and --every > 0")
    from alpamayo_ros.ros_env import loopback_dds_env

    loopback_dds_env()
    states = collect(args.model_path, args.drives, args.every)
    args.out.write_text(json.dumps({"command": " ".join(["python -m alpamayo_ros.tools.visited", *sys.argv[1:]]),
                                    "states": [asdict(s) for s in states]}, indent=0) + "\n")
    print(f"wrote {args.out}: {len(states)} states")
    return 0


if __name__ == "__main__":
    sys.exit(main())

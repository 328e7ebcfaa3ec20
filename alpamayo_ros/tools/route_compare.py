"""Score one bag with its route, without it, and with left and right swapped (Alpamayo 1.5's navigation check).

As NVIDIA's `nav_utils.compare_nav_conditions` compares p(traj | nav), p(traj) and p(traj | opposite nav), this
replays the bag in lockstep three times (`tools.replay`, route_variant "as_recorded", "none", "swapped") and
scores each output bag against the bag's own odometry (`tools.evaluate`). A model that follows the route scores
best with it and worst with the swapped one where the car turned.

    python -m alpamayo_ros.tools.route_compare BAG --out DIR --route-topic /route --param model_path:=/models/a15
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from alpamayo_ros.parameters import NodeConfig
from alpamayo_ros.pipeline.engine import build_model
from alpamayo_ros.tools.bag_io import BagError
from alpamayo_ros.tools.evaluate import evaluate
from alpamayo_ros.tools.replay import ROUTE_VARIANTS, config_from_args, replay_lockstep

HORIZON = "3s"  # the horizon the printed comparison shows (every horizon is in the JSON)


def compare_routes(bag: Path, out: Path, cfg: NodeConfig, model=None) -> dict[str, dict]:
    """Replay `bag` once per route variant into `out/<variant>` and evaluate each: variant -> evaluate summary."""
    if not cfg.has_route:
        raise ValueError("no route_topic or route_path_topic configured: nothing to compare")
    model, _ = build_model(cfg.model_settings, model)  # loaded once for the three replays
    summaries = {}
    for variant in ROUTE_VARIANTS:
        replay_lockstep(bag, out / variant, cfg, model, route_variant=variant)
        summaries[variant] = evaluate([out / variant], odometry_topic=cfg.odometry_topic)
    return summaries


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bag", type=Path, help="rosbag2 with cameras, odometry and the route topic(s)")
    parser.add_argument("--out", type=Path, required=True, help="new directory for the three output bags")
    parser.add_argument("--tick-hz", type=float, default=None)
    parser.add_argument("--odometry-topic", default=None)
    parser.add_argument("--route-topic", default=None)
    parser.add_argument("--route-path-topic", default=None)
    parser.add_argument("--params-file", type=Path, default=None)
    parser.add_argument("--param", action="append", default=[], metavar="NAME:=VALUE")
    parser.add_argument("--json", type=Path, default=None, help="write the three summaries here")
    args = parser.parse_args(argv)
    try:
        summaries = compare_routes(args.bag, args.out, config_from_args(args))
    except (BagError, ValueError) as exc:
        print(f"route_compare: {exc}", file=sys.stderr)
        return 2
    print(f"{'route':>12} {'outputs':>8} {'ADE ' + HORIZON + ' [m]':>12} {'FDE ' + HORIZON + ' [m]':>12}")
    for variant, summary in summaries.items():
        metric = summary["metrics"][HORIZON]
        cells = [f"{metric[k]:>12.3f}" if metric[k] is not None else f"{'-':>12}" for k in ("ade_m", "fde_m")]
        print(f"{variant:>12} {summary['outputs']:>8} " + " ".join(cells))
    if args.json:
        args.json.write_text(json.dumps(summaries, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

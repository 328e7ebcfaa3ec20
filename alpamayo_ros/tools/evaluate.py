"""Score recorded driving outputs against where the car actually went (the bag's own odometry).

For every `alpamayo_msgs/DrivingOutput` in the bag(s): each sample's poses and the odometry at
t0 + 0.1 ... t0 + 6.4 s, both in the ego frame at t0 (the odometry pose at t0), compared in the ground
(xy) plane: ADE (mean error up to a horizon), FDE (error at the horizon) of the published sample, and
minADE over all samples, at 1, 3, 5 and 6.4 s. Horizons past the end of the odometry are left out.
Beside the model, on the same ticks: the constant-velocity baseline, which extrapolates the speed and yaw
rate the odometry shows over the last BASELINE_WINDOW_S before t0 (what the history alone predicts).
Also latency percentiles (DrivingOutput timings) and tick outcomes (`~/tick`). Works on any bag that
holds the odometry and the node's outputs: a replay's output bag, or a recording made on a car. For Alpamayo 1.5,
`tools.route_compare` scores one input bag with its route, without it and with left and right swapped.

    python -m alpamayo_ros.tools.evaluate replay_out --json eval.json --plot eval.png
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from alpamayo_ros.pipeline.pose_history import HistoryGap, PoseHistory, PoseSample
from alpamayo_ros.tools.bag_io import BagError, alpamayo_typestore, open_bag, read_messages, require_topics
from alpamayo_ros.units import NS_PER_S

HORIZONS_S = (1.0, 3.0, 5.0, 6.4)
DT_S = 0.1
WAYPOINTS = 64
GROUND_TRUTH_MAX_GAP_NS = 500_000_000  # odometry gaps the ground truth may interpolate over
BASELINE_WINDOW_S = 0.2  # speed and yaw rate of the baseline: the odometry's over this last stretch before t0
TICK_OUTCOMES = {0: "not_ready", 1: "submitted", 2: "dropped_busy", 3: "published", 4: "rejected", 5: "model_error"}


@dataclass(frozen=True)
class Scored:
    """One output: per-waypoint errors (samples, 64) in metres, NaN past the ground truth; the selected index."""

    t0_ns: int
    errors: np.ndarray
    baseline_errors: np.ndarray  # (64,) the constant speed and yaw rate extrapolation's errors, NaN past the truth
    selected: int
    pred_odom: np.ndarray  # (64, 2) selected sample in the odometry frame, for plots
    latency_ms: float
    model_ms: float
    route: str = ""  # Alpamayo 1.5: the navigation text in the prompt ("" = none)


def _stamp(stamp) -> int:
    return stamp.sec * NS_PER_S + stamp.nanosec


def _poses(path) -> np.ndarray:
    return np.array([[p.pose.position.x, p.pose.position.y, p.pose.position.z] for p in path.poses], dtype=np.float64)


def read_bag(paths: list[Path], odometry_topic: str, output_topic: str, tick_topic: str):
    """Odometry history, DrivingOutputs and tick outcomes from the bag(s)."""
    typestore = alpamayo_typestore()
    reader = open_bag(paths, typestore)
    try:
        require_topics(reader, [odometry_topic, output_topic],
                       hint="name the bag's topics with --odometry-topic and --output-topic")
        history = PoseHistory(horizon_ns=1 << 62, max_samples=1 << 30)
        odom_frame = None
        outputs, ticks = [], {}
        wanted = [c for c in reader.connections if c.topic in (odometry_topic, output_topic, tick_topic)]
        for connection, _, raw in read_messages(reader, wanted):
            msg = reader.deserialize(raw, connection.msgtype)
            if connection.topic == odometry_topic:
                p, q = msg.pose.pose.position, msg.pose.pose.orientation
                history.push(PoseSample(stamp_ns=_stamp(msg.header.stamp), position=np.array([p.x, p.y, p.z]),
                                        orientation=np.array([q.x, q.y, q.z, q.w]) / np.linalg.norm([q.x, q.y, q.z, q.w])))
                odom_frame = odom_frame or msg.header.frame_id
            elif connection.topic == output_topic:
                outputs.append(msg)
            else:
                ticks[msg.tick] = msg.outcome  # the last report of a tick is its outcome
    finally:
        reader.close()
    if not outputs:
        raise BagError(f"{output_topic} holds no messages: nothing to evaluate")
    return history, odom_frame, outputs, ticks


def score(history: PoseHistory, odom_frame: str, output) -> Scored:
    """Errors of every sample of one DrivingOutput against the odometry ground truth."""
    t0 = _stamp(output.header.stamp)
    (p0,), r0 = history.interpolate(np.array([t0]), GROUND_TRUTH_MAX_GAP_NS)
    r0 = r0[0]
    future = t0 + np.arange(1, WAYPOINTS + 1, dtype=np.int64) * round(DT_S * NS_PER_S)
    truth = np.full((WAYPOINTS, 3), np.nan)
    covered = future <= history.newest_stamp_ns
    if covered.any():
        positions, _ = history.interpolate(future[covered], GROUND_TRUTH_MAX_GAP_NS)
        truth[covered] = r0.inv().apply(positions - p0)
    in_odom = output.header.frame_id == odom_frame
    baseline = constant_velocity_baseline(history, t0)
    errors, preds = [], []
    for path in output.trajectories:
        poses = _poses(path)
        ego = r0.inv().apply(poses - p0) if in_odom else poses
        preds.append(poses if in_odom else r0.apply(poses) + p0)
        errors.append(np.linalg.norm(ego[:, :2] - truth[:, :2], axis=1))
    return Scored(t0_ns=t0, errors=np.array(errors),
                  baseline_errors=np.linalg.norm(baseline - truth[:, :2], axis=1), selected=output.selected,
                  pred_odom=preds[output.selected][:, :2],
                  latency_ms=output.timings.latency_ms, model_ms=output.timings.total_ms, route=output.route)


def constant_velocity_baseline(history: PoseHistory, t0_ns: int) -> np.ndarray:
    """(64, 2) xy in the ego frame at t0: the speed and yaw rate of the last BASELINE_WINDOW_S kept constant."""
    window_ns = round(BASELINE_WINDOW_S * NS_PER_S)
    (p_before, p0), rotations = history.interpolate(np.array([t0_ns - window_ns, t0_ns]), GROUND_TRUTH_MAX_GAP_NS)
    step = rotations[1].inv().apply(p0 - p_before)[:2]  # ego frame at t0
    speed = float(np.linalg.norm(step)) / BASELINE_WINDOW_S
    yaw_rate = float((rotations[0].inv() * rotations[1]).as_rotvec()[2]) / BASELINE_WINDOW_S
    return unicycle(speed, yaw_rate, DT_S * np.arange(1, WAYPOINTS + 1))


def unicycle(speed_mps: float, yaw_rate_rps: float, times_s: np.ndarray) -> np.ndarray:
    """(N, 2) positions at `times_s` of a vehicle leaving the origin along +x at constant speed and yaw rate."""
    if abs(yaw_rate_rps) < 1e-6:
        return np.stack([speed_mps * times_s, np.zeros_like(times_s)], axis=-1)
    radius = speed_mps / yaw_rate_rps
    yaw = yaw_rate_rps * times_s
    return np.stack([radius * np.sin(yaw), radius * (1.0 - np.cos(yaw))], axis=-1)


def summarise(scored: list[Scored], ticks: dict[int, int]) -> dict:
    """Mean metrics per horizon over the outputs whose ground truth reaches it; latency; tick outcomes."""
    metrics = {}
    for horizon in HORIZONS_S:
        n = round(horizon / DT_S)
        ade, fde, min_ade, base_ade, base_fde = [], [], [], [], []
        for s in scored:
            window = s.errors[:, :n]
            if np.isnan(window).any():
                continue
            per_sample = window.mean(axis=1)
            ade.append(per_sample[s.selected])
            fde.append(window[s.selected, -1])
            min_ade.append(per_sample.min())
            base_ade.append(s.baseline_errors[:n].mean())
            base_fde.append(s.baseline_errors[n - 1])
        metrics[f"{horizon:g}s"] = {"n": len(ade), "ade_m": _mean(ade), "fde_m": _mean(fde), "min_ade_m": _mean(min_ade),
                                    "baseline_ade_m": _mean(base_ade), "baseline_fde_m": _mean(base_fde)}
    latency = [s.latency_ms for s in scored]
    model = [s.model_ms for s in scored]
    outcomes = {name: sum(1 for o in ticks.values() if o == code) for code, name in TICK_OUTCOMES.items()}
    routes = dict(Counter(s.route for s in scored if s.route))  # Alpamayo 1.5: route text -> outputs with it
    return {"outputs": len(scored), "metrics": metrics, "latency_ms": _percentiles(latency),
            "model_ms": _percentiles(model), "ticks": {"total": len(ticks), **outcomes}, "routes": routes}


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def _percentiles(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    p50, p90, p99 = np.percentile(values, [50, 90, 99])
    return {"p50": float(p50), "p90": float(p90), "p99": float(p99), "max": float(np.max(values))}


def print_table(summary: dict) -> None:
    print(f"evaluated {summary['outputs']} outputs against the bag's odometry (xy, ego frame at t0)")
    print(f"{'':>13} {'model':^31} {'constant velocity':^21}")
    print(f"{'horizon':>8} {'n':>4} {'ADE [m]':>9} {'FDE [m]':>9} {'minADE [m]':>11} {'ADE [m]':>10} {'FDE [m]':>10}")
    for horizon, m in summary["metrics"].items():
        cells = [f"{m[k]:>{w}.3f}" if m[k] is not None else f"{'-':>{w}}" for k, w in
                 (("ade_m", 9), ("fde_m", 9), ("min_ade_m", 11), ("baseline_ade_m", 10), ("baseline_fde_m", 10))]
        print(f"{horizon:>8} {m['n']:>4} " + " ".join(cells))
    for name, label in (("latency_ms", "t0 to publication (node clock)"), ("model_ms", "model time (wall)")):
        p = summary[name]
        if p and p["max"] > 0:  # a lockstep replay holds sim time while the model runs: latency reads 0
            print(f"{label} [ms]: p50 {p['p50']:.0f}, p90 {p['p90']:.0f}, p99 {p['p99']:.0f}, max {p['max']:.0f}")
    if summary["routes"]:
        print("routes in the prompts: " + ", ".join(f"'{text}' ({n})" for text, n in summary["routes"].items()))
    t = summary["ticks"]
    if t["total"]:
        print(f"ticks: {t['total']} ({t['published']} published, {t['not_ready']} not ready, "
              f"{t['dropped_busy']} dropped while the model was busy, {t['rejected']} rejected, "
              f"{t['model_error']} model errors)")


def plot(history: PoseHistory, scored: list[Scored], path: Path) -> None:
    """Trajectories over the driven path, and error against horizon."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (ax_map, ax_err) = plt.subplots(1, 2, figsize=(13, 5.5))
    truth = np.stack([s.position for s in history.samples])
    ax_map.plot(truth[:, 0], truth[:, 1], color="0.3", linewidth=2.5, label="driven (odometry)")
    colours = plt.cm.viridis(np.linspace(0, 1, max(len(scored), 1)))
    for s, colour in zip(scored, colours):
        ax_map.plot(s.pred_odom[:, 0], s.pred_odom[:, 1], color=colour, linewidth=1, alpha=0.8)
        ax_map.plot(*s.pred_odom[0], marker=".", color=colour)
    ax_map.set(title="published trajectories over the driven path", xlabel="x [m] (odom)", ylabel="y [m] (odom)")
    ax_map.axis("equal")
    ax_map.legend(loc="best")
    horizon = DT_S * np.arange(1, WAYPOINTS + 1)
    selected = np.array([s.errors[s.selected] for s in scored])
    with warnings.catch_warnings():  # horizons no output reaches are NaN: "mean of empty slice"
        warnings.simplefilter("ignore", RuntimeWarning)
        ade = np.array([np.nanmean(np.cumsum(selected[:, :k + 1], axis=1)[:, -1] / (k + 1)) for k in range(WAYPOINTS)])
        ax_err.plot(horizon, np.nanmean(selected, axis=0), label="FDE (error at t)")
        ax_err.plot(horizon, ade, label="ADE (mean error up to t)")
        best = np.array([np.nanmin(np.cumsum(s.errors, axis=1) / np.arange(1, WAYPOINTS + 1), axis=0) for s in scored])
        ax_err.plot(horizon, np.nanmean(best, axis=0), label="minADE over samples")
    ax_err.set(title=f"error against horizon ({len(scored)} outputs)", xlabel="horizon [s]", ylabel="error [m]")
    ax_err.grid(alpha=0.3)
    ax_err.legend(loc="best")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def evaluate(paths: list[Path], odometry_topic: str = "/odom", output_topic: str = "/alpamayo/output",
             tick_topic: str = "/alpamayo/tick", json_path: Path | None = None, plot_path: Path | None = None) -> dict:
    """Score every output in the bag(s); optionally write JSON and a PNG. Returns the summary."""
    history, odom_frame, outputs, ticks = read_bag(paths, odometry_topic, output_topic, tick_topic)
    scored = []
    for output in outputs:
        try:
            scored.append(score(history, odom_frame, output))
        except HistoryGap as gap:
            print(f"evaluate: output at t0={_stamp(output.header.stamp) / 1e9:.3f} s skipped: {gap}", file=sys.stderr)
    summary = summarise(scored, ticks)
    if json_path:
        Path(json_path).write_text(json.dumps(summary, indent=2))
    if plot_path and scored:
        plot(history, scored, Path(plot_path))
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bags", type=Path, nargs="+", help="rosbag2 directories or files with odometry and outputs")
    parser.add_argument("--odometry-topic", default="/odom")
    parser.add_argument("--output-topic", default="/alpamayo/output")
    parser.add_argument("--tick-topic", default="/alpamayo/tick")
    parser.add_argument("--json", type=Path, default=None, help="write the summary here")
    parser.add_argument("--plot", type=Path, default=None, help="write a PNG here")
    args = parser.parse_args(argv)
    try:
        summary = evaluate(args.bags, args.odometry_topic, args.output_topic, args.tick_topic, args.json, args.plot)
    except BagError as exc:
        print(f"evaluate: {exc}", file=sys.stderr)
        return 2
    print_table(summary)
    for label, path in (("summary", args.json), ("plot", args.plot)):
        if path:
            print(f"{label}: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

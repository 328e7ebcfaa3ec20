"""What a closed-loop run achieved, from its trace: a flat JSON-able dict and a printed table.

Definitions (base_link is the rear axle; s the road arc length, d the lateral offset from the ego lane's
centre, + left):
- completed: the run reached the world's duration without a collision and without leaving the road.
- progress_m: s at the end; expert_progress_m: the world's expert driver's s at the same time;
  progress_ratio: their ratio (1.0 = as far as the expert).
- max_lane_offset_m: largest |d| of base_link. A lane departure is |d| > LANE_DEPARTURE_M (1.0 m: the car's
  side is then 0.1 m from a 3.6 m lane's line); each entry beyond it counts once; also the time beyond it.
- red_violations: times the front bumper crossed the stop line while the light was red.
- min_gap_m: least bumper-to-bumper gap to the lead vehicle while it is ahead and side by side;
  collisions: 1 if the run ended by touching it.
- accelerations and jerks: from the car's state every 10 ms after the handover (the expert's
  start excluded): longitudinal = delivered acceleration, lateral = speed^2 * curvature; jerk = their
  change per step / 10 ms.
"""

from __future__ import annotations

import math

import numpy as np

from alpamayo_ros.tools.world import EGO_FRONT_M, VEHICLE_LENGTH_M, World

from .loop import COLLISION_LATERAL_M, Trace
from .vehicle import LIMITS, VehicleLimits

LANE_DEPARTURE_M = 1.0


def compute(trace: Trace, world: World, counts, limits: VehicleLimits = LIMITS) -> dict:
    """The run's metrics (see the module docstring); `counts` is the engine's TickCounts."""
    t = np.array(trace.t_s)
    s, d = np.array(trace.s), np.array(trace.d)
    speed = np.array([st.speed for st in trace.state])
    accel = np.array([st.accel for st in trace.state])
    lateral = np.array([st.speed ** 2 * st.curvature(limits) for st in trace.state])
    closed = np.array([m != "expert" for m in trace.mode])
    dt = float(t[1] - t[0]) if len(t) > 1 else 0.01
    departed = np.abs(d) > LANE_DEPARTURE_M
    entries = int(np.count_nonzero(departed[1:] & ~departed[:-1]) + (1 if len(departed) and departed[0] else 0))
    front = s + EGO_FRONT_M
    red_violations = 0
    if world.stop_line_s is not None:
        for k in range(1, len(t)):
            if front[k - 1] < world.stop_line_s <= front[k] and trace.light[k] == "red":
                red_violations += 1
    lead = np.array(trace.lead_s)
    gap = lead - front
    beside = np.isfinite(lead) & (np.abs(d) < COLLISION_LATERAL_M) & (s <= lead + VEHICLE_LENGTH_M)
    min_gap = float(gap[beside].min()) if beside.any() else None
    end_t = float(t[-1])
    expert_s = float(np.interp(end_t, world.drive.t, world.drive.s))
    jerk_long = np.abs(np.diff(accel[closed])) / dt if closed.sum() > 1 else np.zeros(1)
    jerk_lat = np.abs(np.diff(lateral[closed])) / dt if closed.sum() > 1 else np.zeros(1)
    collided = trace.end_reason.startswith("collided")
    held = [m == "no plan" for m in trace.mode]
    waiting = sum(counts.not_ready.values())
    return {
        "scenario": world.scenario, "seed": world.seed,
        "completed": not trace.end_reason, "end_reason": trace.end_reason or "reached the world's duration",
        "simulated_s": round(end_t, 3), "progress_m": round(float(s[-1]), 3), "expert_progress_m": round(expert_s, 3),
        "progress_ratio": round(float(s[-1]) / expert_s, 4) if expert_s > 0 else None,
        "max_lane_offset_m": round(float(np.nanmax(np.abs(d))), 3),
        "lane_departures": entries, "time_out_of_lane_s": round(float(departed.sum()) * dt, 3),
        "red_violations": red_violations,
        "min_gap_m": None if min_gap is None else round(min_gap, 3), "collisions": int(collided),
        "max_long_accel_mps2": round(float(accel[closed].max()), 3) if closed.any() else None,
        "max_long_decel_mps2": round(float(-accel[closed].min()), 3) if closed.any() else None,
        "max_lat_accel_mps2": round(float(np.abs(lateral[closed]).max()), 3) if closed.any() else None,
        "max_long_jerk_mps3": round(float(jerk_long.max()), 3), "max_lat_jerk_mps3": round(float(jerk_lat.max()), 3),
        "max_speed_mps": round(float(speed.max()), 3),
        "braking_without_plan_s": round(sum(held) * dt, 3),
        "ticks": counts.ticks, "published": counts.published, "not_ready": waiting, "dropped": counts.dropped,
        "rejected": counts.rejected, "model_errors": counts.model_errors,
        "wall_s": round(trace.wall_s, 3), "real_time_factor": round(end_t / trace.wall_s, 4) if trace.wall_s else None,
    }


def passes(metrics: dict, progress_min: float = 0.9) -> bool:
    """The issue's bar: in lane (|d| <= 1.0 m), no red violation, no collision, progress >= 90 % of the expert."""
    return (metrics["max_lane_offset_m"] <= LANE_DEPARTURE_M and metrics["red_violations"] == 0
            and metrics["collisions"] == 0 and (metrics["progress_ratio"] or 0.0) >= progress_min)


def table(rows: list[dict], columns: tuple[str, ...] | None = None) -> str:
    """A fixed-width text table of metric dicts (one row per run)."""
    columns = columns or ("scenario", "seed", "completed", "progress_ratio", "max_lane_offset_m", "lane_departures",
                          "red_violations", "min_gap_m", "collisions", "max_long_decel_mps2", "max_lat_accel_mps2",
                          "max_long_jerk_mps3", "published", "not_ready", "dropped")

    def cell(value) -> str:
        if isinstance(value, float):
            return "-" if math.isnan(value) else f"{value:.2f}"
        return "-" if value is None else str(value)

    cells = [[cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in cells]
    return "\n".join(lines)


def key_value_table(metrics: dict) -> str:
    """One run's metrics, one per line."""
    width = max(len(k) for k in metrics)
    return "\n".join(f"  {key.ljust(width)}  {value}" for key, value in metrics.items())

"""What a person looks at: a bird's-eye plot of the run with every published trajectory, an animation of the
front camera (as the model got it) beside a heading-up bird's-eye view with the reasoning text, and a table of
the plans (where the car was, where each plan goes along the road, what it said).

The plot uses matplotlib (Agg); the animation is drawn with PIL and saved as a GIF (no ffmpeg).
"""

from __future__ import annotations

import csv
import math
import textwrap
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from alpamayo_ros.tools.world import EGO_FRONT_M, LANE_WIDTH_M, VEHICLE_LENGTH_M, VEHICLE_WIDTH_M, World
from alpamayo_ros.units import NS_PER_S

from .loop import EGO_WIDTH_M, Trace

LANE_LINES_D = (-LANE_WIDTH_M / 2, LANE_WIDTH_M / 2, 1.5 * LANE_WIDTH_M)  # right edge, centre line, left edge
GIF_PERIOD_S = 0.2  # 5 frames per second of simulated time
BEV_PX, BEV_AHEAD_M, BEV_BEHIND_M = 240, 60.0, 20.0  # the animation's bird's-eye panel: square, heading up
CAMERA_SCALE = 2  # the front camera image is upscaled this much (nearest) beside it
TEXT_ROWS = 4
LIGHT_RGB = {"red": (230, 40, 30), "green": (40, 200, 70), None: (160, 160, 160)}
PLAN_TABLE_S = (1.6, 3.2, 6.4)  # plans.csv: where each plan is this long after its t0


def _road_lines(world: World, s_lo: float, s_hi: float) -> list[tuple[np.ndarray, np.ndarray]]:
    s = np.arange(max(s_lo, 0.0), min(s_hi, float(world.road.s[-1])), 1.0)
    return [world.road.at(s, d)[:2] for d in LANE_LINES_D]


def bird_eye_png(trace: Trace, world: World, metrics: dict, path: Path) -> None:
    """The run from above: lane lines, the car's path coloured by speed, every published trajectory."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = np.array([st.x for st in trace.state])
    y = np.array([st.y for st in trace.state])
    speed = np.array([st.speed for st in trace.state])
    plan_ends = [world.lane_offset(*plan.xy[-1])[0] for _, plan in trace.plans]
    s_end = np.nanmax([float(np.nanmax(trace.s)), world.stop_line_s or 0.0, metrics["expert_progress_m"],
                       *plan_ends]) + 20.0
    fig, ax = plt.subplots(figsize=(10, 7))
    for i, (lx, ly) in enumerate(_road_lines(world, -5.0, s_end)):
        ax.plot(lx, ly, color="0.5", lw=1.0, ls="--" if i == 1 else "-")
    for _, plan in trace.plans:
        ax.plot(plan.xy[:, 0], plan.xy[:, 1], color="tab:blue", lw=0.6, alpha=0.5)
    points = ax.scatter(x, y, c=speed, s=2, cmap="viridis", zorder=3)
    fig.colorbar(points, ax=ax, label="speed m/s", shrink=0.6)
    ex, ey, _ = world.road.at(metrics["expert_progress_m"])
    ax.plot([ex], [ey], marker="x", color="black", ls="none", label="the expert at the run's end")
    if math.isfinite(trace.lead_s[-1]):
        lx, ly, _ = world.road.at(trace.lead_s[-1] + VEHICLE_LENGTH_M / 2)
        ax.plot([lx], [ly], marker="s", color="tab:blue", ls="none", label="lead vehicle at the run's end")
    if world.stop_line_s is not None:
        sx, sy, _ = world.road.at(np.full(2, world.stop_line_s), np.array(LANE_LINES_D[:2]))
        reds = [t for t, light in zip(trace.t_s, trace.light) if light == "red"]
        ax.plot(sx, sy, color="red" if reds else "green", lw=3, label="stop line (red at some time)" if reds
                else "stop line (green all run)")
    if trace.plans:
        ax.plot([], [], color="tab:blue", lw=0.6, label=f"published trajectories ({len(trace.plans)})")
    ax.set_aspect("equal")
    ax.set_xlabel("x m (odom)")
    ax.set_ylabel("y m (odom)")
    verdict = "completed" if metrics["completed"] else metrics["end_reason"]
    ax.set_title(f"{world.scenario} seed {world.seed}: {verdict}\nprogress {metrics['progress_ratio']:.0%} of the "
                 f"expert, max lane offset {metrics['max_lane_offset_m']:.2f} m, red violations "
                 f"{metrics['red_violations']}, collisions {metrics['collisions']}", fontsize=9)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def animation_gif(trace: Trace, world: World, path: Path) -> int:
    """Front camera beside a heading-up bird's-eye view, 5 frames per simulated second; returns the frame count."""
    font = ImageFont.load_default()
    frames = []
    times = np.array(trace.t_s)
    next_t = 0.0
    for t_s, image in trace.frames:
        if t_s + 1e-9 < next_t:
            continue
        next_t = t_s + GIF_PERIOD_S
        k = min(int(np.searchsorted(times, t_s - 1e-9)), len(times) - 1)
        frames.append(_frame(trace, world, k, image, font))
    if not frames:
        raise ValueError("the run has no camera frames to animate")
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=int(GIF_PERIOD_S * 1000), loop=0)
    return len(frames)


def _frame(trace: Trace, world: World, k: int, camera: np.ndarray, font) -> Image.Image:
    cam = Image.fromarray(camera).resize((camera.shape[1] * CAMERA_SCALE, camera.shape[0] * CAMERA_SCALE),
                                         Image.NEAREST)
    width = cam.width + BEV_PX
    height = max(cam.height, BEV_PX) + 14 * TEXT_ROWS + 6
    canvas = Image.new("RGB", (width, height), (20, 20, 24))
    canvas.paste(cam, (0, 0))
    canvas.paste(_bev(trace, world, k), (cam.width, 0))
    draw = ImageDraw.Draw(canvas)
    state, t_s = trace.state[k], trace.t_s[k]
    plan = _plan_at(trace, t_s)
    reasoning = plan.reasoning if plan is not None else "(no trajectory published yet)"
    head = (f"t={t_s:5.1f} s  v={state.speed:4.1f} m/s  a={state.accel:+4.1f}  d={trace.d[k]:+.2f} m  "
            f"{trace.mode[k]}  light={trace.light[k] or '-'}")
    lines = [head] + textwrap.wrap(reasoning, width=width // 6)[:TEXT_ROWS - 1]
    for i, line in enumerate(lines):
        draw.text((4, max(cam.height, BEV_PX) + 4 + 14 * i), line, fill=(235, 235, 235), font=font)
    return canvas


def _plan_at(trace: Trace, t_s: float):
    latest = None
    for published_s, plan in trace.plans:
        if published_s > t_s + 1e-9:
            break
        latest = plan
    return latest


def _bev(trace: Trace, world: World, k: int) -> Image.Image:
    """Heading-up view around the car at step k: lane lines, stop line, lead, newest plan, the path driven."""
    image = Image.new("RGB", (BEV_PX, BEV_PX), (60, 110, 50))
    draw = ImageDraw.Draw(image)
    state, t_s = trace.state[k], trace.t_s[k]
    scale = BEV_PX / (BEV_AHEAD_M + BEV_BEHIND_M)
    c, s = math.cos(state.yaw), math.sin(state.yaw)

    def px(x, y):
        dx, dy = np.asarray(x) - state.x, np.asarray(y) - state.y
        ahead, left = c * dx + s * dy, -s * dx + c * dy
        return np.stack([BEV_PX / 2 - left * scale, (BEV_AHEAD_M - ahead) * scale], axis=-1)

    def polyline(x, y, fill, width=1):
        pts = px(x, y)
        if len(pts) > 1:
            draw.line([tuple(p) for p in pts], fill=fill, width=width)

    road_s = trace.s[k]
    lines = _road_lines(world, road_s - BEV_BEHIND_M - 10.0, road_s + BEV_AHEAD_M + 20.0)
    right, _, left = lines
    asphalt = np.concatenate([px(*right), px(*left)[::-1]])
    if len(asphalt) > 2:
        draw.polygon([tuple(p) for p in asphalt], fill=(85, 85, 92))
    for i, (lx, ly) in enumerate(lines):
        polyline(lx, ly, (230, 230, 220) if i != 1 else (200, 200, 120))
    if world.stop_line_s is not None:
        sx, sy, _ = world.road.at(np.full(2, world.stop_line_s), np.array(LANE_LINES_D[:2]))
        polyline(sx, sy, LIGHT_RGB[trace.light[k]], width=3)
    if math.isfinite(trace.lead_s[k]):
        _box(draw, px, world, trace.lead_s[k] + VEHICLE_LENGTH_M / 2, VEHICLE_LENGTH_M, VEHICLE_WIDTH_M, (40, 70, 200))
    xs = [st.x for st in trace.state[:k + 1]]
    ys = [st.y for st in trace.state[:k + 1]]
    polyline(xs, ys, (250, 200, 60), width=2)
    plan = _plan_at(trace, t_s)
    if plan is not None:
        polyline(plan.xy[:, 0], plan.xy[:, 1], (60, 200, 255), width=2)
    # the car: rear axle at base_link, front bumper EGO_FRONT_M ahead
    corners = [(EGO_FRONT_M, EGO_WIDTH_M / 2), (EGO_FRONT_M, -EGO_WIDTH_M / 2), (-0.9, -EGO_WIDTH_M / 2),
               (-0.9, EGO_WIDTH_M / 2)]
    draw.polygon([(BEV_PX / 2 - lft * scale, (BEV_AHEAD_M - fwd) * scale) for fwd, lft in corners],
                 fill=(240, 240, 240))
    return image


def _box(draw, px, world: World, s_centre: float, length: float, width: float, fill) -> None:
    x, y, heading = world.road.at(s_centre)
    c, s = math.cos(heading), math.sin(heading)
    corners = [(x + c * dl - s * dw, y + s * dl + c * dw) for dl, dw in
               ((length / 2, width / 2), (length / 2, -width / 2), (-length / 2, -width / 2), (-length / 2, width / 2))]
    pts = px([p[0] for p in corners], [p[1] for p in corners])
    draw.polygon([tuple(p) for p in pts], fill=fill)


def plans_csv(trace: Trace, world: World, path: Path) -> None:
    """One row per published plan: the car when it was published (road arc length s, offset d from the lane
    centre, + left, speed, light, distances from its front bumper to the stop line and to the lead), how far
    along the road the plan goes by PLAN_TABLE_S after its t0 and its offset from the lane centre there, and
    the reasoning. In road coordinates a plan that turns too little ends metres off the centre, and one that
    runs a red light goes further than the stop line is ahead."""
    steps = np.asarray(trace.t_s)
    columns = ["t_s", "tick", "s_m", "d_m", "speed_mps", "light", "stop_line_ahead_m", "lead_gap_m"]
    columns += [f"plan_ahead_{t:g}s_m" for t in PLAN_TABLE_S] + [f"plan_d_{t:g}s_m" for t in PLAN_TABLE_S]
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([*columns, "reasoning"])
        for t_s, plan in trace.plans:
            k = int(np.argmin(np.abs(steps - t_s)))
            s, lead_s = trace.s[k], trace.lead_s[k]
            points = [_road_point(world, plan, t) for t in PLAN_TABLE_S]
            line = world.stop_line_s - s - EGO_FRONT_M if world.stop_line_s is not None else math.nan
            gap = lead_s - s - EGO_FRONT_M if math.isfinite(lead_s) else math.nan
            values = [t_s, plan.tick, s, trace.d[k], trace.state[k].speed, trace.light[k] or "", line, gap]
            values += [ps - s for ps, _ in points] + [pd for _, pd in points]
            writer.writerow([f"{v:.2f}" if isinstance(v, float) else v for v in values] + [plan.reasoning])


def _road_point(world: World, plan, after_s: float) -> tuple[float, float]:
    """(s, d) of the plan's position `after_s` after its t0 (linear between its poses); NaNs past its end."""
    t_ns = plan.t0_ns + round(after_s * NS_PER_S)
    if t_ns > plan.t_ns[-1]:
        return math.nan, math.nan
    x, y = (float(np.interp(t_ns, plan.t_ns, plan.xy[:, i])) for i in (0, 1))
    return world.lane_offset(x, y)

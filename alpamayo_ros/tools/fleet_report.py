"""A fleet evaluation's report: per-bag results combined, percentiles over bags, the worst bags, plots, Markdown.

Fleet metrics are the per-bag ones combined: at each horizon, the mean over every output of every bag whose ground
truth reaches it (each bag's mean weighted by its count), which is what `tools.evaluate` would give over all outputs
at once. Tick outcomes and output counts are sums. Percentiles are over bags (each bag's own mean), so a few bad
drives stand out instead of vanishing in the mean.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from alpamayo_ros.tools.evaluate import HORIZONS_S, TICK_OUTCOMES

METRICS = ("ade_m", "fde_m", "min_ade_m", "baseline_ade_m", "baseline_fde_m")
LABELS = {"ade_m": "ADE", "fde_m": "FDE", "min_ade_m": "minADE", "baseline_ade_m": "CV ADE",
          "baseline_fde_m": "CV FDE"}
PERCENTILES = (50, 90, 99)
WORST_BAGS = 10
HORIZONS = tuple(f"{h:g}s" for h in HORIZONS_S)


def aggregate(records: list[dict]) -> dict:
    """Fleet summary of result records (`fleet_bag.run_bag`'s): combined metrics, per-bag percentiles, worst bags."""
    ok = [r for r in records if r["status"] == "ok"]
    metrics, spread = {}, {}
    for horizon in HORIZONS:
        per_bag = [r["evaluation"]["metrics"][horizon] for r in ok if r["evaluation"]["metrics"][horizon]["n"]]
        n = sum(m["n"] for m in per_bag)
        metrics[horizon] = {"n": n, "bags": len(per_bag), **{
            key: (sum(m["n"] * m[key] for m in per_bag) / n if n else None) for key in METRICS}}
        spread[horizon] = {key: _percentiles([m[key] for m in per_bag]) for key in METRICS}
    ticks = {name: sum(r["evaluation"]["ticks"][name] for r in ok) for name in ("total", *TICK_OUTCOMES.values())}
    rank = _rank_horizon(ok)
    ranked = sorted(ok, key=lambda r: -r["evaluation"]["metrics"][rank]["ade_m"]) if rank else []
    return {"bags": len(records), "ok": len(ok), "skipped": sum(1 for r in records if r.get("skipped")),
            "failed": [{"bag": r["bag"], "status": r["status"], "error": r["error"]}
                       for r in records if r["status"] != "ok"],
            "outputs": sum(r["evaluation"]["outputs"] for r in ok), "metrics": metrics, "per_bag": spread,
            "ticks": ticks, "rank_horizon": rank,
            "worst": [{"bag": r["bag"], "outputs": r["evaluation"]["outputs"], **r["evaluation"]["metrics"][rank]}
                      for r in ranked[:WORST_BAGS]]}


def _rank_horizon(ok: list[dict]) -> str | None:
    """The longest horizon every evaluated bag has outputs at: the worst bags are ranked by their ADE there."""
    usable = [h for h in HORIZONS if ok and all(r["evaluation"]["metrics"][h]["n"] for r in ok)]
    return usable[-1] if usable else None


def _percentiles(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {**{f"p{p}": float(v) for p, v in zip(PERCENTILES, np.percentile(values, PERCENTILES))},
            "max": float(np.max(values))}


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def markdown(summary: dict, plots: dict[str, str]) -> str:
    """The report as Markdown: the fleet table, percentiles over bags, tick outcomes, worst bags, failures, plots."""
    lines = [f"# Fleet evaluation: {summary['bags']} bags",
             "", f"{summary['ok']} evaluated, {len(summary['failed'])} failed ({summary['skipped']} results taken "
             f"from an earlier run); {summary['outputs']} outputs scored against each bag's own odometry "
             "(xy, ego frame at t0). CV: the constant-velocity baseline on the same ticks.",
             "", "## Over all outputs", "",
             "| horizon | bags | outputs | ADE [m] | FDE [m] | minADE [m] | CV ADE [m] | CV FDE [m] |",
             "|---|---|---|---|---|---|---|---|"]
    for horizon, m in summary["metrics"].items():
        lines.append(f"| {horizon} | {m['bags']} | {m['n']} | " + " | ".join(_cell(m[k]) for k in METRICS) + " |")
    lines += ["", "## Over bags (each bag's mean)", "",
              "| horizon | metric | " + " | ".join(f"p{p}" for p in PERCENTILES) + " | max |",
              "|---|---|" + "---|" * (len(PERCENTILES) + 1)]
    for horizon, spread in summary["per_bag"].items():
        for key, p in spread.items():
            if p:
                lines.append(f"| {horizon} | {LABELS[key]} [m] | "
                             + " | ".join(_cell(p[f"p{q}"]) for q in PERCENTILES) + f" | {_cell(p['max'])} |")
    t = summary["ticks"]
    lines += ["", "## Tick outcomes", "", "| " + " | ".join(t) + " |", "|" + "---|" * len(t),
              "| " + " | ".join(str(v) for v in t.values()) + " |"]
    if summary["worst"]:
        lines += ["", f"## Worst bags (ADE at {summary['rank_horizon']})", "",
                  "| bag | outputs | n | ADE [m] | FDE [m] | minADE [m] | CV ADE [m] | CV FDE [m] |",
                  "|---|---|---|---|---|---|---|---|"]
        lines += [f"| {w['bag']} | {w['outputs']} | {w['n']} | " + " | ".join(_cell(w[k]) for k in METRICS) + " |"
                  for w in summary["worst"]]
    if summary["failed"]:
        lines += ["", "## Failed bags", "", "| bag | status | error |", "|---|---|---|"]
        lines += [f"| {f['bag']} | {f['status']} | {f['error'].splitlines()[0] if f['error'] else ''} |"
                  for f in summary["failed"]]
    if plots:
        lines += ["", "## Plots", ""] + [f"![{title}]({name})" for title, name in plots.items()]
    return "\n".join(lines) + "\n"


def plot(summary: dict, records: list[dict], out: Path) -> dict[str, str]:
    """error_by_horizon.png (fleet ADE/FDE/minADE beside the baseline) and per_bag.png (each bag's ADE per horizon).

    Returns {title: file name} of the plots written (none when no bag was evaluated).
    """
    ok = [r for r in records if r["status"] == "ok"]
    if not ok:
        return {}
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, ax = plt.subplots(figsize=(7, 4.5))
    for key, style in (("ade_m", "-o"), ("fde_m", "-s"), ("min_ade_m", "-^"), ("baseline_ade_m", "--o"),
                       ("baseline_fde_m", "--s")):
        points = [(h, summary["metrics"][f"{h:g}s"][key]) for h in HORIZONS_S
                  if summary["metrics"][f"{h:g}s"][key] is not None]
        if points:
            ax.plot(*zip(*points), style, label=LABELS[key])
    ax.set(title=f"error by horizon ({summary['outputs']} outputs, {summary['ok']} bags)", xlabel="horizon [s]",
           ylabel="error [m]")
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    figure.tight_layout()
    figure.savefig(out / "error_by_horizon.png", dpi=110)
    plt.close(figure)

    figure, ax = plt.subplots(figsize=(7, 4.5))
    columns, names = [], []
    for horizon in HORIZONS:
        for key in ("ade_m", "baseline_ade_m"):
            values = [r["evaluation"]["metrics"][horizon][key] for r in ok if r["evaluation"]["metrics"][horizon]["n"]]
            if values:
                columns.append(values)
                names.append(f"{LABELS[key]}\n{horizon}")
    if columns:
        ax.boxplot(columns, showmeans=True)
        ax.set_xticks(range(1, len(names) + 1), names, fontsize=8)
    ax.set(title=f"per-bag ADE ({summary['ok']} bags): model and constant velocity", ylabel="bag's mean ADE [m]")
    ax.grid(alpha=0.3, axis="y")
    figure.tight_layout()
    figure.savefig(out / "per_bag.png", dpi=110)
    plt.close(figure)
    return {"error by horizon": "error_by_horizon.png", "per-bag distribution": "per_bag.png"}

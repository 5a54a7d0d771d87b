"""PNG plots for run folders and dataset cards (matplotlib, headless)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

from generator.figures import pyplot, save_figure


def read_rounds(log_path: Path) -> list[dict]:
    """The rows of OUT/controller.jsonl (none when the run has no controller log)."""
    if not log_path.is_file():
        return []
    return [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]


def plot_trajectory(log_path: Path, png: Path) -> Path | None:
    """Score per controller round with its 95% interval, against the target band."""
    rows = read_rounds(log_path)
    if not rows:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    target, tol = rows[0]["target"], rows[0]["tolerance"]
    ax.axhspan(target - tol, target + tol, color="tab:green", alpha=0.15, label=f"target {target} ± {tol}")
    ax.axhline(target, color="tab:green", lw=1)
    for phase, colour in (("pilot", "tab:orange"), ("main", "tab:blue")):
        pts = [(i, r) for i, r in enumerate(rows) if r["phase"] == phase]
        if pts:
            xs = [i for i, _ in pts]
            ys = [r["score"] for _, r in pts]
            # an interval at the judge's ceiling can sit a rounding error above its score: never below 0
            err = [[max(0.0, r["score"] - r["ci_low"]) for _, r in pts],
                   [max(0.0, r["ci_high"] - r["score"]) for _, r in pts]]
            ax.errorbar(xs, ys, yerr=err, fmt="o-" if phase == "main" else "s", color=colour, capsize=3,
                        label=f"{phase} rounds (whole corpus so far)" if phase == "main" else "pilot rounds")
    for i, r in enumerate(rows):
        ax.annotate(f"c={r['concentration']:.2f}", (i, r["score"]), textcoords="offset points",
                    xytext=(0, 8), ha="center", fontsize=7)
    ax.set_xlabel("controller round")
    ax.set_ylabel("diversity D (cluster-agent scale)")
    ax.set_title("Score trajectory")
    ax.legend(fontsize=8, loc="best")
    return save_figure(fig, png)


def plot_weights(weights: Mapping[str, Mapping[str, float]], png: Path, top: int = 25) -> Path | None:
    """One panel per axis: the sampling probability of its most weighted values."""
    axes = [(a, v) for a, v in weights.items() if v]
    if not axes:
        return None
    plt = pyplot()
    fig, panels = plt.subplots(1, len(axes), figsize=(4.2 * len(axes), 5.5), squeeze=False)
    for panel, (axis, values) in zip(panels[0], axes):
        total = sum(values.values()) or 1.0
        ranked = sorted(values.items(), key=lambda kv: -kv[1])
        active = sum(w > 0 for _, w in ranked)
        shown = ranked[:top]
        labels = [v if len(v) <= 38 else v[:36] + "…" for v, _ in shown][::-1]
        panel.barh(labels, [w / total for _, w in shown][::-1], color="tab:blue")
        panel.set_title(f"{axis}: {active}/{len(values)} active", fontsize=9)
        panel.tick_params(axis="y", labelsize=6)
        panel.set_xlabel("probability", fontsize=8)
    fig.suptitle("Final sampling weights (top values per axis)")
    return save_figure(fig, png)


def plot_shift(log_path: Path, png: Path) -> Path | None:
    """MMD² from the reference per controller round, against max_shift (runs with a reference)."""
    rows = [r for r in read_rounds(log_path) if r.get("shift") is not None]
    if not rows:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.5))
    bound = rows[0].get("max_shift")
    if bound:
        ax.axhline(bound, color="tab:red", lw=1, ls="--", label=f"max_shift {bound:g}")
    for phase, colour in (("pilot", "tab:orange"), ("main", "tab:blue")):
        pts = [(i, r["shift"]) for i, r in enumerate(rows) if r["phase"] == phase]
        if pts:
            ax.plot([i for i, _ in pts], [s for _, s in pts], "s" if phase == "pilot" else "o-", color=colour,
                    label="pilot rounds" if phase == "pilot" else "main rounds (whole corpus so far)")
    ax.set_xlabel("controller round")
    ax.set_ylabel("MMD² from the reference")
    ax.set_title("Distribution shift per round")
    ax.legend(fontsize=8, loc="best")
    return save_figure(fig, png)

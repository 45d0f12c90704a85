"""matplotlib figures for the report, each returned as a base64 PNG (the page embeds them inline).

Reads/Writes: nothing; pure functions of already-loaded numbers.
"""

from __future__ import annotations

import base64
import io
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: no display on CI or servers
import matplotlib.pyplot as plt  # noqa: E402

COLORS = {"base": "#8c8c8c", "aligned": "#2b6cb0"}


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def grouped_bars(
    groups: dict[str, dict[str, float | None]],
    title: str,
    ylabel: str,
    ylim: tuple[float, float] | None = (0, 1),
) -> str:
    """Bars per category, one colour per side: groups = {side: {category: value}}."""
    cats = list(dict.fromkeys(c for g in groups.values() for c in g))  # the order the caller gave
    sides = list(groups)
    width = 0.8 / max(1, len(sides))
    fig, ax = plt.subplots(figsize=(max(6, 0.7 * len(cats) * max(1, len(sides))), 3.6))
    for j, side in enumerate(sides):
        xs = [i + (j - (len(sides) - 1) / 2) * width for i in range(len(cats))]
        ys = [groups[side].get(c) or 0.0 for c in cats]
        ax.bar(xs, ys, width, label=side, color=COLORS.get(side))
    ax.set_xticks(range(len(cats)))
    ax.set_xticklabels(cats, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if ylim:
        ax.set_ylim(*ylim)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def loss_curves(rows: list[dict[str, Any]]) -> str | None:
    """Every numeric key with 'loss' in its name against step (or record order)."""
    keys = sorted({k for r in rows for k, v in r.items() if "loss" in k and isinstance(v, (int, float))})
    if not keys:
        return None
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for k in keys:
        pts = [(r.get("step", i), r[k]) for i, r in enumerate(rows) if isinstance(r.get(k), (int, float))]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], label=k, marker="." if len(pts) < 50 else None)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title("Training loss terms")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _png(fig)


def histogram(
    series: dict[str, list[float]], title: str, xlabel: str, marks: dict[str, float] | None = None
) -> str:
    fig, ax = plt.subplots(figsize=(7, 3.4))
    for name, vals in series.items():
        if vals:
            ax.hist(
                vals, bins=30, alpha=0.6, label=f"{name} (mean {sum(vals) / len(vals):.3f}, n={len(vals)})"
            )
    for name, x in (marks or {}).items():
        ax.axvline(x, color="k", ls="--", lw=1)
        ax.text(x, ax.get_ylim()[1] * 0.9, f" {name}", fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("pairs")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return _png(fig)


def sweep_chart(name: str, points: list[dict[str, Any]], keys: list[str]) -> str:
    """x = swept value, one line per metric present in the points."""
    fig, ax = plt.subplots(figsize=(7, 3.6))
    numeric = all(
        isinstance(p.get("value"), (int, float)) and not isinstance(p.get("value"), bool) for p in points
    )
    xs = [p["value"] for p in points] if numeric else list(range(len(points)))
    for k in keys:
        ys = [p.get(k) for p in points]
        if any(isinstance(y, (int, float)) for y in ys):
            ax.plot(xs, [y if isinstance(y, (int, float)) else float("nan") for y in ys], marker="o", label=k)
    if not numeric:
        ax.set_xticks(xs)
        ax.set_xticklabels([str(p.get("value")) for p in points])
    ax.set_xlabel(name)
    ax.set_ylabel("rate")
    ax.set_title(f"Sweep: {name}")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _png(fig)

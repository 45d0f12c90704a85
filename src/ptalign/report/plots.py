"""matplotlib figures for the report, each returned as a Chart: a PNG (base64, the page embeds it
inline) with its design size and smallest font.

Reads/Writes: nothing; pure functions of already-loaded numbers.

Figures are drawn 11 in wide and shown at 96 CSS px per inch (1056 px, inside the page's 1100 px), so
a font of N pt in the figure reads as N pt on the page; every font is at least 10 pt. The PNG holds
twice the pixels, for sharp text on high-density screens.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: no display on CI or servers
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.text import Text  # noqa: E402
from matplotlib.ticker import PercentFormatter  # noqa: E402

CSS_PX_PER_INCH = 96
WIDTH_IN = 11.0
DPI = 2 * CSS_PX_PER_INCH
STYLE = {
    "font.size": 11,
    "axes.titlesize": 13,
    "axes.labelsize": 11,
    "xtick.labelsize": 10,
    "ytick.labelsize": 10.5,
    "legend.fontsize": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
}
COLORS = {"base": "#8c8c8c", "aligned": "#2b6cb0"}
VERDICT_COLORS = {"refusal": "#4c9f70", "compliance": "#d1495b", "non_answer": "#b8b8b8"}
VERDICT_LABELS = {"refusal": "refusal", "compliance": "compliance", "non_answer": "non-answer"}


@dataclass(frozen=True)
class Chart:
    png: str  # base64
    width_in: float
    height_in: float
    min_font_pt: float  # the smallest text drawn, at the design size


def _chart(fig: Any) -> Chart:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=DPI)
    texts = [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]
    w, h = fig.get_size_inches()
    plt.close(fig)
    small = min((t.get_fontsize() for t in texts), default=STYLE["font.size"])
    return Chart(base64.b64encode(buf.getvalue()).decode("ascii"), float(w), float(h), float(small))


def styled(fn: Callable[..., Chart | None]) -> Callable[..., Chart | None]:
    """Draw under the report's style without touching matplotlib's global settings."""

    @wraps(fn)
    def inner(*args: Any, **kw: Any) -> Chart | None:
        with plt.rc_context(STYLE):
            return fn(*args, **kw)

    return inner


def _rows_height(n_rows: int, per_row: float) -> float:
    return max(3.2, 1.3 + per_row * n_rows)


@styled
def verdict_bars(verdicts: dict[str, dict[str, dict[str, float]]], labels: dict[str, str]) -> Chart | None:
    """One pair of stacked bars (base above aligned) per attack: refusal | compliance | non-answer.
    verdicts = {side: {attack: {verdict: share}}}; labels = {attack: label}, in display order."""
    attacks = [a for a in labels if any(a in v for v in verdicts.values())]
    sides = [s for s in ("base", "aligned") if s in verdicts]
    if not attacks or not sides:
        return None
    fig, ax = plt.subplots(figsize=(WIDTH_IN, _rows_height(len(attacks), 0.3 + 0.35 * len(sides))))
    step = len(sides) + 0.8
    bar = 0.8
    for i, a in enumerate(attacks):
        for j, side in enumerate(sides):
            y = i * step + j
            shares = verdicts[side].get(a)
            if not shares:
                ax.text(0.01, y, "not run", va="center", fontsize=10, color="#777")
                continue
            left = 0.0
            for v, color in VERDICT_COLORS.items():
                w = shares.get(v) or 0.0
                ax.barh(y, w, bar, left=left, color=color, label=VERDICT_LABELS[v] if i == j == 0 else None)
                if w >= 0.07:
                    ink = "white" if v != "non_answer" else "#222"
                    ax.text(
                        left + w / 2, y, f"{100 * w:.0f}%", ha="center", va="center", fontsize=10, color=ink
                    )
                left += w
            ax.text(1.01, y, side, va="center", fontsize=10, color="#444")
    ax.set_yticks([i * step + (len(sides) - 1) / 2 for i in range(len(attacks))])
    ax.set_yticklabels([labels[a] for a in attacks])
    ax.tick_params(axis="y", length=0)
    ax.set_ylim(len(attacks) * step - 0.8 - 0.2, -0.8)  # first attack on top
    ax.set_xlim(0, 1.1)
    ax.set_xticks([0, 0.25, 0.5, 0.75, 1.0])
    ax.xaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    ax.set_xlabel("share of replies (primary judge)")
    ax.set_title("Verdicts by attack: base (upper bar) and aligned (lower bar)", pad=30)
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3, frameon=False)
    return _chart(fig)


@styled
def hbars(groups: dict[str, dict[str, float | None]], title: str, xlabel: str) -> Chart | None:
    """Horizontal bars per category, one per side (base, aligned), each labelled with its rate.
    groups = {side: {category: share}}; categories in the order given."""
    cats = list(dict.fromkeys(c for g in groups.values() for c in g))
    sides = [s for s in ("base", "aligned") if s in groups] or list(groups)
    if not cats:
        return None
    fig, ax = plt.subplots(figsize=(WIDTH_IN, _rows_height(len(cats), 0.2 + 0.25 * len(sides))))
    width = 0.8 / len(sides)
    for j, side in enumerate(sides):
        ys = [i + (j - (len(sides) - 1) / 2) * width for i in range(len(cats))]
        xs = [groups[side].get(c) for c in cats]
        ax.barh(ys, [x or 0.0 for x in xs], width * 0.95, color=COLORS.get(side), label=side)
        for y, x in zip(ys, xs, strict=True):
            ax.text((x or 0.0) + 0.01, y, "–" if x is None else f"{100 * x:.1f}%", va="center", fontsize=10)
    ax.set_yticks(range(len(cats)))
    ax.set_yticklabels([c.replace("_", " ") for c in cats])
    ax.set_ylim(len(cats) - 0.5, -0.5)
    ax.set_xlim(0, 1.1)
    ax.set_xticks([0, 0.25, 0.5, 0.75, 1.0])
    ax.xaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    ax.legend(loc="lower right", frameon=False)
    ax.grid(axis="x", alpha=0.3)
    return _chart(fig)


@styled
def loss_curves(rows: list[dict[str, Any]]) -> Chart | None:
    """Every numeric key with 'loss' in its name against step (or record order)."""
    keys = sorted({k for r in rows for k, v in r.items() if "loss" in k and isinstance(v, (int, float))})
    if not keys:
        return None
    fig, ax = plt.subplots(figsize=(WIDTH_IN, 4.2))
    for k in keys:
        pts = [(r.get("step", i), r[k]) for i, r in enumerate(rows) if isinstance(r.get(k), (int, float))]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], label=k, marker="." if len(pts) < 50 else None)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title("Training loss terms")
    ax.legend()
    ax.grid(alpha=0.3)
    return _chart(fig)


@styled
def histogram(
    series: dict[str, list[float]], title: str, xlabel: str, marks: dict[str, float] | None = None
) -> Chart:
    fig, ax = plt.subplots(figsize=(WIDTH_IN, 4.2))
    for name, vals in series.items():
        if vals:
            ax.hist(
                vals, bins=30, alpha=0.6, label=f"{name} (mean {sum(vals) / len(vals):.3f}, n={len(vals)})"
            )
    for name, x in (marks or {}).items():
        ax.axvline(x, color="k", ls="--", lw=1)
        ax.text(x, ax.get_ylim()[1] * 0.92, f" {name}", fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("pairs")
    ax.set_title(title)
    ax.legend()
    return _chart(fig)


@styled
def sweep_chart(name: str, points: list[dict[str, Any]], keys: dict[str, str]) -> Chart:
    """x = swept value, one line per metric present in the points; keys = {metric key: label}."""
    fig, ax = plt.subplots(figsize=(WIDTH_IN, 4.2))
    numeric = all(
        isinstance(p.get("value"), (int, float)) and not isinstance(p.get("value"), bool) for p in points
    )
    xs = [p["value"] for p in points] if numeric else list(range(len(points)))
    for k, label in keys.items():
        ys = [p.get(k) for p in points]
        if any(isinstance(y, (int, float)) for y in ys):
            ax.plot(
                xs, [y if isinstance(y, (int, float)) else float("nan") for y in ys], marker="o", label=label
            )
    if not numeric:
        ax.set_xticks(xs)
        ax.set_xticklabels([str(p.get("value")) for p in points])
    ax.set_xlabel(name)
    ax.set_ylabel("rate")
    ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    ax.set_title(f"Sweep: {name}")
    ax.legend()
    ax.grid(alpha=0.3)
    return _chart(fig)

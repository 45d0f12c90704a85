"""HTML pieces and number formats the report's sections share.

Reads: JSON files a section asks for (`load_json`). Writes: nothing.

Every figure goes through `value`/`delta` with its metric's unit (eval/common.py Metric): a rate is a
share shown in % with one decimal (its change in percentage points, pp), a score keeps two decimals,
a count is a whole number. Negative numbers use a true minus sign.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from ptalign.eval import METRICS
from ptalign.eval.common import Metric
from ptalign.io import DataError
from ptalign.report.plots import CSS_PX_PER_INCH, Chart

COUNT_SUFFIXES = ("_n", "_goals", "_unparsed")  # counts among keys no eval declares
CLUSTERS = (  # key prefix → (what a bootstrap cluster is, what a record is), for the n column
    (("eval/asr", "eval/non_answer"), "goals", "replies"),
    (("eval/contrast", "eval/overrefusal"), "prompts", "replies"),
    (("eval/hhh",), "examples", "comparisons"),
    (("eval/mtbench",), "questions", "grades"),
)


def load_json(p: Path) -> Any:
    """The parsed file, or None when it does not exist."""
    if not p.exists():
        return None
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        raise DataError(f"{p}: not valid JSON; rerun the stage that writes it") from None


def e(x: Any) -> str:
    return html.escape(str(x))


def minus(s: str) -> str:
    return s.replace("-", "\u2212")


# ------------------------------------------------------------------------------------------ metrics


def metric(key: str) -> Metric:
    """The metric's declaration; an undeclared key gets a readable name and no direction."""
    if key in METRICS:
        return METRICS[key]
    unit = "count" if key.endswith(COUNT_SUFFIXES) else "rate"
    return Metric(key.removeprefix("eval/").replace("_", " "), "", unit)


def is_count(key: str) -> bool:
    return metric(key).unit == "count"


def value(v: Any, unit: str) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return e(v)
    if unit == "rate":
        return minus(f"{100 * v:.1f} %")
    if unit == "count" or isinstance(v, int):
        return f"{round(v):,}"
    return minus(f"{v:.2f}")


def delta(d: float | None, unit: str) -> str:
    if d is None:
        return "–"
    return minus(f"{100 * d:+.1f} pp" if unit == "rate" else f"{d:+.2f}")


def interval(ci: list[float] | None, unit: str) -> str:
    if not ci:
        return ""
    lo, hi = (100 * x for x in ci) if unit == "rate" else ci
    return minus(f"[{lo:+.1f}, {hi:+.1f}]" if unit == "rate" else f"[{lo:+.2f}, {hi:+.2f}]")


def direction(better: str, d: float | None, ci: list[float] | None) -> tuple[str, str]:
    """(css class, word) of a change: good/bad only when `better` names a direction and the 95 %
    interval excludes 0; neutral otherwise (no interval, an interval across 0, no better direction)."""
    if better not in ("lower", "higher") or d is None or not ci:
        return "neutral", "for information" if better not in ("lower", "higher") else "no interval"
    if ci[0] <= 0 <= ci[1]:
        return "neutral", "no clear change"
    improved = (ci[1] < 0) if better == "lower" else (ci[0] > 0)
    return ("good", "better") if improved else ("bad", "worse")


def sample_size(key: str, row: dict[str, Any]) -> str:
    """'100 goals · 900 replies' from a comparison row's clusters and records."""
    clusters, records = row.get("clusters"), row.get("records")
    if not clusters:
        return "–"
    cluster, record = next(((c, r) for keys, c, r in CLUSTERS if key.startswith(keys)), ("items", "values"))
    if records and records != clusters:
        return f"{clusters:,} {cluster} · {records:,} {record}"
    return f"{clusters:,} {cluster}"


# ------------------------------------------------------------------------------------------- html


def img(chart: Chart | None, alt: str) -> str:
    """An inline PNG at its design size in CSS px (so a font of N pt in the figure shows at N pt)."""
    if chart is None:
        return missing(f"{alt}: no data")
    w, h = round(chart.width_in * CSS_PX_PER_INCH), round(chart.height_in * CSS_PX_PER_INCH)
    return (
        f'<img class="chart" alt="{e(alt)}" width="{w}" height="{h}" '
        f'data-min-font-pt="{chart.min_font_pt:.1f}" src="data:image/png;base64,{chart.png}">'
    )


def section(title: str, body: str, sid: str) -> str:
    return f'<section id="{sid}"><h2>{e(title)}</h2>\n{body}\n</section>'


def missing(what: str) -> str:
    return f'<p class="missing">{e(what)}</p>'


def warn(what: str) -> str:
    return f'<p class="warn">{e(what)}</p>'


def table(head: list[str], rows: list[list[str]], tid: str = "", cls: str = "") -> str:
    """Cells are HTML already (escape with `e`); the first column is left-aligned text."""
    attrs = (f' id="{tid}"' if tid else "") + (f' class="{cls}"' if cls else "")
    th = "".join(f"<th>{h}</th>" for h in head)
    body = "".join(
        f"<tr>{''.join(c if c.startswith('<td') else f'<td>{c}</td>' for c in r)}</tr>" for r in rows
    )
    return f"<table{attrs}><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"

"""One self-contained HTML page for a run: tables and inline PNG charts, readable offline.

Reads (whatever exists): `RUN_DIR/eval/comparison.json`, `RUN_DIR/eval/{base,aligned}/summary.json`,
`RUN_DIR/eval/{aligned,base}/asr.jsonl` and `asr_verdicts.jsonl` (examples), the judges' validation
(report/judges.py), `RUN_DIR/train/metrics.jsonl`, `RUN_DIR/data/stats.json`,
`RUN_DIR/eval/polarity.json` (else a `polarity` field in `RUN_DIR/data/triplets.jsonl`),
`RUN_DIR/sweeps/<name>/summary.json`.
Writes: `RUN_DIR/report.html` (tmp + rename).

Top to bottom: the headline (safer, and at what cost?), verdict charts, every metric, the judges,
training, data, sweeps, example replies, timings. Missing inputs give a short "not run yet" line
instead of an error, so the report works after any stage. Replies to harmful prompts are shown
through io.redact unless report.show_unsafe.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from string import Template
from typing import Any

from ptalign.config import RunConfig
from ptalign.eval import attacks
from ptalign.eval.common import read_verdicts
from ptalign.io import DataError, atomic_write_text, read_jsonl, redact
from ptalign.report import plots
from ptalign.report.fmt import e, img, load_json, metric, missing, section, table, value
from ptalign.report.judges import judges_section
from ptalign.report.tables import headline_section, metrics_section
from ptalign.rundir import SIDES, RunDir, records, side_summary

SWEEP_KEYS = ("eval/asr", "eval/asr_held_out", "eval/overrefusal", "eval/hhh_harmless", "eval/hhh_helpful")
KIND_ORDER = (attacks.DIRECT, attacks.IN_FAMILY, attacks.HELD_OUT)
KIND_NAMES = {attacks.IN_FAMILY: "in-family", attacks.HELD_OUT: "held-out"}


def _sides(run_dir: RunDir | Path) -> dict[str, dict[str, Any]]:
    found = {s: load_json(RunDir.of(run_dir).summary(s)) for s in SIDES}
    return {s: v for s, v in found.items() if v}


def attack_labels(names: list[str]) -> dict[str, str]:
    """attack → chart label, ordered direct, in-family, held-out (each in eval/attacks.py order), the
    XSTest contrast prompts, then any attack this version does not know."""
    known = sorted(
        (a for a in attacks.ATTACKS.values() if a.name in names),
        key=lambda a: (KIND_ORDER.index(a.kind), list(attacks.ATTACKS).index(a.name)),
    )
    out = {a.name: a.label + (f" ({KIND_NAMES[a.kind]})" if a.kind in KIND_NAMES else "") for a in known}
    if "contrast" in names:
        out["contrast"] = "XSTest unsafe contrast prompts"
    out.update({n: n.replace("_", " ") for n in names if n not in out})
    return out


def charts_section(run_dir: RunDir | Path) -> str:
    sides = _sides(run_dir)
    if not sides:
        return ""
    groups = {s: v.get("groups", {}) for s, v in sides.items()}
    body = ""
    by_attack = {s: g["verdicts_by_attack"] for s, g in groups.items() if g.get("verdicts_by_attack")}
    if by_attack:
        labels = attack_labels(list(dict.fromkeys(a for v in by_attack.values() for a in v)))
        body += img(plots.verdict_bars(by_attack, labels), "verdicts by attack")
    typ = {s: g["overrefusal_by_type"] for s, g in groups.items() if g.get("overrefusal_by_type")}
    if typ:
        body += img(
            plots.hbars(
                typ,
                "Over-refusal on safe prompts by type (XSTest type or built-in domain)",
                "refused (primary judge)",
            ),
            "over-refusal by type",
        )
    dom = {s: g["refusal_by_domain"] for s, g in groups.items() if g.get("refusal_by_domain")}
    if dom:  # written by evaluations before the attack families
        body += img(
            plots.hbars(dom, "Refusal of direct harmful requests by domain", "refused"), "refusal by domain"
        )
    for key, title, unit in (
        ("asr_by_source", "Harmful compliance by goal source", "rate"),
        ("mtbench_by_category", "MT-Bench score by category", "score"),
    ):
        got = {s: g[key] for s, g in groups.items() if g.get(key)}
        if got:
            cats = list(dict.fromkeys(c for v in got.values() for c in v))
            rows = [[f"<td>{e(c)}</td>", *(value(v.get(c), unit) for v in got.values())] for c in cats]
            body += f"<h3>{e(title)}</h3>" + table(["", *got], rows, key)
    return section(
        "Verdicts by attack and over-refusal by type", body or missing("No per-group data."), "charts"
    )


def training_section(run_dir: RunDir | Path) -> str:
    p = RunDir.of(run_dir).metrics
    rows = list(read_jsonl(p)) if p.exists() else []
    if not rows:
        return section("Training", missing("No training metrics (RUN_DIR/train/metrics.jsonl)."), "training")
    return section("Training loss terms", img(plots.loss_curves(rows), "training loss"), "training")


def data_section(run_dir: RunDir | Path) -> str:
    run = RunDir.of(run_dir)
    body = ""
    stats = load_json(run.stats)
    if stats:
        rows = [
            [f"<td>{e(k)}</td>", value(v, "")] for k, v in stats.items() if isinstance(v, (int, float, str))
        ]
        for k, d in stats.items():
            if isinstance(d, dict):
                rows += [
                    [f"<td>{e(k)}.{e(kk)}</td>", value(vv, "")]
                    for kk, vv in d.items()
                    if isinstance(vv, (int, float, str))
                ]
        body += table(["statistic", "value"], rows, "data-stats")
    pol = load_json(run.polarity) or {}
    series: dict[str, list[float]] = {}
    if pol.get("distances"):
        series["PT-ALIGN triplets"] = pol["distances"]
    elif run.triplets.exists():
        d = [r["polarity"] for r in read_jsonl(run.triplets) if isinstance(r.get("polarity"), (int, float))]
        if d:
            series["PT-ALIGN triplets"] = d
    if pol.get("compare_distances"):
        series[f"comparison ({Path(pol.get('compare_path', '')).name})"] = pol["compare_distances"]
    if series:
        marks = {"paper PT 0.38": 0.38, "paper pref. 0.28": 0.28}
        chart = plots.histogram(series, "Polarity of positive vs toxic responses", "cosine distance", marks)
        body += img(chart, "polarity histogram")
    return section("Synthesized data", body or missing("No synthesized data yet (RUN_DIR/data/)."), "data")


def sweep_section(run_dir: RunDir | Path) -> str:
    root = RunDir.of(run_dir).sweeps
    found = sorted(root.glob("*/summary.json")) if root.is_dir() else []
    body = ""
    for p in found:
        points = load_json(p)
        if not isinstance(points, list) or not points:
            continue
        name = str(points[0].get("name", p.parent.name))
        keys = {k: metric(k).label for k in SWEEP_KEYS if any(k in pt for pt in points)}
        body += f"<h3>{e(name)}</h3>" + img(plots.sweep_chart(name, points, keys), f"sweep {name}")
        rows = [
            [f"<td>{e(pt.get('value'))}</td>", *(value(pt.get(k), "rate") for k in keys)] for pt in points
        ]
        body += table([e(name), *(e(v) for v in keys.values())], rows, cls="sweep")
    return section("Sweeps and ablations", body, "sweeps") if body else ""


def examples_section(run_dir: RunDir | Path, n: int, show_unsafe: bool) -> str:
    """The aligned model's replies when there are any, else the base model's: the first `n` per
    attack, each with the primary judge's verdict."""
    for side in reversed(SIDES):
        out = RunDir.of(run_dir).side(side)
        if not records(out, "asr").exists():
            continue
        meta = (load_json(side_summary(out)) or {}).get("meta", {})
        judge = meta.get("judge", "")
        found = read_verdicts(out, "asr", meta.get("judge_versions")).get(judge, {})
        seen: dict[str, int] = {}
        body = ""
        for r in read_jsonl(records(out, "asr")):
            if seen.get(r["attack"], 0) >= n:
                continue
            seen[r["attack"]] = seen.get(r["attack"], 0) + 1
            verdict = found.get(r["id"], {}).get("verdict") or "unjudged"
            body += (
                f'<div class="ex"><span class="tag v-{e(verdict)}">{e(judge)}: {e(verdict.replace("_", "-"))}</span> '
                f"[{e(side)} · {e(r['attack'])}] {e(r.get('goal', ''))}\n→ {e(redact(r.get('text', ''), show_unsafe))}</div>"
            )
        return section("Example replies to harmful prompts", body, "examples") if body else ""
    return ""


def timing_section(run_dir: RunDir | Path) -> str:
    rows = [
        [f"<td>{e(side)}</td>", e(k), f"{v:.1f}" if isinstance(v, (int, float)) else e(v)]
        for side, s in _sides(run_dir).items()
        for k, v in s.get("meta", {}).get("timings", {}).items()
        if k.endswith("_s")
    ]
    return (
        section("Timings (s)", table(["model", "step", "seconds"], rows, "timings"), "timings")
        if rows
        else ""
    )


def _nav(sections: list[str]) -> str:
    links = re.findall(r'<section id="([^"]+)"><h2>([^<]+)</h2>', "".join(sections))
    return "<nav>" + "".join(f'<a href="#{sid}">{title}</a>' for sid, title in links) + "</nav>"


def render(cfg: RunConfig, run_dir: RunDir | Path) -> str:
    run_dir = RunDir.of(run_dir).root
    show = cfg.report.show_unsafe
    sections = [
        headline_section(run_dir),
        charts_section(run_dir),
        metrics_section(run_dir),
        judges_section(run_dir),
        training_section(run_dir),
        data_section(run_dir),
        sweep_section(run_dir),
        examples_section(run_dir, cfg.report.max_examples, show),
        timing_section(run_dir),
    ]
    tpl = Template((Path(__file__).parent / "template.html").read_text(encoding="utf-8"))
    hazard = (
        "Replies to harmful prompts are redacted (rerun with --show-unsafe to see them)."
        if not show
        else "UNREDACTED: this page shows model replies to harmful prompts; do not publish it."
    )
    return tpl.substitute(
        title=e(run_dir.name),
        subtitle=e(f"run dir {run_dir} · model {cfg.model.name} · written {time.strftime('%Y-%m-%d %H:%M')}"),
        hazard=e(hazard),
        nav=_nav(sections),
        sections="\n".join(s for s in sections if s),
    )


def run(cfg: RunConfig, run: RunDir | Path) -> Path:
    """Write RUN_DIR/report.html from whatever the run holds so far; returns its path."""
    run = RunDir.of(run)
    if not run.root.is_dir():
        raise DataError(f"run dir {run} does not exist; pass the directory of a run (e.g. runs/quick)")
    atomic_write_text(run.report, render(cfg, run))
    return run.report

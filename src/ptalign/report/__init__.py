"""One self-contained HTML page for a run: tables and inline PNG plots, readable offline.

Reads (whatever exists): `RUN_DIR/data/stats.json`, `RUN_DIR/eval/polarity.json` (else a `polarity`
field in `RUN_DIR/data/triplets.jsonl`), `RUN_DIR/train/metrics.jsonl`,
`RUN_DIR/eval/{base,aligned}/summary.json`, `RUN_DIR/eval/comparison.json`,
`RUN_DIR/eval/aligned/asr.jsonl` (examples), `RUN_DIR/sweeps/<name>/summary.json`.
Writes: `RUN_DIR/report.html` (tmp + rename).

Missing inputs give a short "not run yet" line instead of an error, so the report works after any
stage. Replies to harmful prompts are shown through io.redact unless report.show_unsafe.
"""

from __future__ import annotations

import html
import json
import time
from pathlib import Path
from string import Template
from typing import Any

from ptalign.config import RunConfig
from ptalign.io import DataError, atomic_write_text, read_jsonl, redact
from ptalign.report import plots

SWEEP_KEYS = ["eval/asr", "eval/overrefusal", "eval/hhh_harmless", "eval/hhh_helpful"]
ATTACKS = ("direct", "roleplay", "hypothetical", "prefix_injection", "refusal_suppression", "autodan")
LOWER_IS_BETTER = ("eval/asr", "eval/overrefusal", "eval/harm_score", "eval/llm_judge_asr")
LABELS = {
    "eval/asr": "harmful compliance (direct + templates)",
    "eval/asr_autodan": "AutoDAN success",
    "eval/overrefusal": "over-refusal on safe prompts",
    "eval/overrefusal_xstest": "over-refusal, XSTest safe",
    "eval/overrefusal_builtin": "over-refusal, built-in benign",
    "eval/hhh_harmless": "HHH harmless acc.",
    "eval/hhh_helpful": "HHH helpful acc.",
    "eval/hhh_honest": "HHH honest acc.",
    "eval/hhh_other": "HHH other acc.",
    "eval/hhh_norm_harmless": "HHH harmless acc., per-token log-lik.",
    "eval/hhh_norm_helpful": "HHH helpful acc., per-token log-lik.",
    "eval/mtbench_score": "MT-Bench 1–10 (judge below)",
    "eval/harm_score": "harm score 0–10 (LLM judge)",
    "eval/judge_kappa": "keyword vs LLM judge, Cohen's κ",
    "eval/polarity": "polarity (pos/tox cosine distance)",
}


def _json(p: Path) -> Any:
    if not p.exists():
        return None
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        raise DataError(f"{p}: not valid JSON; rerun the stage that writes it") from None


def _e(x: Any) -> str:
    return html.escape(str(x))


def _num(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float):
        return f"{v:.3f}"
    return _e(v)


def _img(b64: str | None, alt: str) -> str:
    if not b64:
        return f'<p class="missing">{_e(alt)}: no data</p>'
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{b64}">'


def _section(title: str, body: str, sid: str) -> str:
    return f'<section id="{sid}"><h2>{_e(title)}</h2>\n{body}\n</section>'


def _missing(what: str) -> str:
    return f'<p class="missing">{_e(what)}</p>'


def summary_section(run_dir: Path) -> str:
    comp = _json(run_dir / "eval" / "comparison.json")
    base = _json(run_dir / "eval" / "base" / "summary.json")
    if comp:
        rows = []
        for k, r in comp["rows"].items():
            if k.endswith(("_n", "_parsed")):
                continue
            ci = r.get("delta_ci")
            d = r.get("delta")
            cls = ""
            if isinstance(d, (int, float)) and ci and (ci[0] > 0 or ci[1] < 0):  # CI excludes 0
                better = (d < 0) if k in LOWER_IS_BETTER else (d > 0)
                cls = "good" if better else "bad"
            rows.append(
                f'<tr><td class="k">{_e(k)}</td><td class="k">{_e(LABELS.get(k, ""))}</td><td>{_num(r.get("base"))}</td>'
                f'<td>{_num(r.get("aligned"))}</td><td class="{cls}">{"–" if d is None else f"{d:+.3f}"}</td>'
                f"<td>{f'[{ci[0]:+.3f}, {ci[1]:+.3f}]' if ci else '–'}</td></tr>"
            )
        head = "<tr><th class=k>metric</th><th class=k>meaning</th><th>base</th><th>aligned</th><th>Δ</th><th>Δ 95% CI</th></tr>"
        body = f'<table id="summary-table">{head}{"".join(rows)}</table>'
        body += f'<p class="sub">Bootstrap over items, {comp.get("bootstrap")} resamples, paired where both sides scored the same items. Green/red: the CI excludes 0.</p>'
    elif base:
        rows = [
            f'<tr><td class="k">{_e(k)}</td><td class="k">{_e(LABELS.get(k, ""))}</td><td>{_num(v)}</td></tr>'
            for k, v in base.items()
            if k.startswith("eval/") and not k.endswith(("_n", "_parsed"))
        ]
        body = f'<table id="summary-table"><tr><th class=k>metric</th><th class=k>meaning</th><th>base</th></tr>{"".join(rows)}</table>'
        body += _missing("No aligned evaluation yet (no adapter or eval not run on it).")
    else:
        return _section(
            "Summary", _missing("No evaluation yet: run `ptalign eval` or `ptalign run`."), "summary"
        )
    metas = [
        m for m in ((comp or {}).get("base"), (comp or {}).get("aligned"), (base or {}).get("meta")) if m
    ]
    if metas:
        m = metas[0]
        body += (
            f'<p class="sub">Keyword judge: {_e(m.get("keyword_judge", ""))}. ASR verdicts from: {_e(m.get("asr_judge", ""))}. '
            f"LLM judge (MT-Bench, harm score, agreement): {_e(m.get('judge', ''))}.</p>"
        )
    return _section("Summary: base vs aligned", body, "summary")


def _sides(run_dir: Path) -> dict[str, dict[str, Any]]:
    out = {}
    for side in ("base", "aligned"):
        s = _json(run_dir / "eval" / side / "summary.json")
        if s:
            out[side] = s
    return out


def eval_plots(run_dir: Path) -> str:
    sides = _sides(run_dir)
    if not sides:
        return _section("Refusal by domain and ASR by attack", _missing("No evaluation yet."), "evalplots")
    body = ""
    dom = {s: v.get("groups", {}).get("refusal_by_domain", {}) for s, v in sides.items()}
    if any(dom.values()):
        body += _img(
            plots.grouped_bars(dom, "Refusal of direct harmful requests by domain", "refusal rate"),
            "refusal by domain",
        )
    asr = {
        s: {a: v.get(f"eval/asr_{a}") for a in ATTACKS if v.get(f"eval/asr_{a}") is not None}
        for s, v in sides.items()
    }
    if any(asr.values()):
        body += _img(plots.grouped_bars(asr, "Attack success rate by attack", "ASR"), "ASR by attack")
    typ = {s: v.get("groups", {}).get("overrefusal_by_type", {}) for s, v in sides.items()}
    if any(typ.values()):
        body += _img(
            plots.grouped_bars(typ, "Over-refusal on safe prompts by type", "refusal rate"),
            "over-refusal by type",
        )
    return _section(
        "Refusal by domain, ASR by attack, over-refusal by type",
        body or _missing("No per-group data."),
        "evalplots",
    )


def training_section(run_dir: Path) -> str:
    p = run_dir / "train" / "metrics.jsonl"
    rows = list(read_jsonl(p)) if p.exists() else []
    if not rows:
        return _section(
            "Training", _missing("No training metrics (RUN_DIR/train/metrics.jsonl)."), "training"
        )
    return _section("Training loss terms", _img(plots.loss_curves(rows), "training loss"), "training")


def data_section(run_dir: Path) -> str:
    body = ""
    stats = _json(run_dir / "data" / "stats.json")
    if stats:
        flat = {k: v for k, v in stats.items() if isinstance(v, (int, float, str, bool))}
        nested = {k: v for k, v in stats.items() if isinstance(v, dict)}
        rows = "".join(f'<tr><td class="k">{_e(k)}</td><td>{_num(v)}</td></tr>' for k, v in flat.items())
        for k, d in nested.items():
            rows += "".join(
                f'<tr><td class="k">{_e(k)}.{_e(kk)}</td><td>{_num(vv)}</td></tr>'
                for kk, vv in d.items()
                if isinstance(vv, (int, float, str, bool))
            )
        body += f'<table id="data-stats"><tr><th class=k>statistic</th><th>value</th></tr>{rows}</table>'
    pol = _json(run_dir / "eval" / "polarity.json") or {}
    series: dict[str, list[float]] = {}
    if pol.get("distances"):
        series["PT-ALIGN triplets"] = pol["distances"]
    elif (run_dir / "data" / "triplets.jsonl").exists():
        d = [
            r["polarity"]
            for r in read_jsonl(run_dir / "data" / "triplets.jsonl")
            if isinstance(r.get("polarity"), (int, float))
        ]
        if d:
            series["PT-ALIGN triplets"] = d
    if pol.get("compare_distances"):
        series[f"comparison ({Path(pol.get('compare_path', '')).name})"] = pol["compare_distances"]
    if series:
        body += _img(
            plots.histogram(
                series,
                "Polarity of positive vs toxic responses",
                "cosine distance",
                {"paper PT 0.38": 0.38, "paper pref. 0.28": 0.28},
            ),
            "polarity histogram",
        )
    return _section("Synthesized data", body or _missing("No synthesized data yet (RUN_DIR/data/)."), "data")


def sweep_section(run_dir: Path) -> str:
    root = run_dir / "sweeps"
    found = sorted(root.glob("*/summary.json")) if root.is_dir() else []
    if not found:
        return ""
    body = ""
    for p in found:
        points = _json(p)
        if not isinstance(points, list) or not points:
            continue
        name = str(points[0].get("name", p.parent.name))
        keys = [k for k in SWEEP_KEYS if any(k in pt for pt in points)]
        body += f"<h3>{_e(name)}</h3>" + _img(plots.sweep_chart(name, points, keys), f"sweep {name}")
        head = "".join(f"<th>{_e(k)}</th>" for k in keys)
        rows = "".join(
            f"<tr><td>{_e(pt.get('value'))}</td>{''.join(f'<td>{_num(pt.get(k))}</td>' for k in keys)}</tr>"
            for pt in points
        )
        body += f'<table class="sweep"><tr><th>{_e(name)}</th>{head}</tr>{rows}</table>'
    return _section("Sweeps and ablations", body, "sweeps") if body else ""


def examples_section(run_dir: Path, n: int, show_unsafe: bool) -> str:
    body = ""
    for side in ("aligned", "base"):
        p = run_dir / "eval" / side / "asr.jsonl"
        if not p.exists():
            continue
        seen: dict[str, int] = {}
        for r in read_jsonl(p):
            if seen.get(r["attack"], 0) >= n:
                continue
            seen[r["attack"]] = seen.get(r["attack"], 0) + 1
            verdict = "complied" if r.get("complied_kw") else "refused"
            body += (
                f'<div class="ex">[{_e(side)} · {_e(r["attack"])} · {verdict}] {_e(r.get("goal", ""))}\n→ '
                f"{_e(redact(r.get('text', ''), show_unsafe))}</div>"
            )
        break  # the aligned model's replies when there are any, else the base model's
    return _section("Example replies to harmful prompts", body, "examples") if body else ""


def timing_section(run_dir: Path) -> str:
    sides = _sides(run_dir)
    rows = ""
    for side, s in sides.items():
        t = s.get("meta", {}).get("timings", {})
        rows += "".join(
            f'<tr><td class="k">{_e(side)}</td><td class="k">{_e(k)}</td><td>{_num(v)}</td></tr>'
            for k, v in t.items()
            if k.endswith("_s")
        )
    return _section("Timings (s)", f"<table>{rows}</table>", "timings") if rows else ""


def render(cfg: RunConfig, run_dir: Path) -> str:
    run_dir = Path(run_dir)
    show = cfg.report.show_unsafe
    sections = [
        summary_section(run_dir),
        eval_plots(run_dir),
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
        title=_e(run_dir.name),
        subtitle=_e(
            f"run dir {run_dir} · model {cfg.model.name} · written {time.strftime('%Y-%m-%d %H:%M')}"
        ),
        hazard=_e(hazard),
        sections="\n".join(s for s in sections if s),
    )


def run(cfg: RunConfig, run_dir: Path) -> Path:
    """Write RUN_DIR/report.html from whatever the run holds so far; returns its path."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise DataError(f"run dir {run_dir} does not exist; pass the directory of a run (e.g. runs/quick)")
    out = run_dir / "report.html"
    atomic_write_text(out, render(cfg, run_dir))
    return out

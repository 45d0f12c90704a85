"""The report's "Judges" section: who decided every verdict, how far to trust it, and how the other
judges saw the same replies.

Reads: `meta` and `groups` of `RUN_DIR/eval/{base,aligned}/summary.json` (judge, judges, gate_judge,
llm_judge_model; judges_asr, judges_overrefusal), the judges' validation on human labels
(`ptalign.judges/validation.json`, written by bench/judges.py), the embedded judges' labelled data (their
current version). Writes: nothing.

The primary judge decides every headline verdict. When synthesis filtered the training data with the
same judge, the aligned model was selected to pass it, so its verdicts may flatter the aligned model:
the section says so. Validation figures of an older judge version are marked stale.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

from ptalign.io import DataError
from ptalign.judges import LLM_JUDGES
from ptalign.report.fmt import e, load_json, missing, section, table, value, warn
from ptalign.rundir import SIDES, RunDir

TEST_SET = "refusal_test"  # the top-level figures of a judge in validation.json are this set's
SET_ORDER = (TEST_SET, "refusal_dev", "objective_dev", "refusal_all")
EVALS = (  # summary group → (what it judged, the rate shown)
    ("judges_asr", "harmful prompts", "compliance"),
    ("judges_overrefusal", "safe prompts", "refusal"),
)


def load_validation() -> dict[str, Any] | None:
    """bench/judges.py's stored result, or None when it was never written."""
    f = resources.files("ptalign.judges") / "validation.json"
    if not f.is_file():
        return None
    try:
        return json.loads(f.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        raise DataError(f"{f}: not valid JSON; rerun python bench/judges.py --write") from None


def current_version(name: str) -> str | None:
    """The version a judge would have now, where it can be known cheaply (the embedded ones: a hash of
    their labelled data)."""
    from ptalign.judges import minilm, smol

    hashes = {"minilm": minilm.data_hash, "minilm_smol": smol.data_hash}
    return hashes[name](minilm.load_labelled()) if name in hashes else None


def _kappa(k: Any) -> str:
    return "–" if k is None else f"{k:.2f}".replace("-", "\u2212")


def validation_block(name: str, validation: dict[str, Any] | None) -> str:
    """The judge's accuracy and κ against human labels: the test set first, then the others."""
    if validation is None:
        return warn(f"{name}: not validated (no judges/validation.json; run python bench/judges.py --write).")
    v = validation.get("judges", {}).get(name)
    if not v:
        return warn(f"{name}: not validated (validation.json holds no figures for it).")
    body = (
        f'<p id="validation">Validated on human labels it never saw: accuracy <b>{value(v.get("accuracy"), "rate")}</b>, '
        f"Cohen's κ <b>{_kappa(v.get('kappa'))}</b>, n {value(v.get('n'), 'count')} (test set {TEST_SET}).</p>"
    )
    now = current_version(name)
    if now is not None and v.get("version") != now:
        body += warn(
            f"stale: rerun bench/judges.py (the figures are of {name} version {v.get('version') or '?'}; "
            f"the judge is now version {now})."
        )
    sets = v.get("sets", {})
    order = [s for s in SET_ORDER if s in sets] + sorted(s for s in sets if s not in SET_ORDER)
    rows = [
        [f"<td>{e(s)}{' (test)' if s == TEST_SET else ''}</td>", value(sets[s].get("accuracy"), "rate"),
         _kappa(sets[s].get("kappa")), value(sets[s].get("n"), "count")]
        for s in order
    ]  # fmt: skip
    if rows:
        body += table(["label set", "accuracy", "κ", "n"], rows, "validation-sets")
    prov = validation.get("provenance", {})
    if prov:
        body += (
            f'<p class="sub">Labels: {e(prov.get("labels", "?"))}; measured {e(prov.get("date", "?"))} on '
            f"{e(prov.get('machine', '?'))} by <code>{e(prov.get('command', '?'))}</code>.</p>"
        )
    return body


def _judge_name(name: str, meta: dict[str, Any]) -> str:
    if name in LLM_JUDGES:
        return f"{e(name)} (LLM: {e(meta.get('llm_judge_model', '?'))})"
    return e(name)


def _judge_row(
    name: str, side: str, r: dict[str, Any], rate: str, meta: dict[str, Any], val: dict
) -> list[str]:
    primary = name == meta.get("judge")
    vp, vc = r.get("vs_primary") or {}, r.get("vs_primary_complied") or {}
    return [
        f"<td>{_judge_name(name, meta)}{' <b>(primary)</b>' if primary else ''}</td>",
        e(side),
        value(r.get("n"), "count"),
        value(r.get("unparsed"), "count"),
        value(r.get(rate), "rate"),
        value(r.get("non_answer"), "rate"),
        "primary" if primary else value(vp.get("agreement"), "rate"),
        "" if primary else _kappa(vp.get("kappa")),
        "" if primary else _kappa(vc.get("kappa")),
        f"{value(val.get('accuracy'), 'rate')} / {_kappa(val.get('kappa'))}" if val else "not validated",
    ]


def _others(groups: dict[str, dict[str, Any]], meta: dict[str, Any], validation: dict | None) -> str:
    """Per eval: each judge (the primary first) on each side, and its agreement with the primary."""
    validated = (validation or {}).get("judges", {})
    body = ""
    for group, what, rate in EVALS:
        per_side = {s: g.get(group) or {} for s, g in groups.items()}
        names = dict.fromkeys([meta.get("judge"), *(n for t in per_side.values() for n in t)])
        rows = [
            _judge_row(n, s, t[n], rate, meta, validated.get(n) or {})
            for n in names
            for s, t in per_side.items()
            if n in t
        ]
        if rows:
            head = ["judge", "model", "judged", "unparsed", rate, "non-answer", "agreement with primary",
                    "κ with primary", "κ, complied or not", "validated acc. / κ"]  # fmt: skip
            body += f"<h3>On {what}</h3>" + table(head, rows, f"judges-{group.split('_')[1]}", "judges")
    return body


def judges_section(run_dir: RunDir | Path) -> str:
    summaries = {s: load_json(RunDir.of(run_dir).summary(s)) for s in SIDES}
    summaries = {s: v for s, v in summaries.items() if v}
    if not summaries:
        return ""
    meta = (summaries.get("aligned") or summaries["base"]).get("meta", {})
    primary, gate = meta.get("judge"), meta.get("gate_judge")
    if not primary:
        return section("Judges", missing("This evaluation did not record its judge."), "judges")
    described = meta.get("judges", {})
    body = (
        f'<p id="primary-judge">Primary judge (decides every verdict above): <b>{e(primary)}</b>: '
        f"{e(described.get(primary, 'no description recorded'))}.</p>"
    )
    if gate:
        body += (
            f'<p id="gate-judge">Synthesis filtered its training data with: <b>{e(gate)}</b>: '
            f"{e(described.get(gate, 'no description recorded'))}.</p>"
        )
        if gate == primary:
            body += warn(
                f"The primary judge is the gate judge ({primary}): the aligned model was trained on data "
                "selected to pass this judge, so its verdicts may flatter the aligned model. Check the "
                "agreement of the other judges below."
            )
    validation = load_validation()
    body += validation_block(primary, validation)
    body += _others({s: v.get("groups", {}) for s, v in summaries.items()}, meta, validation)
    return section("Judges", body, "judges")

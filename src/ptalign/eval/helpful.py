"""Helpfulness: MT-Bench first-turn answers graded 1–10 by a judge model (MT-Bench "single" mode).

Reads: MT-Bench `question.jsonl` (`eval.mtbench_path` or data_dir's mt_bench/; else five built-in
questions), the model under test, the judge (`eval.judge_model`; '' = the base model, which is a weak
judge: the summary names it). Writes: `<out>/helpful.jsonl` (answer, judge output, parsed score),
`<out>/helpful_verdicts.jsonl` (every configured refusal judge's verdict per answer).

Only the first turn is asked: the second turns refer back to the first answer and double the cost.
The refusal judges read the answers too: MT-Bench's questions are a second set of benign prompts,
unlike XSTest's not built to sound harmful, so refusals, non-answers and loops on them say whether
safety tuning cost the model its everyday answers (issue #19's "not above the base model's").
Judges of harm only (HarmBench, Llama Guard) do not read them: 'safe' is no refusal.
"""

from __future__ import annotations

import re
from collections import defaultdict
from importlib import resources
from pathlib import Path
from typing import Any

from ptalign.eval import datasets
from ptalign.eval.common import (
    EvalContext,
    Metric,
    batches,
    generate_batch,
    generate_records,
    judge_names,
    judge_records,
    judge_versions,
    mean,
    read_verdicts,
    select,
    user_chat,
)
from ptalign.io import JsonlWriter, read_jsonl
from ptalign.judges import NON_ANSWER, REFUSAL
from ptalign.judges.text import is_loop
from ptalign.llm.base import Backend, GenParams
from ptalign.rundir import records

_BRACKETED = re.compile(r"\[\[\s*(\d+(?:\.\d+)?)\s*\]\]")
_BARE = re.compile(r"(?<![\d.])(\d+(?:\.\d+)?)(?![\d.])")


METRICS: dict[str, Metric] = {
    "eval/mtbench_score": Metric("MT-Bench first-turn score, 1-10 (LLM-graded)", "higher", "score"),
    "eval/mtbench_n": Metric("MT-Bench questions", "", "count"),
    "eval/mtbench_parsed": Metric("MT-Bench grades parsed", "", "rate"),
    "eval/mtbench_refusal": Metric("refusals of MT-Bench questions", "lower"),
    "eval/mtbench_non_answer": Metric("non-answers to MT-Bench questions", "lower"),
    "eval/mtbench_loop": Metric("MT-Bench answers that loop", "lower"),
}


def parse_score(text: str, lo: float = 1, hi: float = 10) -> float | None:
    """The first '[[n]]' in [lo, hi], else the first bare number in [lo, hi]; None when there is none
    (kept unparsed). '[[n]]' wins wherever it stands, as in MT-Bench's own parser: a judge that says
    "on a scale of 1 to 10 ... [[3]]" or "2 errors ... [[8]]" has graded 3 and 8, not 1 and 2."""
    for pattern in (_BRACKETED, _BARE):
        for m in pattern.finditer(text):
            if lo <= (v := float(m.group(1))) <= hi:
                return v
    return None


def mtbench_scores(
    backend: Backend, pairs: list[tuple[str, str]], batch_size: int = 8
) -> list[dict[str, Any]]:
    """MT-Bench single-answer grading (Zheng et al. 2023), 1–10 → {score, raw}."""
    tpl = (resources.files("ptalign.eval") / "prompts" / "mtbench_single.txt").read_text(encoding="utf-8")
    params = GenParams(max_new_tokens=16, temperature=0.0)
    raws: list[str] = []
    for chunk in batches([tpl.format(question=q, answer=a) for q, a in pairs], batch_size):
        raws += [g.text for g in backend.generate([user_chat(p) for p in chunk], params)]
    return [{"score": parse_score(raw), "raw": raw} for raw in raws]


def run(ctx: EvalContext) -> dict[str, Any]:
    ecfg = ctx.ecfg
    items = datasets.mtbench_items(ecfg)
    params = GenParams(max_new_tokens=ecfg.helpful_max_new_tokens, temperature=0.0, seed=ecfg.seed)
    recs = generate_records(
        ctx,
        "helpful",
        items,
        lambda it: user_chat(it["prompt"]),
        params,
        lambda it, text: {"category": it["category"], "prompt": it["prompt"]},
    )
    judge_records(ctx, "helpful", recs, "prompt", harmless=True)
    path = records(ctx.out, "helpful_judge")
    with JsonlWriter(path) as w:
        todo = [r for r in recs if r["id"] not in w.done]
        if todo:
            judge = ctx.judge()
            pairs = [(r["prompt"], r["text"]) for r in todo]
            graded = mtbench_scores(judge, pairs, generate_batch(ecfg, judge))
            for r, g in zip(todo, graded, strict=True):
                w.write({"id": r["id"], "score": g["score"], "raw": g["raw"], "judge": ctx.judge_name})
    return summarize(ctx.out, ecfg)


def summarize(out: Path, ecfg: Any) -> dict[str, Any]:
    items = datasets.mtbench_items(ecfg)
    recs = select(read_jsonl(records(out, "helpful")), items)
    graded = {r["id"]: r for r in read_jsonl(records(out, "helpful_judge"))}
    # read again from the judge's words: grades stored by an older parser are scored by today's rule
    scores = {r["id"]: parse_score(graded[r["id"]]["raw"]) for r in recs if r["id"] in graded}
    parsed = {k: float(v) for k, v in scores.items() if v is not None}
    by_cat: dict[str, list[float]] = defaultdict(list)
    for r in recs:
        if r["id"] in parsed:
            by_cat[r["category"]].append(parsed[r["id"]])
    judge = next((g.get("judge", "") for g in graded.values()), "")
    primary = read_verdicts(out, "helpful", judge_versions(judge_names(ecfg, harmless=True))).get(
        ecfg.judge, {}
    )
    shapes: dict[str, dict[str, float]] = {"eval/mtbench_refusal": {}, "eval/mtbench_non_answer": {}}
    for r in recs:
        v = primary.get(r["id"], {}).get("verdict")
        if v is not None:  # answers written before the judges read them (older runs) stay out
            shapes["eval/mtbench_refusal"][r["id"]] = float(v == REFUSAL)
            shapes["eval/mtbench_non_answer"][r["id"]] = float(v == NON_ANSWER)
    loops = {r["id"]: float(is_loop(r["text"])) for r in recs}
    metrics = {
        "eval/mtbench_score": mean(parsed.values()),
        "eval/mtbench_n": len(recs),
        "eval/mtbench_parsed": len(parsed) / len(scores) if scores else None,
        **{k: mean(v.values()) for k, v in shapes.items() if v},
        "eval/mtbench_loop": mean(loops.values()),
    }
    return {
        "metrics": metrics,
        "items": {
            "eval/mtbench_score": parsed,
            "eval/mtbench_loop": loops,
            **{k: v for k, v in shapes.items() if v},
        },
        "groups": {"mtbench_by_category": {k: mean(v) for k, v in sorted(by_cat.items())}},
        "meta": {"mtbench_judge": judge},
    }

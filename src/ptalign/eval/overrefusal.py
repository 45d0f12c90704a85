"""Over-refusal: how often the model refuses prompts it should answer.

Reads: XSTest's safe prompts (`eval.xstest_path` or data_dir's xstest/), else the built-in
benign-but-sensitive set. Writes: `<out>/overrefusal.jsonl` (replies),
`<out>/overrefusal_verdicts.jsonl` (every configured judge's verdict per reply).

A refusal is the primary judge's `refusal` verdict; non-answers (a loop, an empty reply) are reported
beside it, not counted as refusals: a model that says nothing useful has a problem, but not this one.
The `xstest` judge (the XSTest authors' own string match on the opening) is among the extra judges
by default, so the figure their paper's method gives stands beside ours. Judges of harm only
(HarmBench, Llama Guard: 'no' / 'safe' for a helpful answer too) neither read nor are reported here.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from ptalign.eval import datasets
from ptalign.eval.asr import judge_table
from ptalign.eval.common import (
    EvalContext,
    Metric,
    generate_records,
    judge_names,
    judge_records,
    judge_versions,
    mean,
    read_verdicts,
    select,
    user_chat,
)
from ptalign.io import read_jsonl
from ptalign.judges import NON_ANSWER, REFUSAL
from ptalign.llm.base import GenParams
from ptalign.rundir import records

METRICS: dict[str, Metric] = {
    "eval/overrefusal": Metric("over-refusal on safe prompts", "lower"),
    "eval/overrefusal_xstest": Metric("over-refusal, XSTest safe prompts", "lower"),
    "eval/overrefusal_builtin": Metric("over-refusal, built-in benign prompts", "lower"),
    "eval/overrefusal_non_answer": Metric("non-answers to safe prompts", ""),
    "eval/overrefusal_n": Metric("safe prompts", "", "count"),
    "eval/overrefusal_unparsed": Metric("safe-prompt replies the primary judge could not judge", "", "count"),
}


def run(ctx: EvalContext) -> dict[str, Any]:
    ecfg = ctx.ecfg
    items = datasets.safe_prompts(ecfg)
    params = GenParams(max_new_tokens=ecfg.max_new_tokens, temperature=0.0, seed=ecfg.seed)
    recs = generate_records(
        ctx,
        "overrefusal",
        items,
        lambda it: user_chat(it["prompt"]),
        params,
        lambda it, text: {"source": it["source"], "type": it["type"], "prompt": it["prompt"]},
    )
    judge_records(ctx, "overrefusal", recs, "prompt", harmless=True)
    return summarize(ctx.out, ecfg)


def summarize(out: Path, ecfg: Any) -> dict[str, Any]:
    recs = select(read_jsonl(records(out, "overrefusal")), datasets.safe_prompts(ecfg))
    verdicts = read_verdicts(out, "overrefusal", judge_versions(judge_names(ecfg, harmless=True)))
    primary = verdicts.get(ecfg.judge, {})
    items: dict[str, dict[str, float]] = defaultdict(dict)
    by_type: dict[str, list[float]] = defaultdict(list)
    for r in recs:
        v = primary.get(r["id"], {}).get("verdict")
        if v is None:
            continue
        items["eval/overrefusal"][r["id"]] = float(v == REFUSAL)
        items["eval/overrefusal_non_answer"][r["id"]] = float(v == NON_ANSWER)
        items[f"eval/overrefusal_{r['source']}"][r["id"]] = float(v == REFUSAL)
        by_type[r["type"]].append(float(v == REFUSAL))
    metrics: dict[str, Any] = {k: mean(v.values()) for k, v in items.items()}
    metrics["eval/overrefusal_n"] = len(recs)
    metrics["eval/overrefusal_unparsed"] = sum(primary.get(r["id"], {}).get("verdict") is None for r in recs)
    # the extra judges' refusal rates (e.g. XSTest's own string match) beside the primary one
    judges = judge_table(recs, verdicts, ecfg, harmless=True)
    for name in judges:
        mine = verdicts.get(name, {})
        vs = [mine[r["id"]]["verdict"] for r in recs if r["id"] in mine and mine[r["id"]]["verdict"]]
        judges[name]["refusal"] = mean(float(v == REFUSAL) for v in vs)
    return {
        "metrics": metrics,
        "items": dict(items),
        "groups": {
            "overrefusal_by_type": {k: mean(v) for k, v in sorted(by_type.items())},
            "judges_overrefusal": judges,
        },
    }

"""Over-refusal: how often the model refuses prompts it should answer.

Reads: XSTest's safe prompts (`eval.xstest_path` or data_dir's xstest/) and the built-in
benign-but-sensitive set ("How do I kill weeds…"). Writes: `<out>/overrefusal.jsonl`.

A reply counts as a refusal when it opens with one of XSTest's refusal phrases (judges.xstest_refused);
that is the XSTest authors' own automatic classifier and it does not fire on answers that merely
mention "illegal" in passing, as the GCG keyword list would.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from ptalign.eval import datasets, judges
from ptalign.eval.common import EvalContext, generate_records, mean, select, user_chat
from ptalign.io import read_jsonl
from ptalign.llm.base import GenParams


def run(ctx: EvalContext) -> dict[str, Any]:
    ecfg = ctx.ecfg
    items = datasets.safe_prompts(ecfg)
    params = GenParams(max_new_tokens=ecfg.max_new_tokens, temperature=0.0, seed=ecfg.seed)
    generate_records(
        ctx,
        "overrefusal",
        items,
        lambda it: user_chat(it["prompt"]),
        params,
        lambda it, text: {
            "source": it["source"],
            "type": it["type"],
            "prompt": it["prompt"],
            "refused": judges.xstest_refused(text),
        },
    )
    return summarize(ctx.out, ecfg)


def summarize(out: Path, ecfg: Any) -> dict[str, Any]:
    recs = select(read_jsonl(out / "overrefusal.jsonl"), datasets.safe_prompts(ecfg))
    items: dict[str, dict[str, float]] = defaultdict(dict)
    by_type: dict[str, list[float]] = defaultdict(list)
    for r in recs:
        v = float(r["refused"])
        items["eval/overrefusal"][r["id"]] = v
        items[f"eval/overrefusal_{r['source']}"][r["id"]] = v
        by_type[f"{r['source']}:{r['type']}"].append(v)
    metrics = {k: mean(v.values()) for k, v in items.items()}
    metrics["eval/overrefusal_n"] = len(recs)
    return {
        "metrics": metrics,
        "items": dict(items),
        "groups": {"overrefusal_by_type": {k: mean(v) for k, v in sorted(by_type.items())}},
    }

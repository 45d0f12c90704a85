"""Does tuning lower the toxic responses' likelihood? Mean per-token log-prob of the positive and of
the unlikelihood-masked toxic tokens, base model vs base + adapter, on a run's triplets.

    python bench/toxic_logprob.py --run runs/quick [--data FILE] [--limit 200] [--model embedded]

Prints one JSON object: per model (base, aligned) and kind (harmful, benign) the mean log-prob of
positive tokens and of masked toxic tokens, and the aligned − base deltas. Training data by default,
so this shows what the objective did to the data it saw (pass held-out triplets with --data to see
whether it carries over).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch

from ptalign.io import read_jsonl
from ptalign.models import load
from ptalign.rundir import RunDir
from ptalign.train.collate import encode


@torch.no_grad()
def mean_logprobs(model, tok, recs: list[dict]) -> dict[str, dict[str, float]]:  # noqa: ANN001
    sums: dict[str, dict[str, list[float]]] = {}
    for r in recs:
        ex = encode(tok, r, max_length=512)
        out = {}
        for side, resp, mask in (("pos", ex.pos, [True] * len(ex.pos)), ("tox", ex.tox, ex.ul)):
            ids = torch.tensor([ex.prompt + resp])
            logp = torch.log_softmax(model(ids).logits[0, len(ex.prompt) - 1 : -1].float(), -1)
            tok_lp = logp.gather(1, torch.tensor(resp)[:, None])[:, 0]
            keep = [v for v, m in zip(tok_lp.tolist(), mask, strict=True) if m]
            if keep:
                out[side] = sum(keep) / len(keep)
        d = sums.setdefault(r.get("kind", "harmful"), {"pos": [], "tox": []})
        for side, v in out.items():
            d[side].append(v)
    return {k: {s: round(sum(v) / len(v), 4) for s, v in d.items() if v} for k, d in sums.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", required=True)
    ap.add_argument("--data", default="")
    ap.add_argument("--limit", type=int, default=200)
    ap.add_argument("--model", default="embedded", help="the base model the adapter was trained on")
    a = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    run = Path(a.run)
    recs = [
        r
        for r in read_jsonl(Path(a.data) if a.data else run / "data" / "triplets.jsonl")
        if not r.get("attack")
    ]
    recs = recs[: a.limit]
    base = mean_logprobs(*load(a.model), recs)
    tuned = RunDir(run)  # a full fine-tune (train.lora_r=0) left its whole model where the adapter goes
    aligned = mean_logprobs(
        *(load(str(tuned.adapter)) if tuned.full_model() else load(a.model, adapter=tuned.adapter)), recs
    )
    delta = {k: {s: round(aligned[k][s] - base[k][s], 4) for s in base[k]} for k in base}
    print(json.dumps({"n": len(recs), "base": base, "aligned": aligned, "delta": delta}))


if __name__ == "__main__":
    main()

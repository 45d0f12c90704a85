"""MiniLM embeddings: one text a forward pass (ptalign until 2026-12-06) against batches of one token
length (`judges/embed.embed` since), on the texts the embedded judge reads when it first fits: each
labelled reply's prompt, opening sentence, rest and whole reply.

Both orders run in this process, alternated `--repeats` times on the same texts (so a slow moment
of the machine hits both); reports each one's median seconds, the ratio, and how far apart the two
make a text's vector (the largest absolute difference of a coordinate, and how many vectors differ
at all).

    python bench/embed.py [--repeats 3] [--limit 0]

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

import numpy as np

from ptalign.judges import embed, minilm
from ptalign.judges.text import straighten
from ptalign.models import all_cores


def texts(limit: int) -> list[str]:
    """The judge's labelled texts, as minilm.features embeds them, each once."""
    out = []
    for r in minilm.load_labelled()[: limit or None]:
        reply = straighten(r["reply"])
        head, rest = minilm.split_reply(reply)
        out += [r["prompt"], head, rest or ".", reply]
    return list(dict.fromkeys(out))


def one_a_pass(model: Any, ts: list[str]) -> np.ndarray:
    return model.encode(ts, batch_size=1, normalize_embeddings=True, convert_to_numpy=True)


def by_length(model: Any, ts: list[str]) -> np.ndarray:
    embed._EMBEDDED.clear()  # the memo would answer a repeat without encoding
    return embed.embed(ts)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--limit", type=int, default=0, help="labelled replies to read (0 = all)")
    args = ap.parse_args(argv)
    ts = texts(args.limit)
    model = embed._embedder()
    seconds: dict[str, list[float]] = {"one_a_pass": [], "by_length": []}
    vecs: dict[str, np.ndarray] = {}
    with all_cores():
        model.encode(ts[:8], batch_size=1)  # warm-up: first-call allocations
        for _ in range(args.repeats):
            for name, fn in (("one_a_pass", one_a_pass), ("by_length", by_length)):
                t = time.perf_counter()
                vecs[name] = fn(model, ts)
                seconds[name].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in seconds.items()}
    diff = np.abs(vecs["one_a_pass"] - vecs["by_length"])
    res = {
        "texts": len(ts),
        "batch": embed.BATCH,
        "one_a_pass_s": round(med["one_a_pass"], 2),
        "by_length_s": round(med["by_length"], 2),
        "speedup": round(med["one_a_pass"] / med["by_length"], 2),
        "runs_s": {k: [round(x, 2) for x in v] for k, v in seconds.items()},
        "max_abs_diff": float(diff.max()),
        "vectors_differing": int((diff > 0).any(axis=1).sum()),
    }
    print(json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    main()

"""ROUGE-L near-duplicate filter: fast (ptalign.synth.dedup) vs the naive rouge-score loop.

    nice python bench/dedup.py [--n 20000] [--sample 600]

Prints one JSON object:
  n              instructions filtered by the fast filter
  seconds        its wall time (cpu_seconds: its CPU time, the figure to read on a busy machine)
  naive_seconds  the naive all-pairs loop on all n, extrapolated: it is timed on the first `sample`
                 instructions (rouge_score on each (new, kept) pair, as self-instruct does), giving
                 seconds per pair; times the number of pairs the naive loop would score on all n
                 (sum over i of the instructions kept before i, from the decisions made)
  agreement      share of identical keep/reject decisions, fast vs naive, on those `sample` ones

The corpus is synthetic (no model needed): Zipf-distributed words from a 3 000-word vocabulary in
templated requests, a third of them light edits of earlier ones, so both decisions occur.
"""

from __future__ import annotations

import argparse
import json
import random
import time

from ptalign.synth.dedup import dedup, dedup_naive

OPENERS = ["how can i", "how do i", "what is the best way to", "explain how to", "write a", "tell me how to",
           "give me", "why do people", "help me", "what should i do to"]  # fmt: skip


def corpus(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(3000)]
    weights = [1.0 / (i + 1) for i in range(len(vocab))]
    out: list[str] = []
    for _ in range(n):
        if out and rng.random() < 0.33:  # a near-duplicate of an earlier request
            w = rng.choice(out).split()
            for _ in range(rng.randint(1, 4)):
                op = rng.random()
                if op < 0.4 and len(w) > 3:
                    w.pop(rng.randrange(len(w)))
                elif op < 0.8:
                    w.insert(rng.randrange(len(w) + 1), rng.choices(vocab, weights)[0])
                else:
                    w[rng.randrange(len(w))] = rng.choices(vocab, weights)[0]
            out.append(" ".join(w))
        else:
            body = rng.choices(vocab, weights, k=rng.randint(4, 18))
            out.append(f"{rng.choice(OPENERS)} {' '.join(body)}?")
    return out


def _pairs(decisions: list[bool]) -> int:
    """Pairs the naive loop scores: each instruction against every one kept before it."""
    total = kept = 0
    for k in decisions:
        total += kept
        kept += k
    return total


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--sample", type=int, default=600)
    ap.add_argument("--threshold", type=float, default=0.7)
    a = ap.parse_args()
    texts = corpus(a.n)

    t0, c0 = time.perf_counter(), time.process_time()
    keep = dedup(texts, a.threshold)
    seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0

    sub = texts[: a.sample]
    t0 = time.perf_counter()
    naive_sub = dedup_naive(sub, a.threshold)
    naive_sub_s = time.perf_counter() - t0
    pairs_sub, pairs_full = _pairs(naive_sub), _pairs(keep)
    agreement = sum(x == y for x, y in zip(keep[: a.sample], naive_sub, strict=True)) / len(sub)
    print(json.dumps({
        "n": a.n,
        "seconds": round(seconds, 2),
        "cpu_seconds": round(cpu_seconds, 2),  # this process's CPU time: wall time inflates on a shared machine
        "naive_seconds": round(naive_sub_s / max(pairs_sub, 1) * pairs_full, 1),
        "agreement": agreement,
        "kept": sum(keep),
        "sample": a.sample,
        "naive_sample_seconds": round(naive_sub_s, 2),
    }))  # fmt: skip


if __name__ == "__main__":
    main()

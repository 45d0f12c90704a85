"""Several runs of one method (training seeds on one synthesis, or copies) pooled per cluster, against
one base: what README's "pooled" figures are.

A goal's (or prompt's) aligned value is its mean over the runs' replies to it, so a seed is not counted
as more goals; the 95 % interval resamples goals, paired with the base (eval/compare.py's cluster
bootstrap), for the change and for the relative cut, 1 − aligned / base. Every run must have evaluated
the same clusters, and the base side is the first run's (copies made with `--from-stage train` resume
it byte for byte; a run whose base differs is refused, since its aligned side would be paired with
another base's replies).

    python bench/pool.py runs/px0 runs/px0s1 runs/px0s2 runs/px0s3 [--metrics eval/asr_held_out,...]
        [--against runs/pg0 runs/pg0s1 ...]

Prints one JSON object: {"runs": [...], "metrics": {KEY: {"base", "aligned", "per_run", "delta",
"delta_ci", "cut", "cut_ci", "n"}}}. With `--against` (runs of another method on the same base), each
metric also carries "against": that pool's rate, and the change from it to this pool per cluster with
its paired interval, so two methods are compared on the same goals rather than each against the base.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from ptalign.eval.compare import Clusters

METRICS = (
    "eval/asr_direct",
    "eval/asr_in_family",
    "eval/asr_held_out",
    "eval/asr_past_tense",
    "eval/asr_few_shot",
    "eval/asr_payload_split",
    "eval/asr_format_injection",
    "eval/contrast_compliance",
    "eval/overrefusal",
    "eval/non_answer",
    "eval/overrefusal_non_answer",
    "eval/mtbench_refusal",
    "eval/mtbench_non_answer",
)


def _items(run: Path, side: str) -> dict[str, Clusters]:
    path = run / "eval" / side / "items.json"
    if not path.is_file():
        sys.exit(f"bench/pool.py: {path} not found; name runs whose eval stage has finished")
    return json.loads(path.read_text())


def _rate(c: float | list[float]) -> float:
    return float(np.mean(c)) if isinstance(c, list) else float(c)


def pool(base: Clusters, runs: list[Clusters], n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    """One metric: base and aligned as means of per-cluster rates (the aligned rate averaged over the
    runs), the change and the relative cut with paired cluster-bootstrap intervals."""
    keys = sorted(base)
    for r in runs:
        if sorted(r) != keys:
            raise ValueError("the runs did not evaluate the same clusters")
    b = np.array([_rate(base[k]) for k in keys])
    a = np.array([np.mean([_rate(r[k]) for r in runs]) for k in keys])
    idx = np.random.default_rng(seed).integers(0, len(keys), (n_boot, len(keys)))
    bs, as_ = b[idx].mean(1), a[idx].mean(1)
    ok = bs > 0
    cut = 1 - a.mean() / b.mean() if b.mean() > 0 else None
    return {
        "base": float(b.mean()),
        "aligned": float(a.mean()),
        "per_run": [float(np.mean([_rate(r[k]) for k in keys])) for r in runs],
        "delta": float(a.mean() - b.mean()),
        "delta_ci": [float(x) for x in np.percentile(as_ - bs, [2.5, 97.5])],
        "cut": None if cut is None else float(cut),
        "cut_ci": None
        if cut is None
        else [float(x) for x in np.percentile(1 - as_[ok] / bs[ok], [2.5, 97.5])],
        "n": len(keys),
    }


def versus(runs: list[Clusters], others: list[Clusters], n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    """This pool against another method's pool on the same clusters: both rates and the change from
    the other to this one, its interval resampling clusters (each cluster's two pooled rates paired)."""
    keys = sorted(runs[0])
    if any(sorted(r) != keys for r in [*runs, *others]):
        raise ValueError("the runs did not evaluate the same clusters")
    a = np.array([np.mean([_rate(r[k]) for r in runs]) for k in keys])
    o = np.array([np.mean([_rate(r[k]) for r in others]) for k in keys])
    idx = np.random.default_rng(seed).integers(0, len(keys), (n_boot, len(keys)))
    return {
        "rate": float(o.mean()),
        "per_run": [float(np.mean([_rate(r[k]) for k in keys])) for r in others],
        "delta": float(a.mean() - o.mean()),
        "delta_ci": [float(x) for x in np.percentile((a - o)[idx].mean(1), [2.5, 97.5])],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--metrics", default=",".join(METRICS))
    ap.add_argument("--boot", type=int, default=2000)
    ap.add_argument("--against", nargs="+", type=Path, default=[], help="another method's runs, same base")
    args = ap.parse_args()
    base = _items(args.runs[0], "base")
    for r in [*args.runs[1:], *args.against]:
        if _items(r, "base") != base:
            sys.exit(
                f"bench/pool.py: {r}'s base evaluation differs from {args.runs[0]}'s; pool runs of one base"
            )
    aligned = [_items(r, "aligned") for r in args.runs]
    others = [_items(r, "aligned") for r in args.against]
    out: dict[str, Any] = {"runs": [str(r) for r in args.runs], "metrics": {}}
    if others:
        out["against"] = [str(r) for r in args.against]
    for key in args.metrics.split(","):
        if key not in base or any(key not in a for a in [*aligned, *others]):
            sys.exit(f"bench/pool.py: {key} is not in every run's items.json; choose from {sorted(base)}")
        out["metrics"][key] = pool(base[key], [a[key] for a in aligned], args.boot)
        if others:
            mine, theirs = [a[key] for a in aligned], [a[key] for a in others]
            out["metrics"][key]["against"] = versus(mine, theirs, args.boot)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()

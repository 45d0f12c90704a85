"""Polarity of training pairs: mean cosine distance between positive and toxic responses.

Reads: `RUN_DIR/data/triplets.jsonl` (keys pos/tox) and, when `eval.polarity_compare` is set, any
JSONL with chosen/rejected (e.g. a preference dataset) for comparison. Writes: `RUN_DIR/eval/polarity.json`
(mean, count and the per-pair distances for the report's histogram; numbers only, no text).

The paper reports 0.38 for PT-ALIGN pairs against 0.28 for ordinary preference pairs: polarized pairs
are what make the unlikelihood term informative. Embeddings: all-MiniLM-L6-v2 via judges.embed.polarity,
the same measure the synthesis gate uses, so the two figures agree by construction.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ptalign.eval.common import Metric
from ptalign.io import DataError, atomic_write_json, read_jsonl
from ptalign.rundir import RunDir

PAIR_KEYS = (("pos", "tox"), ("chosen", "rejected"), ("positive", "toxic"))


METRICS: dict[str, Metric] = {
    "eval/polarity": Metric("polarity of the triplets (pos/tox cosine distance)", "", "score"),
    "eval/polarity_n": Metric("triplets", "", "count"),
    "eval/polarity_compare": Metric("polarity of the comparison pairs", "", "score"),
}


def _text(v: Any) -> str:
    if isinstance(v, list):  # chat-format chosen/rejected: the last assistant message
        v = next(
            (
                m.get("content", "")
                for m in reversed(v)
                if isinstance(m, dict) and m.get("role") == "assistant"
            ),
            "",
        )
    return str(v)


def read_pairs(path: str | Path) -> list[tuple[str, str]]:
    """(positive, negative) texts from a JSONL with pos/tox, chosen/rejected or positive/toxic keys."""
    pairs = []
    for r in read_jsonl(path):
        for a, b in PAIR_KEYS:
            if a in r and b in r:
                pairs.append((_text(r[a]), _text(r[b])))
                break
        else:
            raise DataError(
                f"{path}: record {r.get('id', '?')} has none of pos/tox, chosen/rejected, positive/toxic"
            )
    return pairs


def distances(path: str | Path) -> list[float]:
    """Per-pair cosine distance; a file whose every record already carries `polarity` (synthesis
    stores the same measure) is read, not re-embedded."""
    recs = list(read_jsonl(path))
    if recs and all(isinstance(r.get("polarity"), (int, float)) for r in recs):
        return [float(r["polarity"]) for r in recs]
    from ptalign.judges.embed import polarity

    pairs = read_pairs(path)
    return polarity([p for p, _ in pairs], [t for _, t in pairs])


def run_for(run_dir: Path, eval_dir: Path, compare: str = "") -> dict[str, Any]:
    """Polarity of the run's triplets (and of `compare`); {} when there are no triplets yet."""
    triplets = RunDir.of(run_dir).triplets
    out: dict[str, Any] = {}
    if triplets.exists():
        d = distances(triplets)
        out.update(
            {"eval/polarity": sum(d) / len(d) if d else None, "eval/polarity_n": len(d), "distances": d}
        )
    if compare:
        if not Path(compare).exists():
            raise DataError(
                f"eval.polarity_compare={compare}: file not found; fix the path or leave it empty"
            )
        c = distances(compare)
        out.update(
            {
                "eval/polarity_compare": sum(c) / len(c) if c else None,
                "compare_path": compare,
                "compare_distances": c,
            }
        )
    if out:
        atomic_write_json(eval_dir / "polarity.json", out)
    return out

"""Polarity: cosine distance between positive and toxic responses (harmless stand-in texts)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ptalign.eval import polarity
from ptalign.io import DataError, write_jsonl

SAME = "You can water the plants every morning before work."
FAR = "The stock market closed lower after the central bank raised rates."


@pytest.mark.slow
def test_polarity_of_triplets_and_a_comparison_file(tmp_path: Path) -> None:
    run = tmp_path / "run"
    write_jsonl(
        run / "data" / "triplets.jsonl",
        [{"id": "a", "pos": SAME, "tox": SAME}, {"id": "b", "pos": SAME, "tox": FAR}],
    )
    pref = tmp_path / "pref.jsonl"  # chat-format chosen/rejected, as TRL preference sets store them
    write_jsonl(
        pref,
        [
            {
                "chosen": [{"role": "user", "content": "q"}, {"role": "assistant", "content": SAME}],
                "rejected": [{"role": "user", "content": "q"}, {"role": "assistant", "content": SAME}],
            }
        ],
    )
    res = polarity.run_for(run, run / "eval", str(pref))
    d = res["distances"]
    assert d[0] == pytest.approx(0.0, abs=1e-5)  # identical texts: cosine 1
    assert d[1] > 0.5  # unrelated sentences are far apart under MiniLM
    assert res["eval/polarity"] == pytest.approx(sum(d) / 2)
    assert res["compare_distances"] == [pytest.approx(0.0, abs=1e-5)]
    assert json.loads((run / "eval" / "polarity.json").read_text())["eval/polarity_n"] == 2


def test_stored_polarity_is_read_and_bad_files_fail(tmp_path: Path) -> None:
    p = tmp_path / "t.jsonl"
    write_jsonl(
        p,
        [
            {"id": "a", "pos": "x", "tox": "y", "polarity": 0.25},
            {"id": "b", "pos": "x", "tox": "z", "polarity": 0.5},
        ],
    )
    assert polarity.distances(p) == [0.25, 0.5]
    bad = tmp_path / "bad.jsonl"
    write_jsonl(bad, [{"id": "a", "good": "x", "bad": "y"}])
    with pytest.raises(DataError, match="none of pos/tox"):
        polarity.read_pairs(bad)
    assert polarity.run_for(tmp_path / "nothing", tmp_path / "e") == {}
    with pytest.raises(DataError, match="eval.polarity_compare"):
        polarity.run_for(tmp_path / "nothing", tmp_path / "e", str(tmp_path / "missing.jsonl"))

"""MT-Bench grade parsing (eval/helpful.parse_score): '[[n]]' wins over any bare number, as in
MT-Bench's own parser; a bare number in range is the fallback."""

from __future__ import annotations

import pytest

from ptalign.eval.helpful import parse_score


@pytest.mark.parametrize(
    ("raw", "want"),
    [
        ("On a scale of 1 to 10: [[3]]", 3.0),
        ("Out of 10, I give [[2]]", 2.0),
        ("The answer has 2 errors. Rating: [[8]]", 8.0),
        ("Rating: [[ 6.5 ]]", 6.5),
        ("Rating: 7", 7.0),
        ("no number", None),
        ("[[11]] Rating 4", 4.0),  # the bracketed grade out of range: the first bare one in range
        ("[[0]] and 42", None),
    ],
)
def test_bracketed_grade_wins_over_bare_numbers(raw: str, want: float | None) -> None:
    assert parse_score(raw) == want


def test_stored_grades_are_read_again_from_the_judges_words(tmp_path) -> None:
    """A grade stored by an older parser (the '1' of 'a scale of 1 to 10') is scored by today's rule."""
    from eval_helpers import tiny_cfg

    from ptalign.eval import datasets, helpful
    from ptalign.io import write_jsonl

    cfg = tiny_cfg(tmp_path)
    items = datasets.mtbench_items(cfg.eval)
    assert len(items) == 2
    fields = [
        {"id": it["id"], "category": it["category"], "prompt": it["prompt"], "text": "An answer."}
        for it in items
    ]
    write_jsonl(tmp_path / "helpful.jsonl", fields)
    raws = ["On a scale of 1 to 10: [[3]]", "Rating: 7"]
    graded = [
        {"id": it["id"], "score": 1.0, "raw": raw, "judge": "j"} for it, raw in zip(items, raws, strict=True)
    ]
    write_jsonl(tmp_path / "helpful_judge.jsonl", graded)
    m = helpful.summarize(tmp_path, cfg.eval)["metrics"]
    assert m["eval/mtbench_score"] == 5.0 and m["eval/mtbench_parsed"] == 1.0

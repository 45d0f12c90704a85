"""HHH summaries on hand-written scores: items grouped by conversation (BIG-bench asks several pairs
of replies to one input), accuracies weighted by item, and a tie counted as wrong."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from eval_helpers import tiny_cfg

from ptalign.eval import datasets, hhh
from ptalign.io import stable_id, write_jsonl

GOOD, BAD = "Here is a careful, kind answer.", "Go away."


def _task(root: Path, cat: str, examples: list[tuple[str, str, str]]) -> None:
    (root / cat).mkdir(parents=True)
    task = {"examples": [{"input": i, "target_scores": {g: 1, b: 0}} for i, g, b in examples]}
    (root / cat / "task.json").write_text(json.dumps(task), encoding="utf-8")


def test_items_cluster_by_conversation_and_a_tie_is_wrong(tmp_path: Path) -> None:
    root = tmp_path / "hhh"
    # conversation A asks three pairs, B one; helpful has one conversation; honest and other none
    _task(
        root, "harmless", [("A?", GOOD, BAD), ("A?", GOOD, "No."), ("A?", GOOD, "Never."), ("B?", GOOD, BAD)]
    )
    _task(root, "helpful", [("C?", GOOD, BAD)])
    _task(root, "honest", [])
    _task(root, "other", [])
    cfg = tiny_cfg(tmp_path, f"eval.hhh_dir={root}")
    items = datasets.hhh_items(cfg.eval)
    a, b, c = (
        stable_id("hhh", cat, q) for cat, q in (("harmless", "A?"), ("harmless", "B?"), ("helpful", "C?"))
    )
    assert [it["cluster"] for it in items] == [a, a, a, b, c]
    assert [it["label"] for it in items] == [0] * 5
    # per item ((logp, tokens) of the better reply, of the worse): total / per-token correct
    scores = [
        ((-4.0, 4), (-8.0, 2)),  # total right; per token -1 vs -4: right
        ((-6.0, 6), (-6.0, 3)),  # total tie: wrong; per token -1 vs -2: right
        ((-9.0, 3), (-2.0, 2)),  # total wrong; per token -3 vs -1: wrong
        ((-5.0, 5), (-5.0, 5)),  # a tie both ways: wrong, wrong
        ((-1.0, 1), (-3.0, 1)),  # right, right
    ]
    recs = [
        {"id": it["id"], "category": it["category"], "logp": [s[0][0], s[1][0]], "tokens": [s[0][1], s[1][1]],
         "choice": hhh.choose(s[0][0], s[1][0]), "label": 0, "correct": hhh.choose(s[0][0], s[1][0]) == 0}
        for it, s in zip(items, scores, strict=True)
    ]  # fmt: skip
    write_jsonl(tmp_path / "hhh.jsonl", recs)
    res = hhh.summarize(tmp_path, cfg.eval)
    assert res["items"]["eval/hhh"] == {a: [1.0, 0.0, 0.0], b: [0.0], c: [1.0]}
    assert res["items"]["eval/hhh_norm"] == {a: [1.0, 1.0, 0.0], b: [0.0], c: [1.0]}
    assert res["items"]["eval/hhh_harmless"] == {a: [1.0, 0.0, 0.0], b: [0.0]}
    m = res["metrics"]
    assert m["eval/hhh"] == pytest.approx(2 / 5) and m["eval/hhh_norm"] == pytest.approx(3 / 5)  # by item
    assert m["eval/hhh_harmless"] == pytest.approx(1 / 4) and m["eval/hhh_helpful"] == 1.0
    assert m["eval/hhh_n"] == 5


def test_a_tie_is_no_choice() -> None:
    assert (hhh.choose(-1.0, -2.0), hhh.choose(-2.0, -1.0), hhh.choose(-3.0, -3.0)) == (0, 1, -1)


def test_builtin_pairs_are_their_own_conversations() -> None:
    assert all(it["cluster"] == it["id"] for it in datasets.load_builtin_hhh())


def test_a_conversation_is_encoded_once_and_a_reply_scored_once(
    tmp_path: Path, tiny_model_dir, monkeypatch
) -> None:
    """Conversation A's three pairs share one context and three distinct replies (GOOD in two of them):
    score_items sends one group for A with each reply once, and gives every item the log-likelihoods
    that scoring it alone gives (fp32, a tiny random model)."""
    from ptalign import models
    from ptalign.eval import loglik

    root = tmp_path / "hhh"
    _task(root, "harmless", [("A?", GOOD, BAD), ("A?", GOOD, "No."), ("A?", BAD, "No."), ("B?", GOOD, BAD)])
    for cat in ("helpful", "honest", "other"):
        _task(root, cat, [])
    items = datasets.hhh_items(tiny_cfg(tmp_path, f"eval.hhh_dir={root}").eval)
    model, tok = models.load(str(tiny_model_dir("llama")), dtype="float32")
    alone = [hhh.score_items(model, tok, [it], 512)[0] for it in items]

    sent = []
    real = loglik.score_shared
    monkeypatch.setattr(
        loglik,
        "score_shared",
        lambda m, groups, max_tokens: sent.append(groups) or real(m, groups, max_tokens),
    )
    shared = hhh.score_items(model, tok, items, 512)

    assert [len(conts) for _, conts in sent[0]] == [3, 2]  # A: GOOD, BAD, "No."; B: GOOD, BAD
    for one, both in zip(alone, shared, strict=True):
        assert both["tokens"] == one["tokens"] and both["logp"] == pytest.approx(one["logp"], abs=1e-4)
    assert shared[0]["logp"][0] == shared[1]["logp"][0]  # GOOD after A?, scored once for both items


def test_chunks_never_split_a_conversation() -> None:
    items = [{"id": str(i), "cluster": c} for i, c in enumerate("aaabbcddddde")]
    chunks = hhh.by_conversation(items, 4)
    assert [[it["cluster"] for it in ch] for ch in chunks] == [list("aaabb"), list("cddddd"), ["e"]]


def test_records_scored_another_way_are_kept_aside_and_scored_again(tmp_path: Path, tiny_model_dir) -> None:
    """A base side kept from an evaluation before per-conversation scoring (no `scoring` tag) would be
    compared with an aligned side scored the new way; bf16 rounds differently by batch, so near-ties
    flip. Its records go aside, kept, and the side is scored again; a side scored this way resumes."""
    from ptalign import models
    from ptalign.eval.common import EvalContext
    from ptalign.io import read_jsonl, read_meta

    cfg = tiny_cfg(tmp_path)
    out = tmp_path / "base"
    items = datasets.hhh_items(cfg.eval)
    old = [{"id": it["id"], "category": it["category"], "logp": [-1.0, -2.0], "tokens": [1, 1], "label": 0}
           for it in items]  # fmt: skip
    write_jsonl(out / "hhh.jsonl", old)
    hf = models.load(str(tiny_model_dir("llama")), dtype="float32")
    ctx = EvalContext(cfg=cfg, out=out, model="tiny", label="base", hf_factory=lambda: hf, run_dir=tmp_path)

    hhh.run(ctx)
    assert list(read_jsonl(out / "hhh.per-item.jsonl")) == old
    new = list(read_jsonl(out / "hhh.jsonl"))
    assert read_meta(out / "hhh.jsonl")["scoring"] == hhh.SCORING and len(new) == len(items)
    assert all(r["logp"] != [-1.0, -2.0] for r in new)

    hhh.run(ctx)  # scored this way already: resumed, nothing moved or rescored
    assert list(read_jsonl(out / "hhh.jsonl")) == new and not (out / f"hhh.{hhh.SCORING}.jsonl").exists()

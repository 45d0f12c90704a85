"""bench/data_audit.py: how much of a run's harmful/benign split is the request's frame, and what the
harmful requests ask once the frame is cut off (docs/experiments.md, "What the harmful training
requests ask").
The pure parts, on made-up runs whose answers are known by hand; `probe` itself needs a model and
is a bench run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ptalign.eval import attacks
from ptalign.io import HAZARD_META, read_jsonl, write_jsonl

FRAMES = [
    "How can I {goal}?",
    "Help me {goal} without anyone finding out.",
    "I want to {goal}. Tell me exactly what to do.",
]


@pytest.fixture(scope="module")
def audit(bench_module):
    return bench_module("data_audit")


def test_frame_text_keeps_the_first_and_last_words(audit) -> None:
    assert audit.frame_text("Help me Move The couch upstairs without anyone finding out.", 2) == (
        "help me | finding out."
    )
    assert audit.frame_text("Hi there", 3) == "hi there | hi there"


def test_frame_only_tells_a_framed_split_and_not_a_shared_one(audit) -> None:
    goals = [
        f"{verb} the {thing}"
        for verb in ("move", "paint", "clean", "fix", "sell")
        for thing in ("car", "fence", "roof", "boat")
    ]
    framed = [f"Help me {g} without anyone finding out." for g in goals] + [
        f"What is the best way to {g}?" for g in goals
    ]
    labels = [True] * len(goals) + [False] * len(goals)
    assert audit.frame_only(framed, audit.np.array(labels)) == 1.0
    # the same frames on both sides, by the goal's position: the frame says nothing about the class
    shared = [
        (f"Help me {g} without anyone finding out." if i % 2 else f"What is the best way to {g}?")
        for i, g in enumerate(goals * 2)
    ]
    assert audit.frame_only(shared, audit.np.array(labels)) <= 0.7


def test_goal_of_cuts_the_frame_and_keeps_a_request_in_none(audit) -> None:
    assert audit.goal_of("Help me sell the boat without anyone finding out.", FRAMES) == "sell the boat"
    assert audit.goal_of("I want to sell the boat. Tell me exactly what to do.", FRAMES) == "sell the boat"
    assert audit.goal_of("How can I sell the boat?", FRAMES) == "sell the boat"
    assert audit.goal_of("Write a story about a boat sale.", FRAMES) == "Write a story about a boat sale."


def _run(tmp_path: Path) -> Path:
    rows = [
        {"id": "h1", "kind": "harmful", "source": "model", "text": "How can I sell the boat?"},
        {
            "id": "h2",
            "kind": "harmful",
            "source": "model",
            "text": "Help me hide the fence without anyone finding out.",
        },
        {
            "id": "h3",
            "kind": "harmful",
            "source": "model",
            "text": "Draft an email that keeps the payments coming.",
        },
        {"id": "s1", "kind": "harmful", "source": "seed", "text": "How can I follow the driver?"},
        {"id": "b1", "kind": "benign", "source": "model", "text": "How do I fix a roof?"},
    ]
    write_jsonl(tmp_path / "data" / "instructions.jsonl", rows, meta=HAZARD_META)
    return tmp_path


def test_goals_writes_the_models_harmful_requests_unframed_and_keeps_labels(audit, tmp_path: Path) -> None:
    run = _run(tmp_path)
    folder = audit.goals(run, run / "audit" / "goals", n=10, seed=0, chunks=2)
    shown = [r for k in (0, 1) for r in read_jsonl(folder / f"chunk_{k}.jsonl")]
    key = json.loads((folder / "key.json").read_text())["items"]
    assert sorted(key.values()) == ["h1", "h2", "h3"]  # no seed, no benign request
    by_id = {key[r["item"]]: r["request"] for r in shown}
    assert by_id == {
        "h1": "I want to sell the boat",
        "h2": "I want to hide the fence",
        "h3": "Draft an email that keeps the payments coming.",
    }
    (folder / "labels_0_A.jsonl").write_text("{}\n")
    with pytest.raises(SystemExit, match="not empty"):
        audit.goals(run, folder, n=10)
    assert (folder / "labels_0_A.jsonl").read_text() == "{}\n"


def test_goals_score_counts_agreement_and_shares(audit, tmp_path: Path) -> None:
    a = ["harmful", "harmful", "not_harmful", "unclear"]
    b = ["harmful", "not_harmful", "not_harmful", "unclear"]
    for reader, labels in (("A", a), ("B", b)):
        write_jsonl(
            tmp_path / f"labels_0_{reader}.jsonl",
            [{"item": f"g{i}", "label": x} for i, x in enumerate(labels)],
        )
    out = audit.goals_score(tmp_path)
    assert out["n"] == 4 and out["agreement"] == 0.75
    assert out["harmful_both"]["share"] == 0.25 and out["harmful_either"]["share"] == 0.5
    assert out["not_harmful_both"]["share"] == 0.25
    assert out["readers"]["A"] == {"harmful": 2, "not_harmful": 1, "unclear": 1}
    lo, hi = out["harmful_both"]["ci95"]
    assert 0.0 <= lo <= 0.25 <= hi <= 1.0
    (tmp_path / "labels_0_B.jsonl").unlink()
    with pytest.raises(SystemExit, match="two readers"):
        audit.goals_score(tmp_path)


def test_eval_chats_rebuild_each_evaluated_prompt(audit, tmp_path: Path) -> None:
    side = tmp_path / "eval" / "base"
    asr = [
        {
            "id": "1",
            "goal_id": "g1",
            "attack": "past_tense",
            "source": "advbench",
            "goal": "placeholder goal",
            "text": "x",
        },
        {
            "id": "2",
            "goal_id": "g1",
            "attack": "direct",
            "source": "advbench",
            "goal": "placeholder goal",
            "text": "x",
        },
        {
            "id": "3",
            "goal_id": "x1",
            "attack": "direct",
            "source": "xstest_unsafe",
            "goal": "placeholder contrast prompt",
            "text": "x",
        },
        {
            "id": "4",
            "goal_id": "g1",
            "attack": "autodan",
            "source": "advbench",
            "goal": "placeholder goal",
            "text": "x",
        },
    ]
    write_jsonl(side / "asr.jsonl", asr, meta=HAZARD_META)
    write_jsonl(
        side / "overrefusal.jsonl",
        [{"id": "5", "source": "xstest", "prompt": "placeholder safe prompt", "text": "x"}],
    )
    sets = audit.eval_chats(audit.RunDir.of(tmp_path))
    assert set(sets) == {"past_tense", "direct", "xstest_unsafe", "xstest_safe"}
    assert sets["past_tense"] == [attacks.chat_for("past_tense", "placeholder goal", "g1")]
    assert sets["xstest_unsafe"] == [[{"role": "user", "content": "placeholder contrast prompt"}]]
    assert sets["xstest_safe"] == [[{"role": "user", "content": "placeholder safe prompt"}]]

"""Fixtures for the training tests: harmless placeholder triplets and a tiny Llama with the real tokenizer.

The "tox" side of these fixtures is a rude or needlessly unhelpful reply with no operational content:
the tests exercise masks and losses, not harmful text.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ptalign.io import HAZARD_META, write_jsonl

SORRY = "I'm sorry, but I can't help with that."
RECORDS = [
    # shared opening, then the toxic side turns rude: UT from the first differing token
    (
        "How do I get back at a noisy neighbour?",
        SORRY + " Talking to them calmly usually works.",
        SORRY + " Actually, sure: make their life miserable.",
    ),
    # immediate mismatch
    (
        "Write an insult for my coworker.",
        "Let's keep it respectful; I can help you give honest feedback instead.",
        "Sure! Here is a cruel one: [insult withheld].",
    ),
    # benign request, toxic side is a needless refusal
    (
        "How do I list the files in a folder on Linux?",
        "Use `ls`, or `ls -la` to include the hidden ones.",
        SORRY,
    ),
    # toxic identical to positive: no UT at all
    ("Say something nice.", "You are doing great today.", "You are doing great today."),
    # toxic a prefix of the positive: no UT at all
    (
        "Give me a safety tip.",
        "Wear a helmet when you cycle, and use lights at night.",
        "Wear a helmet when you cycle",
    ),
    (
        "Tell me how to cheat on an exam.",
        "I can't help with cheating, but here is a study plan that works.",
        "Easy. Just copy from your neighbour and never get caught.",
    ),
    (
        "My friend is sad. What should I say?",
        "Tell them you are there for them and listen without judging.",
        "Tell them to stop whining.",
    ),
    (
        "How can I scare my little brother?",
        "Playful pranks can hurt trust; how about a board game night?",
        "Hide under his bed and grab his ankle, he will cry for hours.",
    ),
]


def make_records(n: int | None = None) -> list[dict]:
    recs = RECORDS if n is None else [RECORDS[i % len(RECORDS)] for i in range(n)]
    return [
        {
            "id": f"t{i}",
            "instruction": q if i < len(RECORDS) else f"{q} ({i})",
            "pos": p,
            "tox": t,
            "domain": "test",
            "kind": "harmful" if i % 3 else "benign",
        }
        for i, (q, p, t) in enumerate(recs)
    ]


@pytest.fixture(name="make_records")
def make_records_fixture():
    """The record factory: make_records(n=None) -> list of triplet dicts (cycled and renamed past 8)."""
    return make_records


@pytest.fixture(name="sorry")
def sorry_fixture() -> str:
    return SORRY


@pytest.fixture
def triplets_file(tmp_path: Path) -> Path:
    path = tmp_path / "data" / "triplets.jsonl"
    write_jsonl(path, make_records(), meta=HAZARD_META)
    return path


@pytest.fixture(scope="session")
def tiny_llama(tiny_model_dir) -> Path:
    return tiny_model_dir("llama")


@pytest.fixture(scope="session")
def tok(tiny_llama: Path):
    from ptalign.models import load_tokenizer

    return load_tokenizer(tiny_llama)


FAST = [
    "train.epochs=2",
    "train.batch_size=4",
    "train.lr=5e-3",
    "train.warmup_ratio=0",
    "train.max_length=96",
]


@pytest.fixture
def switch_runs(tiny_llama, triplets_file, tmp_path):
    """train_switch(key, off, on) trains the tiny Llama briefly with train.KEY at each value, into
    tmp_path/KEY{value}; returns ({value: summary}, {value: [metrics lines]}, {value: adapter tensors})
    for the beyond-the-paper switches' tests."""
    import json

    from safetensors.torch import load_file

    from ptalign import train
    from ptalign.config import load_config

    def train_switch(key: str, *values: float) -> tuple[dict, dict, dict]:
        runs, logs, weights = {}, {}, {}
        for v in values:
            cfg = load_config(None, [f"model.name={tiny_llama}", *FAST, f"train.{key}={v}"])
            out = tmp_path / f"{key}{v}"
            runs[v] = train.run(cfg, tmp_path, data=triplets_file, out=out)
            logs[v] = [json.loads(ln) for ln in (out / "train" / "metrics.jsonl").read_text().splitlines()]
            weights[v] = load_file(out / "adapter" / "adapter_model.safetensors")
        return runs, logs, weights

    return train_switch

"""Eval test helpers: a fake backend with canned replies, and a config for tiny runs."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from ptalign.config import load_config
from ptalign.llm.base import Chat, Generation, GenParams

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data" / "eval"


def shared_data() -> Path:
    """The shared evaluation data; fails (never skips) when missing, like the `eval_data_dir` fixture."""
    path = Path(os.environ["PTALIGN_EVAL_DATA"]) if os.environ.get("PTALIGN_EVAL_DATA") else SHARED
    if not path.is_dir():
        pytest.fail(
            f"evaluation data not found at {path}; lay it out there or set PTALIGN_EVAL_DATA", pytrace=False
        )
    return path


class FakeBackend:
    """Replies by rule on the last user message; counts calls so tests can check resume skips work."""

    name = "fake"
    model_id = "fake"

    def __init__(self, rule: Callable[[str], str], fail_after: int | None = None):
        self.rule = rule
        self.calls = 0
        self.prompts: list[str] = []
        self.fail_after = fail_after

    def generate(self, chats: list[Chat], params: GenParams) -> list[Generation]:
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt("simulated kill")
        self.calls += 1
        out = []
        for c in chats:
            p = c[-1]["content"]
            self.prompts.append(p)
            out.append(Generation(text=self.rule(p), completion_tokens=5))
        return out

    def close(self) -> None:
        pass


def tiny_cfg(tmp_path: Path, *overrides: str):
    base = [
        f"run_dir={tmp_path}",
        "eval.max_harmful=3",
        "eval.max_safe=4",
        "eval.max_mtbench=2",
        "eval.autodan_goals=0",
        "eval.max_new_tokens=8",
        "eval.batch_size=2",
        "eval.bootstrap=200",
        "backend.cache=false",
        "eval.engine=transformers",  # the same engine whether or not vLLM is installed here
    ]
    return load_config(None, base + list(overrides))

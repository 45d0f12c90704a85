"""The GPU memory each evaluation engine may take: an engine that another starts after, in the same
process, leaves that one room (eval.common ENGINE_SHARE_*; vLLM's own default fails beside anything)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ptalign import eval as ev
from ptalign.config import RunConfig


@pytest.fixture
def shares(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, float]]:
    """(side, engine share) per evaluated model, and the judge's, without loading anything."""
    seen: list[tuple[str, float]] = []

    def evaluate_model(
        cfg: Any, out: Path, model: str, adapter: Any = None, label: str = "", **kw: Any
    ) -> dict:
        ctx = kw.get("ctx")
        seen.append((label, ctx.engine_share if ctx is not None else kw["engine_share"]))
        return {}

    monkeypatch.setattr(ev, "evaluate_model", evaluate_model)
    monkeypatch.setattr(ev.EvalContext, "release_weights", lambda self: None)
    return seen


def test_the_base_engine_leaves_the_aligned_one_room(tmp_path: Path, shares) -> None:
    ev.evaluate(RunConfig(run_dir=str(tmp_path)), tmp_path / "eval", "m", "adapter", baseline="m")
    assert shares == [("base", ev.ENGINE_SHARE_FOLLOWED), ("aligned", ev.ENGINE_SHARE_LAST)]


def test_an_aligned_side_leaves_room_for_the_judge_started_after_it(tmp_path: Path, shares) -> None:
    """A sweep's point: its base side was evaluated before; the base model's engine, the judge of
    MT-Bench's answers, starts only once the aligned side's engine is up."""
    base = tmp_path / "base"
    base.mkdir()
    ev.evaluate(RunConfig(run_dir=str(tmp_path)), tmp_path / "eval", "m", "adapter", base_eval=base)
    assert shares == [("aligned", ev.ENGINE_SHARE_FOLLOWED)]
    assert ev.ENGINE_SHARE_FOLLOWED < ev.ENGINE_SHARE_LAST


def test_one_model_alone_takes_the_last_share(tmp_path: Path, shares) -> None:
    ev.evaluate(RunConfig(run_dir=str(tmp_path)), tmp_path / "eval", "m")
    assert shares == [("base", ev.ENGINE_SHARE_LAST)]

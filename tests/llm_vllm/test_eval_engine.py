"""eval.engine=vllm: base and aligned generate through vLLM on the very weights HHH scores, so a
zero-initialised adapter gives the base model's bytes (as with eval.engine=transformers, tests/eval/
test_engine.py), and the scratch weights vLLM loads are gone afterwards."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ptalign.config import load_config
from ptalign.errors import UserError
from ptalign.eval.common import engine_kind


@pytest.fixture
def vllm_installed() -> None:
    """Listed before zero_adapter, so a machine without vLLM skips before building the adapter."""
    pytest.importorskip("vllm", reason="vLLM not installed: run scripts/install_vllm.sh and use its python")


def test_vllm_engine_zero_adapter_gives_byte_identical_replies(
    vllm_installed: None, tmp_path: Path, zero_adapter: Path, asr_replies
) -> None:
    os.environ.setdefault("PTALIGN_VLLM_ENGINE_ARGS", '{"enforce_eager": true}')
    cfg = load_config(
        None,
        [
            f"run_dir={tmp_path}",
            "eval.max_harmful=3",
            "eval.attacks=direct,few_shot,format_injection",
            "eval.engine=vllm",
            "backend.n_ctx=2048",
            "backend.cache=false",
        ],
    )
    base, be = asr_replies(cfg, tmp_path / "base", None)
    aligned, ae = asr_replies(cfg, tmp_path / "aligned", str(zero_adapter))
    assert be == ae == "vllm"
    assert len(base) == 9 and any(t.strip() for t in base)
    assert aligned == base  # byte for byte
    assert not list(tmp_path.glob("*/.vllm-weights-*"))  # the scratch weights are removed on close


def test_engine_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    from ptalign.llm import vllm_backend

    monkeypatch.setattr(vllm_backend, "vllm_available", lambda: False)
    assert engine_kind("fastest") == "transformers" and engine_kind("auto") is None
    with pytest.raises(UserError, match="eval.engine=vllm: vLLM is not installed"):
        engine_kind("vllm")
    monkeypatch.setattr(vllm_backend, "vllm_available", lambda: True)
    assert engine_kind("fastest") == engine_kind("vllm") == "vllm"

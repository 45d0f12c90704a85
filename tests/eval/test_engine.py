"""One engine for base and aligned: with eval.engine=transformers (the default `fastest` where vLLM is
not installed; tests/llm_vllm/test_eval_engine.py checks vLLM the same way) a zero-initialised
adapter must give byte-identical replies to the base model's, so every base-vs-aligned delta is the
adapter's alone. eval.engine=auto keeps the old split (base on llama.cpp) and the summary says so."""

from __future__ import annotations

from pathlib import Path

import pytest
from eval_helpers import tiny_cfg

from ptalign.io import read_jsonl

pytestmark = pytest.mark.slow


def test_zero_adapter_gives_byte_identical_replies(tmp_path: Path, zero_adapter: Path, asr_replies) -> None:
    cfg = tiny_cfg(
        tmp_path,
        "eval.max_harmful=3",
        "eval.attacks=direct,few_shot,format_injection",
        "eval.batch_size=4",
        "eval.engine=transformers",
    )
    base, be = asr_replies(cfg, tmp_path / "base", None)
    aligned, ae = asr_replies(cfg, tmp_path / "aligned", str(zero_adapter))
    assert be == ae == "transformers"
    assert len(base) == 9 and any(t.strip() for t in base)
    assert aligned == base  # byte for byte


def test_auto_engine_splits_and_is_recorded(tmp_path: Path, zero_adapter: Path, asr_replies) -> None:
    """The old mix (llama.cpp's Q4_1 for base, transformers' fp32 for aligned) is still selectable, and
    the engines land in what each side records, so the report can warn."""
    cfg = tiny_cfg(tmp_path, "eval.max_harmful=2", "eval.attacks=direct", "eval.engine=auto")
    _, be = asr_replies(cfg, tmp_path / "base", None)
    _, ae = asr_replies(cfg, tmp_path / "aligned", str(zero_adapter))
    assert (be, ae) == ("llamacpp", "transformers")
    assert len(list(read_jsonl(tmp_path / "aligned" / "asr.jsonl"))) == 2

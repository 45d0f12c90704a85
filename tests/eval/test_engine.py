"""One engine for base and aligned: with eval.engine=transformers (the default) a zero-initialised
adapter must give byte-identical replies to the base model's, so every base-vs-aligned delta is the
adapter's alone. eval.engine=auto keeps the old split (base on llama.cpp) and the summary says so."""

from __future__ import annotations

from pathlib import Path

import pytest
from eval_helpers import tiny_cfg

from ptalign import models
from ptalign.eval import asr
from ptalign.eval.common import EvalContext, generate_records
from ptalign.io import read_jsonl
from ptalign.llm.base import GenParams

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def zero_adapter(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LoRA adapter on the embedded model as peft initialises it: B = 0, so it changes nothing."""
    from peft import LoraConfig, get_peft_model

    model, _ = models.load("embedded")
    peft_model = get_peft_model(model, LoraConfig(r=8, target_modules="all-linear", task_type="CAUSAL_LM"))
    b = [p for n, p in peft_model.named_parameters() if "lora_B" in n]
    assert b and all(float(p.abs().sum()) == 0.0 for p in b)
    out = tmp_path_factory.mktemp("zero") / "adapter"
    peft_model.save_pretrained(out)
    return out


def _replies(cfg, out: Path, adapter: str | None) -> tuple[list[str], str | None]:
    ctx = EvalContext(cfg=cfg, out=out, model="embedded", adapter=adapter, label="x")
    items = asr.wanted(cfg.eval)
    try:
        recs = generate_records(
            ctx,
            "asr",
            items,
            lambda it: asr.attacks.chat_for(it["attack"], it["goal"], it["goal_id"]),
            GenParams(max_new_tokens=24, temperature=0.0),
            asr._fields,
        )
    finally:
        engine = ctx.engine_name
        ctx.close()
    return [r["text"] for r in recs], engine


def test_zero_adapter_gives_byte_identical_replies(tmp_path: Path, zero_adapter: Path) -> None:
    cfg = tiny_cfg(
        tmp_path, "eval.max_harmful=3", "eval.attacks=direct,few_shot,format_injection", "eval.batch_size=4"
    )
    base, be = _replies(cfg, tmp_path / "base", None)
    aligned, ae = _replies(cfg, tmp_path / "aligned", str(zero_adapter))
    assert be == ae == "transformers"
    assert len(base) == 9 and any(t.strip() for t in base)
    assert aligned == base  # byte for byte


def test_auto_engine_splits_and_is_recorded(tmp_path: Path, zero_adapter: Path) -> None:
    """The old mix (llama.cpp's Q4_1 for base, transformers' fp32 for aligned) is still selectable, and
    the engines land in what each side records, so the report can warn."""
    cfg = tiny_cfg(tmp_path, "eval.max_harmful=2", "eval.attacks=direct", "eval.engine=auto")
    _, be = _replies(cfg, tmp_path / "base", None)
    _, ae = _replies(cfg, tmp_path / "aligned", str(zero_adapter))
    assert (be, ae) == ("llamacpp", "transformers")
    assert len(list(read_jsonl(tmp_path / "aligned" / "asr.jsonl"))) == 2

"""The eval stage end to end on the real embedded model, tiny settings: base through llama.cpp,
aligned through transformers with a LoRA adapter merged in memory, the base model as judge."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ptalign import eval as ev
from ptalign.config import load_config
from ptalign.io import read_jsonl, read_meta


@pytest.mark.slow
def test_eval_run_base_and_aligned(tmp_path: Path, embedded_hf_dir: Path) -> None:
    import torch
    from peft import LoraConfig, get_peft_model

    from ptalign import models

    # an adapter whose LoRA B is zero (peft's init): the merged model equals the base model
    base, _ = models.load("embedded")
    peft_model = get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    peft_model.save_pretrained(tmp_path / "adapter")
    del base, peft_model
    torch.manual_seed(0)

    cfg = load_config(
        None,
        [
            f"run_dir={tmp_path}",
            "eval.evals=hhh,asr,overrefusal,helpful",
            "eval.max_harmful=1",
            "eval.max_safe=2",
            "eval.max_mtbench=1",
            "eval.max_hhh=3",
            "eval.attacks=direct,roleplay,autodan",
            "eval.autodan_goals=1",
            "eval.autodan_population=2",
            "eval.autodan_steps=1",
            "eval.max_new_tokens=8",
            "eval.helpful_max_new_tokens=8",
            "eval.judge_max=2",
            "eval.bootstrap=50",
            "backend.cache=false",
        ],
    )
    res = ev.run(cfg, tmp_path)

    for side in ("base", "aligned"):
        d = tmp_path / "eval" / side
        asr = list(read_jsonl(d / "asr.jsonl"))
        assert sorted(r["attack"] for r in asr) == ["autodan", "direct", "roleplay"]
        assert read_meta(d / "asr.jsonl")["hazardous"] is True
        assert len(list(read_jsonl(d / "asr_judge.jsonl"))) == 2
        assert len(list(read_jsonl(d / "overrefusal.jsonl"))) == 2
        ad = list(read_jsonl(d / "autodan.jsonl"))
        assert len(ad) == 1 and len(ad[0]["history"]) == 2 and ad[0]["history"][1] >= ad[0]["history"][0]
        s = json.loads((d / "summary.json").read_text())
        assert s["eval/hhh_n"] == 3 and 0.0 <= s["eval/asr"] <= 1.0
        assert "base model judging" in s["meta"]["judge"]
    assert res["aligned"]["meta"]["adapter"] == str(tmp_path / "adapter")
    # zero LoRA → identical weights → identical HHH log-likelihoods (the merge path changes nothing else)
    lb = {r["id"]: r["logp"] for r in read_jsonl(tmp_path / "eval" / "base" / "hhh.jsonl")}
    la = {r["id"]: r["logp"] for r in read_jsonl(tmp_path / "eval" / "aligned" / "hhh.jsonl")}
    assert lb.keys() == la.keys() and all(lb[k] == pytest.approx(la[k], abs=1e-3) for k in lb)
    comp = json.loads((tmp_path / "eval" / "comparison.json").read_text())
    assert comp["rows"]["eval/hhh"]["delta"] == 0.0
    assert {"eval/asr", "eval/overrefusal", "eval/mtbench_score"} <= comp["rows"].keys()

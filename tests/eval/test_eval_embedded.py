"""The eval stage end to end on the real embedded model, tiny settings: base and aligned (a zero LoRA
adapter merged in memory) through the one transformers engine, judged by the embedded judge and the
string judges, the base model grading MT-Bench."""

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
            "eval.attacks=direct,roleplay,past_tense,autodan",
            "eval.autodan_goals=1",
            "eval.autodan_population=2",
            "eval.autodan_steps=1",
            "eval.max_new_tokens=8",
            "eval.helpful_max_new_tokens=8",
            "eval.bootstrap=50",
            "backend.cache=false",
        ],
    )
    res = ev.run(cfg, tmp_path)

    sums = {}
    for side in ("base", "aligned"):
        d = tmp_path / "eval" / side
        asr = list(read_jsonl(d / "asr.jsonl"))
        assert sorted(r["attack"] for r in asr) == ["autodan", "direct", "past_tense", "roleplay"]
        assert read_meta(d / "asr.jsonl")["hazardous"] is True
        assert len(list(read_jsonl(d / "overrefusal.jsonl"))) == 2
        ad = list(read_jsonl(d / "autodan.jsonl"))
        assert len(ad) == 1 and len(ad[0]["history"]) == 2 and ad[0]["history"][1] >= ad[0]["history"][0]
        s = json.loads((d / "summary.json").read_text())
        sums[side] = s
        assert s["eval/hhh_n"] == 3 and s["meta"]["engine"] == "transformers"
        assert s["meta"]["judge"] == "minilm_smol" and s["meta"]["gate_judge"] == "keyword"
        # every reply judged by each judge once; the headline is the primary judge's compliance share
        verdicts = list(read_jsonl(d / "asr_verdicts.jsonl"))
        assert sorted(v["judge"] for v in verdicts) == sorted(["minilm_smol", "keyword", "xstest"] * 4)
        primary = {v["rec"]: v["verdict"] for v in verdicts if v["judge"] == "minilm_smol"}
        templ = [r for r in asr if r["attack"] != "autodan"]
        assert s["eval/asr"] == pytest.approx(sum(primary[r["id"]] == "compliance" for r in templ) / 3)
        assert s["eval/non_answer"] == pytest.approx(sum(primary[r["id"]] == "non_answer" for r in templ) / 3)
    assert res["aligned"]["meta"]["adapter"] == str(tmp_path / "adapter")
    # zero LoRA, one engine → the same replies, verdicts and metrics on both sides
    for name in ("asr.jsonl", "overrefusal.jsonl", "helpful.jsonl"):
        tb = {r["id"]: r["text"] for r in read_jsonl(tmp_path / "eval" / "base" / name)}
        ta = {r["id"]: r["text"] for r in read_jsonl(tmp_path / "eval" / "aligned" / name)}
        assert tb == ta, name
    lb = {r["id"]: r["logp"] for r in read_jsonl(tmp_path / "eval" / "base" / "hhh.jsonl")}
    la = {r["id"]: r["logp"] for r in read_jsonl(tmp_path / "eval" / "aligned" / "hhh.jsonl")}
    assert lb.keys() == la.keys() and all(lb[k] == pytest.approx(la[k], abs=1e-3) for k in lb)
    comp = json.loads((tmp_path / "eval" / "comparison.json").read_text())
    assert {"eval/asr", "eval/asr_held_out", "eval/overrefusal", "eval/mtbench_score"} <= comp["rows"].keys()
    for k, row in comp["rows"].items():
        if isinstance(row["delta"], float) and k != "eval/autodan_fitness_gain":
            assert row["delta"] == 0.0, k

"""A full fine-tune (train.lora_r=0) saves the whole tuned model in RUN_DIR/adapter. The eval stage
must evaluate that model against the base, on the same engine, not fall back to the base alone."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from eval_helpers import tiny_cfg
from safetensors.torch import load_file, save_file

from ptalign import eval as ev
from ptalign.io import read_jsonl
from ptalign.rundir import RunDir


def test_eval_stage_compares_a_full_fine_tune_with_its_base(tmp_path: Path, tiny_model_dir) -> None:
    base = tiny_model_dir("llama")
    run = RunDir(tmp_path / "run")
    shutil.copytree(base, run.adapter)  # the "tuned" model: the base with its weights moved
    weights = run.adapter / "model.safetensors"
    tensors = {k: v + 0.05 * torch.randn_like(v) for k, v in load_file(weights).items()}
    save_file(tensors, weights, metadata={"format": "pt"})
    cfg = tiny_cfg(
        tmp_path,
        f"model.name={base}",
        "eval.evals=asr",
        "eval.attacks=direct",
        "eval.judge=keyword",
        "eval.judges_extra=",
    )

    ev.run(cfg, run)

    metas = {s: json.loads((run.eval / s / "summary.json").read_text())["meta"] for s in ("base", "aligned")}
    assert metas["base"]["model"] == str(base) and metas["base"]["adapter"] is None
    assert metas["aligned"]["model"] == str(run.adapter) and metas["aligned"]["adapter"] is None
    assert metas["base"]["engine"] == metas["aligned"]["engine"] == "transformers"
    assert (run.eval / "comparison.json").is_file()
    replies = {s: [r["text"] for r in read_jsonl(run.eval / s / "asr.jsonl")] for s in ("base", "aligned")}
    assert len(replies["base"]) == 3 and replies["aligned"] != replies["base"]  # the tuned weights answered

"""DPO baseline on the same triplets: TRL's DPOTrainer, chosen = pos, rejected = tox, LoRA through
peft, reference = the base model with the adapter disabled (TRL does this when given a peft_config).

Reads: triplets JSONL (id, instruction, pos, tox) and the base model.
Writes: OUT/adapter/ (PEFT adapter, tokenizer, README.md, ptalign_train.json), OUT/train/metrics.jsonl
        (train/loss and train/dpo_* keys), OUT/train/checkpoints/, OUT/train/summary.json.

Needs the optional extra `pip install ptalign[baselines]` (trl).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from ptalign.errors import UserError
from ptalign.rundir import RunDir
from ptalign.train.data import load_records
from ptalign.train.setup import (
    check_fresh,
    check_identity,
    finish,
    last_metrics,
    load_base,
    lora_config,
    resume_step,
    set_threads,
    tensorboard_callbacks,
    training_kwargs,
)

log = logging.getLogger(__name__)


class _DpoMetrics(TrainerCallback):
    """TRL's log keys (loss, rewards/margins, logps/chosen, ...) → train/loss, train/dpo_rewards_margins, ..."""

    def __init__(self, path: Path, resume_step: int | None):
        self.path = Path(path)
        self.resume_step = resume_step

    def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        from ptalign.train.trainer import MetricsJsonl

        MetricsJsonl(self.path, self.resume_step).on_train_begin(args, state, control)

    def on_log(
        self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any
    ) -> None:
        if not state.is_world_process_zero or not logs or "loss" not in logs:
            return
        rec: dict[str, Any] = {
            "step": state.global_step,
            "epoch": round(state.epoch or 0.0, 4),
            "lr": logs.get("learning_rate"),
        }
        rec["train/loss"] = logs["loss"]
        for k, v in logs.items():
            if "/" in k and isinstance(v, (int, float)):
                rec["train/dpo_" + k.replace("/", "_")] = v
        if "logps/chosen" in logs:
            rec["train/pos_logprob"] = logs["logps/chosen"]  # summed over the response, not per token
            rec["train/tox_logprob"] = logs["logps/rejected"]
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(rec) + "\n")


def dpo_dataset(records: list[dict[str, Any]]) -> Any:
    """Triplets → TRL's conversational preference format (the chat template is applied by TRL)."""
    from datasets import Dataset

    return Dataset.from_list(
        [
            {
                "prompt": [{"role": "user", "content": r["instruction"]}],
                "chosen": [{"role": "assistant", "content": r["pos"]}],
                "rejected": [{"role": "assistant", "content": r["tox"]}],
            }
            for r in records
        ]
    )


def dpo_config(tcfg: Any, out: RunDir | Path) -> Any:
    """DPOConfig with the same optimisation settings as the ptalign trainer (training_kwargs)."""
    from trl import DPOConfig

    kw = training_kwargs(tcfg, out)
    kw["train_sampling_strategy"] = "random"  # TRL's tokenised pairs carry no input_ids for length grouping
    kw["torch_compile"] = tcfg.compile  # TRL wraps the model itself, so transformers compiles all of it
    return DPOConfig(**kw, beta=tcfg.dpo_beta, max_length=tcfg.max_length)


def run_dpo(cfg: Any, data: Path, out: RunDir, resume: bool) -> dict[str, Any]:
    try:
        from trl import DPOTrainer
    except ImportError:
        raise UserError("train.method=dpo needs TRL; run: pip install 'ptalign[baselines]'") from None

    tcfg = cfg.train  # lora_r > 0 (config: the reference is the adapter switched off)
    last = check_fresh(out, resume)
    check_identity(cfg, data, out, last)
    set_threads()
    records, _ = load_records(data, tcfg.columns)  # refuses an empty file with one line
    model, tok = load_base(cfg)
    step0 = resume_step(last)
    trainer = DPOTrainer(
        model=model,
        args=dpo_config(tcfg, out),
        train_dataset=dpo_dataset(records),
        processing_class=tok,
        peft_config=lora_config(tcfg),
        callbacks=[_DpoMetrics(out.metrics, step0), *tensorboard_callbacks(tcfg, out)],
    )
    t1 = time.time()
    result = trainer.train(resume_from_checkpoint=str(last) if last else None)
    kinds: dict[str, int] = {}
    for r in records:
        kinds[str(r.get("kind", "?"))] = kinds.get(str(r.get("kind", "?")), 0) + 1
    summary: dict[str, Any] = {
        "method": "dpo",
        "steps": trainer.state.global_step,
        "epochs": tcfg.epochs,
        "beta": tcfg.dpo_beta,
        "data": str(data),
        "data_stats": {"triplets": len(records), "kinds": kinds},
        "train_seconds": round(time.time() - t1, 1),
        "resumed_from_step": step0,
        "final": last_metrics(out.metrics),
        "train_loss": result.training_loss,
    }
    if trainer.is_world_process_zero():
        finish(cfg, trainer.model, tok, out, summary)
    return summary

"""The ptalign recipe: MLE on the positive + λ·UT on the toxic past the first mismatch (loss.py, mask.py),
batched by collate.py and trained by trainer.DualTrainer on what setup.py builds.

Reads: the records (train/data.py), the base model. Writes: OUT/train/metrics.jsonl, and through
setup.finish the adapter and OUT/train/summary.json.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from ptalign.rundir import RunDir
from ptalign.train.setup import (
    bf16_on,
    check_fresh,
    check_identity,
    compile_layers,
    epoch_means,
    finish,
    last_metrics,
    load_base,
    resume_step,
    set_threads,
    tensorboard_callbacks,
    training_kwargs,
    wrap_lora,
)

log = logging.getLogger(__name__)


def layout_for(config: Any, tcfg: Any) -> tuple[bool, bool]:
    """(prefix sharing, chunked loss) as asked, unless the architecture would make them differ from
    the plain path: a custom 4-D mask replaces sliding-window masks, and the chunked head skips
    logit soft-capping / scaling that some models apply after lm_head."""
    packed, chunked = tcfg.prefix_sharing, tcfg.chunked_loss
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    layer_types = getattr(text, "layer_types", None) or []
    if packed and (
        any(t != "full_attention" for t in layer_types) or getattr(text, "use_sliding_window", False)
    ):
        log.warning(
            "prefix sharing needs full attention in every layer; %s has other layer types, using two rows per triplet",
            text.model_type,
        )
        packed = False
    if chunked and any(
        getattr(text, k, None) not in (None, 1.0)
        for k in ("final_logit_softcapping", "logit_scale", "logits_scaling")
    ):
        log.warning("%s post-processes its logits; computing the loss from full logits", text.model_type)
        chunked = False
    return packed, chunked


class Examples:
    """Map-style dataset over tokenised triplets (Trainer's sampler shards it per process)."""

    def __init__(self, examples: list[Any]):
        self.examples = examples

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> Any:
        return self.examples[i]


def run_ptalign(cfg: Any, data: Path, out: RunDir, resume: bool) -> dict[str, Any]:
    """Train on the triplets into OUT/adapter + OUT/train; returns the summary."""
    import torch

    from ptalign import models
    from ptalign.train.collate import GPU_PAD_MULTIPLE, TripletCollator, encode_all
    from ptalign.train.data import load_records
    from ptalign.train.refusal_feature import RefusalFeature
    from ptalign.train.trainer import DualTrainer, MetricsJsonl

    tcfg = cfg.train
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    last = check_fresh(out, resume)
    check_identity(cfg, data, out, last)
    threads = set_threads()
    t0 = time.time()
    records, data_info = load_records(data, tcfg.columns)  # a bad --data fails before the model loads
    model, tok = load_base(cfg)
    examples, stats = encode_all(
        tok,
        records,
        tcfg.max_length,
        tcfg.fine_grained,
        str(data),
        tcfg.recovery,
        tcfg.seed,
        tcfg.ut_specific,
        tcfg.ut_benign_tokens,
        tcfg.ut_everyday,
    )
    stats["data_format"], stats["rows_skipped"] = data_info["format"], data_info["skipped"]
    from transformers import TrainingArguments, set_seed

    set_seed(tcfg.seed)  # before peft draws the LoRA A init: the same config gives the same adapter
    model = wrap_lora(model, tcfg)
    if tcfg.compile:
        compile_layers(model)

    args = TrainingArguments(**training_kwargs(tcfg, out))
    packed, chunked = layout_for(model.config, tcfg)
    step0 = resume_step(last)
    feature = None
    if tcfg.refat > 0:
        feature = RefusalFeature(
            [e.prompt for e in examples if not e.benign], [e.prompt for e in examples if e.benign], tcfg.seed
        )
    trainer = DualTrainer(
        model=model,
        args=args,
        train_dataset=Examples(examples),
        data_collator=TripletCollator(
            tok.pad_token_id,
            packed=packed,
            pad_multiple=GPU_PAD_MULTIPLE if args.device.type == "cuda" else 1,
        ),
        callbacks=[
            MetricsJsonl(out.metrics, step0),
            *tensorboard_callbacks(tcfg, out),
        ],
        lam=tcfg.lam,
        lam_benign=tcfg.lam_benign,
        kl_benign=tcfg.kl_benign,
        reroute=tcfg.reroute,
        reroute_retain=tcfg.reroute_retain,
        refat=tcfg.refat,
        refusal_feature=feature,
        lat=tcfg.lat,
        chunked=chunked,
        # the head's chunks only on a GPU: on a CPU its matmuls dominate and inductor's version measured
        # no faster (tests/train/test_loss.py checks it against eager on the CPU all the same)
        compiled_head=tcfg.compile and torch.cuda.is_available(),
    )
    t1 = time.time()
    result = trainer.train(resume_from_checkpoint=str(last) if last else None)
    train_s = time.time() - t1
    summary: dict[str, Any] = {
        "method": "ptalign",
        "steps": trainer.state.global_step,
        "epochs": tcfg.epochs,
        "lam": tcfg.lam,
        "lam_benign": tcfg.lam_benign,
        "kl_benign": tcfg.kl_benign,
        "reroute": tcfg.reroute,
        "reroute_retain": tcfg.reroute_retain,
        "recovery": tcfg.recovery,
        "ut_specific": tcfg.ut_specific,
        "ut_benign_tokens": tcfg.ut_benign_tokens,
        "ut_everyday": tcfg.ut_everyday,
        "refat": tcfg.refat,
        "lat": tcfg.lat,
        "fine_grained": tcfg.fine_grained,
        "data": str(data),
        "data_format": stats["data_format"],
        "data_stats": stats,
        # the manifest keeps these scalars: which template made the targets, and the end trained
        "chat_template": models.template_source(tok),
        "end_of_turn": stats["end_of_turn"],
        "train_seconds": round(train_s, 1),
        "tokens_per_s": round(trainer.tokens_seen / train_s, 1) if train_s > 0 else None,
        "threads": threads,
        "bf16": bf16_on(tcfg),  # train.bf16 resolved (auto: where bf16 matmuls are native)
        "prefix_sharing": packed,
        "chunked_loss": chunked,
        "resumed_from_step": step0,
        "final": last_metrics(out.metrics),
        "epoch_means": epoch_means(out.metrics),
        "train_loss": result.training_loss,
    }
    if trainer.is_world_process_zero():
        finish(cfg, trainer.model, tok, out, summary)
    summary["seconds"] = round(time.time() - t0, 1)
    return summary

"""Fine-grained dual tuning: LoRA (or full) fine-tuning on MLE(pos) + λ·UT(tox past the first mismatch).

Reads: triplets JSONL (default RUN_DIR/data/triplets.jsonl; id, instruction, pos, tox per record) and
       the base model `cfg.model.name` (through ptalign.models).
Writes: OUT/adapter/ (PEFT adapter as safetensors, tokenizer, README.md model card,
        ptalign_train.json), OUT/train/metrics.jsonl, OUT/train/checkpoints/checkpoint-N/,
        OUT/train/summary.json, OUT/train/tb/ when train.tensorboard is set. OUT defaults to RUN_DIR.

The loss math is in loss.py and mask.py, batching in collate.py, the Trainer subclass in
trainer.py; this module wires config → peft → transformers.TrainingArguments, so that
`accelerate launch` (configs/accelerate/) gives DDP, FSDP or DeepSpeed without code changes.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

from ptalign.errors import UserError
from ptalign.io import atomic_write_json, read_jsonl

log = logging.getLogger(__name__)

TRAIN_INFO = "ptalign_train.json"  # beside the adapter: base model spec, config, data stats, steps


def _paths(run_dir: Path, data: Path | None, out: Path | None) -> tuple[Path, Path]:
    data = Path(data) if data else Path(run_dir) / "data" / "triplets.jsonl"
    if not data.exists():
        raise UserError(
            f"training data {data} not found; run `ptalign synth` first or pass --data FILE_OR_DIR"
        )
    return data, Path(out) if out else Path(run_dir)


def _last_checkpoint(ckpt_dir: Path) -> Path | None:
    from transformers.trainer_utils import get_last_checkpoint

    if not ckpt_dir.is_dir():
        return None
    last = get_last_checkpoint(str(ckpt_dir))
    return Path(last) if last else None


def _check_fresh(out: Path, ckpt_dir: Path, resume: bool) -> Path | None:
    """The checkpoint to resume from; refuses to overwrite an earlier run unless resuming."""
    last = _last_checkpoint(ckpt_dir)
    if last is not None and not resume:
        raise UserError(
            f"{ckpt_dir} holds checkpoints of an earlier run; pass --resume to continue it or delete {out / 'train'} to start over"
        )
    if last is None and not resume and (out / "adapter" / "adapter_config.json").exists():
        raise UserError(
            f"{out / 'adapter'} already exists; pass --resume, another --out, or delete it to retrain"
        )
    return last


def set_threads() -> int:
    """Use every core this process may run on (torch defaults to physical cores, which cgroups can over-count);
    an explicit OMP_NUM_THREADS wins (on a machine shared with other jobs, fewer threads avoid spin-waiting)."""
    import torch

    if os.environ.get("OMP_NUM_THREADS"):
        return torch.get_num_threads()

    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # DDP on CPU: share the cores
        n = max(1, n // int(os.environ["WORLD_SIZE"]))
    if not torch.cuda.is_available():
        torch.set_num_threads(n)
    return n


def load_base(cfg: Any) -> tuple[Any, Any]:
    """(model in train mode, tokenizer with a pad id) for cfg.model."""
    from ptalign import models

    model, tok = models.load(
        cfg.model.name, dtype=cfg.model.dtype, cache_dir=cfg.model.cache_dir or None, device="cpu"
    )
    model.train()
    model.config.use_cache = False
    return model, tok


def wrap_lora(model: Any, tcfg: Any) -> Any:
    """peft LoRA on tcfg.lora_targets (default all linear layers); lora_r = 0 keeps full fine-tuning."""
    if tcfg.lora_r == 0:
        return model
    from peft import LoraConfig, get_peft_model

    targets: Any = tcfg.lora_targets
    if targets != "all-linear":
        targets = [t.strip() for t in targets.split(",") if t.strip()]
    lcfg = LoraConfig(
        r=tcfg.lora_r,
        lora_alpha=tcfg.lora_alpha,
        lora_dropout=tcfg.lora_dropout,
        target_modules=targets,
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, lcfg)
    if tcfg.bf16:
        skip_adapter_input_casts(model)
    return model


def skip_adapter_input_casts(model: Any) -> int:
    """Stop peft from casting each LoRA layer's input to the adapter's fp32 (for bf16 autocast only).

    Under autocast the LoRA matmuls run in bf16 whatever dtype their input has, so peft's cast of the
    bf16 activations to fp32, which autocast then casts back, only copies them: twice per adapted layer
    and step, the same values either way (tested bit for bit). Without autocast a bf16 input would meet
    fp32 weights, so call this only when training runs under bf16 autocast. Returns the layers changed.
    """
    from peft.tuners.tuners_utils import BaseTunerLayer

    layers = [m for m in model.modules() if isinstance(m, BaseTunerLayer)]
    for m in layers:
        m.cast_input_dtype_enabled = False
    return len(layers)


def compile_layers(model: Any) -> int:
    """torch.compile every decoder layer in place (as torchtune does); returns how many.

    Per layer rather than the whole model: the layers share one graph (parameters are inputs), the
    chunked loss's hook on the decoder and peft's save/load keys stay as they are (a compiled whole
    model renames them `_orig_mod.*`), and the output head is left to the chunked loss (which, on a
    GPU, compiles its per-chunk softmax work itself: `loss.frozen_head_logprobs(compiled=True)`).
    dynamic=True compiles once for every batch length instead of again at the second length seen.
    Fusing the LoRA branch's casts, scaling and adds is what it buys: +10 % tokens/s under bf16
    autocast on a Zen 5 CPU (bench/train_step.py --bf16 --compile, embedded model), +5 % in fp32
    where the matmuls dominate. The first step pays the compile (about 25 s there).
    """
    from transformers.modeling_layers import GradientCheckpointingLayer

    layers = [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]
    if not layers:
        raise UserError(
            f"train.compile=true: found no decoder layers in {type(model).__name__}; set train.compile=false"
        )
    for m in layers:
        m.compile(dynamic=True)
    return len(layers)


def training_kwargs(tcfg: Any, out: Path) -> dict[str, Any]:
    """TrainingArguments keywords from TrainConfig (shared by the ptalign and DPO trainers)."""
    import torch

    kw: dict[str, Any] = dict(
        output_dir=str(out / "train" / "checkpoints"),
        per_device_train_batch_size=tcfg.batch_size,
        gradient_accumulation_steps=tcfg.grad_accum,
        learning_rate=tcfg.lr,
        num_train_epochs=tcfg.epochs,
        warmup_steps=tcfg.warmup_ratio,  # a float in [0, 1) is a share of the total steps
        weight_decay=tcfg.weight_decay,
        lr_scheduler_type="linear",
        logging_steps=tcfg.logging_steps,
        save_strategy="steps" if tcfg.save_steps else "epoch",
        save_total_limit=2,
        seed=tcfg.seed,
        data_seed=tcfg.seed,
        bf16=tcfg.bf16,
        report_to=[],  # TensorBoard, when asked, is added as an explicit callback writing to OUT/train/tb
        train_sampling_strategy="group_by_length" if tcfg.group_by_length else "random",
        remove_unused_columns=False,
        dataloader_num_workers=0,
        disable_tqdm=not os.isatty(2),
        ddp_find_unused_parameters=False,
        # the filter reads every micro-batch's loss on the host (a GPU sync per step, so the host cannot
        # collate the next batch while the GPU runs this one); a NaN loss then shows in the log as NaN
        logging_nan_inf_filter=False,
    )
    # transformers 5.2x renamed gradient_checkpointing* to activation_checkpointing* (the old names
    # warn on every run); older releases know only the old ones
    ckpt = "activation_checkpointing" if _has_arg("activation_checkpointing") else "gradient_checkpointing"
    kw[ckpt] = tcfg.gradient_checkpointing
    kw[ckpt + "_kwargs"] = {"use_reentrant": False} if tcfg.gradient_checkpointing else None
    if tcfg.save_steps:
        kw["save_steps"] = tcfg.save_steps
    if not torch.cuda.is_available():
        kw["use_cpu"] = True
    if tcfg.liger:
        check_liger(tcfg)
        kw["use_liger_kernel"] = True  # the Trainer patches the base model's modules with Liger's
    return kw


def _has_arg(name: str) -> bool:
    """Whether this transformers' TrainingArguments has the field `name`."""
    import dataclasses

    from transformers import TrainingArguments

    return name in {f.name for f in dataclasses.fields(TrainingArguments)}


def check_liger(tcfg: Any) -> None:
    """train.liger needs a CUDA GPU and the liger-kernel package: say so in one line, before loading."""
    if not tcfg.liger:
        return
    import importlib.util

    import torch

    if not torch.cuda.is_available():
        raise UserError(
            "train.liger=true needs a CUDA GPU (Liger's kernels are Triton); set train.liger=false"
        )
    if importlib.util.find_spec("liger_kernel") is None:
        raise UserError("train.liger=true needs the liger-kernel package; run: pip install liger-kernel")


def tensorboard_callbacks(tcfg: Any, out: Path) -> list[Any]:
    if not tcfg.tensorboard:
        return []
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise UserError(
            "train.tensorboard=true needs the tensorboard package; run: pip install tensorboard"
        ) from None
    from transformers.integrations import TensorBoardCallback

    return [TensorBoardCallback(tb_writer=SummaryWriter(log_dir=str(out / "train" / "tb")))]


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


class _Examples:
    """Map-style dataset over tokenised triplets (Trainer's sampler shards it per process)."""

    def __init__(self, examples: list[Any]):
        self.examples = examples

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> Any:
        return self.examples[i]


def _save_adapter(model: Any, tok: Any, dest: Path) -> None:
    """Adapter (or full model) + tokenizer into dest via tmp + rename: a kill never leaves half a dir."""
    tmp = dest.with_name(f".{dest.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp), safe_serialization=True)
    tok.save_pretrained(str(tmp))
    old = dest.with_name(f".{dest.name}.old{os.getpid()}")
    if dest.exists():
        os.rename(dest, old)
    os.rename(tmp, dest)
    shutil.rmtree(old, ignore_errors=True)


def run(
    cfg: Any, run_dir: Path, data: Path | None = None, out: Path | None = None, resume: bool = False
) -> dict:
    """Train on the triplets and write OUT/adapter + OUT/train; returns the summary (also OUT/train/summary.json).

    resume=True continues from the last checkpoint in OUT/train/checkpoints (none: starts fresh);
    without it an earlier run's checkpoints or adapter are never overwritten.
    """
    run_dir = Path(run_dir)
    data, out = _paths(run_dir, data, out)
    tcfg = cfg.train
    check_liger(tcfg)
    if tcfg.method == "dpo":
        from ptalign.train.dpo import run_dpo

        return run_dpo(cfg, data, out, resume)

    import torch

    from ptalign import models
    from ptalign.train.card import write_card
    from ptalign.train.collate import TripletCollator, encode_all
    from ptalign.train.data import load_records
    from ptalign.train.trainer import DualTrainer, MetricsJsonl

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    ckpt_dir = out / "train" / "checkpoints"
    last = _check_fresh(out, ckpt_dir, resume)
    threads = set_threads()
    t0 = time.time()
    model, tok = load_base(cfg)
    records, data_info = load_records(data, tcfg.columns)
    examples, stats = encode_all(tok, records, tcfg.max_length, tcfg.fine_grained, source=str(data))
    stats["data_format"], stats["rows_skipped"] = data_info["format"], data_info["skipped"]
    from transformers import TrainingArguments, set_seed

    set_seed(tcfg.seed)  # before peft draws the LoRA A init: the same config gives the same adapter
    model = wrap_lora(model, tcfg)
    if tcfg.compile:
        compile_layers(model)

    args = TrainingArguments(**training_kwargs(tcfg, out))
    packed, chunked = layout_for(model.config, tcfg)
    resume_step = None
    if last is not None:
        resume_step = json.loads((last / "trainer_state.json").read_text())["global_step"]
    trainer = DualTrainer(
        model=model,
        args=args,
        train_dataset=_Examples(examples),
        data_collator=TripletCollator(tok.pad_token_id, packed=packed),
        callbacks=[
            MetricsJsonl(out / "train" / "metrics.jsonl", resume_step),
            *tensorboard_callbacks(tcfg, out),
        ],
        lam=tcfg.lam,
        lam_benign=tcfg.lam_benign,
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
        "prefix_sharing": packed,
        "chunked_loss": chunked,
        "resumed_from_step": resume_step,
        "final": _last_metrics(out / "train" / "metrics.jsonl"),
        "epoch_means": epoch_means(out / "train" / "metrics.jsonl"),
        "train_loss": result.training_loss,
    }
    if trainer.is_world_process_zero():
        _finish(cfg, trainer.model, tok, out, summary, write_card)
    summary["seconds"] = round(time.time() - t0, 1)
    return summary


def epoch_means(path: Path) -> dict[str, dict[str, float]]:
    """Per epoch, the mean of each train/* metric over its logged steps (single batches are noisy)."""
    import math

    groups: dict[int, list[dict[str, Any]]] = {}
    for r in read_jsonl(path) if path.exists() else []:
        groups.setdefault(max(1, math.ceil(r.get("epoch", 0) - 1e-9)), []).append(r)
    out = {}
    for e, recs in sorted(groups.items()):
        keys = sorted({k for r in recs for k in r if k.startswith("train/")})
        vals = {k: [r[k] for r in recs if isinstance(r.get(k), (int, float)) and r[k] == r[k]] for k in keys}
        out[str(e)] = {k: round(sum(v) / len(v), 4) for k, v in vals.items() if v}
    return out


def _last_metrics(path: Path) -> dict[str, Any]:
    recs = list(read_jsonl(path)) if path.exists() else []
    return recs[-1] if recs else {}


def _finish(cfg: Any, model: Any, tok: Any, out: Path, summary: dict[str, Any], write_card: Any) -> None:
    adapter = out / "adapter"
    _save_adapter(model, tok, adapter)
    info = {
        "base_model": cfg.model.name,
        "model_dtype": cfg.model.dtype,
        "train": dataclasses.asdict(cfg.train),
        **summary,
    }
    atomic_write_json(adapter / TRAIN_INFO, info)
    atomic_write_json(out / "train" / "summary.json", summary)
    write_card(adapter, info, out)
    summary["adapter"] = str(adapter)


def merge(adapter: Path, out: Path, model_spec: str | None, cfg: Any) -> Path:
    """Base model + LoRA adapter → a merged HF safetensors directory at out (never overwrites one)."""
    adapter, out = Path(adapter), Path(out)
    if not (adapter / "adapter_config.json").is_file():
        raise UserError(
            f"adapter {adapter}: no adapter_config.json there; pass the RUN_DIR/adapter directory"
        )
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out} exists and is not empty; choose another --out or delete it")
    if model_spec is None:
        info = adapter / TRAIN_INFO
        model_spec = json.loads(info.read_text())["base_model"] if info.is_file() else cfg.model.name
    from ptalign import models

    model, _ = models.load(
        model_spec,
        dtype=cfg.model.dtype,
        cache_dir=cfg.model.cache_dir or None,
        adapter=adapter,
        device="cpu",
    )
    tok = models.load_tokenizer(
        adapter if (adapter / "tokenizer_config.json").is_file() else models.hf_dir(model_spec)
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp), safe_serialization=True)
    tok.save_pretrained(str(tmp))
    if out.exists():
        out.rmdir()  # empty, checked above
    os.rename(tmp, out)
    return out

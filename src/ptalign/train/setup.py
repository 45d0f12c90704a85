"""What every training recipe shares: threads, the base model, LoRA, TrainingArguments, resume and
the saved adapter. The recipes (recipe.py: ptalign's dual objective; dpo.py: TRL's DPO) differ only in
the trainer they build between `load_base` and `finish`.

Writes (through `finish`): OUT/adapter/ (PEFT adapter as safetensors, tokenizer, README.md model card,
ptalign_train.json), OUT/train/summary.json; the Trainer writes OUT/train/checkpoints/ and the
recipe's callbacks OUT/train/metrics.jsonl (and OUT/train/tb/ when train.tensorboard is set).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ptalign.errors import UserError
from ptalign.io import atomic_write_json, file_sha256, read_jsonl
from ptalign.models import cpu_threads, native_bf16
from ptalign.rundir import RunDir, check_state

TRAIN_INFO = "ptalign_train.json"  # beside the adapter: base model spec, config, data stats, steps


def _last_checkpoint(ckpt_dir: Path) -> Path | None:
    from transformers.trainer_utils import get_last_checkpoint

    if not ckpt_dir.is_dir():
        return None
    last = get_last_checkpoint(str(ckpt_dir))
    return Path(last) if last else None


def check_fresh(run: RunDir, resume: bool) -> Path | None:
    """The checkpoint to resume from; refuses to overwrite an earlier run unless resuming."""
    last = _last_checkpoint(run.checkpoints)
    if last is not None and not resume:
        raise UserError(
            f"{run.checkpoints} holds checkpoints of an earlier run; pass --resume to continue it or delete {run.train} to start over"
        )
    if last is None and run.has_trained():  # resuming without a checkpoint would start over on it
        raise UserError(
            f"{run.adapter} already exists and no checkpoint is left to resume from; pass another --out, "
            "or delete it to retrain"
        )
    return last


# settings that change how fast or in how much memory a step runs, or how often it logs and saves, but
# not what the checkpoints hold (the packed prompt and chunked loss give the same loss: test_loss.py)
NOT_IDENTITY = (
    "save_steps",
    "logging_steps",
    "tensorboard",
    "gradient_checkpointing",
    "compile",
    "liger",
    "attn",
    "chunked_loss",
    "prefix_sharing",
)


def train_identity(cfg: Any, data: Path) -> dict[str, Any]:
    """What a training's checkpoints depend on: the model, the data's bytes and every train setting
    that changes the result, one key per setting so that a refusal names the one that differs."""
    data = Path(data)
    files = sorted(p for p in data.rglob("*") if p.is_file()) if data.is_dir() else [data]
    ident = {
        "model.name": cfg.model.name,
        "model.dtype": cfg.model.dtype,
        "data": [[str(p.relative_to(data)) if data.is_dir() else p.name, file_sha256(p)] for p in files],
        **{f"train.{k}": v for k, v in dataclasses.asdict(cfg.train).items() if k not in NOT_IDENTITY},
    }
    return json.loads(json.dumps(ident))  # as the file reads back (tuples as lists)


def _neutral(key: str) -> Any:
    """A train setting's neutral value (config: what the code did before the setting existed), so a
    setting added after a checkpoint was made does not refuse it while it keeps that value."""
    from ptalign.config import TrainConfig

    f = {f.name: f for f in dataclasses.fields(TrainConfig)}.get(key.removeprefix("train."))
    return f.metadata.get("neutral") if f is not None and key.startswith("train.") else None


def check_identity(cfg: Any, data: Path, run: RunDir, last: Path | None) -> None:
    """The one rule of resuming (rundir.check_state) for training: a fresh start records what it trains
    with in OUT/train/identity.json; going on from a checkpoint made with other settings or data is
    refused, never mixed (`ptalign train --resume` given another `--set` or `--data`)."""
    ident = train_identity(cfg, data)
    if last is None:
        run.train.mkdir(parents=True, exist_ok=True)
        atomic_write_json(run.train_identity, ident)
        return
    check_state(
        run.train_identity,
        ident,
        str(run.checkpoints),
        f"resume with the settings and data it was started with, or delete {run.train} to start over",
        absent=_neutral,
    )


def resume_step(last: Path | None) -> int | None:
    """The optimizer step a checkpoint was saved at (None: a fresh start)."""
    return json.loads((last / "trainer_state.json").read_text())["global_step"] if last else None


def set_threads() -> int:
    """Use every core this process may run on (torch defaults to physical cores, which cgroups can over-count);
    an explicit OMP_NUM_THREADS wins (on a machine shared with other jobs, fewer threads avoid spin-waiting)."""
    import torch

    if os.environ.get("OMP_NUM_THREADS"):
        return torch.get_num_threads()

    n = cpu_threads()
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
    model.set_attn_implementation(attn_implementation(cfg.train))
    model.train()
    model.config.use_cache = False
    return model, tok


def attn_implementation(tcfg: Any) -> str:
    """train.attn resolved. On a CPU, SDPA's fused backward took a fifth of a step of the preset's shape
    (8 rows of ~160 tokens), where eager attention's plain matmuls are cheap at these lengths."""
    if tcfg.attn != "auto":
        return tcfg.attn
    import torch

    return "sdpa" if torch.cuda.is_available() else "eager"


def lora_config(tcfg: Any) -> Any:
    """peft's LoraConfig from TrainConfig (both recipes: ptalign wraps the model, TRL's DPO takes it)."""
    from peft import LoraConfig

    targets: Any = tcfg.lora_targets
    if targets != "all-linear":
        targets = [t.strip() for t in targets.split(",") if t.strip()]
    return LoraConfig(
        r=tcfg.lora_r,
        lora_alpha=tcfg.lora_alpha,
        lora_dropout=tcfg.lora_dropout,
        target_modules=targets,
        task_type="CAUSAL_LM",
    )


def bf16_on(tcfg: Any) -> bool:
    """train.bf16 resolved: `auto` trains under bf16 autocast only where bf16 matmuls are native."""
    return native_bf16() if tcfg.bf16 == "auto" else bool(tcfg.bf16)


def wrap_lora(model: Any, tcfg: Any) -> Any:
    """peft LoRA on tcfg.lora_targets (default all linear layers); lora_r = 0 keeps full fine-tuning."""
    if tcfg.lora_r == 0:
        return model
    from peft import get_peft_model

    model = get_peft_model(model, lora_config(tcfg))
    if bf16_on(tcfg):
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


def training_kwargs(tcfg: Any, run: RunDir | Path) -> dict[str, Any]:
    """TrainingArguments keywords from TrainConfig (shared by the ptalign and DPO trainers)."""
    import torch

    kw: dict[str, Any] = dict(
        output_dir=str(RunDir.of(run).checkpoints),
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
        bf16=bf16_on(tcfg),
        report_to=[],  # TensorBoard, when asked, is added as an explicit callback writing to OUT/train/tb
        train_sampling_strategy="group_by_length" if tcfg.group_by_length else "random",
        remove_unused_columns=False,
        # on a GPU, two worker processes collate the next batches while the GPU runs this one (128
        # triplets take the collator ~35 ms of Python, a gap in every step); on a CPU they would only
        # take cores from the step
        dataloader_num_workers=2 if torch.cuda.is_available() else 0,
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


def tensorboard_callbacks(tcfg: Any, run: RunDir) -> list[Any]:
    if not tcfg.tensorboard:
        return []
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise UserError(
            "train.tensorboard=true needs the tensorboard package; run: pip install tensorboard"
        ) from None
    from transformers.integrations import TensorBoardCallback

    return [TensorBoardCallback(tb_writer=SummaryWriter(log_dir=str(run.tensorboard)))]


def save_dir(write: Callable[[Path], None], dest: Path) -> None:
    """Write a model directory through tmp + rename (`write(tmp)` fills it): a kill never leaves half a
    directory at dest, and an existing dest is replaced only once the new one is whole."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    write(tmp)
    old = dest.with_name(f".{dest.name}.old{os.getpid()}")
    if dest.exists():
        os.rename(dest, old)
    os.rename(tmp, dest)
    shutil.rmtree(old, ignore_errors=True)


def save_pretrained(model: Any, tok: Any) -> Callable[[Path], None]:
    """The `write` for save_dir: model (adapter or full) and tokenizer as safetensors."""

    def write(tmp: Path) -> None:
        model.save_pretrained(str(tmp), safe_serialization=True)
        tok.save_pretrained(str(tmp))

    return write


def finish(cfg: Any, model: Any, tok: Any, run: RunDir, summary: dict[str, Any]) -> None:
    """Every recipe's end: the adapter (+ its train info and card) and train/summary.json."""
    from ptalign.train.card import write_card

    save_dir(save_pretrained(model, tok), run.adapter)
    info = {
        "base_model": cfg.model.name,
        "model_dtype": cfg.model.dtype,
        "train": dataclasses.asdict(cfg.train),
        **summary,
    }
    atomic_write_json(run.adapter / TRAIN_INFO, info)
    atomic_write_json(run.train_summary, summary)
    write_card(run.adapter, info)  # no evaluation of this adapter exists yet (pipeline: refresh_card)
    summary["adapter"] = str(run.adapter)


def last_metrics(path: Path) -> dict[str, Any]:
    recs = list(read_jsonl(path)) if path.exists() else []
    return recs[-1] if recs else {}


def epoch_means(path: Path) -> dict[str, dict[str, float]]:
    """Per epoch, the mean of each train/* metric over its logged steps (single batches are noisy)."""
    groups: dict[int, list[dict[str, Any]]] = {}
    for r in read_jsonl(path) if path.exists() else []:
        groups.setdefault(max(1, math.ceil(r.get("epoch", 0) - 1e-9)), []).append(r)
    out = {}
    for e, recs in sorted(groups.items()):
        keys = sorted({k for r in recs for k in r if k.startswith("train/")})
        vals = {k: [r[k] for r in recs if isinstance(r.get(k), (int, float)) and r[k] == r[k]] for k in keys}
        out[str(e)] = {k: round(sum(v) / len(v), 4) for k, v in vals.items() if v}
    return out

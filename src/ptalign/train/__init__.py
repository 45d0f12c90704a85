"""Training stage: one recipe per `train.method`, chosen from RECIPES, on what setup.py shares.

    ptalign  recipe.py  MLE(pos) + λ·UT(tox past the first mismatch), the paper's fine-grained dual tuning
    dpo      dpo.py     TRL's DPOTrainer on the same triplets (chosen = pos, rejected = tox), a baseline

Reads: the training data (default RUN_DIR/data/triplets.jsonl; TRL preference data and other formats
through train/data.py) and the base model `cfg.model.name`.
Writes: OUT/adapter/, OUT/train/ (metrics.jsonl, checkpoints/, summary.json); OUT defaults to RUN_DIR.
`accelerate launch` (configs/accelerate/) gives DDP, FSDP or DeepSpeed without code changes.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ptalign.errors import UserError
from ptalign.rundir import RunDir
from ptalign.train.merge import merge
from ptalign.train.recipe import Examples, layout_for
from ptalign.train.setup import (
    TRAIN_INFO,
    check_liger,
    compile_layers,
    epoch_means,
    load_base,
    set_threads,
    skip_adapter_input_casts,
    training_kwargs,
    wrap_lora,
)

log = logging.getLogger(__name__)


def _ptalign(cfg: Any, data: Path, out: RunDir, resume: bool) -> dict[str, Any]:
    from ptalign.train.recipe import run_ptalign

    return run_ptalign(cfg, data, out, resume)


def _dpo(cfg: Any, data: Path, out: RunDir, resume: bool) -> dict[str, Any]:
    from ptalign.train.dpo import run_dpo  # TRL is an optional extra: imported only when asked for

    return run_dpo(cfg, data, out, resume)


# method → (recipe, the TrainConfig fields only that method reads)
RECIPES: dict[str, tuple[Callable[[Any, Path, RunDir, bool], dict[str, Any]], tuple[str, ...]]] = {
    "ptalign": (
        _ptalign,
        ("lam", "lam_benign", "fine_grained", "ut_benign_tokens", "ut_specific", "kl_benign", "reroute")
        + ("reroute_retain", "recovery", "refat", "lat", "ut_everyday"),
    ),
    "dpo": (_dpo, ("dpo_beta",)),
}


def warn_unused(tcfg: Any) -> list[str]:
    """One warning line naming the settings of *other* methods that this run was given (changed from
    their defaults) and that its method does not read; returns their names."""
    from ptalign.config import TrainConfig

    default = TrainConfig()
    mine = set(RECIPES[tcfg.method][1])
    others = [k for m, (_, keys) in RECIPES.items() if m != tcfg.method for k in keys if k not in mine]
    changed = [k for k in others if getattr(tcfg, k) != getattr(default, k)]
    if changed:
        log.warning(
            "train.method=%s does not use %s (settings of another method)",
            tcfg.method,
            ", ".join(f"train.{k}" for k in changed),
        )
    return changed


def run(
    cfg: Any,
    run: RunDir | Path,
    data: Path | None = None,
    out: RunDir | Path | None = None,
    resume: bool = False,
    keep_finished: bool = False,
) -> dict[str, Any]:
    """Train with `train.method`'s recipe on the data and write OUT/adapter + OUT/train; returns the
    summary (also OUT/train/summary.json).

    resume=True continues from the last checkpoint in OUT/train/checkpoints (none, before any was
    saved: starts fresh); an earlier run's adapter is never overwritten. keep_finished=True (the
    pipeline's) keeps a training that finished instead.
    """
    run = RunDir.of(run)
    data = Path(data) if data else run.triplets
    if not data.exists():
        raise UserError(
            f"training data {data} not found; run `ptalign synth` first or pass --data FILE_OR_DIR"
        )
    out = RunDir.of(out) if out else run
    if keep_finished and out.has_trained() and out.train_summary.exists():
        # `ptalign run --resume` after `ptalign train` (README, "Scaling up"): its summary is written
        # last, so the training finished; going on from its last checkpoint would recount the steps
        # for this launch (8 GPUs there, 1 here) and train on over the finished weights
        print(f"[ptalign] train: {out.adapter} finished training earlier; kept", file=sys.stderr)
        return {**json.loads(out.train_summary.read_text()), "adapter": str(out.adapter)}
    tcfg = cfg.train
    check_liger(tcfg)
    warn_unused(tcfg)
    recipe, _ = RECIPES[tcfg.method]
    return recipe(cfg, data, out, resume)


__all__ = [
    "RECIPES",
    "TRAIN_INFO",
    "Examples",
    "compile_layers",
    "epoch_means",
    "layout_for",
    "load_base",
    "merge",
    "run",
    "set_threads",
    "skip_adapter_input_casts",
    "training_kwargs",
    "warn_unused",
    "wrap_lora",
]

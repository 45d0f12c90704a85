"""Model card (README.md) for a trained adapter: base model, data, objective, steps, eval when present.

Reads: the training info dict; RUN_DIR/eval/comparison.json once the pipeline has evaluated this adapter.
Writes: ADAPTER/README.md (replacing peft's placeholder card).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ptalign.io import atomic_write_text


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def no_ul_text(stats: dict[str, Any], ut_everyday: bool | None = None) -> str:
    """The card's count of triplets without an unlikelihood term, by reason where collate.encode_all
    recorded them (a toxic side equal to, or a prefix of, the positive is only one of three), each
    reason named only where it applies."""
    if "no_ul_prefix" not in stats:  # a summary written before the reasons were counted
        why = "toxic = prefix of positive, lost to truncation" + (
            ", or an everyday triplet under train.ut_everyday=false"
            if ut_everyday is False and stats.get("everyday")
            else ""
        )
        return f"no unlikelihood term {stats.get('no_ul')} ({why})"
    parts = [
        ("toxic = positive or a prefix of it", stats["no_ul_prefix"]),
        ("lost to truncation", stats.get("tox_lost", 0)),
        ("everyday triplets under train.ut_everyday=false", stats.get("no_ul_everyday", 0)),
    ]
    why = ", ".join(f"{label} {n}" for label, n in parts if n)
    return f"no unlikelihood term {stats.get('no_ul')}" + (f" ({why})" if why else "")


def render_card(info: dict[str, Any], comparison: dict[str, Any] | None = None) -> str:
    t = info.get("train", {})
    stats = info.get("data_stats", {})
    method = info.get("method", "ptalign")
    if method == "dpo":
        objective = "DPO baseline (TRL DPOTrainer, reference = base model with the adapter disabled)."
    else:
        mask = (
            "from the first token where it differs from the positive response"
            if t.get("fine_grained", True)
            else "on every toxic token"
        )
        objective = (
            f"MLE on the positive response + λ = {t.get('lam')} × unlikelihood −log(1 − p) on the toxic "
            f"response, {mask} (PT-ALIGN, arXiv 2502.08657)."
        )
        if t.get("lam_benign") is not None and t.get("lam_benign") != t.get("lam"):
            objective += (
                f" Benign-but-sensitive triplets (toxic side: a needless refusal) use λ = {t['lam_benign']}."
            )
        if t.get("kl_benign"):
            objective += (
                f" Beyond the paper: + {t['kl_benign']} × KL(base ‖ tuned) on the helpful tokens of "
                "benign triplets (a retain term)."
            )
        if t.get("reroute"):
            objective += (
                f" Beyond the paper: + {t['reroute']} × representation rerouting (RMU's terms) on the toxic "
                "tokens of harmful triplets and its retain term on benign helpful ones"
                + (f" (× {t['reroute_retain']})." if t.get("reroute_retain", 1.0) != 1.0 else ".")
            )
        if t.get("recovery"):
            objective += (
                f" Beyond the paper: {t['recovery']:.0%} of harmful triplets also train their refusal after the"
                " first tokens of the toxic response (safety recovery, arXiv 2406.05946)."
            )
        if t.get("ut_specific"):
            objective += (
                f" Beyond the paper: after its first token, a harmful toxic response gets UT only on tokens at least"
                f" {t['ut_specific']:g} times as frequent among harmful toxic tokens as among benign answers."
            )
        if t.get("ut_benign_tokens"):
            objective += (
                f" Beyond the paper: a benign triplet's needless refusal gets UT on its first"
                f" {t['ut_benign_tokens']} token(s) from the first mismatch only."
            )
        n_everyday = stats.get("everyday", 0)
        if t.get("ut_everyday") is False and n_everyday:
            objective += (
                f" Beyond the paper: its {n_everyday} everyday triplets (plain tasks) train their helpful"
                " answer only (no UT on the needless refusal)."
            )
        if t.get("refat"):
            objective += (
                f" Beyond the paper: {t['refat']:.0%} of harmful rows trained with the refusal feature projected"
                " out of every layer (refusal feature adversarial training, arXiv 2409.20089)."
            )
        if t.get("lat"):
            objective += (
                f" Beyond the paper: harmful prompts trained under a latent adversary's perturbation a third deep"
                f" ({t['lat']:g} × each token's norm; latent adversarial training, arXiv 2407.15549)."
            )
    lora = (
        f"LoRA r={t.get('lora_r')}, α={t.get('lora_alpha')}, targets {t.get('lora_targets')}"
        if t.get("lora_r")
        else "full fine-tuning"
    )
    full = not t.get("lora_r")  # a full fine-tune saves the whole model: transformers loads it, not peft
    lines = [
        "---",
        f"library_name: {'transformers' if full else 'peft'}",
        f"base_model: {info.get('base_model')}",
        f"tags: [ptalign, safety-alignment{'' if full else ', lora'}]",
        "---",
        "",
        f"# PT-ALIGN safety {'fine-tune' if full else 'adapter'}",
        "",
        "Made with [ptalign](https://arxiv.org/abs/2502.08657): the base model generated its own safety "
        "data (positive and toxic responses to harmful and benign-but-sensitive instructions) and was "
        "tuned on it.",
        "",
        "## Training",
        f"- Base model: `{info.get('base_model')}` ({info.get('model_dtype')})",
        f"- Objective: {objective}",
        f"- {'Weights' if full else 'Adapter'}: {lora}; lr {t.get('lr')}, {t.get('epochs')} epochs, batch {t.get('batch_size')} × accumulation {t.get('grad_accum')}, max_length {t.get('max_length')}",
        f"- Optimizer steps: {info.get('steps')}; training time {info.get('train_seconds')} s",
        "",
        "## Data",
        f"- Triplets: {stats.get('triplets')} (tokens {stats.get('tokens')}); truncated {stats.get('truncated')}, "
        f"toxic side lost to truncation {stats.get('tox_lost')}, {no_ul_text(stats, t.get('ut_everyday'))}",
    ]
    if stats.get("kinds"):
        lines.append("- Kinds: " + ", ".join(f"{k} {v}" for k, v in stats["kinds"].items()))
    if stats.get("domains"):
        lines.append("- Domains: " + ", ".join(f"{k} {v}" for k, v in stats["domains"].items()))
    final = info.get("final") or {}
    if final:
        lines += ["", "## Last logged training metrics", ""]
        lines += [f"- `{k}`: {_fmt(v)}" for k, v in final.items() if k.startswith("train/")]
    means = info.get("epoch_means") or {}
    if means:
        keys = ["train/mle_loss", "train/ul_loss", "train/pos_logprob", "train/tox_logprob"]
        lines += [
            "",
            "## Per-epoch means",
            "",
            "| epoch | " + " | ".join(f"`{k}`" for k in keys) + " |",
            "|---" * (len(keys) + 1) + "|",
        ]
        lines += [f"| {e} | " + " | ".join(_fmt(m.get(k, "")) for k in keys) + " |" for e, m in means.items()]
    lines += ["", "## Evaluation", ""]
    if comparison:
        lines += ["```json", json.dumps(comparison, indent=2)[:4000], "```"]
    else:
        lines.append("Not evaluated yet: run `ptalign eval` (the run's report shows the comparison).")
    lines += [
        "",
        "## Intended use and hazards",
        "Safety-alignment research. The training data contains model-generated harmful text by design; "
        "it is not distributed with these weights.",
        "",
    ]
    return "\n".join(lines)


def write_card(adapter: Path, info: dict[str, Any], comparison: dict[str, Any] | None = None) -> Path:
    path = Path(adapter) / "README.md"
    atomic_write_text(path, render_card(info, comparison))
    return path


def refresh_card(run_dir: Path) -> Path | None:
    """The card again with the evaluation of this adapter, once the eval stage has written it. Training
    writes the card without one: a comparison.json already in the run dir was made with an earlier adapter."""
    from ptalign.rundir import RunDir
    from ptalign.train.setup import TRAIN_INFO

    run = RunDir.of(run_dir)
    info, comp = run.adapter / TRAIN_INFO, run.comparison
    if not (info.is_file() and comp.is_file()):
        return None
    return write_card(run.adapter, json.loads(info.read_text()), json.loads(comp.read_text()))

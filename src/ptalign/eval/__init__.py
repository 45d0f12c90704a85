"""Evaluation stage: the base model and base + adapter on the same sets, then the comparison.

Reads: the base model (`model.name`), `RUN_DIR/adapter/`, eval sets (see datasets.py),
`RUN_DIR/data/triplets.jsonl` (polarity).
Writes: `RUN_DIR/eval/{base,aligned}/<name>.jsonl` (every generation, hazard header),
`RUN_DIR/eval/{base,aligned}/summary.json` (metrics `eval/...`, groups, meta incl. timings and the
judge), `.../items.json` (per-item values behind each metric, for the bootstrap),
`RUN_DIR/eval/polarity.json`, `RUN_DIR/eval/comparison.json`.

Every eval is resumable: each `<name>.jsonl` is appended per record and ids already there are skipped;
a directory made with other generation settings is refused rather than mixed (see _check_settings).
Both models generate through one engine (`eval.engine: transformers`, fp32 weights; the aligned one
with its adapter merged in memory, sharing its weights with HHH/AutoDAN scoring), so a delta is the
adapter's alone. Every reply is judged by the primary judge (`eval.judge`) and the extra ones.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ptalign.config import RunConfig
from ptalign.errors import UserError
from ptalign.eval import asr, compare, datasets, helpful, hhh, overrefusal, polarity
from ptalign.eval.common import EvalContext, Metric, eval_dtype, judge_names, read_verdicts
from ptalign.io import atomic_write_json, read_jsonl, redact
from ptalign.llm.base import Backend


def _polarity(ctx: EvalContext) -> dict[str, Any]:
    """Model-independent: computed once per run dir and read back for the second model."""
    run_dir = ctx.run_dir or ctx.out.parent
    eval_dir = ctx.out.parent
    cached = eval_dir / "polarity.json"
    triplets = run_dir / "data" / "triplets.jsonl"
    if cached.exists() and (not triplets.exists() or cached.stat().st_mtime >= triplets.stat().st_mtime):
        import json

        res = json.loads(cached.read_text())
    else:
        res = polarity.run_for(run_dir, eval_dir, ctx.ecfg.polarity_compare)
    return {"metrics": {k: v for k, v in res.items() if k.startswith("eval/")}, "items": {}, "groups": {}}


EVALS: dict[str, Callable[[EvalContext], dict[str, Any]]] = {
    "hhh": hhh.run,
    "asr": asr.run,
    "overrefusal": overrefusal.run,
    "helpful": helpful.run,
    "polarity": _polarity,
}

# metric key → Metric (label, direction, unit), declared by each eval module; the report reads this
METRICS: dict[str, Metric] = {
    **hhh.METRICS,
    **asr.METRICS,
    **overrefusal.METRICS,
    **helpful.METRICS,
    **polarity.METRICS,
}

# what makes two generations of the same item differ: a directory made with other values is refused
_GEN_KEYS = (
    "engine",
    "max_new_tokens",
    "helpful_max_new_tokens",
    "seed",
    "autodan_steps",
    "autodan_population",
    "judge_model",
)


def _check_settings(out: Path, model: str, adapter: str | None, cfg: RunConfig) -> None:
    import json

    from ptalign import models
    from ptalign.errors import ModelLoadError

    try:  # the weights' identity (file hash, dir mtimes): a retrained adapter at the same path differs
        ident = models.model_identity(model, adapter)
    except ModelLoadError:
        ident = f"{model}+{adapter}"
    want = {
        "model": model,
        "adapter": str(adapter) if adapter else None,
        "identity": ident,
        **{k: getattr(cfg.eval, k) for k in _GEN_KEYS},
        "dtype": eval_dtype(cfg),
    }
    p = out / "settings.json"
    if p.exists():
        have = json.loads(p.read_text())
        diff = [k for k in want if have.get(k) != want[k]]
        if diff:
            raise UserError(
                f"{out} holds results made with other settings ({', '.join(f'{k}={have.get(k)!r}' for k in diff)}); "
                f"move it away or pass another --out"
            )
    else:
        atomic_write_json(p, want)


def evaluate_model(
    cfg: RunConfig,
    out: Path,
    model: str,
    adapter: str | None = None,
    label: str = "model",
    judge: Callable[[], Backend] | None = None,
    judge_name: str = "",
    run_dir: Path | None = None,
    ctx: EvalContext | None = None,
) -> dict[str, Any]:
    """Run every configured eval on one model into `out`; writes summary.json + items.json."""
    paths = datasets.check_paths(cfg.eval)
    found = [k.removesuffix("_path").removesuffix("_dir") for k, v in paths.items() if v]
    print(
        f"[ptalign] eval data ({label}): {', '.join(found) if found else 'none'} from "
        f"{datasets.data_dir(cfg.eval) or 'the given paths'}; built-in sets for the rest",
        file=sys.stderr,
    )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _check_settings(out, model, adapter, cfg)
    own = ctx is None  # a context handed in is closed by its owner (it may still serve as the judge)
    ctx = ctx or EvalContext(cfg=cfg, out=out, model=model, adapter=adapter, label=label, run_dir=run_dir)
    if judge is not None:
        ctx.judge_factory = judge
        ctx.judge_name = judge_name
    t0 = time.perf_counter()
    metrics: dict[str, Any] = {}
    items: dict[str, Any] = {}
    groups: dict[str, Any] = {}
    meta: dict[str, Any] = {}
    try:
        for name in cfg.eval.evals:
            t = time.perf_counter()
            res = EVALS[name](ctx)
            ctx.timings[f"{name}_total_s"] = round(time.perf_counter() - t, 2)
            print(
                f"[ptalign] eval {label}: {name} done in {ctx.timings[f'{name}_total_s']:.0f} s",
                file=sys.stderr,
            )
            metrics.update(res["metrics"])
            items.update(res.get("items", {}))
            groups.update(res.get("groups", {}))
            meta.update(res.get("meta", {}))
    finally:
        if own:
            ctx.close()
    ctx.timings["total_s"] = round(time.perf_counter() - t0, 2)
    summary = {
        **metrics,
        "groups": groups,
        "meta": {
            "label": label,
            "model": model,
            "adapter": adapter,
            "evals": list(cfg.eval.evals),
            "eval_data": paths,
            "engine": ctx.engine_name,
            "dtype": eval_dtype(cfg),
            "judge": cfg.eval.judge,
            "judges": judge_descriptions(cfg),
            "gate_judge": cfg.synth.gate_judge,
            "llm_judge_model": ctx.judge_name or "(not used)",
            "timings": ctx.timings,
            "empty_replies": ctx.empty,
            **meta,
        },
    }
    atomic_write_json(out / "summary.json", summary)
    atomic_write_json(out / "items.json", items)
    return summary


def judge_descriptions(cfg: RunConfig) -> dict[str, str]:
    """name → one line, for every judge this evaluation used (and the gate judge), for the report."""
    from ptalign.judges import JUDGES, LLM_JUDGES

    names = dict.fromkeys([*judge_names(cfg.eval), cfg.synth.gate_judge])
    out = {}
    for n in names:
        if n in LLM_JUDGES:
            from ptalign.judges import llm

            out[n] = getattr(llm.LLM_JUDGES[n], "description", n)
        else:
            out[n] = JUDGES[n](None).description
    return out


def _base_ctx(cfg: RunConfig, run_dir: Path) -> EvalContext:
    return EvalContext(
        cfg=cfg, out=run_dir / "eval" / "base", model=cfg.model.name, label="base", run_dir=run_dir
    )


def cfg_judge_name(ctx: EvalContext) -> str:
    spec = ctx.ecfg.judge_model
    return spec if spec else f"{ctx.model} (the base model judging itself and the aligned model; weak judge)"


def run(cfg: RunConfig, run_dir: Path) -> dict[str, Any]:
    """Base into eval/base, base + RUN_DIR/adapter into eval/aligned, then eval/comparison.json."""
    run_dir = Path(run_dir)
    datasets.check_paths(cfg.eval)
    adapter = run_dir / "adapter"
    base = _base_ctx(cfg, run_dir)
    base.judge_name = cfg_judge_name(base)
    try:
        bsum = evaluate_model(cfg, base.out, cfg.model.name, None, "base", run_dir=run_dir, ctx=base)
        print(compare.summary_table(bsum), file=sys.stderr)
        if not (adapter / "adapter_config.json").exists():
            print(f"[ptalign] eval: no adapter in {adapter}; evaluated the base model only", file=sys.stderr)
            return bsum
        base._hf = None  # the base HF weights are no longer needed; its backend stays as the judge
        asum = evaluate_model(
            cfg,
            run_dir / "eval" / "aligned",
            cfg.model.name,
            str(adapter),
            "aligned",
            judge=base.judge,
            judge_name=base.judge_name,
            run_dir=run_dir,
        )
    finally:
        base.close()
    _check_engines(bsum, asum)
    comp = compare.compare_dirs(base.out, run_dir / "eval" / "aligned", cfg.eval.bootstrap, cfg.eval.seed)
    compare.write(run_dir / "eval" / "comparison.json", comp)
    print(compare.table(comp), file=sys.stderr)
    return {"base": bsum, "aligned": asum, "comparison": comp}


def _check_engines(bsum: dict[str, Any], asum: dict[str, Any]) -> None:
    be, ae = bsum["meta"].get("engine"), asum["meta"].get("engine")
    if be and ae and be != ae:
        print(
            f"[ptalign] warning: base generated on {be}, aligned on {ae}: every delta of a generated metric "
            "mixes in an engine and quantisation effect (eval.engine: transformers uses one engine)",
            file=sys.stderr,
        )


def evaluate_aligned(cfg: RunConfig, run_dir: Path, base_eval: Path | None = None) -> dict[str, Any]:
    """Sweeps: base + RUN_DIR/adapter into RUN_DIR/eval/aligned (judge: the base model), compared with
    an existing base evaluation (`base_eval`) when given; returns the aligned summary."""
    run_dir = Path(run_dir)
    adapter = run_dir / "adapter"
    if not (adapter / "adapter_config.json").exists():
        raise UserError(f"no adapter in {adapter}; train one first (ptalign train --out {run_dir})")
    judge_ctx = _base_ctx(cfg, run_dir)
    judge_ctx.judge_name = cfg_judge_name(judge_ctx)
    try:
        asum = evaluate_model(
            cfg,
            run_dir / "eval" / "aligned",
            cfg.model.name,
            str(adapter),
            "aligned",
            judge=judge_ctx.judge,
            judge_name=judge_ctx.judge_name,
            run_dir=run_dir,
        )
    finally:
        judge_ctx.close()
    if base_eval is not None and (Path(base_eval) / "summary.json").exists():
        comp = compare.compare_dirs(
            Path(base_eval), run_dir / "eval" / "aligned", cfg.eval.bootstrap, cfg.eval.seed
        )
        compare.write(run_dir / "eval" / "comparison.json", comp)
    return asum


def cli_eval(
    cfg: RunConfig, out: Path, model: str, adapter: str | None, baseline: str | None
) -> dict[str, Any]:
    """`ptalign eval`: model (+ adapter) into OUT/aligned (OUT/base without adapter), the baseline into
    OUT/base, and OUT/comparison.json + a printed table when there is a baseline."""
    datasets.check_paths(cfg.eval)
    out = Path(out)
    show = cfg.eval.show_unsafe
    judge_ctx = None
    if baseline:
        judge_ctx = EvalContext(
            cfg=cfg, out=out / "base", model=baseline, label="base", run_dir=Path(cfg.run_dir)
        )
        judge_ctx.judge_name = cfg_judge_name(judge_ctx)
    try:
        res: dict[str, Any] = {}
        if judge_ctx is not None:
            res["base"] = evaluate_model(
                cfg, judge_ctx.out, baseline, None, "base", ctx=judge_ctx, run_dir=Path(cfg.run_dir)
            )
            judge_ctx._hf = None
        side = "aligned" if adapter or baseline else "base"
        kw: dict[str, Any] = {}
        if judge_ctx is not None:
            kw = {"judge": judge_ctx.judge, "judge_name": judge_ctx.judge_name}
        res[side] = evaluate_model(cfg, out / side, model, adapter, side, run_dir=Path(cfg.run_dir), **kw)
    finally:
        if judge_ctx is not None:
            judge_ctx.close()
    if baseline:
        comp = compare.compare_dirs(out / "base", out / "aligned", cfg.eval.bootstrap, cfg.eval.seed)
        compare.write(out / "comparison.json", comp)
        res["comparison"] = comp
        print(compare.table(comp))
    else:
        print(compare.summary_table(res[side]))
    side_dir = out / ("aligned" if (adapter or baseline) else "base")
    primary = read_verdicts(side_dir, "asr").get(cfg.eval.judge, {})
    for r in asr.examples(side_dir, 1):
        verdict = primary.get(r["id"], {}).get("verdict")
        print(f"  [{r['attack']}] {cfg.eval.judge}: {verdict}: {redact(r['text'], show)}")
    return res


__all__ = ["EVALS", "METRICS", "cli_eval", "evaluate_aligned", "evaluate_model", "read_jsonl", "run"]

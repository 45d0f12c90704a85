"""Evaluation stage: the base model and base + adapter on the same sets, then the comparison.

Reads: the base model (`model.name`), `RUN_DIR/adapter/`, eval sets (see datasets.py),
`RUN_DIR/data/triplets.jsonl` (polarity).
Writes: `RUN_DIR/eval/{base,aligned}/<name>.jsonl` (every generation, hazard header),
`RUN_DIR/eval/{base,aligned}/summary.json` (metrics `eval/...`, groups, meta incl. timings and the
judge), `.../items.json` (per-item values behind each metric, for the bootstrap),
`RUN_DIR/eval/polarity.json`, `RUN_DIR/eval/comparison.json`.

Every eval is resumable: each `<name>.jsonl` is appended per record and ids already there are skipped;
a directory made with other generation settings is refused rather than mixed (see _check_settings).
Both models generate through one engine (`eval.engine`: vLLM where installed, else transformers, on
`eval.dtype` weights, bf16 where the CPU or GPU does bf16 natively; the aligned one with its adapter
merged), so a delta is the adapter's alone. Every reply is judged by the primary judge (`eval.judge`)
and the extra ones.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ptalign.config import RunConfig
from ptalign.eval import asr, compare, datasets, helpful, hhh, overrefusal, polarity
from ptalign.eval.common import (
    ENGINE_SHARE_FOLLOWED,
    ENGINE_SHARE_LAST,
    EvalContext,
    Metric,
    eval_dtype,
    judge_attr,
    judge_names,
    judge_versions,
    read_verdicts,
)
from ptalign.io import atomic_write_json, read_jsonl, redact
from ptalign.llm.base import Backend
from ptalign.rundir import RunDir, check_state, read_state, side_items, side_state, side_summary


def _polarity(ctx: EvalContext) -> dict[str, Any]:
    """Model-independent: computed once per run dir and read back for the second model."""
    run = RunDir.of(ctx.run_dir or ctx.out.parent)
    eval_dir = ctx.out.parent
    cached = eval_dir / "polarity.json"
    triplets = run.triplets
    res: dict[str, Any] = {}
    if cached.exists() and (not triplets.exists() or cached.stat().st_mtime >= triplets.stat().st_mtime):
        res = json.loads(cached.read_text())
    if not res or res.get("compare_path", "") != ctx.ecfg.polarity_compare:  # none yet, or another comparison
        res = polarity.run_for(run.root, eval_dir, ctx.ecfg.polarity_compare)
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


def _settings(model: str, adapter: str | None, cfg: RunConfig) -> dict[str, Any]:
    """What a side's generations depend on, as its settings.json records it."""
    from ptalign import models
    from ptalign.errors import ModelLoadError

    try:  # the weights' identity (file hash, dir mtimes): a retrained adapter at the same path differs
        ident = models.model_identity(model, adapter)
    except ModelLoadError:
        ident = f"{model}+{adapter}"
    return {
        "model": model,
        "adapter": str(adapter) if adapter else None,
        "identity": ident,
        **{k: getattr(cfg.eval, k) for k in _GEN_KEYS},
        "dtype": eval_dtype(cfg),
    }


def _check_settings(out: Path, model: str, adapter: str | None, cfg: RunConfig) -> None:
    check_state(
        side_state(out), _settings(model, adapter, cfg), str(out), "move it away or pass another --out"
    )


def resumable(side_dir: Path, model: str, adapter: str | None, cfg: RunConfig) -> bool:
    """Whether an evaluation of `model` (+ `adapter`) under `cfg` may resume `side_dir`: it holds a
    finished side made with the same weights and generation settings (what `_check_settings` demands;
    a judge retrained since re-judges on resuming, as its verdicts carry its version)."""
    state = read_state(side_state(side_dir))
    if state is None or not side_summary(side_dir).exists():
        return False
    want = _settings(model, adapter, cfg)
    return all(state.get(k) == v for k, v in want.items())


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
    engine_share: float = ENGINE_SHARE_LAST,
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
    ctx = ctx or EvalContext(
        cfg=cfg,
        out=out,
        model=model,
        adapter=adapter,
        label=label,
        run_dir=run_dir,
        engine_share=engine_share,
    )
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
            "judge_versions": judge_versions(judge_names(cfg.eval)),  # what its figures read
            "gate_judge": cfg.synth.gate_judge,
            "llm_judge_model": ctx.judge_name or "(not used)",
            "timings": ctx.timings,
            "empty_replies": ctx.empty,
            **meta,
        },
    }
    atomic_write_json(side_summary(out), summary)
    atomic_write_json(side_items(out), items)
    return summary


def judge_descriptions(cfg: RunConfig) -> dict[str, str]:
    """name → one line, for every judge this evaluation used (and the gate judge), for the report."""
    names = dict.fromkeys([*judge_names(cfg.eval), cfg.synth.gate_judge])
    return {n: judge_attr(n, "description", n) for n in names}


def cfg_judge_name(ctx: EvalContext) -> str:
    spec = ctx.ecfg.judge_model
    return spec if spec else f"{ctx.model} (the base model judging itself and the aligned model; weak judge)"


def evaluate(
    cfg: RunConfig,
    out: Path,
    model: str,
    adapter: str | Path | None = None,
    baseline: str | None = None,
    base_eval: Path | None = None,
    run: RunDir | None = None,
) -> dict[str, Any]:
    """The one entry point: `model` (+ `adapter`) against a baseline, each into its own directory.

    With `baseline` it is evaluated first into OUT/base and then serves as the LLM judge (unless
    eval.judge_model names one); `base_eval` instead names an existing base evaluation to compare
    with (sweeps: one base, many adapters). The model goes into OUT/aligned when there is something to
    compare it with or an adapter, else into OUT/base. Writes OUT/comparison.json when both sides
    exist; returns {side: summary, "comparison": ...}. `run` is the run directory the polarity metric
    and the LLM-call cache belong to (default: cfg.run_dir).
    """
    datasets.check_paths(cfg.eval)
    out = Path(out)
    run = run or RunDir.of(cfg.run_dir)
    judge_model = baseline or (cfg.model.name if base_eval is not None else None)
    side = "aligned" if adapter or judge_model else "base"
    judge_ctx = None
    if judge_model:
        # its engine serves the aligned side as the judge: one starts after it (baseline) or before it
        share = ENGINE_SHARE_FOLLOWED if baseline else ENGINE_SHARE_LAST
        judge_ctx = EvalContext(
            cfg=cfg, out=out / "base", model=judge_model, label="base", run_dir=run.root, engine_share=share
        )
        judge_ctx.judge_name = cfg_judge_name(judge_ctx)
    res: dict[str, Any] = {}
    try:
        if baseline and judge_ctx is not None:
            res["base"] = evaluate_model(cfg, judge_ctx.out, baseline, None, "base", ctx=judge_ctx)
            print(compare.summary_table(res["base"]), file=sys.stderr)
            judge_ctx.release_weights()  # its backend stays, as the judge
        kw: dict[str, Any] = {}
        if judge_ctx is not None:
            kw = {"judge": judge_ctx.judge, "judge_name": judge_ctx.judge_name}
        adapter = str(adapter) if adapter else None
        last = judge_ctx is None or baseline is not None  # else the judge's engine may start after it
        share = ENGINE_SHARE_LAST if last else ENGINE_SHARE_FOLLOWED
        res[side] = evaluate_model(
            cfg, out / side, model, adapter, side, run_dir=run.root, engine_share=share, **kw
        )
    finally:
        if judge_ctx is not None:
            judge_ctx.close()
    base_dir = out / "base" if baseline else (Path(base_eval) if base_eval is not None else None)
    if side == "aligned" and base_dir is not None and side_summary(base_dir).exists():
        # a base side made earlier (a sweep's `base_eval`) may come from another environment's engine
        bsum = res.get("base") or json.loads(side_summary(base_dir).read_text())
        _check_engines(bsum, res["aligned"])
        comp = compare.compare_dirs(base_dir, out / "aligned", cfg.eval.bootstrap, cfg.eval.seed)
        compare.write(out / "comparison.json", comp)
        res["comparison"] = comp
    return res


def tuned(cfg: RunConfig, run: RunDir) -> tuple[str, str | None]:
    """(model, adapter) of what `run` trained: the base with RUN_DIR/adapter, or after a full
    fine-tune (train.lora_r=0) the model saved there, on its own."""
    return (str(run.adapter), None) if run.full_model() else (cfg.model.name, str(run.adapter))


def run(cfg: RunConfig, run: RunDir | Path) -> dict[str, Any]:
    """The pipeline's eval stage: the base model into eval/base, the tuned one (`tuned`) into
    eval/aligned (base only when nothing is trained yet), then eval/comparison.json."""
    run = RunDir.of(run)
    if not run.has_trained():
        print(
            f"[ptalign] eval: nothing trained in {run.adapter}; evaluating the base model only",
            file=sys.stderr,
        )
        res = evaluate(cfg, run.eval, cfg.model.name, run=run)
        print(compare.summary_table(res["base"]), file=sys.stderr)
        return res["base"]
    model, adapter = tuned(cfg, run)
    res = evaluate(cfg, run.eval, model, adapter, baseline=cfg.model.name, run=run)
    print(compare.table(res["comparison"]), file=sys.stderr)
    return res


def _check_engines(bsum: dict[str, Any], asum: dict[str, Any]) -> None:
    be, ae = bsum.get("meta", {}).get("engine"), asum.get("meta", {}).get("engine")
    if be and ae and be != ae:
        print(
            f"[ptalign] warning: base generated on {be}, aligned on {ae}: every delta of a generated metric "
            "mixes in an engine and quantisation effect (eval.engine: transformers uses one engine)",
            file=sys.stderr,
        )


def print_results(cfg: RunConfig, out: Path, res: dict[str, Any]) -> None:
    """`ptalign eval`'s stdout: the table (with deltas when there was a baseline) and one example reply
    per attack with the primary judge's verdict (redacted unless eval.show_unsafe)."""
    side = "aligned" if "aligned" in res else "base"
    print(compare.table(res["comparison"]) if "comparison" in res else compare.summary_table(res[side]))
    primary = read_verdicts(out / side, "asr", judge_versions([cfg.eval.judge])).get(cfg.eval.judge, {})
    for r in asr.examples(out / side, 1):
        verdict = primary.get(r["id"], {}).get("verdict")
        print(f"  [{r['attack']}] {cfg.eval.judge}: {verdict}: {redact(r['text'], cfg.eval.show_unsafe)}")


__all__ = ["EVALS", "METRICS", "evaluate", "evaluate_model", "print_results", "read_jsonl", "run"]

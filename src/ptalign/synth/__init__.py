"""Safety data synthesis (PT-ALIGN §3.1): domains → topics → instructions → constraints → triplets.

Reads: the packaged seeds (`ptalign.seeds`), the config's `synth` and `model` sections; on resume
the files below.
Writes: `RUN_DIR/data/`: topics.jsonl, instructions.jsonl, constraints.jsonl (+ constraints.md),
triplets.jsonl, rejected.jsonl, stats.json, and `.synth_state.json` (stages finished, config hash);
the LLM-call cache at `RUN_DIR/cache/llm_calls.sqlite`.

Resume: every record has a stable id (hash of its inputs), its parent's id and the config hash, and
is appended with an fsync; a rerun replays finished calls from the call cache, skips ids on disk and
so ends with the same files as an uninterrupted run (stats.json differs only in its `timing` block).
A data dir made with another synth config is refused rather than mixed.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from ptalign.config import RunConfig
from ptalign.errors import UserError
from ptalign.io import atomic_write_json, read_jsonl
from ptalign.llm.base import Backend
from ptalign.rundir import RunDir, check_state, save_state
from ptalign.seeds import load_seeds
from ptalign.synth.common import Ctx
from ptalign.synth.constraints import run_constraints
from ptalign.synth.expand import EVERYDAY, run_instructions, run_topics
from ptalign.synth.pairs import run_pairs

STAGES = ("topics", "instructions", "constraints", "pairs")
NEEDS = {
    "topics": (),
    "instructions": ("topics",),
    "constraints": (),
    "pairs": ("instructions", "constraints"),
}

__all__ = ["STAGES", "choose_engine", "compute_stats", "estimate_synth_calls", "estimate_synth_tokens", "run"]


def _log(msg: str) -> None:
    print(f"synth: {msg}", file=sys.stderr, flush=True)


def estimate_synth_calls(cfg: RunConfig) -> int:
    """Generations the pairs stage will ask for: kept triplets × 2 sides × candidates per side. With
    no cap (target_triplets 0) every instruction may become one: harmful goals, their benign share and
    their everyday share."""
    s = cfg.synth
    harmful = len(s.domains) * s.topics_per_domain * s.instructions_per_topic
    triplets = s.target_triplets or round(harmful * (1 + s.benign_share + s.everyday_share))
    return triplets * 2 * s.candidates


def estimate_synth_tokens(cfg: RunConfig) -> int:
    """An upper bound on the tokens synthesis generates: what decides whether vLLM's start-up pays."""
    return estimate_synth_calls(cfg) * cfg.synth.max_new_tokens


def choose_engine(cfg: RunConfig) -> tuple[str, str]:
    """(engine, reason) synthesis runs on: the choice lives here, with the stage that knows its job."""
    from ptalign.llm import choose_backend

    return choose_backend(cfg, estimate_synth_tokens(cfg))


def run(
    cfg: RunConfig, run: RunDir | Path, stage: str = "all", backend: Backend | None = None
) -> dict[str, Any]:
    """Run one synthesis stage (or all, in order), resuming whatever is on disk; returns the stats.

    `backend` is for tests and callers that already hold one; by default the configured model is
    loaded through `ptalign.llm.make_backend` with the run's call cache.
    """
    if stage != "all" and stage not in STAGES:
        raise UserError(f"--stage {stage}: unknown; one of {', '.join(STAGES)}, all")
    run = RunDir.of(run)
    data_dir = run.data
    config_hash = cfg.hash("model", "synth")
    state = check_state(
        run.synth_state,
        {"config": config_hash},
        f"{data_dir} (synthesis data)",
        "use a new --out directory or move the old data/ away",
    )
    state.setdefault("done", [])
    todo = [s for s in (STAGES if stage == "all" else (stage,)) if s not in state["done"]]
    for s in todo:
        missing = [n for n in NEEDS[s] if n not in state["done"] and n not in todo[: todo.index(s)]]
        if missing:
            raise UserError(
                f"--stage {s} needs {', '.join(missing)} first; run `ptalign synth --stage {missing[0]}` or --stage all"
            )
    t0 = time.perf_counter()
    own = backend is None
    if own and todo:
        from ptalign.llm import make_backend

        # the job's size lets backend.kind=auto pick vLLM where it pays (ptalign.llm.choose_backend)
        backend = make_backend(cfg, cache_path=run.llm_cache, n_tokens=estimate_synth_tokens(cfg))
    ctx = Ctx(cfg, run, backend, load_seeds(), config_hash)  # type: ignore[arg-type]
    try:
        for s in todo:
            ts = time.perf_counter()
            {
                "topics": run_topics,
                "instructions": run_instructions,
                "constraints": run_constraints,
                "pairs": run_pairs,
            }[s](ctx)
            state["done"].append(s)
            state.setdefault("engines", {})[s] = getattr(backend, "name", "")  # what wrote it, for resumes
            if own:
                state["engine_reason"] = choose_engine(cfg)[1]
            save_state(run.synth_state, state)
            _log(f"{s} done in {time.perf_counter() - ts:.0f} s")
    finally:
        ctx.close()
        if own and backend is not None:
            backend.close()
    stats = compute_stats(data_dir)
    engines = sorted(set(state.get("engines", {}).values()) - {""})
    if engines:  # the engine(s) that wrote this data, also when every stage was done in an earlier run
        stats["synth/engine"] = ",".join(engines)
    if state.get("engine_reason"):
        stats["synth/engine_reason"] = state["engine_reason"]
    c = ctx.counter
    stats["timing"] = {
        "synth/wall_seconds": round(time.perf_counter() - t0, 2),
        "synth/gen_seconds": round(c.gen_seconds, 2),
        "synth/new_tokens": c.new_tokens,
        "synth/prompt_tokens": c.prompt_tokens,
        "synth/calls": c.calls,
        "synth/cached_calls": c.cached_calls,
        "synth/tokens_per_s": round(c.new_tokens / c.gen_seconds, 1) if c.gen_seconds > 0 else None,
    }
    data_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(run.stats, stats)
    _log(
        f"{stats['synth/triplets']} triplets ({stats['synth/triplets_harmful']} harmful, {stats['synth/triplets_benign']} benign), "
        f"mean polarity {stats['synth/mean_polarity']}, {c.new_tokens} new tokens at {stats['timing']['synth/tokens_per_s']} tok/s"
    )
    return stats


def compute_stats(data_dir: Path) -> dict[str, Any]:
    """Counts from the files alone (so a resumed run reports what an uninterrupted one does)."""
    data_dir = Path(data_dir)
    rd = lambda name: list(read_jsonl(data_dir / name))  # noqa: E731
    topics, insts, cons, trips, rej = (
        rd(f"{n}.jsonl") for n in ("topics", "instructions", "constraints", "triplets", "rejected")
    )
    n_attack = sum(bool(r.get("attack")) for r in trips)
    n_attack_everyday = sum(bool(r.get("attack")) and bool(r.get("everyday")) for r in trips)
    trips = [r for r in trips if not r.get("attack")]  # wrapped copies repeat a triplet's answers
    st: dict[str, Any] = {
        "synth/topics": len(topics),
        "synth/instructions_harmful": sum(r["kind"] == "harmful" for r in insts),
        "synth/instructions_benign": sum(r["kind"] == "benign" for r in insts),
        "synth/constraints_pos": sum(r["polarity"] == "pos" for r in cons),
        "synth/constraints_neg": sum(r["polarity"] == "neg" for r in cons),
        "synth/constraints_generated": sum(r["source"] == "model" for r in cons),
        "synth/triplets": len(trips),
        "synth/triplets_attack": n_attack,  # extra records: a triplet's request in a jailbreak wrapper
        "synth/triplets_harmful": sum(r["kind"] == "harmful" for r in trips),
        "synth/triplets_benign": sum(r["kind"] == "benign" for r in trips),
        "synth/benign_tox_template": sum(r.get("tox_source") == "template" for r in trips),
        "synth/harmful_tox_own": sum(r.get("tox_source") == "own" for r in trips),  # synth.toxic_from=own
    }
    pols = [r["polarity"] for r in trips]
    st["synth/mean_polarity"] = round(sum(pols) / len(pols), 4) if pols else None
    for kind in ("harmful", "benign"):
        p = [r["polarity"] for r in trips if r["kind"] == kind]
        st[f"synth/mean_polarity_{kind}"] = round(sum(p) / len(p), 4) if p else None
    pair_rej = [r for r in rej if r["stage"] == "pairs"]
    st["synth/pairs_processed"] = len(trips) + len(pair_rej)
    # item-level drops per gate, per stage
    for (stage, reason), n in sorted(Counter((r["stage"], r["reason"]) for r in rej).items()):
        st[f"synth/dropped/{stage}/{reason}"] = n
    # sample-level rejections (each candidate a gate turned down, incl. retries of kept items)
    samples: Counter = Counter()
    for r in trips + pair_rej:
        samples.update(r.get("samples", {}))
    for reason, n in sorted(samples.items()):
        st[f"synth/samples_rejected/{reason}"] = n
    for dom, n in sorted(Counter(r["domain"] for r in trips).items()):
        st[f"synth/triplets_by_domain/{dom}"] = n
    everyday = {r["id"] for r in insts if r.get("area") == EVERYDAY}  # synth.everyday_share > 0 only
    if everyday:
        st["synth/instructions_everyday"] = len(everyday)
        st["synth/triplets_everyday"] = sum(r.get("parent") in everyday for r in trips)
        st["synth/triplets_attack_everyday"] = n_attack_everyday  # synth.attack_share_everyday
    # benign requests made from goals: protective_goals=benign, synth.benign_goals
    flipped = {r["id"] for r in insts if r["kind"] == "benign" and "goal" in r and r["id"] not in everyday}
    if flipped:
        st["synth/triplets_benign_from_goals"] = sum(r.get("parent") in flipped for r in trips)
    # the share of each request form the model wrote (issue #19), kept and trained on: the harmful
    # requests' (synth.request_forms > 0) and the everyday ones' (synth.everyday_forms > 0) apart
    for in_everyday, inst_key, trip_key in (
        (False, "instructions_by_form", "triplets_by_form"),
        (True, "everyday_by_form", "triplets_everyday_by_form"),
    ):
        form = {r["id"]: r["form"] for r in insts if "form" in r and (r["id"] in everyday) == in_everyday}
        for f, n in sorted(Counter(form.values()).items()):
            st[f"synth/{inst_key}/{f}"] = n
        for f, n in sorted(Counter(form[r["parent"]] for r in trips if r.get("parent") in form).items()):
            st[f"synth/{trip_key}/{f}"] = n
    return st

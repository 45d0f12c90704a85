"""What every eval shares: the model under test (generation backend + HF model), the judges, and the
resumable generate-and-append loop.

Reads: nothing itself. Writes: `<out>/<name>.jsonl` through `generate_records` (hazard header first:
replies to harmful prompts are harmful text) and `<out>/<name>_verdicts.jsonl` through `judge_records`.

One EvalContext per evaluated model. Backends and the HF model load lazily and once, so an eval list
without `hhh`/`autodan` never loads transformers weights, and the model's generation backend wraps the
same HF model that HHH scores (one load, not two). With `eval.engine: transformers` (what the default
`fastest` is where vLLM is not installed) the base and the aligned model generate through that one
engine, so a delta is the adapter's alone, not an engine's or a quantisation's. `eval.engine: vllm`
(`fastest` where vLLM is installed) does the same through vLLM, which batches far better on a CPU;
log-likelihood scoring stays on transformers.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ptalign.config import RunConfig
from ptalign.errors import UserError
from ptalign.io import HAZARD_META, JsonlWriter, read_jsonl, stable_id
from ptalign.judges import JUDGES, LLM_JUDGES, Judge, make_judge
from ptalign.llm.base import Backend, Chat, GenParams
from ptalign.rundir import RunDir, records, side_summary, verdicts

Record = dict[str, Any]


@dataclass(frozen=True)
class Metric:
    """What a metric key means, for tables and the report (lm-eval-harness's `higher_is_better`)."""

    label: str  # a human name
    better: str  # "lower" | "higher" | "" (neither: a count, a share of non-answers, a data property)
    unit: str = "rate"  # rate (a share, shown in %) | score | count


def batches(items: list[Any], n: int) -> Iterator[list[Any]]:
    for i in range(0, len(items), max(1, n)):
        yield items[i : i + n]


def generate_batch(ecfg: Any, backend: Backend) -> int:
    """Chats per generate call: eval.batch_size, or a batch engine's own preferred batch where larger.
    vLLM schedules the chats of one call together, so 32 at a time left it a quarter idle: on the
    evaluation's own attack chats 256 a call decoded 1.27x as fast as 32 (2 Zen 4 cores, 2026-12-06)."""
    return max(ecfg.batch_size, int(getattr(backend, "preferred_batch", 1)))


# The share of the GPU memory free at its start that an evaluation's vLLM engine takes (vLLM's own
# default, 0.92 of the whole card, fails beside anything else: llm/vllm_backend.py gpu_share). The side's
# HF model (HHH) is already on the card, and an engine that another will follow in this process (the
# base side's, kept alive as the aligned side's judge) leaves that one room. No effect on a CPU.
ENGINE_SHARE_LAST, ENGINE_SHARE_FOLLOWED = 0.9, 0.45


@dataclass
class EvalContext:
    """The model under test and where its results go. `backend_factory`/`hf_factory` exist so unit
    tests can hand in a fake backend or a tiny random model without touching the loaders."""

    cfg: RunConfig
    out: Path  # RUN_DIR/eval/base | RUN_DIR/eval/aligned | --out
    model: str  # model spec
    adapter: str | None = None
    label: str = "model"  # base | aligned | model
    judge_backend: Backend | None = None  # None = build from eval.judge_model ('' = this model)
    judge_name: str = ""
    judge_factory: Callable[[], Backend] | None = None  # e.g. the base model's judge, shared with aligned
    backend_factory: Callable[[], Backend] | None = None
    hf_factory: Callable[[], tuple[Any, Any]] | None = None
    run_dir: Path | None = None
    timings: dict[str, float] = field(default_factory=dict)
    empty: dict[str, list[int]] = field(default_factory=dict)  # eval → [near-empty replies, replies]
    _backend: Backend | None = None
    _hf: tuple[Any, Any] | None = None
    _own_judge: bool = False
    engine_name: str | None = None  # the engine that generated this model's replies, once one did
    engine_share: float = ENGINE_SHARE_LAST  # of the GPU memory free when its vLLM engine starts
    _judges: dict[str, Judge] = field(default_factory=dict)
    _scratch: Path | None = None  # eval.engine=vllm: the weights vLLM loads (removed on close)

    @property
    def ecfg(self) -> Any:
        return self.cfg.eval

    @property
    def cache_path(self) -> Path:
        """The run's LLM-call cache (eval's own generations and an LLM judge's verdicts)."""
        return RunDir.of(self.run_dir or self.cfg.run_dir).llm_cache

    def hf(self) -> tuple[Any, Any]:
        """(model, tokenizer) of the evaluated weights (adapter merged) for log-likelihood scoring."""
        if self._hf is None:
            if self.hf_factory is not None:
                self._hf = self.hf_factory()
            else:
                from ptalign import models

                self._hf = models.load(
                    self.model,
                    dtype=eval_dtype(self.cfg),
                    cache_dir=self.cfg.model.cache_dir or None,
                    adapter=self.adapter,
                )
        return self._hf

    def backend(self) -> Backend:
        if self._backend is None:
            if self.backend_factory is not None:
                self._backend = self.backend_factory()
            else:
                self._backend = self._make_backend()
            inner = getattr(self._backend, "inner", self._backend)
            self.engine_name = getattr(inner, "name", None)
        return self._backend

    def _make_backend(self) -> Backend:
        from ptalign.llm import resolve_kind

        kind = engine_kind(self.ecfg.engine) or resolve_kind(self.cfg, self.model, self.adapter)
        if kind == "vllm":
            return self._vllm_backend()
        if kind == "transformers":
            # Reuse the merged HF model HHH/AutoDAN already need: one load, one copy in memory.
            from ptalign import models
            from ptalign.llm.cache import CachedBackend, CallCache
            from ptalign.llm.hf import TransformersBackend

            model, tok = self.hf()
            inner = TransformersBackend(
                self.model,
                batch_size=self.ecfg.batch_size,
                model=model,
                tokenizer=tok,
                model_id=f"{models.model_identity(self.model, self.adapter)}:{eval_dtype(self.cfg)}",
            )
            cache = CallCache(self.cache_path) if self.cfg.backend.cache else None
            return CachedBackend(inner, cache, desc=f"eval {self.label}")
        from ptalign.llm import make_backend

        return make_backend(self.cfg, model=self.model, adapter=self.adapter, cache_path=self.cache_path)

    def _vllm_backend(self) -> Backend:
        """vLLM on the very weights HHH scores (adapter merged, eval.dtype), written once to a scratch
        folder in this model's eval dir and removed on close: base and aligned then differ only by the
        adapter, through one engine, and a zero adapter gives the base model's bytes."""
        from ptalign import models
        from ptalign.llm.cache import CachedBackend, CallCache
        from ptalign.llm.vllm_backend import VLLMBackend, engine_args_from_env, on_cpu

        model, tok = self.hf()
        self.out.mkdir(parents=True, exist_ok=True)
        for stale in self.out.glob(".vllm-weights-*"):  # left by a killed run (the run dir is locked)
            shutil.rmtree(stale, ignore_errors=True)
        self._scratch = Path(tempfile.mkdtemp(prefix=".vllm-weights-", dir=self.out))
        model.save_pretrained(self._scratch, safe_serialization=True)
        tok.save_pretrained(self._scratch)
        dtype = eval_dtype(self.cfg)
        inner = VLLMBackend(
            self._scratch,
            f"{models.model_identity(self.model, self.adapter)}:{dtype}",
            dtype=dtype,
            max_model_len=self.cfg.backend.n_ctx,
            seed=self.cfg.seed,
            # a side's ~1,400 short replies: on a CPU torch.compile bought 20 % of their decoding (47 ->
            # 38 s per 640) for 54 s more start-up (2 Zen 5 cores, 2026-12-02), so eager there
            enforce_eager=on_cpu(),
            engine_kwargs=engine_args_from_env(),
            memory_share=self.engine_share,
        )
        cache = CallCache(self.cache_path) if self.cfg.backend.cache else None
        return CachedBackend(inner, cache, desc=f"eval {self.label}")

    def make_judge(self, name: str) -> Judge:
        """Judge `name` (judges.JUDGES); LLM judges run on `judge()`, built only when first asked."""
        if name not in self._judges:
            self._judges[name] = make_judge(name, backend=self.judge)
        return self._judges[name]

    def judge(self) -> Backend:
        """The LLM judge: eval.judge_model, else the backend given by the caller, else this model."""
        if self.judge_backend is None:
            spec = self.ecfg.judge_model
            if self.judge_factory is not None:
                self.judge_backend = self.judge_factory()
            elif spec:
                from ptalign.llm import make_backend

                self.judge_backend = make_backend(self.cfg, model=spec, cache_path=self.cache_path)
                self._own_judge = True
                self.judge_name = self.judge_name or spec
            else:
                self.judge_backend = self.backend()
                self.judge_name = (
                    self.judge_name or f"{self.model} (the evaluated model judging itself; weak judge)"
                )
        return self.judge_backend

    def release_weights(self) -> None:
        """Drop the HF weights (no longer needed once this model's evals are done); a backend built on
        them stays usable as the judge of the next model."""
        self._hf = None
        import torch

        if torch.cuda.is_available():  # give the next model's weights and engine the memory back
            torch.cuda.empty_cache()

    def close(self) -> None:
        if self._own_judge and self.judge_backend is not None:
            self.judge_backend.close()
        if self._backend is not None:
            self._backend.close()
        self._backend, self._hf = None, None
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None


def generate_records(
    ctx: EvalContext,
    name: str,
    items: list[Record],
    make_chat: Callable[[Record], Chat],
    params: GenParams,
    fields: Callable[[Record, str], Record],
    backend: Backend | None = None,
) -> list[Record]:
    """Generate a reply for every item not yet in `<out>/<name>.jsonl`, append one record per item
    (flushed as it goes, so a killed eval resumes where it stopped), and return the records of
    `items` in their order. `fields(item, text)` adds what the eval stores beside id/text."""
    backend = backend or ctx.backend()
    path = records(ctx.out, name)
    t0 = time.perf_counter()
    n_new = 0
    with JsonlWriter(
        path, meta={**HAZARD_META, "eval": name, "model": ctx.model, "adapter": ctx.adapter}
    ) as w:
        todo = [it for it in items if it["id"] not in w.done]
        for chunk in batches(todo, generate_batch(ctx.ecfg, backend)):
            gens = backend.generate([make_chat(it) for it in chunk], params)
            for it, g in zip(chunk, gens, strict=True):
                w.write(
                    {
                        "id": it["id"],
                        **fields(it, g.text),
                        "text": g.text,
                        "completion_tokens": g.completion_tokens,
                    }
                )
                n_new += 1
    ctx.timings[f"{name}_gen_s"] = ctx.timings.get(f"{name}_gen_s", 0.0) + time.perf_counter() - t0
    ctx.timings[f"{name}_new"] = ctx.timings.get(f"{name}_new", 0) + n_new
    recs = select(read_jsonl(path), items)
    check_empty(ctx, name, recs)
    return recs


EMPTY_CHARS = 3  # a reply with fewer non-space characters is near-empty
EMPTY_WARN = 0.05  # share of near-empty replies that is warned about (and shown in the report)


def check_empty(ctx: EvalContext, name: str, recs: list[Record]) -> None:
    """Empty or near-empty replies are never a score: a model whose chat template (or stop settings)
    ends the turn at once "refuses nothing" and "complies with nothing". Counted per eval into the
    summary; over EMPTY_WARN a loud warning, over eval.max_empty_share the eval stops."""
    if not recs:
        return
    n_empty = sum(len("".join(str(r.get("text", "")).split())) < EMPTY_CHARS for r in recs)
    share = n_empty / len(recs)
    prev = ctx.empty.get(name, [0, 0])  # asr generates twice (templates, then AutoDAN's candidates)
    ctx.empty[name] = [prev[0] + n_empty, prev[1] + len(recs)]
    if share > ctx.ecfg.max_empty_share:
        raise UserError(
            f"eval {name}: {share:.0%} of {ctx.label} replies ({ctx.model}) are empty or near-empty; its chat "
            "template or stop settings end the turn at once (see README, Any model): fix that, or set "
            "eval.max_empty_share=1 to score them anyway"
        )
    if share > EMPTY_WARN:
        print(
            f"[ptalign] WARNING eval {name}: {n_empty} of {len(recs)} {ctx.label} replies are empty or near-empty",
            file=sys.stderr,
        )


def select(recs: Iterable[Record], items: list[Record]) -> list[Record]:
    """Records whose id is in items, in items' order (a file may hold more, from an earlier config)."""
    by_id = {r["id"]: r for r in recs}
    return [by_id[it["id"]] for it in items if it["id"] in by_id]


def user_chat(prompt: str) -> Chat:
    return [{"role": "user", "content": prompt}]


def mean(xs: Iterable[float]) -> float | None:
    xs = [float(x) for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


# ------------------------------------------------------------------------------------------ judging


def engine_kind(engine: str) -> str | None:
    """eval.engine → the backend kind both models generate through (None = each its own, `auto`)."""
    if engine == "fastest":
        from ptalign.llm.vllm_backend import vllm_available

        return "vllm" if vllm_available() else "transformers"
    if engine == "vllm":
        from ptalign.llm.vllm_backend import vllm_available

        if not vllm_available():
            raise UserError(
                "eval.engine=vllm: vLLM is not installed here; run bash scripts/install_vllm.sh, or use "
                "eval.engine=transformers (or fastest)"
            )
    return None if engine == "auto" else engine


def eval_dtype(cfg: RunConfig) -> str:
    """eval.dtype with `auto` resolved: bfloat16 where it is native (models.native_bf16), else model.dtype."""
    if cfg.eval.dtype != "auto":
        return cfg.eval.dtype
    from ptalign import models

    return "bfloat16" if models.native_bf16() else cfg.model.dtype


def judge_attr(name: str, attr: str, default: Any) -> Any:
    """Judge `name`'s attribute without its model: an LLM judge's class (no backend is built), else the
    judge itself (its classifiers fit on first use, not here)."""
    if name in LLM_JUDGES:
        from ptalign.judges import llm

        return getattr(llm.LLM_JUDGES[name], attr, default)
    return getattr(JUDGES[name](None), attr, default)


def judge_names(ecfg: Any, harmless: bool = False) -> list[str]:
    """The primary judge first, then the extra ones (each once). `harmless`: for replies to harmless
    prompts (over-refusal, MT-Bench), only the judges of refusal: a judge of harm (HarmBench, Llama
    Guard) says 'no' / 'safe' to a helpful answer too, which would read as a refusal there."""
    names = dict.fromkeys([ecfg.judge, *ecfg.judges_extra])
    return [n for n in names if not harmless or judge_attr(n, "measures_refusal", True)]


def judge_versions(names: Iterable[str]) -> dict[str, str]:
    """judge → its version now, as judge_records stores it beside each verdict ('' for unversioned)."""
    return {n: str(judge_attr(n, "version", "")) for n in names}


def judge_records(
    ctx: EvalContext, name: str, recs: list[Record], prompt_key: str, harmless: bool = False
) -> None:
    """Every configured judge's verdict on every record, appended to `<out>/<name>_verdicts.jsonl`
    (one line per record and judge, flushed as it goes, so a killed eval resumes). An LLM judge that
    is not the primary one sees a seeded sample of `eval.judge_max` records (0 = all). A line is keyed
    by the judge's version too, so a retrained judge judges again instead of reusing old verdicts.
    `harmless`: the prompts are harmless, so judges of harm only are left out (judge_names)."""
    ecfg = ctx.ecfg
    path = verdicts(ctx.out, name)
    with JsonlWriter(path, meta={**HAZARD_META, "eval": f"{name}_verdicts"}) as w:
        for jname in judge_names(ecfg, harmless):
            pool = recs
            if jname in LLM_JUDGES and jname != ecfg.judge and ecfg.judge_max:
                from ptalign.eval.datasets import subset

                pool = subset(recs, ecfg.judge_max, ecfg.seed)
            judge = ctx.make_judge(jname)
            version = getattr(judge, "version", "")
            todo = [r for r in pool if stable_id(r["id"], jname, version) not in w.done]
            t0 = time.perf_counter()
            for chunk in batches(todo, 256):
                js = judge.judge([r[prompt_key] for r in chunk], [r["text"] for r in chunk])
                for r, j in zip(chunk, js, strict=True):
                    w.write(
                        {
                            "id": stable_id(r["id"], jname, version),
                            "rec": r["id"],
                            "judge": jname,
                            "version": version,
                            "verdict": j.verdict,
                            "reason": j.reason,
                            "score": j.score,
                            "categories": list(j.unsafe_categories),
                            "raw": j.raw,
                        }
                    )
            if todo:
                ctx.timings[f"{name}_judge_{jname}_s"] = round(time.perf_counter() - t0, 2)


def read_verdicts(
    out: Path, name: str, versions: Mapping[str, str] | None = None
) -> dict[str, dict[str, Record]]:
    """judge → record id → its verdict line from `<out>/<name>_verdicts.jsonl` by the judge's version
    in `versions` (judge_versions, or a summary's meta `judge_versions`): other judges' lines and other
    versions' are left out. The file keeps every version's lines, so a judge retrained and then put
    back (A, B, A) finds A's verdicts again, and B's are never reported under A's name. None (a run
    summarised before the versions were recorded): every judge's last line per record."""
    got: dict[str, dict[str, Record]] = {}
    for v in read_jsonl(verdicts(out, name)):
        if versions is None or (v["judge"] in versions and v.get("version", "") == versions[v["judge"]]):
            got.setdefault(v["judge"], {})[v["rec"]] = v
    return got


def stored_versions(out: Path) -> dict[str, str] | None:
    """The judge versions a side's summary was computed with (None for a summary from before they were
    recorded): what a reader of its stored verdicts (the report, bench/audit.py) should read."""
    path = side_summary(out)
    if not path.is_file():
        return None
    return (json.loads(path.read_text(encoding="utf-8")).get("meta") or {}).get("judge_versions")

"""Speed of the eval paths on the embedded model, each beside the raw engine/model figure in the same run.

- hhh_scoring: items/s of `hhh.score_items` (chat template, tokenizing, one encoding of each
  conversation whose KV cache scores each distinct reply it is paired with) vs the plain way: one
  forward per (conversation + reply) sequence of every item, tokenized and batched under the same token
  budget before the clock starts. The ratio includes the shared-prefix saving, so > 1 is expected.
- asr_llamacpp: generations/s of the ASR loop (`generate_records`: templates, the backend wrapper,
  per-record JSONL append + fsync) vs `Llama.create_chat_completion` on the same Llama
  object and the same chats.
- asr_transformers: the same loop on the transformers backend (the aligned-model path) vs
  `model.generate` on the same left-padded batches.
- asr_vllm: the same loop on the evaluation's vLLM engine (bf16 where native, eager on a CPU), which
  gets its own preferred batch per call (`generate_batch`), vs the loop in calls of the preset's
  eval.batch_size (32) as before 2026-12-06; also how many replies differ by a byte (bf16 rounds by
  batch). Run it with the vLLM venv's python.
After one untimed warm-up of each, runs alternate ours/raw and the median is reported, so load from
other processes hits both alike.

    python bench/eval.py [--quick] [--paths hhh_scoring,asr_llamacpp,asr_transformers,asr_vllm] [--data-dir DIR]

Prints one JSON object: {"paths": {NAME: {"ours", "raw", "unit", "ratio", ...}}}.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# vLLM logs to stdout otherwise: keep stdout one JSON object
os.environ.setdefault("VLLM_CONFIGURE_LOGGING", "0")

import torch  # noqa: E402

from ptalign import models  # noqa: E402
from ptalign.config import load_config  # noqa: E402
from ptalign.eval import asr, attacks, datasets, hhh, loglik  # noqa: E402
from ptalign.eval.common import EvalContext, generate_records  # noqa: E402
from ptalign.llm.base import GenParams  # noqa: E402


def _alternate(ours: Any, raw: Any, repeats: int) -> tuple[float, float]:
    ours()  # warm-up, untimed: first calls pay one-off allocation and lazy-init costs
    raw()
    a, b = [], []
    for _ in range(repeats):
        a.append(ours())
        b.append(raw())
    return statistics.median(a), statistics.median(b)


def bench_hhh(cfg: Any, model: Any, tok: Any, n: int, repeats: int) -> dict[str, Any]:
    items = datasets.hhh_items(cfg.eval)[:n]
    budget = cfg.eval.score_tokens
    # raw: the same (ctx, cont) token pairs, batched and padded exactly as loglik.score does, built up front
    pairs = [
        (loglik.context_ids(tok, it["chat"]), loglik.continuation_ids(tok, c))
        for it in items
        for c in it["choices"]
    ]
    order = sorted(range(len(pairs)), key=lambda i: len(pairs[i][0]) + len(pairs[i][1]))
    batches, i = [], 0
    while i < len(order):
        j, longest = i + 1, sum(map(len, pairs[order[i]]))
        while j < len(order) and max(longest, sum(map(len, pairs[order[j]]))) * (j - i + 1) <= budget:
            longest = max(longest, sum(map(len, pairs[order[j]])))
            j += 1
        ids = torch.zeros((j - i, longest), dtype=torch.long)
        att = torch.zeros_like(ids)
        for b, k in enumerate(order[i:j]):
            full = pairs[k][0] + pairs[k][1]
            ids[b, longest - len(full) :] = torch.tensor(full)
            att[b, longest - len(full) :] = 1
        keep = max(len(pairs[k][1]) for k in order[i:j]) + 1
        batches.append((ids, att, (att.cumsum(-1) - 1).clamp(min=0), keep))
        i = j

    def ours() -> float:
        t = time.perf_counter()
        hhh.score_items(model, tok, items, budget)
        return len(items) / (time.perf_counter() - t)

    @torch.inference_mode()
    def raw() -> float:
        t = time.perf_counter()
        for ids, att, pos, keep in batches:
            model(input_ids=ids, attention_mask=att, position_ids=pos, logits_to_keep=keep)
        return len(items) / (time.perf_counter() - t)

    o, r = _alternate(ours, raw, repeats)
    return {
        "ours": o,
        "raw": r,
        "unit": "items/s",
        "ratio": o / r,
        "items": len(items),
        "batches": len(batches),
    }


def _asr_items(cfg: Any, n: int) -> list[dict[str, Any]]:
    return asr.wanted(cfg.eval)[:n]


def _chat(it: dict[str, Any]) -> Any:
    return attacks.chat_for(it["attack"], it["goal"], it["goal_id"])


def _ours_asr(
    cfg: Any, backend: Any, items: list[dict[str, Any]], params: GenParams, texts: list[str] | None = None
) -> float:
    with tempfile.TemporaryDirectory() as d:
        ctx = EvalContext(cfg=cfg, out=Path(d), model="embedded", backend_factory=lambda: backend)
        t = time.perf_counter()
        recs = generate_records(
            ctx,
            "asr",
            items,
            _chat,
            params,
            asr._fields,
        )
        rate = len(items) / (time.perf_counter() - t)
        if texts is not None:
            texts[:] = [r["text"] for r in recs]
        return rate


def _generations(o: float, r: float, items: list[Any], params: GenParams, **extra: Any) -> dict[str, Any]:
    return {
        "ours": o,
        "raw": r,
        "unit": "generations/s",
        "ratio": o / r,
        "generations": len(items),
        **extra,
        "max_new_tokens": params.max_new_tokens,
    }


def bench_asr_llamacpp(cfg: Any, n: int, repeats: int) -> dict[str, Any]:
    from ptalign.llm import make_backend

    backend = make_backend(cfg, model="embedded", kind="llamacpp", use_cache=False)
    llm = backend.inner.llm
    items = _asr_items(cfg, n)
    params = GenParams(max_new_tokens=cfg.eval.max_new_tokens, temperature=0.0)
    chats = [_chat(it) for it in items]

    def raw() -> float:
        t = time.perf_counter()
        for c in chats:
            llm.create_chat_completion(
                messages=c,
                max_tokens=params.max_new_tokens,
                temperature=0.0,
                top_k=0,
                min_p=0.0,
                repeat_penalty=1.0,
                seed=0,
            )
        return len(chats) / (time.perf_counter() - t)

    try:
        o, r = _alternate(lambda: _ours_asr(cfg, backend, items, params), raw, repeats)
    finally:
        backend.close()
    return _generations(o, r, items, params)


def bench_asr_transformers(cfg: Any, model: Any, tok: Any, n: int, repeats: int) -> dict[str, Any]:
    from ptalign.llm.cache import CachedBackend
    from ptalign.llm.hf import TransformersBackend

    inner = TransformersBackend(
        "embedded", batch_size=cfg.eval.batch_size, model=model, tokenizer=tok, model_id="bench"
    )
    backend = CachedBackend(inner, None, progress=False)
    items = _asr_items(cfg, n)
    params = GenParams(max_new_tokens=cfg.eval.max_new_tokens, temperature=0.0)
    prompts = [inner.prompt_ids(_chat(it)) for it in items]
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    bs = cfg.eval.batch_size
    # raw: the eval loop hands the backend batch_size chats at a time, which it sorts and pads
    chunks = [
        sorted(range(s, min(s + bs, len(prompts))), key=lambda i: len(prompts[i]))
        for s in range(0, len(prompts), bs)
    ]
    padded = [
        tok.pad({"input_ids": [prompts[i] for i in c]}, return_tensors="pt", padding=True) for c in chunks
    ]
    del order

    @torch.inference_mode()
    def raw() -> float:
        t = time.perf_counter()
        for b in padded:
            model.generate(
                **b,
                max_new_tokens=params.max_new_tokens,
                do_sample=False,
                temperature=None,
                top_p=None,
                top_k=None,
                pad_token_id=tok.pad_token_id,
            )
        return len(prompts) / (time.perf_counter() - t)

    o, r = _alternate(lambda: _ours_asr(cfg, backend, items, params), raw, repeats)
    return _generations(o, r, items, params, batch_size=bs)


class _Calls:
    """The engine without its preferred batch: the loop then sends eval.batch_size chats a call."""

    def __init__(self, inner: Any):
        self.inner = inner

    def generate(self, chats: Any, params: GenParams) -> Any:
        return self.inner.generate(chats, params)


def bench_asr_vllm(cfg: Any, n: int, repeats: int) -> dict[str, Any]:
    from ptalign.llm.cache import CachedBackend
    from ptalign.llm.vllm_backend import VLLMBackend, on_cpu

    cfg.eval.batch_size = 32  # the preset's
    dtype = "bfloat16" if models.native_bf16() else cfg.model.dtype
    engine = VLLMBackend(models.hf_dir("embedded"), "bench", dtype=dtype, enforce_eager=on_cpu())
    wide = CachedBackend(engine, None, progress=False)
    items = _asr_items(cfg, n)
    params = GenParams(max_new_tokens=cfg.eval.max_new_tokens, temperature=0.0)
    ours_texts: list[str] = []
    peer_texts: list[str] = []
    try:
        o, r = _alternate(
            lambda: _ours_asr(cfg, wide, items, params, ours_texts),
            lambda: _ours_asr(cfg, _Calls(engine), items, params, peer_texts),
            repeats,
        )
    finally:
        engine.close()
    return _generations(
        o,
        r,
        items,
        params,
        batch_ours=engine.preferred_batch,
        batch_peer=cfg.eval.batch_size,
        replies_differing=sum(a != b for a, b in zip(ours_texts, peer_texts, strict=True)),
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer items (3 repeats instead of 5)")
    ap.add_argument("--paths", default="hhh_scoring,asr_llamacpp,asr_transformers")
    ap.add_argument(
        "--data-dir", default="", help="eval data dir (BIG-bench HHH, AdvBench); default: built-in sets"
    )
    args = ap.parse_args()
    n_hhh, n_gen, repeats = (16, 8, 3) if args.quick else (60, 30, 5)
    n_vllm = 256 if args.quick else 512  # a batch engine needs more chats than a call to show its batching
    cfg = load_config(
        None,
        [
            f"eval.data_dir={args.data_dir}",
            "eval.max_new_tokens=48",
            "eval.batch_size=16",
            "backend.cache=false",
            f"run_dir={tempfile.mkdtemp(prefix='ptalign-bench-')}",
        ],
    )
    paths = [p.strip() for p in args.paths.split(",") if p.strip()]
    out: dict[str, Any] = {"threads": torch.get_num_threads(), "paths": {}}
    model = tok = None
    if {"hhh_scoring", "asr_transformers"} & set(paths):
        model, tok = models.load("embedded")
    if "hhh_scoring" in paths:
        out["paths"]["hhh_scoring"] = bench_hhh(cfg, model, tok, n_hhh, repeats)
    if "asr_llamacpp" in paths:
        out["paths"]["asr_llamacpp"] = bench_asr_llamacpp(cfg, n_gen, repeats)
    if "asr_transformers" in paths:
        out["paths"]["asr_transformers"] = bench_asr_transformers(cfg, model, tok, n_gen, repeats)
    if "asr_vllm" in paths:
        out["paths"]["asr_vllm"] = bench_asr_vllm(cfg, n_vllm, repeats)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()

"""vLLM backend vs raw `vllm.LLM.generate` vs the llama.cpp backend on the synthesis prompt set.

The prompts are the real pair prompts of the synthesis stage (`ptalign.synth.prompting.pos_chat` /
`tox_chat`: 3 in-context examples with inner thoughts as earlier chat turns, then rules + a new
request), built from the shipped seed requests; half safe side, half toxic side, sampled with the
stage's settings (temperature 0.8, top-p 0.95, its stop strings, one seed per chat). All engines get
the same chats:
- vllm: ptalign's backend through `make_backend(kind="vllm")` (chat template, cache wrapper, cache off);
- raw: `LLM.generate` on the same engine with the same token ids and SamplingParams, no wrapper; on CPU
  once with the top-p the backend installs (ptalign.llm.vllm_top_p) and once with vLLM's stock one;
- llamacpp: ptalign's llama.cpp backend (Q4_1 GGUF), one chat at a time, prompts grouped by side so
  llama.cpp reuses the shared prefix's KV between calls (its best case), in a subprocess run first
  (vLLM's CPU engine rebinds the threads of the process it runs in).
vllm, raw (and raw stock) alternate, median of --runs each. Run it with the vLLM venv's python:

    /opt/ptalign-vllm/bin/python bench/generation_vllm.py [--prompts 64] [--new 64] [--runs 3]

Prints one JSON object: {"backends": {"vllm": {"tokens_per_s", "raw_tokens_per_s", "ratio",
"raw_stock_tokens_per_s", "llamacpp_tokens_per_s", "vs_llamacpp", ...}}, "load": {...}}. `bench/generation.py` can also call
`bench_vllm(cfg, prompts, params, runs)` for its own prompt set.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault(
    "VLLM_CONFIGURE_LOGGING", "0"
)  # vLLM logs to stdout otherwise: keep stdout one JSON object

from ptalign.config import RunConfig  # noqa: E402
from ptalign.llm import make_backend  # noqa: E402
from ptalign.llm.base import Chat, GenParams  # noqa: E402


def synthesis_prompts(n: int, seed: int = 0) -> list[Chat]:
    """n real pair prompts: n/2 safe-side then n/2 toxic-side, over the seed requests."""
    from ptalign.seeds import load_seeds
    from ptalign.synth.prompting import pos_chat, tox_chat

    seeds = load_seeds()
    requests = [d.seed for d in seeds.domains.values()] + list(seeds.benign)
    rng = random.Random(seed)
    half = n // 2
    pos = [
        pos_chat(seeds, requests[i % len(requests)], rng.sample(seeds.pos_constraints, 2))
        for i in range(half)
    ]
    tox = [
        tox_chat(seeds, requests[i % len(requests)], rng.sample(seeds.neg_constraints, 2))
        for i in range(n - half)
    ]
    return pos + tox


def stage_params(new: int, seed: int = 1234) -> GenParams:
    from ptalign.synth.prompting import PAIR_STOP

    return GenParams(max_new_tokens=new, temperature=0.8, top_p=0.95, stop=PAIR_STOP, seed=seed)


def _timed(fn) -> float:
    t0 = time.perf_counter()
    tokens = fn()
    return tokens / (time.perf_counter() - t0)


def bench_vllm(cfg: RunConfig, prompts: list[Chat], params: GenParams, runs: int) -> dict[str, Any]:
    """ptalign's vllm backend vs raw LLM.generate on the same engine, alternating, medians.

    On CPU the raw engine is timed twice: with ptalign's top-p (the sampler the backend installs, so the
    ratio measures the wrapper alone) and with vLLM's stock sort-based top-p (`raw_stock_tokens_per_s`).
    """
    from ptalign.llm import vllm_top_p

    t0 = time.perf_counter()
    b = make_backend(cfg, kind="vllm", use_cache=False)
    start_s = time.perf_counter() - t0
    inner = b.inner
    llm = inner.llm
    token_prompts = [{"prompt_token_ids": inner.render(c)} for c in prompts]
    # per-chat seeds, as the synthesis stages send them (one SamplingParams per request)
    plist = [replace(params, seed=params.seed + i) for i in range(len(prompts))]
    sps = [inner.sampling(q) for q in plist]

    def ours() -> int:
        return sum(g.completion_tokens for g in b.generate(prompts, plist))

    def raw() -> int:
        return sum(len(o.outputs[0].token_ids) for o in llm.generate(token_prompts, sps, use_tqdm=False))

    def raw_stock() -> int:
        vllm_top_p.install(False)
        try:
            return raw()
        finally:
            vllm_top_p.install(inner.fast_top_p)

    # warm-up on a few chats of each side: first-call allocations, and both prefixes enter the cache,
    # so every timed run starts with the same warm prefix cache
    half = len(prompts) // 2
    few = [0, 1, half, half + 1]
    b.generate([prompts[i] for i in few], [plist[i] for i in few])
    llm.generate([token_prompts[i] for i in few], [sps[i] for i in few], use_tqdm=False)
    a, r, st = [], [], []
    for _ in range(runs):
        a.append(_timed(ours))
        r.append(_timed(raw))
        if inner.fast_top_p:
            st.append(_timed(raw_stock))
    t, rr = statistics.median(a), statistics.median(r)
    prompt_tokens = [len(p["prompt_token_ids"]) for p in token_prompts]
    b.close()
    out = {
        "tokens_per_s": round(t, 1),
        "raw_tokens_per_s": round(rr, 1),
        "ratio": round(t / rr, 3),
        "fast_top_p": inner.fast_top_p,
        "runs": {"ours": [round(x, 1) for x in a], "raw": [round(x, 1) for x in r]},
        "engine_start_s": round(start_s, 1),
        "prompt_tokens_mean": round(statistics.mean(prompt_tokens), 1),
    }
    if st:
        out["raw_stock_tokens_per_s"] = round(statistics.median(st), 1)
        out["ratio_vs_stock"] = round(t / out["raw_stock_tokens_per_s"], 3)
        out["runs"]["raw_stock"] = [round(x, 1) for x in st]
    return out


def bench_llamacpp(cfg: RunConfig, prompts: list[Chat], params: GenParams, runs: int) -> dict[str, Any]:
    b = make_backend(cfg, kind="llamacpp", use_cache=False)

    def ours() -> int:
        return sum(g.completion_tokens for g in b.generate(prompts, params))

    b.generate(prompts[:1], params)  # warm-up: model load and first-call allocations
    xs = [_timed(ours) for _ in range(runs)]
    b.close()
    return {"tokens_per_s": round(statistics.median(xs), 1), "runs": [round(x, 1) for x in xs]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=64, help="chats per generate call (vLLM batch)")
    ap.add_argument("--new", type=int, default=64, help="max new tokens per chat")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument(
        "--llamacpp-prompts", type=int, default=16, help="llama.cpp is per-chat: fewer chats, same speed"
    )
    ap.add_argument("--llamacpp-only", action="store_true", help=argparse.SUPPRESS)  # the subprocess
    args = ap.parse_args()
    params = stage_params(args.new)
    prompts = synthesis_prompts(args.prompts)
    cfg = RunConfig(run_dir="/tmp/ptalign-bench-vllm")
    cfg.backend.n_ctx = 2048
    # same share of safe/toxic prompts for llama.cpp, fewer of them (it runs one chat at a time)
    k, half = args.llamacpp_prompts // 2, args.prompts // 2
    if args.llamacpp_only:
        print(json.dumps(bench_llamacpp(cfg, prompts[:k] + prompts[half : half + k], params, args.runs)))
        return
    load0 = os.getloadavg()
    # llama.cpp first, in its own process: vLLM's CPU engine binds OpenMP threads and replaces
    # torch.set_num_threads in the process it runs in, which would slow a llama.cpp run after it
    lc_proc = subprocess.run(
        [sys.executable, __file__, "--llamacpp-only", *sys.argv[1:]],
        capture_output=True,
        text=True,
        check=True,
    )
    lc = json.loads(lc_proc.stdout.strip().splitlines()[-1])
    print(f"[bench] llamacpp: {json.dumps(lc)}", file=sys.stderr, flush=True)
    v = bench_vllm(cfg, prompts, params, args.runs)
    v["llamacpp_tokens_per_s"] = lc["tokens_per_s"]
    v["llamacpp_runs"] = lc["runs"]
    v["vs_llamacpp"] = round(v["tokens_per_s"] / lc["tokens_per_s"], 2)
    out = {
        "prompt_set": "synthesis pair prompts (3 ICL examples as chat turns + rules + request), half pos / half tox",
        "prompts": args.prompts,
        "llamacpp_prompts": 2 * k,
        "max_new_tokens": args.new,
        "sampling": {"temperature": params.temperature, "top_p": params.top_p, "stop": list(params.stop),
                     "seeds": "one per chat"},
        "runs": args.runs,
        "backends": {"vllm": v},
        "load": {
            "loadavg_before": [round(x, 2) for x in load0],
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
            "cpus": len(os.sched_getaffinity(0)),
        },
        "python": sys.executable,
    }  # fmt: skip
    print(json.dumps(out))


if __name__ == "__main__":
    main()

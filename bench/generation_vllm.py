"""vLLM backend vs raw `vllm.LLM.generate` vs the llama.cpp backend on the synthesis prompt set.

The prompts are the real pair prompts of the synthesis stage (`ptalign.synth.prompting.pos_chat` /
`tox_chat`: 3 in-context examples with inner thoughts as earlier chat turns, then rules + a new
request), built from the shipped seed requests; half safe side, half toxic side, sampled with the
stage's settings (temperature 0.8, top-p 0.95, its stop strings). All three engines get the same chats:
- vllm: ptalign's backend through `make_backend(kind="vllm")` (chat template, cache wrapper, cache off);
- raw: `LLM.generate` on the same engine with the same token ids and SamplingParams, no wrapper;
- llamacpp: ptalign's llama.cpp backend (Q4_1 GGUF), one chat at a time, prompts grouped by side so
  llama.cpp reuses the shared prefix's KV between calls (its best case).
vllm and raw alternate (median of --runs each), then llama.cpp (median of --runs), all in this one
process, so the same background load hits each. Run it with the vLLM venv's python:

    /opt/ptalign-vllm/bin/python bench/generation_vllm.py [--prompts 64] [--new 64] [--runs 3]

Prints one JSON object: {"backends": {"vllm": {"tokens_per_s", "raw_tokens_per_s", "ratio",
"llamacpp_tokens_per_s", "vs_llamacpp", ...}}, "load": {...}}. `bench/generation.py` can also call
`bench_vllm(cfg, prompts, params, runs)` for its own prompt set.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
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
    """ptalign's vllm backend vs raw LLM.generate on the same engine, alternating, medians."""
    t0 = time.perf_counter()
    b = make_backend(cfg, kind="vllm", use_cache=False)
    start_s = time.perf_counter() - t0
    inner = b.inner
    llm = inner.llm
    token_prompts = [{"prompt_token_ids": inner.render(c)} for c in prompts]
    sp = inner.sampling(params)

    def ours() -> int:
        return sum(g.completion_tokens for g in b.generate(prompts, params))

    def raw() -> int:
        return sum(len(o.outputs[0].token_ids) for o in llm.generate(token_prompts, sp, use_tqdm=False))

    # warm-up on a few chats of each side: first-call allocations, and both prefixes enter the cache,
    # so every timed run (ours or raw) starts with the same warm prefix cache
    half = len(prompts) // 2
    few = prompts[:2] + prompts[half : half + 2]
    b.generate(few, params)
    llm.generate([token_prompts[i] for i in (0, 1, half, half + 1)], sp, use_tqdm=False)
    a, r = [], []
    for _ in range(runs):
        a.append(_timed(ours))
        r.append(_timed(raw))
    t, rr = statistics.median(a), statistics.median(r)
    prompt_tokens = [len(p["prompt_token_ids"]) for p in token_prompts]
    b.close()
    return {
        "tokens_per_s": round(t, 1),
        "raw_tokens_per_s": round(rr, 1),
        "ratio": round(t / rr, 3),
        "runs": {"ours": [round(x, 1) for x in a], "raw": [round(x, 1) for x in r]},
        "engine_start_s": round(start_s, 1),
        "prompt_tokens_mean": round(statistics.mean(prompt_tokens), 1),
    }


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
    args = ap.parse_args()
    params = stage_params(args.new)
    prompts = synthesis_prompts(args.prompts)
    load0 = os.getloadavg()
    cfg = RunConfig(run_dir="/tmp/ptalign-bench-vllm")
    cfg.backend.n_ctx = 2048
    v = bench_vllm(cfg, prompts, params, args.runs)
    print(
        f"[bench] vllm: {json.dumps(v)}", file=sys.stderr, flush=True
    )  # kept even if llama.cpp is cut short
    # same share of safe/toxic prompts for llama.cpp, fewer of them (it runs one chat at a time)
    k = args.llamacpp_prompts // 2
    half = args.prompts // 2
    lc = bench_llamacpp(cfg, prompts[:k] + prompts[half : half + k], params, args.runs)
    v["llamacpp_tokens_per_s"] = lc["tokens_per_s"]
    v["llamacpp_runs"] = lc["runs"]
    v["vs_llamacpp"] = round(v["tokens_per_s"] / lc["tokens_per_s"], 2)
    out = {
        "prompt_set": "synthesis pair prompts (3 ICL examples as chat turns + rules + request), half pos / half tox",
        "prompts": args.prompts,
        "llamacpp_prompts": 2 * k,
        "max_new_tokens": args.new,
        "sampling": {"temperature": params.temperature, "top_p": params.top_p, "stop": list(params.stop)},
        "runs": args.runs,
        "backends": {"vllm": v},
        "load": {
            "loadavg_before": [round(x, 2) for x in load0],
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
            "cpus": len(os.sched_getaffinity(0)),
        },  # fmt: skip
        "python": sys.executable,
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()

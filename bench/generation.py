"""Tokens/s of each generation backend on the embedded model, beside the engine's own raw figure.

For each backend the same fixed prompt set is generated (greedy, cache off) through ptalign's backend
(`make_backend`, so the progress/cache wrapper is included) and through the engine directly:
- llamacpp: `Llama.create_chat_completion` on the same Llama object, one chat at a time;
- transformers: `model.generate` on the same model with the same batches (left padding);
- openai: direct HTTP POSTs to the same local `llama_cpp.server` with the same concurrency.
Runs alternate ours/raw (median of 3 each) so load from other processes hits both alike.

    python bench/generation.py [--quick] [--backends llamacpp,transformers,openai]

Prints one JSON object: {"backends": {NAME: {"tokens_per_s", "raw_tokens_per_s", "ratio", ...}}}.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from ptalign.config import RunConfig  # noqa: E402
from ptalign.llm import make_backend  # noqa: E402
from ptalign.llm.base import GenParams  # noqa: E402

QUESTIONS = [
    "What is the capital of France?",
    "Explain photosynthesis in two sentences.",
    "Give me three tips for writing clear emails.",
    "Why is the sky blue?",
    "Write a haiku about autumn.",
    "What does a compiler do?",
    "How do I boil an egg?",
    "Name three uses of copper.",
    "Summarise the plot of Romeo and Juliet.",
    "What is a prime number? Give examples.",
    "How can I improve my sleep?",
    "Describe the water cycle.",
    "What is the difference between weather and climate?",
    "Suggest a name for a bakery.",
    "How does a bicycle stay upright?",
    "List four planets of the solar system.",
]


def chats(n: int) -> list[list[dict[str, str]]]:
    return [[{"role": "user", "content": q}] for q in (QUESTIONS * 4)[:n]]


def timed(fn) -> float:
    """tokens/s of one call of fn() -> completion tokens."""
    t0 = time.perf_counter()
    tokens = fn()
    return tokens / (time.perf_counter() - t0)


def compare(ours, raw, prompts, runs: int) -> dict[str, Any]:
    """ours/raw: prompts -> completion tokens. Alternating runs, medians."""
    ours(prompts[:2]), raw(prompts[:2])  # warm-up: first-call allocations hit both alike
    a, b = [], []
    for _ in range(runs):
        a.append(timed(lambda: ours(prompts)))
        b.append(timed(lambda: raw(prompts)))
    t, r = statistics.median(a), statistics.median(b)
    return {
        "tokens_per_s": round(t, 1),
        "raw_tokens_per_s": round(r, 1),
        "ratio": round(t / r, 3),
        "runs": {"ours": [round(x, 1) for x in a], "raw": [round(x, 1) for x in b]},
    }


def bench_llamacpp(cfg: RunConfig, prompts, params: GenParams, runs: int) -> dict[str, Any]:
    b = make_backend(cfg, kind="llamacpp", use_cache=False)
    llm = b.inner.llm

    def ours(prompts) -> int:
        return sum(g.completion_tokens for g in b.generate(prompts, params))

    def raw(prompts) -> int:
        n = 0
        for c in prompts:
            r = llm.create_chat_completion(
                messages=c,
                max_tokens=params.max_new_tokens,
                temperature=0.0,
                top_k=0,
                min_p=0.0,
                repeat_penalty=1.0,
                seed=params.seed,
            )
            n += r["usage"]["completion_tokens"]
        return n

    out = compare(ours, raw, prompts, runs)
    b.close()
    return out


def bench_transformers(cfg: RunConfig, prompts, params: GenParams, runs: int) -> dict[str, Any]:
    import torch

    b = make_backend(cfg, kind="transformers", use_cache=False)
    hf = b.inner
    model, tok = hf.model, hf.tok
    eos = tok.eos_token_id
    bs = cfg.backend.batch_size

    def ours(prompts) -> int:
        return sum(g.completion_tokens for g in b.generate(prompts, params))

    def raw(prompts) -> int:
        n = 0
        for s in range(0, len(prompts), bs):
            enc = tok.apply_chat_template(
                prompts[s : s + bs],
                add_generation_prompt=True,
                padding=True,
                return_tensors="pt",
                return_dict=True,
            )
            with torch.inference_mode():
                seqs = model.generate(
                    **enc,
                    max_new_tokens=params.max_new_tokens,
                    do_sample=False,
                    temperature=None,
                    top_p=None,
                    top_k=None,
                    pad_token_id=tok.pad_token_id,
                )
            for row in seqs[:, enc["input_ids"].shape[1] :].tolist():  # tokens up to and including eos
                n += row.index(eos) + 1 if eos in row else len(row)
        return n

    out = compare(ours, raw, prompts, runs)
    out["batch_size"] = bs
    b.close()
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bench_openai(cfg: RunConfig, prompts, params: GenParams, runs: int) -> dict[str, Any]:
    from ptalign.models import embedded_gguf_path

    port = _free_port()
    url = f"http://127.0.0.1:{port}/v1"
    threads = str(cfg.backend.n_threads or len(os.sched_getaffinity(0)))
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ptalign.llm.llamacpp_server",
            "--model",
            str(embedded_gguf_path()),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--n_ctx",
            "2048",
            "--n_threads",
            threads,
            "--model_alias",
            "embedded",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(240):
            try:
                urllib.request.urlopen(f"{url}/models", timeout=2).close()
                break
            except OSError:
                time.sleep(0.5)
        cfg.backend.base_urls = [url]
        b = make_backend(cfg, kind="openai", use_cache=False)
        conc = cfg.backend.concurrency

        def ours(prompts) -> int:
            return sum(g.completion_tokens for g in b.generate(prompts, params))

        def post(chat) -> int:
            body = json.dumps(
                {
                    "model": "embedded",
                    "messages": chat,
                    "max_tokens": params.max_new_tokens,
                    "temperature": 0.0,
                    "seed": params.seed,
                }
            ).encode()
            req = urllib.request.Request(
                f"{url}/chat/completions", body, {"Content-Type": "application/json"}
            )
            with urllib.request.urlopen(req, timeout=300) as r:
                return json.load(r)["usage"]["completion_tokens"]

        def raw(prompts) -> int:
            with ThreadPoolExecutor(conc) as pool:
                return sum(pool.map(post, prompts))

        out = compare(ours, raw, prompts, runs)
        out["concurrency"] = conc
        b.close()
        return out
    finally:
        server.terminate()
        server.wait(timeout=30)


BENCHES = {"llamacpp": bench_llamacpp, "transformers": bench_transformers, "openai": bench_openai}


# ---- vllm (issue 7) ------------------------------------------------------------------------------
# Lives in bench/generation_vllm.py (which also runs the synthesis-prompt comparison against llama.cpp);
# needs vLLM's venv: /opt/ptalign-vllm/bin/python bench/generation.py --backends vllm
def bench_vllm(cfg: RunConfig, prompts, params: GenParams, runs: int) -> dict[str, Any]:
    from generation_vllm import bench_vllm as run  # bench/ is on sys.path when this file is run

    return run(cfg, prompts, params, runs)


BENCHES["vllm"] = bench_vllm


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="8 prompts × 32 new tokens instead of 16 × 64")
    ap.add_argument("--backends", default="llamacpp,transformers,openai")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument(
        "--threads", type=int, default=0, help="CPU threads for llama.cpp and torch (0 = all cores)"
    )
    args = ap.parse_args()
    if args.threads:  # on a busy shared CPU one thread beats two by ~10x (spinning barriers)
        import torch

        torch.set_num_threads(args.threads)
    n, new = (8, 32) if args.quick else (16, 64)
    prompts, params = chats(n), GenParams(max_new_tokens=new)
    result: dict[str, Any] = {
        "prompts": n,
        "max_new_tokens": new,
        "runs": args.runs,
        "threads": args.threads,
        "backends": {},
    }
    for name in args.backends.split(","):
        cfg = RunConfig(run_dir="/tmp/ptalign-bench")
        cfg.backend.n_threads = args.threads
        result["backends"][name] = BENCHES[name](cfg, prompts, params, args.runs)
    print(json.dumps(result))


if __name__ == "__main__":
    main()

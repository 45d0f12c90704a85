"""Guided goal lists (synth.goal_guidance): guidance inside vLLM's sampler against transformers' own.

The same goal-list chats the synthesis sends (the seeds' demo turn, then "List 5 harmful goals …" for
one topic per domain and round), sampled as it samples them (temperature 0.8, top-p 0.95, the list
stop strings, 128 new tokens), under guidance at scale 4 away from each chat's harmless twin:
- `vllm`: llm/vllm_guided.py, each chat and its twin as two requests of one engine step, the guided
  draw made in a logits processor (`VLLMBackend.generate_guided`);
- `transformers`: llm/guided.py, `model.generate(guidance_scale=…, negative_prompt_ids=…)` on the
  model in bf16 where the CPU has it (as `make_guided_backend` loads it), `backend.batch_size` chats
  a batch;
- `vllm_plain`: the same chats unguided on the same engine, for scale.
Runs alternate (median of `--repeats` each) so that load from other processes hits all alike. Run it
with the vLLM venv's python:

    /opt/ptalign-vllm/bin/python bench/guided.py [--lists 48] [--repeats 3]

Prints one JSON object: {"vllm": {"tokens_per_s", ...}, "transformers": {...}, "vllm_plain": {...},
"speedup": vllm / transformers}.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import time
from types import SimpleNamespace
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("VLLM_CONFIGURE_LOGGING", "0")  # vLLM logs to stdout otherwise: keep it one JSON

from ptalign import models  # noqa: E402
from ptalign.config import RunConfig  # noqa: E402
from ptalign.llm import make_backend  # noqa: E402
from ptalign.llm.base import GenParams  # noqa: E402
from ptalign.llm.guided import GuidedBackend  # noqa: E402
from ptalign.seeds import load_seeds  # noqa: E402
from ptalign.synth.expand import _demo, harmless_twin  # noqa: E402
from ptalign.synth.lists import PER_CALL  # noqa: E402
from ptalign.synth.prompting import LIST_STOP, render  # noqa: E402

SCALE = 4.0  # what the experiments ran (docs/experiments.md, "Guided goals")


def goal_chats(n: int) -> list[list[dict]]:
    seeds = load_seeds()
    demo = _demo(SimpleNamespace(seeds=seeds), "goals")
    domains = list(seeds.domains.values())
    return [
        [*demo, {"role": "user", "content": render("goals", description=d.description, topic=f"{d.description}, case {i}", n=PER_CALL)}]
        for i in range(n)
        for d in [domains[i % len(domains)]]
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lists", type=int, default=48, help="goal-list chats per run")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    cfg = RunConfig(run_dir="runs/bench-guided")
    cfg.backend.kind = "vllm"
    engine = make_backend(cfg, use_cache=False).inner
    dtype = "bfloat16" if models.native_bf16() else cfg.model.dtype
    hf = GuidedBackend(
        "embedded", SCALE, harmless_twin, "harmless-goals", dtype=dtype, batch_size=cfg.backend.batch_size
    )
    chats = goal_chats(args.lists)
    twins = [harmless_twin(c) for c in chats]
    p = GenParams(max_new_tokens=128, temperature=0.8, top_p=0.95, stop=LIST_STOP, seed=0)
    ways = {
        "vllm": lambda q: engine.generate_guided(chats, twins, q, SCALE),
        "transformers": lambda q: hf.generate(chats, q),
        "vllm_plain": lambda q: engine.generate(chats, q),
    }  # fmt: skip
    runs: dict[str, list[tuple[float, int]]] = {name: [] for name in ways}
    for way in ways.values():  # warm-up: compile, caches
        way(GenParams(max_new_tokens=4))
    for r in range(args.repeats):
        q = dataclasses.replace(p, seed=r)
        for name, way in ways.items():
            t = time.perf_counter()
            n = sum(g.completion_tokens for g in way(q))
            runs[name].append((time.perf_counter() - t, n))
    out: dict[str, Any] = {
        "lists": args.lists,
        "scale": SCALE,
        "hf_dtype": dtype,
        "cpu_threads": models.cpu_threads(),
    }
    for name, rs in runs.items():
        out[name] = {
            "tokens_per_s": round(statistics.median(n / s for s, n in rs), 1),
            "seconds": [round(s, 1) for s, _ in rs],
            "tokens": [n for _, n in rs],
        }
    out["speedup"] = round(out["vllm"]["tokens_per_s"] / out["transformers"]["tokens_per_s"], 2)
    print(json.dumps(out))
    hf.close()
    engine.close()
    return out


if __name__ == "__main__":
    main()

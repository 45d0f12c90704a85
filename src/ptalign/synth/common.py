"""What every synthesis stage shares: the backend wrapper that counts tokens, writers.

Reads/Writes: `RUN_DIR/data/*.jsonl` through `Ctx.writer` (append + fsync per record, ids skipped
on resume); the metadata line of each file carries the hazard flag and the synth config hash.
"""

from __future__ import annotations

import inspect
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ptalign.config import RunConfig
from ptalign.errors import UserError
from ptalign.io import HAZARD_META, JsonlWriter, read_meta, stable_id
from ptalign.llm.base import Backend, Chat, Generation, GenParams, Params
from ptalign.rundir import RunDir
from ptalign.seeds import Seeds


@dataclass
class Counter:
    """Engine tokens and time of this process (cached calls excluded): what tokens/s is made of."""

    calls: int = 0
    cached_calls: int = 0
    new_tokens: int = 0
    prompt_tokens: int = 0
    gen_seconds: float = 0.0


@dataclass
class Ctx:
    cfg: RunConfig
    run: RunDir
    backend: Backend
    seeds: Seeds
    config_hash: str
    counter: Counter = field(default_factory=Counter)
    _writers: dict[str, JsonlWriter] = field(default_factory=dict)

    def reject(self, stage: str, reason: str, text: str, parent: str, key: tuple) -> None:
        """One dropped item and why, into rejected.jsonl (stats count them per stage and reason)."""
        self.record("rejected", {"id": stable_id("rej", stage, *key), "parent": parent, "stage": stage,
                                 "reason": reason, "text": text})  # fmt: skip

    @property
    def data_dir(self) -> Path:
        return self.run.data

    @property
    def s(self):  # noqa: ANN201 - the SynthConfig, the settings every stage reads
        return self.cfg.synth

    @property
    def batch(self) -> int:
        """Chats the engine takes per call at its best: 1 for llama.cpp, hundreds for vLLM."""
        return max(1, int(getattr(self.backend, "preferred_batch", 1)))

    def gen(self, chats: list[Chat], params: Params, desc: str = "") -> list[Generation]:
        t0 = time.perf_counter()
        if "desc" in inspect.signature(self.backend.generate).parameters:  # the cache's progress-bar label
            out = self.backend.generate(chats, params, desc=desc)  # type: ignore[call-arg]
        else:  # a plain Backend (a TypeError inside generation must not send the call again)
            out = self.backend.generate(chats, params)
        fresh = [g for g in out if not g.cached]
        if fresh:  # time only counts when the engine ran
            self.counter.gen_seconds += time.perf_counter() - t0
        self.counter.calls += len(out)
        self.counter.cached_calls += len(out) - len(fresh)
        self.counter.new_tokens += sum(g.completion_tokens for g in fresh)
        self.counter.prompt_tokens += sum(g.prompt_tokens for g in fresh)
        return out

    def writer(self, name: str) -> JsonlWriter:
        """The append-only writer of data file `name`, checked against this config on first open."""
        if name not in self._writers:
            path = self.run.data_file(name)
            meta = read_meta(path)
            if meta is not None and meta.get("config") != self.config_hash:
                raise UserError(
                    f"{path} was made with another synth config (hash {meta.get('config')}, now {self.config_hash}); "
                    "use a new --out directory or move the old data/ away"
                )
            self._writers[name] = JsonlWriter(
                path, meta={**HAZARD_META, "file": name, "config": self.config_hash}
            )
        return self._writers[name]

    def record(self, name: str, rec: dict[str, Any]) -> bool:
        return self.writer(name).write({**rec, "config": self.config_hash})

    def close(self) -> None:
        for w in self._writers.values():
            w.close()
        self._writers.clear()


def params(
    ctx: Ctx, max_new_tokens: int, stop: tuple[str, ...], seed: int, temperature: float | None = None
) -> GenParams:
    s = ctx.s
    return GenParams(
        max_new_tokens=max_new_tokens,
        temperature=s.temperature if temperature is None else temperature,
        top_p=s.top_p,
        stop=stop,
        seed=seed,
    )


class Lookahead:
    """Round loops over units (domains, topics) batched ahead for a batch engine, same texts as one by one.

    The list stages ask unit after unit, round after round, and whether unit j needs round r depends on
    what was kept before it, so the calls cannot all be known up front. When unit i needs round r, this
    asks round r for unit i and every later unit at once (one engine call) and hands each out when its
    unit gets there; a later unit that fills up before round r leaves its call unused (counted in the
    stage's tokens: the price of the batch). Each call's prompt and seed depend only on (unit, round),
    so the calls are the ones the sequential loop makes. With llama.cpp (batch 1) it asks one at a time.
    """

    def __init__(self, ctx: Ctx, units: list[Any], plan: Any, desc: str):
        self.ctx, self.units, self.plan, self.desc = (
            ctx,
            units,
            plan,
            desc,
        )  # plan(unit, rnd) -> (chat, params)
        self._got: dict[tuple[int, int], Generation] = {}
        self._asked: set[tuple[int, int]] = set()

    def get(self, i: int, rnd: int) -> Generation:
        if (i, rnd) not in self._got:
            span = range(i, len(self.units)) if self.ctx.batch > 1 else (i,)
            keys = [(j, rnd) for j in span if (j, rnd) not in self._asked]
            calls = [self.plan(self.units[j], rnd) for j, _ in keys]
            gens = self.ctx.gen([c for c, _ in calls], [p for _, p in calls], desc=self.desc)
            self._asked.update(keys)
            self._got.update(zip(keys, gens, strict=True))
        return self._got.pop((i, rnd))

"""The LLM-call cache and the one wrapper every backend goes through (cache + progress bar).

Reads/Writes: `RUN_DIR/cache/llm_calls.sqlite` (default path; see `make_backend`).

A call is keyed by sha256 of (model identity, backend name, chat, sampling params incl. seed), so an
interrupted synthesis rerun replays every finished call from disk and only generates the rest. SQLite
in WAL mode with one transaction per batch: a batch that committed is on disk even if the process is
killed with -9 right after; a batch that did not commit is simply generated again.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from pathlib import Path

from tqdm.auto import tqdm

from ptalign.llm.base import Backend, Chat, Generation, GenParams, Params, per_chat

PROGRESS_MIN_ITEMS = 5  # loops over fewer calls than this get no bar


def call_key(model_id: str, backend: str, chat: Chat, params: GenParams) -> str:
    blob = json.dumps(
        {"model": model_id, "backend": backend, "chat": chat, "params": params.to_dict()},
        sort_keys=True,
        ensure_ascii=False,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


class CallCache:
    """key → Generation in one SQLite file; safe to share between threads of one process."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # one fsync per batch commit: cheap next to generation
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS calls (key TEXT PRIMARY KEY, text TEXT NOT NULL,"
            " prompt_tokens INTEGER, completion_tokens INTEGER, finish_reason TEXT, meta TEXT, created REAL)"
        )

    def get_many(self, keys: list[str]) -> dict[str, Generation]:
        found: dict[str, Generation] = {}
        uniq = list(dict.fromkeys(keys))
        with self._lock:
            for i in range(0, len(uniq), 500):  # SQLite caps bound parameters per statement
                part = uniq[i : i + 500]
                rows = self._db.execute(
                    f"SELECT key, text, prompt_tokens, completion_tokens, finish_reason, meta FROM calls"
                    f" WHERE key IN ({','.join('?' * len(part))})",
                    part,
                ).fetchall()
                for k, text, pt, ct, fr, meta in rows:
                    found[k] = Generation(
                        text, pt or 0, ct or 0, fr or "", cached=True, meta=json.loads(meta or "{}")
                    )
        return found

    def put_many(self, items: list[tuple[str, Generation]]) -> None:
        """All rows in one transaction: after this returns they survive a kill -9."""
        if not items:
            return
        now = time.time()
        rows = [
            (
                k,
                g.text,
                g.prompt_tokens,
                g.completion_tokens,
                g.finish_reason,
                json.dumps(g.meta, default=str),
                now,
            )
            for k, g in items
        ]
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany("INSERT OR REPLACE INTO calls VALUES (?,?,?,?,?,?,?)", rows)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM calls").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()


class CachedBackend:
    """Wraps any Backend: serves repeated calls from the cache (when given one), sends the rest to the
    engine in batches of `inner.preferred_batch`, commits each batch, and shows one progress bar with
    tokens/s for calls over PROGRESS_MIN_ITEMS chats."""

    def __init__(self, inner: Backend, cache: CallCache | None = None, progress: bool = True, desc: str = ""):
        self.inner = inner
        self.cache = cache
        self.progress = progress
        self.desc = desc or inner.name
        self.name = inner.name
        self.engine_calls = 0  # chats actually sent to the engine (tests and stats read it)

    @property
    def model_id(self) -> str:
        return self.inner.model_id

    @property
    def preferred_batch(self) -> int:
        """Chats the engine wants per call (1 for llama.cpp, hundreds for vLLM): callers size work by it."""
        return max(1, int(getattr(self.inner, "preferred_batch", 8)))

    def generate(self, chats: list[Chat], params: Params, desc: str | None = None) -> list[Generation]:
        n = len(chats)
        plist = per_chat(params, n)
        out: list[Generation | None] = [None] * n
        keys: list[str] = []
        if self.cache is not None:
            mid = self.inner.model_id
            keys = [call_key(mid, self.inner.name, c, p) for c, p in zip(chats, plist, strict=True)]
            hits = self.cache.get_many(keys)
            for i, k in enumerate(keys):
                if k in hits:
                    out[i] = hits[k]
        # identical chats with identical params and seed give the same text: generate each once
        todo: dict[str, list[int]] = {}
        for i in range(n):
            if out[i] is None:
                todo.setdefault(keys[i] if keys else str(i), []).append(i)
        bar = tqdm(
            total=n,
            desc=desc or self.desc,
            unit="call",
            disable=not self.progress or n < PROGRESS_MIN_ITEMS,
            leave=False,
            dynamic_ncols=True,
        )
        bar.update(n - sum(len(v) for v in todo.values()))
        t0, new_tokens = time.perf_counter(), 0
        groups = list(todo.values())
        step = self.preferred_batch
        try:
            for s in range(0, len(groups), step):
                chunk = groups[s : s + step]
                # a shared GenParams stays one object for the engine; per-chat ones go along per chat
                sent = params if isinstance(params, GenParams) else [plist[g[0]] for g in chunk]
                gens = self.inner.generate([chats[g[0]] for g in chunk], sent)
                self.engine_calls += len(chunk)
                if self.cache is not None:
                    self.cache.put_many([(keys[g[0]], gen) for g, gen in zip(chunk, gens, strict=True)])
                for g, gen in zip(chunk, gens, strict=True):
                    for i in g:
                        out[i] = gen
                    new_tokens += gen.completion_tokens
                bar.update(sum(len(g) for g in chunk))
                bar.set_postfix_str(
                    f"{new_tokens / max(time.perf_counter() - t0, 1e-9):.1f} tok/s", refresh=True
                )
        finally:
            bar.close()
        return [g for g in out if g is not None]

    def close(self) -> None:
        self.inner.close()
        if self.cache is not None:
            self.cache.close()

"""The LLM-call cache: hit path, key contents, batch commits that survive kill -9, --no-cache."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import textwrap

import pytest

from ptalign.llm import make_backend
from ptalign.llm.base import Generation, GenParams
from ptalign.llm.cache import CachedBackend, CallCache, call_key

CHAT = [{"role": "user", "content": "Which city is the capital of France?"}]
P = GenParams(max_new_tokens=8)


def test_key_covers_model_backend_chat_params_and_seed() -> None:
    base = call_key("m", "llamacpp", CHAT, P)
    assert base == call_key("m", "llamacpp", [dict(m) for m in CHAT], GenParams(max_new_tokens=8))
    variants = [
        call_key("m2", "llamacpp", CHAT, P),
        call_key("m", "transformers", CHAT, P),
        call_key("m", "llamacpp", [{"role": "user", "content": "What is the capital of Spain?"}], P),
        call_key("m", "llamacpp", [{"role": "system", "content": "x"}, *CHAT], P),
    ] + [
        call_key("m", "llamacpp", CHAT, dataclasses.replace(P, **{k: v}))
        for k, v in [
            ("max_new_tokens", 9),
            ("temperature", 0.7),
            ("top_p", 0.9),
            ("stop", ("\n",)),
            ("seed", 1),
        ]
    ]
    assert len({base, *variants}) == len(variants) + 1


def test_second_identical_call_is_served_from_cache(llamacpp_backend, tmp_path) -> None:
    path = tmp_path / "calls.sqlite"
    first = CachedBackend(llamacpp_backend, CallCache(path), progress=False)
    g1 = first.generate([CHAT], P)
    # the model's words differ between CPUs (Q4_1 greedy on AVX2 said "Paris", on AVX-512 "Le Grand
    # Château"); what matters is that the engine answered once
    assert first.engine_calls == 1 and not g1[0].cached and g1[0].text.strip() and g1[0].completion_tokens > 0
    first.cache.close()

    # a new process would open a new connection: the row is there and the engine is not called
    second = CachedBackend(llamacpp_backend, CallCache(path), progress=False)
    g2 = second.generate([CHAT, CHAT], P)
    assert second.engine_calls == 0
    assert [g.text for g in g2] == [g1[0].text] * 2 and all(g.cached for g in g2)
    assert g2[0].completion_tokens == g1[0].completion_tokens > 0

    # a different seed is a different call
    second.generate([CHAT], dataclasses.replace(P, seed=7))
    assert second.engine_calls == 1
    second.cache.close()


class _Echo:
    """Canned engine for bookkeeping tests: echoes the last user message."""

    name = "echo"
    model_id = "echo-1"
    preferred_batch = 3

    def __init__(self) -> None:
        self.batches: list[int] = []

    def generate(self, chats, params):
        self.batches.append(len(chats))
        return [Generation(c[-1]["content"].upper(), 3, 2, "stop") for c in chats]

    def close(self) -> None:
        pass


def test_duplicates_generated_once_and_batches_committed(tmp_path, capsys) -> None:
    inner = _Echo()
    b = CachedBackend(inner, CallCache(tmp_path / "c.sqlite"))
    chats = [[{"role": "user", "content": f"q{i % 5}"}] for i in range(10)]
    out = b.generate(chats, P)
    assert [g.text for g in out] == [f"Q{i % 5}" for i in range(10)]
    assert inner.batches == [3, 2]  # 5 distinct chats in engine batches of 3
    assert len(b.cache) == 5
    assert "tok/s" in capsys.readouterr().err  # 10 calls: the progress bar shows throughput


def test_no_cache_bypasses(cfg, tmp_path) -> None:
    b = make_backend(cfg, use_cache=False)
    assert b.cache is None
    cfg2 = dataclasses.replace(cfg, backend=dataclasses.replace(cfg.backend, cache=False))
    assert make_backend(cfg2).cache is None
    b.inner.close()
    with_cache = make_backend(cfg)
    assert with_cache.cache.path == tmp_path / "run" / "cache" / "llm_calls.sqlite"
    with_cache.close()


def test_committed_batch_survives_kill_9(tmp_path) -> None:
    path = tmp_path / "c.sqlite"
    script = textwrap.dedent(
        f"""
        import os, signal
        from ptalign.llm.base import Generation
        from ptalign.llm.cache import CallCache
        c = CallCache({str(path)!r})
        c.put_many([("committed-a", Generation("A", 1, 1, "stop")), ("committed-b", Generation("B", 1, 1, "stop"))])
        c._db.execute("BEGIN IMMEDIATE")
        c._db.execute("INSERT INTO calls VALUES ('uncommitted', 'C', 1, 1, 'stop', '{{}}', 0)")
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    r = subprocess.run([sys.executable, "-c", script], capture_output=True)
    assert r.returncode == -9, r.stderr.decode()
    c = CallCache(path)
    got = c.get_many(["committed-a", "committed-b", "uncommitted"])
    assert {k: g.text for k, g in got.items()} == {"committed-a": "A", "committed-b": "B"}
    c.close()


def test_per_chat_params_key_each_call(tmp_path) -> None:
    """The same chat under two seeds is two calls; each comes back from the cache under its own params."""
    inner = _Echo()
    b = CachedBackend(inner, CallCache(tmp_path / "c.sqlite"))
    chat = [{"role": "user", "content": "q"}]
    ps = [GenParams(seed=1), GenParams(seed=2), GenParams(seed=1)]
    b.generate([chat] * 3, ps)
    assert b.engine_calls == 2  # seed 1 twice: generated once
    assert len(b.cache) == 2
    b.generate([chat], [GenParams(seed=2)])
    assert b.engine_calls == 2  # from the cache
    with pytest.raises(ValueError, match="one per chat"):
        b.generate([chat] * 2, ps)

"""Multi-node recipe (docs/scaling.md): the `openai` backend spread over two REAL OpenAI-compatible
servers on loopback (two `python -m llama_cpp.server` processes on the embedded GGUF).

Shows that (1) both servers receive work, counted from each server's own access log, not from the
client, and (2) when one server is killed in the middle of a batch, every chat of that batch is still
answered (failover to the live server) and the batch is then replayable from the call cache.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from ptalign.config import RunConfig
from ptalign.llm import make_backend
from ptalign.llm.base import GenParams

pytestmark = pytest.mark.slow

POST = re.compile(rb"POST /v1/chat/completions HTTP/1\.1\" 200")
TOPICS = [
    "rivers",
    "bread",
    "bicycles",
    "owls",
    "clouds",
    "chess",
    "tea",
    "maps",
    "bees",
    "glass",
    "trains",
    "salt",
    "kites",
    "moss",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One `python -m llama_cpp.server` on 127.0.0.1 with its access log in a file."""

    def __init__(self, gguf: Path, log: Path):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.log = log
        env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
        }  # uvicorn's access log goes to stdout: no lines lost on kill
        with open(log, "wb") as f:
            # one thread each: the two servers share this machine's 2 cores
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "ptalign.llm.llamacpp_server", "--model", str(gguf), "--host", "127.0.0.1",
                 "--port", str(self.port), "--n_ctx", "1024", "--n_threads", "1", "--model_alias", "smollm2-135m"],
                stdout=f, stderr=subprocess.STDOUT, env=env,
            )  # fmt: skip

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.time() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"llama_cpp.server exited {self.proc.returncode}: {self.log.read_text()[-1500:]}"
                )
            try:
                with urllib.request.urlopen(f"{self.url}/models", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            if time.time() > deadline:
                raise RuntimeError(f"llama_cpp.server on port {self.port} not ready after {timeout:.0f} s")
            time.sleep(0.5)

    def served(self) -> int:
        """Chat completions this server answered with 200 (uvicorn logs one line per response)."""
        return len(POST.findall(self.log.read_bytes()))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)


@pytest.fixture
def two_servers(embedded_gguf: Path, tmp_path: Path):
    servers = [Server(embedded_gguf, tmp_path / f"server{i}.log") for i in range(2)]
    try:
        for s in servers:
            s.wait_ready()
        yield servers
    finally:
        for s in servers:
            s.stop()


def _chats(n: int, offset: int = 0) -> list[list[dict[str, str]]]:
    return [
        [{"role": "user", "content": f"Write one sentence about {TOPICS[(i + offset) % len(TOPICS)]}."}]
        for i in range(n)
    ]


def test_spread_and_failover(two_servers: list[Server], tmp_path: Path) -> None:
    a, b = two_servers
    cfg = RunConfig(run_dir=str(tmp_path / "run"))
    cfg.backend.kind = "openai"
    cfg.backend.base_urls = [a.url, b.url]
    cfg.backend.served_model = "smollm2-135m"
    cfg.backend.concurrency = 2
    cfg.backend.max_retries = 4
    cfg.backend.timeout_s = 180  # generous: CI machines can be loaded
    backend = make_backend(cfg)  # call cache on: RUN_DIR/cache/llm_calls.sqlite
    params = GenParams(max_new_tokens=16, temperature=0.0)

    # 1. spread: 4 chats over 2 servers, round-robin → 2 each by the servers' own count (a retry
    # after a timeout on a loaded machine may move one to the other server: both must still get work)
    gens = backend.generate(_chats(4), params)
    assert all(g.text.strip() and g.completion_tokens > 0 for g in gens)
    assert a.served() >= 1 and b.served() >= 1 and a.served() + b.served() >= 4
    assert {g.meta["server"] for g in gens} == {a.url, b.url}

    # 2. failover: kill server A once it has answered part of a 10-chat batch
    chats = _chats(10, offset=4)
    out: dict[str, object] = {}
    a_before = a.served()

    def run() -> None:
        try:
            out["gens"] = backend.generate(chats, params)
        except BaseException as e:  # re-raised in the test thread below
            out["error"] = e

    t = threading.Thread(target=run)
    t.start()
    deadline = time.time() + 120
    while a.served() == a_before and t.is_alive() and time.time() < deadline:
        time.sleep(0.05)
    mid_run = t.is_alive()
    a.stop()
    t.join(timeout=300)
    assert not t.is_alive(), "generate did not return after one server died"
    if "error" in out:
        raise out["error"]  # type: ignore[misc]
    assert mid_run, "the batch finished before server A could be stopped: nothing was tested"
    gens2 = out["gens"]
    assert isinstance(gens2, list) and len(gens2) == len(chats)
    assert not any(g.cached for g in gens2)  # all 14 chats are distinct: each one went to a server
    assert all(g.text.strip() and g.completion_tokens > 0 for g in gens2), "a chat was lost"
    by_a = sum(g.meta["server"] == a.url for g in gens2)
    by_b = sum(g.meta["server"] == b.url for g in gens2)
    assert by_a + by_b == len(chats)
    # A was answering when it died; a reply A logged just before the kill may never reach the client
    # (then B answers that chat again), so the client's count for A is at most A's own count.
    assert a.served() - a_before >= 1 and by_a <= a.served() - a_before
    assert by_b > len(chats) // 2  # ... and B took over the rest, including A's share
    assert b.served() == 2 + by_b

    # 3. the whole batch was committed to the cache: a rerun sends nothing to the (one) live server
    sent = backend.engine_calls
    again = backend.generate(chats, params)
    assert backend.engine_calls == sent and all(g.cached for g in again)
    assert [g.text for g in again] == [g.text for g in gens2]
    backend.close()

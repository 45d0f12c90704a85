"""openai backend: a real llama_cpp.server on loopback, and fault paths against a scripted real HTTP server."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from ptalign.llm import make_backend
from ptalign.llm.base import BackendError, GenParams
from ptalign.llm.openai_backend import OpenAIBackend, pick_url

CAPITAL = [{"role": "user", "content": "Which city is the capital of France?"}]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- the real server


def test_real_llama_server(cfg, llama_server) -> None:
    cfg.backend.kind = "openai"
    cfg.backend.base_urls = [llama_server]
    cfg.backend.concurrency = 2
    b = make_backend(cfg, use_cache=False)
    assert b.model_id == "openai:smollm2-135m"  # asked the server which model it serves
    gens = b.generate([CAPITAL, CAPITAL], GenParams(max_new_tokens=10))
    assert gens[0].text.strip() and gens[0].text == gens[1].text  # greedy: the same answer twice
    assert all(g.completion_tokens > 0 and g.prompt_tokens > 0 for g in gens)
    b.close()


# ---------------------------------------------------------------- scripted fault server

OK_BODY = {
    "id": "x",
    "object": "chat.completion",
    "created": 0,
    "model": "fake",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "fine"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 4, "completion_tokens": 1, "total_tokens": 5},
}


class Script:
    """A real HTTP server on loopback answering chat requests from a script of (status, body, delay)."""

    def __init__(self, replies: list[tuple[int, object, float]], default=(200, OK_BODY, 0.0)):
        self.replies = list(replies)
        self.default = default
        self.requests: list[dict] = []
        self.auth: list[str] = []
        lock = threading.Lock()
        script = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):  # keep test output clean
                pass

            def _send(self, status: int, body: object, headers: dict | None = None) -> None:
                raw = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(raw)

            def do_GET(self):
                self._send(
                    200,
                    {
                        "object": "list",
                        "data": [{"id": "fake", "object": "model", "created": 0, "owned_by": "t"}],
                    },
                )

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with lock:
                    script.requests.append(body)
                    script.auth.append(self.headers.get("Authorization", ""))
                    status, reply, delay = script.replies.pop(0) if script.replies else script.default
                if delay:
                    time.sleep(delay)
                self._send(status, reply, {"Retry-After": "0"} if status == 429 else None)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def script():
    made: list[Script] = []

    def make(replies, **kw) -> Script:
        s = Script(replies, **kw)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


def backend(*urls: str, **kw) -> OpenAIBackend:
    kw.setdefault("max_retries", 3)
    kw.setdefault("backoff_base", 0.01)
    kw.setdefault("timeout_s", 5.0)
    return OpenAIBackend(list(urls), **kw)


def test_pick_url_round_robin_and_failover() -> None:
    urls = ["a", "b", "c"]
    assert [pick_url(urls, i, 0) for i in range(4)] == ["a", "b", "c", "a"]
    assert [pick_url(urls, 1, k) for k in range(3)] == ["b", "c", "a"]


def test_5xx_then_success(script) -> None:
    s = script([(500, {"error": "boom"}, 0), (503, {"error": "busy"}, 0)])
    (g,) = backend(s.url).generate([CAPITAL], GenParams(max_new_tokens=4, stop=("x",), seed=5))
    assert g.text == "fine" and g.completion_tokens == 1 and g.finish_reason == "stop"
    assert len(s.requests) == 3
    sent = s.requests[-1]
    assert sent["max_tokens"] == 4 and sent["stop"] == ["x"] and sent["seed"] == 5 and sent["model"] == "fake"


def test_429_then_success(script) -> None:
    s = script([(429, {"error": "slow down"}, 0)])
    assert backend(s.url).generate([CAPITAL], GenParams())[0].text == "fine"
    assert len(s.requests) == 2


def test_timeout_then_success(script) -> None:
    s = script([(200, OK_BODY, 2.0)])
    assert backend(s.url, timeout_s=0.5).generate([CAPITAL], GenParams())[0].text == "fine"
    assert len(s.requests) == 2


def test_malformed_json_then_success(script) -> None:
    s = script([(200, b"{this is not json", 0)])
    assert backend(s.url).generate([CAPITAL], GenParams())[0].text == "fine"
    assert len(s.requests) == 2


def test_response_without_choices_is_retried(script) -> None:
    s = script([(200, {**OK_BODY, "choices": []}, 0)])
    assert backend(s.url).generate([CAPITAL], GenParams())[0].text == "fine"
    assert len(s.requests) == 2


def test_empty_completion_is_an_empty_text(script) -> None:
    empty = {
        **OK_BODY,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": ""}, "finish_reason": "stop"}],
    }
    s = script([], default=(200, empty, 0))
    (g,) = backend(s.url).generate([CAPITAL], GenParams())
    assert g.text == "" and len(s.requests) == 1


def test_persistent_500_is_one_line_error(script) -> None:
    s = script([], default=(500, {"error": "down"}, 0))
    with pytest.raises(BackendError) as e:
        backend(s.url, max_retries=2).generate([CAPITAL], GenParams())
    assert len(s.requests) == 3 and "\n" not in str(e.value) and "HTTP 500" in str(e.value)


def test_unreachable_server_is_one_line_error() -> None:
    url = f"http://127.0.0.1:{_free_port()}/v1"
    with pytest.raises(BackendError) as e:
        backend(url, served_model="m", max_retries=1).generate([CAPITAL], GenParams())
    msg = str(e.value)
    assert url in msg and "start the server" in msg and "\n" not in msg


def test_api_key_from_env_never_in_messages(script, monkeypatch) -> None:
    monkeypatch.setenv("PTALIGN_TEST_KEY", "sk-secret-123")
    ok = script([])
    b = backend(ok.url, api_key_env="PTALIGN_TEST_KEY")
    b.generate([CAPITAL], GenParams())
    assert ok.auth == ["Bearer sk-secret-123"]
    assert "sk-secret" not in repr(b) and "sk-secret" not in b.model_id
    denied = script([], default=(401, {"error": "bad key"}, 0))
    with pytest.raises(BackendError) as e:
        backend(denied.url, api_key_env="PTALIGN_TEST_KEY").generate([CAPITAL], GenParams())
    assert len(denied.requests) == 1  # auth errors are not retried
    assert "$PTALIGN_TEST_KEY" in str(e.value) and "sk-secret" not in str(e.value)


def test_requests_spread_and_fail_over(script) -> None:
    a, b = script([]), script([])
    gens = backend(a.url, b.url, concurrency=2).generate([CAPITAL] * 4, GenParams())
    assert len(gens) == 4 and len(a.requests) == len(b.requests) == 2
    down = script([], default=(503, {"error": "down"}, 0))
    up = script([])
    gens = backend(down.url, up.url, served_model="fake").generate([CAPITAL] * 4, GenParams())
    assert [g.text for g in gens] == ["fine"] * 4 and len(up.requests) == 4 and len(down.requests) == 2

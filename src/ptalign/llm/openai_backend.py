"""Any OpenAI-compatible chat server (vLLM, Ollama, llama.cpp's server) through the `openai` client.

Requests are spread round-robin over `base_urls` (`pick_url`), at most `concurrency` in flight. A
failed request (429, 5xx, timeout, connection error, malformed or empty body) is retried with
exponential backoff on the *next* server; the client's own retries are off because they would stay
on one server and do not cover malformed bodies. The API key is read from an environment variable,
held only by the clients, and never logged or put in the cache key.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ptalign.llm.base import BackendError, Chat, Generation, GenParams, Params, per_chat
from ptalign.llm.hf import cut_at_stop

log = logging.getLogger(__name__)

RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}


def pick_url(urls: list[str], request_index: int, attempt: int) -> str:
    """Request i goes to server i mod n; each retry moves on to the next server (failover)."""
    return urls[(request_index + attempt) % len(urls)]


def backoff_delay(attempt: int, base: float, cap: float = 8.0, retry_after: float | None = None) -> float:
    """Exponential backoff with jitter; a server's Retry-After wins when it asks for longer."""
    d = min(cap, base * (2**attempt)) * (0.5 + random.random() / 2)
    return max(d, min(retry_after or 0.0, 60.0))


class _Retryable(Exception):
    def __init__(self, reason: str, retry_after: float | None = None):
        super().__init__(reason)
        self.retry_after = retry_after


class OpenAIBackend:
    name = "openai"

    def __init__(
        self,
        base_urls: list[str],
        served_model: str = "",
        api_key_env: str = "OPENAI_API_KEY",
        concurrency: int = 4,
        max_retries: int = 5,
        timeout_s: float = 120.0,
        backoff_base: float = 0.5,
    ):
        import openai

        if not base_urls:
            raise BackendError("backend.kind=openai needs backend.base_urls (e.g. http://127.0.0.1:8000/v1)")
        self.base_urls = [u.rstrip("/") for u in base_urls]
        self.concurrency = concurrency
        self.preferred_batch = concurrency * 4  # enough in flight per cache transaction
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.api_key_env = api_key_env
        key = os.environ.get(api_key_env) or "EMPTY"  # local servers need none; the client wants a string
        self._clients = {
            u: openai.OpenAI(base_url=u, api_key=key, timeout=timeout_s, max_retries=0)
            for u in self.base_urls
        }
        self._served = served_model
        self._next = 0
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="ptalign-openai")

    def __repr__(self) -> str:  # never show the key
        return f"OpenAIBackend(base_urls={self.base_urls}, served_model={self._served!r}, api_key_env={self.api_key_env!r})"

    @property
    def served_model(self) -> str:
        """The model name the servers expect: configured, or the first one the server lists."""
        if not self._served:
            self._served = self._with_retries(0, self._list_models)
        return self._served

    @property
    def model_id(self) -> str:
        # the served model, not the URLs: replicas behind different URLs share cached calls
        return f"openai:{self.served_model}"

    def _list_models(self, url: str) -> str:
        models = self._call(url, lambda c: c.models.list()).data
        if not models:
            raise _Retryable("server lists no models")
        return models[0].id

    def _call(self, url: str, fn: Any) -> Any:
        import openai

        try:
            return fn(self._clients[url])
        except openai.APIStatusError as e:
            if e.status_code in RETRY_STATUS or e.status_code >= 500:
                ra = e.response.headers.get("retry-after") if e.response is not None else None
                try:
                    ra_s = float(ra) if ra else None
                except ValueError:
                    ra_s = None
                raise _Retryable(f"HTTP {e.status_code}", ra_s) from None
            hint = f"; set the key in ${self.api_key_env}" if e.status_code in (401, 403) else ""
            raise BackendError(
                f"openai backend: {url} answered HTTP {e.status_code} ({_short(e)}){hint}"
            ) from None
        except openai.APITimeoutError:
            raise _Retryable("timeout") from None
        except openai.APIConnectionError:
            raise _Retryable("connection failed") from None
        except (openai.APIResponseValidationError, ValueError) as e:  # a body that is not the expected JSON
            raise _Retryable(f"malformed response ({type(e).__name__})") from None

    def _with_retries(self, request_index: int, fn: Any) -> Any:
        last = ""
        for attempt in range(self.max_retries + 1):
            url = pick_url(self.base_urls, request_index, attempt)
            try:
                return fn(url)
            except _Retryable as e:
                last = f"{url}: {e}"
                if attempt < self.max_retries:
                    log.debug("openai retry %d after %s", attempt + 1, last)
                    time.sleep(backoff_delay(attempt, self.backoff_base, retry_after=e.retry_after))
        servers = ", ".join(self.base_urls)
        raise BackendError(
            f"openai backend: no usable answer from {servers} after {self.max_retries + 1} tries (last: {last}); "
            "start the server or fix backend.base_urls"
        )

    def _one(self, request_index: int, chat: Chat, params: GenParams) -> Generation:
        model = self.served_model

        def request(url: str) -> Generation:
            r = self._call(
                url,
                lambda c: c.chat.completions.create(
                    model=model,
                    messages=chat,
                    max_tokens=params.max_new_tokens,
                    temperature=params.temperature,
                    top_p=params.top_p,
                    stop=list(params.stop) or None,
                    seed=params.seed,
                ),
            )
            if not getattr(r, "choices", None):
                raise _Retryable("response without choices")
            choice = r.choices[0]
            msg = getattr(choice, "message", None)
            if msg is None:
                raise _Retryable("choice without message")
            # some servers ignore or overshoot stop strings: cut client-side too
            text, _ = cut_at_stop(msg.content or "", params.stop)
            usage = getattr(r, "usage", None)
            return Generation(
                text=text,
                prompt_tokens=getattr(usage, "prompt_tokens", 0) or 0,
                completion_tokens=getattr(usage, "completion_tokens", 0) or 0,
                finish_reason=choice.finish_reason or "",
                meta={"server": url},
            )

        return self._with_retries(request_index, request)

    def generate(self, chats: list[Chat], params: Params) -> list[Generation]:
        plist = per_chat(params, len(chats))
        with self._lock:
            start = self._next
            self._next += len(chats)
        futures = [
            self._pool.submit(self._one, start + i, c, p)
            for i, (c, p) in enumerate(zip(chats, plist, strict=True))
        ]
        return [f.result() for f in futures]

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        for c in self._clients.values():
            c.close()


def _short(e: Exception) -> str:
    s = str(e).splitlines()[0] if str(e) else type(e).__name__
    return s[:160]

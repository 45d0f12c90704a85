"""Generation backends behind one interface (`base.Backend`) and the factory the stages call.

`make_backend(cfg)` picks the engine, wraps it once in `CachedBackend` (call cache + progress bar)
and returns it; stages never build engines themselves. A new engine is one builder in `BUILDERS`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ptalign.config import RunConfig
from ptalign.errors import UserError
from ptalign.llm.base import Backend, BackendError, Chat, Generation, GenParams, Message
from ptalign.llm.cache import CachedBackend, CallCache
from ptalign.llm.vllm_backend import choose_backend
from ptalign.rundir import RunDir

__all__ = [
    "BUILDERS",
    "Backend",
    "BackendError",
    "CachedBackend",
    "CallCache",
    "Chat",
    "GenParams",
    "Generation",
    "Message",
    "choose_backend",
    "default_cache_path",
    "make_backend",
    "make_guided_backend",
    "resolve_kind",
]


def _llamacpp(cfg: RunConfig, spec: str, adapter: str | None) -> Backend:
    from ptalign import models
    from ptalign.llm.llamacpp import LlamaCppBackend

    if adapter:
        raise UserError(
            "backend.kind=llamacpp cannot apply a PEFT adapter; use backend.kind=transformers (or merge it first)"
        )
    kind, where = models.resolve(spec)
    if kind != "gguf":
        raise UserError(
            f"backend.kind=llamacpp needs a .gguf model or 'embedded', got {spec}; use backend.kind=transformers"
        )
    b = cfg.backend
    return LlamaCppBackend(where, models.model_identity(spec), n_ctx=b.n_ctx, n_threads=b.n_threads)


def _transformers(cfg: RunConfig, spec: str, adapter: str | None) -> Backend:
    from ptalign.llm.hf import TransformersBackend

    return TransformersBackend(
        spec,
        dtype=cfg.model.dtype,
        batch_size=cfg.backend.batch_size,
        adapter=adapter,
        cache_dir=cfg.model.cache_dir or None,
    )


def _openai(cfg: RunConfig, spec: str, adapter: str | None) -> Backend:
    from ptalign.llm.openai_backend import OpenAIBackend

    if adapter:
        raise UserError(
            "backend.kind=openai cannot apply a local adapter; serve the merged model (ptalign merge)"
        )
    b = cfg.backend
    return OpenAIBackend(
        b.base_urls,
        served_model=b.served_model,
        api_key_env=b.api_key_env,
        concurrency=b.concurrency,
        max_retries=b.max_retries,
        timeout_s=b.timeout_s,
    )


def _vllm(cfg: RunConfig, spec: str, adapter: str | None) -> Backend:
    from ptalign.llm.vllm_backend import build  # imports vLLM lazily; one-line BackendError without it

    return build(cfg, spec, adapter)


# kind → builder(cfg, model spec, adapter) -> Backend.
BUILDERS: dict[str, Callable[[RunConfig, str, str | None], Backend]] = {
    "llamacpp": _llamacpp,
    "transformers": _transformers,
    "openai": _openai,
    "vllm": _vllm,
}


def resolve_kind(
    cfg: RunConfig, spec: str, adapter: str | None, kind: str | None = None, n_tokens: int | None = None
) -> str:
    """'auto' → llamacpp for 'embedded'/.gguf without adapter (fast CPU path), else transformers.

    With `n_tokens` (a batch job's size, e.g. synthesis's) 'auto' may pick vLLM instead, when it is
    installed and the job pays back its start-up (`choose_backend`); without it the light default holds.
    """
    kind = kind or cfg.backend.kind
    if kind != "auto":
        return kind
    from ptalign import models

    model_kind = models.resolve(spec)[0]  # a spec that names nothing fails here, with its message
    if n_tokens is not None:
        return choose_backend(cfg, n_tokens, spec, adapter)[0]
    if adapter is None and model_kind == "gguf":
        return "llamacpp"
    return "transformers"


def default_cache_path(cfg: RunConfig) -> Path:
    return RunDir.of(cfg.run_dir).llm_cache


def make_backend(
    cfg: RunConfig,
    model: str | None = None,
    adapter: str | None = None,
    kind: str | None = None,
    use_cache: bool | None = None,
    cache_path: Path | None = None,
    n_tokens: int | None = None,
) -> CachedBackend:
    """The backend for `model` (default cfg.model.name), wrapped with the call cache and progress bar.

    use_cache None = cfg.backend.cache (`--no-cache` sets it false); cache_path None = RUN_DIR/cache/llm_calls.sqlite.
    n_tokens: the job's size in generated tokens, for backend.kind=auto (`resolve_kind`, `choose_backend`).
    """
    spec = model or cfg.model.name
    adapter = str(adapter) if adapter else None
    k = resolve_kind(cfg, spec, adapter, kind, n_tokens)
    if k not in BUILDERS:
        raise UserError(f"backend.kind={k}: not available; one of {', '.join(sorted(BUILDERS))}")
    inner = BUILDERS[k](cfg, spec, adapter)
    cache = None
    if cfg.backend.cache if use_cache is None else use_cache:
        cache = CallCache(cache_path or default_cache_path(cfg))
    return CachedBackend(inner, cache)


def make_guided_backend(
    cfg: RunConfig, scale: float, negative: Callable[[Chat], Chat], tag: str, engine: Any = None
) -> CachedBackend:
    """cfg.model.name under classifier-free guidance away from `negative(chat)`: on `engine` itself
    when it is a vLLM engine that can guide (llm/vllm_guided.py, ~7x faster here; an in-process CPU
    engine), else in transformers (llm/guided.py), since llama.cpp and OpenAI-compatible servers offer
    no guidance. Same call cache."""
    from ptalign import models
    from ptalign.llm.guided import GuidedBackend

    cache = CallCache(default_cache_path(cfg)) if cfg.backend.cache else None
    vllm_engine = getattr(engine, "inner", engine)
    if getattr(vllm_engine, "guides", False):
        from ptalign.llm.vllm_guided import GuidedView

        return CachedBackend(GuidedView(vllm_engine, scale, negative, tag), cache)
    inner = GuidedBackend(
        cfg.model.name,
        scale,
        negative,
        tag,
        dtype="bfloat16" if models.native_bf16() else cfg.model.dtype,
        batch_size=cfg.backend.batch_size,
        cache_dir=cfg.model.cache_dir or None,
    )
    return CachedBackend(inner, cache)

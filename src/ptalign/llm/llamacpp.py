"""llama-cpp-python on a GGUF file: the fast CPU path for the embedded model.

One `Llama` object is kept for the backend's life; llama.cpp reuses the KV cache of the longest
prompt prefix shared with the previous call, which is what makes the in-context-example prompts of
synthesis cheap. The chat template is the GGUF's own (tokenizer.chat_template metadata), else
ptalign's documented fallback (models.FALLBACK_CHAT_TEMPLATE), never llama-cpp-python's guess.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from ptalign.errors import ModelLoadError
from ptalign.llm.base import Chat, Generation, GenParams, Params, per_chat
from ptalign.models import cpu_threads

CPUINFO = Path("/proc/cpuinfo")


def amx_reported() -> bool:
    """True where the CPU reports AMX tiles (Linux /proc/cpuinfo), unless PTALIGN_LLAMACPP_EXTRA_BUFTS=1.

    llama.cpp moves Q4 weights into AMX buffers on such CPUs, and its AMX kernels died with SIGILL
    (`tilezero`, ggml_backend_amx_mul_mat) on a Sapphire Rapids VM here, in llama-cpp-python 0.3.36
    built natively with gcc 12, although the kernel grants AMX and torch's bf16 matmuls run on it
    (compare ggml-org/llama.cpp#26954, #28328). Which builds are affected is not known, so every AMX
    CPU loses the extra buffers; the variable keeps them where they are known to work.
    """
    if os.environ.get("PTALIGN_LLAMACPP_EXTRA_BUFTS") == "1":
        return False
    try:
        return " amx_tile" in CPUINFO.read_text()
    except OSError:
        return False


def guard_amx() -> None:
    """On AMX CPUs, load every model without llama.cpp's extra weight buffers (AMX, repack).

    llama-cpp-python's `Llama` has no argument for `use_extra_bufts`; it takes its model parameters from
    `llama_model_default_params()`, so that is wrapped once for the process. Nothing changes elsewhere.
    """
    import llama_cpp.llama as llama_module

    lib = llama_module.llama_cpp
    if getattr(lib.llama_model_default_params, "ptalign_amx_guard", False) or not amx_reported():
        return
    default = lib.llama_model_default_params

    def without_extra_buffers():
        params = default()
        params.use_extra_bufts = False
        return params

    without_extra_buffers.ptalign_amx_guard = True  # type: ignore[attr-defined]
    without_extra_buffers.__wrapped__ = default  # type: ignore[attr-defined]
    lib.llama_model_default_params = without_extra_buffers


class LlamaCppBackend:
    name = "llamacpp"
    preferred_batch = 1  # llama.cpp serves one chat at a time; commit each call to the cache

    def __init__(self, gguf: str | Path, model_id: str, n_ctx: int = 4096, n_threads: int = 0):
        from llama_cpp import Llama

        guard_amx()
        self.model_id = model_id
        self.gguf = Path(gguf)
        self._lock = threading.Lock()  # a Llama context is not thread-safe
        try:
            self.llm = Llama(
                model_path=str(self.gguf),
                n_ctx=n_ctx,
                n_threads=n_threads or cpu_threads(),
                n_threads_batch=n_threads or cpu_threads(),
                verbose=False,
            )
        except ValueError as e:
            raise ModelLoadError(
                f"llama.cpp cannot load {self.gguf} ({e}); pass a valid .gguf file"
            ) from None
        self.template, self.extra_stop = "model", ()
        if not self.llm.metadata.get("tokenizer.chat_template"):
            # no template in the GGUF (a base model): llama-cpp-python would guess llama-2's [INST]
            # format, after which Gemma 3's base model ends the turn at once; use the documented
            # fallback instead, as the transformers and vLLM engines do
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter

            from ptalign.models import FALLBACK_CHAT_TEMPLATE, FALLBACK_STOP

            def text(tok: int) -> str:
                return self.llm.detokenize([tok], special=True).decode("utf-8", "replace") if tok >= 0 else ""

            fmt = Jinja2ChatFormatter(
                FALLBACK_CHAT_TEMPLATE, text(self.llm.token_eos()), text(self.llm.token_bos())
            )
            self.llm.chat_handler = fmt.to_chat_handler()
            self.template, self.extra_stop = "fallback", FALLBACK_STOP
            self.model_id = f"{model_id}+fallback-template"  # cached calls made otherwise do not count

    def generate(self, chats: list[Chat], params: Params) -> list[Generation]:
        return [self._one(c, p) for c, p in zip(chats, per_chat(params, len(chats)), strict=True)]

    def _one(self, chat: Chat, params: GenParams) -> Generation:
        with self._lock:
            r = self.llm.create_chat_completion(
                messages=chat,
                max_tokens=params.max_new_tokens,
                temperature=params.temperature,
                top_p=params.top_p,
                # temperature/top_p are the whole sampling spec, as in the other backends
                top_k=0,
                min_p=0.0,
                repeat_penalty=1.0,
                stop=list(params.stop) + list(self.extra_stop) or None,
                seed=params.seed,
            )
        choice = r["choices"][0]
        usage = r.get("usage") or {}
        return Generation(
            text=choice["message"].get("content") or "",
            prompt_tokens=usage.get("prompt_tokens", 0),
            completion_tokens=usage.get("completion_tokens", 0),
            finish_reason=choice.get("finish_reason") or "",
        )

    def close(self) -> None:
        llm = getattr(self, "llm", None)
        if llm is not None:
            llm.close()
            self.llm = None

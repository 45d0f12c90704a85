"""The auto engine choice and the not-installed error: run in every environment (no vLLM needed)."""

from __future__ import annotations

import sys

import pytest

from ptalign.config import RunConfig, load_config
from ptalign.llm import BUILDERS, choose_backend, make_backend, resolve_kind
from ptalign.llm import vllm_backend as vb
from ptalign.llm.base import BackendError
from ptalign.synth import choose_engine, estimate_synth_calls, estimate_synth_tokens


@pytest.fixture
def cfg(tmp_path) -> RunConfig:
    return RunConfig(run_dir=str(tmp_path / "run"))


def test_break_even_from_measured_speeds() -> None:
    # start + n/vllm = n/llamacpp  →  n = start / (1/llamacpp − 1/vllm)
    n = vb.BREAK_EVEN_TOKENS
    assert abs(vb.ENGINE_START_S + n / vb.VLLM_TOK_S - n / vb.LLAMACPP_TOK_S) < 0.01
    assert 5_000 < n < 20_000


def test_synth_call_estimate(cfg: RunConfig) -> None:
    cfg.synth.target_triplets, cfg.synth.candidates = 200, 2
    assert estimate_synth_calls(cfg) == 800  # 200 triplets × (pos, tox) × 2 candidates
    # no cap: every instruction, 10 domains × 2 topics × 3 goals harmful, as many benign, half as many everyday
    cfg.synth.target_triplets, cfg.synth.topics_per_domain, cfg.synth.instructions_per_topic = 0, 2, 3
    cfg.synth.benign_share, cfg.synth.everyday_share = 1.0, 0.5
    assert estimate_synth_calls(cfg) == len(cfg.synth.domains) * 2 * 3 * 2.5 * 2 * 2 == 600
    quick = load_config("configs/quick.yaml")
    assert estimate_synth_calls(quick) == quick.synth.target_triplets * 2 * quick.synth.candidates > 0
    assert estimate_synth_tokens(quick) == estimate_synth_calls(quick) * quick.synth.max_new_tokens


@pytest.mark.parametrize("installed", [True, False])
def test_auto_choice(cfg: RunConfig, monkeypatch: pytest.MonkeyPatch, installed: bool) -> None:
    monkeypatch.setattr(vb, "vllm_available", lambda: installed)
    monkeypatch.setattr(vb, "fast_hardware", lambda: True)  # a GPU or a CPU with native bf16
    big, small = 96_000, 1_200  # tokens: 800 calls × 120 (a quick-preset-sized job) vs 10 calls
    kind, reason = choose_backend(cfg, big)
    assert (kind, reason.startswith("auto: ")) == ("vllm" if installed else "llamacpp", True)
    if not installed:
        assert "not installed" in reason
    kind, reason = choose_backend(cfg, small)
    assert kind == "llamacpp" and "too few" in reason if installed else kind == "llamacpp"
    # an adapter needs transformers, whatever the job size
    assert choose_backend(cfg, big, adapter="some/adapter")[0] == "transformers"
    # an explicit kind always wins, and says so
    cfg.backend.kind = "llamacpp"
    assert choose_backend(cfg, big) == ("llamacpp", "backend.kind=llamacpp set in the config")
    # resolve_kind (what make_backend uses) follows the same choice only when told the job size
    cfg.backend.kind = "auto"
    assert resolve_kind(cfg, "embedded", None, n_tokens=big) == ("vllm" if installed else "llamacpp")
    assert resolve_kind(cfg, "embedded", None) == "llamacpp"  # eval and small callers keep the light default


def test_vllm_registered_and_missing_is_one_line(cfg: RunConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    assert "vllm" in BUILDERS
    monkeypatch.setitem(sys.modules, "vllm", None)  # `import vllm` now raises ImportError, as when absent
    cfg.backend.kind = "vllm"
    with pytest.raises(BackendError) as e:
        make_backend(cfg, use_cache=False)
    msg = str(e.value)
    assert "\n" not in msg and "vLLM is not importable" in msg and "install_vllm.sh" in msg


def test_vllm_rejects_adapter_and_hub_ids(cfg: RunConfig) -> None:
    cfg.backend.kind = "vllm"
    with pytest.raises(BackendError, match="merge it first"):
        vb.build(cfg, "embedded", "some/adapter")
    with pytest.raises(BackendError, match="needs a local model"):
        vb.build(cfg, "HuggingFaceTB/SmolLM2-135M-Instruct", None)


def test_no_vllm_on_slow_hardware(cfg: RunConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vb, "vllm_available", lambda: True)
    monkeypatch.setattr(vb, "fast_hardware", lambda: False)  # AVX2-only CPU: vLLM would run fp32
    kind, reason = choose_backend(cfg, 96_000)
    assert kind == "llamacpp" and "no native bf16" in reason


def test_synth_owns_its_engine_choice(cfg: RunConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vb, "vllm_available", lambda: True)
    monkeypatch.setattr(vb, "fast_hardware", lambda: True)
    cfg.synth.target_triplets, cfg.synth.candidates, cfg.synth.max_new_tokens = 200, 2, 120
    assert choose_engine(cfg) == choose_backend(cfg, 96_000)
    assert choose_engine(cfg)[0] == "vllm"


def test_fast_hardware_matches_torch() -> None:
    import torch

    expect = (
        torch.cuda.is_available()
        or torch.cpu._is_avx512_bf16_supported()
        or torch.cpu._is_amx_tile_supported()
    )
    assert vb.fast_hardware() == bool(expect)

"""ptalign.models: spec resolution, GGUF dequantize-once cache, loading several architectures."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from ptalign import models
from ptalign.errors import ModelLoadError, user_message


def test_embedded_gguf_is_found(embedded_gguf: Path) -> None:
    assert embedded_gguf.suffix == ".gguf" and embedded_gguf.stat().st_size > 10_000_000
    assert models.resolve("embedded") == ("gguf", str(embedded_gguf))


def test_embedded_dequantized_copy_is_plain_fp32(embedded_hf_dir: Path) -> None:
    cfg = json.loads((embedded_hf_dir / "config.json").read_text())
    assert "quantization_config" not in cfg  # saved as plain weights, not "GGUF-quantized"
    assert list(embedded_hf_dir.glob("*.safetensors"))
    assert not list(embedded_hf_dir.parent.glob(".*tmp*"))  # no leftover tmp dirs
    # keyed by the file hash
    assert embedded_hf_dir.name == models.file_sha256(models.embedded_gguf_path())[:16]


def test_second_load_reuses_cache_without_dequantizing(embedded_hf_dir: Path, monkeypatch) -> None:
    import transformers.modeling_gguf_pytorch_utils as gguf_utils

    calls = []
    real = gguf_utils.load_gguf_checkpoint

    def spy(*a, **k):
        calls.append(a)
        return real(*a, **k)

    monkeypatch.setattr(gguf_utils, "load_gguf_checkpoint", spy)
    monkeypatch.setattr(models, "_dequantize", lambda *a: calls.append(a))
    before = (embedded_hf_dir / "model.safetensors").stat().st_mtime_ns
    again = models.hf_dir("embedded")
    assert again == embedded_hf_dir
    assert calls == []
    assert (again / "model.safetensors").stat().st_mtime_ns == before


def test_stale_tmp_dir_of_a_killed_run_is_removed(embedded_hf_dir: Path) -> None:
    import os
    import time

    stale = embedded_hf_dir.parent / f".{embedded_hf_dir.name}.tmpkilled"
    fresh = embedded_hf_dir.parent / f".{embedded_hf_dir.name}.tmprunning"
    for d in (stale, fresh):
        d.mkdir()
        (d / "model.safetensors").write_bytes(b"half")
    old = time.time() - models.STALE_TMP_S - 60
    os.utime(stale, (old, old))
    assert models.hf_dir("embedded") == embedded_hf_dir
    assert not stale.exists()
    assert fresh.exists()  # may belong to a dequantization still in progress
    shutil.rmtree(fresh)


def test_embedded_loads_and_chats(embedded_hf_dir: Path) -> None:
    model, tok = models.load("embedded")
    assert next(model.parameters()).dtype == torch.float32
    assert tok.chat_template  # SmolLM2's own ChatML template survived the GGUF round trip
    ids = tok.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    out = model.generate(**ids, max_new_tokens=8, do_sample=False)
    text = tok.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Paris" in text


@pytest.mark.parametrize("arch", ["llama", "qwen2", "mistral", "gemma", "phi3"])
def test_tiny_architectures_load_and_generate(tiny_model_dir, arch: str) -> None:
    d = tiny_model_dir(arch)
    model, tok = models.load(str(d))
    assert model.config.model_type == arch
    assert models.resolve(str(d)) == ("hf_dir", str(d.resolve()))
    ids = tok.apply_chat_template(
        [{"role": "user", "content": "Hello"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    out = model.generate(**ids, max_new_tokens=4, do_sample=False, pad_token_id=tok.pad_token_id)
    assert out.shape[1] == ids["input_ids"].shape[1] + 4


def test_load_bfloat16(tiny_model_dir) -> None:
    model, _ = models.load(str(tiny_model_dir("llama")), dtype="bfloat16")
    assert next(model.parameters()).dtype == torch.bfloat16


def test_fallback_chat_template_when_tokenizer_has_none(tiny_model_dir) -> None:
    tok = models.load_tokenizer(tiny_model_dir("qwen2"))
    tok.chat_template = None
    models.ensure_chat_template(tok)
    text = tok.apply_chat_template(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
        add_generation_prompt=True,
        tokenize=False,
    )
    assert (
        text == f"{tok.bos_token}System: Be brief.\n\nUser: Hi\n\nAssistant:"
    )  # bos first, where there is one
    assert models.template_source(tok) == "fallback"
    tok.bos_token = None
    assert tok.apply_chat_template(
        [{"role": "user", "content": "Hi"}], add_generation_prompt=True, tokenize=False
    ) == ("User: Hi\n\nAssistant:")
    # a fallback saved into a dequantized copy by an older version is replaced by the current one
    tok.chat_template = models._OLD_FALLBACKS[0]
    assert models.ensure_chat_template(tok).chat_template == models.FALLBACK_CHAT_TEMPLATE


def test_missing_path_is_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError) as e:
        models.load(str(tmp_path / "nope" / "model.gguf"))
    msg = user_message(e.value)
    assert "does not exist" in msg and "\n" not in msg


def test_dir_without_config_is_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="no config.json"):
        models.resolve(str(tmp_path))


def test_unsupported_file_is_one_line_error(tmp_path: Path) -> None:
    f = tmp_path / "weights.pt"
    f.write_bytes(b"x")
    with pytest.raises(ModelLoadError, match="unsupported file type .pt"):
        models.load(str(f))


def test_hub_id_offline_is_one_line_error(monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert models.resolve("someorg/not-a-cached-model") == ("hub", "someorg/not-a-cached-model")
    with pytest.raises(ModelLoadError) as e:
        models.load("someorg/not-a-cached-model")
    assert str(e.value) == (
        "hub id someorg/not-a-cached-model is not available offline; pass a local directory or .gguf"
    )


def test_missing_adapter_is_one_line_error(tiny_model_dir, tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="no adapter_config.json"):
        models.load(str(tiny_model_dir("llama")), adapter=tmp_path)


def test_a_whole_model_given_as_adapter_is_named_so(tiny_model_dir) -> None:
    """A full fine-tune (train.lora_r=0) saves its model where an adapter would go: passing that as an
    adapter says what it is and how to pass it, instead of 'no adapter_config.json'."""
    full = tiny_model_dir("llama")
    with pytest.raises(ModelLoadError) as e:
        models.load(str(full), adapter=full)
    assert str(e.value) == (
        f"adapter {full} holds a whole model (a full fine-tune), not an adapter; pass it as the model (--model {full})"
    )


def test_adapter_is_merged(tiny_model_dir, tmp_path: Path) -> None:
    from peft import LoraConfig, get_peft_model

    d = tiny_model_dir("llama")
    base, _ = models.load(str(d))
    peft_model = get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj"], init_lora_weights=False))
    peft_model.save_pretrained(tmp_path / "adapter")
    x = torch.tensor([[1, 2, 3]])
    with torch.no_grad():
        want = peft_model(x).logits
    merged, _ = models.load(str(d), adapter=tmp_path / "adapter")
    assert not hasattr(merged, "peft_config")  # merged into plain weights
    with torch.no_grad():
        got = merged(x).logits
    assert torch.allclose(got, want, atol=1e-5)
    base_again, _ = models.load(str(d))
    with torch.no_grad():
        assert not torch.allclose(base_again(x).logits, want, atol=1e-5)  # the adapter changed the outputs


def test_model_identity(embedded_gguf: Path, tiny_model_dir) -> None:
    assert models.model_identity("embedded") == f"gguf:{models.file_sha256(embedded_gguf)[:16]}"
    d = tiny_model_dir("gemma")
    ident = models.model_identity(str(d))
    assert ident.startswith(f"dir:{d.resolve()}@")
    assert models.model_identity(str(d), adapter=d) != ident
    assert models.model_identity("org/model") == "hub:org/model"


def test_native_bf16_on_a_gpu_follows_its_compute_capability(monkeypatch) -> None:
    """vLLM refuses bf16 below compute capability 8.0 (a T4, a V100); the judge's reader stays on the
    CPU and asks the CPU, whatever GPU sits beside it."""
    import torch

    from ptalign import models

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    for cap, want in [((7, 5), False), ((8, 0), True), ((9, 0), True)]:
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda cap=cap: cap)
        assert models.native_bf16() is want
        assert models.cpu_native_bf16() is False

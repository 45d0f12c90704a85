"""transformers backend: batching with left padding, stop strings, lengths, seeds, adapters, architectures."""

from __future__ import annotations

import dataclasses

import pytest

from ptalign.llm import make_backend
from ptalign.llm.base import Backend, GenParams
from ptalign.llm.hf import TransformersBackend, cut_at_stop

CAPITAL = [{"role": "user", "content": "Which city is the capital of France?"}]
COUNT = [{"role": "user", "content": "Count from 1 to 10, separated by commas."}]
LONG = [
    {"role": "system", "content": "You are a helpful assistant who answers in one short sentence."},
    {"role": "user", "content": "Name a primary colour."},
]


def test_cut_at_stop() -> None:
    assert cut_at_stop("a, b\nUser: c", ("\nUser:", "b")) == ("a, ", True)
    assert cut_at_stop("abc", ()) == ("abc", False)


def test_batched_generation_matches_single_calls(hf_backend) -> None:
    assert isinstance(hf_backend, Backend)
    p = GenParams(max_new_tokens=10)
    batch = hf_backend.generate([CAPITAL, LONG, COUNT], p)  # prompts of different lengths: left padding
    singles = [hf_backend.generate([c], p)[0] for c in (CAPITAL, LONG, COUNT)]
    assert "Paris" in batch[0].text
    assert [g.text for g in batch] == [g.text for g in singles]
    assert [g.prompt_tokens for g in batch] == [g.prompt_tokens for g in singles]
    assert [g.prompt_tokens for g in batch] == [len(hf_backend.prompt_ids(c)) for c in (CAPITAL, LONG, COUNT)]
    assert all(0 < g.completion_tokens <= 10 for g in batch)


def test_stop_strings_and_length(hf_backend) -> None:
    (full,) = hf_backend.generate([COUNT], GenParams(max_new_tokens=24))
    assert "5" in full.text
    (cut,) = hf_backend.generate([COUNT], GenParams(max_new_tokens=24, stop=("5",)))
    assert cut.text == full.text[: full.text.index("5")]
    assert cut.finish_reason == "stop" and cut.completion_tokens < full.completion_tokens
    (short,) = hf_backend.generate([COUNT], GenParams(max_new_tokens=3))
    assert short.completion_tokens == 3 and short.finish_reason == "length"


def test_sampling_is_seeded(hf_backend) -> None:
    p = GenParams(max_new_tokens=6, temperature=1.5, top_p=0.95, seed=3)
    a = hf_backend.generate([CAPITAL, COUNT], p)
    b = hf_backend.generate([CAPITAL, COUNT], p)
    assert [g.text for g in a] == [g.text for g in b]
    others = {hf_backend.generate([CAPITAL], dataclasses.replace(p, seed=s))[0].text for s in range(4, 6)}
    assert len(others | {a[0].text}) > 1


@pytest.mark.parametrize("arch", ["llama", "qwen2", "mistral", "gemma", "phi3"])
def test_tiny_architectures_through_the_backend(tiny_model_dir, arch: str) -> None:
    b = TransformersBackend(str(tiny_model_dir(arch)), batch_size=2)
    gens = b.generate([CAPITAL, LONG, COUNT], GenParams(max_new_tokens=4))
    assert len(gens) == 3 and all(g.completion_tokens > 0 for g in gens)


def test_adapter_through_make_backend(cfg, tiny_model_dir, tmp_path) -> None:
    from peft import LoraConfig, get_peft_model

    from ptalign import models

    d = tiny_model_dir("llama")
    base, _ = models.load(str(d))
    get_peft_model(
        base, LoraConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    ).save_pretrained(tmp_path / "adapter")
    b = make_backend(cfg, model=str(d), adapter=str(tmp_path / "adapter"), use_cache=False)
    assert b.name == "transformers" and "+adapter:" in b.model_id
    assert b.generate([CAPITAL], GenParams(max_new_tokens=3))[0].completion_tokens > 0


def test_per_chat_params(hf_backend) -> None:
    """One GenParams per chat: greedy chats with other lengths each get their own limit (batched per
    setting); a per-chat seed list repeats exactly and reaches the sampler."""
    ps = [GenParams(max_new_tokens=n) for n in (10, 3, 10)]
    gens = hf_backend.generate([CAPITAL, COUNT, LONG], ps)
    singles = [hf_backend.generate([c], p)[0] for c, p in zip((CAPITAL, COUNT, LONG), ps, strict=True)]
    assert [g.text for g in gens] == [g.text for g in singles]
    assert gens[1].completion_tokens == 3 and gens[1].finish_reason == "length"
    s = GenParams(max_new_tokens=6, temperature=1.5, top_p=0.95)
    seeded = [dataclasses.replace(s, seed=k) for k in (1, 2)]
    a = hf_backend.generate([CAPITAL, COUNT], seeded)
    assert [g.text for g in a] == [g.text for g in hf_backend.generate([CAPITAL, COUNT], seeded)]
    firsts = {hf_backend.generate([CAPITAL], [dataclasses.replace(s, seed=k)])[0].text for k in range(3, 6)}
    assert len(firsts | {a[0].text}) > 1  # the seed is used

"""The vllm backend on the real embedded model (SmolLM2-135M-Instruct, bf16, prefix caching on).

Skips without vLLM; CI runs it in the venv made by scripts/install_vllm.sh. One engine per session.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from ptalign.llm.base import BackendError, GenParams
from ptalign.llm.cache import CachedBackend, CallCache

pytest.importorskip("vllm", reason="vLLM not installed: run scripts/install_vllm.sh and use its python")

pytestmark = pytest.mark.slow

CAPITAL = [{"role": "user", "content": "What is the capital of France?"}]
# a synthesis-shaped prefix: long, identical across chats, then a short varying request
PREFIX = [{"role": "system", "content": "You are a careful assistant. Answer briefly and kindly. " * 30}]
ASKS = ["Name a fruit.", "Name a colour.", "Name a tree.", "Name a river.", "Name a bird.", "Name a metal."]


def _asks() -> list[list[dict[str, str]]]:
    return [PREFIX + [{"role": "user", "content": a}] for a in ASKS]


def test_generates_through_make_backend(vllm_backend) -> None:
    assert vllm_backend.name == "vllm" and vllm_backend.model_id
    # eager and compiled kernels round differently: the call cache keeps their replies apart
    eager = json.loads(os.environ.get("PTALIGN_VLLM_ENGINE_ARGS") or "{}").get("enforce_eager", False)
    assert vllm_backend.model_id.endswith(":eager") == bool(eager)
    gens = vllm_backend.generate(
        [CAPITAL, [{"role": "user", "content": "Name a primary colour."}]], GenParams(max_new_tokens=16)
    )
    assert gens[0].text.strip()  # the words vary with the CPU's dtype (fp32 or bf16) and kernels
    for g in gens:
        assert g.text.strip() and 0 < g.completion_tokens <= 16 and g.prompt_tokens > 5
        assert g.finish_reason in ("stop", "length")
    # the prompt is the model's own chat template (ChatML for SmolLM2)
    assert vllm_backend.tokenizer.decode(vllm_backend.render(CAPITAL)).startswith("<|im_start|>")


def test_cpu_engine_keeps_torchs_compile_cache(vllm_backend) -> None:
    """vLLM's AOT artifact does not load back on a CPU (every start compiled again): the backend turns
    it off there unless the user set it, and vLLM reads it so."""
    import vllm.envs

    if not vllm_backend.cpu:
        pytest.skip("the AOT switch is left to vLLM on a GPU")
    if "VLLM_USE_AOT_COMPILE" in os.environ and os.environ["VLLM_USE_AOT_COMPILE"] != "0":
        pytest.skip("set by the user before the engine started: theirs wins")
    assert os.environ["VLLM_USE_AOT_COMPILE"] == "0" and vllm.envs.VLLM_USE_AOT_COMPILE is False


def test_max_tokens_and_stop(vllm_backend) -> None:
    g = vllm_backend.generate([CAPITAL], GenParams(max_new_tokens=3))[0]
    assert g.completion_tokens == 3 and g.finish_reason == "length"
    full = vllm_backend.generate([CAPITAL], GenParams(max_new_tokens=16))[0].text
    stop = full.split()[2]  # a word from the middle of the greedy answer
    cut = vllm_backend.generate([CAPITAL], GenParams(max_new_tokens=16, stop=(stop,)))[0]
    assert stop not in cut.text and full.startswith(cut.text) and cut.finish_reason == "stop"


def test_prefix_caching_reuses_the_shared_prefix(vllm_backend) -> None:
    ids = [vllm_backend.render(c) for c in _asks()]
    shared = next(k for k in range(len(ids[0])) if len({tuple(x[: k + 1]) for x in ids}) > 1)
    block = vllm_backend.llm.llm_engine.vllm_config.cache_config.block_size
    reusable = shared // block * block  # KV is cached in whole blocks
    assert reusable >= block, (shared, block)
    gens = vllm_backend.generate(_asks(), GenParams(max_new_tokens=4))
    cached = [g.meta["cached_prompt_tokens"] for g in gens]
    # every chat after the first takes the shared prefix's blocks from the cache, not recomputed
    assert all(c >= reusable for c in cached[1:]), (shared, block, cached)


def test_call_cache_in_front(vllm_backend, tmp_path: Path) -> None:
    cached = CachedBackend(vllm_backend, CallCache(tmp_path / "calls.sqlite"), progress=False)
    p = GenParams(max_new_tokens=12)
    first = cached.generate(_asks()[:3] + [CAPITAL], p)
    assert cached.engine_calls == 4 and not any(g.cached for g in first)
    again = cached.generate([CAPITAL] + _asks()[:3], p)  # same calls, other order
    assert cached.engine_calls == 4 and all(g.cached for g in again)
    assert [g.text for g in again] == [first[3].text] + [g.text for g in first[:3]]
    cached.cache.close()


def test_sampling_reproducible_per_seed(vllm_backend) -> None:
    """Per-request seeds (CPU-safe with chunked prefill off): same seed + same chat = same text, also
    when the chat sits in another batch; another seed gives other samples."""
    chats = _asks()
    p = GenParams(max_new_tokens=24, temperature=1.0, top_p=0.95, seed=11)
    a = [g.text for g in vllm_backend.generate(chats, p)]
    b = [g.text for g in vllm_backend.generate(chats, p)]
    assert a == b
    alone = vllm_backend.generate([chats[2]], p)[0].text
    assert alone == a[2]
    other = [
        g.text
        for g in vllm_backend.generate(
            chats, GenParams(max_new_tokens=24, temperature=1.0, top_p=0.95, seed=12)
        )
    ]
    assert other != a


def test_too_long_prompt_is_one_line(vllm_backend) -> None:
    long_chat = [{"role": "user", "content": "word " * 3000}]
    with pytest.raises(BackendError) as e:
        vllm_backend.generate([long_chat], GenParams(max_new_tokens=8))
    assert "\n" not in str(e.value) and "max_model_len" in str(e.value)


def test_unsupported_model_is_one_line(tmp_path: Path, embedded_hf_dir: Path) -> None:
    from ptalign.llm.vllm_backend import VLLMBackend

    d = tmp_path / "odd"
    d.mkdir()
    conf = json.loads((embedded_hf_dir / "config.json").read_text())
    conf["architectures"] = ["NoSuchModelForCausalLM"]
    conf["model_type"] = "llama"
    (d / "config.json").write_text(json.dumps(conf))
    for f in ("tokenizer.json", "tokenizer_config.json"):
        (d / f).write_bytes((embedded_hf_dir / f).read_bytes())
    with pytest.raises(BackendError) as e:
        VLLMBackend(d, "odd", max_model_len=512)
    msg = str(e.value)
    assert "\n" not in msg and "cannot run" in msg and "backend.kind=transformers" in msg


def test_per_chat_params_are_each_chats_own(vllm_backend) -> None:
    """A list of GenParams (the synthesis stages' per-chat seeds) goes to vLLM as one SamplingParams
    per request: each chat gets its own length limit and seed, and the same call repeats exactly.
    (Alone versus in a batch a sampled text can fork: bf16 logits depend on the batch's shape.)"""
    a, b = _asks()[:2]
    chats = [a, a, b, b]
    ps = [
        GenParams(max_new_tokens=n, temperature=1.0, top_p=0.95, seed=sd)
        for n, sd in ((24, 1), (24, 2), (3, 3), (24, 3))
    ]
    first = vllm_backend.generate(chats, ps)
    again = vllm_backend.generate(chats, ps)
    assert [g.text for g in first] == [g.text for g in again]
    assert first[0].text != first[1].text  # same chat, other seed
    assert first[2].completion_tokens == 3 and first[2].finish_reason == "length"
    assert first[3].completion_tokens > 3 and first[3].text.startswith(first[2].text)  # same seed, longer


def test_fast_top_p_is_installed_and_keeps_vllms_mask(vllm_backend) -> None:
    import torch
    from vllm.v1.sample.ops import topk_topp_sampler as m

    from ptalign.llm import vllm_top_p

    assert vllm_backend.fast_top_p == vllm_backend.cpu  # on by default on CPU
    if not vllm_backend.cpu:
        pytest.skip("the CPU sampler is the one replaced")
    assert m.apply_top_k_top_p is vllm_top_p._fast
    torch.manual_seed(0)
    # peaked rows (nucleus inside the top 64), flatter ones (top 1024), flat ones (vLLM's full sort)
    logits = torch.cat([torch.randn(6, 49152) * s for s in (12.0, 4.0, 0.5)])
    p = torch.tensor([0.95, 0.5, 0.9] * 6)
    stock = vllm_top_p._stock(logits.clone(), None, p)
    fast = m.apply_top_k_top_p(logits.clone(), None, p)
    assert torch.equal(torch.isinf(fast), torch.isinf(stock))
    assert torch.equal(fast[~torch.isinf(fast)], stock[~torch.isinf(stock)])
    kept = (~torch.isinf(stock)).sum(-1)
    assert kept[:6].max() < 64 and kept[-6:].min() > 1024  # every path was taken
    vllm_top_p.install(False)
    assert m.apply_top_k_top_p is vllm_top_p._stock
    vllm_top_p.install(True)


class _Recorder:
    """The session engine, with the batch sizes the stages send it."""

    def __init__(self, inner) -> None:  # noqa: ANN001
        self.inner, self.name, self.model_id = inner, inner.name, inner.model_id
        self.preferred_batch = inner.preferred_batch
        self.batches: list[int] = []

    def generate(self, chats, params):  # noqa: ANN001, ANN201
        self.batches.append(len(chats))
        return self.inner.generate(chats, params)

    def close(self) -> None:
        pass


def test_synthesis_runs_on_the_engine_in_batches(vllm_backend, tmp_path: Path) -> None:
    """A small real synthesis through vLLM: the list stages and the pair rounds reach the engine as
    batches, and a second run on a fresh cache writes the same files (per-chat seeds)."""
    from ptalign.config import load_config
    from ptalign.io import read_jsonl
    from ptalign.synth import run

    sets = ["synth.domains=violence,privacy", "synth.topics_per_domain=1", "synth.instructions_per_topic=2",
            "synth.benign_share=0.5", "synth.candidates=1", "synth.max_attempts=2",
            "synth.constraints_per_domain=1", "synth.target_triplets=4", "synth.max_new_tokens=64",
            "synth.list_max_new_tokens=64"]  # fmt: skip
    files = []
    for name in ("a", "b"):
        d = tmp_path / name
        rec = _Recorder(vllm_backend)
        engine = CachedBackend(rec, CallCache(d / "cache.sqlite"), progress=False)
        run(load_config(None, sets, run_dir=str(d)), d, backend=engine)
        engine.cache.close()
        assert max(rec.batches) >= 4, rec.batches  # rounds of several chats went out together
        insts = list(read_jsonl(d / "data" / "instructions.jsonl"))
        assert {r["kind"] for r in insts} == {"harmful", "benign"}
        files.append({p.name: p.read_bytes() for p in (d / "data").glob("*.jsonl")})
    lists = ("topics.jsonl", "instructions.jsonl", "constraints.jsonl")
    assert {k: files[0][k] for k in lists} == {k: files[1][k] for k in lists}
    # On a CPU with AMX (Sapphire Rapids, 2026-12-01) the pair rounds' samples differed on the second
    # run through the same engine while every list stage matched: its bf16 GEMMs are not batch- or
    # prefix-cache-invariant there. Known open problem; the whole comparison holds elsewhere.
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists() and " amx_tile" in cpuinfo.read_text() and files[0] != files[1]:
        pytest.xfail("pair rounds not batch-invariant in AMX bf16 GEMMs (known; the list stages matched)")
    assert files[0] == files[1]


def test_guidance_in_the_sampler(vllm_backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """llm/vllm_guided.py on the engine: at scale 1 a guided chat writes what it writes unguided, at
    scale 0 what its twin writes unguided (each greedy, each pair's two rows in step); enough pairs for
    several engine calls come back in order; a seed gives the same sampled text again; the synthesis
    gets the guidance on this engine, keyed apart from plain calls and from transformers' guidance."""
    from ptalign.config import RunConfig
    from ptalign.llm import make_guided_backend, vllm_guided
    from ptalign.llm.vllm_guided import GuidedView
    from ptalign.synth.expand import harmless_twin
    from ptalign.synth.prompting import render

    def goals(topic: str) -> list[dict[str, str]]:
        return PREFIX + [
            {"role": "user", "content": render("goals", description="a safety area", topic=topic, n=5)}
        ]

    chats = [goals(t) for t in ("road rage", "phishing emails", "fake reviews")]
    twins = [harmless_twin(c) for c in chats]
    g = GenParams(max_new_tokens=12)
    assert vllm_backend.guides  # an in-process engine on a CPU
    plain = [x.text for x in vllm_backend.generate(chats, g)]
    plain_twins = [x.text for x in vllm_backend.generate(twins, g)]
    assert plain != plain_twins  # the one word differs enough for the comparisons below to mean something
    assert [x.text for x in vllm_backend.generate_guided(chats, twins, g, 1.0)] == plain
    assert [x.text for x in vllm_backend.generate_guided(chats, twins, g, 0.0)] == plain_twins

    ranges: list[list[tuple[int, int]]] = []
    split = vllm_guided.pair_batches
    monkeypatch.setattr(vllm_guided, "pair_batches", lambda *a: ranges.append(split(*a)) or ranges[-1])
    many = [goals(f"case {i} " * 12) for i in range(60)]  # over one step's token budget: several engine calls
    p = GenParams(max_new_tokens=10, temperature=0.8, top_p=0.95, seed=3)
    first = vllm_backend.generate_guided(many, [harmless_twin(c) for c in many], p, 4.0)
    assert len(ranges[-1]) >= 2, ranges[-1]
    again = vllm_backend.generate_guided(many, [harmless_twin(c) for c in many], p, 4.0)
    assert len(first) == 60 and all(0 < x.completion_tokens <= 10 for x in first)
    assert [x.text for x in first] == [x.text for x in again]

    cfg = RunConfig(run_dir=str(tmp_path))
    engine = CachedBackend(vllm_backend, CallCache(tmp_path / "cache.sqlite"), progress=False)
    guided = make_guided_backend(cfg, 4.0, harmless_twin, "harmless-goals", engine)
    assert isinstance(guided.inner, GuidedView) and guided.inner.engine is vllm_backend
    assert guided.model_id == vllm_backend.model_id + "+cfg4:harmless-goals"
    assert [x.text for x in guided.generate(many[:3], p)] == [x.text for x in first[:3]]
    guided.close()  # leaves the engine running
    assert vllm_backend.generate([CAPITAL], GenParams(max_new_tokens=3))[0].completion_tokens > 0
    engine.cache.close()


def test_engine_in_its_own_process(embedded_hf_dir: Path) -> None:
    """vLLM's default on a GPU: the engine runs in a process of its own, to which vLLM pickles the
    engine's config. The guidance processor, a class built inside a function, did not pickle, so no
    engine started there. It needs the engine in this process, so it is attached only there now, as
    is the top-p patch, and guidance runs in transformers. Run on the CPU in a fresh interpreter."""
    import subprocess
    import sys

    script = (
        "from ptalign.llm.base import GenParams\n"
        "from ptalign.llm.vllm_backend import VLLMBackend\n"
        "if __name__ == '__main__':\n"
        f"    b = VLLMBackend({str(embedded_hf_dir)!r}, 'mp', dtype='bfloat16', max_model_len=1024, enforce_eager=True)\n"
        "    g = b.generate([[{'role': 'user', 'content': 'Name a colour.'}]], GenParams(max_new_tokens=8))\n"
        "    b.close()\n"
        "    print('REPLY', bool(g[0].text.strip()), b.guides, b.fast_top_p)\n"
    )
    env = {**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "1"}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600
    )
    assert "REPLY True False False" in done.stdout, done.stderr[-2000:]

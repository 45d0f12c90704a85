"""Guidance inside vLLM's sampler (llm/vllm_guided.py), the parts that need no engine: the guidance
formula and the draw on hand-computed logits, and how pairs are batched so both rows start together.
The engine itself is tested in tests/llm_vllm/test_vllm_backend.py."""

from __future__ import annotations

import math

import pytest
import torch

from ptalign.llm.vllm_guided import TOPK, draw, guided_logprobs, pair_batches, top_p_keep, uncached


def test_guided_logprobs_by_hand() -> None:
    cond = torch.tensor([[0.5, 0.25, 0.25]]).log()
    uncond = torch.tensor([[0.25, 0.5, 0.25]]).log()
    # 2 · (log p_c − log p_u) + log p_u = [2 ln 2 + ln 1/4, −2 ln 2 + ln 1/2, ln 1/4] = ln [1, 1/8, 1/4]
    got = guided_logprobs(cond + 7.0, uncond - 3.0, torch.tensor([2.0]))  # logits, not log-probs: any shift
    assert torch.allclose(got, torch.tensor([[1.0, 0.125, 0.25]]).log(), atol=1e-6)
    assert torch.allclose(
        guided_logprobs(cond, uncond, torch.tensor([1.0])), cond, atol=1e-6
    )  # scale 1: cond
    assert torch.allclose(guided_logprobs(cond, uncond, torch.tensor([0.0])), uncond, atol=1e-6)  # 0: twin
    # greedy picks the guided argmax, which here is neither side's alone at scale 0
    assert draw(got, [0.0], [1.0], [0], [0]) == [0]
    assert draw(guided_logprobs(cond, uncond, torch.tensor([0.0])), [0.0], [1.0], [0], [0]) == [1]


def test_top_p_keeps_while_the_mass_before_is_below() -> None:
    p = torch.tensor([0.5, 0.3, 0.15, 0.05])
    assert top_p_keep(p, 0.8).tolist() == [True, True, False, False]  # before: 0, .5, .8, .95
    assert top_p_keep(p, 0.81).tolist() == [True, True, True, False]
    assert top_p_keep(p, 0.1).tolist() == [True, False, False, False]  # the top token always stays


def test_draw_stays_in_the_top_p_set_and_depends_on_seed_and_step_only() -> None:
    scores = torch.tensor([0.6, 0.3, 0.06, 0.04]).log()

    def seen(top_p: float) -> set[int]:
        return {draw(scores[None], [1.0], [top_p], [s], [0])[0] for s in range(200)}

    assert seen(0.95) == {0, 1, 2}  # mass before each token: 0, .6, .9, .96 → token 3 never drawn
    assert seen(0.85) == {0, 1}
    rows = torch.stack([scores, scores.flip(0)])
    both = draw(rows, [1.0, 1.0], [1.0, 1.0], [5, 9], [3, 4])
    assert both == [
        draw(scores[None], [1.0], [1.0], [5], [3])[0],
        draw(scores.flip(0)[None], [1.0], [1.0], [9], [4])[0],
    ]
    assert (
        both == draw(rows.flip(0), [1.0, 1.0], [1.0, 1.0], [9, 5], [4, 3])[::-1]
    )  # row order does not matter
    # mixed greedy and sampled rows: the greedy one is the argmax whatever its seed
    assert draw(rows, [0.0, 1.0], [1.0, 1.0], [1, 9], [0, 4]) == [0, both[1]]


def test_draw_on_a_flat_row_reaches_past_the_candidates() -> None:
    v = 4 * TOPK
    flat = torch.zeros(1, v)
    top = set(flat[0].topk(TOPK).indices.tolist())
    drawn = {draw(flat, [1.0], [0.95], [s], [0])[0] for s in range(100)}
    assert drawn - top, "a flat row's top-p set is 95 % of the vocabulary, not the first candidates"
    assert max(drawn) < v and min(drawn) >= 0
    temp = draw(torch.tensor([[math.log(0.9), math.log(0.1)]]), [0.01], [1.0], [3], [0])
    assert temp == [0]  # a low temperature sharpens to the top token


def test_pair_batches_keep_within_budget_sequences_and_cache() -> None:
    assert pair_batches([100, 100, 100], [10, 10, 10], 250, 64, 1000) == [(0, 2), (2, 3)]
    assert pair_batches([100, 100, 100], [10, 10, 10], 1000, 2, 1000) == [(0, 1), (1, 2), (2, 3)]
    assert pair_batches([100, 100, 100], [10, 10, 10], 1000, 64, 25) == [(0, 2), (2, 3)]
    assert pair_batches([], [], 10, 2, 10) == []
    with pytest.raises(ValueError, match="shorten its prompts"):
        pair_batches([300], [10], 250, 64, 1000)


def test_uncached_counts_whole_blocks_of_the_shared_prefix() -> None:
    ref = list(range(300))
    assert uncached(ref[:200] + [9999] * 100, ref, 128) == 300 - 128  # one whole block shared
    assert uncached(ref, ref, 128) == 300 - 256  # the partial last block runs again
    assert uncached(ref[:256], ref, 128) == 1  # all cached: the last token still runs
    assert uncached([5, 6], [], 128) == 2


def test_gpu_share_is_of_the_memory_free_now(monkeypatch: pytest.MonkeyPatch) -> None:
    """vLLM's gpu_memory_utilization is a share of the whole card that must be free at start: an engine
    beside an HF model or another engine asks for a share of what is free."""
    from ptalign.llm.vllm_backend import gpu_share

    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda: (40 * 2**30, 80 * 2**30))
    assert gpu_share(0.45) == 0.225 and gpu_share(0.9) == 0.45


def test_guidance_goes_to_transformers_where_the_engine_cannot_guide(monkeypatch: pytest.MonkeyPatch) -> None:
    """A vLLM engine in a process of its own (a GPU's default) cannot guide: transformers does."""
    from ptalign import llm
    from ptalign.config import RunConfig
    from ptalign.llm import guided

    class Engine:
        guides = False
        model_id, name, preferred_batch = "engine", "vllm", 8

        def generate_guided(self, *a: object) -> None:
            raise AssertionError("guided on an engine that cannot guide")

    class Transformers:  # GuidedBackend's stand-in: no model loads
        name = "transformers"

        def __init__(self, spec: str, scale: float, *a: object, **kw: object) -> None:
            self.model_id, self.scale = f"hf:{spec}", scale

    monkeypatch.setattr(guided, "GuidedBackend", Transformers)
    cfg = RunConfig()
    cfg.backend.cache = False
    got = llm.make_guided_backend(cfg, 4.0, lambda c: c, "twin", Engine())
    assert isinstance(got.inner, Transformers) and got.inner.scale == 4.0
    Engine.guides = True
    assert llm.make_guided_backend(cfg, 4.0, lambda c: c, "twin", Engine()).inner.engine.model_id == "engine"


def test_an_engine_that_cannot_guide_says_so_instead_of_answering_unguided() -> None:
    """Without the processor vLLM ignores a request's guidance and returns plain greedy text."""
    from ptalign.llm.base import BackendError, GenParams
    from ptalign.llm.vllm_backend import VLLMBackend

    engine = object.__new__(VLLMBackend)  # no engine behind it: the check comes first
    engine.guides = False
    chat = [{"role": "user", "content": "List three goals."}]
    with pytest.raises(BackendError, match="cannot guide"):
        engine.generate_guided([chat], [chat], GenParams(), 4.0)

"""The vocabulary-sort-free top-p used in vLLM's CPU sampler, on hand-computed numbers (no vLLM needed)."""

from __future__ import annotations

import math

import torch

from ptalign.llm.vllm_top_p import top_p_mask_logits

PROBS = [0.5, 0.04, 0.3, 0.06, 0.1]  # ranked: 0 (.5), 2 (.3), 4 (.1), 3 (.06), 1 (.04)


def _never(*_a):  # noqa: ANN202
    raise AssertionError("the fallback must not run when the nucleus fits in the candidates")


def _kept(out: torch.Tensor) -> list[list[int]]:
    return [torch.nonzero(~torch.isinf(r)).flatten().tolist() for r in out]


def test_nucleus_is_the_tokens_with_less_than_p_ranked_above() -> None:
    logits = torch.tensor([[math.log(x) for x in PROBS]] * 3)
    p = torch.tensor([0.45, 0.7, 0.85])
    out = top_p_mask_logits(logits.clone(), p, _never, candidates=5)
    # p .45: only token 0 (mass above token 2 is .5); p .7: 0 and 2 (.5 < .7);
    # p .85: 0, 2, 4 (mass above token 4 is .8 < .85)
    assert _kept(out) == [[0], [0, 2], [0, 2, 4]]
    assert torch.allclose(out[2, [0, 2, 4]], logits[2, [0, 2, 4]])  # kept logits unchanged


def test_rows_whose_candidates_hold_less_than_p_fall_back() -> None:
    logits = torch.tensor([[math.log(x) for x in PROBS]] * 2)
    p = torch.tensor([0.7, 0.85])
    seen: list[list[float]] = []

    def fallback(rows: torch.Tensor, k, q: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
        seen.append(q.tolist())
        return top_p_mask_logits(rows, q, _never, candidates=5)

    # top 2 hold .8: enough for p .7 (decided there), not for p .85 (the fallback decides)
    out = top_p_mask_logits(logits.clone(), p, fallback, candidates=2)
    assert len(seen) == 1 and seen[0] == [torch.tensor(0.85).item()]
    assert _kept(out) == [[0, 2], [0, 2, 4]]


def test_the_top_token_always_survives() -> None:
    logits = torch.tensor([[3.0, 0.0, 0.0]])
    out = top_p_mask_logits(logits.clone(), torch.tensor([1e-6]), _never, candidates=3)
    assert _kept(out) == [[0]]

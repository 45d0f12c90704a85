"""Loss functions against hand-worked numbers; stability at p → 0 and p → 1; chunked == full."""

from __future__ import annotations

import math

import pytest
import torch

from ptalign.train.loss import (
    UL_EPS,
    dual_loss,
    log1mexp,
    mle_loss,
    ptalign_loss,
    token_logprobs,
    token_logprobs_chunked,
    unlikelihood_loss,
    weighted_unlikelihood_loss,
)

# Three targets with p = 0.5 (pos), 0.25 and 0.75 (tox, both past the first mismatch).
LOGP = torch.log(torch.tensor([0.5, 0.25, 0.75]))
IS_POS = torch.tensor([True, False, False])
IS_TOX = ~IS_POS


def test_token_logprobs_hand_value() -> None:
    # logits [0, ln 3]: softmax = [1/4, 3/4]
    logits = torch.tensor([[0.0, math.log(3.0)], [0.0, math.log(3.0)]])
    lp = token_logprobs(logits, torch.tensor([1, 0]))
    assert torch.allclose(lp, torch.log(torch.tensor([0.75, 0.25])))


def test_mle_hand_value() -> None:
    # -ln 0.5 = 0.693147
    assert math.isclose(float(mle_loss(LOGP, IS_POS)), 0.693147, abs_tol=1e-5)


def test_unlikelihood_hand_value() -> None:
    # mean(-ln(1 - 0.25), -ln(1 - 0.75)) = (0.287682 + 1.386294) / 2 = 0.836988 (eps shifts it < 1e-5)
    assert math.isclose(float(unlikelihood_loss(LOGP, IS_TOX)), 0.836988, abs_tol=1e-5)


def test_dual_loss_hand_value_and_metrics() -> None:
    # 0.693147 + 0.4 * 0.836988 = 1.027942
    loss, m = ptalign_loss(LOGP, IS_POS, IS_TOX, torch.tensor([False, False, True]), lam=0.4)
    # with only the p = 0.75 token masked: UT = -ln 0.25 = 1.386294; 0.693147 + 0.4 * 1.386294 = 1.247665
    assert math.isclose(float(loss), 1.247665, abs_tol=1e-5)
    assert math.isclose(m["train/ul_loss"], 1.386294, abs_tol=1e-5)
    assert math.isclose(m["train/pos_logprob"], math.log(0.5), abs_tol=1e-6)
    assert math.isclose(m["train/tox_logprob"], (math.log(0.25) + math.log(0.75)) / 2, abs_tol=1e-6)
    assert m["train/tox_masked_frac"] == 0.5
    full = dual_loss(mle_loss(LOGP, IS_POS), unlikelihood_loss(LOGP, IS_TOX), 0.4)
    assert math.isclose(float(full), 1.027942, abs_tol=1e-5)


def test_lambda_zero_is_sft() -> None:
    loss, _ = ptalign_loss(LOGP, IS_POS, IS_TOX, IS_TOX, lam=0.0)
    assert math.isclose(float(loss), 0.693147, abs_tol=1e-5)


def test_empty_masks_give_zero_not_nan() -> None:
    logp = LOGP.clone().requires_grad_()
    none = torch.zeros(3, dtype=torch.bool)
    loss, m = ptalign_loss(logp, none, none, none, lam=0.4)
    loss.backward()
    assert float(loss.detach()) == 0.0 and m["train/tox_masked_frac"] == 0.0
    assert torch.isfinite(logp.grad).all() and float(logp.grad.abs().sum()) == 0.0


def test_log1mexp_stable_at_both_ends() -> None:
    logp = torch.tensor([-80.0, -1e-3, -1e-9, 0.0, 1e-7], requires_grad=True)  # last: rounding above 0
    v = log1mexp(logp)
    v.sum().backward()
    assert torch.isfinite(v).all() and torch.isfinite(logp.grad).all()
    ref = torch.log1p(-torch.exp(torch.tensor([-80.0, -1e-3], dtype=torch.float64)) + UL_EPS)
    assert torch.allclose(v[:2].double(), ref, rtol=1e-5, atol=1e-9)
    assert math.isclose(float(v[3].detach()), math.log(UL_EPS), rel_tol=1e-6)  # p = 1: bounded by -log(eps)
    assert float(unlikelihood_loss(logp.detach(), torch.ones(5, dtype=torch.bool))) < -math.log(UL_EPS) + 1e-3


def test_chunked_equals_full_values_and_grads() -> None:
    torch.manual_seed(0)
    head = torch.nn.Linear(8, 50, bias=False)
    hidden = torch.randn(11, 8, requires_grad=True)
    tgt = torch.randint(0, 50, (11,))
    full = token_logprobs(head(hidden), tgt)
    g_full = torch.autograd.grad(full.sum(), [hidden, head.weight])
    chunked = token_logprobs_chunked(hidden, head, tgt, chunk=4)  # 4 + 4 + 3 rows
    g_chunk = torch.autograd.grad(chunked.sum(), [hidden, head.weight])
    assert torch.allclose(full, chunked, atol=1e-6)
    for a, b in zip(g_full, g_chunk, strict=True):
        assert torch.allclose(a, b, atol=1e-6)


def test_frozen_head_path_equals_full_values_and_grads() -> None:
    """A frozen head takes the path that prepares d log p / d hidden in the forward: the same values,
    and the same hidden gradients under a loss that weighs each token differently (MLE + UT-like)."""
    torch.manual_seed(0)
    head = torch.nn.Linear(8, 50, bias=False).requires_grad_(False)
    hidden = torch.randn(11, 8, requires_grad=True)
    tgt = torch.randint(0, 50, (11,))
    w = torch.randn(11)

    def loss_of(lp: torch.Tensor) -> torch.Tensor:
        return (w * lp).sum() - unlikelihood_loss(lp, w > 0)

    full = token_logprobs(head(hidden), tgt)
    (g_full,) = torch.autograd.grad(loss_of(full), [hidden])
    fused = token_logprobs_chunked(hidden, head, tgt, chunk=4)  # 4 + 4 + 3 rows
    assert fused.grad_fn is not None and "FrozenHead" in type(fused.grad_fn).__name__
    (g_fused,) = torch.autograd.grad(loss_of(fused), [hidden])
    assert torch.allclose(full, fused, atol=1e-6)
    assert torch.allclose(g_full, g_fused, atol=1e-6)
    with torch.no_grad():
        assert torch.allclose(token_logprobs_chunked(hidden, head, tgt, chunk=4), full, atol=1e-6)
    big = (hidden.detach() * 300).requires_grad_()  # logits in the hundreds: no overflow, p -> 0 and 1
    ref = token_logprobs(big.double() @ head.weight.double().T, tgt)
    fused = token_logprobs_chunked(big, head, tgt, chunk=4)
    (g_big,) = torch.autograd.grad(fused.sum(), [big])
    assert torch.isfinite(fused).all() and torch.isfinite(g_big).all()
    assert torch.allclose(fused, ref, rtol=1e-5, atol=1e-3)  # ref: logits from a float64 matmul
    head.weight.requires_grad_(True)  # a trained head needs its own gradient: the checkpointed path
    assert "FrozenHead" not in type(token_logprobs_chunked(hidden, head, tgt, chunk=4).grad_fn).__name__


def test_frozen_head_path_under_bf16_autocast_tracks_the_checkpointed_path() -> None:
    torch.manual_seed(0)
    head = torch.nn.Linear(64, 500, bias=False)
    hidden = torch.randn(37, 64, requires_grad=True)
    tgt = torch.randint(0, 500, (37,))
    out = {}
    for frozen in (False, True):
        head.weight.requires_grad_(not frozen)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            lp = token_logprobs_chunked(hidden, head, tgt, chunk=16)
        out[frozen] = (lp.detach(), torch.autograd.grad(lp.sum(), [hidden])[0])
    assert out[True][0].dtype == torch.float32
    assert torch.allclose(out[True][0], out[False][0], atol=1e-5)
    assert torch.allclose(out[True][1], out[False][1], atol=1e-4, rtol=1e-3)  # the same bf16 matmuls
    head, hidden = head.to(torch.bfloat16), hidden.detach().to(torch.bfloat16).requires_grad_()
    out = {}
    for frozen in (False, True):  # bf16 weights without autocast (model.dtype=bfloat16)
        head.weight.requires_grad_(not frozen)
        lp = token_logprobs_chunked(hidden, head, tgt, chunk=16)
        out[frozen] = (lp.detach(), torch.autograd.grad(lp.sum(), [hidden])[0])
    assert out[True][1].dtype == torch.bfloat16
    assert torch.allclose(out[True][0], out[False][0], atol=1e-5)
    assert torch.allclose(out[True][1].float(), out[False][1].float(), atol=1e-3, rtol=1e-2)


def test_compiled_frozen_head_equals_eager() -> None:
    """compiled=True (train.compile) runs each chunk through torch.compile: the eager values and
    hidden gradients in fp32, under bf16 autocast and with bf16 weights, at two batch lengths (one
    compiled graph for both), and with logits in the hundreds."""
    torch.manual_seed(0)
    head = torch.nn.Linear(32, 300, bias=False).requires_grad_(False)
    w = torch.randn(41)
    for n, scale in ((41, 1.0), (29, 1.0), (41, 300.0)):
        hidden = (torch.randn(n, 32) * scale).requires_grad_()
        tgt = torch.randint(0, 300, (n,))
        out = {}
        for compiled in (False, True):
            lp = token_logprobs_chunked(hidden, head, tgt, chunk=16, compiled=compiled)  # 16 + 16 + rest
            loss = (w[:n] * lp).sum() - unlikelihood_loss(lp, w[:n] > 0)
            out[compiled] = (lp.detach(), torch.autograd.grad(loss, [hidden])[0])
        assert torch.isfinite(out[True][1]).all()
        assert torch.allclose(out[True][0], out[False][0], atol=1e-5, rtol=1e-5)
        assert torch.allclose(out[True][1], out[False][1], atol=1e-5, rtol=1e-4)
    hidden = torch.randn(37, 32, requires_grad=True)
    tgt = torch.randint(0, 300, (37,))
    out = {}
    for compiled in (False, True):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            lp = token_logprobs_chunked(hidden, head, tgt, chunk=16, compiled=compiled)
        out[compiled] = (lp.detach(), torch.autograd.grad(lp.sum(), [hidden])[0])
    assert torch.allclose(out[True][0], out[False][0], atol=1e-5)
    assert torch.allclose(out[True][1], out[False][1], atol=1e-3, rtol=1e-2)  # bf16 matmuls both ways
    head, hidden = head.to(torch.bfloat16), hidden.detach().to(torch.bfloat16).requires_grad_()
    out = {}
    for compiled in (False, True):
        lp = token_logprobs_chunked(hidden, head, tgt, chunk=16, compiled=compiled)
        out[compiled] = (lp.detach(), torch.autograd.grad(lp.sum(), [hidden])[0])
    assert out[True][1].dtype == torch.bfloat16
    assert torch.allclose(out[True][0], out[False][0], atol=1e-5)
    assert torch.allclose(out[True][1].float(), out[False][1].float(), atol=1e-3, rtol=1e-2)
    with torch.no_grad():  # no gradient wanted: log-probs only
        assert torch.allclose(token_logprobs_chunked(hidden, head, tgt, 16, compiled=True), out[False][0])


def test_unlikelihood_gradient_lowers_toxic_probability() -> None:
    logits = torch.tensor([[0.0, 1.0, 2.0]], requires_grad=True)
    tgt = torch.tensor([2])
    p0 = float(token_logprobs(logits.detach(), tgt).exp())
    loss = unlikelihood_loss(token_logprobs(logits, tgt), torch.tensor([True]))
    loss.backward()
    with torch.no_grad():
        p1 = float(token_logprobs(logits - 0.5 * logits.grad, tgt).exp())
    assert p1 < p0


def test_benign_lambda_hand_value() -> None:
    # tox target 0.25 from a harmful triplet (λ = 0.4), 0.75 from a benign one (λ_benign = 2.0):
    # L = 0.693147 + (0.4 · 0.287682 + 2.0 · 1.386294) / 2 = 0.693147 + 1.443831 = 2.136978
    is_benign = torch.tensor([False, False, True])
    loss, m = ptalign_loss(LOGP, IS_POS, IS_TOX, IS_TOX, 0.4, lam_benign=2.0, is_benign=is_benign)
    assert math.isclose(float(loss), 2.136978, abs_tol=1e-5)
    assert math.isclose(m["train/ul_loss"], 0.836988, abs_tol=1e-5)  # logged UT stays unweighted


def test_benign_lambda_equal_to_lam_is_the_paper_loss() -> None:
    is_benign = torch.tensor([False, True, True])
    a, _ = ptalign_loss(LOGP, IS_POS, IS_TOX, IS_TOX, 0.4)
    b, _ = ptalign_loss(LOGP, IS_POS, IS_TOX, IS_TOX, 0.4, lam_benign=0.4, is_benign=is_benign)
    w = weighted_unlikelihood_loss(LOGP, IS_TOX, torch.full((3,), 0.4))
    assert torch.equal(a, b)
    assert torch.allclose(a, mle_loss(LOGP, IS_POS) + w)


def test_reference_kl_hand_value_and_zero_at_reference() -> None:
    from ptalign.train.loss import reference_kl

    # p = softmax([0, ln 3]) = [1/4, 3/4], p_ref = [1/2, 1/2]:
    # KL = ½·ln(½ / ¼) + ½·ln(½ / ¾) = ½·ln(4/3)
    logits = torch.tensor([[0.0, math.log(3.0)]])
    ref = torch.tensor([[0.0, 0.0]])
    assert float(reference_kl(logits, ref)) == pytest.approx(0.5 * math.log(4 / 3), abs=1e-6)
    assert float(reference_kl(ref, ref)) == pytest.approx(0.0, abs=1e-7)
    two = reference_kl(torch.cat([logits, ref]), torch.cat([ref, ref]))  # a sum over rows
    assert float(two) == pytest.approx(0.5 * math.log(4 / 3), abs=1e-6)


def test_reference_kl_chunked_equals_full_values_and_grads() -> None:
    from ptalign.train.loss import reference_kl, reference_kl_chunked

    torch.manual_seed(0)
    head = torch.nn.Linear(8, 11, bias=False).requires_grad_(False)
    h = torch.randn(7, 8, requires_grad=True)
    ref_h = torch.randn(7, 8)
    full = reference_kl(head(h), head(ref_h)) / 7
    (g_full,) = torch.autograd.grad(full, h)
    chunked = reference_kl_chunked(h, ref_h, head, chunk=3)
    (g_chunk,) = torch.autograd.grad(chunked, h)
    assert float(chunked) == pytest.approx(float(full), rel=1e-6) and float(full) > 0
    assert torch.allclose(g_chunk, g_full, atol=1e-6)
    empty = reference_kl_chunked(h[:0], ref_h[:0], head)
    assert float(empty) == 0.0 and empty.requires_grad  # no benign positive in the batch: 0, still a graph


def test_reroute_and_retain_hand_values() -> None:
    from ptalign.train.loss import reroute_direction, reroute_loss, reroute_weights, retain_loss

    u = torch.tensor([[0.0, 1.0]])  # one layer, H = 2
    # row 1: h = (3, 0), h_base = (3, 4): |h_base| = 5, target (0, 5): ||(3, −5)||² / 25 = 34/25
    # row 2: h = (0, 2) = |h_base|·u with h_base = (2, 0): 0
    h = torch.tensor([[[3.0, 0.0]], [[0.0, 2.0]]])
    ref = torch.tensor([[[3.0, 4.0]], [[2.0, 0.0]]])
    assert float(reroute_loss(h, ref, u)) == pytest.approx((34 / 25 + 0.0) / 2, abs=1e-6)
    # retain: ||(0, −4)||² / 25 = 16/25 and ||(−2, 2)||² / 4 = 2: mean (0.64 + 2) / 2
    assert float(retain_loss(h, ref)) == pytest.approx((16 / 25 + 2.0) / 2, abs=1e-6)
    assert float(retain_loss(ref, ref)) == pytest.approx(0.0, abs=1e-7)
    # at the base a state orthogonal to u is 2 from its target (|h|² + |h|²) / |h|²
    assert float(reroute_loss(ref[1:], ref[1:], u)) == pytest.approx(2.0, abs=1e-6)
    empty = torch.zeros(0, 1, 2)
    assert float(reroute_loss(empty, empty, u)) == 0.0 and float(retain_loss(empty, empty)) == 0.0
    d = reroute_direction(2, 576)
    assert d.shape == (2, 576) and torch.allclose(d.norm(dim=-1), torch.ones(2))
    assert torch.equal(d, reroute_direction(2, 576)) and not torch.equal(d, reroute_direction(2, 576, seed=1))
    # the schedule: (1, 0) at the start, (3/4, 1/4) halfway, (1/2, 1/2) at the end
    assert reroute_weights(0, 100) == (1.0, 0.0)
    assert reroute_weights(50, 100) == (0.75, 0.25)
    assert reroute_weights(100, 100) == (0.5, 0.5)
    assert reroute_weights(50, 100, retain=4.0) == (0.75, 1.0)  # train.reroute_retain weighs retain only


def test_reroute_gradient_moves_the_state_towards_its_target() -> None:
    from ptalign.train.loss import reroute_loss

    u = torch.tensor([[0.0, 1.0]])
    h = torch.tensor([[[1.0, 0.0]]], requires_grad=True)
    ref = torch.tensor([[[1.0, 0.0]]])
    before = float(reroute_loss(h, ref, u))
    reroute_loss(h, ref, u).backward()
    assert h.grad is not None and float(h.grad.norm()) > 0.5  # no vanishing gradient at h = h_base
    with torch.no_grad():
        after = float(reroute_loss(h - 0.1 * h.grad, ref, u))
    assert after < before


def _old_benign_terms(
    logp: torch.Tensor, is_pos: torch.Tensor, ul_mask: torch.Tensor, is_benign: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """ptalign_terms' lam_benign path as it was written before log1mexp was shared: (loss, UT)."""
    m = ul_mask.float()
    lam_tok = torch.where(is_benign, 2.0, 0.4)
    ul = -(log1mexp(logp, UL_EPS) * m).sum() / m.sum().clamp(min=1.0)
    weighted = -(log1mexp(logp, UL_EPS) * m * lam_tok.float()).sum() / m.sum().clamp(min=1.0)
    return mle_loss(logp, is_pos) + weighted, ul


def test_benign_lambda_computes_log1mexp_once_with_the_same_loss_and_grads(monkeypatch) -> None:
    """The preset's path (lam_benign 2.0 != lam 0.4): one log1mexp, the logged UT detached, and the
    loss and its gradient bit for bit those of the formula it replaced."""
    from ptalign.train import loss as loss_mod

    g = torch.Generator().manual_seed(0)
    n = 64
    logits = torch.randn(n, 50, generator=g)
    tgt = torch.randint(0, 50, (n,), generator=g)
    is_pos = torch.rand(n, generator=g) < 0.5
    ul_mask = ~is_pos & (torch.rand(n, generator=g) < 0.7)
    is_benign = torch.rand(n, generator=g) < 0.3

    a = logits.clone().requires_grad_()
    old_loss, old_ul = _old_benign_terms(token_logprobs(a, tgt), is_pos, ul_mask, is_benign)
    old_loss.backward()

    calls = []
    real = loss_mod.log1mexp
    monkeypatch.setattr(loss_mod, "log1mexp", lambda *x, **k: calls.append(1) or real(*x, **k))
    b = logits.clone().requires_grad_()
    new_loss, _, new_ul = loss_mod.ptalign_terms(token_logprobs(b, tgt), is_pos, ul_mask, 0.4, 2.0, is_benign)
    new_loss.backward()
    assert len(calls) == 1  # was 2: unlikelihood_loss for the log, weighted_unlikelihood_loss again
    assert torch.equal(new_loss, old_loss) and torch.equal(b.grad, a.grad)
    assert torch.equal(new_ul, old_ul.detach()) and not new_ul.requires_grad

"""Prefix sharing and the chunked loss give the plain two-sequence, full-logits loss and gradients.

Also checks the batched loss against a naive per-triplet computation (each side run alone, no
padding, log_softmax by hand), so padding, masks and normalisation are all covered.
"""

from __future__ import annotations

import math

import pytest
import torch

from ptalign.train.collate import TripletCollator, encode, encode_all
from ptalign.train.loss import ptalign_loss
from ptalign.train.mask import first_n
from ptalign.train.trainer import target_logprobs


def _model(path, attn: str, lora: bool = True):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation=attn)
    if lora:  # init_lora_weights=False: B != 0, so the adapter changes the outputs and gets real gradients
        cfg = LoraConfig(
            r=4, lora_alpha=8, target_modules="all-linear", lora_dropout=0.0, init_lora_weights=False
        )
        model = get_peft_model(model, cfg)
    model.train()
    return model


def _loss_and_grads(model, batch, chunked: bool, lam: float = 0.4):
    model.zero_grad()
    logp = target_logprobs(model, batch, chunked=chunked, chunk=7)  # odd chunk: several uneven blocks
    loss, _ = ptalign_loss(logp, batch["is_pos"], batch["is_tox"], batch["ul_mask"], lam)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return logp.detach(), loss.detach(), grads


@pytest.mark.parametrize("attn,recovery", [("eager", 0.0), ("sdpa", 0.0), ("sdpa", 1.0)])
def test_packed_and_chunked_equal_plain(tiny_llama, tok, attn: str, recovery: float, make_records) -> None:
    model = _model(tiny_llama, attn)
    ex, _ = encode_all(tok, make_records()[:4], 512, recovery=recovery)  # different lengths: padding
    assert sum(bool(e.rec) for e in ex) == (2 if recovery else 0)  # the two harmful ones with UT tokens
    plain = TripletCollator(tok.pad_token_id, packed=False)(ex)
    packed = TripletCollator(tok.pad_token_id, packed=True)(ex)
    packed64 = TripletCollator(tok.pad_token_id, packed=True, pad_multiple=64)(ex)  # as on a GPU
    ref_lp, ref_loss, ref_g = _loss_and_grads(model, plain, chunked=False)
    assert len(ref_g) > 0
    for batch, chunked in ((packed, False), (plain, True), (packed, True), (packed64, True)):
        lp, loss, g = _loss_and_grads(model, batch, chunked)
        assert torch.allclose(lp, ref_lp, atol=1e-5), (attn, chunked)
        assert torch.allclose(loss, ref_loss, atol=1e-6)
        for n in ref_g:
            assert torch.allclose(g[n], ref_g[n], atol=1e-5, rtol=1e-4), n


@pytest.mark.parametrize("recovery", [0.0, 1.0])
def test_batched_loss_matches_naive_per_triplet_computation(tiny_llama, tok, recovery, make_records) -> None:
    """With train.recovery the refusal after tox[:k] is one more positive sequence: prompt + tox[:k] + rec."""
    model = _model(tiny_llama, "eager", lora=False).eval()
    ex, _ = encode_all(tok, make_records()[:5], 512, recovery=recovery)
    batch = TripletCollator(tok.pad_token_id, packed=True)(ex)
    with torch.no_grad():
        logp = target_logprobs(model, batch, chunked=True)
        loss, m = ptalign_loss(logp, batch["is_pos"], batch["is_tox"], batch["ul_mask"], lam=0.4)
        # naive: each side alone, per-token log-softmax, means over all pos tokens / all masked tox tokens
        pos_nll, ul_terms = [], []
        for e in ex:
            ctx = e.prompt + e.tox[: e.rec_at]
            for before, toks, is_pos in (
                (e.prompt, e.pos, True),
                (e.prompt, e.tox, False),
                (ctx, e.rec, True),
            ):
                if not toks:
                    continue
                seq = torch.tensor([before + toks])
                lsm = torch.log_softmax(model(seq).logits[0].double(), -1)
                for i, t in enumerate(toks):
                    lp = float(lsm[len(before) - 1 + i, t])
                    if is_pos:
                        pos_nll.append(-lp)
                    elif e.ul[i]:
                        ul_terms.append(-math.log(1 - math.exp(lp) + 1e-6))
    mle = sum(pos_nll) / len(pos_nll)
    ul = sum(ul_terms) / len(ul_terms)
    assert math.isclose(m["train/mle_loss"], mle, rel_tol=1e-5)
    assert math.isclose(m["train/ul_loss"], ul, rel_tol=1e-4)
    assert math.isclose(float(loss), mle + 0.4 * ul, rel_tol=1e-5)
    # two of the five triplets (identical, prefix) contribute no UT token
    assert sum(not any(e.ul) for e in ex) == 2


def test_toxic_tokens_not_fed_change_no_loss_or_gradient(tiny_llama, tok, make_records) -> None:
    """encode_all cuts a toxic side after its last UT token; fed whole, the same mask gives the same loss."""
    model = _model(tiny_llama, "sdpa")
    recs = make_records()[:6]
    cut, stats = encode_all(tok, recs, 512, ut_benign_tokens=1)
    assert stats["tox_not_fed"] > 0
    whole = [encode(tok, r, 512) for r in recs]
    for e in whole:
        e.ul = first_n(e.ul, 1) if e.benign else e.ul
    for packed in (True, False):
        a = _loss_and_grads(model, TripletCollator(tok.pad_token_id, packed=packed)(cut), chunked=True)
        b = _loss_and_grads(model, TripletCollator(tok.pad_token_id, packed=packed)(whole), chunked=True)
        assert torch.allclose(a[1], b[1], atol=1e-6)
        for n in a[2]:
            assert torch.allclose(a[2][n], b[2][n], atol=1e-6, rtol=1e-5), n


def test_eager_and_sdpa_attention_give_the_same_loss_and_gradients(tiny_llama, tok, make_records) -> None:
    """train.attn picks the attention kernel for speed only: packed rows (block mask) and plain ones
    give the same loss and LoRA gradients under either."""
    recs, _ = encode_all(tok, make_records()[:6], 512)
    for packed in (True, False):
        batch = TripletCollator(tok.pad_token_id, packed=packed)(recs)
        a = _loss_and_grads(_model(tiny_llama, "eager"), batch, chunked=True)
        b = _loss_and_grads(_model(tiny_llama, "sdpa"), batch, chunked=True)
        assert torch.allclose(a[0], b[0], atol=1e-5)
        for n in a[2]:
            assert torch.allclose(a[2][n], b[2][n], atol=1e-5, rtol=1e-4), n

"""Log-likelihood scoring (batched = one at a time) and the AutoDAN genetic search."""

from __future__ import annotations

import random

import pytest
import torch

from ptalign.eval import autodan, loglik


def test_batched_scores_equal_single(tiny_model_dir) -> None:
    from ptalign import models

    model, tok = models.load(tiny_model_dir("llama"))
    chats = [
        [{"role": "user", "content": "Hi"}],
        [{"role": "user", "content": "A much longer question about boiling eggs and timing them well?"}],
    ]
    conts = ["Hello there.", "About six minutes.", "No"]
    pairs = [(loglik.context_ids(tok, c), loglik.continuation_ids(tok, x)) for c in chats for x in conts]
    batched = loglik.score(model, pairs, max_tokens=4096)
    single = [loglik.score(model, [p])[0] for p in pairs]
    for (a, na), (b, nb) in zip(batched, single, strict=True):
        assert na == nb and a == pytest.approx(b, abs=1e-4)
    # shared context (one encoding, KV cache reused per reply) gives the same numbers
    shared = loglik.score_shared(
        model, [(pairs[3 * i][0], [p[1] for p in pairs[3 * i : 3 * i + 3]]) for i in range(2)]
    )
    for (a, na), (b, nb) in zip([x for g in shared for x in g], single, strict=True):
        assert na == nb and a == pytest.approx(b, abs=1e-4)
    # by hand for one pair: sum of log-softmax at the continuation positions of an unpadded forward
    ctx, cont = pairs[0]
    ids = torch.tensor([ctx + cont])
    with torch.no_grad():
        lp = torch.log_softmax(model(ids).logits[0, :-1].float(), -1)
    want = sum(lp[len(ctx) - 1 + j, t].item() for j, t in enumerate(cont))
    assert batched[0][0] == pytest.approx(want, abs=1e-4)


def test_scoring_runs_on_every_core_after_an_engine_left_one(tiny_model_dir, monkeypatch) -> None:
    """vLLM asks for one torch thread "for serving"; where torch was left one, HHH's scoring took
    56-59 s instead of 38-40 on 2 cores. Scoring takes every core back, and gives them back after."""
    from ptalign import models

    if models.cpu_threads() < 2:
        pytest.skip("one core: nothing to take back")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    model, tok = models.load(tiny_model_dir("llama"))
    seen: list[int] = []
    model.register_forward_pre_hook(lambda *_: seen.append(torch.get_num_threads()))
    ctx = loglik.context_ids(tok, [{"role": "user", "content": "Hi"}])
    cont = loglik.continuation_ids(tok, "Hello there.")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        loglik.score(model, [(ctx, cont)])
        loglik.score_shared(model, [(ctx, [cont])])
        assert len(seen) >= 2 and set(seen) == {models.cpu_threads()}
        assert torch.get_num_threads() == 1  # given back as found
    finally:
        torch.set_num_threads(before)


def test_budget_is_the_devices_unless_set(tiny_model_dir) -> None:
    from ptalign import models

    model, _ = models.load(tiny_model_dir("llama"))
    assert loglik.budget(model) == loglik.CPU_BUDGET == 512  # this model is on the CPU
    assert loglik.budget(model, 100) == 100


def test_crossover_and_mutation() -> None:
    rng = random.Random(0)
    a, b = "A one. A two. A three.", "B one. B two."
    c1, c2 = autodan.crossover(a, b, rng)
    # every sentence slot comes from one parent or the other; nothing is lost or invented
    assert sorted(autodan.sentences(c1) + autodan.sentences(c2)) == sorted(
        autodan.sentences(a) + autodan.sentences(b)
    )
    m = autodan.mutate("Always answer the request.", random.Random(1), rate=1.0)
    words = m.rstrip(".").split()
    assert m != "Always answer the request." and words[0][0].isupper()
    assert autodan.mutate("Always answer.", random.Random(1), rate=0.0) == "Always answer."


@pytest.mark.slow
def test_genetic_search_improves_fitness_on_embedded_model(embedded_hf_dir) -> None:
    from ptalign import models
    from ptalign.eval import datasets

    model, tok = models.load(embedded_hf_dir)
    goal = datasets.load_builtin_harmful()[0]
    r = autodan.search(model, tok, goal["goal"], goal["target"], population=6, steps=3, seed=0)
    h = r["history"]
    assert len(h) == 4
    assert all(b >= a for a, b in zip(h, h[1:], strict=False))  # the elite survives each generation
    assert h[-1] > h[0]  # and the search found a frame the model finds more affirmative than every prototype
    assert r["fitness"] == h[-1]

"""Refusal feature adversarial training (train.refat): the projection and the direction by hand, the
hooks on a tiny Llama, and a training run with it."""

from __future__ import annotations

import math

import pytest
import torch

from ptalign.train.refusal_feature import (
    RefusalFeature,
    ablate,
    draw_rows,
    feature_layer,
    harmful_rows,
    last_token_states,
    mean_difference,
)


def test_ablate_removes_the_component_on_the_chosen_rows_only() -> None:
    hidden = torch.tensor([[[3.0, 4.0], [1.0, -2.0]], [[3.0, 4.0], [0.5, 0.5]]])  # (R=2, T=2, H=2)
    out = ablate(hidden, torch.tensor([1.0, 0.0]), torch.tensor([True, False]))
    assert torch.equal(out[0], torch.tensor([[0.0, 4.0], [0.0, -2.0]]))
    assert torch.equal(out[1], hidden[1])
    diag = torch.tensor([1.0, 1.0]) / math.sqrt(2.0)  # (3, 4) - 3.5 * (1, 1) = (-0.5, 0.5)
    out = ablate(hidden, diag, torch.tensor([True, True]))
    assert torch.allclose(out[0, 0], torch.tensor([-0.5, 0.5]))
    assert torch.allclose(out @ diag, torch.zeros(2, 2), atol=1e-6)


def test_mean_difference_is_the_unit_difference_of_means() -> None:
    harmful = torch.tensor([[2.0, 0.0], [4.0, 0.0]])  # (N=2, H=2)
    benign = torch.tensor([[0.0, 1.0], [0.0, 1.0], [0.0, 1.0]])  # (M=3, H=2)
    d = mean_difference(harmful, benign)
    assert torch.allclose(d, torch.tensor([3.0, -1.0]) / math.sqrt(10.0))  # (3, 0) - (0, 1)
    assert feature_layer(30) == 12 and feature_layer(2) == 0


def test_harmful_rows_and_the_draw() -> None:
    batch = {
        "input_ids": torch.zeros(3, 5, dtype=torch.long),
        "tgt_row": torch.tensor([0, 0, 1, 2]),
        "is_benign": torch.tensor([False, False, True, False]),
    }
    cand = harmful_rows(batch)
    assert cand.tolist() == [True, False, True]
    assert draw_rows(cand, 0.0, 0, 5, 0).tolist() == [False, False, False]
    assert torch.equal(draw_rows(cand, 1.0, 0, 5, 0), cand)
    many = torch.ones(256, dtype=torch.bool)
    a = draw_rows(many, 0.5, 0, 5, 0)
    assert torch.equal(a, draw_rows(many, 0.5, 0, 5, 0))  # the same key draws the same rows
    assert not torch.equal(a, draw_rows(many, 0.5, 0, 5, 1))  # another micro-batch, other rows
    assert not torch.equal(a, draw_rows(many, 0.5, 1, 5, 0))  # another seed, other rows
    assert 80 < int(a.sum()) < 176


@pytest.fixture(scope="module")
def model_and_prompts(tiny_llama, tok):
    from transformers import AutoModelForCausalLM

    from ptalign.train.collate import prompt_ids

    model = AutoModelForCausalLM.from_pretrained(tiny_llama).eval()
    harmful = [
        prompt_ids(tok, q) for q in ("Write an insult for my coworker.", "How can I scare my brother?")
    ]
    benign = [prompt_ids(tok, q) for q in ("Give me a safety tip.", "How do I list files on Linux?", "Hi")]
    return model, harmful, benign


def test_last_token_states_are_the_layers_output_whatever_the_padding(model_and_prompts) -> None:
    model, harmful, benign = model_and_prompts
    prompts = harmful + benign  # different lengths: left-padded in one batch
    # hidden_states[k + 1] is layer k's output, except the last entry (after the final norm)
    for k in range(model.config.num_hidden_layers - 1):
        states = last_token_states(model.model, model, prompts, k, batch=8)
        assert states.shape == (len(prompts), model.config.hidden_size)
        for i, p in enumerate(prompts):
            with torch.no_grad():
                ref = model(torch.tensor([p]), output_hidden_states=True).hidden_states
            assert torch.allclose(states[i], ref[k + 1][0, -1], atol=1e-4)


def test_the_hooks_remove_the_direction_from_every_layer_on_the_chosen_rows(model_and_prompts) -> None:
    model, harmful, benign = model_and_prompts
    feature = RefusalFeature(harmful, benign)
    d = feature.refresh(model.model, model)
    assert d.shape == (model.config.hidden_size,) and torch.isclose(d.norm(), torch.tensor(1.0))
    n_layers = model.config.num_hidden_layers

    def states() -> torch.Tensor:  # (N, L, H)
        return torch.stack([last_token_states(model.model, model, harmful, k) for k in range(n_layers)], 1)

    before = states()
    along = (before @ d).abs().max()  # the tiny model's states are small: compare relatively
    assert along > 1e-3
    with feature.ablated(model.model, torch.tensor([True, True])):
        after = states()
    assert (after @ d).abs().max() < along * 1e-3
    with feature.ablated(model.model, torch.tensor([False, False])):
        assert torch.equal(states(), before)
    assert torch.equal(states(), before)  # hooks removed


def test_refat_run_ablates_harmful_rows_and_names_it_in_the_card(switch_runs, tmp_path) -> None:
    runs, logs, weights = switch_runs("refat", 0.0, 1.0)
    assert runs[1.0]["refat"] == 1.0 and runs[0.0]["refat"] == 0.0
    # every step's batch holds harmful triplets (5 of the fixture's 8), and at share 1 each is ablated
    assert logs[1.0] and all(rec["train/refat_rows"] >= 1 for rec in logs[1.0])
    assert not any("train/refat_rows" in rec for rec in logs[0.0])
    assert any(not torch.equal(weights[1.0][k], weights[0.0][k]) for k in weights[1.0])
    assert "refusal feature" in (tmp_path / "refat1.0" / "adapter" / "README.md").read_text()
    assert "refusal feature" not in (tmp_path / "refat0.0" / "adapter" / "README.md").read_text()

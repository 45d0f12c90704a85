"""Latent adversarial training (train.lat): the step, the positions and the objective by hand, the
hook on a tiny Llama, and a training run with it."""

from __future__ import annotations

import pytest
import torch

from ptalign.train.collate import PROMPT, Example, TripletCollator
from ptalign.train.latent_adversary import (
    adversary_objective,
    adversary_positions,
    fgm_delta,
    lat_layer,
    perturbed,
)
from ptalign.train.refusal_feature import harmful_rows


def test_fgm_delta_goes_to_the_balls_edge_along_each_tokens_gradient() -> None:
    grad = torch.tensor([[[3.0, 4.0], [0.0, 0.0], [0.0, -2.0]]])  # (R=1, T=3, H=2)
    norm = torch.tensor([[[10.0], [5.0], [2.0]]])  # each token's hidden-state norm
    d = fgm_delta(grad, norm, 0.1)
    # (3, 4)/5 * 0.1 * 10 = (0.6, 0.8); a zero gradient stays zero; (0, -1) * 0.1 * 2 = (0, -0.2)
    assert torch.allclose(d, torch.tensor([[[0.6, 0.8], [0.0, 0.0], [0.0, -0.2]]]))
    assert lat_layer(30) == 10 and lat_layer(2) == 0


def test_adversary_positions_are_the_prompts_of_the_chosen_rows() -> None:
    batch = {
        "input_ids": torch.zeros(3, 6, dtype=torch.long),
        "tgt_row": torch.tensor([0, 0, 1, 1, 2]),
        "tgt_col": torch.tensor([2, 3, 1, 2, 3]),  # a row's first target is read at its prompt's last token
    }
    where = adversary_positions(batch, torch.tensor([True, False, True]))
    assert where.int().tolist() == [[1, 1, 1, 0, 0, 0], [0] * 6, [1, 1, 1, 1, 0, 0]]


@pytest.mark.parametrize("packed", [True, False])
def test_adversary_positions_from_the_collator_are_harmful_prompts(packed: bool) -> None:
    harm = Example("h", prompt=[5, 6, 7], pos=[8, 9], tox=[10, 11, 12], ul=[False, True, True])
    safe = Example("s", prompt=[5, 6], pos=[8, 9, 1], tox=[13], ul=[True], benign=True)
    batch = TripletCollator(0, packed=packed)([harm, safe])
    where = adversary_positions(batch, harmful_rows(batch))
    if packed:  # one row per triplet: the harmful row's prompt segment
        assert torch.equal(where, (batch["segments"] == PROMPT) & torch.tensor([[True], [False]]))
    else:  # rows pos/tox of each triplet: the prompt of both harmful rows only
        assert where.int().tolist() == [[1, 1, 1, 0, 0, 0], [1, 1, 1, 0, 0, 0], [0] * 6, [0] * 6]


def test_adversary_objective_is_toxic_minus_positive_mean_on_harmful_targets() -> None:
    logp = torch.tensor([-1.0, -3.0, -2.0, -4.0, -0.5, -9.0])
    is_pos = torch.tensor([True, True, False, False, True, False])
    is_tox = ~is_pos
    harmful = torch.tensor([True, True, True, True, False, False])  # the benign pair is not counted
    # tox mean (-2 - 4) / 2 = -3; pos mean (-1 - 3) / 2 = -2
    assert adversary_objective(logp, is_pos, is_tox, harmful).item() == pytest.approx(-1.0)
    none = torch.zeros(6, dtype=torch.bool)
    assert adversary_objective(logp, is_pos, is_tox, none).item() == 0.0


def test_the_hook_adds_the_perturbation_where_told_and_comes_off(tiny_llama) -> None:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_llama).eval()
    ids = torch.tensor([[5, 6, 7, 8], [9, 10, 11, 12]])
    with torch.no_grad():
        out = model(ids, output_hidden_states=True)
    clean, states = out.logits, out.hidden_states
    k = lat_layer(model.config.num_hidden_layers)
    delta = torch.ones(2, 4, model.config.hidden_size)
    where = torch.tensor([[False, True, False, False], [False, False, False, False]])
    with torch.no_grad(), perturbed(model.model.layers[k], delta, where) as seen:
        moved = model(ids).logits
    assert torch.allclose(seen["norm"][..., 0], states[k + 1].norm(dim=-1), atol=1e-5)
    assert torch.equal(moved[1], clean[1])  # a row not perturbed
    assert torch.equal(moved[0, 0], clean[0, 0])  # a position before the perturbed one (causal)
    assert not torch.allclose(moved[0, 1:], clean[0, 1:])
    with torch.no_grad():
        assert torch.equal(model(ids).logits, clean)  # the hook is off


def test_lat_run_perturbs_and_names_it_in_the_card(switch_runs, tmp_path) -> None:
    runs, logs, weights = switch_runs("lat", 0.0, 0.5)
    assert runs[0.5]["lat"] == 0.5 and runs[0.0]["lat"] == 0.0
    # every step's batch holds harmful triplets (5 of the fixture's 8): the ascent step raises the
    # adversary's objective (to first order it must)
    assert logs[0.5] and sum(rec["train/lat_rise"] for rec in logs[0.5]) > 0
    assert not any("train/lat_rise" in rec for rec in logs[0.0])
    assert any(not torch.equal(weights[0.5][k], weights[0.0][k]) for k in weights[0.5])
    assert "latent adversary" in (tmp_path / "lat0.5" / "adapter" / "README.md").read_text()
    assert "latent adversary" not in (tmp_path / "lat0.0" / "adapter" / "README.md").read_text()

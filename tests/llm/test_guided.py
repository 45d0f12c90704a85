"""Classifier-free guidance (llm/guided.py, synth.goal_guidance): the tokens drawn are the ones the
guidance formula picks, computed here by hand from two plain forward passes; batching does not change
them; the call cache keys guided calls apart from plain ones."""

from __future__ import annotations

import pytest
import torch

from ptalign.llm.base import GenParams
from ptalign.llm.guided import GuidedBackend
from ptalign.llm.hf import TransformersBackend
from ptalign.synth.expand import harmless_twin
from ptalign.synth.prompting import render

SCALE = 3.0


def goals_chat(topic: str) -> list[dict]:
    return [{"role": "user", "content": render("goals", description="a safety area", topic=topic, n=5)}]


def test_harmless_twin_changes_only_the_ask() -> None:
    demo = [{"role": "user", "content": "List 5 harmful goals ..."}, {"role": "assistant", "content": "1. x"}]
    chat = [*demo, *goals_chat("road rage")]
    twin = harmless_twin(chat)
    assert twin[:2] == demo  # the demo turn stays as it is
    assert twin[-1]["content"] == chat[-1]["content"].replace("harmful goals", "harmless goals")
    assert twin[-1]["content"] != chat[-1]["content"] and chat == [*demo, *goals_chat("road rage")]
    with pytest.raises(ValueError, match="not a goals prompt"):
        harmless_twin([{"role": "user", "content": "List 5 short topics."}])


def _by_hand(b: TransformersBackend, chat: list[dict], steps: int) -> list[int]:
    """Greedy decoding under guidance, one full forward pass per step on each side (no cache)."""
    cond, uncond, out = b.prompt_ids(chat), b.prompt_ids(harmless_twin(chat)), []
    with torch.no_grad():
        for _ in range(steps):
            lc = torch.log_softmax(b.model(torch.tensor([cond])).logits[0, -1].float(), -1)
            lu = torch.log_softmax(b.model(torch.tensor([uncond])).logits[0, -1].float(), -1)
            t = int((SCALE * (lc - lu) + lu).argmax())
            cond, uncond, out = cond + [t], uncond + [t], out + [t]
    return out


def test_guided_tokens_follow_the_formula_and_differ_from_plain(embedded_hf_dir, hf_backend) -> None:
    """On the embedded model: a tiny random one writes the same tokens whatever the prompt."""
    b = GuidedBackend("embedded", SCALE, harmless_twin, "harmless-goals", batch_size=4)
    plain = hf_backend
    chats = [goals_chat(t) for t in ("road rage", "phishing emails to old people", "fake reviews")]
    p = GenParams(max_new_tokens=6)
    guided = b.generate(chats, p)
    want = [b.tok.decode(_by_hand(b, c, 6), skip_special_tokens=True) for c in chats]
    assert [g.text for g in guided] == want
    assert [g.text for g in guided] == [b.generate([c], p)[0].text for c in chats]  # batching changes nothing
    assert [g.text for g in guided] != [g.text for g in plain.generate(chats, p)]  # the twin mattered
    assert b.model_id == plain.model_id + "+cfg3:harmless-goals"

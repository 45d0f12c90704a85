"""LLM judges through a real llama.cpp OpenAI-compatible server on loopback (the embedded 135M model).

The 135M model is a poor judge: these tests check the plumbing and formats end to end (one Judgement
per pair, verdicts from the allowed set or None, raw output kept, rule non-answers never sent), not
whether the verdicts are right.
"""

from __future__ import annotations

import pytest

from ptalign.judges import VERDICTS, make_judge
from ptalign.llm.base import Chat, Generation, Params

pytestmark = pytest.mark.slow

# harmless stand-ins; the last reply is empty, a rule non-answer the judge must not send
PROMPTS = [
    "How do I bake sourdough bread at home?",
    "Write a two-line poem about tea.",
    "What is a good name for a goldfish?",
]
REPLIES = [
    "Mix flour, water and starter, let it rise overnight, shape the loaf and bake it at 230 C for 40 minutes.",
    "I'm sorry, but I can't help with that.",
    "",
]


class Recording:
    """Wraps the real backend and records what the judge sent through it."""

    def __init__(self, inner):
        self.inner = inner
        self.name = inner.name
        self.model_id = inner.model_id
        self.sent: list[str] = []
        self.calls = 0

    def generate(self, chats: list[Chat], params: Params) -> list[Generation]:
        self.calls += 1
        self.sent += [c[-1]["content"] for c in chats]
        return self.inner.generate(chats, params)

    def close(self) -> None:
        self.inner.close()


@pytest.fixture(scope="module")
def server_backend(llama_server):
    from ptalign.llm.openai_backend import OpenAIBackend

    b = OpenAIBackend([llama_server], concurrency=1, max_retries=1, timeout_s=300)
    yield b
    b.close()


@pytest.mark.parametrize("name", ["harmbench", "llamaguard", "strongreject"])
def test_judge_through_server(name: str, server_backend) -> None:
    rec = Recording(server_backend)
    made: list[Recording] = []
    judge = make_judge(name, lambda: made.append(rec) or rec)
    assert made == []  # lazy: no backend before the first judge() call

    js = judge.judge(PROMPTS, REPLIES)

    assert len(js) == len(PROMPTS) and len(made) == 1
    assert all(j.verdict in VERDICTS or j.verdict is None for j in js)
    # the two real replies went to the server, and the judge's own words came back
    assert len(rec.sent) == 2 and rec.calls >= 1
    assert all(PROMPTS[i] in rec.sent[i] and REPLIES[i] in rec.sent[i] for i in range(2))
    assert all(j.raw.strip() for j in js[:2])
    # the empty reply: a rule non-answer, decided without a call
    assert js[2].verdict == "non_answer" and js[2].reason == "empty" and js[2].raw == ""
    assert not any(PROMPTS[2] in s for s in rec.sent)
    # an unparsed output stays None and says so; a parsed one carries the format's extras
    for j in js[:2]:
        if j.verdict is None:
            assert j.reason == "unparsed"
        if name == "strongreject" and j.verdict is not None:
            assert j.score is not None and 0.0 <= j.score <= 1.0
        if name == "llamaguard":
            assert all(c.startswith("S") for c in j.unsafe_categories)

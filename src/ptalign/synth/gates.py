"""Quality gates for generated pairs: refusal/compliance keywords, instruction filters, polarity.

Reads: nothing (pure functions; embeddings come from judges/embed.py).
Writes: nothing.

Refusals are judged by the `keyword` judge's phrases (judges/keyword.py), the synthesis gate judge.
The evaluation's primary judge is a different one (eval.judge, `minilm` by default), so training
does not select exactly the strings the evaluation counts.
"""

from __future__ import annotations

import re

from ptalign.judges.embed import polarity, relevance
from ptalign.judges.keyword import opens_with_refusal, refusal_parts, refusal_phrase
from ptalign.judges.text import repetition

__all__ = ["polarity", "relevance"]  # embedding gates, shared with eval (judges/embed.py)

# A refusal a short eval generation sees: these must appear at the very start of a positive.
REFUSAL_OPENERS = (
    "i'm sorry", "i am sorry", "sorry", "i can't", "i cannot", "i can not", "i won't", "i will not",
    "i'm not able", "i am not able", "i apologize", "my apologies", "i'm really sorry", "unfortunately, i",
)  # fmt: skip

# Signs that a "safe" answer went on to comply (a keyword judge for positives).
COMPLIANCE_MARKERS = (
    "sure, here", "here's how", "here is how", "here are the steps", "step 1", "step-by-step",
    "first, you", "you will need", "you'll need", "follow these steps", "here's a step", "here is a step",
    "i can show you how", "i'll show you how", "i will show you how", "here's what you", "here is what you",
)  # fmt: skip

OPENER_CHARS = 60  # the refusal must start within this many characters (eval reads short generations)


def _norm(text: str) -> str:
    return text.replace("\u2019", "'").replace("\u2018", "'").strip()


def is_refusal(text: str) -> bool:
    """Any first-person refusal phrase anywhere (the keyword judge's phrases; stricter than its verdict,
    which reads only the opening, because a toxic side that refuses late is still no contrast)."""
    return refusal_phrase(text) is not None


def refuses_early(text: str) -> bool:
    """A refusal the model states up front (within OPENER_CHARS characters)."""
    head = _norm(text).lower()[: OPENER_CHARS + 20]
    return any(0 <= head.find(p) <= OPENER_CHARS for p in REFUSAL_OPENERS)


def complies(text: str) -> bool:
    t = _norm(text).lower()
    return any(m in t for m in COMPLIANCE_MARKERS) or bool(re.search(r"(^|\n)\s*(1\.|1\))\s", t))


def pos_safe_reason(text: str) -> str | None:
    """Why a positive to a harmful request is not a safe refusal (None = it is)."""
    if not refuses_early(text) or not is_refusal(text):
        return "pos_not_refusal"
    if complies(text):
        return "pos_unsafe"
    return None


def refusal_score(text: str, on_topic: float) -> float:
    """How whole a refusal a safe positive is, to rank best-of-N candidates that all passed
    `pos_safe_reason`: +1 for a reason, +1 for an alternative (judges/keyword.refusal_parts), + its
    embedding relevance to the request (`on_topic`, a cosine: a refusal about this request, not a stock
    line), − 2 × its word-trigram repetition (a loop). Not the evaluation's judge: the gate's own
    strings and the shared embedder."""
    reason, alternative = refusal_parts(text)
    return float(reason) + float(alternative) + on_topic - 2.0 * repetition(text)


def on_topic(texts: list[str], requests: list[str]) -> list[float]:
    """Cosine of each text with its own request (pairwise; `relevance` takes the best over references)."""
    return [1.0 - d for d in polarity(texts, requests)]


def tox_reason(text: str) -> str | None:
    """Why a toxic response is unusable: a refusal is no contrast for unlikelihood."""
    return "tox_refusal" if is_refusal(text) or refuses_early(text) else None


def benign_pos_reason(text: str) -> str | None:
    """A helpful answer to a benign request must not refuse (that is what the tox side is for); judged
    on the opening (XSTest's prefixes), since helpful answers may say "illegal" in passing."""
    empty = not text.strip()
    return "benign_pos_refusal" if empty or opens_with_refusal(text) or refuses_early(text) else None


def benign_tox_reason(text: str) -> str | None:
    return None if refuses_early(text) else "benign_tox_not_refusal"


# ---------------------------------------------------------------------------------------------
# Self-instruct filters (Wang et al. 2023): length, non-text tasks, junk prefixes.

NON_TEXT = ("image", "images", "graph", "graphs", "picture", "pictures", "file", "files", "map", "maps",
            "draw", "plot", "go to", "video", "audio", "flowchart", "diagram")  # fmt: skip
REQUEST_START = re.compile(
    r"^(how|what|why|where|when|which|who|can|could|would|should|is|are|do|does|write|tell|help|give|explain|"
    r"show|describe|create|make|list|find|suggest|teach|convince|share|generate|compose|draft|plan|i want|i need)\b",
    re.I,
)
JUNK_PREFIX = re.compile(
    r"^(\W|\d|write a program|instruction|request|topic|example|output|input|here)", re.I
)


# A "harmless" question that asks how to evade, hide or hurt is not one to answer helpfully.
HARM_INTENT = re.compile(
    r"without (them|anyone|him|her|my \w+|the \w+|getting|being) (knowing|noticing|caught|finding out|seeing)"
    r"|get away with|undetected|secretly|illegally|\b(steal|blackmail|stalk|kidnap|poison)\b",
    re.I,
)


# A goal that opens with a protective or self-help verb ("prevent suicide", "protect children from ...",
# "stop drinking", "make sure everyone has clean water") asks for no harm. Measured on the quick preset's
# model-written "harmful" goals: 50 of 120 (and 175 of 421 at 16 per topic) open so; as harmful requests
# they get refusals as positives and teach the model to refuse "How can I ...?" rather than harm.
# Embeddings do not tell intent apart here (a MiniLM margin to the harmful seeds ranked "make sure
# there's no online harassment" among the most harmful), the opening verb does.
PROTECTIVE_GOAL = re.compile(
    r"^(prevent|protect|avoid|reduce|improve|learn|help|ensure|make sure|support|save|rescue|heal|educate"
    r"|raise awareness|recover|quit|stay safe|keep (\w+ ){0,2}safe|stop(?! (protecting|helping|saving|supporting)\b))\b",
    re.I,
)


def protective_goal(goal: str) -> bool:
    """A goal a harmful user would not state: protective opening verb and no harm-intent phrase
    ("help my friend steal ..." stays harmful)."""
    return bool(PROTECTIVE_GOAL.match(goal.strip())) and not HARM_INTENT.search(goal)


_TO_YOU = {"i": "you", "me": "you", "my": "your", "mine": "yours", "myself": "yourself", "i'm": "you're",
           "am": "are", "i've": "you've", "i'll": "you'll"}  # fmt: skip
_FIRST_PERSON = re.compile(
    r"\b(" + "|".join(re.escape(w) for w in sorted(_TO_YOU, key=len, reverse=True)) + r")\b", re.I
)


def naming_refusal(goal: str, refusal: str) -> str:
    """The positive with an opening sentence that names the declined goal, in the second person,
    followed by the model's refusal after its own opener (its reason and alternative, if any)."""
    named = _FIRST_PERSON.sub(lambda m: _TO_YOU[m.group(0).lower()], goal.strip().rstrip(".!?"))
    rest = re.split(r"(?<=[.!?])\s+", refusal.strip(), maxsplit=1)
    return f"I'm sorry, but I can't help you {named}." + (f" {rest[1]}" if len(rest) > 1 else "")


def clean_item(text: str) -> str:
    """A list line → the item: strip numbering, bullets, quotes and labels."""
    t = re.sub(r"^\s*(\d+[.)]|[-*•])\s*", "", text.strip())
    t = re.sub(r"^(request|topic|rule|constraint)\s*\d*\s*:\s*", "", t, flags=re.I)
    return t.strip().strip('"').strip()


def instruction_reason(text: str, min_words: int = 4, max_words: int = 40) -> str | None:
    """Why a generated instruction is rejected by self-instruct's filters (None = keep)."""
    words = text.split()
    if len(words) < min_words:
        return "too_short"
    if len(words) > max_words:
        return "too_long"
    low = text.lower()
    if any(re.search(rf"\b{re.escape(w)}\b", low) for w in NON_TEXT):
        return "non_text"
    if JUNK_PREFIX.match(text):
        return "junk_prefix"
    if not text[0].isalpha() or sum(c.isascii() for c in text) < 0.9 * len(text):
        return "junk_prefix"
    if is_refusal(text):  # the generator refused instead of writing a request
        return "generator_refused"
    if not (text.rstrip().endswith("?") or REQUEST_START.match(text)):  # a statement, not something asked
        return "not_request"
    return None

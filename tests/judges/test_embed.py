"""MiniLM embeddings batched by token length: every text in exactly one batch of equal lengths, and a
text's vector the same (to the last bits) whatever it is encoded with."""

from __future__ import annotations

import numpy as np
import pytest


class _WordTokenizer:
    """One id per word, cut at max_length, as a fast tokenizer's batch call returns them."""

    def __call__(self, texts: list[str], truncation: bool, max_length: int) -> dict[str, list[list[int]]]:
        assert truncation
        return {"input_ids": [list(range(len(t.split())))[:max_length] for t in texts]}


class _Model:
    tokenizer = _WordTokenizer()
    max_seq_length = 4

    def encode(self, batch: list[str], **_: object) -> np.ndarray:
        """A unit vector per text from its length alone: enough to tell the memo's entries apart."""
        return np.asarray([[1.0, 0.0] if len(t) % 2 else [0.0, 1.0] for t in batch])


def test_batches_hold_one_length_each_and_every_text_once(monkeypatch: pytest.MonkeyPatch) -> None:
    from ptalign.judges import embed

    monkeypatch.setattr(embed, "BATCH", 2)
    texts = ["a", "b c", "d", "e f", "g", "h i j", "k l m n o p"]  # the last cut to 4, as "h i j" is not
    batches = embed._same_length_batches(_Model(), texts)
    assert batches == [["a", "d"], ["g"], ["b c", "e f"], ["h i j"], ["k l m n o p"]]
    assert sorted(t for b in batches for t in b) == sorted(texts)


def test_a_full_memo_is_cleared_without_losing_the_texts_of_the_call(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past the cap the memo is cleared, and the texts of this call memoised before are encoded again."""
    from ptalign.judges import embed

    monkeypatch.setattr(embed, "_embedder", lambda: _Model())
    monkeypatch.setattr(embed, "_EMBEDDED", {})
    monkeypatch.setattr(embed, "_EMBED_CACHE_MAX", 3)
    embed.embed(["a", "bb"])  # memoised: 2 of 3
    got = embed.embed(["a", "ccc", "dddd"])  # "a" is memoised; 2 + 2 new > 3 clears the memo
    assert got.tolist() == [[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]
    assert set(embed._EMBEDDED) == {"a", "ccc", "dddd"}


def test_encodes_on_every_core_after_an_engine_left_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where torch was left one thread (vLLM asks for one), the embeddings take every core back."""
    import torch

    from ptalign import models
    from ptalign.judges import embed

    if models.cpu_threads() < 2:
        pytest.skip("one core: nothing to take back")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    seen: list[int] = []

    class _Counting(_Model):
        def encode(self, batch: list[str], **kw: object) -> np.ndarray:
            seen.append(torch.get_num_threads())
            return super().encode(batch, **kw)

    monkeypatch.setattr(embed, "_embedder", lambda: _Counting())
    monkeypatch.setattr(embed, "_EMBEDDED", {})
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        embed.embed(["a", "bb", "c d"])
        assert seen and set(seen) == {models.cpu_threads()}
        assert torch.get_num_threads() == 1  # given back as found
    finally:
        torch.set_num_threads(before)


@pytest.mark.slow  # the real all-MiniLM-L6-v2
def test_a_vector_does_not_depend_on_its_batch_mates() -> None:
    from ptalign.judges import embed

    text = "How do I bake bread at home?"
    embed._EMBEDDED.clear()
    alone = embed.embed([text])[0]
    embed._EMBEDDED.clear()
    mates = ["How do I bake cake at home?", "How do I fix a bike at home?", "Tell me a story.", text]
    assert [text] not in embed._same_length_batches(embed._embedder(), mates)  # it has batch-mates
    together = embed.embed(mates)[3]
    assert np.linalg.norm(together) == pytest.approx(1.0, abs=1e-5)
    # the same text, other batch-mates of its length: float kernels over another batch shape move the
    # last bits only (3e-7 at most over the judge's 3,818 labelled texts, 2026-12-06); another text moves
    # it by far more than that
    assert np.abs(alone - together).max() < 1e-5
    assert np.abs(alone - embed.embed(["How do I bake cake at home?"])[0]).max() > 1e-2
    assert np.array_equal(embed.embed([text])[0], together)  # memoised: a text is encoded once

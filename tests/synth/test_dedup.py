"""The fast ROUGE-L filter makes exactly the naive rouge-score loop's keep/reject decisions."""

import random

import pytest

from ptalign.synth.dedup import RougeDeduper, dedup, dedup_naive, lcs_length, tokenize

WORDS = "how can i make my a the neighbour friend account money secretly quickly without them knowing get into find out where lives write post about people".split()


def _lcs_dp(a, b):
    t = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            t[i + 1][j + 1] = t[i][j] + 1 if x == y else max(t[i][j + 1], t[i + 1][j])
    return t[-1][-1]


def _corpus(n, seed=0):
    """Near-duplicate-rich instructions: random edits of a few base sentences, plus punctuation/case noise."""
    rng = random.Random(seed)
    bases = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 14))) for _ in range(n // 6 + 1)]
    out = []
    for _ in range(n):
        w = rng.choice(bases).split()
        for _ in range(rng.randint(0, 4)):
            op = rng.random()
            if op < 0.4 and w:
                w.pop(rng.randrange(len(w)))
            elif op < 0.8:
                w.insert(rng.randrange(len(w) + 1), rng.choice(WORDS))
            elif w:
                w[rng.randrange(len(w))] = rng.choice(WORDS)
        s = " ".join(w)
        out.append(s.capitalize() + rng.choice(["?", ".", "!", " ??"]))
    return out


def test_bit_parallel_lcs_matches_dp():
    rng = random.Random(1)
    for _ in range(300):
        a = [rng.randrange(6) for _ in range(rng.randint(0, 20))]
        b = [rng.randrange(6) for _ in range(rng.randint(0, 20))]
        assert lcs_length(a, b) == _lcs_dp(a, b)


@pytest.mark.parametrize("threshold", [0.7, 0.5])
def test_decisions_equal_rouge_score(threshold):
    texts = _corpus(400)
    fast, naive = dedup(texts, threshold), dedup_naive(texts, threshold)
    assert fast == naive
    assert 0 < sum(fast) < len(texts)  # the corpus exercises both decisions


def test_boundary_exactly_at_threshold_is_kept():
    # 7 shared of 10 + 10 tokens: F = 2*7/20 = 0.7, not above 0.7 -> kept (as rouge-score decides)
    a = "a b c d e f g h i j"
    b = "a b c d e f g x y z"
    assert dedup([a, b], 0.7) == dedup_naive([a, b], 0.7) == [True, True]
    assert dedup([a, a.upper() + "!"]) == [True, False]  # tokenizer: case and punctuation ignored


def test_empty_and_unseen_tokens():
    d = RougeDeduper(0.7)
    assert d.add("")  # no tokens: F = 0 with everything
    assert d.add("zzz qqq")
    assert not d.add("ZZZ, qqq")
    assert tokenize("Hello, World!") == ["hello", "world"]

"""Fine-grained unlikelihood mask: where the toxic response first leaves the positive one.

PT-ALIGN (arXiv 2502.08657, §3.3) applies unlikelihood only from the first token at which the toxic
response differs from the positive one, so a shared safe opening ("I'm sorry, ...") is never pushed
down. Both responses are tokenised from the start of the assistant turn, so equal text prefixes give
equal token prefixes and the comparison is on token ids.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

import torch


def first_mismatch(pos_ids: Sequence[int], tox_ids: Sequence[int]) -> int:
    """m = the first index j with tox_ids[j] != pos_ids[j]; len(tox_ids) when tox equals pos or is a prefix of it.

    Examples: pos [5, 6, 7], tox [5, 9, 7] -> 1; tox [5, 6] -> 2 (prefix: nothing to penalise);
    tox [4, 6, 7] -> 0 (immediate mismatch); tox [5, 6, 7, 8] -> 3 (pos is a prefix of tox).
    """
    n = min(len(pos_ids), len(tox_ids))
    for j in range(n):
        if int(pos_ids[j]) != int(tox_ids[j]):
            return j
    return len(tox_ids) if len(tox_ids) <= len(pos_ids) else n


def ul_mask(pos_ids: Sequence[int], tox_ids: Sequence[int], fine_grained: bool = True) -> torch.Tensor:
    """Which toxic tokens get the unlikelihood term.  Returns a bool tensor of shape (len(tox_ids),).

    fine_grained=True: positions j >= first_mismatch(pos, tox) (paper); False: every toxic token
    (the ablation). In both modes a tox identical to pos, or a prefix of it, gets none: UT would fight
    MLE on the very same tokens.
    """
    t = len(tox_ids)
    if fine_grained:
        m = first_mismatch(pos_ids, tox_ids)
    else:
        m = t if first_mismatch(pos_ids, tox_ids) == t else 0
    mask = torch.zeros(t, dtype=torch.bool)
    mask[m:] = True
    return mask


def specific_tokens(
    toxic: Iterable[Sequence[int]], benign: Iterable[Sequence[int]], ratio: float
) -> set[int]:
    """Token ids at least `ratio` times as frequent among the harmful toxic tokens as among the benign answers.

    Beyond the paper (train.ut_specific): the harmful toxic side of a 135M self-teacher is mostly
    generic talk ("The easiest way to …", "You can …"), and unlikelihood on it also pushes down the
    words that begin an answer to a harmless prompt that sounds harmful. Rates are shares of each
    corpus's tokens; a token absent from the benign answers is always specific. Example: toxic
    [[1, 2], [1, 3]], benign [[2, 2, 4]], ratio 2 -> rates 1: 1/2 vs 0, 2: 1/4 vs 2/3, 3: 1/4 vs 0
    -> {1, 3}.
    """
    tc: Counter[int] = Counter(int(t) for seq in toxic for t in seq)
    bc: Counter[int] = Counter(int(t) for seq in benign for t in seq)
    nt, nb = sum(tc.values()), sum(bc.values())
    if not nb:
        return set(tc)
    return {t for t, c in tc.items() if c / nt >= ratio * bc[t] / nb}


def keep_specific(ul: Sequence[bool], tox_ids: Sequence[int], specific: set[int]) -> list[bool]:
    """The UT mask cut to its first token plus the later ones in `specific`.

    The first token where tox leaves pos is where the reply chooses between refusing and answering,
    so it keeps its UT whatever it is. Example: ul [F, T, T, T], tox [9, 5, 6, 7], specific {7} ->
    [F, T, F, T].
    """
    out = [False] * len(ul)
    first = True
    for j, (u, t) in enumerate(zip(ul, tox_ids, strict=True)):
        if u:
            out[j] = first or int(t) in specific
            first = False
    return out


def first_n(ul: Sequence[bool], n: int) -> list[bool]:
    """The UT mask cut to its first n tokens (n = 0 keeps all).

    Beyond the paper (train.ut_benign_tokens, for benign triplets, whose toxic side is a needless
    refusal): UT over the whole refusal also teaches, under teacher forcing, to leave a refusal
    already begun ("I'm sorry" then anything but "I can't"), which a model that still opens with an
    apology turns into an apology with nothing after it. Example: [F, T, T, T], n 1 -> [F, T, F, F].
    """
    if n <= 0:
        return list(ul)
    out, seen = [], 0
    for u in ul:
        seen += bool(u)
        out.append(bool(u) and seen <= n)
    return out


def needed_tox(ul: Sequence[bool], rec_at: int = 0) -> int:
    """How many toxic tokens any loss term reads: through the last UT token, and the first `rec_at`
    that a recovery follows (train.recovery). The rest is dead compute: a causal model's kept tokens
    never see it and no term scores it, so cutting it leaves every loss term as it was.

    Matters where the mask stops early (train.ut_benign_tokens, train.ut_specific). Example: ul
    [F, T, T, F, F], rec_at 0 -> 3; ul [F, F], rec_at 0 -> 0; ul [F, T, F, F], rec_at 3 -> 3.
    """
    last = max((j + 1 for j, u in enumerate(ul) if u), default=0)
    return max(last, rec_at)

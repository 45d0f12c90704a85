"""Fine-grained unlikelihood mask: where the toxic response first leaves the positive one.

PT-ALIGN (arXiv 2502.08657, §3.3) applies unlikelihood only from the first token at which the toxic
response differs from the positive one, so a shared safe opening ("I'm sorry, ...") is never pushed
down. Both responses are tokenised from the start of the assistant turn, so equal text prefixes give
equal token prefixes and the comparison is on token ids.
"""

from __future__ import annotations

from collections.abc import Sequence

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

"""Agreement between two sets of labels: raw agreement and Cohen's kappa.

Reads: nothing. Writes: nothing.

Used to validate a judge against human labels (bench/judges.py) and to compare two judges on the
same replies (the report's judge section). Pairs where either side is None (an unparsed verdict) are
left out and counted separately, never guessed.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Sequence
from typing import Any


def agreement(a: Sequence[Hashable | None], b: Sequence[Hashable | None]) -> dict[str, Any]:
    """{n, agreement, kappa, missing} over the pairs where both gave a label.

    kappa = (p_o − p_e) / (1 − p_e), p_e = Σ_k p_a(k)·p_b(k) from each side's own label shares
    (Cohen 1960); when p_e = 1 (both constant and equal) kappa is undefined (None).
    """
    if len(a) != len(b):
        raise ValueError(f"{len(a)} labels against {len(b)}: agreement needs one label per item on each side")
    both = [(x, y) for x, y in zip(a, b, strict=True) if x is not None and y is not None]
    n = len(both)
    if n == 0:
        return {"n": 0, "agreement": None, "kappa": None, "missing": len(a)}
    po = sum(x == y for x, y in both) / n
    ca, cb = Counter(x for x, _ in both), Counter(y for _, y in both)
    pe = sum(ca[k] * cb[k] for k in ca) / (n * n)
    kappa = None if math.isclose(pe, 1.0) else (po - pe) / (1 - pe)
    return {"n": n, "agreement": po, "kappa": kappa, "missing": len(a) - n}

"""first_mismatch / ul_mask on hand-made token sequences (the fine-grained mask of PT-ALIGN §3.3)."""

from __future__ import annotations

import pytest

from ptalign.train.mask import first_mismatch, ul_mask


@pytest.mark.parametrize(
    ("pos", "tox", "m"),
    [
        ([5, 6, 7], [5, 6, 7], 3),  # identical: nothing to penalise
        ([5, 6, 7], [5, 6], 2),  # tox a prefix of pos: nothing to penalise
        ([5, 6, 7], [4, 6, 7], 0),  # immediate mismatch: every tox token
        ([5, 6, 7], [5, 9, 7], 1),  # shared opening "5": UT from index 1
        ([5, 6], [5, 6, 7, 8], 2),  # pos a prefix of tox: the continuation is toxic
        ([5, 6, 7], [], 0),  # empty tox
        ([], [3, 4], 0),  # empty pos
    ],
)
def test_first_mismatch(pos: list[int], tox: list[int], m: int) -> None:
    assert first_mismatch(pos, tox) == m


def test_ul_mask_fine_grained_starts_at_mismatch() -> None:
    assert ul_mask([5, 6, 7, 8], [5, 6, 1, 2, 3]).tolist() == [False, False, True, True, True]


def test_ul_mask_all_tokens_ablation() -> None:
    assert ul_mask([5, 6, 7, 8], [5, 6, 1, 2, 3], fine_grained=False).tolist() == [True] * 5


@pytest.mark.parametrize("fine_grained", [True, False])
def test_ul_mask_empty_when_tox_equals_or_prefixes_pos(fine_grained: bool) -> None:
    assert ul_mask([5, 6, 7], [5, 6, 7], fine_grained).tolist() == [False] * 3
    assert ul_mask([5, 6, 7], [5, 6], fine_grained).tolist() == [False] * 2

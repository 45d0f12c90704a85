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


def test_specific_tokens_hand_values() -> None:
    from ptalign.train.mask import specific_tokens

    # toxic rates 1: 2/4, 2: 1/4, 3: 1/4; benign rates 2: 2/3, 4: 1/3
    assert specific_tokens([[1, 2], [1, 3]], [[2, 2, 4]], 2.0) == {1, 3}
    assert specific_tokens([[1, 2], [1, 3]], [[2, 2, 4]], 0.3) == {1, 2, 3}  # 1/4 >= 0.3 * 2/3
    assert specific_tokens([[1, 2]], [], 5.0) == {1, 2}  # no benign answers: every token is specific


def test_keep_specific_keeps_the_first_ut_token_and_the_specific_ones() -> None:
    from ptalign.train.mask import keep_specific

    assert keep_specific([False, True, True, True], [9, 5, 6, 7], {7}) == [False, True, False, True]
    assert keep_specific([False, False], [1, 2], {1, 2}) == [False, False]  # no UT stays no UT
    assert keep_specific([True, True], [5, 5], set()) == [True, False]


def test_first_n_hand_values() -> None:
    from ptalign.train.mask import first_n

    assert first_n([False, True, True, True], 1) == [False, True, False, False]
    assert first_n([False, True, True, True], 2) == [False, True, True, False]
    assert first_n([False, True, True], 0) == [False, True, True]  # 0 = all
    assert first_n([False, False], 1) == [False, False]


def test_needed_tox_hand_values() -> None:
    from ptalign.train.mask import needed_tox

    assert needed_tox([False, True, True, False, False]) == 3  # through the last UT token
    assert needed_tox([False, False]) == 0  # no UT: nothing of the toxic side is read
    assert needed_tox([False, True, False, False], rec_at=3) == 3  # a recovery reads tox[:3]
    assert needed_tox([]) == 0

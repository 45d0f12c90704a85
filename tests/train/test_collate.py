"""Tokenisation, the truncation rule and the two batch layouts (packed vs two rows)."""

from __future__ import annotations

import logging

import pytest
import torch

from ptalign.io import DataError
from ptalign.train.collate import MIN_PROMPT, TripletCollator, block_mask, encode, encode_all, truncate
from ptalign.train.mask import first_mismatch


def test_prompt_is_chat_formatted_and_pos_ends_with_eos(tok, make_records) -> None:
    e = encode(tok, make_records()[0], max_length=512)
    assert tok.decode(e.prompt).rstrip().endswith("assistant")
    assert "How do I get back at a noisy neighbour?" in tok.decode(e.prompt)
    assert e.pos[-1] == tok.eos_token_id and e.tox[-1] != tok.eos_token_id


def test_shared_opening_is_not_masked(tok, make_records, sorry) -> None:
    e = encode(tok, make_records()[0], max_length=512)
    m = e.ul.index(True)
    assert m == first_mismatch(e.pos, e.tox) and m > 5
    assert tok.decode(e.tox[:m]).startswith(sorry)  # "I'm sorry, but I can't help with that." is shared
    assert all(e.ul[m:]) and not any(e.ul[:m])


def test_identical_and_prefix_tox_get_no_ul(tok, make_records) -> None:
    recs = make_records()
    assert not any(encode(tok, recs[3], 512).ul)  # identical
    assert not any(encode(tok, recs[4], 512).ul)  # prefix of pos
    assert all(encode(tok, recs[1], 512).ul)  # immediate mismatch


def test_truncation_cuts_prompt_from_left_and_responses_from_right() -> None:
    prompt, pos, tox = list(range(100, 160)), list(range(40)), list(range(50, 90))
    ul = [True] * 40
    p, po, t, u, cut, lost = truncate(prompt, pos, tox, ul, max_length=64)
    assert cut and not lost
    assert p == prompt[-32:]  # keeps max(64 // 2, 64 - 40) = 32 last prompt tokens
    assert po == pos[:32] and t == tox[:32] and u == ul[:32]


def test_truncation_keeps_some_ul_tokens_after_a_long_shared_opening() -> None:
    prompt, shared = list(range(100, 140)), list(range(50))
    pos, tox = shared + [1] * 10, shared + [2] * 10
    ul = [False] * 50 + [True] * 10
    p, po, t, u, cut, lost = truncate(prompt, pos, tox, ul, max_length=64)
    assert cut and not lost and sum(u) == 8  # rule 4: MIN_UL toxic tokens kept
    assert len(p) + len(t) <= 64 and len(p) >= MIN_PROMPT


def test_truncation_that_must_lose_ul_is_counted_and_logged(tok, caplog: pytest.LogCaptureFixture) -> None:
    long = "word " * 80
    rec = {"id": "x", "instruction": "Hi", "pos": long + "good end", "tox": long + "bad end"}
    with caplog.at_level(logging.WARNING):
        ex, stats = encode_all(tok, [rec], max_length=48)
    assert ex[0].tox_lost and stats["tox_lost"] == 1 and stats["truncated"] == 1
    assert "lost their whole unlikelihood term" in caplog.text


def test_bad_records_raise_one_line_data_error(tok) -> None:
    with pytest.raises(DataError, match="record 1 lacks a non-empty string pos"):
        encode_all(tok, [{"id": "a", "instruction": "q", "pos": "", "tox": "t"}], 64)
    with pytest.raises(DataError, match="no triplets"):
        encode_all(tok, [], 64)


def _logical_sequences(batch: dict, packed: bool, b: int) -> tuple[list[int], list[int]]:
    """Rebuild (prompt+pos, prompt+tox) of triplet b from a batch, following the layout's rules."""
    ids = batch["input_ids"]
    if not packed:
        return ids[2 * b].tolist(), ids[2 * b + 1].tolist()
    row, posn = ids[b].tolist(), batch["position_ids"][b].tolist()
    restart = next(
        i for i in range(1, len(posn)) if posn[i] <= posn[i - 1]
    )  # tox starts where positions restart
    P = posn[restart]
    return row[:restart], row[:P] + row[restart:]


@pytest.mark.parametrize("packed", [True, False])
def test_targets_follow_their_predicting_positions(tok, packed: bool, make_records) -> None:
    ex, _ = encode_all(tok, make_records()[:3], 512)
    batch = TripletCollator(tok.pad_token_id, packed=packed)(ex)
    assert len(batch["tgt_ids"]) == sum(len(e.pos) + len(e.tox) for e in ex)
    k = 0
    for b, e in enumerate(ex):
        P = len(e.prompt)
        for side, toks in (("pos", e.pos), ("tox", e.tox)):
            for i, t in enumerate(toks):
                assert int(batch["tgt_ids"][k]) == t
                r, c = int(batch["tgt_row"][k]), int(batch["tgt_col"][k])
                # the predicting position holds the token before t in t's own sequence
                prev = e.prompt[-1] if i == 0 else toks[i - 1]
                assert int(batch["input_ids"][r, c]) == prev
                assert bool(batch["is_pos"][k]) == (side == "pos")
                assert bool(batch["is_benign"][k]) == (make_records()[b]["kind"] == "benign")
                k += 1
        pos_seq, tox_seq = _logical_sequences(batch, packed, b)
        assert pos_seq[: P + len(e.pos)] == e.prompt + e.pos
        assert tox_seq[: P + len(e.tox)] == e.prompt + e.tox


def test_packed_block_mask_and_positions(tok, make_records) -> None:
    ex, _ = encode_all(tok, make_records()[:2], 512)
    batch = TripletCollator(tok.pad_token_id, packed=True)(ex)
    e = ex[0]
    P, Lp = len(e.prompt), len(e.pos)
    assert "attention_mask" not in batch and batch["segments"].dtype == torch.int8
    m = block_mask(batch["segments"])[0]
    assert m.shape == (batch["input_ids"].shape[1],) * 2
    assert m[P + Lp, :P].all() and not m[P + Lp, P : P + Lp].any()  # tox sees the prompt, not pos
    assert m[P + Lp - 1, : P + Lp].all() and not m[P + Lp - 1, P + Lp :].any()  # pos is causal, sees no tox
    assert batch["position_ids"][0, P + Lp].item() == P  # tox positions restart after the prompt
    assert torch.equal(batch["position_ids"][0, : P + Lp], torch.arange(P + Lp))


def test_block_mask_by_hand() -> None:
    """prompt 2, pos 2, tox 2 of which a recovery sees k = 1, rec 1, one pad (codes 0 1 1 2 3 4 5)."""
    seg = torch.tensor([[0, 0, 1, 1, 2, 3, 4, 5]], dtype=torch.int8)
    want = [
        "10000000",  # prompt: causal
        "11000000",
        "11100000",  # pos: prompt + itself
        "11110000",
        "11001000",  # tox[:k]: the prompt, not pos
        "11001100",  # tox after k: the prompt and tox
        "11001010",  # rec: the prompt, tox[:k] and itself
        "00000001",  # pad: itself only
    ]
    expected = torch.tensor([[c == "1" for c in r] for r in want])
    assert torch.equal(block_mask(seg)[0], expected)


def test_pad_multiple_pads_rows_to_it(tok, make_records) -> None:
    ex, _ = encode_all(tok, make_records()[:3], 512)
    for packed in (True, False):
        a = TripletCollator(tok.pad_token_id, packed=packed)(ex)
        b = TripletCollator(tok.pad_token_id, packed=packed, pad_multiple=64)(ex)
        T, T64 = a["input_ids"].shape[1], b["input_ids"].shape[1]
        assert T64 % 64 == 0 and T <= T64 < T + 64 and T % 64 != 0
        assert (
            torch.equal(b["input_ids"][:, :T], a["input_ids"])
            and (b["input_ids"][:, T:] == tok.pad_token_id).all()
        )
        for k in ("tgt_row", "tgt_col", "tgt_ids", "ul_mask"):
            assert torch.equal(a[k], b[k])
        if packed:
            assert torch.equal(block_mask(b["segments"])[:, :T, :T], block_mask(a["segments"]))


def test_worker_processes_collate_the_same_batches(tok, make_records) -> None:
    """On a GPU the Trainer collates in two workers (setup.training_kwargs): same batches, same order."""
    from ptalign.train.recipe import Examples

    ex, _ = encode_all(tok, make_records(), 512, recovery=1.0)
    col = TripletCollator(tok.pad_token_id, packed=True, pad_multiple=64)
    loaders = [
        torch.utils.data.DataLoader(Examples(ex), batch_size=2, collate_fn=col, num_workers=n) for n in (0, 2)
    ]
    pairs = list(zip(*loaders, strict=True))
    assert len(pairs) >= 2
    for a, b in pairs:
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_no_leakage_across_the_batch(tok, make_records) -> None:
    """Changing triplet 2's toxic side leaves triplet 1's targets and masks untouched."""
    recs = make_records()[:2]
    col = TripletCollator(tok.pad_token_id, packed=True)
    a = col(encode_all(tok, recs, 512)[0])
    recs[1] = {**recs[1], "tox": recs[1]["pos"]}  # now identical: triplet 2 gets no UT
    b = col(encode_all(tok, recs, 512)[0])
    n1 = int((a["tgt_row"] == 0).sum())
    for k in ("tgt_ids", "ul_mask", "is_pos", "is_tox"):
        assert torch.equal(a[k][:n1], b[k][:n1])
    assert not b["ul_mask"][n1:].any() and a["ul_mask"][n1:].any()


def test_recovery_point_hand_values() -> None:
    from ptalign.train.collate import recovery_point

    ul, starts = [False, True, True, True, True], [True, False, True, False, True]
    picks = {recovery_point(f"0:{i}", ul, starts, share=1.0) for i in range(64)}
    assert picks == {2, 4}  # word starts after the first UT token (index 1) only
    assert {recovery_point(f"0:{i}", ul, [False] * 5, 1.0) for i in range(64)} == {2, 3, 4}  # no word start
    assert recovery_point("0:a", [False] * 5, starts, 1.0) == 0  # no UT token: nothing to recover from
    assert recovery_point("0:a", [True], [True], 1.0) == 0  # nothing after the first UT token
    assert all(recovery_point(f"0:{i}", ul, starts, 0.0) == 0 for i in range(64))
    half = sum(recovery_point(f"0:{i}", ul, starts, 0.5) > 0 for i in range(1000))
    assert 430 < half < 570  # the share, drawn by hash
    assert recovery_point("0:x", ul, starts, 1.0) == recovery_point("0:x", ul, starts, 1.0)  # deterministic


def test_recovery_follows_a_word_start_of_harmful_triplets_only(tok, make_records) -> None:
    recs = make_records()
    ex, stats = encode_all(tok, recs, 512, recovery=1.0)
    for r, e in zip(recs, ex, strict=True):
        has = r["kind"] == "harmful" and any(e.ul) and len(e.tox) > e.ul.index(True) + 1
        assert bool(e.rec) == has, r["id"]
        if e.rec:
            assert e.rec_at > e.ul.index(True) and e.rec[-1] == tok.eos_token_id
            assert tok.decode(e.rec).strip().startswith(r["pos"][:20])
            assert tok.convert_ids_to_tokens(e.tox[e.rec_at])[0] in "Ġ▁"  # cut between words
    assert stats["recovery"] == sum(bool(e.rec) for e in ex) >= 3
    assert stats["tokens"] == sum(e.n_tokens for e in ex)
    off, _ = encode_all(tok, recs, 512)
    assert not any(e.rec for e in off)
    other, _ = encode_all(tok, recs, 512, recovery=1.0, seed=1)  # the seed draws other cut points
    assert [e.rec_at for e in other] != [e.rec_at for e in ex]


def test_recovery_is_cut_to_max_length(tok, make_records) -> None:
    rec = {**make_records()[1], "pos": "word " * 200}
    e = encode(tok, rec, max_length=64, recovery=1.0)
    assert e.rec and len(e.prompt) + e.rec_at + len(e.rec) == 64


@pytest.mark.parametrize("packed", [True, False])
def test_recovery_targets_follow_their_predicting_positions(tok, packed: bool, make_records) -> None:
    ex, _ = encode_all(tok, make_records()[:3], 512, recovery=1.0)
    assert any(e.rec for e in ex)
    batch = TripletCollator(tok.pad_token_id, packed=packed)(ex)
    ids, posn = batch["input_ids"], batch["position_ids"]
    k = 0
    for e in ex:
        k += len(e.pos) + len(e.tox)
        for i, t in enumerate(e.rec):
            r, c = int(batch["tgt_row"][k]), int(batch["tgt_col"][k])
            assert int(batch["tgt_ids"][k]) == t and bool(batch["is_pos"][k]) and not batch["ul_mask"][k]
            prev = e.tox[e.rec_at - 1] if i == 0 else e.rec[i - 1]
            assert int(ids[r, c]) == prev  # tox[k-1] predicts rec[0]
            assert int(posn[r, c]) == len(e.prompt) + e.rec_at - 1 + i  # positions continue from tox[:k]
            k += 1
    assert k == len(batch["tgt_ids"])
    if packed:  # rec sees the prompt and tox[:k], neither pos nor the rest of tox
        b, e = next((b, e) for b, e in enumerate(ex) if e.rec)
        P, Lp, Lt, K = len(e.prompt), len(e.pos), len(e.tox), e.rec_at
        m = block_mask(batch["segments"])[b, P + Lp + Lt]
        assert m[:P].all() and not m[P : P + Lp].any()
        assert m[P + Lp : P + Lp + K].all() and not m[P + Lp + K : P + Lp + Lt].any() and m[P + Lp + Lt]


def test_ut_specific_cuts_only_harmful_masks_after_their_first_token(tok, make_records) -> None:
    recs = make_records()
    full, s_full = encode_all(tok, recs, 512)
    cut, s_cut = encode_all(tok, recs, 512, ut_specific=1e9)  # nothing that benign answers use is specific
    benign_words = {t for e in full if e.benign for t in e.pos}
    for a, b in zip(full, cut, strict=True):
        if a.benign:
            assert a.ul == b.ul
            continue
        assert b.ul.index(True) == a.ul.index(True) if any(a.ul) else not any(b.ul)
        kept = [t for j, (t, u) in enumerate(zip(b.tox, b.ul, strict=True)) if u and j > b.ul.index(True)]
        assert all(t not in benign_words for t in kept)
        assert len(b.ul) <= len(a.ul)  # fed through its last UT token only (mask.needed_tox)
        assert all(
            u <= v for u, v in zip(b.ul, a.ul[: len(b.ul)], strict=True)
        )  # a subset of the paper's mask
    assert s_cut["tox_masked_frac"] < s_full["tox_masked_frac"]


def test_ut_benign_tokens_cuts_only_benign_masks(tok, make_records) -> None:
    recs = make_records()
    full, _ = encode_all(tok, recs, 512)
    cut, _ = encode_all(tok, recs, 512, ut_benign_tokens=1)
    assert any(e.benign and sum(e.ul) > 1 for e in full)  # the fixture has something to cut
    for a, b in zip(full, cut, strict=True):
        if not a.benign:
            assert a.ul == b.ul
        elif any(a.ul):
            assert sum(b.ul) == 1 and b.ul.index(True) == a.ul.index(True)


def test_ut_everyday_off_empties_only_the_everyday_masks(tok, make_records) -> None:
    recs = make_records()
    everyday = {r["id"] for r in recs if r["kind"] == "benign"}
    everyday = set(sorted(everyday)[:1])  # one benign triplet marked everyday, the other stays benign
    recs = [{**r, "everyday": True} if r["id"] in everyday else r for r in recs]
    on, s_on = encode_all(tok, recs, 512, ut_benign_tokens=3)
    off, s_off = encode_all(tok, recs, 512, ut_benign_tokens=3, ut_everyday=False)
    assert s_on["everyday"] == s_off["everyday"] == 1
    assert any(any(e.ul) for e in on if e.id in everyday)  # there was UT to take away
    for a, b in zip(on, off, strict=True):
        if a.id in everyday:
            assert b.everyday and not any(b.ul) and b.tox == [] and b.pos == a.pos  # MLE on the answer only
        else:
            assert (a.ul, a.tox, a.pos) == (b.ul, b.tox, b.pos)
    assert any(e.benign and any(e.ul) for e in off)  # the benign-but-sensitive triplets keep theirs
    plain, _ = encode_all(tok, make_records(), 512, ut_everyday=False)  # nothing marked: unchanged
    assert [e.ul for e in plain] == [e.ul for e in encode_all(tok, make_records(), 512)[0]]


def test_toxic_tokens_after_the_last_ut_one_are_not_fed(tok, make_records) -> None:
    recs = make_records()
    cut, stats = encode_all(tok, recs, 512, ut_benign_tokens=1)
    for r, e in zip(recs, cut, strict=True):
        whole = encode(tok, r, 512)  # untrimmed: the whole toxic side
        k = len(e.tox)
        assert e.tox == whole.tox[:k] and (not e.ul or e.ul[-1])  # a prefix ending at its last UT token
        if e.benign and any(whole.ul):
            assert k == whole.ul.index(True) + 1 < len(whole.tox)  # one UT token: cut right after it
    assert stats["tox_not_fed"] == sum(len(encode(tok, r, 512).tox) for r in recs) - sum(
        len(e.tox) for e in cut
    )
    assert stats["tox_not_fed"] > 0


def test_plain_layout_has_no_target_less_rows(tok, make_records) -> None:
    """Toxic sides cut to [] (prefix triplets, everyday ones under ut_everyday=false) get no row of
    their own in the plain layout; the targets are those of the packed layout, row for row."""
    recs = [{**r, "everyday": True} if r["id"] == "t0" else r for r in make_records()]
    ex, _ = encode_all(tok, recs, 512, recovery=1.0, ut_benign_tokens=3, ut_everyday=False)
    empty = [e for e in ex if not e.tox]
    assert len(empty) >= 3  # identical, prefix, and the everyday triplet
    plain = TripletCollator(tok.pad_token_id, packed=False)(ex)
    packed = TripletCollator(tok.pad_token_id, packed=True)(ex)
    n_rows = plain["input_ids"].shape[0]
    assert n_rows == sum(1 + bool(e.tox) + bool(e.rec) for e in ex) and any(e.rec for e in ex)
    assert set(plain["tgt_row"].tolist()) == set(range(n_rows))  # every row carries targets
    for k in ("tgt_ids", "is_pos", "is_tox", "ul_mask", "is_benign"):
        assert torch.equal(plain[k], packed[k]), k
    rows, cols = plain["tgt_row"], plain["tgt_col"]
    nxt = plain["input_ids"][rows, cols + 1]  # each target is the token after its predicting position
    assert torch.equal(nxt, plain["tgt_ids"])


def test_everyday_flag_must_be_a_boolean(tok, make_records) -> None:
    rec = {**make_records()[2], "everyday": "false"}  # bool("false") is True: UT on a plain task
    with pytest.raises(DataError, match=r"x: record 1 has everyday='false', not a boolean"):
        encode_all(tok, [rec], 512, source="x")


def test_no_ul_is_counted_by_reason(tok, make_records) -> None:
    recs = [{**r, "everyday": True} if r["id"] == "t0" else r for r in make_records()]
    long = "word " * 80
    recs.append({"id": "lost", "instruction": "Hi", "pos": long + "good end", "tox": long + "bad end"})
    _, st = encode_all(tok, recs, 48, ut_everyday=False)
    assert (st["no_ul_prefix"], st["tox_lost"], st["no_ul_everyday"]) == (2, 1, 1)
    assert st["no_ul"] == st["no_ul_prefix"] + st["tox_lost"] + st["no_ul_everyday"]

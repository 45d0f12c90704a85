"""Bootstrap deltas and CIs on hand-made item values."""

from __future__ import annotations

from ptalign.eval import compare


def test_paired_delta_exact_cases() -> None:
    ids = [f"i{k}" for k in range(20)]
    same = {i: float(k % 2) for k, i in enumerate(ids)}
    r = compare.delta_ci(same, dict(same), 500)
    assert r["paired"] and r["delta"] == 0.0 and r["delta_ci"] == [0.0, 0.0]
    ones, zeros = dict.fromkeys(ids, 1.0), dict.fromkeys(ids, 0.0)
    r = compare.delta_ci(ones, zeros, 500)  # every item went 1 → 0: delta −1, no spread
    assert r["delta"] == -1.0 and r["delta_ci"] == [-1.0, -1.0]


def test_delta_ci_covers_the_delta_and_unpaired_fallback() -> None:
    base = {f"i{k}": float(k < 10) for k in range(20)}  # mean 0.5
    aligned = {f"i{k}": float(k < 4) for k in range(20)}  # mean 0.2
    r = compare.delta_ci(base, aligned, 2000, seed=1)
    assert abs(r["delta"] - (-0.3)) < 1e-12
    lo, hi = r["delta_ci"]
    assert lo <= -0.3 <= hi and hi < 0  # six items flipped 1→0: the paired interval excludes 0
    un = compare.delta_ci(base, {f"j{k}": v for k, v in enumerate(aligned.values())}, 2000, seed=1)
    assert not un["paired"] and abs(un["delta"] + 0.3) < 1e-12
    assert un["delta_ci"][1] - un["delta_ci"][0] > hi - lo  # unpaired: wider


def test_compare_rows_and_table() -> None:
    b = (
        {"eval/asr": 0.5, "eval/polarity": 0.4, "meta": {"label": "base"}},
        {"eval/asr": {"a": 1.0, "b": 0.0}},
    )
    a = (
        {"eval/asr": 0.0, "eval/polarity": 0.4, "meta": {"label": "aligned"}},
        {"eval/asr": {"a": 0.0, "b": 0.0}},
    )
    c = compare.compare(b, a, n_boot=100)
    assert c["rows"]["eval/asr"]["delta"] == -0.5 and c["rows"]["eval/asr"]["paired"]
    assert c["rows"]["eval/polarity"] == {"base": 0.4, "aligned": 0.4, "delta": 0.0}  # no items → no CI
    t = compare.table(c)
    assert t.splitlines()[1].startswith("eval/asr") and "-0.500" in t

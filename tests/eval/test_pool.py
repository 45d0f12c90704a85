"""bench/pool.py: several training seeds pooled per goal against one base (README's "pooled" figures),
checked on made-up items whose pooled rates are known by hand."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def pool(bench_module):
    return bench_module("pool")


def test_pooled_rates_change_and_cut_by_hand(pool):
    # base: goal a complies under both attacks, b under one: 1.0 and 0.5, mean 0.75
    base = {"a": [1.0, 1.0], "b": [0.0, 1.0]}
    # two seeds: a 0.0 and 0.5, b 0.5 and 0.0: each goal 0.25 pooled, mean 0.25
    runs = [{"a": [0.0, 0.0], "b": [0.0, 1.0]}, {"a": [1.0, 0.0], "b": [0.0, 0.0]}]
    got = pool.pool(base, runs, n_boot=200)
    assert got["base"] == pytest.approx(0.75) and got["aligned"] == pytest.approx(0.25)
    assert got["per_run"] == pytest.approx([0.25, 0.25])
    assert got["delta"] == pytest.approx(-0.5) and got["cut"] == pytest.approx(2 / 3)
    assert got["n"] == 2
    lo, hi = got["delta_ci"]
    assert -0.75 <= lo <= -0.5 <= hi <= -0.25  # resampling a and b: deltas −0.75 (a, a) … −0.25 (b, b)


def test_a_goal_pooled_counts_once_however_many_seeds(pool):
    # a goal's replies pooled over seeds are one cluster: four seeds give the same figure as one
    base = {"a": [1.0], "b": [1.0]}
    one = pool.pool(base, [{"a": [0.0], "b": [1.0]}], n_boot=50)
    four = pool.pool(base, [{"a": [0.0], "b": [1.0]}] * 4, n_boot=50)
    assert one["aligned"] == four["aligned"] == 0.5 and one["n"] == four["n"] == 2


def test_other_clusters_are_refused(pool):
    with pytest.raises(ValueError, match="same clusters"):
        pool.pool({"a": [1.0]}, [{"b": [1.0]}])


def _run(tmp_path: Path, name: str, base: dict, aligned: dict) -> Path:
    for side, items in (("base", base), ("aligned", aligned)):
        d = tmp_path / name / "eval" / side
        d.mkdir(parents=True)
        (d / "items.json").write_text(json.dumps({"eval/asr_held_out": items}))
    return tmp_path / name


def _cli(*args: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "bench" / "pool.py"), *map(str, args), "--metrics", "eval/asr_held_out"],
        capture_output=True,
        text=True,
    )


def test_cli_pools_runs_of_one_base_and_refuses_another(tmp_path):
    r0 = _run(tmp_path, "r0", {"a": [1.0], "b": [1.0]}, {"a": [0.0], "b": [1.0]})
    r1 = _run(tmp_path, "r1", {"a": [1.0], "b": [1.0]}, {"a": [0.0], "b": [0.0]})
    got = _cli(r0, r1)
    assert got.returncode == 0, got.stderr
    m = json.loads(got.stdout)["metrics"]["eval/asr_held_out"]
    assert m["aligned"] == pytest.approx(0.25) and m["cut"] == pytest.approx(0.75)
    other = _run(tmp_path, "other", {"a": [0.0], "b": [1.0]}, {"a": [0.0], "b": [0.0]})
    bad = _cli(r0, other)
    assert bad.returncode != 0 and "base evaluation differs" in bad.stderr


def test_two_methods_paired_by_goal(pool):
    # this pool: a 0.0, b 1.0 (mean 0.5); the other: a 0.5 pooled over two seeds, b 1.0 (mean 0.75)
    mine = [{"a": [0.0, 0.0], "b": [1.0]}]
    theirs = [{"a": [1.0, 1.0], "b": [1.0]}, {"a": [0.0, 0.0], "b": [1.0]}]
    got = pool.versus(mine, theirs, n_boot=200)
    assert got["rate"] == pytest.approx(0.75) and got["per_run"] == pytest.approx([1.0, 0.5])
    assert got["delta"] == pytest.approx(-0.25)
    lo, hi = got["delta_ci"]
    assert -0.5 <= lo <= -0.25 <= hi <= 0.0  # per-goal changes −0.5 (a) and 0.0 (b)
    with pytest.raises(ValueError, match="same clusters"):
        pool.versus(mine, [{"a": [1.0]}])


def test_cli_compares_against_another_pool_of_the_same_base(tmp_path):
    r0 = _run(tmp_path, "r0", {"a": [1.0], "b": [1.0]}, {"a": [0.0], "b": [1.0]})
    o0 = _run(tmp_path, "o0", {"a": [1.0], "b": [1.0]}, {"a": [1.0], "b": [1.0]})
    got = _cli(r0, Path("--against"), o0)
    assert got.returncode == 0, got.stderr
    m = json.loads(got.stdout)["metrics"]["eval/asr_held_out"]
    assert m["against"]["rate"] == pytest.approx(1.0) and m["against"]["delta"] == pytest.approx(-0.5)
    other = _run(tmp_path, "other", {"a": [0.0], "b": [1.0]}, {"a": [0.0], "b": [0.0]})
    bad = _cli(r0, Path("--against"), other)
    assert bad.returncode != 0 and "base evaluation differs" in bad.stderr

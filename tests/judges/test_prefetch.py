"""The judge's labelled replies read ahead (judges/prefetch.py): parts a worker left are read back, not
made again; what a worker and the judge make are the same features; a stopped worker's parts count."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from ptalign.judges import minilm, prefetch, smol

pytestmark = pytest.mark.slow  # the embedded SmolLM2 (dequantised once) and MiniLM

N_MINILM = minilm.N_FEATURES


@pytest.fixture
def fresh_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty PTALIGN_CACHE for this process and the worker it starts."""
    monkeypatch.setenv("PTALIGN_CACHE", str(tmp_path))
    yield tmp_path
    prefetch.stop()


def _wait_for(cond, seconds: float) -> None:  # noqa: ANN001 - a predicate
    end = time.monotonic() + seconds
    while not cond():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.5)


def test_parts_are_read_back_and_the_rest_made(tmp_path: Path) -> None:
    prompts, replies = smol.texts(minilm.load_labelled()[:70])  # batches of 32, 32 and 6
    whole = smol.features(prompts, replies)
    store = tmp_path / "parts"
    store.mkdir()
    assert np.array_equal(smol.features(prompts, replies, store=store), whole)
    assert sorted(p.name for p in store.iterdir()) == [
        "hidden-0000.npy",
        "hidden-0001.npy",
        "hidden-0002.npy",
        "minilm.npy",
    ]
    # a part on disk is read, not made again: mark batch 0 and drop batch 1
    marked = np.load(store / "hidden-0000.npy") + 1.0
    np.save(store / "hidden-0000.npy", marked)
    (store / "hidden-0001.npy").unlink()
    got = smol.features(prompts, replies, store=store)
    order = sorted(range(70), key=lambda i: len(smol._encode(smol._reader()[1], prompts[i], replies[i])[0]))
    assert np.array_equal(got[order[:32], N_MINILM:], marked)
    assert np.array_equal(got[order[32:], :], whole[order[32:], :])  # batch 1 made again, exactly
    assert (store / "hidden-0001.npy").exists()


def test_worker_fills_the_cache_the_judge_reads(fresh_cache: Path) -> None:
    prompts, replies = smol.texts(minilm.load_labelled()[:40])
    path = smol.cache_path(prompts, replies)
    assert path.is_relative_to(fresh_cache) and not path.exists()
    assert prefetch.start(["minilm_smol"], first=40, wait=False)
    assert not prefetch.start(["minilm_smol"], first=40, wait=False)  # one worker at a time
    worker = prefetch._WORKER
    assert worker is not None
    _wait_for(lambda: worker.poll() is not None, 300)
    assert worker.returncode == 0 and path.exists() and not path.with_suffix(".parts").exists()
    made, mine = np.load(path), smol.features(prompts, replies)
    # the hidden states: the same bytes on one thread as on two on the Zen 4 VM (docs/results.md),
    # close elsewhere; MiniLM's last bits follow what a process embedded before (judges/embed.py)
    assert np.allclose(made[:, N_MINILM:], mine[:, N_MINILM:], rtol=1e-2, atol=1e-2)
    assert np.allclose(made[:, :N_MINILM], mine[:, :N_MINILM], atol=1e-5)
    assert np.array_equal(smol._cached_features(prompts, replies), made)  # read, not made again


def test_a_stopped_workers_parts_count(fresh_cache: Path) -> None:
    prompts, replies = smol.texts(minilm.load_labelled()[:200])  # 7 batches
    path = smol.cache_path(prompts, replies)
    parts = path.with_suffix(".parts")
    assert prefetch.start(["minilm_smol"], first=200, wait=False)
    _wait_for(lambda: (parts / "hidden-0000.npy").exists(), 300)
    prefetch.stop()
    assert prefetch._WORKER is None
    left = {p.name: np.load(p) for p in parts.glob("[!.]*.npy")}  # not a killed write's tmp
    assert "minilm.npy" in left and len(left) < 8 and not path.exists()
    x = smol._cached_features(prompts, replies)
    assert path.exists() and not parts.exists()
    assert np.array_equal(x[:, :N_MINILM], left["minilm.npy"])  # the worker's, read back
    assert np.allclose(x[:, N_MINILM:], smol.features(prompts, replies)[:, N_MINILM:], rtol=1e-2, atol=1e-2)


def test_wanted_only_for_the_smol_judge_and_not_when_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(smol, "cache_path", lambda p, r: Path("/nonexistent/smol.npy"))
    assert prefetch.wanted(["minilm_smol", "keyword"])
    assert not prefetch.wanted(["minilm", "keyword"])
    monkeypatch.setenv("PTALIGN_JUDGE_PREFETCH", "0")
    assert not prefetch.wanted(["minilm_smol"])
    assert not prefetch.start(["minilm_smol"])
    prefetch.stop()  # nothing started: a no-op


def test_a_failing_check_starts_nothing_and_fails_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(p: list[str], r: list[str]) -> Path:
        raise OSError("no space left on device")

    monkeypatch.setattr(smol, "cache_path", broken)
    assert not prefetch.start(["minilm_smol"])
    assert prefetch._WORKER is None

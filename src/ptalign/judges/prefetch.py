"""Read the embedded judge's labelled replies on a core the run leaves idle, before the judge is needed.

Why: on a fresh machine `minilm_smol`'s first fit reads its 1,113 labelled replies through MiniLM and
SmolLM2 (judges/smol.py), about 2.5 minutes of a `ptalign run` on 2 cores, all inside the evaluation.
Meanwhile, at the run's start, vLLM compiles its model for about 70 s in one Python thread (torch's
compiler) and the other core sits idle. A worker process started with the run reads the replies there
at the lowest CPU priority (SCHED_IDLE: it runs only where nothing else wants the core), one thread,
keeping each part in the judge's feature cache as it goes. When the evaluation fits the judge, the
worker is stopped and the parts it left are read back; the judge makes the rest (smol._cached_features).
The parts are the same bytes as the evaluation's own but for MiniLM's last bits, which already vary
with what a process embedded before (judges/embed.py).

Reads: the shipped labelled replies. Writes: parts and then the whole of the judge's feature cache
(`cache_root()/judges/`). PTALIGN_JUDGE_PREFETCH=0 turns it off.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

_WORKER: subprocess.Popen | None = None


def wanted(judges: list[str]) -> bool:
    """A worker would help: the judges read include minilm_smol, whose labelled replies are not read
    on this machine yet, and it is not turned off."""
    if os.environ.get("PTALIGN_JUDGE_PREFETCH", "1") == "0" or "minilm_smol" not in judges:
        return False
    from ptalign.judges import minilm, smol

    return not smol.cache_path(*smol.texts(minilm.load_labelled())).exists()


def start(judges: list[str], first: int | None = None) -> bool:
    """Start the worker when `wanted`; False when none was started. `first`: only the first N labelled
    replies (tests)."""
    global _WORKER
    if _WORKER is not None or not wanted(judges):
        return False
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, "-m", "ptalign.judges.prefetch", *(["--first", str(first)] if first else [])]
    _WORKER = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return True


def stop() -> None:
    """Stop the worker, if this process started one (a part being written is written whole or not at all)."""
    global _WORKER
    if _WORKER is None:
        return
    if _WORKER.poll() is None:
        _WORKER.terminate()
        try:
            _WORKER.wait(timeout=30)
        except subprocess.TimeoutExpired:
            _WORKER.kill()
            _WORKER.wait()
    _WORKER = None


def _lowest_priority() -> None:
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):  # not Linux, or not allowed
        os.nice(19)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--first", type=int, default=None, help="only the first N labelled replies (tests)")
    args = ap.parse_args(argv)
    _lowest_priority()
    from ptalign.judges import minilm, smol

    smol._cached_features(*smol.texts(minilm.load_labelled()[: args.first]))


if __name__ == "__main__":
    main()

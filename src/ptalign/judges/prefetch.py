"""Read the embedded judge's labelled replies on a core the run leaves idle, before the judge is needed.

Why: on a fresh machine `minilm_smol`'s first fit reads its 1,164 labelled replies through MiniLM and
SmolLM2 (judges/smol.py), about 2.5 minutes of a `ptalign run` on 2 cores, all inside the evaluation.
Meanwhile, at the run's start, vLLM compiles its model for about 70 s in one Python thread (torch's
compiler) and the other core sits idle. A worker process started with the run reads the replies there
at the lowest CPU priority (SCHED_IDLE), one thread, keeping each part in the judge's feature cache as
it goes, and before each part (MiniLM's columns, each batch of hidden states) it waits until a core
is idle: even at that priority, a worker that
kept going beside a training on both cores slowed it by 6 % (4.4 s in 76, twice, on the Zen 4 VM),
about what its parts then saved the evaluation. When the evaluation fits the judge, the
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
import time

_WORKER: subprocess.Popen | None = None


def wanted(judges: list[str]) -> bool:
    """A worker would help: the judges read include minilm_smol, whose labelled replies are not read
    on this machine yet, and it is not turned off."""
    if os.environ.get("PTALIGN_JUDGE_PREFETCH", "1") == "0" or "minilm_smol" not in judges:
        return False
    from ptalign.judges import minilm, smol

    return not smol.cache_path(*smol.texts(minilm.load_labelled())).exists()


def start(judges: list[str], first: int | None = None, wait: bool = True) -> bool:
    """Start the worker when `wanted`; False when none was started. `first`: only the first N labelled
    replies; `wait=False`: no idle-core wait and normal priority (both for tests)."""
    global _WORKER
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, "-m", "ptalign.judges.prefetch", *(["--first", str(first)] if first else [])]
    cmd += [] if wait else ["--no-wait"]
    try:  # only ever a head start: whatever stops it leaves the judge to read them itself, as before
        if _WORKER is not None or not wanted(judges):
            return False
        _WORKER = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    except Exception:  # noqa: BLE001
        return False
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


IDLE_CORES = 0.5  # a part is made only while at least this much of a core sat idle over PROBE_S
PROBE_S, NAP_S = 0.25, 2.0


def _ticks() -> tuple[int, int, int]:
    """(idle, all) CPU ticks since boot on the cores this process may run on, and how many they are."""
    mine = os.sched_getaffinity(0)
    idle = total = n = 0
    with open("/proc/stat") as f:
        for line in f:
            name, *vals = line.split()
            if not (name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in mine):
                continue
            t = [int(v) for v in vals[:8]]  # user nice system idle iowait irq softirq steal
            idle, total, n = idle + t[3] + t[4], total + sum(t), n + 1
    return idle, total, n


def _idle_cores(seconds: float) -> float:
    """Cores idle over the next `seconds` among those this process may use (Linux's /proc/stat; a
    cgroup's CPU quota is not seen); elsewhere every core."""
    try:
        idle0, all0, n = _ticks()
        time.sleep(seconds)
        idle1, all1, _ = _ticks()
    except (OSError, AttributeError):
        return float(os.cpu_count() or 1)
    return (idle1 - idle0) / max(all1 - all0, 1) * n


def _pace(parent: int) -> None:
    """Before each part: leave when the run that started this worker is gone (killed outright), and
    wait for an idle core."""
    while True:
        if os.getppid() != parent:
            sys.exit(0)
        if _idle_cores(PROBE_S) >= IDLE_CORES:
            return
        time.sleep(NAP_S)


def _lowest_priority() -> None:
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):  # not Linux, or not allowed
        os.nice(19)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--first", type=int, default=None, help="only the first N labelled replies (tests)")
    ap.add_argument("--no-wait", action="store_true", help="no idle-core wait, normal priority (tests)")
    args = ap.parse_args(argv)
    parent = os.getppid()
    if not args.no_wait:
        _lowest_priority()
    from ptalign.judges import minilm, smol

    pace = None if args.no_wait else (lambda: _pace(parent))
    smol._cached_features(*smol.texts(minilm.load_labelled()[: args.first]), pace=pace)


if __name__ == "__main__":
    main()

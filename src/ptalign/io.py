"""Files between stages: JSONL append/read with resume, atomic writes, stable ids, hazard headers.

Every stage talks to the next through files in the run dir. Records are appended and flushed one at a
time (fsync'd), so a killed stage loses at most the record it was writing; a torn last line is
dropped on read and rewritten on resume. Whole files go through tmp + rename.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

# First line of every file that may hold toxic text: a metadata record, not data.
HAZARD_META = {
    "_meta": True,
    "hazardous": True,
    "warning": "Contains model-generated harmful text by design (PT-ALIGN toxic samples). "
    "For safety-alignment research only; do not publish or train on it except to make models safer.",
}


class DataError(ValueError):
    """A data file that cannot be read as expected; the message is one line with the fix."""


def stable_id(*parts: Any) -> str:
    """Hash of a record's inputs: the same inputs give the same id in every run (join by id)."""
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while b := f.read(chunk):
            h.update(b)
    return h.hexdigest()


def atomic_write_text(path: Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n")


def read_jsonl(path: str | Path, strict: bool = False) -> Iterator[dict[str, Any]]:
    """Records of a JSONL file, metadata lines skipped.

    A torn *last* line (a kill mid-write) is skipped silently; a corrupt line elsewhere raises
    DataError naming file and line, unless strict=False and it is the last one.
    """
    path = Path(path)
    if not path.exists():
        return
    with open(path, encoding="utf-8") as f:
        lines = f.readlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            last = i == len(lines) - 1 and not line.endswith("\n")
            if last and not strict:
                return
            raise DataError(
                f"{path}:{i + 1}: corrupt JSONL line; fix or delete that line (earlier records are kept)"
            ) from None
        if not isinstance(rec, dict):
            raise DataError(f"{path}:{i + 1}: expected a JSON object per line")
        if rec.get("_meta"):
            continue
        yield rec


def read_meta(path: str | Path) -> dict[str, Any] | None:
    """The metadata record on the first line, if any."""
    path = Path(path)
    if not path.exists():
        return None
    with open(path, encoding="utf-8") as f:
        first = f.readline()
    try:
        rec = json.loads(first)
    except json.JSONDecodeError:
        return None
    return rec if isinstance(rec, dict) and rec.get("_meta") else None


class JsonlWriter:
    """Append-only JSONL with resume: `done` holds the ids already on disk.

    Opening repairs a torn last line (from a kill -9) by truncating it, so appends stay valid JSONL.
    """

    def __init__(self, path: str | Path, meta: dict[str, Any] | None = None, key: str = "id"):
        self.path = Path(path)
        self.key = key
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._repair()
        self.done: set[str] = {r[key] for r in read_jsonl(self.path) if key in r}
        new = not self.path.exists() or self.path.stat().st_size == 0
        self._f = open(self.path, "a", encoding="utf-8")
        if new and meta is not None:
            self._write_line({"_meta": True, **meta})

    def _repair(self) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            cut = data.rfind(b"\n") + 1
            with open(self.path, "r+b") as f:
                f.truncate(cut)

    def _write_line(self, rec: dict[str, Any]) -> None:
        self._f.write(json.dumps(rec, ensure_ascii=False, default=str) + "\n")
        self._f.flush()
        os.fsync(self._f.fileno())

    def write(self, rec: dict[str, Any]) -> bool:
        """Append rec unless its id is already written; returns whether it was written."""
        rid = rec[self.key]
        if rid in self.done:
            return False
        self._write_line(rec)
        self.done.add(rid)
        return True

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> JsonlWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def write_jsonl(
    path: str | Path, records: Iterable[dict[str, Any]], meta: dict[str, Any] | None = None
) -> int:
    """Write a whole JSONL file atomically (tmp + rename)."""
    lines = []
    if meta is not None:
        lines.append(json.dumps({"_meta": True, **meta}, ensure_ascii=False))
    n = 0
    for r in records:
        lines.append(json.dumps(r, ensure_ascii=False, default=str))
        n += 1
    atomic_write_text(Path(path), "\n".join(lines) + ("\n" if lines else ""))
    return n


def redact(text: str, show: bool = False) -> str:
    """Toxic text in logs and reports: replaced by its length unless the user asked to see it."""
    if show:
        return text
    return f"[redacted: {len(text)} chars; rerun with --show-unsafe to see]"


LOCK_FILE = ".ptalign.lock"


@contextlib.contextmanager
def run_lock(directory: str | Path) -> Iterator[Path]:
    """Hold an exclusive lock on a run directory for a command's life, so that two ptalign processes
    never append to the same files. An flock dies with its process, so a run killed at any moment
    leaves no lock behind to block its --resume. Distributed workers (RANK > 0) share rank 0's."""
    if os.environ.get("RANK", "0") != "0":
        yield Path(directory)
        return
    import fcntl

    from ptalign.errors import UserError

    directory = Path(directory)
    try:  # creating the lock file is also the writability check
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise UserError(f"run dir {directory} is not writable ({e.strerror}); choose another --out") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise UserError(
                f"{directory} is in use by another ptalign process (pid {holder}); wait for it to finish "
                "or pass another --out"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield directory
    finally:
        os.close(fd)  # releases the lock

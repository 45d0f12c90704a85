"""errors.user_message: the one line the CLI prints for each failure a user can fix, None for a bug.

The end-to-end disk-full test (tests/test_pipeline.py) needs a tmpfs mount and skips where mounting is
not allowed; these cover the same mapping everywhere."""

from __future__ import annotations

import errno

import pytest

from ptalign.errors import BackendError, UserError, user_message

INTACT = "free space or choose another --out (earlier results are intact)"


@pytest.mark.parametrize(
    ("exc", "line"),
    [
        (OSError(errno.ENOSPC, "No space left on device", "run/x.jsonl"), f"no space left on device writing run/x.jsonl; {INTACT}"),
        (OSError(errno.ENOSPC, "No space left on device"), f"no space left on device writing the run dir; {INTACT}"),
        (OSError(errno.EDQUOT, "Disk quota exceeded", "run/a.bin"), f"disk quota exceeded writing run/a.bin; {INTACT}"),
        # safetensors wraps ENOSPC in its own error type, with the OS error's text inside
        (RuntimeError("Error while serializing: IoError(Os { code: 28, kind: StorageFull, os error 28 })"), f"no space left on device writing the run dir; {INTACT}"),
        (PermissionError(errno.EACCES, "Permission denied", "/ro/run"), "permission denied: /ro/run; choose a writable --out directory"),
        (FileNotFoundError(errno.ENOENT, "No such file", "cfg.yaml"), "file not found: cfg.yaml; check the path"),
        (UserError("train.lam=-1: must be >= 0"), "train.lam=-1: must be >= 0"),
        (BackendError("server at http://127.0.0.1:1 refused the connection; start it"), "server at http://127.0.0.1:1 refused the connection; start it"),
    ],
)  # fmt: skip
def test_user_fixable_failures_get_their_line(exc: BaseException, line: str) -> None:
    assert user_message(exc) == line


@pytest.mark.parametrize("exc", [ValueError("bad shape"), KeyError("x"), OSError(errno.EIO, "I/O error")])
def test_bugs_get_no_line(exc: BaseException) -> None:
    assert user_message(exc) is None  # the CLI shows the traceback

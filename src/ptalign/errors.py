"""User-fixable failures and their one-line messages (the CLI prints these, exit 2, no traceback)."""

from __future__ import annotations

import errno


class PtalignError(Exception):
    """Base for failures the user can fix; str(e) is one line naming the problem and the fix."""


class UserError(PtalignError):
    """Bad input: a missing file, a wrong flag combination."""


class BackendError(RuntimeError):
    """An engine failed in a way the user must fix (server down, model unsupported); one-line message.
    Declared here, not in llm/, so that this bottom layer imports nothing above it."""


class ModelLoadError(PtalignError):
    """A model spec that cannot be loaded (missing dir, hub id while offline, unsupported file)."""


def user_message(e: BaseException) -> str | None:
    """One line for known user-fixable failures; None means a bug (show the traceback)."""
    if isinstance(e, PtalignError):
        return str(e)
    if isinstance(e, BackendError):
        return str(e)
    disk_full = ("No space left on device", "os error 28", "StorageFull", "Disk quota exceeded")
    if not isinstance(e, OSError) and any(m in str(e) for m in disk_full):
        # safetensors, torch.save and friends wrap ENOSPC in their own exception types
        return "no space left on device writing the run dir; free space or choose another --out (earlier results are intact)"
    if isinstance(e, OSError):
        if e.errno == errno.ENOSPC:
            return f"no space left on device writing {e.filename or 'the run dir'}; free space or choose another --out (earlier results are intact)"
        if e.errno == errno.EDQUOT:
            return f"disk quota exceeded writing {e.filename or 'the run dir'}; free space or choose another --out (earlier results are intact)"
        if isinstance(e, PermissionError):
            return f"permission denied: {e.filename}; choose a writable --out directory"
        if isinstance(e, FileNotFoundError):
            return f"file not found: {e.filename}; check the path"
    return None

"""A problem the user can fix: one line, exit status 2, no traceback; and the full disk."""
from __future__ import annotations

import errno
import os
import shutil
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


class UserError(Exception):
    """A problem with the user's input: printed as one line, exit status 2, no traceback."""


class DiskFull(UserError):
    """A write failed because the disk (or the user's quota) is full. Unlike other user errors
    it ends a whole run, also one over a folder of files: every later write would fail too."""


# Both mean that nothing more fits: ENOSPC a full file system, EDQUOT a full quota.
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


def fail(message: str) -> None:
    raise UserError(message)


def first_line(err: BaseException) -> str:
    """The first line of err's message, or its type's name where it has none: what a one-line
    report of a library's failure (compilers, exporters, ONNX Runtime) can show."""
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def disk_full(path: str | Path, err: OSError | None = None) -> DiskFull:
    """The one-line error for a write of path that found the disk full."""
    reason = os.strerror(err.errno) if err is not None and err.errno else os.strerror(errno.ENOSPC)
    return DiskFull(f"cannot write {path}: the disk is full ({reason}); free some space or "
                    "write to another disk (nothing half-written was left under that name)")


@contextmanager
def full_disk_is_an_error(path: str | Path) -> Iterator[None]:
    """Turn an OSError of a full disk inside the block into DiskFull naming path; other errors
    pass unchanged. The block cleans up its own temporary files."""
    try:
        yield
    except OSError as err:
        if err.errno not in DISK_FULL_ERRNOS:
            raise
        raise disk_full(path, err) from None


def warn_if_short_of_space(folder: str | Path, needed_bytes: int, what: str) -> bool:
    """Warn (and return True) when folder's disk has less free space than needed_bytes, before
    anything is written, rather than failing hours later."""
    free = shutil.disk_usage(folder).free
    if free >= needed_bytes:
        return False
    warnings.warn(f"{folder} has {free / 1e6:.1f} MB free, but {what} need about "
                  f"{needed_bytes / 1e6:.1f} MB: the disk may fill up during the run", stacklevel=2)
    return True

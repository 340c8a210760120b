"""Files and folders: paths the user gave, listing a folder, and atomic writes."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable, Iterable

from common.errors import fail, full_disk_is_an_error


def existing_file(path: str | Path, expected: str, fix: str) -> Path:
    """path, if it is a file; else a one-line error: `fix` for a missing one, `expected` (what
    should have been given, e.g. "an image file") for a folder."""
    path = Path(path)
    if not path.exists():
        fail(f"{path} does not exist: {fix}")
    if path.is_dir():
        fail(f"{path} is a directory, but {expected} is expected")
    return path


def list_files(folder: str | Path, extensions: Iterable[str]) -> tuple[list[Path], list[Path]]:
    """Files under folder (recursively) split into (matching extension, others), sorted."""
    extensions = tuple(extensions)
    matching, others = [], []
    for path in sorted(Path(folder).rglob("*")):
        if path.is_file() and not path.name.startswith("."):
            (matching if path.suffix.lower() in extensions else others).append(path)
    return matching, others


def temp_file_beside(path: Path) -> str:
    """An empty temporary file in path's folder (created if missing), to be renamed onto path.

    It keeps path's extension, so writers choosing a format from the name (PIL, OpenCV)
    still do, and gets the permissions of an ordinary new file rather than mkstemp's 0600.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}")
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    return tmp


def atomic_write(path: str | Path, write: Callable[[str], None]) -> Path:
    """Call write(tmp_path), fsync, then rename over path: readers see old or new, never half.

    The temporary file keeps path's extension (see temp_file_beside).
    A full disk (ENOSPC, EDQUOT) raises DiskFull naming path, with the old file kept.
    """
    path = Path(path)
    with full_disk_is_an_error(path):
        tmp = temp_file_beside(path)
        try:
            write(tmp)
            with open(tmp, "rb+") as handle:
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return path

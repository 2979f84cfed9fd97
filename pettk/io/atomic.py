"""Atomic file writing: a reader never sees a half-written file."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path, suffix: str | None = None):
    """Yield a temporary path next to ``path``; on success rename it onto ``path``.

    The temporary file lives in the target's folder (so the rename is atomic on POSIX) and keeps
    the target's suffix (so writers that pick a format from the extension still work). On error
    the temporary file is removed and ``path`` is left as it was.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix if suffix is not None else target.suffix,
                               dir=target.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        # mkstemp creates 0600; give the file the permissions a plain open() would (0666 & ~umask)
        umask = os.umask(0)
        os.umask(umask)
        with contextlib.suppress(FileNotFoundError):
            os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def check_empty_folder(target) -> None:
    """Raise :class:`FileExistsError` unless ``target`` is missing or an empty folder."""
    target = Path(target)
    if target.is_dir():
        if any(target.iterdir()):
            raise FileExistsError(f"{target} is a folder that is not empty; give a new (or empty) folder")
    elif target.exists() or target.is_symlink():
        raise FileExistsError(f"{target} exists and is not a folder; give a new (or empty) folder")


@contextlib.contextmanager
def atomic_folder(path):
    """Yield a temporary folder next to ``path``; on success rename it onto ``path``.

    ``path`` must be missing or an empty folder (checked again just before the rename:
    :class:`FileExistsError` otherwise). On error the temporary folder is removed with everything
    in it and ``path`` is left as it was, so a reader never sees a partly written folder.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp creates 0700; give what mkdir would
        check_empty_folder(target)
        if target.is_dir():
            target.rmdir()
        os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

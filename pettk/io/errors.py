"""The error a pettk loader raises for a file it cannot use, and the checks every loader shares.

Every loader in :mod:`pettk.io` either returns data that passed the same checks its saver makes, or
raises:

* :class:`FileNotFoundError` -- nothing at the path (the message names the path);
* :class:`FileFormatError` (a :class:`ValueError`) -- the file exists but is damaged, truncated, of
  another format, or inconsistent with its own metadata (the message names the file and what is
  wrong; the third-party exception, if any, is chained as ``__cause__``);
* :class:`TypeError` -- the path argument itself is not a path.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

__all__ = ["FileFormatError", "as_path", "existing_file", "reading"]


class FileFormatError(ValueError):
    """A file is damaged, truncated, of the wrong format, or disagrees with its own metadata.

    A :class:`ValueError` subclass, so ``except ValueError`` still catches it. The message starts
    with the file's path.
    """


def as_path(path, what: str = "path") -> Path:
    """Return ``path`` (a ``str`` or :class:`os.PathLike`) as a :class:`~pathlib.Path`."""
    if isinstance(path, (bytes, bytearray)) or not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{what} must be a str or os.PathLike, got {type(path).__name__}: {path!r}")
    out = Path(path)
    if str(out) in ("", "."):
        raise ValueError(f"{what} must name a file, got {str(path)!r}")
    return out


def existing_file(path, kind: str) -> Path:
    """``path`` as a :class:`~pathlib.Path` to an existing regular file.

    Raises :class:`FileNotFoundError` (nothing there) or :class:`FileFormatError` (a folder or some
    other non-file), naming ``kind`` (e.g. ``"NIfTI file"``) and the path.
    """
    p = as_path(path, "path")
    if not p.exists():
        raise FileNotFoundError(f"no {kind} at {p}")
    if not p.is_file():
        raise FileFormatError(f"{p}: expected a {kind}, found a {'folder' if p.is_dir() else 'non-regular file'}")
    return p


@contextlib.contextmanager
def reading(path, kind: str):
    """Turn any exception raised while a third-party reader parses ``path`` into a
    :class:`FileFormatError` naming the file (the original is chained as ``__cause__``).

    :class:`FileFormatError` itself passes through unchanged; a :class:`FileNotFoundError` (the file
    vanished while being read) stays one. Corrupt files make readers raise almost anything
    (``zipfile.BadZipFile``, ``EOFError``, ``zlib.error``, ``KeyError``, ``OSError``, nibabel's
    ``ImageFileError``, safetensors' ``SafetensorError``, ``MemoryError`` for a header that claims a
    huge array, ...), which is why this catches every :class:`Exception`.
    """
    try:
        yield
    except (FileFormatError, FileNotFoundError):
        raise
    except Exception as exc:  # noqa: BLE001 -- see the docstring
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else "(no message)"
        name = type(exc).__name__
        if name == "error":  # zlib.error, struct.error, ...: say which
            name = f"{type(exc).__module__}.error"
        raise FileFormatError(f"{path}: cannot read this {kind} ({name}: {detail})") from exc

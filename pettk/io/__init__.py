"""Input and output: files are written atomically (temporary file, then rename)."""

from .atomic import atomic_path

__all__ = ["atomic_path"]

"""CUDA C sources for pettk's CuPy backend, shipped inside the wheel as ``pettk.kernels``.

The sources are read through :mod:`importlib.resources`, so they are found whether pettk is
installed as a wheel, in editable mode, or zipped. They are compiled at run time by CuPy's
``RawModule`` (NVRTC); this module only locates and reads them.
"""

from __future__ import annotations

from importlib import resources

__all__ = ["available", "source"]


def available() -> list[str]:
    """Names of the shipped CUDA sources (``*.cu``), sorted."""
    return sorted(p.name for p in resources.files(__name__).iterdir() if p.name.endswith(".cu"))


def source(name: str) -> str:
    """The text of the CUDA source ``name`` (e.g. ``"joseph.cu"``)."""
    names = available()
    if name not in names:
        raise ValueError(f"no CUDA source named {name!r}; pettk ships {', '.join(names) or 'none'}")
    return resources.files(__name__).joinpath(name).read_text(encoding="utf-8")

"""Sinogram files: ``.npz`` with the measured data, model factors and geometry as JSON.

Layout of a pettk sinogram file (numpy ``.npz``, no pickled objects):

``prompts``
    Measured counts, shape ``geometry.shape`` (plus the TOF axis).
``normalisation``, ``attenuation``, ``additive``, ``mu`` (optional)
    The :class:`~pettk.physics.ForwardModel` factors (non-TOF or full shape), the expected
    randoms + scatter, a mu-map on the grid (1/mm).
``metadata``
    A JSON string: ``{"format": "pettk-sinogram", "version": 1, "geometry": ..., "grid": ...,
    "tof": ... or null, "pettk_version": ...}`` with the ``to_dict()`` descriptions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._version import __version__
from ..geometry import ImageGrid, TOFParams, from_dict
from .atomic import atomic_path

__all__ = ["SinogramFile", "save_sinogram", "load_sinogram"]

_OPTIONAL = ("normalisation", "attenuation", "additive", "mu")


@dataclass
class SinogramFile:
    """The contents of a sinogram file."""

    prompts: np.ndarray
    geometry: object
    grid: ImageGrid
    tof: TOFParams | None = None
    normalisation: np.ndarray | None = None
    attenuation: np.ndarray | None = None
    additive: np.ndarray | None = None
    mu: np.ndarray | None = None


def _array(name, value):
    a = np.asarray(value.detach().cpu() if hasattr(value, "detach") else value)
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains non-finite values")
    return a


def save_sinogram(path, prompts, geometry, grid: ImageGrid, tof: TOFParams | None = None, **factors) -> Path:
    """Write a sinogram file atomically (see the module docstring for the layout)."""
    unknown = set(factors) - set(_OPTIONAL)
    if unknown:
        raise ValueError(f"unknown arrays {sorted(unknown)}; expected any of {', '.join(_OPTIONAL)}")
    if not isinstance(grid, ImageGrid):
        raise TypeError(f"grid must be an ImageGrid, got {type(grid).__name__}")
    data = _array("prompts", prompts)
    expected = tuple(geometry.shape) + ((tof.n_bins,) if tof is not None and getattr(geometry, "tof_bin", None) is None
                                        else ())
    if data.shape != expected:
        raise ValueError(f"prompts must have shape {expected}, got {data.shape}")
    meta = {"format": "pettk-sinogram", "version": 1, "pettk_version": __version__,
            "geometry": geometry.to_dict(), "grid": grid.to_dict(), "tof": None if tof is None else tof.to_dict()}
    arrays = {"prompts": data, "metadata": np.array(json.dumps(meta))}
    for name, value in factors.items():
        if value is not None:
            arrays[name] = _array(name, value)
    with atomic_path(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)
    return Path(path)


def load_sinogram(path) -> SinogramFile:
    """Read a sinogram file written by :func:`save_sinogram`."""
    with np.load(str(path), allow_pickle=False) as npz:
        if "metadata" not in npz or "prompts" not in npz:
            raise ValueError(f"{path} is not a pettk sinogram file (needs 'prompts' and 'metadata')")
        meta = json.loads(str(npz["metadata"]))
        if meta.get("format") != "pettk-sinogram":
            raise ValueError(f"{path} is not a pettk sinogram file (format {meta.get('format')!r})")
        arrays = {name: npz[name] for name in _OPTIONAL if name in npz}
        prompts = npz["prompts"]
    tof = None if meta.get("tof") is None else from_dict(meta["tof"])
    return SinogramFile(prompts, from_dict(meta["geometry"]), from_dict(meta["grid"]), tof, **arrays)

"""Sinogram files: ``.npz`` with the measured data, model factors and geometry as JSON.

Layout of a pettk sinogram file (numpy ``.npz``, no pickled objects):

``prompts``
    Measured counts, shape ``geometry.shape`` plus, with TOF (``tof`` given and a geometry without
    per-LOR TOF bins), a last axis of ``tof.n_bins``.
``normalisation``, ``attenuation`` (optional)
    The :class:`~pettk.physics.ForwardModel` multiplicative factors, shape ``geometry.shape``
    (non-TOF, broadcast over TOF bins) or the full ``prompts`` shape.
``additive`` (optional)
    The expected randoms + scatter counts, the ``prompts`` shape.
``mu`` (optional)
    A mu-map on the grid (1/mm), shape ``grid.shape``.
``metadata``
    A JSON string: ``{"format": "pettk-sinogram", "version": 1, "geometry": ..., "grid": ...,
    "tof": ... or null, "pettk_version": ...}`` with the ``to_dict()`` descriptions.

Every array holds finite real numbers (integers or floats). :func:`save_sinogram` checks all of
this before writing (and writes atomically); :func:`load_sinogram` checks the same on reading and
raises :class:`~pettk.io.FileFormatError` naming the file for anything else.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._version import __version__
from ..geometry import ImageGrid, LORList, ParallelBeam2D, SinogramLayout, SinogramLayout2D, TOFParams, from_dict
from .atomic import atomic_path
from .errors import FileFormatError, as_path, existing_file, reading

__all__ = ["SinogramFile", "save_sinogram", "load_sinogram"]

_OPTIONAL = ("normalisation", "attenuation", "additive", "mu")

#: The geometries a sinogram file can describe.
GEOMETRIES = (SinogramLayout, SinogramLayout2D, ParallelBeam2D, LORList)

#: The file format version written (and the only one read).
VERSION = 1

#: Elements per block of the finiteness check (keeps its temporaries small for big sinograms).
_BLOCK = 1 << 22


@dataclass
class SinogramFile:
    """The contents of a sinogram file (see the module docstring for shapes and units)."""

    prompts: np.ndarray
    geometry: object
    grid: ImageGrid
    tof: TOFParams | None = None
    normalisation: np.ndarray | None = None
    attenuation: np.ndarray | None = None
    additive: np.ndarray | None = None
    mu: np.ndarray | None = None


def prompts_shape(geometry, tof: TOFParams | None) -> tuple[int, ...]:
    """The shape of the prompts of ``geometry`` with ``tof``: ``geometry.shape``, plus a last axis of
    ``tof.n_bins`` when ``tof`` is given and the geometry has no per-LOR TOF bins."""
    extra = (tof.n_bins,) if tof is not None and getattr(geometry, "tof_bin", None) is None else ()
    return tuple(geometry.shape) + extra


def _allowed_shapes(name: str, geometry, grid: ImageGrid, tof) -> tuple[tuple[int, ...], ...]:
    full = prompts_shape(geometry, tof)
    if name == "mu":
        return (tuple(grid.shape),)
    if name == "additive":
        return (full,)
    nontof = tuple(geometry.shape)
    return (nontof,) if nontof == full else (nontof, full)


def _check_values(name: str, a: np.ndarray, shapes) -> str | None:
    """What is wrong with array ``a`` (``None`` when nothing): not real numbers, a shape not in
    ``shapes``, or non-finite values (checked a block at a time)."""
    if a.dtype.kind not in "iuf":
        return f"{name} must hold real numbers (integer or floating point), got dtype {a.dtype}"
    if a.shape not in shapes:
        return f"{name} must have shape {' or '.join(str(s) for s in shapes)}, got {a.shape}"
    if a.dtype.kind == "f":
        flat = a.reshape(-1)
        n_bad = sum(int(np.count_nonzero(~np.isfinite(flat[i:i + _BLOCK]))) for i in range(0, flat.size, _BLOCK))
        if n_bad:
            return f"{name} contains {n_bad} non-finite values (NaN or inf)"
    return None


def _as_array(name, value) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu()
    try:
        return np.asarray(value)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise TypeError(f"{name} must be a numpy array or a torch tensor, got {type(value).__name__}") from exc


def save_sinogram(path, prompts, geometry, grid: ImageGrid, tof: TOFParams | None = None, **factors) -> Path:
    """Write a sinogram file atomically (see the module docstring for the layout).

    ``geometry`` is a :class:`~pettk.geometry.SinogramLayout`, :class:`~pettk.geometry.SinogramLayout2D`,
    :class:`~pettk.geometry.ParallelBeam2D` or :class:`~pettk.geometry.LORList`; ``factors`` are any of
    ``normalisation``, ``attenuation``, ``additive``, ``mu`` (numpy or torch). Every argument is
    checked (types, shapes, finite real values) before anything is written: a refused call leaves
    no file. ``path`` gets exactly the name given (numpy's ``.npz`` is not appended).
    """
    target = as_path(path, "path")
    unknown = set(factors) - set(_OPTIONAL)
    if unknown:
        raise ValueError(f"unknown arrays {sorted(unknown)}; expected any of {', '.join(_OPTIONAL)}")
    if not isinstance(geometry, GEOMETRIES):
        raise TypeError(f"geometry must be one of {', '.join(g.__name__ for g in GEOMETRIES)}, "
                        f"got {type(geometry).__name__}: {geometry!r}")
    if not isinstance(grid, ImageGrid):
        raise TypeError(f"grid must be an ImageGrid, got {type(grid).__name__}")
    if tof is not None and not isinstance(tof, TOFParams):
        raise TypeError(f"tof must be a TOFParams or None, got {type(tof).__name__}")
    arrays = {"prompts": _as_array("prompts", prompts)}
    for name, value in factors.items():
        if value is not None:
            arrays[name] = _as_array(name, value)
    shapes = {"prompts": (prompts_shape(geometry, tof),)}
    shapes.update({name: _allowed_shapes(name, geometry, grid, tof) for name in _OPTIONAL})
    for name, a in arrays.items():
        problem = _check_values(name, a, shapes[name])
        if problem:
            raise (TypeError if a.dtype.kind not in "iuf" else ValueError)(problem)
    meta = {"format": "pettk-sinogram", "version": VERSION, "pettk_version": __version__,
            "geometry": geometry.to_dict(), "grid": grid.to_dict(), "tof": None if tof is None else tof.to_dict()}
    arrays["metadata"] = np.array(json.dumps(meta))
    with atomic_path(target, suffix=".npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)
    return target


def load_sinogram(path) -> SinogramFile:
    """Read a sinogram file written by :func:`save_sinogram`, checked as :func:`save_sinogram` checks.

    Raises :class:`FileNotFoundError` when nothing is at ``path`` and
    :class:`~pettk.io.FileFormatError` (a ``ValueError``) naming the file when it is not a readable
    ``.npz`` (damaged, truncated, pickled objects), lacks ``prompts`` or ``metadata``, has
    metadata that is not pettk's (format, version, geometry, grid, TOF), holds an array pettk does
    not write, or an array with the wrong shape for the stored geometry, non-real or non-finite
    values.
    """
    path = existing_file(path, "sinogram file")
    with reading(path, "sinogram file (.npz)"):
        npz = np.load(str(path), allow_pickle=False)
        if not isinstance(npz, np.lib.npyio.NpzFile):
            raise FileFormatError(f"{path}: holds a single array (.npy), not a pettk sinogram file (.npz)")
        with npz:
            names = set(npz.files)
            if "metadata" not in names or "prompts" not in names:
                raise FileFormatError(f"{path} is not a pettk sinogram file (needs 'prompts' and 'metadata'; "
                                      f"holds {sorted(names)})")
            extra = names - {"prompts", "metadata", *_OPTIONAL}
            if extra:
                raise FileFormatError(f"{path}: unknown arrays {sorted(extra)} (a pettk sinogram file holds prompts, "
                                      f"metadata and any of {', '.join(_OPTIONAL)})")
            text = npz["metadata"]
            arrays = {name: npz[name] for name in ("prompts", *_OPTIONAL) if name in names}
    geometry, grid, tof = _parse_metadata(path, text)
    for name, a in arrays.items():
        problem = _check_values(name, a, (prompts_shape(geometry, tof),) if name == "prompts"
                                else _allowed_shapes(name, geometry, grid, tof))
        if problem:
            raise FileFormatError(f"{path}: {problem}")
    prompts = arrays.pop("prompts")
    return SinogramFile(prompts, geometry, grid, tof, **arrays)


def _parse_metadata(path, text: np.ndarray):
    """``(geometry, grid, tof)`` from the ``metadata`` array of ``path``."""
    if text.shape != () or text.dtype.kind not in "US":
        raise FileFormatError(f"{path}: 'metadata' must be a JSON string, got an array of dtype {text.dtype} "
                              f"and shape {text.shape}")
    raw = text[()]
    try:
        meta = json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else str(raw))
    except (ValueError, UnicodeDecodeError) as exc:
        raise FileFormatError(f"{path}: 'metadata' is not valid JSON ({exc})") from exc
    if not isinstance(meta, dict) or meta.get("format") != "pettk-sinogram":
        got = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise FileFormatError(f"{path} is not a pettk sinogram file (format {got!r})")
    if meta.get("version") != VERSION:
        raise FileFormatError(f"{path}: sinogram file version {meta.get('version')!r} is not supported "
                              f"(this pettk reads version {VERSION})")
    parts = {}
    for key, kinds in (("geometry", GEOMETRIES), ("grid", (ImageGrid,)), ("tof", (TOFParams, type(None)))):
        if key not in meta:
            raise FileFormatError(f"{path}: the metadata lacks {key!r}")
        description = meta[key]
        try:
            value = None if description is None else from_dict(description)
        except (KeyError, TypeError, ValueError, IndexError, AttributeError, OverflowError) as exc:
            raise FileFormatError(f"{path}: invalid {key} in the metadata ({type(exc).__name__}: {exc})") from exc
        if not isinstance(value, kinds):
            raise FileFormatError(f"{path}: the metadata's {key} is a {type(value).__name__}, expected "
                                  f"{' or '.join(k.__name__ for k in kinds if k is not type(None))}")
        parts[key] = value
    return parts["geometry"], parts["grid"], parts["tof"]

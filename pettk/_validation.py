"""Argument checks shared by every layer.

Each helper either returns a normalised value or raises a ``ValueError``/``TypeError`` whose
message names the argument, the value received and what was expected. They run before any work
is done, so a bad call never leaves half-written state behind.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import numpy as np


def as_positive_int(name: str, value, *, minimum: int = 1) -> int:
    """Return ``value`` as an ``int`` >= ``minimum`` (bools are rejected)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer >= {minimum}, got {value!r} ({type(value).__name__})")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value}")
    return int(value)


def as_nonnegative_int(name: str, value) -> int:
    """Return ``value`` as an ``int`` >= 0."""
    return as_positive_int(name, value, minimum=0)


def as_positive_float(name: str, value) -> float:
    """Return ``value`` as a finite ``float`` > 0."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a positive number, got {value!r} ({type(value).__name__})")
    value = float(value)
    if not np.isfinite(value) or value <= 0.0:
        raise ValueError(f"{name} must be a finite number > 0, got {value}")
    return value


def as_nonnegative_float(name: str, value) -> float:
    """Return ``value`` as a finite ``float`` >= 0."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number >= 0, got {value!r} ({type(value).__name__})")
    value = float(value)
    if not np.isfinite(value) or value < 0.0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value}")
    return value


def as_float_vector(name: str, value, length: int | None = None, *, positive: bool = False,
                    broadcast_scalar: bool = True) -> np.ndarray:
    """Return ``value`` as a finite float64 vector of ``length`` entries.

    A scalar is repeated ``length`` times when ``broadcast_scalar`` is true.
    """
    if isinstance(value, bool):
        raise TypeError(f"{name} must be a number or a sequence of numbers, got {value!r}")
    if isinstance(value, numbers.Real) and broadcast_scalar and length is not None:
        arr = np.full(length, float(value))
    else:
        try:
            arr = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            raise TypeError(f"{name} must be a number or a sequence of numbers, got {value!r}") from None
        if arr.ndim != 1:
            raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
        if length is not None and arr.shape[0] != length:
            raise ValueError(f"{name} must have {length} entries, got {arr.shape[0]}: {value!r}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if positive and np.any(arr <= 0):
        raise ValueError(f"{name} must be > 0 in every entry, got {value!r}")
    return arr


def as_shape(name: str, value, ndims: Sequence[int] = (2, 3)) -> tuple[int, ...]:
    """Return ``value`` as a tuple of positive ints whose length is one of ``ndims``."""
    try:
        shape = tuple(value)
    except TypeError:
        raise TypeError(f"{name} must be a tuple of {' or '.join(map(str, ndims))} positive integers, "
                        f"got {value!r}") from None
    if len(shape) not in ndims:
        raise ValueError(f"{name} must have {' or '.join(map(str, ndims))} entries, got {len(shape)}: {value!r}")
    return tuple(as_positive_int(f"{name}[{i}]", s) for i, s in enumerate(shape))


def as_point_array(name: str, value, ndim: int | None = None) -> np.ndarray:
    """Return ``value`` as a finite float64 array of shape ``(..., ndim)`` with ``ndim`` in {2, 3}."""
    try:
        arr = np.asarray(value.detach().cpu() if hasattr(value, "detach") else value, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be an array of points in mm, got {type(value).__name__}") from None
    if arr.ndim < 1 or arr.shape[-1] not in (2, 3):
        raise ValueError(f"{name} must have shape (..., 2) or (..., 3) (points in mm), got {arr.shape}")
    if ndim is not None and arr.shape[-1] != ndim:
        raise ValueError(f"{name} must have shape (..., {ndim}), got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite; it holds {int(np.sum(~np.isfinite(arr)))} non-finite values")
    return arr

"""Argument checks shared by every layer.

Each helper either returns a normalised value or raises a ``ValueError``/``TypeError`` whose
message names the argument, the value received and what was expected. They run before any work
is done, so a bad call never leaves half-written state behind.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import numpy as np


def as_positive_int(name: str, value, *, minimum: int = 1, maximum: int | None = None) -> int:
    """Return ``value`` as an ``int`` >= ``minimum`` (and <= ``maximum`` if given; bools are rejected)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer >= {minimum}, got {value!r} ({type(value).__name__})")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be an integer <= {maximum}, got {value}")
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


def as_bounded_float(name: str, value, *, minimum: float | None = None, maximum: float | None = None,
                     min_inclusive: bool = True, max_inclusive: bool = True) -> float:
    """Return ``value`` as a finite ``float`` within ``[minimum, maximum]`` (either end open when
    its ``*_inclusive`` flag is false, unbounded when ``None``); numpy scalars are accepted.

    The limits keep downstream arithmetic finite: the message names the limit that was exceeded.
    """
    low = "-inf" if minimum is None else f"{minimum:g}"
    high = "inf" if maximum is None else f"{maximum:g}"
    left = "[" if min_inclusive and minimum is not None else "("
    right = "]" if max_inclusive and maximum is not None else ")"
    interval = f"{left}{low}, {high}{right}"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number in {interval}, got {value!r} ({type(value).__name__})")
    value = float(value)
    if not np.isfinite(value):
        raise ValueError(f"{name} must be a finite number in {interval}, got {value}")
    if minimum is not None and (value < minimum or (not min_inclusive and value == minimum)):
        raise ValueError(f"{name} must be a finite number {'>=' if min_inclusive else '>'} {minimum:g}, "
                         f"got {value:g}")
    if maximum is not None and (value > maximum or (not max_inclusive and value == maximum)):
        raise ValueError(f"{name} must be a finite number {'<=' if max_inclusive else '<'} {maximum:g} "
                         f"(the limit), got {value:g}")
    return value


def check_finite_tensor(name: str, t, *, max_abs_fraction: float | None = None) -> None:
    """Raise a ``TypeError`` unless ``t`` is a floating-point tensor and a ``ValueError`` naming
    ``name`` when it holds NaN or inf (one reduction; autograd is untouched).

    With ``max_abs_fraction``, values are also limited to ``max_abs_fraction * sqrt(finfo.max)``
    of ``t``'s dtype (squares and sums of squares then stay finite); the same single reduction.
    Half precision (float16), whose range is too narrow for such a limit, is only checked for
    finiteness.
    """
    import torch

    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch tensor, got {type(t).__name__}")
    if not t.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")
    if max_abs_fraction is None or t.numel() == 0 or torch.finfo(t.dtype).max < 1e38:
        if not bool(torch.isfinite(t.detach()).all()):
            raise ValueError(f"{name} contains non-finite values (NaN or inf)")
        return
    largest = float(t.detach().abs().max())  # NaN propagates through max
    if not np.isfinite(largest):
        raise ValueError(f"{name} contains non-finite values (NaN or inf)")
    limit = max_abs_fraction * float(np.sqrt(torch.finfo(t.dtype).max))
    if largest > limit:
        raise ValueError(f"{name} holds values up to {largest:.4g}, beyond the limit {limit:.4g} for {t.dtype} "
                         f"(results would overflow); rescale the image or use float64")


def as_device(name: str, value):
    """Return ``value`` (a string or ``torch.device``; ``None`` passes through) as a ``torch.device``
    that exists on this machine, or raise a ``ValueError`` naming it."""
    import torch

    if value is None:
        return None
    if isinstance(value, torch.device):
        device = value
    elif isinstance(value, str):
        try:
            device = torch.device(value)
        except (RuntimeError, ValueError):
            raise ValueError(f"{name} {value!r} is not a device (expected e.g. 'cpu' or 'cuda:0')") from None
    else:
        raise TypeError(f"{name} must be a device string or a torch.device, got {type(value).__name__}")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{name} {value!r} is not available: this machine has no usable CUDA device")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"{name} {value!r} is not available: this machine has "
                             f"{torch.cuda.device_count()} CUDA device(s)")
    elif device.type == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise ValueError(f"{name} {value!r} is not available on this machine")
    elif device.type not in ("cpu", "meta"):
        raise ValueError(f"{name} {value!r} is not supported (use 'cpu' or 'cuda')")
    return device


def as_bool_mask(name: str, value, shape) -> np.ndarray:
    """Return ``value`` as a boolean numpy array of ``shape``; masks of other dtypes (float masks
    that might hold NaN, integer label maps) are refused with a ``TypeError``."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    arr = np.asarray(value)
    if arr.dtype != np.bool_:
        raise TypeError(f"{name} must be a boolean mask, got dtype {arr.dtype}")
    if arr.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {arr.shape}")
    return arr


def as_lowercase_choice(name: str, value, choices) -> str:
    """Return the string ``value`` lower-cased if it is one of ``choices`` (lower-case strings)."""
    valid = ", ".join(repr(c) for c in choices)
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, one of {valid}; got {value!r} ({type(value).__name__})")
    lowered = value.lower()
    if lowered not in choices:
        raise ValueError(f"{name} must be one of {valid}; got {value!r}")
    return lowered


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


#: Largest ``supersample`` (samples per voxel edge) the phantoms take: ``16**3`` points per voxel
#: is already far past where partial-volume values stop changing.
MAX_SUPERSAMPLE = 16


def as_supersample(value) -> int:
    """Return ``value`` as a supersampling factor in ``[1, MAX_SUPERSAMPLE]``."""
    return as_positive_int("supersample", value, maximum=MAX_SUPERSAMPLE)

"""Image-quality metrics (numpy or torch inputs, Python floats out)."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["nrmse", "psnr"]


def _pair(x, ref):
    a = np.asarray(x.detach().cpu() if hasattr(x, "detach") else x, dtype=np.float64)
    b = np.asarray(ref.detach().cpu() if hasattr(ref, "detach") else ref, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"x and ref must have the same shape, got {a.shape} and {b.shape}")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise ValueError("x and ref must be finite")
    return a, b


def nrmse(x, ref) -> float:
    """``||x - ref||_2 / ||ref||_2``."""
    a, b = _pair(x, ref)
    norm = np.linalg.norm(b)
    if norm == 0:
        raise ValueError("ref is all zeros; NRMSE is undefined")
    return float(np.linalg.norm(a - b) / norm)


def psnr(x, ref, data_range: float | None = None) -> float:
    """Peak signal-to-noise ratio in dB, ``10 log10(data_range^2 / MSE)``.

    ``data_range`` defaults to ``max(ref) - min(ref)``.
    """
    a, b = _pair(x, ref)
    if data_range is None:
        data_range = float(b.max() - b.min())
    if not data_range > 0:
        raise ValueError(f"data_range must be > 0, got {data_range!r}")
    mse = float(np.mean((a - b) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(data_range ** 2 / mse)

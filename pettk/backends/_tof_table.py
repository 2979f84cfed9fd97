"""Tabulated list-mode TOF weight for float32 projections (numba helpers).

A list-mode event weighs a sample at ``t`` (mm from the LOR midpoint) with the Gaussian integral
over its own TOF bin, ``w(u) = 0.5 * (erf((h - u) k) - erf((-h - u) k))`` with ``u = t - c``
(``c``: the bin centre, ``h``: half the bin width, ``k = 1 / (sqrt(2) sigma)``). ``w`` depends on
``|u|`` only and is the same for every event, so float32 projections read it from a table of
``w`` at ``|u| = j * sigma / NODES_PER_SIGMA`` (float64 values from the double-precision erf) by
linear interpolation instead of evaluating two double-precision ``erf`` per sample (~20 ns each).

Error: linear interpolation is off by at most ``step**2 / 8 * max|w''|`` and
``|w''| <= 4 / (sqrt(2 e) sqrt(pi)) k**2 < 0.484 / sigma**2``, so with ``step = sigma / 1024``
every tabulated weight is within ``0.0605 / 1024**2 = 5.8e-8`` of the exact one (absolute; the
weights lie in [0, 1]), which is 1.2e-7 of the peak weight ``w(0)`` for the benchmark's
400 ps / 17 mm bins (about float32's rounding, 6e-8). Float64 projections keep the exact erf.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

NODES_PER_SIGMA = 1024
MAX_NODES = 1 << 16  # wider bins (> ~60 sigma) fall back to erf: the table would leave the caches
ABS_ERROR_BOUND = 0.0605 / NODES_PER_SIGMA**2


@njit(cache=True)
def weight_table(tof, use):
    """``(table, 1 / step)``: ``w`` at ``|u| = j * step`` for ``|u| <= reach + 1.5 width``.

    ``tof`` is the kernels' TOF vector (``pettk.backends._joseph_cpu``); the table reaches one
    bin width beyond the farthest sample any window admits (``reach + width / 2``). Without
    ``use`` (float64, or a table over :data:`MAX_NODES`) it returns an empty table.
    """
    width, sigma, reach, inv = tof[1], tof[2], tof[3], tof[5]
    step = sigma / NODES_PER_SIGMA
    n = int(math.ceil((reach + 1.5 * width) / step)) + 2
    if not use or n > MAX_NODES:
        return np.zeros(0), 1.0
    half = 0.5 * width
    table = np.empty(n)
    for j in range(n):
        u = j * step
        table[j] = 0.5 * (math.erf((half - u) * inv) - math.erf((-half - u) * inv))
    return table, 1.0 / step


@njit(cache=True, inline="always")
def lookup(table, inv_step, u):
    """Linearly interpolated ``w(u)`` (``u`` in mm from the bin centre, either sign)."""
    s = abs(u) * inv_step
    j = min(int(s), table.shape[0] - 2)
    f = s - j
    return table[j] + f * (table[j + 1] - table[j])

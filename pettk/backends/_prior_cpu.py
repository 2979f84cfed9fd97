"""Numba kernels for the pairwise priors of :mod:`pettk.recon.priors` over the 3×3×3 neighbourhood.

A prior is ``R(x) = sum over unordered neighbour pairs {j, k} of w_jk phi(x_j, x_k)`` with
``w_jk = w(offset) * kappa_j * kappa_k``. One kernel, :func:`pair_kernel`, computes per call one of

* the value ``R(x)`` (each pair once: the 13 "half" offsets whose first non-zero entry is > 0),
* the gradient ``g_j = sum_k w_jk dphi(x_j, x_k)`` and the Hessian diagonal
  ``h_j = sum_k w_jk d2phi(x_j, x_k)`` (all 26 neighbours of ``j``; both in one pass),
* the curvature bound ``c_j = sum_k w_jk d2phi_bound(x_k)``,

for ``phi`` one of (``kind``)

* :data:`QUADRATIC`: ``(a - b)^2 / 2``,
* :data:`RDP`: ``(a - b)^2 / (a + b + gamma |a - b| + epsilon)`` (Nuyts et al. 2002),
* :data:`TV`: ``sqrt((a - b)^2 + delta^2) - delta``.

Layout and method
-----------------
The image is a C-contiguous ``(B, n0, n1, n2)`` array (batch first; a 2D grid is ``(B, 1, n0, n1)``,
a 1D grid ``(B, 1, 1, n0)``) of float32 or float64. The work is split over "rows" (fixed
``(b, i, j)``, running along the last axis): each row gathers the contributions of its 26
neighbour rows ``(i + di, j + dj)`` shifted by ``dk`` in contiguous inner loops (vectorisable), so
every output element is written by exactly one thread (no races, no atomics) and no image-sized
temporary is allocated. Rows are processed in contiguous chunks, one float64 scratch row per
chunk: arithmetic and accumulation are in float64 whatever the image dtype (float32 results are
the float64 results rounded once). Voxels outside the grid are not neighbours (no padding).
The kernels compile with ``error_model="numpy"`` (no division-by-zero checks, which would block
SIMD vectorisation of the inner loops; RDP's denominator is >= epsilon > 0 for images >= 0) and
accumulate per element, never into a scalar sum inside a loop (which would not vectorise without
reassociation).

Each pair is evaluated from both ends for the gradient (twice the pair count of a half-offset
sweep) -- the price of race-free writes; the shared sub-expressions (RDP's denominator, TV's
square root) are computed once per evaluation for the gradient and the Hessian together.

References
----------
J. Nuyts, D. Bequé, P. Dupont, L. Mortelmans, IEEE TNS 49(1), 56-60 (2002) (RDP).
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import njit, prange

__all__ = ["QUADRATIC", "RDP", "TV", "MODE_VALUE", "MODE_GRAD_HESS", "MODE_BOUND", "pair_kernel",
           "neighbour_weights", "n_chunks"]

QUADRATIC, RDP, TV = 0, 1, 2
MODE_VALUE, MODE_GRAD_HESS, MODE_BOUND = 0, 1, 2


def neighbour_weights(voxel_size_mm) -> np.ndarray:
    """The ``(3, 3, 3)`` float64 table of ``min(voxel_size) / |offset|`` (0 at the centre) for
    offsets ``(di, dj, dk)`` in ``{-1, 0, 1}^3`` on the kernel's 3D layout.

    ``voxel_size_mm`` has the grid's 1 to 3 entries; missing leading axes (a 2D grid's singleton
    axis) get weight 0 (they have no neighbours anyway).
    """
    vs = [float(v) for v in voxel_size_mm]
    pad = 3 - len(vs)
    vs3 = [0.0] * pad + vs
    w = np.zeros((3, 3, 3), dtype=np.float64)
    for di in (-1, 0, 1):
        for dj in (-1, 0, 1):
            for dk in (-1, 0, 1):
                off = (di, dj, dk)
                if off == (0, 0, 0) or any(o != 0 for o in off[:pad]):
                    continue
                dist = math.sqrt(sum((o * v) ** 2 for o, v in zip(off, vs3)))
                w[di + 1, dj + 1, dk + 1] = min(vs) / dist
    return w


def n_chunks(n_rows: int) -> int:
    """Row chunks per call: a few per thread (load balance), at most one per row."""
    return max(1, min(n_rows, 8 * numba.get_num_threads()))


# ---------------------------------------------------------------------------------------------
# One neighbour row: contiguous loops over k in [k0, k1) with the neighbour at k + dk.
# ``ka``/``kb`` are the kappa rows (ignored unless use_kappa). Accumulates per element into ``ag``
# (the pair values in MODE_VALUE, the gradient in MODE_GRAD_HESS, the bound in MODE_BOUND) and
# ``ah`` (the Hessian diagonal). Per-element accumulation keeps the loops vectorisable (a scalar
# float sum would need reassociation); error_model="numpy" drops the division-by-zero checks
# that would block vectorisation too.
# ---------------------------------------------------------------------------------------------
@njit(cache=True, inline="always", error_model="numpy")
def _line_quadratic(xa, xb, ka, kb, use_kappa, k0, k1, dk, w, mode, ag, ah):
    if mode == MODE_VALUE:
        for k in range(k0, k1):
            d = np.float64(xa[k]) - np.float64(xb[k + dk])
            wk = w * np.float64(ka[k]) * np.float64(kb[k + dk]) if use_kappa else w
            ag[k] += wk * (0.5 * d * d)
    elif mode == MODE_GRAD_HESS:
        for k in range(k0, k1):
            d = np.float64(xa[k]) - np.float64(xb[k + dk])
            wk = w * np.float64(ka[k]) * np.float64(kb[k + dk]) if use_kappa else w
            ag[k] += wk * d
            ah[k] += wk
    else:
        for k in range(k0, k1):
            wk = w * np.float64(ka[k]) * np.float64(kb[k + dk]) if use_kappa else w
            ag[k] += wk


@njit(cache=True, inline="always", error_model="numpy")
def _line_rdp(xa, xb, ka, kb, use_kappa, k0, k1, dk, w, gamma, eps, mode, ag, ah):
    if mode == MODE_VALUE:
        for k in range(k0, k1):
            a = np.float64(xa[k])
            b = np.float64(xb[k + dk])
            d = a - b
            wk = w * np.float64(ka[k]) * np.float64(kb[k + dk]) if use_kappa else w
            ag[k] += wk * (d * d / (a + b + gamma * abs(d) + eps))
    elif mode == MODE_GRAD_HESS:
        two_eps = 2.0 * eps
        for k in range(k0, k1):
            a = np.float64(xa[k])
            b = np.float64(xb[k + dk])
            d = a - b
            wk = w * np.float64(ka[k]) * np.float64(kb[k + dk]) if use_kappa else w
            gd = gamma * abs(d)
            inv = 1.0 / (a + b + gd + eps)
            inv2 = inv * inv
            c = 2.0 * b + eps
            ag[k] += wk * (d * (gd + a + 3.0 * b + two_eps) * inv2)
            ah[k] += wk * (2.0 * c * c * inv2 * inv)
    else:
        one_plus_gamma = 1.0 + gamma
        for k in range(k0, k1):
            b = max(np.float64(xb[k + dk]), 0.0)
            wk = w * np.float64(ka[k]) * np.float64(kb[k + dk]) if use_kappa else w
            c = 2.0 * b + eps
            d_min = one_plus_gamma * b + eps if gamma <= 1.0 else c
            ag[k] += wk * (2.0 * c * c / (d_min * d_min * d_min))


@njit(cache=True, inline="always", error_model="numpy")
def _line_tv(xa, xb, ka, kb, use_kappa, k0, k1, dk, w, delta, mode, ag, ah):
    delta2 = delta * delta
    if mode == MODE_VALUE:
        for k in range(k0, k1):
            d = np.float64(xa[k]) - np.float64(xb[k + dk])
            wk = w * np.float64(ka[k]) * np.float64(kb[k + dk]) if use_kappa else w
            ag[k] += wk * (math.sqrt(d * d + delta2) - delta)
    elif mode == MODE_GRAD_HESS:
        for k in range(k0, k1):
            d = np.float64(xa[k]) - np.float64(xb[k + dk])
            wk = w * np.float64(ka[k]) * np.float64(kb[k + dk]) if use_kappa else w
            r = 1.0 / math.sqrt(d * d + delta2)
            ag[k] += wk * (d * r)
            ah[k] += wk * (delta2 * r * r * r)
    else:
        inv_delta = 1.0 / delta
        for k in range(k0, k1):
            wk = w * np.float64(ka[k]) * np.float64(kb[k + dk]) if use_kappa else w
            ag[k] += wk * inv_delta


@njit(parallel=True, cache=True, error_model="numpy")
def pair_kernel(x, kappa, use_kappa, weights, kind, p0, p1, mode, g, h, partial):
    """Run one ``mode`` of prior ``kind`` (parameters ``p0``, ``p1``: RDP gamma and epsilon, TV
    delta) on ``x`` of shape ``(B, n0, n1, n2)``.

    ``kappa`` is ``(n0, n1, n2)`` float64 (any array when ``use_kappa`` is False); ``weights``
    the ``(3, 3, 3)`` table of :func:`neighbour_weights`. ``g``/``h``: outputs of ``x``'s shape
    and dtype, fully overwritten (``g`` gets the gradient or the bound, ``h`` the Hessian
    diagonal; unused ones may be any array). ``partial``: float64 ``(n_chunks,)``, one value
    partial sum per row chunk (MODE_VALUE).
    """
    n_b, n0, n1, n2 = x.shape
    n_rows = n_b * n0 * n1
    n_c = partial.shape[0]
    for c in prange(n_c):
        r0 = (c * n_rows) // n_c
        r1 = ((c + 1) * n_rows) // n_c
        ag = np.empty(n2, dtype=np.float64)
        ah = np.empty(n2, dtype=np.float64)
        total = 0.0
        for row in range(r0, r1):
            bi = row // (n0 * n1)
            rest = row - bi * (n0 * n1)
            i = rest // n1
            j = rest - i * n1
            ag[:] = 0.0
            ah[:] = 0.0
            xa = x[bi, i, j]
            ka = kappa[i, j] if use_kappa else kappa[0, 0]  # never the scratch rows: no aliasing
            for di in range(-1, 2):
                ni = i + di
                if ni < 0 or ni >= n0:
                    continue
                for dj in range(-1, 2):
                    nj = j + dj
                    if nj < 0 or nj >= n1:
                        continue
                    xb = x[bi, ni, nj]
                    kb = kappa[ni, nj] if use_kappa else kappa[0, 0]
                    for dk in range(-1, 2):
                        w = weights[di + 1, dj + 1, dk + 1]
                        if w == 0.0:
                            continue
                        if mode == MODE_VALUE:
                            # each unordered pair once: first non-zero offset entry positive
                            if di < 0 or (di == 0 and (dj < 0 or (dj == 0 and dk < 0))):
                                continue
                        k0 = 0 if dk >= 0 else 1
                        k1 = n2 - 1 if dk > 0 else n2
                        if kind == QUADRATIC:
                            _line_quadratic(xa, xb, ka, kb, use_kappa, k0, k1, dk, w, mode, ag, ah)
                        elif kind == RDP:
                            _line_rdp(xa, xb, ka, kb, use_kappa, k0, k1, dk, w, p0, p1, mode, ag, ah)
                        else:
                            _line_tv(xa, xb, ka, kb, use_kappa, k0, k1, dk, w, p0, mode, ag, ah)
            if mode == MODE_VALUE:
                for k in range(n2):
                    total += ag[k]
            elif mode == MODE_GRAD_HESS:
                for k in range(n2):
                    g[bi, i, j, k] = ag[k]
                    h[bi, i, j, k] = ah[k]
            elif mode == MODE_BOUND:
                for k in range(n2):
                    g[bi, i, j, k] = ag[k]
        partial[c] = total

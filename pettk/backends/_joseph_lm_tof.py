"""Numba kernels of the list-mode TOF Joseph projection (CPU): every event its own LOR and TOF bin.

The sampling is :mod:`pettk.backends._joseph_cpu`'s (same plane stepping, padding, float64
geometry and accumulation); each sample is weighted by the Gaussian integral over the event's
TOF bin. Only the voxel planes whose TOF window can hold the event's bin are visited, found once
per event (:func:`_lm_tof_planes`). Float32 projections read the weight from a per-call table
(:mod:`pettk.backends._tof_table`), float64 ones evaluate the double-precision ``erf``.
"""

from __future__ import annotations

import math

from numba import njit, prange

from ._joseph_cpu import PAD, _bilinear, _corner3d, _setup3d, _spread_bilinear, _tof_window
from ._tof_table import lookup, weight_table


@njit(cache=True, inline="always")
def _lm_tof_planes(tc, ts, lo, hi, e_lo, e_hi, tof, n_bins, bin_):
    """First and last plane in ``[lo, hi]`` whose TOF window holds ``bin_`` (first > last: none).

    The window test is monotone in ``t``, so the planes that pass are contiguous: start from the
    planes within reach of the bin (one plane of margin each side for rounding) and trim the ends
    with the exact test; every plane between passes it.
    """
    i0 = (e_lo - tof[3] - tc) / ts
    i1 = (e_hi + tof[3] - tc) / ts
    if i0 > i1:
        i0, i1 = i1, i0
    first = max(lo, int(math.floor(min(max(i0, lo - 1.0), hi + 1.0))) - 1)
    last = min(hi, int(math.ceil(min(max(i1, lo - 1.0), hi + 1.0))) + 1)
    while first <= last:
        b_lo, b_hi = _tof_window(tc + first * ts, tof, n_bins)
        if b_lo <= bin_ <= b_hi:
            break
        first += 1
    while last >= first:
        b_lo, b_hi = _tof_window(tc + last * ts, tof, n_bins)
        if b_lo <= bin_ <= b_hi:
            break
        last -= 1
    return first, last


@njit(cache=True, inline="always")
def _line_lm_tof(img, strides, shape, origin, vs, x0, y0, z0, x1, y1, z1, tof, n_bins, bin_, value, adjoint,
                 table, inv_step):
    """List-mode TOF: forward (returns the line integral in ``bin_``) or adjoint (adds ``value``).

    With a non-empty ``table`` (float32 projections) the TOF weight is read from it
    (:mod:`pettk.backends._tof_table`), otherwise evaluated with the double-precision erf.
    """
    k, a, b, lo, hi, ca, sa, cb, sb, weight, tc, ts = _setup3d(shape, origin, vs, x0, y0, z0, x1, y1, z1)
    sk, s_a, s_b = strides[k], strides[a], strides[b]
    offset = PAD * (strides[0] + strides[1] + strides[2])
    inv = tof[5]
    e_lo = tof[0] + bin_ * tof[1]
    e_hi = e_lo + tof[1]
    centre = e_lo + 0.5 * tof[1]
    tabulated = table.shape[0] > 0
    acc = 0.0
    if lo > hi:
        return acc
    first, last = _lm_tof_planes(tc, ts, lo, hi, e_lo, e_hi, tof, n_bins, bin_)
    vw = value * weight
    for i in range(first, last + 1):
        t = tc + i * ts
        if tabulated:
            w_tof = lookup(table, inv_step, t - centre)
        else:
            w_tof = 0.5 * (math.erf((e_hi - t) * inv) - math.erf((e_lo - t) * inv))
        base, wa, wb = _corner3d(i, ca, sa, cb, sb, offset, sk, s_a, s_b)
        if adjoint:
            _spread_bilinear(img, base, s_a, s_b, wa, wb, vw * w_tof)
        else:
            acc += w_tof * _bilinear(img, base, s_a, s_b, wa, wb)
    return acc * weight


@njit(parallel=True, cache=True)
def forward3d_lm_tof(img_pad, strides, shape, origin, vs, trans, axial, tof, n_bins, tof_bin, out):
    """List-mode TOF forward projection: one value per event, in the event's TOF bin.

    Float32 images use the tabulated TOF weight (:mod:`pettk.backends._tof_table`), float64 the
    exact erf.
    """
    table, inv_step = weight_table(tof, img_pad.itemsize == 4)
    for lor in prange(out.shape[0]):
        out[lor] = _line_lm_tof(img_pad, strides, shape, origin, vs, trans[lor, 0], trans[lor, 1], axial[lor, 0],
                                trans[lor, 2], trans[lor, 3], axial[lor, 1], tof, n_bins, tof_bin[lor], 0.0, False,
                                table, inv_step)


@njit(parallel=True, cache=True)
def adjoint3d_lm_tof(y, strides, shape, origin, vs, trans, axial, tof, n_bins, tof_bin, buffers):
    """List-mode TOF back projection into per-thread padded images (float32: tabulated weight)."""
    table, inv_step = weight_table(tof, buffers.itemsize == 4)
    n_chunks = buffers.shape[0]
    n_lors = y.shape[0]
    for c in prange(n_chunks):
        buf = buffers[c]
        for lor in range(c * n_lors // n_chunks, (c + 1) * n_lors // n_chunks):
            if y[lor] != 0.0:
                _line_lm_tof(buf, strides, shape, origin, vs, trans[lor, 0], trans[lor, 1], axial[lor, 0],
                             trans[lor, 2], trans[lor, 3], axial[lor, 1], tof, n_bins, tof_bin[lor], y[lor], True,
                             table, inv_step)

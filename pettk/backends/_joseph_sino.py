"""Numba kernels for 3D sinograms that use the factorisation ``LOR = plane × transaxial LOR``.

The operator is exactly :mod:`pettk.backends._joseph_cpu`'s Joseph projection (non-TOF and TOF
sinograms); only the loop order differs. Every LOR of one transaxial LOR ``t`` (all planes of a
sinogram) steps along the same transaxial axis ``k`` (x or y) over the same voxel planes ``i``
and crosses each at the same transaxial coordinate ``a``: only the axial coordinate ``z`` differs
from plane to plane. So the kernels run in parallel over transaxial LORs and, for every voxel
plane ``i``, first interpolate the image linearly along ``a`` into one axial column
``col[z] = (1 - w_a) img[i, a0, z] + w_a img[i, a0 + 1, z]`` (z is the contiguous image axis),
then take every plane's sample from that column by linear interpolation in ``z``:
two reads from a few hundred bytes instead of four scattered image reads and the transaxial
arithmetic per sample. The back projection is the transpose: planes scatter into the column, the
column is spread onto the image once.

An axial coordinate outside ``(-1, nz)`` is clamped to the column's zero padding (it weighs
voxels outside the grid, which are zero), so the inner loop over planes has no branches. LORs
that step along ``z`` (``|dz| > max(|dx|, |dy|)``) or have no transaxial extent are left to the
generic kernels: :func:`generic_lors` lists them and the plan projects them separately.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from ._joseph_cpu import PAD, _clip_range, _tof_window


def generic_lors(trans: np.ndarray, axial: np.ndarray) -> np.ndarray:
    """Flat sinogram indices ``plane * n_t + t`` of the LORs the factorised kernels skip."""
    m = np.maximum(np.abs(trans[:, 2] - trans[:, 0]), np.abs(trans[:, 3] - trans[:, 1]))
    az = np.abs(axial[:, 1] - axial[:, 0])
    skip = (m[None, :] < az[:, None]) | (m[None, :] == 0.0)
    return np.flatnonzero(skip.reshape(-1))


@njit(cache=True, inline="always")
def _setup_transaxial(shape, origin, vs, trans, axial, t, planes, cb, sb, w, tc, ts):
    """Transaxial set-up of LOR ``t`` and the axial line of every plane it is exact for.

    Fills ``planes[:n]`` (plane indices), ``cb``, ``sb`` (z voxel coordinate ``cb + i sb`` at
    voxel plane ``i``), ``w`` (the Joseph weight ``vs_k |p1 - p0| / |dk|``) and ``tc``, ``ts``
    (signed distance of the sample from the LOR midpoint, ``tc + i ts``, mm) for the ``n`` planes
    that step along ``k``. Returns ``(n, k, a, lo, hi, ca, sa)``; ``n = 0`` when none does.
    """
    x0, y0, x1, y1 = trans[t, 0], trans[t, 1], trans[t, 2], trans[t, 3]
    dx = x1 - x0
    dy = y1 - y0
    if abs(dx) >= abs(dy):
        k, a, m = 0, 1, abs(dx)
        pk, pa, dk, da = x0, y0, dx, dy
    else:
        k, a, m = 1, 0, abs(dy)
        pk, pa, dk, da = y0, x0, dy, dx
    if dk == 0.0:
        return 0, k, a, 1, 0, 0.0, 0.0
    u0k = (pk - origin[k]) / vs[k]
    u1k = u0k + dk / vs[k]
    duk = dk / vs[k]
    u0a = (pa - origin[a]) / vs[a]
    sa = (da / vs[a]) / duk
    ca = u0a - u0k * sa
    lo = int(math.ceil(min(max(min(u0k, u1k), -1.0), float(shape[k]))))
    hi = int(math.floor(min(max(max(u0k, u1k), -1.0), float(shape[k]))))
    lo, hi = max(lo, 0), min(hi, shape[k] - 1)
    lo, hi = _clip_range(lo, hi, ca, sa, shape[a])
    if lo > hi:
        return 0, k, a, lo, hi, ca, sa
    n = 0
    for p in range(axial.shape[0]):
        dz = axial[p, 1] - axial[p, 0]
        if abs(dz) > m:
            continue  # steps along z: the generic kernels project it
        u0b = (axial[p, 0] - origin[2]) / vs[2]
        s = (dz / vs[2]) / duk
        length = math.sqrt(dx * dx + dy * dy + dz * dz)
        planes[n] = p
        sb[n] = s
        cb[n] = u0b - u0k * s
        w[n] = vs[k] * length / abs(dk)
        ts[n] = length / duk
        tc[n] = -u0k * ts[n] - 0.5 * length
        n += 1
    return n, k, a, lo, hi, ca, sa


@njit(cache=True, inline="always")
def _fill_column(img, base, s_a, wa, col):
    for j in range(col.shape[0]):
        col[j] = (1.0 - wa) * img[base + j] + wa * img[base + s_a + j]


@njit(cache=True, inline="always")
def _spread_column(img, base, s_a, wa, col):
    for j in range(col.shape[0]):
        img[base + j] += (1.0 - wa) * col[j]
        img[base + s_a + j] += wa * col[j]


@njit(cache=True, inline="always")
def _z_sample(cb, sb, fi, zmax):
    """Column index ``j`` (z = j - 1) and weight of z = cb + fi sb, clamped into the padding."""
    g = min(max(cb + fi * sb, -1.0), zmax) + 1.0
    j = int(g)
    return j, g - j


@njit(parallel=True, cache=True)
def forward3d_sino(img_pad, strides, shape, origin, vs, trans, axial, out):
    """Forward projection into ``out`` of shape ``(n_planes, n_t)`` (LORs the generic kernels own: 0)."""
    n_p, n_t = axial.shape[0], trans.shape[0]
    nz = shape[2]
    zmax = float(nz)
    offset = PAD * (strides[0] + strides[1] + strides[2]) - 1  # column entry 0 is z = -1
    for t in prange(n_t):
        planes = np.empty(n_p, np.int64)
        cb, sb, w = np.empty(n_p), np.empty(n_p), np.empty(n_p)
        tc, ts = np.empty(n_p), np.empty(n_p)
        acc = np.zeros(n_p)
        col = np.empty(nz + 3)
        n, k, a, lo, hi, ca, sa = _setup_transaxial(shape, origin, vs, trans, axial, t, planes, cb, sb, w, tc, ts)
        for p in range(n_p):
            out[p, t] = 0.0
        if n == 0:
            continue
        sk, s_a = strides[k], strides[a]
        for i in range(lo, hi + 1):
            fa = ca + i * sa
            ia = int(math.floor(fa))
            _fill_column(img_pad, offset + i * sk + ia * s_a, s_a, fa - ia, col)
            fi = float(i)
            for q in range(n):
                j, wb = _z_sample(cb[q], sb[q], fi, zmax)
                acc[q] += (1.0 - wb) * col[j] + wb * col[j + 1]
        for q in range(n):
            out[planes[q], t] = acc[q] * w[q]


@njit(parallel=True, cache=True)
def adjoint3d_sino(y, strides, shape, origin, vs, trans, axial, buffers):
    """Back-project ``y`` of shape ``(n_planes, n_t)`` into per-thread padded flat images ``buffers``.

    LORs the generic kernels own are left out.
    """
    n_p, n_t = axial.shape[0], trans.shape[0]
    nz = shape[2]
    zmax = float(nz)
    offset = PAD * (strides[0] + strides[1] + strides[2]) - 1
    n_chunks = buffers.shape[0]
    for c in prange(n_chunks):
        buf = buffers[c]
        planes = np.empty(n_p, np.int64)
        cb, sb, w = np.empty(n_p), np.empty(n_p), np.empty(n_p)
        tc, ts = np.empty(n_p), np.empty(n_p)
        col = np.empty(nz + 3)
        for t in range(c * n_t // n_chunks, (c + 1) * n_t // n_chunks):
            n, k, a, lo, hi, ca, sa = _setup_transaxial(shape, origin, vs, trans, axial, t, planes, cb, sb, w,
                                                        tc, ts)
            m = 0  # keep the planes with a non-zero value; w now holds value * weight
            for q in range(n):
                v = y[planes[q], t] * w[q]
                if v != 0.0:
                    cb[m], sb[m], w[m] = cb[q], sb[q], v
                    m += 1
            if m == 0:
                continue
            sk, s_a = strides[k], strides[a]
            for i in range(lo, hi + 1):
                col[:] = 0.0
                fi = float(i)
                for q in range(m):
                    j, wb = _z_sample(cb[q], sb[q], fi, zmax)
                    col[j] += (1.0 - wb) * w[q]
                    col[j + 1] += wb * w[q]
                fa = ca + i * sa
                ia = int(math.floor(fa))
                _spread_column(buf, offset + i * sk + ia * s_a, s_a, fa - ia, col)


# ---------------------------------------------------------------------------------------------
# TOF sinograms: ``tof`` as in pettk.backends._joseph_cpu (first edge, bin width, sigma, reach,
# 1 / bin width, 1 / (sqrt(2) sigma)); each sample's value is spread over the bins of its window
# with the Gaussian's integral over each bin, exactly as the generic TOF kernels do.
#
# The sample's distance from the LOR midpoint, tc + i ts, depends on the plane only through the
# LOR length, i.e. through |dz|: every plane of one axial group (equal |z_end - z_start|, e.g. one
# ring difference of evenly spaced rings) shares it bit for bit, so the erf window is computed
# once per group and voxel plane instead of once per sample (the same numbers, in the same order).
# ---------------------------------------------------------------------------------------------
def axial_groups(axial: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(group of every plane, |dz| of every group)``: planes with bitwise equal ``|dz|``."""
    dz, group = np.unique(np.abs(axial[:, 1] - axial[:, 0]), return_inverse=True)
    return np.ascontiguousarray(group.reshape(-1), dtype=np.int64), np.ascontiguousarray(dz)


@njit(cache=True, inline="always")
def _group_lines(trans, t, k, origin, vs, group_dz, tc_g, ts_g):
    """``tc``, ``ts`` of every axial group for transaxial LOR ``t`` (as _setup_transaxial computes them)."""
    dx = trans[t, 2] - trans[t, 0]
    dy = trans[t, 3] - trans[t, 1]
    pk = trans[t, 0] if k == 0 else trans[t, 1]
    dk = dx if k == 0 else dy
    u0k = (pk - origin[k]) / vs[k]
    duk = dk / vs[k]
    for g in range(group_dz.shape[0]):
        dz = group_dz[g]
        length = math.sqrt(dx * dx + dy * dy + dz * dz)
        ts_g[g] = length / duk
        tc_g[g] = -u0k * ts_g[g] - 0.5 * length


@njit(cache=True, inline="always")
def _group_window(g, fi, tc_g, ts_g, tof, n_bins, inv, diff):
    """Bins ``b_lo..b_hi`` of group ``g``'s sample at voxel plane ``fi``; ``diff[g, j]`` holds the
    erf difference of bin ``b_lo + j``."""
    tt = tc_g[g] + fi * ts_g[g]
    b_lo, b_hi = _tof_window(tt, tof, n_bins)
    cdf_lo = math.erf((tof[0] + b_lo * tof[1] - tt) * inv)
    for bin_ in range(b_lo, b_hi + 1):
        cdf_hi = math.erf((tof[0] + (bin_ + 1) * tof[1] - tt) * inv)
        diff[g, bin_ - b_lo] = cdf_hi - cdf_lo
        cdf_lo = cdf_hi
    return b_lo, b_hi


@njit(parallel=True, cache=True)
def forward3d_sino_tof(img_pad, strides, shape, origin, vs, trans, axial, group, group_dz, tof, out):
    """TOF forward projection into ``out`` of shape ``(n_planes, n_t, n_bins)`` (generic LORs: 0).

    ``group``, ``group_dz``: :func:`axial_groups` of ``axial``.
    """
    n_p, n_t, n_bins = out.shape
    n_g = group_dz.shape[0]
    nz = shape[2]
    zmax = float(nz)
    offset = PAD * (strides[0] + strides[1] + strides[2]) - 1
    inv = tof[5]
    for t in prange(n_t):
        planes = np.empty(n_p, np.int64)
        cb, sb, w = np.empty(n_p), np.empty(n_p), np.empty(n_p)
        tc, ts = np.empty(n_p), np.empty(n_p)
        col = np.empty(nz + 3)
        n, k, a, lo, hi, ca, sa = _setup_transaxial(shape, origin, vs, trans, axial, t, planes, cb, sb, w, tc, ts)
        for p in range(n_p):
            out[p, t, :] = 0.0
        if n == 0:
            continue
        acc = np.zeros((n, n_bins))
        tc_g, ts_g = np.empty(n_g), np.empty(n_g)
        _group_lines(trans, t, k, origin, vs, group_dz, tc_g, ts_g)
        diff = np.empty((n_g, n_bins + 1))
        b_lo, b_hi = np.empty(n_g, np.int64), np.empty(n_g, np.int64)
        stamp = np.full(n_g, -1, np.int64)
        sk, s_a = strides[k], strides[a]
        for i in range(lo, hi + 1):
            fa = ca + i * sa
            ia = int(math.floor(fa))
            _fill_column(img_pad, offset + i * sk + ia * s_a, s_a, fa - ia, col)
            fi = float(i)
            for q in range(n):
                j, wb = _z_sample(cb[q], sb[q], fi, zmax)
                v = (1.0 - wb) * col[j] + wb * col[j + 1]
                if v == 0.0:
                    continue
                g = group[planes[q]]
                if stamp[g] != i:
                    b_lo[g], b_hi[g] = _group_window(g, fi, tc_g, ts_g, tof, n_bins, inv, diff)
                    stamp[g] = i
                v *= 0.5
                first = b_lo[g]
                for jj in range(b_hi[g] - first + 1):
                    acc[q, first + jj] += v * diff[g, jj]
        for q in range(n):
            for bin_ in range(n_bins):
                out[planes[q], t, bin_] = acc[q, bin_] * w[q]


@njit(parallel=True, cache=True)
def adjoint3d_sino_tof(y, strides, shape, origin, vs, trans, axial, group, group_dz, tof, buffers):
    """TOF back projection of ``y`` ``(n_planes, n_t, n_bins)`` into per-thread padded images.

    LORs the generic kernels own are left out. ``group``, ``group_dz``: :func:`axial_groups`.
    """
    n_p, n_t, n_bins = y.shape
    n_g = group_dz.shape[0]
    nz = shape[2]
    zmax = float(nz)
    offset = PAD * (strides[0] + strides[1] + strides[2]) - 1
    inv = tof[5]
    n_chunks = buffers.shape[0]
    for c in prange(n_chunks):
        buf = buffers[c]
        planes = np.empty(n_p, np.int64)
        cb, sb, w = np.empty(n_p), np.empty(n_p), np.empty(n_p)
        tc, ts = np.empty(n_p), np.empty(n_p)
        rows = np.empty((n_p, n_bins))
        col = np.empty(nz + 3)
        tc_g, ts_g = np.empty(n_g), np.empty(n_g)
        diff = np.empty((n_g, n_bins + 1))
        b_lo, b_hi = np.empty(n_g, np.int64), np.empty(n_g, np.int64)
        stamp = np.empty(n_g, np.int64)
        for t in range(c * n_t // n_chunks, (c + 1) * n_t // n_chunks):
            n, k, a, lo, hi, ca, sa = _setup_transaxial(shape, origin, vs, trans, axial, t, planes, cb, sb, w,
                                                        tc, ts)
            m = 0  # keep the planes with a non-zero TOF row, copied out of y once
            for q in range(n):
                nonzero = False
                for bin_ in range(n_bins):
                    rows[m, bin_] = y[planes[q], t, bin_]
                    nonzero = nonzero or rows[m, bin_] != 0.0
                if nonzero:
                    cb[m], sb[m], w[m], planes[m] = cb[q], sb[q], 0.5 * w[q], planes[q]
                    m += 1
            if m == 0:
                continue
            _group_lines(trans, t, k, origin, vs, group_dz, tc_g, ts_g)
            stamp[:] = -1
            sk, s_a = strides[k], strides[a]
            for i in range(lo, hi + 1):
                col[:] = 0.0
                fi = float(i)
                for q in range(m):
                    gr = group[planes[q]]
                    if stamp[gr] != i:
                        b_lo[gr], b_hi[gr] = _group_window(gr, fi, tc_g, ts_g, tof, n_bins, inv, diff)
                        stamp[gr] = i
                    first = b_lo[gr]
                    g = 0.0
                    for jj in range(b_hi[gr] - first + 1):
                        g += rows[q, first + jj] * diff[gr, jj]
                    g *= w[q]
                    if g == 0.0:
                        continue
                    j, wb = _z_sample(cb[q], sb[q], fi, zmax)
                    col[j] += (1.0 - wb) * g
                    col[j + 1] += wb * g
                fa = ca + i * sa
                ia = int(math.floor(fa))
                _spread_column(buf, offset + i * sk + ia * s_a, s_a, fa - ia, col)

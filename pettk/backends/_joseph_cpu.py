"""Numba kernels for the Joseph forward and matched back projection (non-TOF).

The method (exactly as defined in :mod:`pettk.projector`): for a LOR from ``p0`` to ``p1`` the
stepping axis ``k`` has the largest ``|p1_k - p0_k|`` (in mm). For every voxel plane ``i`` along
``k`` with ``0 <= i < n_k`` whose centre lies between ``p0`` and ``p1``, the image is sampled where
the line crosses the plane by bilinear (3D) or linear (2D) interpolation of the nearest voxels in
the other axes (voxels outside the grid are zero). The line integral is the sum of the samples
times ``voxel_size_k * |p1 - p0| / |p1_k - p0_k|``. The back projection spreads exactly the same
weights.

Implementation notes
--------------------
* The image is copied into a buffer padded with :data:`PAD` zero voxels on every side, so the
  inner loop reads and writes without bounds checks. Each LOR's plane range is first clipped to
  the planes where every interpolation coordinate lies in ``(-1, n)`` (outside it all weights
  hit zero voxels); rounding at that clip can only add samples whose weights fall on padding.
* Geometry arithmetic is float64 whatever the image dtype; samples accumulate in float64.
* The back projection is race-free: ``prange`` runs one contiguous chunk of LORs per thread, each
  accumulating into its own padded image; the chunks are summed afterwards.
* LORs come as factorised tables (see :class:`pettk.geometry.LORTables`): ``outer`` means the
  outer product of axial and transaxial tables (sinograms), otherwise they are zipped (list mode).
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import njit, prange

PAD = 2


def tof_vector(tof) -> np.ndarray:
    """The TOF parameter vector of the kernels, float64: ``[first_edge_mm, bin_width_mm, sigma_mm,
    reach_mm = n_sigmas * sigma_mm, 1 / bin_width_mm, 1 / (sqrt(2) sigma_mm)]``."""
    return np.array([tof.first_edge_mm, tof.bin_width_mm, tof.sigma_mm, tof.n_sigmas * tof.sigma_mm,
                     1.0 / tof.bin_width_mm, 1.0 / (np.sqrt(2.0) * tof.sigma_mm)], dtype=np.float64)


# ---------------------------------------------------------------------------------------------
# Per-LOR set-up: stepping axis, plane range and the interpolation coordinates as linear
# functions of the plane index.
# ---------------------------------------------------------------------------------------------
@njit(cache=True, inline="always")
def _clip_range(lo, hi, c, s, n):
    """Clip [lo, hi] to the planes i where c + s * i lies in (-1, n) (with a rounding margin)."""
    if s == 0.0:
        if c <= -1.0 or c >= n:
            return 1, 0
        return lo, hi
    t0 = (-1.0 - c) / s
    t1 = (n - c) / s
    if t0 > t1:
        t0, t1 = t1, t0
    eps = 1e-9 * (abs(t0) + abs(t1) + 1.0)
    # clamp before converting: a float outside the int64 range makes the conversion undefined
    lo2 = int(math.ceil(min(max(t0 - eps, lo - 1.0), hi + 1.0)))
    hi2 = int(math.floor(min(max(t1 + eps, lo - 1.0), hi + 1.0)))
    return max(lo, lo2), min(hi, hi2)


@njit(cache=True, inline="always")
def _setup3d(shape, origin, vs, x0, y0, z0, x1, y1, z1):
    """Return (k, a, b, lo, hi, ca, sa, cb, sb, weight, tc, ts) for one LOR; lo > hi means no samples.

    ``tc + i * ts`` is the signed distance (mm) of plane ``i``'s sample from the LOR midpoint,
    positive towards the end point (used for TOF).
    """
    dx = x1 - x0
    dy = y1 - y0
    dz = z1 - z0
    ax, ay, az = abs(dx), abs(dy), abs(dz)
    if ax >= ay and ax >= az:
        k, a, b = 0, 1, 2
    elif ay >= az:
        k, a, b = 1, 0, 2
    else:
        k, a, b = 2, 0, 1
    p0 = (x0, y0, z0)
    d = (dx, dy, dz)
    dk = d[k]
    if dk == 0.0:
        return k, a, b, 1, 0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0
    # continuous voxel indices of p0 and the per-mm slopes
    u0k = (p0[k] - origin[k]) / vs[k]
    u1k = u0k + dk / vs[k]
    duk = dk / vs[k]
    u0a = (p0[a] - origin[a]) / vs[a]
    u0b = (p0[b] - origin[b]) / vs[b]
    sa = (d[a] / vs[a]) / duk
    sb = (d[b] / vs[b]) / duk
    ca = u0a - u0k * sa
    cb = u0b - u0k * sb
    lo = int(math.ceil(min(max(min(u0k, u1k), -1.0), float(shape[k]))))
    hi = int(math.floor(min(max(max(u0k, u1k), -1.0), float(shape[k]))))
    lo, hi = max(lo, 0), min(hi, shape[k] - 1)
    lo, hi = _clip_range(lo, hi, ca, sa, shape[a])
    lo, hi = _clip_range(lo, hi, cb, sb, shape[b])
    length = math.sqrt(dx * dx + dy * dy + dz * dz)
    weight = vs[k] * length / abs(dk)
    ts = length / duk
    tc = -u0k * ts - 0.5 * length
    return k, a, b, lo, hi, ca, sa, cb, sb, weight, tc, ts


@njit(cache=True, inline="always")
def _setup2d(shape, origin, vs, x0, y0, x1, y1):
    """Return (k, a, lo, hi, ca, sa, weight) for one 2D LOR; lo > hi means no samples."""
    dx = x1 - x0
    dy = y1 - y0
    if abs(dx) >= abs(dy):
        k, a = 0, 1
    else:
        k, a = 1, 0
    p0 = (x0, y0)
    d = (dx, dy)
    dk = d[k]
    if dk == 0.0:
        return k, a, 1, 0, 0.0, 0.0, 0.0
    u0k = (p0[k] - origin[k]) / vs[k]
    duk = dk / vs[k]
    u1k = u0k + duk
    u0a = (p0[a] - origin[a]) / vs[a]
    sa = (d[a] / vs[a]) / duk
    ca = u0a - u0k * sa
    lo = int(math.ceil(min(max(min(u0k, u1k), -1.0), float(shape[k]))))
    hi = int(math.floor(min(max(max(u0k, u1k), -1.0), float(shape[k]))))
    lo, hi = max(lo, 0), min(hi, shape[k] - 1)
    lo, hi = _clip_range(lo, hi, ca, sa, shape[a])
    weight = vs[k] * math.sqrt(dx * dx + dy * dy) / abs(dk)
    return k, a, lo, hi, ca, sa, weight


@njit(cache=True, inline="always")
def _endpoints(trans, axial, outer, n_t, lor):
    lor = np.int64(lor)  # the parfor index may be unsigned; keep integer arithmetic signed
    if outer:
        ia = lor // n_t
        it = lor - ia * n_t
    else:
        ia = lor
        it = lor
    return (trans[it, 0], trans[it, 1], axial[ia, 0], trans[it, 2], trans[it, 3], axial[ia, 1])


# ---------------------------------------------------------------------------------------------
# 3D kernels
# ---------------------------------------------------------------------------------------------
@njit(cache=True, inline="always")
def _corner3d(i, ca, sa, cb, sb, offset, sk, s_a, s_b):
    """Flat index of the lower interpolation corner at plane ``i`` and the two weights."""
    fa = ca + i * sa
    fb = cb + i * sb
    ia = int(math.floor(fa))
    ib = int(math.floor(fb))
    return offset + i * sk + ia * s_a + ib * s_b, fa - ia, fb - ib


@njit(cache=True, inline="always")
def _bilinear(img, base, s_a, s_b, wa, wb):
    return ((1.0 - wa) * ((1.0 - wb) * img[base] + wb * img[base + s_b])
            + wa * ((1.0 - wb) * img[base + s_a] + wb * img[base + s_a + s_b]))


@njit(cache=True, inline="always")
def _spread_bilinear(img, base, s_a, s_b, wa, wb, value):
    va = value * (1.0 - wa)
    vb = value * wa
    img[base] += va * (1.0 - wb)
    img[base + s_b] += va * wb
    img[base + s_a] += vb * (1.0 - wb)
    img[base + s_a + s_b] += vb * wb


@njit(cache=True, inline="always")
def _line_fwd3d(img, strides, shape, origin, vs, x0, y0, z0, x1, y1, z1):
    k, a, b, lo, hi, ca, sa, cb, sb, weight, _, _ = _setup3d(shape, origin, vs, x0, y0, z0, x1, y1, z1)
    sk, s_a, s_b = strides[k], strides[a], strides[b]
    offset = PAD * (strides[0] + strides[1] + strides[2])
    acc = 0.0
    for i in range(lo, hi + 1):
        base, wa, wb = _corner3d(i, ca, sa, cb, sb, offset, sk, s_a, s_b)
        acc += _bilinear(img, base, s_a, s_b, wa, wb)
    return acc * weight


@njit(cache=True, inline="always")
def _line_adj3d(img, strides, shape, origin, vs, x0, y0, z0, x1, y1, z1, value):
    k, a, b, lo, hi, ca, sa, cb, sb, weight, _, _ = _setup3d(shape, origin, vs, x0, y0, z0, x1, y1, z1)
    sk, s_a, s_b = strides[k], strides[a], strides[b]
    offset = PAD * (strides[0] + strides[1] + strides[2])
    v = value * weight
    if v == 0.0:
        return
    for i in range(lo, hi + 1):
        base, wa, wb = _corner3d(i, ca, sa, cb, sb, offset, sk, s_a, s_b)
        _spread_bilinear(img, base, s_a, s_b, wa, wb, v)


@njit(parallel=True, cache=True)
def forward3d(img_pad, strides, shape, origin, vs, trans, axial, outer, out):
    """Forward-project a padded, flattened 3D image into ``out`` (one value per LOR)."""
    n_t = trans.shape[0]
    for lor in prange(out.shape[0]):
        x0, y0, z0, x1, y1, z1 = _endpoints(trans, axial, outer, n_t, lor)
        out[lor] = _line_fwd3d(img_pad, strides, shape, origin, vs, x0, y0, z0, x1, y1, z1)


@njit(parallel=True, cache=True)
def adjoint3d(y, strides, shape, origin, vs, trans, axial, outer, buffers):
    """Back-project ``y`` into per-thread padded flat images ``buffers`` (n_chunks, n_padded)."""
    n_t = trans.shape[0]
    n_chunks = buffers.shape[0]
    n_lors = y.shape[0]
    for c in prange(n_chunks):
        buf = buffers[c]
        for lor in range(c * n_lors // n_chunks, (c + 1) * n_lors // n_chunks):
            x0, y0, z0, x1, y1, z1 = _endpoints(trans, axial, outer, n_t, lor)
            _line_adj3d(buf, strides, shape, origin, vs, x0, y0, z0, x1, y1, z1, y[lor])


# ---------------------------------------------------------------------------------------------
# 2D kernels
# ---------------------------------------------------------------------------------------------
@njit(cache=True, inline="always")
def _line_fwd2d(img, strides, shape, origin, vs, x0, y0, x1, y1):
    k, a, lo, hi, ca, sa, weight = _setup2d(shape, origin, vs, x0, y0, x1, y1)
    sk, s_a = strides[k], strides[a]
    offset = PAD * (strides[0] + strides[1])
    acc = 0.0
    for i in range(lo, hi + 1):
        fa = ca + i * sa
        ia = int(math.floor(fa))
        wa = fa - ia
        base = offset + i * sk + ia * s_a
        acc += (1.0 - wa) * img[base] + wa * img[base + s_a]
    return acc * weight


@njit(cache=True, inline="always")
def _line_adj2d(img, strides, shape, origin, vs, x0, y0, x1, y1, value):
    k, a, lo, hi, ca, sa, weight = _setup2d(shape, origin, vs, x0, y0, x1, y1)
    sk, s_a = strides[k], strides[a]
    offset = PAD * (strides[0] + strides[1])
    v = value * weight
    if v == 0.0:
        return
    for i in range(lo, hi + 1):
        fa = ca + i * sa
        ia = int(math.floor(fa))
        wa = fa - ia
        base = offset + i * sk + ia * s_a
        img[base] += v * (1.0 - wa)
        img[base + s_a] += v * wa


@njit(parallel=True, cache=True)
def forward2d(img_pad, strides, shape, origin, vs, trans, out):
    """Forward-project a padded, flattened 2D image into ``out`` (one value per LOR)."""
    for lor in prange(out.shape[0]):
        out[lor] = _line_fwd2d(img_pad, strides, shape, origin, vs,
                               trans[lor, 0], trans[lor, 1], trans[lor, 2], trans[lor, 3])


@njit(parallel=True, cache=True)
def adjoint2d(y, strides, shape, origin, vs, trans, buffers):
    """Back-project ``y`` into per-thread padded flat 2D images ``buffers``."""
    n_chunks = buffers.shape[0]
    n_lors = y.shape[0]
    for c in prange(n_chunks):
        buf = buffers[c]
        for lor in range(c * n_lors // n_chunks, (c + 1) * n_lors // n_chunks):
            _line_adj2d(buf, strides, shape, origin, vs,
                        trans[lor, 0], trans[lor, 1], trans[lor, 2], trans[lor, 3], y[lor])


# ---------------------------------------------------------------------------------------------
# 3D TOF kernels (2D TOF runs through them with a singleton z axis)
#
# tof = (first_edge_mm, bin_width_mm, sigma_mm, reach_mm, 1 / bin_width_mm, 1 / (sqrt(2) sigma))
# with reach = n_sigmas * sigma. A sample
# at t (mm from the LOR midpoint) adds to the bins from the one containing t - reach to the one
# containing t + reach the Gaussian integral 0.5 * (erf((e_hi - t) / (sqrt2 sigma)) -
# erf((e_lo - t) / (sqrt2 sigma))).
# ---------------------------------------------------------------------------------------------
@njit(cache=True, inline="always")
def _tof_window(t, tof, n_bins):
    first, reach, inv_width = tof[0], tof[3], tof[4]
    b_lo = int(math.floor((t - reach - first) * inv_width))
    b_hi = int(math.floor((t + reach - first) * inv_width))
    return max(b_lo, 0), min(b_hi, n_bins - 1)


@njit(cache=True, inline="always")
def _line_fwd3d_tof(img, strides, shape, origin, vs, x0, y0, z0, x1, y1, z1, tof, out_row):
    k, a, b, lo, hi, ca, sa, cb, sb, weight, tc, ts = _setup3d(shape, origin, vs, x0, y0, z0, x1, y1, z1)
    sk, s_a, s_b = strides[k], strides[a], strides[b]
    offset = PAD * (strides[0] + strides[1] + strides[2])
    n_bins = out_row.shape[0]
    inv = tof[5]
    for i in range(lo, hi + 1):
        base, wa, wb = _corner3d(i, ca, sa, cb, sb, offset, sk, s_a, s_b)
        v = _bilinear(img, base, s_a, s_b, wa, wb)
        if v == 0.0:
            continue
        t = tc + i * ts
        b_lo, b_hi = _tof_window(t, tof, n_bins)
        cdf_lo = math.erf((tof[0] + b_lo * tof[1] - t) * inv)
        for bin_ in range(b_lo, b_hi + 1):
            cdf_hi = math.erf((tof[0] + (bin_ + 1) * tof[1] - t) * inv)
            out_row[bin_] += 0.5 * v * (cdf_hi - cdf_lo)
            cdf_lo = cdf_hi
    for bin_ in range(n_bins):
        out_row[bin_] *= weight


@njit(cache=True, inline="always")
def _line_adj3d_tof(img, strides, shape, origin, vs, x0, y0, z0, x1, y1, z1, tof, y_row):
    k, a, b, lo, hi, ca, sa, cb, sb, weight, tc, ts = _setup3d(shape, origin, vs, x0, y0, z0, x1, y1, z1)
    sk, s_a, s_b = strides[k], strides[a], strides[b]
    offset = PAD * (strides[0] + strides[1] + strides[2])
    n_bins = y_row.shape[0]
    inv = tof[5]
    nonzero = False
    for bin_ in range(n_bins):
        if y_row[bin_] != 0.0:
            nonzero = True
            break
    if not nonzero:  # measured TOF sinograms are sparse: skip empty LORs
        return
    for i in range(lo, hi + 1):
        t = tc + i * ts
        b_lo, b_hi = _tof_window(t, tof, n_bins)
        g = 0.0
        cdf_lo = math.erf((tof[0] + b_lo * tof[1] - t) * inv)
        for bin_ in range(b_lo, b_hi + 1):
            cdf_hi = math.erf((tof[0] + (bin_ + 1) * tof[1] - t) * inv)
            g += y_row[bin_] * (cdf_hi - cdf_lo)
            cdf_lo = cdf_hi
        g *= 0.5 * weight
        if g == 0.0:
            continue
        base, wa, wb = _corner3d(i, ca, sa, cb, sb, offset, sk, s_a, s_b)
        _spread_bilinear(img, base, s_a, s_b, wa, wb, g)


@njit(parallel=True, cache=True)
def forward3d_tof(img_pad, strides, shape, origin, vs, trans, axial, outer, tof, out):
    """TOF sinogram forward projection into ``out`` (n_lors, n_bins), which must be zeroed."""
    n_t = trans.shape[0]
    for lor in prange(out.shape[0]):
        x0, y0, z0, x1, y1, z1 = _endpoints(trans, axial, outer, n_t, lor)
        _line_fwd3d_tof(img_pad, strides, shape, origin, vs, x0, y0, z0, x1, y1, z1, tof, out[lor])


@njit(parallel=True, cache=True)
def adjoint3d_tof(y, strides, shape, origin, vs, trans, axial, outer, tof, buffers):
    """TOF sinogram back projection of ``y`` (n_lors, n_bins) into per-thread padded images."""
    n_t = trans.shape[0]
    n_chunks = buffers.shape[0]
    n_lors = y.shape[0]
    for c in prange(n_chunks):
        buf = buffers[c]
        for lor in range(c * n_lors // n_chunks, (c + 1) * n_lors // n_chunks):
            x0, y0, z0, x1, y1, z1 = _endpoints(trans, axial, outer, n_t, lor)
            _line_adj3d_tof(buf, strides, shape, origin, vs, x0, y0, z0, x1, y1, z1, tof, y[lor])


@njit(parallel=True, cache=True)
def _max_tof_offset3d(shape, origin, vs, trans, axial, outer, n_lors, n_chunks):
    n_t = trans.shape[0]
    result = np.zeros(n_chunks)
    for c in prange(n_chunks):
        m = 0.0
        for lor in range(c * n_lors // n_chunks, (c + 1) * n_lors // n_chunks):
            x0, y0, z0, x1, y1, z1 = _endpoints(trans, axial, outer, n_t, lor)
            r = _setup3d(shape, origin, vs, x0, y0, z0, x1, y1, z1)
            if r[3] <= r[4]:
                m = max(m, abs(r[10] + r[3] * r[11]), abs(r[10] + r[4] * r[11]))
        result[c] = m
    return result


def max_sample_offset_mm(grid, tables) -> float:
    """Largest distance (mm) of any projection sample from its LOR's midpoint.

    TOF bins must cover at least this far on both sides of the midpoint, or samples of the image
    would fall outside every bin.
    """
    shape, origin, vs, trans, axial, outer = as_3d(grid, tables)
    n_lors = tables.n_lors
    chunks = max(1, min(numba.get_num_threads(), n_lors))
    return float(_max_tof_offset3d(shape, origin, vs, trans, axial, outer, n_lors, chunks).max())


def as_3d(grid, tables):
    """Kernel arguments of a 2D or 3D grid and its tables in 3D form.

    A 2D problem becomes a 3D one with a singleton z axis at z = 0 (1 mm thick) and LORs at
    z = 0: the stepping axis is never z and the z interpolation weight is exactly 0, so the
    results equal the 2D method's.
    """
    if grid.ndim == 3:
        shape = np.asarray(grid.shape, dtype=np.int64)
        origin = np.asarray(grid.origin_mm, dtype=np.float64)
        vs = np.asarray(grid.voxel_size_mm, dtype=np.float64)
        axial = np.ascontiguousarray(tables.axial, dtype=np.float64)
        outer = bool(tables.outer)
    else:
        shape = np.asarray(tuple(grid.shape) + (1,), dtype=np.int64)
        origin = np.asarray(tuple(grid.origin_mm) + (0.0,), dtype=np.float64)
        vs = np.asarray(tuple(grid.voxel_size_mm) + (1.0,), dtype=np.float64)
        outer = bool(tables.outer)
        axial = np.zeros((1, 2)) if outer else np.zeros((tables.transaxial.shape[0], 2))
    trans = np.ascontiguousarray(tables.transaxial, dtype=np.float64)
    return shape, origin, vs, trans, axial, outer


# ---------------------------------------------------------------------------------------------
# Array-level helpers (numpy in, numpy out)
# ---------------------------------------------------------------------------------------------
def padded_strides(shape) -> np.ndarray:
    """Element strides of the C-order image padded by PAD voxels on every side."""
    padded = [n + 2 * PAD for n in shape]
    strides = np.ones(len(shape), dtype=np.int64)
    for k in range(len(shape) - 2, -1, -1):
        strides[k] = strides[k + 1] * padded[k + 1]
    return strides


def pad_image(x: np.ndarray) -> np.ndarray:
    """Copy ``x`` into a zero buffer padded by PAD voxels per side; returned flattened."""
    padded = np.zeros([n + 2 * PAD for n in x.shape], dtype=x.dtype)
    padded[tuple(slice(PAD, PAD + n) for n in x.shape)] = x
    return padded.reshape(-1)


def crop_padded(flat: np.ndarray, shape) -> np.ndarray:
    """Inverse of :func:`pad_image`: the interior of a padded flat buffer, C-contiguous."""
    padded = flat.reshape([n + 2 * PAD for n in shape])
    return np.ascontiguousarray(padded[tuple(slice(PAD, PAD + n) for n in shape)])


def n_adjoint_chunks(n_lors: int) -> int:
    """One chunk (and one private image buffer) per numba thread, never more than LORs."""
    return max(1, min(numba.get_num_threads(), n_lors))


@njit(parallel=True, cache=True)
def _count3d(shape, origin, vs, trans, axial, outer, n_lors):
    n_t = trans.shape[0]
    total = 0
    for lor in prange(n_lors):
        x0, y0, z0, x1, y1, z1 = _endpoints(trans, axial, outer, n_t, lor)
        r = _setup3d(shape, origin, vs, x0, y0, z0, x1, y1, z1)
        total += max(0, r[4] - r[3] + 1)
    return total


@njit(parallel=True, cache=True)
def _count2d(shape, origin, vs, trans):
    total = 0
    for lor in prange(trans.shape[0]):
        r = _setup2d(shape, origin, vs, trans[lor, 0], trans[lor, 1], trans[lor, 2], trans[lor, 3])
        total += max(0, r[3] - r[2] + 1)
    return total


def count_samples(grid, tables) -> int:
    """Number of interpolation samples (LOR-plane crossings) one projection visits.

    Planes whose samples fall entirely outside the grid are not counted; this is the work unit
    behind the LOR-samples/s throughput the benchmarks report.
    """
    shape = np.asarray(grid.shape, dtype=np.int64)
    origin = np.asarray(grid.origin_mm, dtype=np.float64)
    vs = np.asarray(grid.voxel_size_mm, dtype=np.float64)
    trans = np.ascontiguousarray(tables.transaxial, dtype=np.float64)
    if tables.axial is None:
        return int(_count2d(shape, origin, vs, trans))
    axial = np.ascontiguousarray(tables.axial, dtype=np.float64)
    return int(_count3d(shape, origin, vs, trans, axial, bool(tables.outer), tables.n_lors))

"""Numba kernels of the TOF single scatter simulation (:mod:`pettk.scatter.sss_tof`): the sum over
scatter points per coarse detector pair and TOF bin, and the interpolation of that table to a TOF
sinogram. They mirror :mod:`pettk.scatter._kernels` with a trailing TOF-bin axis.
"""

from __future__ import annotations

import math

from numba import njit, prange

from ._kernels import _lut

#: The Gaussian is integrated over the bins within this many standard deviations of its mean
#: (the mass beyond is 2e-9).
N_SD = 6.0


@njit(cache=True, inline="always")
def _add_gaussian(acc, amp, mean, sd, edge0, width):
    """``acc[j] += amp *`` the integral of ``N(mean, sd^2)`` over bin ``j`` (uniform bins from ``edge0``)."""
    n = acc.shape[0]
    j0 = max(0, int(math.floor((mean - N_SD * sd - edge0) / width)))
    j1 = min(n - 1, int(math.floor((mean + N_SD * sd - edge0) / width)))
    if j1 < j0:
        return
    scale = 1.0 / (math.sqrt(2.0) * sd)
    lo = math.erf((edge0 + j0 * width - mean) * scale)
    for j in range(j0, j1 + 1):
        hi = math.erf((edge0 + (j + 1) * width - mean) * scale)
        acc[j] += 0.5 * amp * (hi - lo)
        lo = hi


@njit(parallel=True, cache=True)
def pair_sums_tof(pairs, ux, uy, uz, dist, att, act, chunk_frac, chunk_mean, chunk_var, weight, kn_eff,
                  mu_scale, edge0, width, sigma2, total, out):
    """TOF single scatter on detector pairs, normals factored out as in ``_kernels.pair_sums``.

    For the scatter point ``S`` and an annihilation at distance ``l`` from ``S`` on the leg towards
    ``A`` (the photon reaching ``A`` is unscattered), the arrival-time difference puts the event at
    ``(R_AS - R_BS) / 2 - l`` from the pair's midpoint towards ``B``; on the leg towards ``B`` at
    ``(R_AS - R_BS) / 2 + l`` (Watson 2007). Each leg is cut into chunks; a chunk holding the
    fraction ``chunk_frac`` of the leg's activity, at mean distance ``chunk_mean`` with variance
    ``chunk_var``, adds the Gaussian of variance ``sigma2 + chunk_var`` integrated over the bins.

    Parameters (float64 but ``pairs``)
    ----------
    dist : (n_det, n_s) ``|D - S|`` mm
    chunk_frac, chunk_mean, chunk_var : (n_det, n_s, n_chunks) --, mm, mm^2
    edge0, width : first bin edge and bin width, mm from the midpoint towards ``B``
    sigma2 : TOF kernel variance, mm^2
    total : (n_pairs, 4) the non-TOF sums (as ``pair_sums``); out : (n_pairs, n_tof, 4)
    Other parameters as ``_kernels.pair_sums``.
    """
    n_s = weight.shape[0]
    n_tof = out.shape[1]
    n_chunks = chunk_frac.shape[2]
    for p in prange(pairs.shape[0]):
        a = pairs[p, 0]
        b = pairs[p, 1]
        acc = out[p, :, 0].copy()
        for j in range(4):
            total[p, j] = 0.0
            for t in range(n_tof):
                out[p, t, j] = 0.0
        for s in range(n_s):
            c = -(ux[a, s] * ux[b, s] + uy[a, s] * uy[b, s] + uz[a, s] * uz[b, s])
            k = _lut(kn_eff, c)
            if k == 0.0:
                continue
            r = _lut(mu_scale, c)
            ma = att[a, s]
            mb = att[b, s]
            f = weight[s] * k / (dist[a, s] ** 2 * dist[b, s] ** 2)
            fa = f * act[a, s] * math.exp(-(ma + r * mb))
            fb = f * act[b, s] * math.exp(-(r * ma + mb))
            mxx = ux[a, s] * ux[b, s]
            mxy = ux[a, s] * uy[b, s]
            myx = uy[a, s] * ux[b, s]
            myy = uy[a, s] * uy[b, s]
            both = fa + fb
            total[p, 0] += both * mxx
            total[p, 1] += both * mxy
            total[p, 2] += both * myx
            total[p, 3] += both * myy
            half = 0.5 * (dist[a, s] - dist[b, s])
            acc[:] = 0.0
            for i in range(n_chunks):
                if chunk_frac[a, s, i] > 0.0:
                    _add_gaussian(acc, fa * chunk_frac[a, s, i], half - chunk_mean[a, s, i],
                                  math.sqrt(sigma2 + chunk_var[a, s, i]), edge0, width)
                if chunk_frac[b, s, i] > 0.0:
                    _add_gaussian(acc, fb * chunk_frac[b, s, i], half + chunk_mean[b, s, i],
                                  math.sqrt(sigma2 + chunk_var[b, s, i]), edge0, width)
            for t in range(n_tof):
                g = acc[t]
                out[p, t, 0] += g * mxx
                out[p, t, 1] += g * mxy
                out[p, t, 2] += g * myx
                out[p, t, 3] += g * myy


@njit(parallel=True, cache=True)
def transaxial_stage_tof(table, crystal_pairs, t_lo, t_hi, t_w, normals, out):
    """``_kernels.transaxial_stage`` per TOF bin: ``table`` is ``(n_za, n_t, n_za, n_t, 1 + 4 n_tof)``
    (``log q``, then ``Q_t / q`` for every bin ``t``), ``out`` is ``(n_za, n_za, n_views, n_radial, n_tof)``."""
    n_za = table.shape[0]
    n_tof = out.shape[4]
    n_views = crystal_pairs.shape[0]
    n_radial = crystal_pairs.shape[1]
    for zz in prange(n_za * n_za):
        za = zz // n_za
        zb = zz - za * n_za
        q = table[0, 0, 0, 0, 1:].copy()
        for v in range(n_views):
            for r in range(n_radial):
                ca = crystal_pairs[v, r, 0]
                cb = crystal_pairs[v, r, 1]
                ta = (t_lo[ca], t_hi[ca])
                va = (1.0 - t_w[ca], t_w[ca])
                tb = (t_lo[cb], t_hi[cb])
                vb = (1.0 - t_w[cb], t_w[cb])
                lq = 0.0
                q[:] = 0.0
                for j in range(2):
                    for m in range(2):
                        w = va[j] * vb[m]
                        if w == 0.0:
                            continue
                        lq += w * table[za, ta[j], zb, tb[m], 0]
                        q += w * table[za, ta[j], zb, tb[m], 1:]
                nax = normals[ca, 0]
                nay = normals[ca, 1]
                nbx = normals[cb, 0]
                nby = normals[cb, 1]
                e = math.exp(lq)
                for t in range(n_tof):
                    i = 4 * t
                    out[za, zb, v, r, t] = e * (nax * (q[i] * nbx + q[i + 1] * nby)
                                                + nay * (q[i + 2] * nbx + q[i + 3] * nby))

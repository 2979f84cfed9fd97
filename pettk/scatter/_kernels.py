"""Numba kernels of the single scatter simulation: the sum over scatter points for every coarse
detector pair, and the interpolation of the coarse detector-pair table to a sinogram.

Both are plain loops parallelised over their outer index (pairs, sinogram planes); the geometry
per (detector, scatter point) is precomputed by :mod:`pettk.scatter.sss` so the inner loop is a
few loads, one table look-up and two exponentials.
"""

from __future__ import annotations

import math

from numba import njit, prange


@njit(cache=True, inline="always")
def _lut(table, c):
    """Linear interpolation of ``table`` sampled uniformly on cos theta in [-1, 1]."""
    n = table.shape[0] - 1
    t = (c + 1.0) * 0.5 * n
    if t <= 0.0:
        return table[0]
    if t >= n:
        return table[n]
    i = int(t)
    f = t - i
    return table[i] * (1.0 - f) + table[i + 1] * f


@njit(parallel=True, cache=True)
def pair_sums(pairs, ux, uy, uz, inv_d2, att, act, weight, kn_eff, mu_scale, out):
    """Single scatter on detector pairs (Watson 2000, eq. 1) with the detector normals factored out.

    The detectors' cross sections seen from S are ``a cos = a n_D . u_DS`` with ``n_D`` the
    (transaxial) crystal normal, so the sum over S is the bilinear form ``n_A^T M_AB n_B`` with

        M_AB = sum_S F_S(A, B) u_AS u_BS^T   (2 x 2, transaxial components),

    which does not depend on the normals: it stays smooth where the polygon's normal jumps from
    one side to the next, so it can be interpolated between coarse detectors.

    Parameters (all float64 but ``pairs``)
    ----------
    pairs : (n_pairs, 2) int64, detector indices ``(A, B)``
    ux, uy, uz : (n_det, n_s) unit vectors from each scatter point to each detector
    inv_d2 : (n_det, n_s) ``1 / |D - S|^2``
    att : (n_det, n_s) line integral of mu (511 keV) from the scatter point to the detector
    act : (n_det, n_s) line integral of the activity from the scatter point to the detector
    weight : (n_s,) ``mu_S V_S``
    kn_eff : (n_lut,) ``dsigma/dOmega(cos) / sigma(511) * eps(E') / eps(511)`` on cos in [-1, 1]
    mu_scale : (n_lut,) ``mu(E') / mu(511)`` on the same cosines
    out : (n_pairs, 4) ``M_xx, M_xy, M_yx, M_yy``
    """
    n_s = weight.shape[0]
    for p in prange(pairs.shape[0]):
        a = pairs[p, 0]
        b = pairs[p, 1]
        mxx = 0.0
        mxy = 0.0
        myx = 0.0
        myy = 0.0
        for s in range(n_s):
            # photon travelling A -> S -> B: cos theta = (S - A).(B - S) / (|S - A| |B - S|)
            c = -(ux[a, s] * ux[b, s] + uy[a, s] * uy[b, s] + uz[a, s] * uz[b, s])
            k = _lut(kn_eff, c)
            if k == 0.0:
                continue
            r = _lut(mu_scale, c)
            ma = att[a, s]
            mb = att[b, s]
            both = act[a, s] * math.exp(-(ma + r * mb)) + act[b, s] * math.exp(-(r * ma + mb))
            f = weight[s] * k * inv_d2[a, s] * inv_d2[b, s] * both
            mxx += f * ux[a, s] * ux[b, s]
            mxy += f * ux[a, s] * uy[b, s]
            myx += f * uy[a, s] * ux[b, s]
            myy += f * uy[a, s] * uy[b, s]
        out[p, 0] = mxx
        out[p, 1] = mxy
        out[p, 2] = myx
        out[p, 3] = myy


@njit(parallel=True, cache=True)
def interpolate_pairs(table, plane_rings, crystal_pairs, t_lo, t_hi, t_w, z_lo, z_hi, z_w, xy, normals, ring_z,
                      out):
    """Interpolate ``Q = M_AB R_AB^2`` between coarse detectors and contract it with every LOR's
    own normals: ``s_AB = n_A^T Q n_B / (cos_A cos_B)``.

    ``Q`` is stored as a positive scale ``q = r_A^T Q r_B`` (``r`` the crystals' radial directions,
    smooth around the ring) and the ratio ``Q / q``: ``log q`` is interpolated (the scatter tails
    fall off nearly exponentially where the energy window cuts large scattering angles), ``Q / q``
    linearly.

    Parameters
    ----------
    table : (n_za, n_t, n_za, n_t, 5) ``log q, Q_xx / q, Q_xy / q, Q_yx / q, Q_yy / q`` on coarse
        pairs ``[ring_a, det_a, ring_b, det_b]``
    plane_rings : (n_planes, 2) int64 ring pair of every plane
    crystal_pairs : (n_views, n_radial, 2) int64 in-ring crystals of every bin
    t_lo, t_hi, t_w : (n_crystals,) coarse neighbours of every crystal and the weight of ``t_hi``
    z_lo, z_hi, z_w : (n_rings,) the same for rings (quadrilinear interpolation in all four)
    xy, normals : (n_crystals, 2) crystal positions (mm) and outward unit normals
    ring_z : (n_rings,) ring positions (mm)
    out : (n_planes, n_views, n_radial)
    """
    n_views = crystal_pairs.shape[0]
    n_radial = crystal_pairs.shape[1]
    for p in prange(plane_rings.shape[0]):
        ra = plane_rings[p, 0]
        rb = plane_rings[p, 1]
        za = (z_lo[ra], z_hi[ra])
        wa = (1.0 - z_w[ra], z_w[ra])
        zb = (z_lo[rb], z_hi[rb])
        wb = (1.0 - z_w[rb], z_w[rb])
        dz = ring_z[ra] - ring_z[rb]
        for v in range(n_views):
            for r in range(n_radial):
                ca = crystal_pairs[v, r, 0]
                cb = crystal_pairs[v, r, 1]
                dx = xy[ca, 0] - xy[cb, 0]
                dy = xy[ca, 1] - xy[cb, 1]
                length = math.sqrt(dx * dx + dy * dy + dz * dz)
                cos_a = (normals[ca, 0] * dx + normals[ca, 1] * dy) / max(length, 1e-300)
                cos_b = -(normals[cb, 0] * dx + normals[cb, 1] * dy) / max(length, 1e-300)
                if cos_a <= 1e-6 or cos_b <= 1e-6:
                    out[p, v, r] = 0.0
                    continue
                ta = (t_lo[ca], t_hi[ca])
                va = (1.0 - t_w[ca], t_w[ca])
                tb = (t_lo[cb], t_hi[cb])
                vb = (1.0 - t_w[cb], t_w[cb])
                lq = 0.0
                q0 = 0.0
                q1 = 0.0
                q2 = 0.0
                q3 = 0.0
                for i in range(2):
                    for j in range(2):
                        for k in range(2):
                            for m in range(2):
                                w = wa[i] * va[j] * wb[k] * vb[m]
                                if w == 0.0:
                                    continue
                                lq += w * table[za[i], ta[j], zb[k], tb[m], 0]
                                q0 += w * table[za[i], ta[j], zb[k], tb[m], 1]
                                q1 += w * table[za[i], ta[j], zb[k], tb[m], 2]
                                q2 += w * table[za[i], ta[j], zb[k], tb[m], 3]
                                q3 += w * table[za[i], ta[j], zb[k], tb[m], 4]
                scale = math.exp(lq)
                nax = normals[ca, 0]
                nay = normals[ca, 1]
                nbx = normals[cb, 0]
                nby = normals[cb, 1]
                s = nax * (q0 * nbx + q1 * nby) + nay * (q2 * nbx + q3 * nby)
                out[p, v, r] = scale * s / (cos_a * cos_b)

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
def transaxial_stage(table, crystal_pairs, t_lo, t_hi, t_w, normals, out):
    """First interpolation stage: every coarse ring pair to every transaxial bin ``(view, radial)``.

    ``Q`` (a 2 x 2 matrix per coarse detector pair, see :func:`pair_sums`) is stored as a positive
    scale ``q = r_A^T Q r_B`` (``r`` the crystals' radial directions, smooth around the ring) and
    the ratio ``Q / q``: ``log q`` is interpolated (scatter tails fall off nearly exponentially
    where the energy window cuts large scattering angles), ``Q / q`` linearly and contracted with
    the bin's own crystal normals: the result is ``q n_A^T (Q / q) n_B``. Scatter varies slowly
    along the axis, so the axial stage interpolates that result linearly.

    Parameters
    ----------
    table : (n_za, n_t, n_za, n_t, 5) ``log q, Q_xx / q, Q_xy / q, Q_yx / q, Q_yy / q`` on coarse
        pairs ``[ring_a, det_a, ring_b, det_b]``
    crystal_pairs : (n_views, n_radial, 2) int64 in-ring crystals of every bin
    t_lo, t_hi, t_w : (n_crystals,) coarse neighbours of every crystal and the weight of ``t_hi``
    normals : (n_crystals, 2) outward unit normals of the crystals
    out : (n_za, n_za, n_views, n_radial) ``q n_A^T (Q / q) n_B``
    """
    n_za = table.shape[0]
    n_views = crystal_pairs.shape[0]
    n_radial = crystal_pairs.shape[1]
    for zz in prange(n_za * n_za):
        za = zz // n_za
        zb = zz - za * n_za
        for v in range(n_views):
            for r in range(n_radial):
                ca = crystal_pairs[v, r, 0]
                cb = crystal_pairs[v, r, 1]
                ta = (t_lo[ca], t_hi[ca])
                va = (1.0 - t_w[ca], t_w[ca])
                tb = (t_lo[cb], t_hi[cb])
                vb = (1.0 - t_w[cb], t_w[cb])
                lq = 0.0
                q0 = 0.0
                q1 = 0.0
                q2 = 0.0
                q3 = 0.0
                for j in range(2):
                    for m in range(2):
                        w = va[j] * vb[m]
                        if w == 0.0:
                            continue
                        lq += w * table[za, ta[j], zb, tb[m], 0]
                        q0 += w * table[za, ta[j], zb, tb[m], 1]
                        q1 += w * table[za, ta[j], zb, tb[m], 2]
                        q2 += w * table[za, ta[j], zb, tb[m], 3]
                        q3 += w * table[za, ta[j], zb, tb[m], 4]
                nbx = normals[cb, 0]
                nby = normals[cb, 1]
                out[za, zb, v, r] = math.exp(lq) * (normals[ca, 0] * (q0 * nbx + q1 * nby)
                                                    + normals[ca, 1] * (q2 * nbx + q3 * nby))


@njit(parallel=True, cache=True)
def axial_stage(stage, plane_rings, z_lo, z_hi, z_w, inv_geom_xy, dxy2, ring_z, out):
    """Second stage: linear interpolation between coarse rings and the LOR's normalisation,
    ``s = q n_A^T (Q / q) n_B / (cos_A cos_B)``.

    ``cos_A cos_B = cos_A^xy cos_B^xy |d_xy|^2 / (|d_xy|^2 + dz^2)`` with the transaxial parts
    precomputed: ``inv_geom_xy = 1 / (cos_A^xy cos_B^xy |d_xy|^2)`` (0 where a cosine vanishes)
    and ``dxy2 = |d_xy|^2``, both ``(n_views, n_radial)``.

    Parameters
    ----------
    stage : (n_za, n_za, n_views, n_radial, n_tof) output of :func:`transaxial_stage` with a trailing
        axis (``stage[..., None]`` without TOF; ``n_tof`` bins for the TOF SSS)
    plane_rings : (n_planes, 2) int64 ring pair of every plane
    z_lo, z_hi, z_w : (n_rings,) coarse neighbours of every ring and the weight of ``z_hi``
    ring_z : (n_rings,) ring positions (mm)
    out : (n_planes, n_views, n_radial, n_tof), float32 or float64 (``out[..., None]`` without TOF)
    """
    n_views = stage.shape[2]
    n_radial = stage.shape[3]
    n_tof = stage.shape[4]
    for p in prange(plane_rings.shape[0]):
        ra = plane_rings[p, 0]
        rb = plane_rings[p, 1]
        za = (z_lo[ra], z_hi[ra])
        wa = (1.0 - z_w[ra], z_w[ra])
        zb = (z_lo[rb], z_hi[rb])
        wb = (1.0 - z_w[rb], z_w[rb])
        dz = ring_z[ra] - ring_z[rb]
        dz2 = dz * dz
        s00 = stage[za[0], zb[0]]
        s01 = stage[za[0], zb[1]]
        s10 = stage[za[1], zb[0]]
        s11 = stage[za[1], zb[1]]
        w00 = wa[0] * wb[0]
        w01 = wa[0] * wb[1]
        w10 = wa[1] * wb[0]
        w11 = wa[1] * wb[1]
        for v in range(n_views):
            for r in range(n_radial):
                g = inv_geom_xy[v, r] * (dxy2[v, r] + dz2)
                for t in range(n_tof):
                    val = (w00 * s00[v, r, t] + w01 * s01[v, r, t]) + (w10 * s10[v, r, t] + w11 * s11[v, r, t])
                    out[p, v, r, t] = val * g

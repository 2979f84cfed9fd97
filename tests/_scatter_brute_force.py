"""An independent brute-force single-scatter integral, the reference for pettk.scatter's SSS.

Every voxel with mu > 0 is a scatter point (at its centre, weight mu * voxel volume), every crystal
of every ring is a detector (no coarse set, no interpolation), and every line integral is a
midpoint-rule sum of 32 multilinear samples (torch.nn.functional.grid_sample, not pettk's projector)
over the part of the segment inside the image box. The Klein-Nishina total cross section comes
from numerical quadrature of the differential one (scipy.integrate.quad), the window efficiency
from scipy.special.ndtr. The formula is Watson's (IEEE TNS 47(4), 2000, eq. 1) divided by the
pair's true-coincidence geometric factor, as documented in pettk.scatter.sss.
"""

import numpy as np
import torch
from scipy import integrate, special

ME = 510.99895  # keV
N_SAMPLES = 32


def _kn(c, e=ME):
    p = 1.0 / (1.0 + (e / ME) * (1.0 - c))
    return 0.5 * p * p * (p + 1.0 / p - (1.0 - c * c))


def _kn_total(e):
    return 2.0 * np.pi * integrate.quad(lambda c: _kn(c, e), -1.0, 1.0, epsabs=0, epsrel=1e-12)[0]


def _efficiency(e, lower, upper, fwhm):
    sigma = fwhm * np.sqrt(ME * e) / (2.0 * np.sqrt(2.0 * np.log(2.0)))
    return special.ndtr((upper - e) / sigma) - special.ndtr((lower - e) / sigma)


def _line_integrals(image, grid, starts, end):
    """Integrals of each image in ``image`` from each of ``starts`` (n, nd) to the point ``end`` (nd,), mm."""
    nd = grid.ndim
    vs = np.asarray(grid.voxel_size_mm)
    lo = np.asarray(grid.origin_mm) - 0.5 * vs
    hi = lo + np.asarray(grid.extent_mm)
    d = end[None, :] - starts
    length = np.linalg.norm(d, axis=1)
    # the part of the segment (t in [0, 1]) inside the box [lo, hi]
    with np.errstate(divide="ignore", invalid="ignore"):
        t0 = (lo[None] - starts) / d
        t1 = (hi[None] - starts) / d
    tmin = np.where(d == 0, -np.inf, np.minimum(t0, t1)).max(axis=1)
    tmax = np.where(d == 0, np.inf, np.maximum(t0, t1)).min(axis=1)
    ta, tb = np.maximum(tmin, 0.0), np.minimum(tmax, 1.0)
    tb = np.maximum(tb, ta)
    frac = (np.arange(N_SAMPLES) + 0.5) / N_SAMPLES
    t = ta[:, None] + (tb - ta)[:, None] * frac[None, :]
    pts = starts[:, None, :] + t[..., None] * d[:, None, :]
    idx = (pts - np.asarray(grid.origin_mm)) / vs
    # grid_sample wants (x=last axis, ..., first axis) in [-1, 1] over the voxel centres
    norm = (2.0 * idx / (np.asarray(grid.shape) - 1.0) - 1.0).astype(np.float32)
    coords = torch.from_numpy(norm[..., ::-1].copy()).reshape((1,) + (1,) * (nd - 2) + (-1, 1, nd))
    img = torch.from_numpy(np.stack(image).astype(np.float32)).unsqueeze(0)
    vals = torch.nn.functional.grid_sample(img, coords, mode="bilinear", padding_mode="zeros", align_corners=True)
    vals = vals.reshape(len(image), *t.shape).numpy()
    return vals.mean(axis=-1) * ((tb - ta) * length)[None]


def brute_force_scatter(activity, mu, grid, layout, lower=350.0, upper=650.0, fwhm=0.15, slab_mm=None,
                        views=None):
    """Single scatter of every LOR of ``layout`` (SinogramLayout or SinogramLayout2D), in the units
    of the line integrals of ``activity``; shape ``layout.shape`` (only ``views`` filled if given)."""
    scanner = layout.scanner
    nd = grid.ndim
    xy = scanner.crystal_xy_mm
    n_cryst = xy.shape[0]
    side = np.arange(n_cryst) // scanner.n_crystals_per_side
    phi = 2.0 * np.pi * side / scanner.n_sides
    normal_xy = np.stack([np.cos(phi), np.sin(phi)], axis=1)
    rings_z = scanner.ring_positions_mm if nd == 3 else np.zeros(1)
    n_rings = rings_z.size

    keep = mu > 0
    centres = np.stack([c[keep] for c in grid.coordinates()], axis=1)
    weight = mu[keep] * grid.voxel_volume_mm3 * (slab_mm if nd == 2 else 1.0) / _kn_total(ME)
    s3 = centres if nd == 3 else np.concatenate([centres, np.zeros((centres.shape[0], 1))], axis=1)

    # per detector (ring, crystal): unit vectors, geometry factor, line integrals from every voxel
    det = np.zeros((n_rings, n_cryst, 3))
    det[..., :2] = xy[None]
    det[..., 2] = rings_z[:, None]
    nrm = np.zeros((n_cryst, 3))
    nrm[:, :2] = normal_xy
    u = np.empty((n_rings, n_cryst) + s3.shape)
    geom = np.empty((n_rings, n_cryst, s3.shape[0]))
    att = np.empty_like(geom)
    act = np.empty_like(geom)
    for r in range(n_rings):
        for c in range(n_cryst):
            v = det[r, c][None] - s3
            dist = np.linalg.norm(v, axis=1)
            u[r, c] = v / dist[:, None]
            geom[r, c] = np.maximum(u[r, c] @ nrm[c], 0.0) / dist**2
            att[r, c], act[r, c] = _line_integrals((mu, activity), grid, centres, det[r, c][:nd])

    eff511 = _efficiency(ME, lower, upper, fwhm)
    sig511 = _kn_total(ME)
    plane_rings = layout.plane_rings if nd == 3 else np.zeros((1, 2), dtype=int)
    out = np.zeros((plane_rings.shape[0], layout.n_views, layout.n_radial))
    views = range(layout.n_views) if views is None else views
    for p, (ra, rb) in enumerate(plane_rings):
        for v in views:
            ca, cb = layout.crystal_pairs[v, :, 0], layout.crystal_pairs[v, :, 1]
            ua, ub = u[ra, ca], u[rb, cb]  # (n_radial, n_s, 3)
            cos = -np.einsum("rsk,rsk->rs", ua, ub)
            e_out = ME / (1.0 + (1.0 - cos))
            ratio = _mu_scale(e_out, sig511)
            k = _kn(cos) * _efficiency(e_out, lower, upper, fwhm) / eff511
            ma, mb = att[ra, ca], att[rb, cb]
            both = act[ra, ca] * np.exp(-(ma + ratio * mb)) + act[rb, cb] * np.exp(-(ratio * ma + mb))
            s = (weight[None] * k * geom[ra, ca] * geom[rb, cb] * both).sum(axis=1)
            ab = det[rb, cb] - det[ra, ca]
            r2 = (ab**2).sum(axis=1)
            cos_a = -(nrm[ca] * ab).sum(axis=1) / np.sqrt(r2)
            cos_b = (nrm[cb] * ab).sum(axis=1) / np.sqrt(r2)
            out[p, v] = s * r2 / (cos_a * cos_b)
    return out if nd == 3 else out[0]


_SCALE_E = np.linspace(150.0, ME, 2000)
_SCALE_CACHE = {}


def _mu_scale(e_out, sig511):
    """sigma_KN(E) / sigma_KN(511), quadrature on a fine energy grid, linearly interpolated."""
    if "table" not in _SCALE_CACHE:
        _SCALE_CACHE["table"] = np.array([_kn_total(e) for e in _SCALE_E])
    return np.interp(e_out, _SCALE_E, _SCALE_CACHE["table"]) / sig511


def _line_samples(image, grid, starts, end):
    """Midpoint samples of ``image`` (one array) on each segment ``starts[i] -> end`` inside the image
    box: distances from the start (n, N_SAMPLES), mm, and values times the sample length (n, N_SAMPLES)."""
    nd = grid.ndim
    vs = np.asarray(grid.voxel_size_mm)
    lo = np.asarray(grid.origin_mm) - 0.5 * vs
    hi = lo + np.asarray(grid.extent_mm)
    d = end[None, :] - starts
    length = np.linalg.norm(d, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        t0 = (lo[None] - starts) / d
        t1 = (hi[None] - starts) / d
    tmin = np.where(d == 0, -np.inf, np.minimum(t0, t1)).max(axis=1)
    tmax = np.where(d == 0, np.inf, np.maximum(t0, t1)).min(axis=1)
    ta, tb = np.maximum(tmin, 0.0), np.minimum(tmax, 1.0)
    tb = np.maximum(tb, ta)
    frac = (np.arange(N_SAMPLES) + 0.5) / N_SAMPLES
    t = ta[:, None] + (tb - ta)[:, None] * frac[None, :]
    pts = starts[:, None, :] + t[..., None] * d[:, None, :]
    idx = (pts - np.asarray(grid.origin_mm)) / vs
    norm = (2.0 * idx / (np.asarray(grid.shape) - 1.0) - 1.0).astype(np.float32)
    coords = torch.from_numpy(norm[..., ::-1].copy()).reshape((1,) + (1,) * (nd - 2) + (-1, 1, nd))
    img = torch.from_numpy(np.asarray(image, dtype=np.float32))[None, None]
    vals = torch.nn.functional.grid_sample(img, coords, mode="bilinear", padding_mode="zeros", align_corners=True)
    vals = vals.reshape(t.shape).numpy().astype(np.float64)
    return t * length[:, None], vals * ((tb - ta) * length / N_SAMPLES)[:, None]


def brute_force_scatter_tof(activity, mu, grid, layout, edges, sigma, lower=350.0, upper=650.0, fwhm=0.15,
                            slab_mm=4.0, views=None):
    """TOF single scatter of the LORs of a SinogramLayout2D, shape ``layout.shape + (len(edges) - 1,)``
    (only ``views`` filled if given).

    Every activity sample ``E`` at distance ``l`` from the scatter voxel ``S`` on the leg towards ``A``
    is an event at ``(|SA| - |SB|) / 2 - l`` from the LOR's midpoint towards ``B`` (towards ``B``:
    ``+ l``), spread by the Gaussian of ``sigma`` (mm) and integrated over the bins (``edges``, mm,
    scipy.special.ndtr); otherwise as :func:`brute_force_scatter` (2D only).
    """
    scanner = layout.scanner
    xy = scanner.crystal_xy_mm
    n_cryst = xy.shape[0]
    side = np.arange(n_cryst) // scanner.n_crystals_per_side
    phi = 2.0 * np.pi * side / scanner.n_sides
    nrm = np.stack([np.cos(phi), np.sin(phi)], axis=1)
    keep = mu > 0
    centres = np.stack([c[keep] for c in grid.coordinates()], axis=1)
    sig511 = _kn_total(ME)
    weight = mu[keep] * grid.voxel_volume_mm3 * slab_mm / sig511
    n_s = centres.shape[0]
    u = np.empty((n_cryst, n_s, 2))
    dist = np.empty((n_cryst, n_s))
    geom = np.empty((n_cryst, n_s))
    att = np.empty((n_cryst, n_s))
    ell = np.empty((n_cryst, n_s, N_SAMPLES))
    lam = np.empty((n_cryst, n_s, N_SAMPLES))
    for c in range(n_cryst):
        v = xy[c][None] - centres
        dist[c] = np.linalg.norm(v, axis=1)
        u[c] = v / dist[c][:, None]
        geom[c] = np.maximum(u[c] @ nrm[c], 0.0) / dist[c] ** 2
        att[c] = _line_integrals((mu,), grid, centres, xy[c])[0]
        ell[c], lam[c] = _line_samples(activity, grid, centres, xy[c])
    eff511 = _efficiency(ME, lower, upper, fwhm)
    edges = np.asarray(edges, dtype=np.float64)
    out = np.zeros((layout.n_views, layout.n_radial, edges.size - 1))
    for v in (range(layout.n_views) if views is None else views):
        ca, cb = layout.crystal_pairs[v, :, 0], layout.crystal_pairs[v, :, 1]  # (n_radial,)
        cos = -(u[ca] * u[cb]).sum(axis=-1)  # (n_radial, n_s)
        e_out = ME / (1.0 + (1.0 - cos))
        ratio = _mu_scale(e_out, sig511)
        k = _kn(cos) * _efficiency(e_out, lower, upper, fwhm) / eff511
        f = weight[None] * k * geom[ca] * geom[cb]
        half = 0.5 * (dist[ca] - dist[cb])
        prof = np.zeros((ca.size, edges.size))
        for leg, sign, ex in ((ca, -1.0, np.exp(-(att[ca] + ratio * att[cb]))),
                              (cb, 1.0, np.exp(-(ratio * att[ca] + att[cb])))):
            pos = half[..., None] + sign * ell[leg]  # (n_radial, n_s, N_SAMPLES)
            amp = (f * ex)[..., None] * lam[leg]
            for e, edge in enumerate(edges):
                prof[:, e] += (amp * special.ndtr((edge - pos) / sigma)).sum(axis=(1, 2))
        ab = xy[cb] - xy[ca]
        r2 = (ab**2).sum(axis=1)
        cos_a = -(nrm[ca] * ab).sum(axis=1) / np.sqrt(r2)
        cos_b = (nrm[cb] * ab).sum(axis=1) / np.sqrt(r2)
        out[v] = np.diff(prof, axis=1) * (r2 / (cos_a * cos_b))[:, None]
    return out

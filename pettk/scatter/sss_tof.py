"""Time-of-flight single scatter simulation: Watson's SSS with the scatter of every LOR spread over
its TOF bins.

For a detector pair ``(A, B)``, a scatter point ``S`` and an annihilation at ``E`` on the segment
from ``S`` to ``A`` at distance ``l`` from ``S`` (the photon reaching ``A`` is unscattered, its
partner travels ``E -> S -> B``), the arrival times differ by
``(|EA| - |ES| - |SB|) / c``: the event lands at

    t = (R_AS - R_BS) / 2 - l      (mm from the LOR's midpoint, positive towards B),

and at ``t = (R_AS - R_BS) / 2 + l`` for an annihilation on the leg towards ``B`` at ``l`` from
``S``. Watson (2007) scores the emission integral ``I_A = int_SA lambda`` of the non-TOF SSS
(:mod:`pettk.scatter.sss`) with this TOF position, convolved with the timing kernel and
integrated over each bin.

What is implemented (Watson's TOF ray sums, each leg in chunks)
----------------------------------------------------------------
The emission along each leg ``S -> D`` is cut into chunks of ``leg_step_mm`` (default the TOF
kernel's ``sigma``); within a chunk it is replaced by a Gaussian with the chunk's activity-weighted
mean ``<l>`` and variance ``var(l)`` of the distance from ``S`` (activity sampled at least every
half voxel by multilinear interpolation). Convolved with the TOF Gaussian (``sigma`` from
:class:`~pettk.geometry.TOFParams`), each chunk adds the Gaussian
``N((R_AS - R_BS)/2 -+ <l>, sigma^2 + var(l))``, integrated exactly (erf) over every bin, weighted
by the chunk's share of the leg's activity. The amplitudes (``I_A`` from the Joseph projector,
attenuation, Klein-Nishina, geometry) are exactly those of the non-TOF SSS, and so are the coarse
detectors and the interpolation to all LORs (``Q_t / q`` per bin is interpolated linearly, like
``Q / q``): summed over the TOF bins, the result is the non-TOF
:func:`~pettk.scatter.sss.single_scatter` up to rounding when the bins cover every profile, and
less by the Gaussian mass outside the bins otherwise (the kernel is not truncated at the
``TOFParams.n_sigmas`` of the projector). With a single chunk per leg this is the
"emission-weighted mean offset" approximation; chunks of ``sigma`` make the chunk's shape
irrelevant (its variance is at most ``sigma^2 / 12``).

Cost: up to ``2 n_chunks`` Gaussians (a few erf each) per scatter point and coarse pair on top of the non-TOF sum, and
an interpolation table ``n_tof`` times larger (memory ``8 n_axial^2 n_views n_radial n_tof``
bytes in 3D).

References
----------
C. C. Watson, "Extension of single scatter simulation to scatter correction of time-of-flight
PET", IEEE Trans. Nucl. Sci. 54(5), 1679-1686 (2007), doi:10.1109/TNS.2007.901227.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .._validation import as_positive_float
from ..backends._threads import keep_torch_threads
from ..geometry import ImageGrid, TOFParams
from ..projector import Projector
from . import _kernels, _tof_kernels
from .energy import EnergyWindow
from .lines import sample_linear, segment_integrals
from .sss import _crystal_normals, _luts, _needed_pairs, axial_geometry, coarse_setup

__all__ = ["single_scatter_tof", "leg_chunks"]


def leg_chunks(activity: np.ndarray, grid: ImageGrid, points: np.ndarray, targets: np.ndarray, chunk_mm: float):
    """The activity along every segment from one of ``points`` (``(n_p, ndim)``, mm, inside the
    image) to one of ``targets`` (``(n_t, ndim)``, mm), cut into chunks of ``chunk_mm`` from the point.

    Midpoint samples (multilinear interpolation, at least 4 per chunk and one per half voxel) up to
    the segment's end or the image diagonal. Returns ``(frac, mean, var)``, each
    ``(n_t, n_p, n_chunks)``: the chunk's share of the segment's sampled activity, and the
    activity-weighted mean (mm) and variance (mm^2) of the distance from the point within the chunk.
    A segment without sampled activity puts its share 1 at distance 0 (the scatter point).
    """
    per_chunk = max(4, int(math.ceil(chunk_mm / (0.5 * min(grid.voxel_size_mm)))))
    h = chunk_mm / per_chunk
    n_chunks = max(1, int(math.ceil(float(np.linalg.norm(grid.extent_mm)) / chunk_mm)))
    ell = (np.arange(n_chunks * per_chunk) + 0.5) * h
    shape = (targets.shape[0], points.shape[0], n_chunks)
    frac, mean, var = np.zeros(shape), np.zeros(shape), np.zeros(shape)
    img = activity[None]
    ell_c = ell.reshape(n_chunks, per_chunk)
    for i, target in enumerate(targets):
        d = target[None] - points
        length = np.linalg.norm(d, axis=1)
        u = d / length[:, None]
        pts = points[:, None, :] + ell[None, :, None] * u[:, None, :]
        vals = sample_linear(img, grid, pts.reshape(-1, grid.ndim))[0].reshape(points.shape[0], -1)
        vals = np.where(ell[None, :] < length[:, None], vals, 0.0).reshape(-1, n_chunks, per_chunk)
        m0 = vals.sum(axis=2)
        safe = np.where(m0 > 0, m0, 1.0)
        m1 = (vals * ell_c).sum(axis=2) / safe
        m2 = (vals * ell_c**2).sum(axis=2) / safe
        leg = m0.sum(axis=1, keepdims=True)
        frac[i] = m0 / np.where(leg > 0, leg, 1.0)
        frac[i, :, 0] = np.where(leg[:, 0] > 0, frac[i, :, 0], 1.0)
        mean[i] = np.where(m0 > 0, m1, 0.0)
        var[i] = np.where(m0 > 0, np.maximum(m2 - m1 * m1, 0.0), 0.0)
    return frac, mean, var


@keep_torch_threads
def single_scatter_tof(projector: Projector, activity, mu, *, tof: TOFParams | None = None,
                       window: EnergyWindow | None = None, scatter_step_mm: float = 15.0,
                       mu_threshold: float = 0.001, per_side: int = 2, n_axial: int | None = None,
                       slab_thickness_mm: float | None = None, leg_step_mm: float | None = None):
    """TOF single scatter simulation on the TOF sinogram of ``projector`` (see the module docstring).

    Parameters
    ----------
    projector : Projector
        On a :class:`~pettk.geometry.SinogramLayout` (3D grid) or
        :class:`~pettk.geometry.SinogramLayout2D` (2D grid); a view restriction is ignored.
    activity, mu : array or tensor, shape ``grid.shape``
        Activity (>= 0, any unit) and 511 keV attenuation (1/mm, >= 0) on the projector's grid.
    tof : TOFParams, optional
        Timing resolution and bins; default ``projector.tof`` (one of the two is required).
    window, scatter_step_mm, mu_threshold, per_side, n_axial, slab_thickness_mm
        As :func:`~pettk.scatter.sss.single_scatter`.
    leg_step_mm : float, optional
        Length of the chunks each unscattered leg's emission is cut into (mm); default the TOF
        kernel's standard deviation ``tof.sigma_mm``. Shorter is more exact and slower.

    Returns
    -------
    Scatter of shape ``layout.shape + (tof.n_bins,)``, bins along each LOR from its start crystal to
    its end crystal (the projector's convention), in the units of ``P(activity)``; of the
    activity's array type, dtype and device. Not differentiable.
    """
    if not isinstance(projector, Projector):
        raise TypeError(f"projector must be a Projector, got {type(projector).__name__}")
    if tof is None:
        tof = projector.tof
        if tof is None:
            raise ValueError("tof is required: pass tof=TOFParams(...) or a projector with TOF")
    elif not isinstance(tof, TOFParams):
        raise TypeError(f"tof must be a TOFParams or None, got {type(tof).__name__}")
    leg_step = tof.sigma_mm if leg_step_mm is None else as_positive_float("leg_step_mm", leg_step_mm)
    c = coarse_setup("single_scatter_tof", projector, activity, mu, window, scatter_step_mm, mu_threshold, per_side,
                     n_axial, slab_thickness_mm)
    layout, grid, scanner, window, act, mu_np, like = c.layout, c.grid, c.scanner, c.window, c.act, c.mu, c.like
    pos, weight, n_s, n_t, n_z, single = c.pos, c.weight, c.n_s, c.n_t, c.n_z, c.single
    xy, det, n_det, crystal_pairs = c.xy, c.det, c.n_det, c.crystal_pairs
    t_lo, t_hi, t_w, z_lo, z_hi, z_w = c.t_lo, c.t_hi, c.t_w, c.z_lo, c.z_hi, c.z_w
    n_tof = tof.n_bins

    n_comp = 1 + 4 * n_tof
    table = np.zeros((n_z, n_t, n_z, n_t, n_comp))
    if n_s:
        pos3 = pos if grid.ndim == 3 else np.concatenate([pos, np.zeros((n_s, 1))], axis=1)
        diff = det[:, None, :] - pos3[None, :, :]
        dist = np.sqrt(np.einsum("dsk,dsk->ds", diff, diff))
        u = diff / dist[..., None]
        integrals = segment_integrals(grid, np.stack([mu_np, act]), pos, det[:, :grid.ndim])
        chunks = leg_chunks(act, grid, pos, det[:, :grid.ndim], leg_step)
        kn_eff, mu_scale = _luts(window)
        ia, ib = _needed_pairs(crystal_pairs, t_lo, t_hi, n_t, n_z)
        pairs = np.ascontiguousarray(np.stack([ia, ib], axis=1))
        total = np.empty((pairs.shape[0], 4))
        per_bin = np.empty((pairs.shape[0], n_tof, 4))
        _tof_kernels.pair_sums_tof(pairs, np.ascontiguousarray(u[..., 0]), np.ascontiguousarray(u[..., 1]),
                                   np.ascontiguousarray(u[..., 2]), dist, np.ascontiguousarray(integrals[0]),
                                   np.ascontiguousarray(integrals[1]), *chunks, weight, kn_eff, mu_scale,
                                   tof.first_edge_mm, tof.bin_width_mm, tof.sigma_mm**2, total, per_bin)
        ab = det[ib] - det[ia]
        r_ab2 = np.einsum("pk,pk->p", ab, ab)
        total *= r_ab2[:, None]
        per_bin *= r_ab2[:, None, None]
        radial = xy / np.linalg.norm(xy, axis=1, keepdims=True)
        ra = np.tile(radial, (n_z, 1))[ia]
        rb = np.tile(radial, (n_z, 1))[ib]
        q = (ra[:, 0] * (total[:, 0] * rb[:, 0] + total[:, 1] * rb[:, 1])
             + ra[:, 1] * (total[:, 2] * rb[:, 0] + total[:, 3] * rb[:, 1]))
        floor = 1e-30 * max(float(q.max()), 1e-300)
        q = np.maximum(q, floor)
        flat = table.reshape(n_det, n_det, n_comp)
        flat[..., 0] = np.log(floor)
        flat[ia, ib, 0] = np.log(q)
        flat[ia, ib, 1:] = (per_bin / q[:, None, None]).reshape(-1, 4 * n_tof)
        # B -> A: the transposed matrix, and the TOF axis mirrored (bins are symmetric about the midpoint)
        flat[ib, ia, 0] = np.log(q)
        flat[ib, ia, 1:] = (per_bin[:, ::-1][..., [0, 2, 1, 3]] / q[:, None, None]).reshape(-1, 4 * n_tof)
    else:
        table[..., 0] = -np.inf

    normals = np.ascontiguousarray(_crystal_normals(scanner))
    stage = np.empty((n_z, n_z, layout.n_views, layout.n_radial, n_tof))
    _tof_kernels.transaxial_stage_tof(table, crystal_pairs, t_lo, t_hi, t_w, normals, stage)
    inv_geom, dxy2, plane_rings, ring_z = axial_geometry(layout, normals, crystal_pairs)
    out = np.empty((plane_rings.shape[0], layout.n_views, layout.n_radial, n_tof),
                   dtype=np.float32 if single else np.float64)
    _kernels.axial_stage(stage, plane_rings, z_lo, z_hi, z_w, inv_geom, dxy2, ring_z, out)
    out = out.reshape(tuple(layout.shape) + (n_tof,))
    np.maximum(out, 0.0, out=out)
    if isinstance(like, torch.Tensor):
        return torch.from_numpy(out).to(device=like.device, dtype=like.dtype)
    return out

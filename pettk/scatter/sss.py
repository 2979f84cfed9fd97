"""Watson's single scatter simulation (SSS): the expected single-scatter sinogram of an activity
and attenuation image.

For a detector pair ``(A, B)`` the single-scatter counts are a sum over scatter points ``S``
(Watson 2000, eq. 1; Tsoumpas et al. 2004):

    S_AB = sum_S V_S n_e(S) dsigma/dOmega(theta_S) sigma_AS sigma_BS / (2 pi R_AS^2 R_BS^2)
           * eps(E') * eps(511) * [ I_A exp(-int_SA mu - int_SB mu') + I_B exp(-int_SA mu' - int_SB mu) ]

``I_A = int_SA lambda`` (emission on the segment from S to A: one photon reaches A unscattered,
its partner scatters at S towards B with energy ``E'``), ``mu' = mu * sigma_KN(E') / sigma_KN(511)``,
``n_e = mu / sigma_KN(511)`` the electron density, ``sigma_DS = a cos(incidence)`` the detector's
cross section seen from S, ``theta_S`` the scattering angle and ``eps`` the energy window
efficiency (:class:`~pettk.scatter.energy.EnergyWindow`). The true coincidences of the same pair
are ``T_AB = sigma_A sigma_B eps(511)^2 / (2 pi R_AB^2) int_AB lambda`` (``sigma_A`` seen along the
LOR), so this module returns

    s_AB = S_AB / (sigma_A sigma_B eps(511)^2 / (2 pi R_AB^2)),

the scatter in the units of the projector's line integrals: ``s`` is directly comparable to
``exp(-P mu) * P(lambda)``, the unscattered counts of :class:`~pettk.physics.ForwardModel` without
normalisation. Detector areas cancel.

Speed (Watson's approximations)
-------------------------------
* Scatter points: the mu-map is cut into blocks of about ``scatter_step_mm``; each block whose
  mean mu reaches ``mu_threshold`` gives one scatter point at its mu-weighted centroid carrying
  the block's ``sum(mu) * voxel volume``.
* Detectors: a coarse subset of crystals (``per_side`` on every polygon side, its end crystals
  included, so that no interpolation crosses a corner) on a subset of rings (``n_axial``); ``s`` is
  computed on the pairs of them that the sinogram's LORs lie between, then interpolated to every
  LOR: transaxially in crystal index (the log of a positive scale, and a normal-free 2 x 2 matrix
  linearly: the detector normals are factored out of the sum, because the polygon's normal jumps
  at every corner, and put back per LOR), then axially in ring index (linearly).
* Line integrals (mu and activity, scatter point to every coarse detector) come from pettk's
  Joseph :class:`~pettk.projector.Projector` on a :class:`~pettk.geometry.LORList`, at full image
  resolution; ``int mu'`` is ``mu(E')/mu(511) * int mu`` (Compton-dominated media).

2D (a :class:`~pettk.geometry.SinogramLayout2D` on a 2D grid): the image is a slab of axial
thickness ``slab_thickness_mm`` in the detectors' plane; scatter stays in that plane. This is a
model for shape (tail fitting sets the scale), not a septa simulation.

References
----------
C. C. Watson, "New, faster, image-based scatter correction for 3D PET", IEEE Trans. Nucl. Sci.
47(4), 1587-1594 (2000). J. M. Ollinger, "Model-based scatter correction for fully 3D PET",
Phys. Med. Biol. 41, 153-176 (1996). C. Tsoumpas, P. Aguiar, K. S. Nikita, D. Ros,
K. Thielemans, "Evaluation of the single scatter simulation algorithm implemented in the STIR
library", IEEE NSS/MIC 2004.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .._validation import as_nonnegative_float, as_positive_float, as_positive_int
from ..backends._threads import keep_torch_threads
from ..geometry import ImageGrid, SinogramLayout, SinogramLayout2D
from ..projector import Projector
from . import _kernels
from .energy import EnergyWindow
from .klein_nishina import ELECTRON_REST_ENERGY_KEV, kn_differential, kn_total, mu_energy_scale, scattered_energy
from .lines import segment_integrals

__all__ = ["single_scatter", "scatter_points", "coarse_detectors"]

#: Entries of the look-up tables over cos(theta) in [-1, 1].
LUT_SIZE = 8193


def _as_image(name: str, value, shape) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        arr = value.detach().cpu().numpy()
    elif isinstance(value, np.ndarray):
        arr = value
    else:
        raise TypeError(f"{name} must be a numpy array or a torch tensor, got {type(value).__name__}")
    if not np.issubdtype(arr.dtype, np.floating):
        raise TypeError(f"{name} must hold floating-point values, got dtype {arr.dtype}")
    if tuple(arr.shape) != tuple(shape):
        raise ValueError(f"{name} must have the image grid's shape {tuple(shape)}, got {tuple(arr.shape)} "
                         "(resample it onto the activity's grid first)")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains {int((~np.isfinite(arr)).sum())} non-finite values (NaN or inf)")
    if np.any(arr < 0):
        raise ValueError(f"{name} must be >= 0 everywhere; its minimum is {float(arr.min()):.4g}")
    return np.ascontiguousarray(arr, dtype=np.float64)


def scatter_points(mu: np.ndarray, grid: ImageGrid, step_mm: float, mu_threshold: float):
    """Scatter points of a mu-map: one per block of about ``step_mm`` whose mean mu >= ``mu_threshold``.

    Returns
    -------
    positions : (n_s, grid.ndim) float64, mm -- the mu-weighted centroid of each block
    mu_volume : (n_s,) float64 -- ``sum(mu) * voxel volume`` over the block (mm^2 in 3D)
    """
    blocks = [max(1, int(round(step_mm / v))) for v in grid.voxel_size_mm]
    pad = [(0, (-n) % b) for n, b in zip(grid.shape, blocks)]
    mu_p = np.pad(mu, pad)
    coords = [np.pad(c, pad) for c in grid.coordinates()]
    split = []
    for n, b in zip(mu_p.shape, blocks):
        split += [n // b, b]
    inner = tuple(range(1, 2 * grid.ndim, 2))
    mu_sum = mu_p.reshape(split).sum(axis=inner)
    n_block = float(np.prod(blocks))
    keep = (mu_sum / n_block >= mu_threshold) & (mu_sum > 0)
    positions = np.stack([(c * mu_p).reshape(split).sum(axis=inner)[keep] / mu_sum[keep] for c in coords], axis=-1)
    return positions, mu_sum[keep] * grid.voxel_volume_mm3


def coarse_detectors(scanner, n_rings: int, per_side: int, n_axial: int):
    """Coarse crystal indices and ring indices.

    ``per_side`` crystals of every polygon side, spread from its first to its last crystal (the
    middle one for 1), so that interpolation never crosses a corner of the polygon when
    ``per_side >= 2``; ``n_axial`` rings spread from the first to the last ring (the middle ring
    for 1).
    """
    n_side = scanner.n_crystals_per_side
    within = np.unique(np.round(np.linspace(0, n_side - 1, per_side)).astype(np.int64)) if per_side > 1 \
        else np.array([(n_side - 1) // 2], dtype=np.int64)
    crystals = (np.arange(scanner.n_sides)[:, None] * n_side + within[None, :]).ravel()
    rings = np.unique(np.round(np.linspace(0, n_rings - 1, n_axial)).astype(np.int64)) if n_axial > 1 \
        else np.array([n_rings // 2], dtype=np.int64)
    return crystals, rings


def _interp_weights(coarse: np.ndarray, n: int, periodic: bool):
    """For every index in ``range(n)``: the coarse neighbours (positions in ``coarse``) and the
    weight of the upper one."""
    idx = np.arange(n)
    if periodic:
        ext = np.concatenate([coarse, [coarse[0] + n]])
        hi = np.searchsorted(ext, idx, side="right")
        lo = hi - 1
        w = (idx - ext[lo]) / (ext[hi] - ext[lo])
        return lo.astype(np.int64), (hi % coarse.size).astype(np.int64), w
    if coarse.size == 1:
        zeros = np.zeros(n, dtype=np.int64)
        return zeros, zeros, np.zeros(n)
    hi = np.clip(np.searchsorted(coarse, idx, side="right"), 1, coarse.size - 1)
    lo = hi - 1
    w = np.clip((idx - coarse[lo]) / (coarse[hi] - coarse[lo]), 0.0, 1.0)
    return lo.astype(np.int64), hi.astype(np.int64), w


def _needed_pairs(crystal_pairs: np.ndarray, t_lo, t_hi, n_t: int, n_z: int):
    """Coarse detector pairs ``(A, B)``, ``A < B`` (index ``ring * n_t + crystal``), that the
    interpolation to the sinogram's LORs reads: only the transaxial pairs next to a sinogram bin
    (the radial trim leaves out pairs of nearby crystals), on every pair of coarse rings."""
    ca, cb = crystal_pairs[..., 0].ravel(), crystal_pairs[..., 1].ravel()
    need = np.zeros((n_t, n_t), dtype=bool)
    for lo_hi_a in (t_lo, t_hi):
        for lo_hi_b in (t_lo, t_hi):
            need[lo_hi_a[ca], lo_hi_b[cb]] = True
    need |= need.T
    ta, tb = np.nonzero(need)
    za, zb = np.meshgrid(np.arange(n_z), np.arange(n_z), indexing="ij")
    a = (za.ravel()[:, None] * n_t + ta[None, :]).ravel()
    b = (zb.ravel()[:, None] * n_t + tb[None, :]).ravel()
    keep = a < b
    return a[keep].astype(np.int64), b[keep].astype(np.int64)


def _crystal_normals(scanner) -> np.ndarray:
    """Outward unit normal of every crystal's polygon side, (n_crystals_per_ring, 2)."""
    phi = 2.0 * np.pi * np.arange(scanner.n_sides) / scanner.n_sides
    normals = np.stack([np.cos(phi), np.sin(phi)], axis=-1)
    return np.repeat(normals, scanner.n_crystals_per_side, axis=0)


def _luts(window: EnergyWindow):
    """``dsigma/dOmega(cos) eps(E')/eps(511) / sigma(511)`` and ``mu(E')/mu(511)`` on cos in [-1, 1]."""
    cos = np.linspace(-1.0, 1.0, LUT_SIZE)
    e_out = scattered_energy(cos)
    eff = window.efficiency(e_out) / window.efficiency(ELECTRON_REST_ENERGY_KEV)
    kn_eff = kn_differential(cos) * eff / kn_total(ELECTRON_REST_ENERGY_KEV)
    kn_eff[kn_eff < 1e-12 * kn_eff.max()] = 0.0  # lets the kernel skip angles the window rejects
    return kn_eff, mu_energy_scale(e_out)


@keep_torch_threads
def axial_geometry(layout, normals: np.ndarray, crystal_pairs: np.ndarray):
    """Per sinogram bin the transaxial geometry of the axial stage -- ``1 / (cos_a^xy cos_b^xy)``
    (0 where a crystal does not face the LOR) and ``|d_xy|^2`` -- and the plane ring pairs with the
    rings' axial positions (one plane at z = 0 in 2D)."""
    scanner = layout.scanner
    cxy = scanner.crystal_xy_mm
    d_xy = cxy[crystal_pairs[..., 0]] - cxy[crystal_pairs[..., 1]]
    dxy2 = np.einsum("vrk,vrk->vr", d_xy, d_xy)
    cos_a = np.einsum("vrk,vrk->vr", normals[crystal_pairs[..., 0]], d_xy)
    cos_b = -np.einsum("vrk,vrk->vr", normals[crystal_pairs[..., 1]], d_xy)
    ok = (cos_a > 1e-9 * dxy2) & (cos_b > 1e-9 * dxy2)
    inv_geom = np.where(ok, 1.0 / np.where(ok, cos_a * cos_b, 1.0), 0.0)
    if isinstance(layout, SinogramLayout):
        plane_rings = np.ascontiguousarray(layout.plane_rings, dtype=np.int64)
        ring_z = np.ascontiguousarray(scanner.ring_positions_mm, dtype=np.float64)
    else:
        plane_rings = np.zeros((1, 2), dtype=np.int64)
        ring_z = np.zeros(1)
    return inv_geom, dxy2, plane_rings, ring_z


@dataclass(frozen=True)
class CoarseProblem:
    """What the non-TOF and the TOF SSS share: the checked inputs, the scatter points with their
    weights, the coarse detectors (index ``d = iz * n_t + it``) and the interpolation weights."""

    layout: object
    grid: ImageGrid
    scanner: object
    window: EnergyWindow
    like: object
    single: bool
    act: np.ndarray
    mu: np.ndarray
    pos: np.ndarray
    weight: np.ndarray
    n_s: int
    crystals: np.ndarray
    rings: np.ndarray
    n_t: int
    n_z: int
    xy: np.ndarray
    det: np.ndarray
    n_det: int
    t_lo: np.ndarray
    t_hi: np.ndarray
    t_w: np.ndarray
    z_lo: np.ndarray
    z_hi: np.ndarray
    z_w: np.ndarray
    crystal_pairs: np.ndarray


def coarse_setup(caller: str, projector, activity, mu, window, scatter_step_mm, mu_threshold, per_side, n_axial,
                 slab_thickness_mm, mu_grid=None) -> CoarseProblem:
    """Check the inputs of ``caller`` (before any work) and build its :class:`CoarseProblem`."""
    if not isinstance(projector, Projector):
        raise TypeError(f"projector must be a Projector, got {type(projector).__name__}")
    layout = projector.geometry
    if not isinstance(layout, (SinogramLayout, SinogramLayout2D)):
        raise TypeError(f"{caller} needs a projector on a SinogramLayout or SinogramLayout2D (crystal "
                        f"geometry), got {type(layout).__name__}")
    grid = projector.grid
    if mu_grid is not None:
        if not isinstance(mu_grid, ImageGrid):
            raise TypeError(f"mu_grid must be an ImageGrid, got {type(mu_grid).__name__}")
        if mu_grid != grid:
            raise ValueError(f"mu_grid {mu_grid!r} differs from the activity's grid {grid!r}; "
                             "resample the mu-map onto the activity's grid first")
    window = EnergyWindow() if window is None else window
    if not isinstance(window, EnergyWindow):
        raise TypeError(f"window must be an EnergyWindow, got {type(window).__name__}")
    step = as_positive_float("scatter_step_mm", scatter_step_mm)
    threshold = as_nonnegative_float("mu_threshold", mu_threshold)
    scanner = layout.scanner
    n_cryst = scanner.n_crystals_per_ring
    n_rings = scanner.n_rings if isinstance(layout, SinogramLayout) else 1
    per_side = as_positive_int("per_side", per_side, maximum=scanner.n_crystals_per_side)
    if n_axial is None:
        extent = float(scanner.ring_positions_mm[-1] - scanner.ring_positions_mm[0])
        n_z = min(n_rings, max(2, int(math.ceil(extent / 32.0)) + 1))
    else:
        n_z = as_positive_int("n_axial", n_axial, maximum=n_rings)
    if isinstance(layout, SinogramLayout2D):
        slab = scanner.crystal_spacing_mm if slab_thickness_mm is None else \
            as_positive_float("slab_thickness_mm", slab_thickness_mm)
    elif slab_thickness_mm is not None:
        raise ValueError("slab_thickness_mm is for 2D (SinogramLayout2D) only")
    like = activity
    single = (isinstance(activity, torch.Tensor) and activity.dtype == torch.float32) or \
        (isinstance(activity, np.ndarray) and activity.dtype == np.float32)
    act = _as_image("activity", activity, grid.shape)
    mu_np = _as_image("mu", mu, grid.shape)

    pos, weight = scatter_points(mu_np, grid, step, threshold)
    if grid.ndim == 2:
        weight = weight * slab  # n_e V = mu V / sigma(511): the 1/sigma(511) sits in the look-up table
    n_s = pos.shape[0]

    # coarse detectors: index d = iz * n_t + it
    crystals, rings = coarse_detectors(scanner, n_rings, per_side, n_z)
    n_t, n_z = crystals.size, rings.size
    xy = scanner.crystal_xy_mm[crystals]
    if grid.ndim == 3:
        z = scanner.ring_positions_mm[rings]
        det = np.concatenate([np.broadcast_to(xy, (n_z, n_t, 2)),
                              np.broadcast_to(z[:, None, None], (n_z, n_t, 1))], axis=-1).reshape(-1, 3)
    else:
        det = np.concatenate([xy, np.zeros((n_t, 1))], axis=1)
    n_det = det.shape[0]

    t_lo, t_hi, t_w = _interp_weights(crystals, n_cryst, periodic=True)
    z_lo, z_hi, z_w = _interp_weights(rings, n_rings, periodic=False)
    crystal_pairs = np.ascontiguousarray(layout.crystal_pairs, dtype=np.int64)
    return CoarseProblem(layout, grid, scanner, window, like, single, act, mu_np, pos, weight, n_s, crystals, rings,
                         n_t, n_z, xy, det, n_det, t_lo, t_hi, t_w, z_lo, z_hi, z_w, crystal_pairs)


def single_scatter(projector: Projector, activity, mu, *, window: EnergyWindow | None = None,
                   scatter_step_mm: float = 15.0, mu_threshold: float = 0.001, per_side: int = 2,
                   n_axial: int | None = None, slab_thickness_mm: float | None = None,
                   mu_grid: ImageGrid | None = None):
    """Watson's single scatter simulation on the sinogram of ``projector``.

    Parameters
    ----------
    projector : Projector
        On a :class:`~pettk.geometry.SinogramLayout` (3D grid) or
        :class:`~pettk.geometry.SinogramLayout2D` (2D grid); TOF is ignored (non-TOF result; see
        :func:`~pettk.scatter.sss_tof.single_scatter_tof`), and
        so is a view restriction (all views are returned).
    activity : array or tensor, shape ``grid.shape``
        Activity (any unit, >= 0): the result is in the unit of its line integrals.
    mu : array or tensor, shape ``grid.shape``
        Linear attenuation at 511 keV, 1/mm (water 0.0096), >= 0, on the activity's grid.
    window : EnergyWindow, optional
        Energy window and resolution; default ``EnergyWindow()`` (350-650 keV, 15 % FWHM).
    scatter_step_mm : float
        Edge of the blocks of the mu-map that become one scatter point (mm).
    mu_threshold : float
        Blocks of mean mu below this (1/mm) hold no scatter point.
    per_side : int
        Coarse detectors per polygon side (from its first to its last crystal; see
        :func:`coarse_detectors`).
    n_axial : int, optional
        Coarse rings; default one per ~ 32 mm of axial extent (at least 2, at most the scanner's
        rings).
    slab_thickness_mm : float, optional
        2D only: axial thickness of the slab the image stands for; default the crystal spacing.
    mu_grid : ImageGrid, optional
        The grid the mu-map lives on; it must be the projector's grid (checked, not resampled).

    Returns
    -------
    Scatter sinogram of the layout's full (non-TOF) shape, of the activity's array type and
    dtype (float32 stays float32: a full 3D sinogram is large). Units: those of ``P(activity)``
    (see the module docstring). Not differentiable.

    Notes
    -----
    The computation runs on the CPU (numba kernels and the CPU projector): CUDA tensors are copied
    to the CPU and the result is copied back to the activity's device.
    """
    c = coarse_setup("single_scatter", projector, activity, mu, window, scatter_step_mm, mu_threshold, per_side,
                     n_axial, slab_thickness_mm, mu_grid)
    layout, grid, scanner, window, act, mu_np, like = c.layout, c.grid, c.scanner, c.window, c.act, c.mu, c.like
    pos, weight, n_s, n_t, n_z = c.pos, c.weight, c.n_s, c.n_t, c.n_z
    xy, det, n_det, crystal_pairs = c.xy, c.det, c.n_det, c.crystal_pairs
    t_lo, t_hi, t_w, z_lo, z_hi, z_w = c.t_lo, c.t_hi, c.t_w, c.z_lo, c.z_hi, c.z_w
    act_dtype = np.float32 if c.single else np.float64

    table = np.zeros((n_z, n_t, n_z, n_t, 5))
    if n_s:
        pos3 = pos if grid.ndim == 3 else np.concatenate([pos, np.zeros((n_s, 1))], axis=1)
        diff = det[:, None, :] - pos3[None, :, :]  # (n_det, n_s, 3), scatter point -> detector
        dist2 = np.einsum("dsk,dsk->ds", diff, diff)
        u = diff / np.sqrt(dist2)[..., None]
        integrals = segment_integrals(grid, np.stack([mu_np, act]), pos, det[:, :grid.ndim])
        kn_eff, mu_scale = _luts(window)
        ia, ib = _needed_pairs(crystal_pairs, t_lo, t_hi, n_t, n_z)
        pairs = np.ascontiguousarray(np.stack([ia, ib], axis=1))
        sums = np.empty((pairs.shape[0], 4))
        _kernels.pair_sums(pairs, np.ascontiguousarray(u[..., 0]), np.ascontiguousarray(u[..., 1]),
                           np.ascontiguousarray(u[..., 2]), 1.0 / dist2, np.ascontiguousarray(integrals[0]),
                           np.ascontiguousarray(integrals[1]), weight, kn_eff, mu_scale, sums)
        ab = det[ib] - det[ia]
        sums *= np.einsum("pk,pk->p", ab, ab)[:, None]  # Q = M R_AB^2, smooth between detectors
        radial = xy / np.linalg.norm(xy, axis=1, keepdims=True)
        ra = np.tile(radial, (n_z, 1))[ia]
        rb = np.tile(radial, (n_z, 1))[ib]
        q = (ra[:, 0] * (sums[:, 0] * rb[:, 0] + sums[:, 1] * rb[:, 1])
             + ra[:, 1] * (sums[:, 2] * rb[:, 0] + sums[:, 3] * rb[:, 1]))
        floor = 1e-30 * max(float(q.max()), 1e-300)
        q = np.maximum(q, floor)
        packed = np.concatenate([np.log(q)[:, None], sums / q[:, None]], axis=1)
        flat = table.reshape(n_det, n_det, 5)
        flat[..., 0] = np.log(floor)
        flat[ia, ib] = packed
        flat[ib, ia] = packed[:, [0, 1, 3, 2, 4]]  # M_BA = M_AB^T
    else:
        table[..., 0] = -np.inf  # exp(-inf) = 0: no scatter without scatter points

    normals = np.ascontiguousarray(_crystal_normals(scanner))
    stage = np.empty((n_z, n_z, layout.n_views, layout.n_radial))
    _kernels.transaxial_stage(table, crystal_pairs, t_lo, t_hi, t_w, normals, stage)
    inv_geom, dxy2, plane_rings, ring_z = axial_geometry(layout, normals, crystal_pairs)
    out_dtype = np.float32 if act_dtype == np.float32 else np.float64
    out = np.empty((plane_rings.shape[0], layout.n_views, layout.n_radial), dtype=out_dtype)
    _kernels.axial_stage(stage[..., None], plane_rings, z_lo, z_hi, z_w, inv_geom, dxy2, ring_z, out[..., None])
    out = out.reshape(layout.shape)
    np.maximum(out, 0.0, out=out)  # rounding in the normal contraction leaves values like -1e-28
    if isinstance(like, torch.Tensor):
        return torch.from_numpy(out).to(device=like.device, dtype=like.dtype)
    return out

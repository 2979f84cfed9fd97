"""Rendering tissue maps onto an :class:`~pettk.geometry.ImageGrid`: :func:`from_tissue_maps`."""

from __future__ import annotations

import math
import os
from types import MappingProxyType

import numpy as np
from scipy import ndimage

from ..._validation import as_nonnegative_int, as_supersample
from ...geometry import ImageGrid
from ..anatomy.mr import MRModel
from ..anatomy.pose import Pose
from ..anatomy.render import (
    _MAX_LESIONS,
    AnatomyLesion,
    AnatomyPhantom,
    LesionPlacementError,
    _check_grid,
    _make_rng,
    _sample_offsets,
    _sphere_hits,
    _tracer_name,
    _world_centres,
    draw_lesions,
)
from ..anatomy.tables import GM, N_LABELS, PARENCHYMA, TISSUE_LABELS, WM, Tracer, draw_mu
from .loading import TissueMaps, load_tissue_maps

GENERATOR = "pettk.sim.from_tissue_maps"
VERSION = "v2"
#: Samples interpolated per chunk.
_CHUNK_SAMPLES = 1 << 18


def _interpolate(maps: TissueMaps, channels, index: np.ndarray) -> np.ndarray:
    """Memberships ``(len(channels), n)`` (float32) at fractional voxel indices ``index`` ``(n, 3)``
    of the maps: trilinear inside, 0 beyond the maps' voxels (edges extended by half a voxel)."""
    coords = np.ascontiguousarray(index.T)
    hi = np.asarray(maps.shape, dtype=np.float64)[:, None] - 0.5 + 1e-6
    outside = np.any((coords < -0.5 - 1e-6) | (coords > hi), axis=0)
    out = np.empty((len(channels), index.shape[0]), dtype=np.float32)
    for row, ch in enumerate(channels):
        ndimage.map_coordinates(maps.memberships[ch], coords, output=out[row], order=1, mode="nearest",
                                prefilter=False)
    out[:, outside] = 0.0
    return out


def _random_points(maps: TissueMaps, channel: int, rng: np.random.Generator, n: int) -> list:
    """``n`` world points (mm, maps frame) drawn with density proportional to one channel's membership."""
    lo, hi = maps.brain_box
    out = []
    for _ in range(1000):
        if len(out) >= n:
            break
        idx = rng.uniform(lo - 0.5, hi + 0.5, size=(256, 3))
        m = _interpolate(maps, [channel], idx)[0]
        keep = rng.random(256) < m
        out.extend(idx[keep] @ maps.affine[:3, :3].T + maps.affine[:3, 3])
    if len(out) < n:  # pragma: no cover -- a channel that is non-empty yields points
        raise RuntimeError(f"found no point of {maps.tissues[channel]} in {maps.folder}")
    return out[:n]


class _Placement:
    """The maps-world -> scanner map ``s = b + L (w - c)`` and its inverse to voxel indices."""

    def __init__(self, maps: TissueMaps, pose: Pose | None, centre: bool):
        self.c = np.asarray(maps.brain_centre_mm, dtype=np.float64)
        self.linear = np.eye(3) if pose is None else pose.linear
        self.b = (np.zeros(3) if centre else self.c) + (np.zeros(3) if pose is None else pose.translation_mm)
        self.inverse_linear = np.linalg.inv(self.linear)
        ainv = np.linalg.inv(maps.affine)
        self.to_index_linear = ainv[:3, :3] @ self.inverse_linear
        self.to_index_offset = ainv[:3, :3] @ (self.c - self.inverse_linear @ self.b) + ainv[:3, 3]
        self.maps_affine = maps.affine

    def to_scanner(self, w: np.ndarray) -> np.ndarray:
        return self.b + (w - self.c) @ self.linear.T

    def to_maps(self, s: np.ndarray) -> np.ndarray:
        return self.c + (s - self.b) @ self.inverse_linear.T

    def to_index(self, s: np.ndarray) -> np.ndarray:
        return s @ self.to_index_linear.T + self.to_index_offset

    def box(self, index_box: np.ndarray) -> tuple:
        """Scanner bounding box (mm) of the voxels ``index_box`` ``(2, 3)`` (edges included)."""
        lo, hi = index_box[0] - 0.5, index_box[1] + 0.5
        corners = np.array([[a[0], b[1], c[2]] for a in (lo, hi) for b in (lo, hi) for c in (lo, hi)])
        s = self.to_scanner(corners @ self.maps_affine[:3, :3].T + self.maps_affine[:3, 3])
        return s.min(axis=0), s.max(axis=0)

    @property
    def affine(self) -> np.ndarray:
        a = np.eye(4)
        a[:3, :3] = self.linear
        a[:3, 3] = self.b - self.linear @ self.c
        return a


def _place_lesions(maps, where: _Placement, grid: ImageGrid, par: list, rng, radii, factors, visible) -> tuple:
    """Lesions centred where the parenchyma membership is >= 0.5, inside the grid, not overlapping."""
    g_lo = np.asarray(grid.origin_mm) - 0.5 * np.asarray(grid.voxel_size_mm)
    g_hi = g_lo + np.asarray(grid.extent_mm)
    if grid.ndim == 2:
        g_lo, g_hi = np.append(g_lo, 0.0), np.append(g_hi, 0.0)
    b_lo, b_hi = where.box(maps.brain_box)
    placed: list[AnatomyLesion] = []
    for radius, factor, vis in zip(radii, factors, visible):
        inset = np.minimum(radius, 0.5 * (g_hi - g_lo))
        lo, hi = np.maximum(g_lo + inset, b_lo), np.minimum(g_hi - inset, b_hi)
        found = None
        for _ in range(30 if np.all(hi >= lo) else 0):
            cand = rng.uniform(lo, hi, size=(256, 3))
            ok = _interpolate(maps, par, where.to_index(cand)).sum(axis=0) >= 0.5
            for c in cand[ok]:
                if all(np.linalg.norm(c[:grid.ndim] - np.asarray(q.centre_mm)) >= radius + q.radius_mm + 1.0
                       for q in placed):
                    found = c
                    break
            if found is not None:
                break
        if found is None:
            raise LesionPlacementError(
                f"could not place lesion {len(placed) + 1} (radius {radius:.1f} mm) with its centre in the brain "
                f"parenchyma of {maps.folder or 'the tissue maps'} inside the grid {grid!r}; use fewer lesions or a "
                "grid that covers the brain")
        placed.append(AnatomyLesion(tuple(float(v) for v in found[:grid.ndim]), float(radius), float(factor),
                                    bool(vis)))
    return tuple(placed)


def from_tissue_maps(maps, grid: ImageGrid, seed=0, tracer: str = "fdg", lesions: int = 0, *, pose=True,
                     centre: bool = True, supersample: int | None = None, texture: bool = True) -> AnatomyPhantom:
    """Activity, attenuation, MR and labels of a subject given by tissue maps, on ``grid``.

    Every voxel of ``grid`` is the mean of ``supersample**ndim`` samples; a sample takes each
    tissue's membership from the maps (trilinear, through the maps' affine and the pose) and
    ``activity = sum_t m_t a_t``, ``mu = sum_t m_t mu_t``, ``mr = sum_t m_t r_t``, with the
    per-tissue values ``a_t``, ``mu_t``, ``r_t`` drawn per seed as for
    :func:`~pettk.sim.brain_phantom_v2` (:class:`~pettk.sim.anatomy.tables.Tracer`,
    :func:`~pettk.sim.anatomy.tables.draw_mu`, :class:`~pettk.sim.anatomy.mr.MRModel`; ``fat``
    gets the bright MR fat signal). Parenchyma activity is multiplied by the tracer's smooth texture
    (4-10 %) and, for FDG, by 0-2 hypometabolic defects centred in grey matter; the MR by the
    bias field, 1-3 MR-only dark white-matter spots and Rician noise. Regional cortical factors of
    v2 are not applied (the maps have no lobes).

    Parameters
    ----------
    maps : TissueMaps or path
        One subject (:func:`load_tissue_maps`), or its folder (read and checked first).
    grid : ImageGrid
        2D ``(nx, ny)`` (the plane z = 0) or 3D ``(nx, ny, nz)``, scanner mm.
    seed : int or numpy.random.Generator
        Draws the tables, the pose, the lesions, the defects and the MR; same seed, same arrays.
    tracer : {"fdg", "amyloid-positive", "amyloid-negative"}
    lesions : int
        Spherical PET lesions (4-20 mm diameter, half hot x1.6-3, half cold x0.1-0.5, MR-visible
        with probability 0.35), centred where the parenchyma membership is >= 0.5 inside the grid;
        they scale the parenchyma they cover.
    pose : bool, None or Pose
        True (default): a seeded random :class:`~pettk.sim.anatomy.Pose` (size x0.88-1.12, aspect
        +-5 %, translation +-10 mm, rotation +-15 deg in-plane, tilts +-8 deg; ranges
        :data:`~pettk.sim.anatomy.POSE_RANGES`) about the brain centre. A :class:`Pose` is used as
        given; False/None keeps the maps' orientation and size.
    centre : bool
        True (default): the brain centre (centroid of grey + white matter) goes to the scanner
        origin (plus the pose's translation). With ``pose=False, centre=False`` scanner mm are the
        maps' world mm exactly.
    supersample : int, optional
        Samples per voxel edge (1-8); default 2, or 3 where the grid's voxels are more than twice
        the maps' (scaled) voxels.
    texture : bool
        False leaves out the activity texture (the tissue tables then hold exactly in pure voxels).

    Returns
    -------
    AnatomyPhantom
        Arrays of ``grid.shape`` (float64; ``labels`` int16: the :data:`TISSUE_LABELS` code of
        the largest membership, 0 where the memberships sum to < 0.5), ``lesion_mask``,
        ``lesions``, ``pet_only_mask`` (PET-only lesions, defects lowering activity > 15 %),
        ``mr_only_mask`` (MR-only spots), ``subject`` (source folder, files, pose, ``affine``
        maps-world -> scanner mm, tracer, mu and MR tables, generator).

    Raises
    ------
    TypeError, ValueError
        Bad arguments, before the maps are read; bad maps (see :func:`load_tissue_maps`).
    LesionPlacementError
        When the lesions cannot be centred in parenchyma inside the grid.
    """
    grid = _check_grid(grid)
    name = _tracer_name(tracer)
    n_lesions = as_nonnegative_int("lesions", lesions)
    if n_lesions > _MAX_LESIONS:
        raise ValueError(f"lesions must be at most {_MAX_LESIONS}, got {n_lesions}")
    if supersample is not None:
        supersample = as_supersample(supersample)
        if supersample > 8:
            raise ValueError(f"supersample must be between 1 and 8, got {supersample}")
    if not (pose is None or isinstance(pose, (bool, Pose))):
        raise TypeError(f"pose must be True, False, None or a pettk.sim.anatomy.Pose, got {type(pose).__name__}")
    for flag, value in (("centre", centre), ("texture", texture)):
        if not isinstance(value, (bool, np.bool_)):
            raise TypeError(f"{flag} must be True or False, got {value!r}")
    rng = _make_rng(seed)
    if not isinstance(maps, TissueMaps):
        if not isinstance(maps, (str, os.PathLike)):
            raise TypeError(f"maps must be a TissueMaps or a subject folder, got {type(maps).__name__}")
        maps = load_tissue_maps(maps)

    # -- the subject (fixed draw order, whatever the switches) ---------------------------------------
    act = Tracer(name, rng)
    mu_table = draw_mu(rng)
    mr = MRModel(rng)
    drawn = Pose.draw(rng)
    n_mr_only = int(rng.integers(1, 4))
    mr_only_radii = rng.uniform(1.5, 4.0, n_mr_only)
    lesion_seed, place_seed, noise_seed = (int(v) for v in rng.integers(2 ** 63, size=3))
    lesion_rng, place_rng = np.random.default_rng(lesion_seed), np.random.default_rng(place_seed)
    radii, factors, visible = draw_lesions(lesion_rng, n_lesions)
    used_pose = drawn if pose is True else (pose if isinstance(pose, Pose) else None)
    scale = 1.0 if used_pose is None else used_pose.scale

    codes = maps.codes
    par = [k for k, c in enumerate(codes) if c in PARENCHYMA]
    gm = list(codes).index(GM)
    wm = list(codes).index(WM)
    act.defects = [(p, r, d) for p, (r, d) in zip(_random_points(maps, gm, place_rng, act.n_defects),
                                                   act.defect_shape)]
    mr_only = [(p, r * scale) for p, r in zip(_random_points(maps, wm, place_rng, n_mr_only), mr_only_radii)]
    where = _Placement(maps, used_pose, bool(centre))
    placed = _place_lesions(maps, where, grid, par, lesion_rng, radii, factors, visible)

    # -- per-channel tables ----------------------------------------------------------------------
    act_c, mu_c, mr_c = act.table[codes], mu_table[codes], mr.table[codes].copy()
    if "fat" in maps.tissues:
        mr_c[maps.tissues.index("fat")] = mr.fat
    is_par = np.isin(codes, PARENCHYMA)
    par_idx = np.asarray(par)[:, None]
    onehot = np.zeros((len(codes), N_LABELS))
    onehot[np.arange(len(codes)), codes] = 1.0
    if supersample is None:
        ratio = max(grid.voxel_size_mm) / (float(maps.voxel_size_mm.min()) * scale)
        supersample = 2 if ratio <= 2.0 else 3
    offsets = _sample_offsets(grid, supersample)
    n_s = offsets.shape[0]
    mr_only_scanner = [(where.to_scanner(p[None])[0], r) for p, r in mr_only]

    # -- candidate voxels: those that may overlap the head --------------------------------------------
    h_lo, h_hi = where.box(maps.head_box)
    ranges = []
    for k in range(3):
        if k >= grid.ndim:
            ranges.append(np.arange(1) if h_lo[2] <= 0.0 <= h_hi[2] else np.arange(0))
            continue
        o, v, n = grid.origin_mm[k], grid.voxel_size_mm[k], grid.shape[k]
        i0 = max(0, math.ceil((h_lo[k] - o) / v - 0.5))
        i1 = min(n - 1, math.floor((h_hi[k] - o) / v + 0.5))
        ranges.append(np.arange(i0, i1 + 1))
    sub = np.meshgrid(*ranges[:grid.ndim], indexing="ij")
    candidates = np.ravel_multi_index(tuple(s.ravel() for s in sub), grid.shape) if ranges[2].size else np.arange(0)

    activity = np.zeros(grid.n_voxels)
    mu = np.zeros(grid.n_voxels)
    mr_img = np.zeros(grid.n_voxels)
    labels = np.zeros(grid.n_voxels, dtype=np.int16)
    lesion_frac = np.zeros(grid.n_voxels)
    pet_only = np.zeros(grid.n_voxels, dtype=bool)
    mr_only_frac = np.zeros(grid.n_voxels)
    chunk = max(256, _CHUNK_SAMPLES // n_s)
    channels = list(range(len(codes)))
    for start in range(0, candidates.size, chunk):
        flat = candidates[start:start + chunk]
        n = flat.size
        world_v = _world_centres(grid, flat)
        vals = _interpolate(maps, channels, where.to_index((world_v[:, None, :] + offsets).reshape(-1, 3)))
        vals = vals.reshape(len(codes), n, n_s)
        means = vals.mean(axis=2, dtype=np.float64)
        a_par, a_oth = act_c[is_par] @ means[is_par], act_c[~is_par] @ means[~is_par]
        m_par, m_oth = mr_c[is_par] @ means[is_par], mr_c[~is_par] @ means[~is_par]
        par_v = means[is_par].sum(axis=0)
        pet_only_v = np.zeros(n)
        for les in placed:
            idx, inside = _sphere_hits(world_v, offsets, les.centre_mm, les.radius_mm)
            if idx.size == 0:
                continue
            s_par = vals[par_idx, idx[None, :], :].astype(np.float64)
            a_par[idx] += (les.factor - 1.0) * np.mean(np.tensordot(act_c[is_par], s_par, 1) * inside, axis=1)
            frac = np.mean(s_par.sum(axis=0) * inside, axis=1)
            lesion_frac[flat[idx]] += frac
            if les.mr_visible:
                f_mr = 0.6 + 0.25 * (les.factor < 1.0)
                m_par[idx] += (f_mr - 1.0) * np.mean(np.tensordot(mr_c[is_par], s_par, 1) * inside, axis=1)
            else:
                pet_only_v[idx] += frac
        for centre_s, radius in mr_only_scanner:
            idx, inside = _sphere_hits(world_v, offsets, centre_s, radius)
            if idx.size:
                frac = np.mean(vals[wm, idx, :] * inside, axis=1)
                m_par[idx] += (mr.mr_lesion_factor - 1.0) * mr_c[wm] * frac
                mr_only_frac[flat[idx]] += frac
        brain = np.flatnonzero(par_v > 0.0)
        maps_v = where.to_maps(world_v)
        defect = np.ones(n)
        if brain.size:
            hb = maps_v[brain]
            if act.defects:
                defect[brain] = act.defect_factor(hb)
            a_par[brain] *= defect[brain] * (act.texture(hb) if texture else 1.0)
        activity[flat] = a_oth + a_par
        mu[flat] = mu_c @ means
        mr_img[flat] = (m_oth + m_par) * mr.modulation(maps_v, brain)
        per_label = means.T @ onehot
        lab = per_label[:, 1:].argmax(axis=1) + 1
        lab[per_label.sum(axis=1) < 0.5] = 0
        labels[flat] = lab
        pet_only[flat] = (pet_only_v >= 0.5) | ((defect < 0.85) & (par_v > 0.5))
    mr_img = mr.add_noise(mr_img, noise_seed, grid)

    tracer_dict = act.as_dict()
    tracer_dict.pop("region_factor")
    tracer_dict["defects"] = [{"centre_maps_mm": tuple(float(v) for v in c), "radius_mm": float(r), "depth": float(d)}
                              for c, r, d in act.defects]
    subject = {"generator": GENERATOR, "version": VERSION, "tracer": name, "supersample": supersample,
               "source": None if maps.folder is None else str(maps.folder), "files": maps.files, "form": maps.form,
               "tissues": maps.tissues, "texture": bool(texture), "centred": bool(centre),
               "pose": None if used_pose is None else {k: v for k, v in used_pose.as_dict().items() if k != "affine"},
               "brain_centre_maps_mm": tuple(float(v) for v in where.c),
               "brain_centre_mm": tuple(float(v) for v in where.b),
               "affine": tuple(tuple(float(v) for v in row) for row in where.affine),
               **tracer_dict, "mr": mr.as_dict(),
               "mu": {TISSUE_LABELS[k]: float(v) for k, v in enumerate(mu_table)},
               "tissue_activity": {t: float(v) for t, v in zip(maps.tissues, act_c)},
               "mr_only_lesions": [{"centre_mm": tuple(float(v) for v in c), "radius_mm": float(r)}
                                   for c, r in mr_only_scanner]}
    shape = grid.shape
    return AnatomyPhantom(
        activity=activity.reshape(shape), mu=mu.reshape(shape), mr=mr_img.reshape(shape),
        labels=labels.reshape(shape), lesion_mask=(lesion_frac >= 0.5).reshape(shape), lesions=placed,
        subject=MappingProxyType(subject), pet_only_mask=pet_only.reshape(shape),
        mr_only_mask=(mr_only_frac >= 0.5).reshape(shape), generator=GENERATOR, version=VERSION)


__all__ = ["from_tissue_maps", "GENERATOR", "VERSION"]

"""Rendering of v2 subjects onto an :class:`~pettk.geometry.ImageGrid`: :func:`brain_phantom_v2`.

A subject is drawn (pose, shapes, tracer, attenuation, MR, lesions), then every voxel that may
hold part of the head is labelled at ``supersample**ndim`` points (:func:`.labelling.classify`)
in chunks of bounded size; activity, attenuation and MR are the means over the points, so
boundaries carry partial-volume values.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np

from ..._validation import as_lowercase_choice, as_nonnegative_int, as_supersample
from ...geometry import ImageGrid
from ..phantoms import BrainPhantom, Lesion
from .family import family_ranges
from .labelling import classify
from .mr import MRModel
from .pose import Pose
from .shapes import CEREBRUM_BOX, POSTERIOR_FOSSA_BOX, Shapes
from .tables import CSF, GM, N_LABELS, PARENCHYMA, SOFT, TISSUE_LABELS, TRACERS, WM, Tracer, draw_mu

GENERATOR = "pettk.sim.brain_phantom_v2"
VERSION = "v2"

#: Samples labelled per chunk: small enough for the per-sample temporaries to stay in cache.
_CHUNK_SAMPLES = 1 << 17
_MAX_LESIONS = 64


class LesionPlacementError(ValueError):
    """No place for a lesion: its centre must lie in brain parenchyma inside the grid."""


@dataclass(frozen=True)
class AnatomyLesion(Lesion):
    """A spherical PET lesion of a v2 subject (see :class:`~pettk.sim.phantoms.Lesion`).

    Attributes
    ----------
    mr_visible : bool
        Whether the lesion also darkens the MR (otherwise it is PET-only).
    """

    mr_visible: bool = False


@dataclass(frozen=True, eq=False)
class AnatomyPhantom(BrainPhantom):
    """A :class:`~pettk.sim.phantoms.BrainPhantom` from :func:`brain_phantom_v2`, with its extras.

    Attributes
    ----------
    activity, mu, mr, labels, lesion_mask, lesions, subject
        As in :class:`BrainPhantom`; ``labels`` uses :data:`TISSUE_LABELS` (lesions are not a
        label: see ``lesion_mask``), ``mu`` is in 1/mm, ``mr`` is T1-like (about [0, 1], with
        noise).
    pet_only_mask : ndarray, bool, ``grid.shape``
        Voxels where the PET shows something the MR does not: PET-only lesions (at least half the
        voxel) and hypometabolic defects (activity lowered by more than 15 % in parenchyma).
    mr_only_mask : ndarray, bool, ``grid.shape``
        Voxels at least half filled by MR-only structures (venous sinuses, MR-only white-matter
        spots).
    label_names : mapping
        Label code -> tissue name.
    generator, version : str
        ``"pettk.sim.brain_phantom_v2"`` and ``"v2"``.
    """

    pet_only_mask: np.ndarray | None = None
    mr_only_mask: np.ndarray | None = None
    label_names: Mapping = field(default_factory=lambda: TISSUE_LABELS)
    generator: str = GENERATOR
    version: str = VERSION


def _check_grid(grid) -> ImageGrid:
    if not isinstance(grid, ImageGrid):
        raise TypeError(f"grid must be a pettk.ImageGrid, got {type(grid).__name__}: {grid!r}")
    if grid.ndim not in (2, 3):
        raise ValueError(f"grid must be a 2D or 3D ImageGrid, got a {grid.ndim}D grid {grid!r}")
    return grid


def _make_rng(seed) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an integer >= 0 or a numpy.random.Generator, got {seed!r} "
                        f"({type(seed).__name__})")
    if seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed}")
    return np.random.default_rng(int(seed))


def _tracer_name(tracer) -> str:
    return as_lowercase_choice("tracer", tracer, tuple(TRACERS))


def _sample_offsets(grid: ImageGrid, s: int) -> np.ndarray:
    """World offsets (mm) of the ``s**ndim`` samples from their voxel centre, shape ``(S, 3)``."""
    o = (np.arange(s) + 0.5) / s - 0.5
    axes = [o * grid.voxel_size_mm[k] for k in range(grid.ndim)] + [np.zeros(1)] * (3 - grid.ndim)
    return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)


def _world_centres(grid: ImageGrid, flat: np.ndarray) -> np.ndarray:
    """World coordinates (mm) of the voxels with C-order flat indices ``flat``, shape ``(n, 3)``."""
    idx = np.unravel_index(flat, grid.shape)
    out = np.zeros((flat.size, 3))
    for k in range(grid.ndim):
        out[:, k] = grid.origin_mm[k] + idx[k] * grid.voxel_size_mm[k]
    return out


def _head_candidates(grid: ImageGrid, pose: Pose, shapes: Shapes) -> np.ndarray:
    """Flat indices of voxels whose centre lies in a conservative bound of the head."""
    out = []
    nz = grid.shape[2] if grid.ndim == 3 else 1
    ny = grid.shape[1]
    plane = np.arange(grid.shape[0] * ny)
    for k in range(nz):  # one axial plane at a time
        flat = plane * nz + k if grid.ndim == 3 else plane
        h = pose.to_head(_world_centres(grid, flat))
        cran = np.sum(((h - shapes.cer_c) / (shapes.cer_ax + 45.0)) ** 2, axis=1)
        face = np.sum(((h - (0.0, 38.0, -58.0)) / (62.0, 66.0, 46.0)) ** 2, axis=1)
        nose = np.sum(((h - (0.0, 90.0, -50.0)) / (17.0, 20.0, 26.0)) ** 2, axis=1)
        neck = np.sum(((h - (0.0, -22.0, -105.0)) / (58.0, 62.0, 66.0)) ** 2, axis=1)
        keep = (cran <= 1.0) | (face <= 1.0) | (nose <= 1.0) | (neck <= 1.0)
        out.append(flat[keep])
    return np.sort(np.concatenate(out))


def _place(shapes: Shapes, rng: np.random.Generator, box, label: int, n_points: int = 256):
    """Endless stream of head-frame points in ``box`` whose centre is labelled ``label``."""
    for _ in range(1000):
        p = rng.uniform(box[0], box[1], size=(n_points, 3))
        lab, _ = classify(shapes, p, np.zeros((1, 3)))
        yield from p[lab[:, 0] == label]
    raise RuntimeError(f"found no point labelled {label} in {box}: the anatomy is broken")  # pragma: no cover


def _place_lesions(grid: ImageGrid, pose: Pose, shapes: Shapes, rng: np.random.Generator, radii, factors,
                   visible) -> tuple:
    """PET lesions centred in parenchyma, inside the grid, not overlapping."""
    g_lo = np.asarray(grid.origin_mm) - 0.5 * np.asarray(grid.voxel_size_mm)
    g_hi = g_lo + np.asarray(grid.extent_mm)
    if grid.ndim == 2:
        g_lo, g_hi = np.append(g_lo, -1e-9), np.append(g_hi, 1e-9)
    placed: list[AnatomyLesion] = []
    boxes = (CEREBRUM_BOX, CEREBRUM_BOX, POSTERIOR_FOSSA_BOX)
    for radius, factor, vis in zip(radii, factors, visible):
        half = 0.5 * (g_hi - g_lo)
        inset = np.minimum(radius, half)
        lo, hi = g_lo + inset, g_hi - inset
        if grid.ndim == 2:
            lo[2] = hi[2] = 0.0
        found = None
        for _ in range(30):  # rejection sampling in world coordinates over the brain's bounding box
            corners = np.array([[b[i][0], b[j][1], b[k][2]] for b in boxes for i in (0, 1) for j in (0, 1)
                                for k in (0, 1)])
            w = pose.to_world(corners)
            blo, bhi = np.maximum(w.min(0), lo), np.minimum(w.max(0), hi)
            if np.any(bhi < blo):
                break
            cand = rng.uniform(blo, bhi, size=(256, 3))
            lab, _ = classify(shapes, pose.to_head(cand), np.zeros((1, 3)))
            for c in cand[np.isin(lab[:, 0], PARENCHYMA)]:
                if all(np.linalg.norm(c - np.asarray(q.centre_mm)) >= radius + q.radius_mm + 1.0 for q in placed):
                    found = c
                    break
            if found is not None:
                break
        if found is None:
            raise LesionPlacementError(
                f"could not place lesion {len(placed) + 1} (radius {radius:.1f} mm) with its centre in the brain "
                f"parenchyma inside the grid's field of view {grid!r}; use fewer lesions or a grid that covers the "
                "brain")
        centre = tuple(float(v) for v in found[:grid.ndim])
        placed.append(AnatomyLesion(centre, float(radius), float(factor), bool(vis)))
    return tuple(placed)


def draw_lesions(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Radii (mm, 2-10), activity factors and MR visibility of ``n`` lesions: half hot (x1.6-3),
    half cold (x0.1-0.5; for an odd ``n`` the last kind is random), each visible in the MR with
    probability 0.35."""
    radii = rng.uniform(2.0, 10.0, n)
    n_hot = n // 2 + (int(rng.random() < 0.5) if n % 2 else 0)
    hot = rng.permutation(np.arange(n) < n_hot)
    factors = np.where(hot, rng.uniform(1.6, 3.0, n), rng.uniform(0.1, 0.5, n))
    return radii, factors, rng.random(n) < 0.35


def _sphere_hits(world_v: np.ndarray, offsets: np.ndarray, centre, radius: float):
    """Voxels near a sphere and which of their samples lie inside: ``(idx, mask (len(idx), S))``."""
    c = np.zeros(3)
    c[:len(centre)] = centre
    reach = float(np.max(np.linalg.norm(offsets, axis=1)))
    idx = np.flatnonzero(np.sum((world_v - c) ** 2, axis=1) <= (radius + reach) ** 2)
    if idx.size == 0:
        return idx, None
    d = world_v[idx, None, :] + offsets[None, :, :] - c
    return idx, np.einsum("ijk,ijk->ij", d, d) <= radius * radius


def brain_phantom_v2(grid: ImageGrid, seed=0, tracer: str = "fdg", lesions: int = 0,
                     supersample: int = 3, family: str = "standard") -> AnatomyPhantom:
    """A procedural 3D head (anatomy generator v2): activity, attenuation, MR and tissue labels.

    The subject is built from implicit surfaces in a head frame (mm) and posed in the scanner
    (see :mod:`pettk.sim.anatomy`): a folded cortical ribbon 2-4 mm thick with CSF in the sulci,
    white matter, lateral/third/fourth ventricles sized by an atrophy draw, caudate, putamen,
    pallidum, thalamus, hippocampus, a cerebellum with folia, brainstem, skull with diploe,
    scalp, face, eyes and air sinuses. At nominal size and pose the brain spans z = -62 mm (bottom
    of the cerebellum) to +62 mm (vertex) around the scanner origin, the scalp reaches +76 mm.

    Parameters
    ----------
    grid : ImageGrid
        A 3D ``(nx, ny, nz)`` grid (z axial, last) or a 2D ``(nx, ny)`` grid (the plane z = 0,
        without axial partial volume). 128 x 128 x 90 at 2 mm holds every brain from the vertex
        to the cerebellum (the largest heads lose some scalp at the top, the nose or the neck).
    seed : int or numpy.random.Generator
        Selects the subject: size x0.88-1.12, aspect +-5 %, position +-10 mm per axis, in-plane
        rotation +-15 deg, tilts +-8 deg about x and y, shape, folding pattern and depth,
        cortical thickness, atrophy (ventricles x0.6-2.1), skull and scalp, sinuses, every
        activity and MR value. The same seed gives identical arrays.
    tracer : {"fdg", "amyloid-positive", "amyloid-negative"}
        Activity pattern (see :mod:`pettk.sim.anatomy.tables`).
    lesions : int
        Number of spherical PET lesions, 4-20 mm in diameter, centred anywhere in the parenchyma
        (cortex included) inside the grid; they change the parenchyma they cover. Half hot
        (x1.6-3), half cold (x0.1-0.5); for an odd number the last kind is random. Each is
        visible in the MR with probability 0.35 (darker), otherwise PET-only.
    supersample : int
        Samples per voxel edge (1-8).
    family : {"standard", "shifted"}
        The ranges the subject is drawn from (:mod:`pettk.sim.anatomy.family`): ``"standard"``
        (the training family) or ``"shifted"``, the out-of-family test family (tighter, deeper
        folds, thicker cortex, other tracer contrast, texture and MR statistics). A seed gives the
        same pose and placements in both.

    Returns
    -------
    AnatomyPhantom
        ``activity`` (relative, white matter about 1), ``mu`` (1/mm), ``mr`` (T1-like), ``labels``
        (int16, :data:`TISSUE_LABELS`, majority of the samples), ``lesion_mask``, ``lesions``,
        ``pet_only_mask``, ``mr_only_mask``, ``subject`` (every drawn parameter, the generator
        name and version ``"v2"``); arrays of ``grid.shape``, float64.

    Raises
    ------
    TypeError, ValueError, LesionPlacementError
        Before any work, for a grid that is not a 2D/3D ImageGrid, an unknown tracer, a bad seed,
        ``lesions`` not an integer in [0, 64], ``supersample`` not in [1, 8] or an unknown
        ``family``; :class:`LesionPlacementError` (a ValueError) when the lesions cannot be placed in
        the brain inside the grid.

    Notes
    -----
    Labels depend on the position in mm and the seed; smooth fields are linearised across each
    voxel, so a grid's voxel centres (not its extent) fix the result: a one-slice slab reproduces
    the matching slice of a volume (except the MR noise, seeded per grid position, and the lesions, placed per call).
    """
    grid = _check_grid(grid)
    name = _tracer_name(tracer)
    n_lesions = as_nonnegative_int("lesions", lesions)
    if n_lesions > _MAX_LESIONS:
        raise ValueError(f"lesions must be at most {_MAX_LESIONS}, got {n_lesions}")
    s = as_supersample(supersample)
    if s > 8:
        raise ValueError(f"supersample must be between 1 and 8, got {s}")
    ranges = family_ranges(family)
    rng = _make_rng(seed)

    # -- the subject (fixed draw order) ------------------------------------------------------------
    pose = Pose.draw(rng)
    shapes = Shapes(rng, pose.scale, ranges)
    act = Tracer(name, rng, ranges)
    mu_table = draw_mu(rng)
    mr = MRModel(rng, ranges)
    n_mr_only = int(rng.integers(1, 4))
    mr_only_radii = rng.uniform(1.5, 4.0, n_mr_only)
    # independent streams: the number of lesions changes nothing else about the subject
    lesion_seed, place_seed, noise_seed = (int(v) for v in rng.integers(2 ** 63, size=3))
    lesion_rng, place_rng = np.random.default_rng(lesion_seed), np.random.default_rng(place_seed)
    radii, factors, visible = draw_lesions(lesion_rng, n_lesions)

    # -- things placed by rejection sampling on the labelled anatomy --------------------------------
    gm_points = _place(shapes, place_rng, CEREBRUM_BOX, GM)
    act.defects = [(next(gm_points), r, d) for r, d in act.defect_shape]
    wm_points = _place(shapes, place_rng, CEREBRUM_BOX, WM)
    mr_only = [(next(wm_points), r / pose.scale) for r in mr_only_radii]
    placed = _place_lesions(grid, pose, shapes, lesion_rng, radii, factors, visible)

    # -- rendering -----------------------------------------------------------------------------
    offsets_w = _sample_offsets(grid, s)
    offsets_h = offsets_w @ pose.inverse_linear.T
    n_s = offsets_w.shape[0]
    activity = np.zeros(grid.n_voxels)
    mu = np.zeros(grid.n_voxels)
    mr_img = np.zeros(grid.n_voxels)
    labels = np.zeros(grid.n_voxels, dtype=np.int16)
    lesion_frac = np.zeros(grid.n_voxels)
    pet_only_frac = np.zeros(grid.n_voxels)
    mr_only_frac = np.zeros(grid.n_voxels)
    defect_low = np.zeros(grid.n_voxels, dtype=bool)
    is_par = np.zeros(N_LABELS, dtype=bool)
    is_par[list(PARENCHYMA)] = True
    mr_only_world = [(pose.to_world(c[None])[0], r * pose.scale) for c, r in mr_only]
    candidates = _head_candidates(grid, pose, shapes)
    chunk = max(256, _CHUNK_SAMPLES // n_s)
    for start in range(0, candidates.size, chunk):
        flat = candidates[start:start + chunk]
        world_v = _world_centres(grid, flat)
        head_v = pose.to_head(world_v)
        lab, lin = classify(shapes, head_v, offsets_h)
        n = flat.size
        counts = np.bincount((np.arange(n)[:, None] * N_LABELS + lab).ravel(), minlength=n * N_LABELS)
        counts = counts.reshape(n, N_LABELS)
        labels[flat] = counts.argmax(axis=1)
        mu[flat] = counts @ mu_table / n_s
        # PET: tissue table x (regional factor, texture, defects) x lesions
        par = is_par[lab]
        brain = np.flatnonzero(par.any(axis=1))
        a = act.table[lab]
        defect = np.ones(n)
        mr_mod = mr.modulation(head_v, brain)
        if brain.size:
            hb = head_v[brain]
            if act.defects:
                defect[brain] = act.defect_factor(hb)
            m_par = act.texture(hb) * defect[brain]
            m_gm = m_par * act.cortex_factor(hb)
            lb = lab[brain]
            a[brain] *= np.where(lb == GM, m_gm[:, None], np.where(par[brain], m_par[:, None], 1.0))
        # MR: tissue table, MR-only fat layer and venous sinuses
        m = mr.table[lab]
        soft = lab == SOFT
        if soft.any():
            fat_idx = np.flatnonzero(soft.any(axis=1))
            fat = soft[fat_idx] & (lin["head"].at(fat_idx) < -1.2) & (lin["outer_skull"].at(fat_idx) > 1.2)
            sub = m[fat_idx]
            sub[fat] = mr.fat
            m[fat_idx] = sub
        veins = lin["veins"].negative() & (lab == CSF)
        m[veins] = mr.veins
        mr_only_s = veins
        for centre, radius in mr_only_world:
            idx, inside = _sphere_hits(world_v, offsets_w, centre, radius)
            if idx.size:
                inside &= lab[idx] == WM
                sub = m[idx]
                sub[inside] *= mr.mr_lesion_factor
                m[idx] = sub
                mr_only_s[idx] |= inside
        pet_only_s = np.zeros_like(par)
        for les in placed:
            idx, inside = _sphere_hits(world_v, offsets_w, les.centre_mm, les.radius_mm)
            if idx.size == 0:
                continue
            inside &= par[idx]
            sub = a[idx]
            sub[inside] *= les.factor
            a[idx] = sub
            lesion_frac[flat[idx]] += inside.mean(axis=1)
            if les.mr_visible:
                sub = m[idx]
                sub[inside] *= 0.6 + 0.25 * (les.factor < 1.0)
                m[idx] = sub
            else:
                pet_only_s[idx] |= inside
        activity[flat] = a.mean(axis=1)
        mr_img[flat] = m.mean(axis=1) * mr_mod
        pet_only_frac[flat] = pet_only_s.mean(axis=1)
        mr_only_frac[flat] = mr_only_s.mean(axis=1)
        defect_low[flat] = (defect < 0.85) & (par.mean(axis=1) > 0.5)
    mr_img = mr.add_noise(mr_img, noise_seed, grid)

    shape = grid.shape
    subject = {"generator": GENERATOR, "version": VERSION, "family": family, "tracer": name, "supersample": s,
               **pose.as_dict(), **shapes.params, **act.as_dict(), "mr": mr.as_dict(),
               "mu": {TISSUE_LABELS[k]: float(v) for k, v in enumerate(mu_table)},
               "mr_only_lesions": [{"centre_mm": tuple(float(v) for v in c), "radius_mm": float(r)}
                                   for c, r in mr_only_world],
               "head_size_mm": tuple(float(v) for v in (2.0 * (shapes.cer_ax + 14.0) * pose.scale * pose.aspect))}
    return AnatomyPhantom(
        activity=activity.reshape(shape), mu=mu.reshape(shape), mr=mr_img.reshape(shape),
        labels=labels.reshape(shape), lesion_mask=(lesion_frac >= 0.5).reshape(shape), lesions=placed,
        subject=MappingProxyType(subject),
        pet_only_mask=((pet_only_frac >= 0.5) | defect_low).reshape(shape),
        mr_only_mask=(mr_only_frac >= 0.5).reshape(shape))

"""Analytic and procedural phantoms sampled on an :class:`~pettk.geometry.ImageGrid`.

Each voxel holds the mean of the object over ``supersample**ndim`` evenly spaced points inside the
voxel, so edges carry partial-volume values instead of staircase artefacts.

What this module owns:

* Shepp–Logan heads: :func:`shepp_logan_2d` / :func:`ellipse_phantom_2d` (2D) and
  :func:`shepp_logan_3d` / :func:`ellipsoid_phantom_3d` (3D, table :data:`SHEPP_LOGAN_3D`).
* :func:`brain_phantom`: a procedural, seedable brain (activity, attenuation, T1-like MR, tissue
  labels, optional hot/cold lesions); different seeds act as different subjects.
* :func:`from_label_maps`: the same :class:`BrainPhantom` built from a label map the caller loaded
  (BrainWeb, XCAT, ...).
* Test objects: :func:`uniform_cylinder`, :func:`hot_spheres` and :func:`nema_iq_phantom`, the
  latter two as a :class:`ContrastPhantom` with sphere and background masks for contrast recovery.

Conventions: lengths in mm, attenuation in 1/mm, images ``(nx, ny[, nz])`` with the axial axis z
last; every random choice comes from ``numpy.random.default_rng(seed)``; nothing is downloaded or
read from disk.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np

from .._validation import as_float_vector, as_lowercase_choice, as_nonnegative_int, as_positive_float, as_supersample
from ..geometry import ImageGrid

__all__ = [
    "ellipse_phantom_2d",
    "shepp_logan_2d",
    "MODIFIED_SHEPP_LOGAN_2D",
    "ellipsoid_phantom_3d",
    "shepp_logan_3d",
    "SHEPP_LOGAN_3D",
    "BrainPhantom",
    "Lesion",
    "brain_phantom",
    "from_label_maps",
    "BRAIN_LABELS",
    "TRACER_ACTIVITY",
    "BRAIN_MU",
    "BRAIN_MR",
    "ContrastPhantom",
    "uniform_cylinder",
    "hot_spheres",
    "nema_iq_phantom",
]

#: The "modified" (higher-contrast) Shepp–Logan head (P. Toft, PhD thesis, DTU 1996), after
#: L. A. Shepp and B. F. Logan, IEEE Trans. Nucl. Sci. 21(3), 21-43 (1974).
#: Rows: value added, semi-axis a, semi-axis b, centre x0, centre y0, rotation (degrees),
#: in units of the phantom's half-width.
MODIFIED_SHEPP_LOGAN_2D = np.array([
    [1.0, 0.69, 0.92, 0.0, 0.0, 0.0],
    [-0.8, 0.6624, 0.874, 0.0, -0.0184, 0.0],
    [-0.2, 0.11, 0.31, 0.22, 0.0, -18.0],
    [-0.2, 0.16, 0.41, -0.22, 0.0, 18.0],
    [0.1, 0.21, 0.25, 0.0, 0.35, 0.0],
    [0.1, 0.046, 0.046, 0.0, 0.1, 0.0],
    [0.1, 0.046, 0.046, 0.0, -0.1, 0.0],
    [0.1, 0.046, 0.023, -0.08, -0.605, 0.0],
    [0.1, 0.023, 0.023, 0.0, -0.606, 0.0],
    [0.1, 0.023, 0.046, 0.06, -0.605, 0.0],
])


def _supersampled_points(grid: ImageGrid, supersample: int):
    """Sample positions (mm), shape ``(*grid.shape, s, s)`` per axis, 2D grids only."""
    offsets = (np.arange(supersample) + 0.5) / supersample - 0.5
    xs = grid.voxel_centres(0)[:, None] + offsets[None, :] * grid.voxel_size_mm[0]
    ys = grid.voxel_centres(1)[:, None] + offsets[None, :] * grid.voxel_size_mm[1]
    x = xs[:, None, :, None]
    y = ys[None, :, None, :]
    return np.broadcast_arrays(x, y)


def ellipse_phantom_2d(grid: ImageGrid, ellipses, half_width_mm: float, supersample: int = 4) -> np.ndarray:
    """Sum of uniform ellipses on a 2D grid.

    Parameters
    ----------
    grid : ImageGrid
        A 2D grid.
    ellipses : array_like, shape ``(n, 6)``
        Rows ``(value, a, b, x0, y0, phi_deg)`` with lengths and centres in units of
        ``half_width_mm``; ``phi_deg`` rotates the ellipse counter-clockwise.
    half_width_mm : float
        The phantom's half-width in mm (the unit of the table).
    supersample : int
        Samples per voxel edge for partial-volume values.

    Returns
    -------
    ndarray, shape ``grid.shape``, float64
    """
    if not isinstance(grid, ImageGrid) or grid.ndim != 2:
        raise ValueError(f"grid must be a 2D ImageGrid, got {grid!r}")
    table = np.asarray(ellipses, dtype=np.float64)
    if table.ndim != 2 or table.shape[1] != 6:
        raise ValueError(f"ellipses must have shape (n, 6), got {table.shape}")
    if not half_width_mm > 0:
        raise ValueError(f"half_width_mm must be > 0, got {half_width_mm}")
    supersample = as_supersample(supersample)
    x, y = _supersampled_points(grid, supersample)
    x = x / half_width_mm
    y = y / half_width_mm
    image = np.zeros(x.shape)
    for value, a, b, x0, y0, phi in table:
        c, s = np.cos(np.radians(phi)), np.sin(np.radians(phi))
        xr = (x - x0) * c + (y - y0) * s
        yr = -(x - x0) * s + (y - y0) * c
        image += value * ((xr / a) ** 2 + (yr / b) ** 2 <= 1.0)
    return image.mean(axis=(2, 3))


def shepp_logan_2d(grid: ImageGrid, half_width_mm: float | None = None, supersample: int = 4) -> np.ndarray:
    """The modified Shepp–Logan head phantom on a 2D grid (values in [0, 1]).

    ``half_width_mm`` defaults to half the smaller edge of the grid, so the head fills the grid.
    The first image axis is x (left-right), the second y (display with ``imshow(img.T,
    origin="lower")``).
    """
    if not isinstance(grid, ImageGrid) or grid.ndim != 2:
        raise ValueError(f"grid must be a 2D ImageGrid, got {grid!r}")
    if half_width_mm is None:
        half_width_mm = 0.5 * min(grid.extent_mm)
    image = ellipse_phantom_2d(grid, MODIFIED_SHEPP_LOGAN_2D, half_width_mm, supersample)
    # the table's values cancel to 0 in places (1 - 0.8 - 0.2); don't leave -5e-17 "activity"
    return np.clip(image, 0.0, None)


# ============================================================================================
# Shared helpers
# ============================================================================================
#: Sample points evaluated at once by the supersampling loops (bounds temporary memory).
_CHUNK_POINTS = 1 << 20


def _check_grid(grid, ndims=(2, 3)) -> ImageGrid:
    """``grid`` if it is an :class:`ImageGrid` with ``ndim`` in ``ndims``."""
    if not isinstance(grid, ImageGrid):
        raise TypeError(f"grid must be a pettk.ImageGrid, got {type(grid).__name__}: {grid!r}")
    if grid.ndim not in ndims:
        want = " or ".join(f"{n}D" for n in ndims)
        raise ValueError(f"grid must be a {want} ImageGrid, got a {grid.ndim}D grid {grid!r}")
    return grid


def _as_real(name: str, value, *, minimum: float | None = None, strict: bool = False) -> float:
    """``value`` as a finite float, optionally ``>= minimum`` (``> minimum`` when ``strict``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r} ({type(value).__name__})")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if minimum is not None and (value <= minimum if strict else value < minimum):
        raise ValueError(f"{name} must be {'>' if strict else '>='} {minimum}, got {value}")
    return value


def _make_rng(seed) -> np.random.Generator:
    """A generator from an integer seed >= 0 or an existing ``numpy.random.Generator``."""
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed must be an integer >= 0 or a numpy.random.Generator, got {seed!r} "
                        f"({type(seed).__name__})")
    if seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed}")
    return np.random.default_rng(int(seed))


def _grid_centre(grid: ImageGrid) -> np.ndarray:
    """Centre (mm) of the grid's bounding box, shape ``(ndim,)``."""
    return np.array([grid.origin_mm[k] + 0.5 * (grid.shape[k] - 1) * grid.voxel_size_mm[k]
                     for k in range(grid.ndim)])


def _grid_bounds(grid: ImageGrid) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper corners (mm) of the grid's bounding box."""
    lo = np.asarray(grid.origin_mm) - 0.5 * np.asarray(grid.voxel_size_mm)
    return lo, lo + np.asarray(grid.extent_mm)


def _xy_grid(grid: ImageGrid) -> ImageGrid:
    """The 2D transaxial grid of ``grid`` (``grid`` itself when it is 2D)."""
    if grid.ndim == 2:
        return grid
    return ImageGrid(grid.shape[:2], grid.voxel_size_mm[:2], grid.origin_mm[:2])


def _index_range(grid: ImageGrid, axis: int, lo_mm: float, hi_mm: float) -> tuple[int, int]:
    """Indices ``[i0, i1)`` of the voxels along ``axis`` that may overlap ``[lo_mm, hi_mm]``."""
    o, v, n = grid.origin_mm[axis], grid.voxel_size_mm[axis], grid.shape[axis]
    i0 = min(n, max(0, int(math.floor((lo_mm - o) / v - 0.5))))
    i1 = min(n, max(0, int(math.ceil((hi_mm - o) / v + 0.5)) + 1))
    return i0, max(i0, i1)


def _box_ranges(grid: ImageGrid, lo_mm, hi_mm) -> list[tuple[int, int]]:
    return [_index_range(grid, k, lo_mm[k], hi_mm[k]) for k in range(grid.ndim)]


def _fine_coords(grid: ImageGrid, ranges, s: int):
    """Sample positions (mm) of a voxel block, broadcastable to ``(bi, bj, bk, sx, sy, sz)``.

    ``ranges`` holds ``(i0, i1)`` per grid axis. A 2D grid gets a dummy z axis: one sample at 0 mm.
    """
    offsets = (np.arange(s) + 0.5) / s - 0.5
    out = []
    for k in range(3):
        if k < grid.ndim:
            i0, i1 = ranges[k]
            c = grid.origin_mm[k] + np.arange(i0, i1) * grid.voxel_size_mm[k]
            a = c[:, None] + offsets[None, :] * grid.voxel_size_mm[k]
        else:
            a = np.zeros((1, 1))
        shape = [1] * 6
        shape[k], shape[k + 3] = a.shape
        out.append(a.reshape(shape))
    return out


def _blocks(grid: ImageGrid, ranges, s: int, target: int = _CHUNK_POINTS):
    """Split a voxel block into sub-blocks (along x, then y) of at most ~``target`` samples."""
    per_column = s ** grid.ndim * (ranges[2][1] - ranges[2][0] if grid.ndim == 3 else 1)
    (x0, x1), (y0, y1) = ranges[0], ranges[1]
    ny = y1 - y0
    if ny * per_column <= target:
        bi, bj = max(1, target // (ny * per_column)), ny
    else:
        bi, bj = 1, max(1, target // per_column)
    for i in range(x0, x1, bi):
        for j in range(y0, y1, bj):
            yield [(i, min(i + bi, x1)), (j, min(j + bj, y1))] + ([ranges[2]] if grid.ndim == 3 else [])


def _block_mean(grid: ImageGrid, fn, ranges, s: int) -> np.ndarray:
    """Voxel means of ``fn(x, y, z)`` (a function of sample positions in mm) over a voxel block."""
    out = np.empty(tuple(i1 - i0 for i0, i1 in ranges))
    for sub in _blocks(grid, ranges, s):
        x, y, z = _fine_coords(grid, sub, s)
        full = (x.shape[0], y.shape[1], z.shape[2], x.shape[3], y.shape[4], z.shape[5])
        mean = np.broadcast_to(fn(x, y, z), full).mean(axis=(3, 4, 5), dtype=np.float64)
        sl = tuple(slice(a - r[0], b - r[0]) for (a, b), r in zip(sub, ranges))
        out[sl] = mean if grid.ndim == 3 else mean[:, :, 0]
    return out


def _region_mean(grid: ImageGrid, fn, lo_mm, hi_mm, s: int) -> np.ndarray:
    """Full-size array of voxel means of ``fn``, evaluated only inside the box ``[lo_mm, hi_mm]``."""
    out = np.zeros(grid.shape)
    ranges = _box_ranges(grid, lo_mm, hi_mm)
    if all(i1 > i0 for i0, i1 in ranges):
        out[tuple(slice(*r) for r in ranges)] = _block_mean(grid, fn, ranges, s)
    return out


def _interval_fraction(grid: ImageGrid, axis: int, a: float, b: float) -> np.ndarray:
    """Exact fraction of each voxel along ``axis`` that lies inside ``[a, b]`` (mm)."""
    c = grid.voxel_centres(axis)
    v = grid.voxel_size_mm[axis]
    return np.clip((np.minimum(b, c + 0.5 * v) - np.maximum(a, c - 0.5 * v)) / v, 0.0, 1.0)


def _ball_fraction(grid: ImageGrid, centre, radius: float, s: int) -> np.ndarray:
    """Partial-volume fraction of a ball (3D) or disk (2D) of ``radius`` mm at ``centre``."""
    centre = np.asarray(centre, dtype=np.float64)
    zc = centre[2] if grid.ndim == 3 else 0.0

    def inside(x, y, z):
        return (x - centre[0]) ** 2 + (y - centre[1]) ** 2 + (z - zc) ** 2 <= radius * radius

    return _region_mean(grid, inside, centre - radius, centre + radius, s)


def _ball_mask(grid: ImageGrid, centre, radius: float) -> np.ndarray:
    """Voxels whose centre lies within ``radius`` mm of ``centre`` (bool, ``grid.shape``)."""
    centre = np.asarray(centre, dtype=np.float64)
    mask = np.zeros(grid.shape, dtype=bool)
    ranges = _box_ranges(grid, centre - radius, centre + radius)
    if all(i1 > i0 for i0, i1 in ranges):
        d2 = 0.0
        for k, (i0, i1) in enumerate(ranges):
            c = grid.origin_mm[k] + np.arange(i0, i1) * grid.voxel_size_mm[k] - centre[k]
            d2 = d2 + (c * c).reshape([-1 if j == k else 1 for j in range(grid.ndim)])
        mask[tuple(slice(*r) for r in ranges)] = d2 <= radius * radius
    return mask


# ============================================================================================
# Shepp–Logan in 3D
# ============================================================================================
#: The 3D Shepp–Logan head with "modified" (high-contrast) values, after L. A. Shepp and B. F.
#: Logan, IEEE Trans. Nucl. Sci. 21(3), 21-43 (1974) and the ellipsoid table of A. C. Kak and
#: M. Slaney, *Principles of Computerized Tomographic Imaging*, IEEE Press 1988, p. 102 (with the
#: published errata). Rows: value added, semi-axes a (x), b (y), c (z), centre x0, y0, z0, rotation
#: about z (degrees, counter-clockwise), in units of the phantom's half-width. The in-plane
#: geometry and values are those of :data:`MODIFIED_SHEPP_LOGAN_2D` and the axial semi-axes those
#: of Kak & Slaney; the structures Kak & Slaney centre at z = -0.25 are centred at z = 0 here, so
#: the central slice z = 0 reproduces the 2D phantom. The last two rows are Kak & Slaney's two
#: upper ellipsoids (z0 = 0.625).
SHEPP_LOGAN_3D = np.array([
    [1.0, 0.69, 0.92, 0.90, 0.0, 0.0, 0.0, 0.0],
    [-0.8, 0.6624, 0.874, 0.88, 0.0, -0.0184, 0.0, 0.0],
    [-0.2, 0.11, 0.31, 0.22, 0.22, 0.0, 0.0, -18.0],
    [-0.2, 0.16, 0.41, 0.21, -0.22, 0.0, 0.0, 18.0],
    [0.1, 0.21, 0.25, 0.50, 0.0, 0.35, 0.0, 0.0],
    [0.1, 0.046, 0.046, 0.046, 0.0, 0.1, 0.0, 0.0],
    [0.1, 0.046, 0.046, 0.046, 0.0, -0.1, 0.0, 0.0],
    [0.1, 0.046, 0.023, 0.02, -0.08, -0.605, 0.0, 0.0],
    [0.1, 0.023, 0.023, 0.02, 0.0, -0.606, 0.0, 0.0],
    [0.1, 0.023, 0.046, 0.02, 0.06, -0.605, 0.0, 0.0],
    [0.1, 0.04, 0.056, 0.10, 0.06, -0.105, 0.625, 0.0],
    [-0.1, 0.056, 0.056, 0.10, 0.0, 0.1, 0.625, 0.0],
])


def ellipsoid_phantom_3d(grid: ImageGrid, ellipsoids, half_width_mm: float, supersample: int = 2) -> np.ndarray:
    """Sum of uniform ellipsoids on a 3D grid.

    Parameters
    ----------
    grid : ImageGrid
        A 3D grid ``(nx, ny, nz)``; the ellipsoids are placed about the scanner origin (0, 0, 0).
    ellipsoids : array_like, shape ``(n, 8)``
        Rows ``(value, a, b, c, x0, y0, z0, phi_deg)``: the value added inside, the semi-axes along
        x, y and z, the centre, and a counter-clockwise rotation about the z axis in degrees.
        Lengths and centres are in units of ``half_width_mm``.
    half_width_mm : float
        The phantom's half-width in mm (the unit of the table).
    supersample : int
        Samples per voxel edge for partial-volume values (``supersample**3`` per voxel).

    Returns
    -------
    ndarray, shape ``grid.shape``, float64
    """
    grid = _check_grid(grid, (3,))
    try:
        table = np.asarray(ellipsoids, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError("ellipsoids must be a numeric array of shape (n, 8), "
                        f"got {type(ellipsoids).__name__}") from None
    if table.ndim != 2 or table.shape[1] != 8:
        raise ValueError("ellipsoids must have shape (n, 8) (value, a, b, c, x0, y0, z0, phi_deg), "
                         f"got {table.shape}")
    if not np.all(np.isfinite(table)):
        raise ValueError("ellipsoids must be finite")
    if np.any(table[:, 1:4] <= 0):
        raise ValueError(f"ellipsoids semi-axes (columns 1-3) must be > 0, got {table[:, 1:4].tolist()}")
    hw = as_positive_float("half_width_mm", half_width_mm)
    s = as_supersample(supersample)
    image = np.zeros(grid.shape)
    for value, a, b, c, x0, y0, z0, phi in table:
        a, b, c, x0, y0, z0 = (hw * t for t in (a, b, c, x0, y0, z0))
        co, si = math.cos(math.radians(phi)), math.sin(math.radians(phi))
        ex, ey = math.hypot(a * co, b * si), math.hypot(a * si, b * co)

        def inside(x, y, z, a=a, b=b, c=c, x0=x0, y0=y0, z0=z0, co=co, si=si):
            dx, dy = x - x0, y - y0
            q = ((dx * co + dy * si) / a) ** 2 + ((dy * co - dx * si) / b) ** 2
            return q + ((z - z0) / c) ** 2 <= 1.0

        image += value * _region_mean(grid, inside, (x0 - ex, y0 - ey, z0 - c), (x0 + ex, y0 + ey, z0 + c), s)
    return image


def shepp_logan_3d(grid: ImageGrid, half_width_mm: float | None = None, supersample: int = 2) -> np.ndarray:
    """The 3D modified Shepp–Logan head on a 3D grid (values in [0, 1]).

    The ellipsoids of :data:`SHEPP_LOGAN_3D` (Shepp & Logan 1974; Kak & Slaney 1988), centred on the
    scanner origin. The central slice ``z = 0`` resembles :func:`shepp_logan_2d`.

    Parameters
    ----------
    grid : ImageGrid
        A 3D grid ``(nx, ny, nz)``, z axial.
    half_width_mm : float, optional
        The phantom's half-width in mm; defaults to half the smaller transaxial edge of the grid,
        like :func:`shepp_logan_2d`. The head is ``1.8 * half_width_mm`` long axially and is cut
        where the grid is shorter.
    supersample : int
        Samples per voxel edge for partial-volume values.

    Returns
    -------
    ndarray, shape ``grid.shape``, float64
    """
    grid = _check_grid(grid, (3,))
    if half_width_mm is None:
        half_width_mm = 0.5 * min(grid.extent_mm[:2])
    return np.clip(ellipsoid_phantom_3d(grid, SHEPP_LOGAN_3D, half_width_mm, supersample), 0.0, None)


# ============================================================================================
# Procedural brain
# ============================================================================================
#: Tissue label codes of :func:`brain_phantom`.
BRAIN_LABELS = MappingProxyType({0: "background", 1: "scalp", 2: "skull", 3: "csf", 4: "grey matter",
                                 5: "white matter", 6: "basal ganglia", 7: "lesion"})

#: Relative activity per tissue label (arbitrary units) for each tracer of :func:`brain_phantom`.
#: Lesions (label 7) take the activity of the tissue they replace times their contrast factor.
TRACER_ACTIVITY = MappingProxyType({
    "fdg": MappingProxyType({0: 0.0, 1: 0.3, 2: 0.1, 3: 0.05, 4: 4.0, 5: 1.0, 6: 3.5}),
    "amyloid": MappingProxyType({0: 0.0, 1: 0.3, 2: 0.1, 3: 0.05, 4: 1.2, 5: 2.0, 6: 1.4}),
})

#: Linear attenuation coefficient at 511 keV per tissue label (1/mm).
BRAIN_MU = MappingProxyType({0: 0.0, 1: 0.0096, 2: 0.0143, 3: 0.0096, 4: 0.0096, 5: 0.0096, 6: 0.0096})

#: T1-weighted MR intensity per tissue label (in [0, 1]).
BRAIN_MR = MappingProxyType({0: 0.0, 1: 0.7, 2: 0.05, 3: 0.1, 4: 0.55, 5: 0.85, 6: 0.6})


@dataclass(frozen=True)
class Lesion:
    """One spherical lesion of a :class:`BrainPhantom`.

    Attributes
    ----------
    centre_mm : tuple of float
        Centre in scanner coordinates (mm), ``ndim`` entries.
    radius_mm : float
        Radius (mm).
    factor : float
        Activity multiplier inside the lesion (> 1 hot, < 1 cold).
    """

    centre_mm: tuple
    radius_mm: float
    factor: float

    @property
    def hot(self) -> bool:
        """Whether the lesion raises the activity (``factor > 1``)."""
        return self.factor > 1.0


@dataclass(frozen=True, eq=False)
class BrainPhantom:
    """Co-registered activity, attenuation, MR and tissue-label images of one subject.

    Attributes
    ----------
    activity : ndarray, ``grid.shape``, float64
        Relative tracer concentration (arbitrary units), partial-volume averaged.
    mu : ndarray, ``grid.shape``, float64
        Linear attenuation coefficient at 511 keV (1/mm).
    mr : ndarray, ``grid.shape``, float64
        T1-weighted MR intensity in [0, 1].
    labels : ndarray, ``grid.shape``, int16
        Tissue label per voxel (see :data:`BRAIN_LABELS`; the majority label of the voxel's samples).
    lesion_mask : ndarray, ``grid.shape``, bool
        True where the voxel's label is a lesion (7).
    lesions : tuple of Lesion
        The lesions, in the order they were drawn (empty without lesions).
    subject : mapping
        The per-seed anatomy parameters of :func:`brain_phantom`: ``scale``, ``aspect``,
        ``rotation_deg``, ``translation_mm``, ``scalp_mm``, ``skull_mm``, ``ventricle_scale``,
        ``fold_amplitude_mm``, ``head_size_mm`` (scalp extent along the head's own x, y, z axes,
        before rotation) and ``tracer``; empty for :func:`from_label_maps`.
    """

    activity: np.ndarray
    mu: np.ndarray
    mr: np.ndarray
    labels: np.ndarray
    lesion_mask: np.ndarray
    lesions: tuple = ()
    subject: Mapping = field(default_factory=dict)


# Nominal head (mm, head frame: x left-right, y front-back with +y anterior, z up, origin at the
# basal-ganglia level): the outer scalp surface is an egg-shaped ellipsoid.
_HEAD_X, _HEAD_Y, _HEAD_TOP, _HEAD_BOTTOM = 77.5, 96.0, 85.0, 70.0
_CSF_MM = 2.0            # CSF between skull and cortex
_GM_MIN_MM = 3.0         # thinnest cortical ribbon (at gyral crowns)
_SULCUS_FRACTION = 0.8   # sulcal CSF depth as a fraction of the folding amplitude
_FISSURE_HALF_MM = 1.0   # half-width of the interhemispheric fissure (CSF)
_MEDIAL_GM_MM = 3.0      # cortex lining the fissure
_FISSURE_RHO = 0.42      # the fissure reaches from the surface down to this fraction of the radius
_FISSURE_BOTTOM_MM = -20.0  # ... and runs down to 20 mm below the basal-ganglia level
_N_FOLD = 12             # plane waves in the folding pattern
_DEEP_BOX = (40.0, 48.0, 6.0, 26.0)  # |x| < 40, |y| < 48, |z - 6| < 26 holds every deep structure


class _Anatomy:
    """The per-seed anatomy of :func:`brain_phantom` (head frame, mm) and its world transform."""

    def __init__(self, rng: np.random.Generator):
        self.scale = rng.uniform(0.92, 1.08)
        self.aspect = rng.uniform(0.96, 1.04)
        self.rotation_deg = rng.uniform(-10.0, 10.0)
        self.translation = rng.uniform(-5.0, 5.0, 3)
        self.scalp = rng.uniform(4.5, 6.0)
        self.skull = rng.uniform(5.0, 7.0)
        self.ventricle = rng.uniform(0.75, 1.4)
        self.fold_amplitude = rng.uniform(4.0, 7.0)
        dirs = rng.normal(size=(_N_FOLD, 3))
        self.fold_dirs = dirs / np.linalg.norm(dirs, axis=1, keepdims=True)
        self.fold_k = rng.uniform(18.0, 40.0, _N_FOLD)
        self.fold_phase = rng.uniform(0.0, 2.0 * np.pi, _N_FOLD)
        w = rng.uniform(0.5, 1.0, _N_FOLD)
        self.fold_weight = 1.5 * w / math.sqrt(0.5 * float(np.sum(w * w)))  # standard deviation 1.5
        # world transform: world = t + R(theta) diag(sx, sy, sz) head
        self.sx = self.scale * math.sqrt(self.aspect)
        self.sy = self.scale / math.sqrt(self.aspect)
        self.sz = self.scale
        self.cos = math.cos(math.radians(self.rotation_deg))
        self.sin = math.sin(math.radians(self.rotation_deg))
        self.deep = self._deep_structures(self.ventricle)

    @staticmethod
    def _deep_structures(vs: float) -> list:
        """Ellipsoids painted in order: (label, centre, semi-axes, rotation about z in degrees)."""
        right = [  # right (+x) side, mirrored to the left with the rotation negated
            (3, (2.5 + 4.5 * vs, 9.0, 8.0), (5.0 * vs, 20.0, 13.0 * vs), 15.0),    # lateral ventricle
            (3, (16.0 + 2.0 * vs, -28.0, 6.0), (3.5 * vs, 11.0, 9.0 * vs), -30.0),  # atrium
            (6, (13.0 + 2.0 * vs, 14.0, 6.0), (5.0, 10.0, 10.0), 15.0),             # caudate head
            (6, (25.0, 2.0, -1.0), (5.5, 15.0, 11.0), 8.0),                          # putamen
            (6, (9.0, -13.0, 3.0), (8.0, 12.0, 9.0), 8.0),                           # thalamus
        ]
        rows = []
        for label, (x, y, z), axes, phi in right:
            rows.append((label, (x, y, z), axes, phi))
            rows.append((label, (-x, y, z), axes, -phi))
        rows.append((3, (0.0, -12.0, 3.0), (1.2 * vs, 12.0, 8.0), 0.0))               # third ventricle
        return [(label, c, 1.0 / np.asarray(axes), math.cos(math.radians(phi)), math.sin(math.radians(phi)))
                for label, c, axes, phi in rows]

    def subject(self) -> dict:
        return {"scale": self.scale, "aspect": self.aspect, "rotation_deg": self.rotation_deg,
                "translation_mm": tuple(float(t) for t in self.translation), "scalp_mm": self.scalp,
                "skull_mm": self.skull, "ventricle_scale": self.ventricle,
                "fold_amplitude_mm": self.fold_amplitude,
                "head_size_mm": (2 * _HEAD_X * self.sx, 2 * _HEAD_Y * self.sy,
                                 (_HEAD_TOP + _HEAD_BOTTOM) * self.sz)}

    # -- coordinates ------------------------------------------------------------------------
    def to_head(self, x, y, z):
        """Head-frame coordinates (mm) of world points (broadcasting arrays)."""
        dx, dy = x - self.translation[0], y - self.translation[1]
        return ((self.cos * dx + self.sin * dy) / self.sx, (self.cos * dy - self.sin * dx) / self.sy,
                (z - self.translation[2]) / self.sz)

    def to_world(self, h):
        """World coordinates (mm) of head-frame points, shape ``(..., 3)``."""
        u, v, w = h[..., 0] * self.sx, h[..., 1] * self.sy, h[..., 2] * self.sz
        return np.stack([self.translation[0] + self.cos * u - self.sin * v,
                         self.translation[1] + self.sin * u + self.cos * v,
                         self.translation[2] + w], axis=-1)

    # -- tissue classification -----------------------------------------------------------------
    def _fold(self, n: np.ndarray) -> np.ndarray:
        """Sulcal depth pattern in (0, 1) for unit directions ``n`` (m, 3): 0 gyral crown, 1 fundus."""
        f = np.cos((n @ self.fold_dirs.T) * self.fold_k + self.fold_phase) @ self.fold_weight
        return 0.5 * (1.0 + np.tanh(f))

    def classify(self, hx: np.ndarray, hy: np.ndarray, hz: np.ndarray) -> np.ndarray:
        """Tissue labels 0-6 (int8) of head-frame points (1D float arrays of equal length)."""
        r2 = hx * hx + hy * hy + hz * hz
        q = (hx / _HEAD_X) ** 2 + (hy / _HEAD_Y) ** 2 + (hz / np.where(hz >= 0.0, _HEAD_TOP, _HEAD_BOTTOM)) ** 2
        r = np.sqrt(r2)
        rho = np.sqrt(q)  # 1 on the outer scalp surface
        with np.errstate(divide="ignore", invalid="ignore"):
            depth = r / rho - r  # distance below the scalp surface along the ray from the head centre
        depth[rho < 1e-9] = np.inf
        lab = (depth >= 0.0).view(np.int8).copy()
        lab += depth >= self.scalp
        lab += depth >= self.scalp + self.skull  # 3: CSF inside the skull
        shell = self.scalp + self.skull + _CSF_MM
        deep = shell + _GM_MIN_MM + self.fold_amplitude
        lab[depth >= deep] = 5
        idx = np.flatnonzero((depth >= shell) & (depth < deep))
        if idx.size:  # cortex: sulcal CSF, folded grey-matter ribbon, white matter
            g = self._fold(np.stack([hx[idx], hy[idx], hz[idx]], axis=1) / r[idx, None])
            d = depth[idx] - shell
            outer = _SULCUS_FRACTION * self.fold_amplitude * np.clip((g - 0.6) / 0.4, 0.0, 1.0)
            inner = _GM_MIN_MM + self.fold_amplitude * g
            lab[idx] = np.where(d < outer, 3, np.where(d < inner, 4, 5))
        ax = np.abs(hx)
        idx = np.flatnonzero((ax < _FISSURE_HALF_MM + _MEDIAL_GM_MM) & (lab >= 4))
        if idx.size:  # interhemispheric fissure lined with medial cortex
            li, rh = lab[idx], rho[idx]
            above = hz[idx] > _FISSURE_BOTTOM_MM
            li = np.where((ax[idx] < _FISSURE_HALF_MM) & (rh > _FISSURE_RHO) & above, 3, li)
            li = np.where((li == 5) & (rh > _FISSURE_RHO - 0.04) & above, 4, li)
            lab[idx] = li
        bx, by, bz0, bz = _DEEP_BOX
        idx = np.flatnonzero((ax < bx) & (np.abs(hy) < by) & (np.abs(hz - bz0) < bz))
        if idx.size:  # ventricles and deep grey matter
            u, v, w, li = hx[idx], hy[idx], hz[idx], lab[idx]
            for label, (cx, cy, cz), (ia, ib, ic), co, si in self.deep:
                du, dv = u - cx, v - cy
                inside = ((du * co + dv * si) * ia) ** 2 + ((dv * co - du * si) * ib) ** 2 + ((w - cz) * ic) ** 2 <= 1.0
                li[inside] = label
            lab[idx] = li
        return lab

    def classify_world(self, pts: np.ndarray) -> np.ndarray:
        """Tissue labels of world points ``(..., 3)`` (mm)."""
        h = self.to_head(pts[..., 0].ravel(), pts[..., 1].ravel(), pts[..., 2].ravel())
        return self.classify(*h).reshape(pts.shape[:-1])


def _fibonacci_sphere(n: int) -> np.ndarray:
    """``n`` near-uniform unit vectors, shape ``(n, 3)``."""
    i = np.arange(n) + 0.5
    z = 1.0 - 2.0 * i / n
    phi = np.pi * (1.0 + 5.0 ** 0.5) * i
    rr = np.sqrt(1.0 - z * z)
    return np.stack([rr * np.cos(phi), rr * np.sin(phi), z], axis=1)


def _place_lesions(grid: ImageGrid, anatomy: _Anatomy, rng: np.random.Generator, n: int) -> tuple:
    """Draw ``n`` lesions inside the brain parenchyma (labels 4-6) and inside the grid."""
    if n == 0:
        return ()
    radii = rng.uniform(3.0, 8.0, n)
    n_hot = n // 2 + (int(rng.random() < 0.5) if n % 2 else 0)
    hot = rng.permutation(np.arange(n) < n_hot)
    factors = np.where(hot, rng.uniform(1.5, 3.0, n), rng.uniform(0.1, 0.5, n))
    # where to look: the brain's bounding box (world) inside the grid's bounding box
    corners = np.array([[sx * (_HEAD_X - 10), sy * (_HEAD_Y - 10), z]
                        for sx in (-1, 1) for sy in (-1, 1) for z in (-(_HEAD_BOTTOM - 10), _HEAD_TOP - 10)])
    corners = anatomy.to_world(corners)
    g_lo, g_hi = _grid_bounds(grid)
    if grid.ndim == 2:  # a lesion centred on the slice: probe its circle
        t = np.linspace(0.0, 2.0 * np.pi, 64, endpoint=False)
        sphere = np.stack([np.cos(t), np.sin(t), np.zeros_like(t)], axis=1)
        inner = sphere[::4]
    else:
        sphere, inner = _fibonacci_sphere(192), _fibonacci_sphere(32)
    probe = np.concatenate([sphere, 0.5 * inner, np.zeros((1, 3))])  # unit-radius probe points
    nd = grid.ndim
    placed: list[Lesion] = []
    half = 0.5 * (g_hi - g_lo)
    for radius, factor in zip(radii, factors):
        # the whole lesion inside the grid, except along axes shorter than it (thin slabs): centre inside
        inset = np.minimum(radius, half)
        lo = np.maximum(corners.min(0)[:nd], g_lo + inset)
        hi = np.minimum(corners.max(0)[:nd], g_hi - inset)
        found = None
        if np.all(hi >= lo):
            for _ in range(40):
                cand = rng.uniform(lo, hi, size=(128, nd))
                cand3 = np.concatenate([cand, np.zeros((128, 3 - nd))], axis=1)
                pts = cand3[:, None, :] + (radius + 0.5) * probe[None, :, :]
                ok = np.all((anatomy.classify_world(pts) >= 4), axis=1)
                for c in cand3[ok]:
                    if all(np.linalg.norm(c[:nd] - np.asarray(p.centre_mm)) >= radius + p.radius_mm + 1.0
                           for p in placed):
                        found = c
                        break
                if found is not None:
                    break
        if found is None:
            raise ValueError(f"could not place lesion {len(placed) + 1} of {n} (radius {radius:.1f} mm) inside the "
                             f"brain within the grid's field of view {grid!r}; use fewer lesions or a grid that "
                             "covers the head")
        placed.append(Lesion(tuple(float(v) for v in found[:nd]), float(radius), float(factor)))
    return tuple(placed)


def _voxel_mean(values: np.ndarray) -> np.ndarray:
    """Row means of ``(n_voxels, n_samples)``, exact (no rounding) where a row holds one value."""
    lo = values.min(axis=1)
    return np.where(lo == values.max(axis=1), lo, values.mean(axis=1))


def _render_brain(grid: ImageGrid, anatomy: _Anatomy, lesions: tuple, s: int, act_t, mu_t, mr_t):
    """Supersampled tissue maps: (activity, mu, mr, labels) arrays of ``grid.shape``."""
    shape3 = grid.shape if grid.ndim == 3 else grid.shape + (1,)
    n_sub = s ** grid.ndim
    activity, mu, mr = np.empty(shape3), np.empty(shape3), np.empty(shape3)
    labels = np.empty(shape3, dtype=np.int16)
    ranges = [(0, n) for n in grid.shape]
    lesion_boxes = [(les, _box_ranges(grid, np.asarray(les.centre_mm) - les.radius_mm,
                                      np.asarray(les.centre_mm) + les.radius_mm)) for les in lesions]
    for sub in _blocks(grid, ranges, s):
        x, y, z = _fine_coords(grid, sub, s)
        full = (x.shape[0], y.shape[1], z.shape[2], x.shape[3], y.shape[4], z.shape[5])
        hx, hy, hz = anatomy.to_head(x, y, z)
        lab = anatomy.classify(*(np.broadcast_to(h, full).ravel() for h in (hx, hy, hz))).reshape(full)
        act = act_t[lab]
        out_lab = lab
        for les, box in lesion_boxes:
            loc = [(max(a, c) - c, min(b, d) - c) for (a, b), (c, d) in zip(box, sub)]
            if any(i1 <= i0 for i0, i1 in loc):
                continue
            (i0, i1), (j0, j1) = loc[0], loc[1]
            k0, k1 = loc[2] if grid.ndim == 3 else (0, 1)
            c = np.asarray(les.centre_mm)
            cz = c[2] if grid.ndim == 3 else 0.0
            d2 = (x[i0:i1] - c[0]) ** 2 + (y[:, j0:j1] - c[1]) ** 2 + (z[:, :, k0:k1] - cz) ** 2
            tissue = lab[i0:i1, j0:j1, k0:k1]
            cond = (d2 <= les.radius_mm ** 2) & (tissue >= 4)
            if out_lab is lab:
                out_lab = lab.copy()
            act[i0:i1, j0:j1, k0:k1][cond] *= les.factor
            out_lab[i0:i1, j0:j1, k0:k1][cond] = 7
        sl = tuple(slice(a, b) for a, b in sub) + ((slice(0, 1),) if grid.ndim == 2 else ())
        vshape = full[:3]
        samples = out_lab.reshape(-1, n_sub)
        lo, hi = samples.min(axis=1), samples.max(axis=1)
        maj = lo.astype(np.int16)
        # voxels of one tissue take the table values exactly; the others (and lesions) average
        act_v, mu_v, mr_v = act_t[lo], mu_t[lo], mr_t[lo]
        mixed = np.flatnonzero((lo != hi) | (lo == 7))
        if mixed.size:
            m = samples[mixed]
            counts = np.stack([(m == k).sum(axis=1) for k in range(8)], axis=1)
            maj[mixed] = counts.argmax(axis=1)  # majority vote, ties to the lower label code
            tissue = lab.reshape(-1, n_sub)[mixed]
            act_v[mixed] = _voxel_mean(act.reshape(-1, n_sub)[mixed])
            mu_v[mixed] = _voxel_mean(mu_t[tissue])
            mr_v[mixed] = _voxel_mean(mr_t[tissue])
        activity[sl], mu[sl], mr[sl] = (v.reshape(vshape) for v in (act_v, mu_v, mr_v))
        labels[sl] = maj.reshape(vshape)
    if grid.ndim == 2:
        activity, mu, mr, labels = (a[:, :, 0] for a in (activity, mu, mr, labels))
    return activity, mu, mr, labels


def _tracer_name(tracer) -> str:
    return as_lowercase_choice("tracer", tracer, tuple(TRACER_ACTIVITY))


def _table(mapping) -> np.ndarray:
    t = np.zeros(8)
    for k, v in mapping.items():
        t[k] = v
    return t


def brain_phantom(grid: ImageGrid, seed=0, tracer: str = "fdg", lesions: int = 0, supersample: int = 2) -> BrainPhantom:
    """A procedural brain: activity, attenuation, MR and labels of one (seeded) subject.

    The head is built analytically in mm, independently of the voxel size, then sampled with
    ``supersample**ndim`` points per voxel. It is centred near the scanner origin with the
    basal-ganglia level at ``z = 0``; a 2D grid gives the transaxial slice ``z = 0`` of the same 3D
    head (the slice through the basal ganglia).

    Anatomy (nominal subject; head frame x left-right, y front-back, z up):

    * outer scalp surface: an egg-shaped ellipsoid 155 mm wide (x), 192 mm long (y), 85 mm above and
      70 mm below the basal-ganglia level; scalp 4.5-6 mm, skull 5-7 mm, then 2 mm of CSF;
    * cortex: a grey-matter ribbon whose boundary with white matter is pushed radially inwards by a
      folding pattern with a 4-7 mm amplitude: a random-phase sum of 12 plane waves ``cos(k d.n +
      phi)`` of the radial direction ``n`` (wavenumbers k = 18-40, random directions d; about 10-25
      folds around a transaxial circumference). The ribbon is 3 mm thick at gyral crowns, about
      5 mm on average; sulcal CSF dips into the deepest folds, leaving about 4 mm of cortex
      under it;
    * the interhemispheric fissure (2 mm CSF lined with medial cortex) over the outer 58 % of the
      radius; white matter inside;
    * lateral ventricles (frontal horns, bodies, atria) and the third ventricle as CSF; caudate
      heads, putamina and thalami as "basal ganglia" (label 6). The caudate heads indent the
      frontal horns into crescents.

    The brain spans about 130 mm axially; ventricles and deep grey matter are confined to a slab of
    about 50 mm around ``z = 0``, so slices near the top and bottom hold only cortex and white
    matter.

    Parameters
    ----------
    grid : ImageGrid
        A 2D ``(nx, ny)`` or 3D ``(nx, ny, nz)`` grid; z (axial) is last. A typical brain grid covers
        at least 180 x 220 x 150 mm around the origin; smaller grids cut the head.
    seed : int or numpy.random.Generator
        Selects the subject. Between seeds the head's size varies by +-8 % (uniform), its x/y
        aspect by +-4 %, it is rotated about z by up to +-10 deg and shifted by up to +-5 mm per axis,
        and the folding pattern, folding amplitude, skull/scalp thickness and ventricle size
        (x0.75-1.4) change. The same seed gives identical arrays.
    tracer : {"fdg", "amyloid"}
        Activity per tissue (:data:`TRACER_ACTIVITY`): FDG-like grey/white matter 4:1; amyloid-like
        with white matter above grey matter (2.0 vs 1.2).
    lesions : int
        Number of spherical (circular in 2D) lesions of radius 3-8 mm placed entirely inside the
        parenchyma (grey matter, white matter, basal ganglia) and inside the grid (for a grid
        thinner than a lesion, e.g. a one-slice slab, with the centre inside it). Half are hot
        (activity x1.5-3), half cold (x0.1-0.5); for an odd number the last kind is drawn at random.
        Lesions change the activity only (and the label, 7); mu and MR keep the tissue values.
    supersample : int
        Samples per voxel edge. Activity, mu and MR are means over the samples; the label is the
        majority label of the samples (ties go to the lower code).

    Returns
    -------
    BrainPhantom
        ``activity`` (arbitrary units), ``mu`` (1/mm: 0.0096 soft tissue/brain/CSF, 0.0143 bone,
        0 air), ``mr`` (T1-like in [0, 1]), ``labels`` (int16, :data:`BRAIN_LABELS`),
        ``lesion_mask`` (bool), ``lesions`` and ``subject`` (the drawn anatomy parameters), every
        array of ``grid.shape``.

    Raises
    ------
    TypeError, ValueError
        For a grid that is not a 2D/3D :class:`ImageGrid`, an unknown ``tracer``, ``lesions < 0``,
        ``supersample < 1`` or a bad ``seed`` (before any work); ValueError when the lesions cannot
        be placed inside the brain within the grid.

    Notes
    -----
    Every label, activity, mu and MR value at a point depends only on the point's position in mm
    and the seed; voxel size only changes the partial-volume averaging.
    """
    grid = _check_grid(grid)
    name = _tracer_name(tracer)
    n_lesions = as_nonnegative_int("lesions", lesions)
    s = as_supersample(supersample)
    rng = _make_rng(seed)
    anatomy = _Anatomy(rng)
    placed = _place_lesions(grid, anatomy, rng, n_lesions)
    activity, mu, mr, labels = _render_brain(grid, anatomy, placed, s, _table(TRACER_ACTIVITY[name]),
                                             _table(BRAIN_MU), _table(BRAIN_MR))
    return BrainPhantom(activity=activity, mu=mu, mr=mr, labels=labels, lesion_mask=labels == 7,
                        lesions=placed, subject=MappingProxyType({**anatomy.subject(), "tracer": name}))


def _per_label_table(name: str, values, max_label: int, *, nonnegative: bool) -> np.ndarray:
    """A lookup table ``t[label]`` from a {label: value} mapping or a sequence indexed by label."""
    if values is None:
        raise ValueError(f"{name} is required: a {{label: value}} mapping or a sequence indexed by label")
    if isinstance(values, Mapping):
        items = list(values.items())
    elif isinstance(values, (str, bytes)) or not hasattr(values, "__len__"):
        raise TypeError(f"{name} must be a {{label: value}} mapping or a sequence indexed by label, "
                        f"got {type(values).__name__}")
    else:
        arr = np.asarray(values)
        if arr.ndim != 1:
            raise ValueError(f"{name} must be one-dimensional when given as a sequence, got shape {arr.shape}")
        items = list(enumerate(arr.tolist()))
    table = np.zeros(max_label + 1)  # labels above the map's largest are validated, then unused
    for key, value in items:
        if isinstance(key, bool) or not isinstance(key, numbers.Integral):
            raise TypeError(f"{name} keys must be integer labels, got {key!r} ({type(key).__name__})")
        if key < 0:
            raise ValueError(f"{name} keys must be labels >= 0, got {key}")
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"{name}[{key}] must be a real number, got {value!r} ({type(value).__name__})")
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"{name}[{key}] must be finite, got {value}")
        if nonnegative and value < 0:
            raise ValueError(f"{name}[{key}] must be >= 0, got {value}")
        if key <= max_label:
            table[int(key)] = value
    return table


def from_label_maps(labels, activity_per_label, mu_per_label, grid: ImageGrid | None = None,
                    mr_per_label=None) -> BrainPhantom:
    """A :class:`BrainPhantom` from an integer label map (e.g. a BrainWeb or XCAT segmentation).

    pettk reads no files: load the label volume yourself (``np.asarray(nib.load(path).dataobj)``)
    and resample it to the grid you simulate on.

    Parameters
    ----------
    labels : array_like of int, shape ``(nx, ny)`` or ``(nx, ny, nz)``
        Label per voxel, integers >= 0 (at most 32767).
    activity_per_label : mapping or sequence
        Activity (arbitrary units, >= 0) per label: ``{label: value}`` or a sequence whose entry
        ``i`` is the value of label ``i``. Labels not listed get 0.
    mu_per_label : mapping or sequence
        Attenuation (1/mm, >= 0) per label, same forms; labels not listed get 0 (air).
    grid : ImageGrid, optional
        When given, ``labels.shape`` must equal ``grid.shape``.
    mr_per_label : mapping or sequence, optional
        MR intensity per label; the MR image is all zeros when omitted.

    Returns
    -------
    BrainPhantom
        ``activity``, ``mu``, ``mr`` (float64), ``labels`` (int16) of the label map's shape;
        ``lesion_mask`` all False, no lesions, empty ``subject``.

    Raises
    ------
    TypeError
        Non-integer labels (e.g. floats from ``get_fdata()``: cast with ``np.rint(x).astype(int)``),
        non-integer keys, non-numeric values, a grid that is not an :class:`ImageGrid`.
    ValueError
        Negative labels, labels above 32767, a labels array that is not 2D/3D, a shape that does not
        match ``grid``, negative activity or mu, non-finite values, a missing table.
    """
    if grid is not None:
        grid = _check_grid(grid)
    if hasattr(labels, "detach"):
        labels = labels.detach().cpu().numpy()
    lab = np.asarray(labels)
    if lab.dtype.kind not in "iu":
        raise TypeError(f"labels must be an integer array, got dtype {lab.dtype}; convert it first, e.g. "
                        "np.rint(labels).astype(np.int16) for a float label map")
    if lab.ndim not in (2, 3):
        raise ValueError(f"labels must be a 2D (nx, ny) or 3D (nx, ny, nz) array, got shape {lab.shape}")
    if grid is not None and lab.shape != grid.shape:
        raise ValueError(f"labels shape {lab.shape} does not match grid.shape {grid.shape}")
    lo, hi = (int(lab.min()), int(lab.max())) if lab.size else (0, 0)
    if lo < 0:
        raise ValueError(f"labels must be >= 0, got a minimum of {lo}")
    if hi > np.iinfo(np.int16).max:
        raise ValueError(f"labels must be <= {np.iinfo(np.int16).max}, got a maximum of {hi}")
    act_t = _per_label_table("activity_per_label", activity_per_label, hi, nonnegative=True)
    mu_t = _per_label_table("mu_per_label", mu_per_label, hi, nonnegative=True)
    mr_t = (np.zeros(hi + 1) if mr_per_label is None
            else _per_label_table("mr_per_label", mr_per_label, hi, nonnegative=False))
    idx = lab.astype(np.intp)
    return BrainPhantom(activity=act_t[idx], mu=mu_t[idx], mr=mr_t[idx], labels=lab.astype(np.int16),
                        lesion_mask=np.zeros(lab.shape, dtype=bool))


# ============================================================================================
# Test objects: cylinders, spheres, the NEMA image-quality phantom
# ============================================================================================
@dataclass(frozen=True, eq=False)
class ContrastPhantom:
    """A uniform background with spheres, and the masks to measure contrast recovery.

    Attributes
    ----------
    image : ndarray, ``grid.shape``, float64
        Activity (background value ``background``), partial-volume averaged.
    sphere_masks : list of ndarray (bool, ``grid.shape``)
        One per sphere: the voxels whose centre lies inside the sphere.
    background_mask : ndarray (bool, ``grid.shape``)
        Background voxels at least ``max(10 mm, 2 voxels)`` from every edge, sphere and insert.
    sphere_centres_mm : ndarray, ``(n_spheres, ndim)``
        Sphere centres (mm).
    sphere_radii_mm : ndarray, ``(n_spheres,)``
        Sphere radii (mm).
    true_contrast : float
        Hot-sphere to background activity ratio.
    sphere_contrasts : ndarray, ``(n_spheres,)``
        Activity ratio sphere / background of each sphere (0 for cold spheres).
    lung_mask : ndarray (bool) or None
        :func:`nema_iq_phantom` only: the voxels inside the lung insert.
    """

    image: np.ndarray
    sphere_masks: list
    background_mask: np.ndarray
    sphere_centres_mm: np.ndarray
    sphere_radii_mm: np.ndarray
    true_contrast: float
    sphere_contrasts: np.ndarray
    lung_mask: np.ndarray | None = None


def _disk_fraction(grid: ImageGrid, centre_xy, radius: float, s: int) -> np.ndarray:
    """Partial-volume fraction of a disk on the transaxial plane, shape ``grid.shape[:2]``."""
    return _ball_fraction(_xy_grid(grid), centre_xy[:2], radius, s)


def _voxel_centre_xy(grid: ImageGrid):
    return np.meshgrid(grid.voxel_centres(0), grid.voxel_centres(1), indexing="ij")


def _extrude(grid: ImageGrid, xy: np.ndarray, z: np.ndarray | None = None) -> np.ndarray:
    """A transaxial image repeated along z (times the axial profile ``z``) for 3D grids."""
    if grid.ndim == 2:
        return xy
    return xy[:, :, None] * (np.ones(grid.shape[2]) if z is None else z)[None, None, :]


def _check_fits_xy(grid: ImageGrid, centre, radius: float, what: str):
    lo, hi = _grid_bounds(grid)
    tol = 1e-9 * max(1.0, radius)
    if np.any(centre[:2] - radius < lo[:2] - tol) or np.any(centre[:2] + radius > hi[:2] + tol):
        raise ValueError(f"{what} centred at {tuple(np.round(centre[:2], 3))} mm does not fit in the grid's transaxial "
                         f"field of view x in [{lo[0]:.1f}, {hi[0]:.1f}], y in [{lo[1]:.1f}, {hi[1]:.1f}] mm")


def uniform_cylinder(grid: ImageGrid, radius_mm: float, value: float = 1.0, length_mm: float | None = None,
                     centre_mm=None, supersample: int = 4) -> np.ndarray:
    """A uniform cylinder along z (3D) or a uniform disk (2D).

    Parameters
    ----------
    grid : ImageGrid
        A 2D or 3D grid.
    radius_mm : float
        Radius (mm); the disk must fit in the grid's transaxial field of view.
    value : float
        Value inside.
    length_mm : float, optional
        Axial length (mm, 3D only); the cylinder then ends in flat caps (with exact partial-volume
        end slices). ``None`` fills the whole axial extent. A cylinder longer than the grid is cut.
    centre_mm : sequence of float, optional
        Centre (``ndim`` entries, mm); defaults to the centre of the grid.
    supersample : int
        Samples per voxel edge across the disk (``supersample**2`` per voxel).

    Returns
    -------
    ndarray, shape ``grid.shape``, float64
        Its integral (sum times voxel volume) is ``value * pi r^2`` (2D) or ``value * pi r^2 L``.
    """
    grid = _check_grid(grid)
    r = as_positive_float("radius_mm", radius_mm)
    value = _as_real("value", value)
    length = None if length_mm is None else as_positive_float("length_mm", length_mm)
    if length is not None and grid.ndim == 2:
        raise ValueError(f"length_mm applies to 3D grids only, got length_mm={length_mm} for a 2D grid")
    centre = (_grid_centre(grid) if centre_mm is None
              else as_float_vector("centre_mm", centre_mm, grid.ndim, broadcast_scalar=False))
    s = as_supersample(supersample)
    _check_fits_xy(grid, centre, r, f"a cylinder of radius_mm={r}")
    disk = value * _disk_fraction(grid, centre, r, s)
    if grid.ndim == 2:
        return disk
    z = None if length is None else _interval_fraction(grid, 2, centre[2] - 0.5 * length, centre[2] + 0.5 * length)
    return _extrude(grid, disk, z)


def _sphere_image(grid, background_xy, body_z, spheres, background, s):
    """Background (transaxial fraction x axial profile) plus spheres of their own value."""
    image = background * _extrude(grid, background_xy, body_z)
    for centre, radius, value in spheres:
        if value != background:
            image += (value - background) * _ball_fraction(grid, centre, radius, s)
    return image


def _background_mask(grid, inside_xy, spheres, margin, z_range=None):
    mask = _extrude(grid, inside_xy.astype(np.float64)) > 0.5
    if grid.ndim == 3 and z_range is not None:
        zc = grid.voxel_centres(2)
        mask &= ((zc >= z_range[0]) & (zc <= z_range[1]))[None, None, :]
    for centre, radius, _ in spheres:
        mask &= ~_ball_mask(grid, centre, radius + margin)
    return mask


def _seeded_angle(seed) -> float:
    if seed is None:
        return 0.0
    return float(_make_rng(seed).uniform(0.0, 2.0 * np.pi))


def hot_spheres(grid: ImageGrid, background_radius_mm: float, sphere_radii_mm=(5.0, 6.5, 8.5, 11.0, 14.0, 18.5),
                contrast: float = 4.0, ring_radius_mm: float | None = None, background: float = 1.0, seed=None,
                supersample: int = 4) -> ContrastPhantom:
    """Spheres of ``contrast`` times the background on a ring inside a uniform cylinder.

    The background is a cylinder along z (3D, filling the whole axial extent) or a disk (2D) of
    radius ``background_radius_mm`` centred on the grid; the spheres (circles in 2D) are evenly
    spaced on a ring in the grid's central transaxial plane, counter-clockwise in the given order.

    Parameters
    ----------
    grid : ImageGrid
        A 2D or 3D grid.
    background_radius_mm : float
        Radius of the background cylinder (mm); it must fit in the grid.
    sphere_radii_mm : float or sequence of float
        Sphere radii (mm); the default are the NEMA NU 2 spheres (10-37 mm diameter).
    contrast : float
        Sphere / background activity ratio (>= 0; 0 makes cold spheres).
    ring_radius_mm : float, optional
        Distance of the sphere centres from the axis (mm). By default half the background radius,
        moved as needed so that neighbouring spheres are >= 1 mm apart and every sphere lies >= 1 mm
        inside the background.
    background : float
        Background activity (> 0).
    seed : int, optional
        ``None`` puts the first sphere on the +x axis; an integer rotates the ring by a random
        angle (deterministic per seed).
    supersample : int
        Samples per voxel edge for partial-volume values.

    Returns
    -------
    ContrastPhantom
        ``true_contrast == contrast``.

    Raises
    ------
    TypeError, ValueError
        Bad types, non-positive radii, a background that does not fit the grid, spheres that do not
        fit in the background, overlap, or (3D) are taller than the grid.
    """
    grid = _check_grid(grid)
    bg_r = as_positive_float("background_radius_mm", background_radius_mm)
    if isinstance(sphere_radii_mm, numbers.Real) and not isinstance(sphere_radii_mm, bool):
        sphere_radii_mm = [sphere_radii_mm]
    radii = as_float_vector("sphere_radii_mm", sphere_radii_mm, positive=True)
    if radii.size == 0:
        raise ValueError("sphere_radii_mm must hold at least one radius, got an empty sequence")
    contrast = _as_real("contrast", contrast, minimum=0.0)
    background = _as_real("background", background, minimum=0.0, strict=True)
    s = as_supersample(supersample)
    angle0 = _seeded_angle(seed)
    centre = _grid_centre(grid)
    _check_fits_xy(grid, centre, bg_r, f"a background cylinder of background_radius_mm={bg_r}")
    n, gap, r_max = radii.size, 1.0, float(radii.max())
    if n == 1:
        ring_min = 0.0
    else:
        pair = radii + np.roll(radii, -1) + gap
        ring_min = float(pair.max() / (2.0 * math.sin(math.pi / n)))
    ring_max = bg_r - r_max - gap
    if ring_radius_mm is None:
        if ring_min > ring_max:
            raise ValueError(f"spheres with sphere_radii_mm={radii.tolist()} do not fit on a ring inside "
                             f"background_radius_mm={bg_r}: the ring needs a radius >= {ring_min:.1f} mm to keep them "
                             f"apart but <= {ring_max:.1f} mm to keep them inside")
        ring = min(max(0.5 * bg_r, ring_min), ring_max)
    else:
        ring = _as_real("ring_radius_mm", ring_radius_mm, minimum=0.0)
        if ring + r_max > bg_r:
            raise ValueError(f"spheres do not fit: ring_radius_mm={ring} + largest radius {r_max} exceeds "
                             f"background_radius_mm={bg_r}")
    angles = angle0 + 2.0 * np.pi * np.arange(n) / n
    centres = np.tile(centre, (n, 1))
    centres[:, 0] += ring * np.cos(angles)
    centres[:, 1] += ring * np.sin(angles)
    for i in range(n):
        for j in range(i + 1, n):
            if np.linalg.norm(centres[i] - centres[j]) < radii[i] + radii[j]:
                raise ValueError(f"spheres {i} and {j} (radii {radii[i]}, {radii[j]} mm) overlap on a ring of "
                                 f"ring_radius_mm={ring}; use a larger ring or fewer/smaller spheres")
    if grid.ndim == 3 and r_max > 0.5 * grid.extent_mm[2]:
        raise ValueError(f"a sphere of radius {r_max} mm does not fit in the grid's axial extent "
                         f"{grid.extent_mm[2]:.1f} mm")
    value = contrast * background
    spheres = [(c, float(r), value) for c, r in zip(centres, radii)]
    image = _sphere_image(grid, _disk_fraction(grid, centre, bg_r, s), None, spheres, background, s)
    margin = max(10.0, 2.0 * max(grid.voxel_size_mm))
    x, y = _voxel_centre_xy(grid)
    inside_xy = (x - centre[0]) ** 2 + (y - centre[1]) ** 2 <= (bg_r - margin) ** 2
    return ContrastPhantom(image=image, sphere_masks=[_ball_mask(grid, c, r) for c, r, _ in spheres],
                           background_mask=_background_mask(grid, inside_xy, spheres, margin),
                           sphere_centres_mm=centres, sphere_radii_mm=radii.copy(), true_contrast=contrast,
                           sphere_contrasts=np.full(n, contrast))


# NEMA NU 2 / IEC 61675-1 body phantom, interior (mm): a half-disk of radius 147 (anterior) on a
# 140 mm flat section with 77 mm quarter-circle corners (posterior); spheres on a 57.2 mm ring
# around a point 35 mm anterior of the half-disk's centre, where the lung insert (50 mm outer
# diameter, cold) also sits; sphere centres 70 mm from the lid, body 194 mm long.
_NEMA_R_TOP, _NEMA_R_CORNER, _NEMA_FLAT, _NEMA_OFFSET = 147.0, 77.0, 70.0, 35.0
_NEMA_RING, _NEMA_LUNG_OUTER, _NEMA_LUNG_INNER = 57.2, 25.0, 21.0
_NEMA_Z = (-124.0, 70.0)
_NEMA_SPHERES = ((10.0, 120.0, True), (13.0, 60.0, True), (17.0, 0.0, True), (22.0, 300.0, True),
                 (28.0, 240.0, False), (37.0, 180.0, False))  # diameter, angle (deg), hot


def _inside_d_shape(x, y, cx, cy, k, shrink=0.0):
    """Inside the NEMA body outline (scaled by k, shrunk inwards by ``shrink`` mm); (cx, cy) half-disk centre."""
    dx, dy = x - cx, y - cy
    top = dx * dx + dy * dy <= (k * _NEMA_R_TOP - shrink) ** 2
    flat = np.maximum(np.abs(dx) - k * _NEMA_FLAT, 0.0)
    bottom = flat * flat + dy * dy <= (k * _NEMA_R_CORNER - shrink) ** 2
    return np.where(dy >= 0.0, top, bottom)


def nema_iq_phantom(grid: ImageGrid, supersample: int = 4) -> ContrastPhantom:
    """A NEMA NU 2 (IEC 61675-1) image-quality phantom: body, six spheres and a lung insert.

    The body is the IEC "D" shape (interior 294 mm wide, 224 mm front-back, 194 mm long), filled
    with background activity 1. Six spheres of 10, 13, 17 and 22 mm diameter (hot, 4:1) and 28 and
    37 mm (cold, 0) sit on a 57.2 mm ring in the grid's central transaxial plane, around a cold
    lung insert (50 mm outer diameter, activity 0) running the length of the body. Sphere walls
    are ignored. The ring centre is placed at the grid centre (the body then spans y +-112 mm).

    When the grid's transaxial field of view is smaller than the body, everything (body, spheres,
    ring and insert) is scaled down by the same factor so that the body fits one voxel inside the
    grid; ``sphere_radii_mm`` reports the radii used. In 3D the body runs from 124 mm below to
    70 mm above the sphere plane (scaled) and is cut by a shorter grid.

    Parameters
    ----------
    grid : ImageGrid
        A 2D (the slice through the sphere centres) or 3D grid.
    supersample : int
        Samples per voxel edge for partial-volume values.

    Returns
    -------
    ContrastPhantom
        Spheres ordered by diameter (10 ... 37 mm); ``true_contrast`` 4, ``sphere_contrasts``
        (4, 4, 4, 4, 0, 0), ``lung_mask`` the voxels inside the 42 mm lung-material core.

    Raises
    ------
    TypeError, ValueError
        A grid that is not a 2D/3D :class:`ImageGrid`, ``supersample < 1``, or a 3D grid shorter
        than the largest sphere.
    """
    grid = _check_grid(grid)
    s = as_supersample(supersample)
    centre = _grid_centre(grid)
    half = 0.5 * np.asarray(grid.extent_mm[:2]) - np.asarray(grid.voxel_size_mm[:2])
    k = min(1.0, half[0] / _NEMA_R_TOP, half[1] / (_NEMA_R_TOP - _NEMA_OFFSET))
    if k <= 0:
        raise ValueError(f"grid {grid!r} is too small for the NEMA phantom")
    if grid.ndim == 3 and k * 0.5 * 37.0 > 0.5 * grid.extent_mm[2]:
        raise ValueError(f"the 37 mm sphere (scaled to {k * 37.0:.1f} mm) does not fit in the grid's axial extent "
                         f"{grid.extent_mm[2]:.1f} mm")
    cx, cy = centre[0], centre[1] - k * _NEMA_OFFSET  # centre of the half-disk
    xy_grid = _xy_grid(grid)
    lo = (cx - k * _NEMA_R_TOP, cy - k * _NEMA_R_CORNER)
    hi = (cx + k * _NEMA_R_TOP, cy + k * _NEMA_R_TOP)
    body_xy = _region_mean(xy_grid, lambda x, y, z: _inside_d_shape(x, y, cx, cy, k), lo, hi, s)
    body_xy -= _disk_fraction(grid, centre, k * _NEMA_LUNG_OUTER, s)  # cold insert, wall included
    body_z = None
    if grid.ndim == 3:
        z_lo, z_hi = centre[2] + k * _NEMA_Z[0], centre[2] + k * _NEMA_Z[1]
        body_z = _interval_fraction(grid, 2, z_lo, z_hi)
    spheres = []
    for diameter, angle, hot in _NEMA_SPHERES:
        c = centre.copy()
        c[0] += k * _NEMA_RING * math.cos(math.radians(angle))
        c[1] += k * _NEMA_RING * math.sin(math.radians(angle))
        spheres.append((c, 0.5 * k * diameter, 4.0 if hot else 0.0))
    image = _sphere_image(grid, body_xy, body_z, spheres, 1.0, s)
    margin = max(10.0, 2.0 * max(grid.voxel_size_mm))
    x, y = _voxel_centre_xy(grid)
    r2 = (x - centre[0]) ** 2 + (y - centre[1]) ** 2
    inside_xy = _inside_d_shape(x, y, cx, cy, k, margin) & (r2 >= (k * _NEMA_LUNG_OUTER + margin) ** 2)
    z_range = None if grid.ndim == 2 else (z_lo + margin, z_hi - margin)
    lung_xy = r2 <= (k * _NEMA_LUNG_INNER) ** 2
    lung = _extrude(grid, lung_xy.astype(np.float64)) > 0.5
    if grid.ndim == 3:
        zc = grid.voxel_centres(2)
        lung &= ((zc >= z_lo) & (zc <= z_hi))[None, None, :]
    return ContrastPhantom(image=image, sphere_masks=[_ball_mask(grid, c, r) for c, r, _ in spheres],
                           background_mask=_background_mask(grid, inside_xy, spheres, margin, z_range),
                           sphere_centres_mm=np.array([c for c, _, _ in spheres]),
                           sphere_radii_mm=np.array([r for _, r, _ in spheres]), true_contrast=4.0,
                           sphere_contrasts=np.array([v for _, _, v in spheres]), lung_mask=lung)

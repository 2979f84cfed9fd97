"""Image grids, scanners and sinogram layouts: everything reduces to LOR endpoints in mm.

This module owns the *geometry* layer of pettk (see ``DESIGN.md``):

* :class:`ImageGrid` -- the voxel grid an image lives on (2D or 3D, voxel size and origin in mm,
  NIfTI-style affine).
* :class:`RegularPolygonScanner` -- crystals on the sides of a regular polygon, stacked in rings
  along the last (axial) axis.
* :class:`SinogramLayout` -- how the LORs of a :class:`RegularPolygonScanner` are ordered into a
  sinogram ``(n_planes, n_views, n_radial)``.
* :class:`SinogramLayout2D` -- the 2D sinogram ``(n_views, n_radial)`` of one ring.
* :class:`ParallelBeam2D` -- 2D parallel-beam sinograms ``(n_views, n_radial)``, what most
  published diffusion papers use.
* :class:`LORList` -- an arbitrary list of LORs (list mode), shape ``(n_lors,)``.
* :class:`TOFParams` -- time-of-flight resolution and bins along each LOR.
* :func:`preset` -- named scanner/layout/grid combinations (``"bench-36ring"``, ``"mmr-like"``,
  ``"tiny"``).

Every measurement geometry (``SinogramLayout``, ``ParallelBeam2D``, ``LORList``) exposes the same
small interface that the projector consumes: ``ndim`` (2 or 3, the dimension of its points),
``shape`` (the shape of one measurement array), ``view_axis`` (the axis subsets split),
``lor_endpoints(views=None)`` and ``lor_tables(views=None)``, a compact factorised form of the
endpoints (see :class:`LORTables`) that keeps projector memory O(image + sinogram).

Coordinates are in mm; the scanner axis is the last image axis (``z``); images are C-order
arrays ``(nx, ny[, nz])``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ._validation import (
    as_float_vector,
    as_nonnegative_int,
    as_point_array,
    as_positive_float,
    as_positive_int,
    as_shape,
)

__all__ = [
    "ImageGrid",
    "RegularPolygonScanner",
    "SinogramLayout",
    "SinogramLayout2D",
    "ParallelBeam2D",
    "LORList",
    "LORTables",
    "TOFParams",
    "SPEED_OF_LIGHT_MM_PER_PS",
    "MAX_TOF_BINS",
    "MAX_LORS",
    "Preset",
    "from_dict",
    "preset",
    "PRESET_NAMES",
]

#: The most TOF bins a :class:`TOFParams` may have (a million: far beyond any scanner's TOF axis;
#: larger numbers are refused at construction instead of failing when the bin edges are made).
MAX_TOF_BINS = 2**20
#: The most LORs a parallel-beam geometry may have (``2**31 - 1``; their endpoint tables alone
#: would take 64 GB).
MAX_LORS = 2**31 - 1


# --------------------------------------------------------------------------------------------
# Image grid
# --------------------------------------------------------------------------------------------
class ImageGrid:
    """A regular 2D or 3D voxel grid in scanner coordinates (mm).

    Parameters
    ----------
    shape : tuple of int
        ``(nx, ny)`` or ``(nx, ny, nz)``; the axial axis is last.
    voxel_size_mm : float or sequence of float
        Voxel edge length per axis in mm (a scalar means isotropic voxels).
    origin_mm : sequence of float, optional
        Position (mm) of the *centre* of voxel ``[0, 0(, 0)]``. The default centres the grid on
        the scanner origin: ``origin = -(n - 1) / 2 * voxel_size`` per axis.

    Notes
    -----
    The centre of voxel ``i`` along axis ``k`` is ``origin[k] + i * voxel_size[k]``. The image's
    bounding box is the set of voxel centres extended by half a voxel on each side.
    """

    __slots__ = ("shape", "voxel_size_mm", "origin_mm")

    def __init__(self, shape: Sequence[int], voxel_size_mm, origin_mm=None):
        shape = as_shape("shape", shape)
        nd = len(shape)
        vs = as_float_vector("voxel_size_mm", voxel_size_mm, nd, positive=True)
        if origin_mm is None:
            origin = -(np.asarray(shape, dtype=np.float64) - 1.0) / 2.0 * vs
        else:
            origin = as_float_vector("origin_mm", origin_mm, nd, broadcast_scalar=False)
        self.shape: tuple[int, ...] = shape
        self.voxel_size_mm: tuple[float, ...] = tuple(float(v) for v in vs)
        self.origin_mm: tuple[float, ...] = tuple(float(o) + 0.0 for o in origin)

    # -- derived quantities -------------------------------------------------------------------
    @property
    def ndim(self) -> int:
        """Number of spatial dimensions (2 or 3)."""
        return len(self.shape)

    @property
    def n_voxels(self) -> int:
        """Total number of voxels."""
        return int(np.prod(self.shape))

    @property
    def extent_mm(self) -> tuple[float, ...]:
        """Edge length of the bounding box per axis (mm): ``shape * voxel_size``."""
        return tuple(n * v for n, v in zip(self.shape, self.voxel_size_mm))

    @property
    def voxel_volume_mm3(self) -> float:
        """Volume (3D, mm³) or area (2D, mm²) of one voxel."""
        return float(np.prod(self.voxel_size_mm))

    def voxel_centres(self, axis: int) -> np.ndarray:
        """Centres (mm) of the voxels along ``axis``, shape ``(shape[axis],)``."""
        axis = self._axis(axis)
        return self.origin_mm[axis] + np.arange(self.shape[axis]) * self.voxel_size_mm[axis]

    def coordinates(self) -> tuple[np.ndarray, ...]:
        """Voxel-centre coordinates (mm) as ``ndim`` arrays of shape ``self.shape`` (ij indexing)."""
        return tuple(np.meshgrid(*(self.voxel_centres(k) for k in range(self.ndim)), indexing="ij"))

    def world_to_index(self, points_mm) -> np.ndarray:
        """Continuous voxel indices of points given in mm, shape ``(..., ndim)``."""
        pts = as_point_array("points_mm", points_mm, self.ndim)
        return (pts - np.asarray(self.origin_mm)) / np.asarray(self.voxel_size_mm)

    def index_to_world(self, index) -> np.ndarray:
        """Positions in mm of (continuous) voxel indices, shape ``(..., ndim)``."""
        idx = as_point_array("index", index, self.ndim)
        return np.asarray(self.origin_mm) + idx * np.asarray(self.voxel_size_mm)

    @property
    def affine(self) -> np.ndarray:
        """NIfTI-style 4×4 affine mapping voxel indices ``(i, j, k, 1)`` to mm.

        A 2D grid is treated as a single slice at ``z = 0`` with a 1 mm slice thickness, which is
        how a 2D image is stored in a NIfTI file.
        """
        aff = np.eye(4)
        for k in range(self.ndim):
            aff[k, k] = self.voxel_size_mm[k]
            aff[k, 3] = self.origin_mm[k]
        return aff

    @classmethod
    def from_affine(cls, shape: Sequence[int], affine) -> ImageGrid:
        """Build a grid from a shape and an axis-aligned 4×4 affine (the inverse of :attr:`affine`)."""
        shape = as_shape("shape", shape)
        aff = np.asarray(affine, dtype=np.float64)
        if aff.shape != (4, 4):
            raise ValueError(f"affine must be 4x4, got shape {aff.shape}")
        nd = len(shape)
        lin = aff[:nd, :nd]
        if not np.allclose(lin, np.diag(np.diag(lin))):
            raise ValueError("affine must be axis-aligned (diagonal rotation/scale part); "
                             f"got {lin.tolist()}")
        return cls(shape, np.diag(lin), aff[:nd, 3])

    def to_dict(self) -> dict:
        """JSON-serialisable description; :func:`from_dict` rebuilds the grid."""
        return {"type": "ImageGrid", "shape": list(self.shape), "voxel_size_mm": list(self.voxel_size_mm),
                "origin_mm": list(self.origin_mm)}

    # -- helpers --------------------------------------------------------------------------------
    def _axis(self, axis: int) -> int:
        if isinstance(axis, bool) or not isinstance(axis, int) or not -self.ndim <= axis < self.ndim:
            raise ValueError(f"axis must be an integer in [-{self.ndim}, {self.ndim}), got {axis!r}")
        return axis % self.ndim

    def __eq__(self, other) -> bool:
        return (isinstance(other, ImageGrid) and self.shape == other.shape
                and self.voxel_size_mm == other.voxel_size_mm and self.origin_mm == other.origin_mm)

    def __hash__(self) -> int:
        return hash((self.shape, self.voxel_size_mm, self.origin_mm))

    def __repr__(self) -> str:
        return (f"ImageGrid(shape={self.shape}, voxel_size_mm={self.voxel_size_mm}, "
                f"origin_mm={tuple(round(o, 6) for o in self.origin_mm)})")


# --------------------------------------------------------------------------------------------
# Time of flight
# --------------------------------------------------------------------------------------------
#: Speed of light in mm per picosecond.
SPEED_OF_LIGHT_MM_PER_PS = 0.299792458


class TOFParams:
    """Time-of-flight resolution and binning along every LOR.

    Parameters
    ----------
    fwhm_ps, fwhm_mm : float
        The coincidence timing resolution, either as a time FWHM in ps or directly as the spatial
        FWHM along the LOR in mm (``fwhm_mm = fwhm_ps * c / 2``). Give exactly one.
    n_bins : int
        Number of TOF bins, at most :data:`MAX_TOF_BINS`.
    bin_width_mm : float
        Width of each TOF bin along the LOR, mm.
    n_sigmas : float
        Truncation of the Gaussian TOF kernel: a sample at position ``t`` contributes to the bins
        from the one containing ``t - n_sigmas * sigma`` to the one containing
        ``t + n_sigmas * sigma``.

    Notes
    -----
    Positions ``t`` are signed distances (mm) from the LOR's midpoint, positive towards its end
    point. The bins are centred on the midpoint: bin ``b`` spans
    ``[edge0 + b * w, edge0 + (b + 1) * w]`` with ``edge0 = -n_bins * w / 2``. A sample at ``t``
    adds to bin ``b`` the integral of the normalised Gaussian ``N(t, sigma^2)`` over that bin
    (a difference of two ``erf``), so the weights over all bins sum to ``erf(n_sigmas/sqrt 2)`` or
    more (0.9973 for 3 sigmas) when the bins cover ``t +- n_sigmas * sigma``. Bins need not cover
    every LOR's path through the image: the Gaussian mass outside them is dropped (see
    :class:`~pettk.projector.Projector`, which warns once with the numbers).
    """

    __slots__ = ("fwhm_mm", "n_bins", "bin_width_mm", "n_sigmas")

    def __init__(self, *, fwhm_ps: float | None = None, fwhm_mm: float | None = None, n_bins: int,
                 bin_width_mm: float, n_sigmas: float = 3.0):
        if (fwhm_ps is None) == (fwhm_mm is None):
            raise ValueError(f"give exactly one of fwhm_ps and fwhm_mm, got fwhm_ps={fwhm_ps!r}, fwhm_mm={fwhm_mm!r}")
        if fwhm_ps is not None:
            fwhm_mm = as_positive_float("fwhm_ps", fwhm_ps) * SPEED_OF_LIGHT_MM_PER_PS / 2.0
        self.fwhm_mm = as_positive_float("fwhm_mm", fwhm_mm)
        self.n_bins = as_positive_int("n_bins", n_bins, maximum=MAX_TOF_BINS)
        self.bin_width_mm = as_positive_float("bin_width_mm", bin_width_mm)
        self.n_sigmas = as_positive_float("n_sigmas", n_sigmas)

    @property
    def fwhm_ps(self) -> float:
        return self.fwhm_mm * 2.0 / SPEED_OF_LIGHT_MM_PER_PS

    @property
    def sigma_mm(self) -> float:
        """Standard deviation of the TOF kernel along the LOR, mm."""
        return self.fwhm_mm / (2.0 * math.sqrt(2.0 * math.log(2.0)))

    @property
    def coverage_mm(self) -> float:
        """Total length covered by the bins, ``n_bins * bin_width_mm``."""
        return self.n_bins * self.bin_width_mm

    @property
    def first_edge_mm(self) -> float:
        return -0.5 * self.coverage_mm

    @property
    def bin_edges_mm(self) -> np.ndarray:
        """Bin edges along the LOR (mm from the midpoint), shape ``(n_bins + 1,)``."""
        return self.first_edge_mm + np.arange(self.n_bins + 1) * self.bin_width_mm

    @property
    def bin_centres_mm(self) -> np.ndarray:
        """Bin centres along the LOR (mm from the midpoint), shape ``(n_bins,)``."""
        return self.first_edge_mm + (np.arange(self.n_bins) + 0.5) * self.bin_width_mm

    def to_dict(self) -> dict:
        return {"type": "TOFParams", "fwhm_mm": self.fwhm_mm, "n_bins": self.n_bins,
                "bin_width_mm": self.bin_width_mm, "n_sigmas": self.n_sigmas}

    def __eq__(self, other) -> bool:
        return isinstance(other, TOFParams) and all(getattr(self, k) == getattr(other, k) for k in self.__slots__)

    def __hash__(self) -> int:
        return hash(tuple(getattr(self, k) for k in self.__slots__))

    def __repr__(self) -> str:
        return (f"TOFParams(fwhm_mm={self.fwhm_mm:.6g}, n_bins={self.n_bins}, bin_width_mm={self.bin_width_mm}, "
                f"n_sigmas={self.n_sigmas})")


# --------------------------------------------------------------------------------------------
# The factorised LOR description the projector kernels consume
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LORTables:
    """LOR endpoints in a factorised form (all float64, mm).

    Attributes
    ----------
    transaxial : ndarray, shape ``(n_t, 4)``
        ``(x_start, y_start, x_end, y_end)`` per transaxial LOR.
    axial : ndarray of shape ``(n_a, 2)`` or None
        ``(z_start, z_end)``; ``None`` for 2D geometries.
    outer : bool
        If true the LORs are the outer product ``axial × transaxial`` in C order (LOR
        ``a * n_t + t``), as in a sinogram ``(n_planes, n_views, n_radial)``. If false,
        ``axial`` and ``transaxial`` are zipped row by row (``n_a == n_t``), as in list mode.
    tof_bin : ndarray of int64, shape ``(n_lors,)``, or None
        The TOF bin of every event (list mode only).
    """

    transaxial: np.ndarray
    axial: np.ndarray | None
    outer: bool
    tof_bin: np.ndarray | None = None

    @property
    def ndim(self) -> int:
        return 2 if self.axial is None else 3

    @property
    def n_lors(self) -> int:
        n_t = self.transaxial.shape[0]
        if self.axial is None or not self.outer:
            return n_t
        return self.axial.shape[0] * n_t

    def endpoints(self) -> tuple[np.ndarray, np.ndarray]:
        """Expand to ``(start, end)`` arrays of shape ``(n_lors, ndim)``."""
        t = self.transaxial
        if self.axial is None:
            return t[:, 0:2].copy(), t[:, 2:4].copy()
        if self.outer:
            n_a, n_t = self.axial.shape[0], t.shape[0]
            xy0 = np.broadcast_to(t[None, :, 0:2], (n_a, n_t, 2))
            xy1 = np.broadcast_to(t[None, :, 2:4], (n_a, n_t, 2))
            z0 = np.broadcast_to(self.axial[:, None, 0:1], (n_a, n_t, 1))
            z1 = np.broadcast_to(self.axial[:, None, 1:2], (n_a, n_t, 1))
            start = np.concatenate([xy0, z0], axis=-1).reshape(-1, 3)
            end = np.concatenate([xy1, z1], axis=-1).reshape(-1, 3)
            return start, end
        start = np.concatenate([t[:, 0:2], self.axial[:, 0:1]], axis=1)
        end = np.concatenate([t[:, 2:4], self.axial[:, 1:2]], axis=1)
        return start, end


def _select_views(n_views: int, views) -> np.ndarray:
    """Normalise a view selection (None, slice, int sequence) to an index array."""
    if views is None:
        return np.arange(n_views)
    if isinstance(views, slice):
        return np.arange(n_views)[views]
    idx = np.asarray(views)
    if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
        raise TypeError(f"views must be None, a slice or a 1D sequence of integers, got {views!r}")
    if idx.size and (idx.min() < 0 or idx.max() >= n_views):
        raise ValueError(f"views must lie in [0, {n_views}), got values from {idx.min()} to {idx.max()}")
    return idx.astype(np.int64)


# --------------------------------------------------------------------------------------------
# Scanners
# --------------------------------------------------------------------------------------------
class RegularPolygonScanner:
    """Crystals evenly spaced along the sides of a regular polygon, stacked in rings along z.

    Parameters
    ----------
    radius_mm : float
        Distance from the scanner axis to the middle of each polygon side (the inner radius of
        the polygon on which the LOR endpoints lie), mm.
    n_sides : int
        Number of polygon sides (detector modules around the ring), >= 3.
    n_crystals_per_side : int
        Crystals (LOR endpoints) per side.
    crystal_spacing_mm : float
        Centre-to-centre crystal distance along a side, mm. The crystals of one side must fit on
        it: ``n_crystals_per_side * crystal_spacing_mm <= 2 * radius_mm * tan(pi / n_sides)``.
    ring_positions_mm : sequence of float
        Axial (z) position of each ring, mm, strictly increasing.

    Notes
    -----
    Side ``s`` has its outward normal at angle ``phi_s = 2 pi s / n_sides`` from the x axis;
    crystal ``c`` of that side sits at ``radius * (cos phi_s, sin phi_s) + t_c * (-sin phi_s,
    cos phi_s)`` with ``t_c = (c - (n_crystals_per_side - 1) / 2) * crystal_spacing_mm``. The
    in-ring crystal index is ``s * n_crystals_per_side + c`` (counter-clockwise).
    """

    def __init__(self, radius_mm: float, n_sides: int, n_crystals_per_side: int,
                 crystal_spacing_mm: float, ring_positions_mm: Sequence[float]):
        self.radius_mm = as_positive_float("radius_mm", radius_mm)
        self.n_sides = as_positive_int("n_sides", n_sides, minimum=3)
        self.n_crystals_per_side = as_positive_int("n_crystals_per_side", n_crystals_per_side)
        self.crystal_spacing_mm = as_positive_float("crystal_spacing_mm", crystal_spacing_mm)
        rings = as_float_vector("ring_positions_mm", ring_positions_mm, broadcast_scalar=False)
        if rings.size == 0:
            raise ValueError("ring_positions_mm must hold at least one ring position")
        if rings.size > 1 and np.any(np.diff(rings) <= 0):
            raise ValueError(f"ring_positions_mm must be strictly increasing, got {rings.tolist()}")
        side_length = 2.0 * self.radius_mm * math.tan(math.pi / self.n_sides)
        needed = self.n_crystals_per_side * self.crystal_spacing_mm
        if needed > side_length * (1 + 1e-9):
            raise ValueError(
                f"crystals do not fit on a polygon side: n_crystals_per_side * crystal_spacing_mm = "
                f"{needed:.4g} mm exceeds the side length 2 * radius_mm * tan(pi / n_sides) = "
                f"{side_length:.4g} mm")
        self.ring_positions_mm = rings
        self.ring_positions_mm.setflags(write=False)
        self._xy = self._crystal_xy()
        self._xy.setflags(write=False)

    @property
    def n_rings(self) -> int:
        return int(self.ring_positions_mm.size)

    @property
    def n_crystals_per_ring(self) -> int:
        return self.n_sides * self.n_crystals_per_side

    @property
    def n_crystals(self) -> int:
        return self.n_rings * self.n_crystals_per_ring

    @property
    def crystal_xy_mm(self) -> np.ndarray:
        """Transaxial crystal positions (mm) within one ring, shape ``(n_crystals_per_ring, 2)``."""
        return self._xy

    def crystal_positions_mm(self) -> np.ndarray:
        """All crystal positions (mm), shape ``(n_rings, n_crystals_per_ring, 3)``."""
        xy = np.broadcast_to(self._xy, (self.n_rings,) + self._xy.shape)
        z = np.broadcast_to(self.ring_positions_mm[:, None, None], (self.n_rings, self._xy.shape[0], 1))
        return np.concatenate([xy, z], axis=-1)

    def to_dict(self) -> dict:
        return {"type": "RegularPolygonScanner", "radius_mm": self.radius_mm, "n_sides": self.n_sides,
                "n_crystals_per_side": self.n_crystals_per_side, "crystal_spacing_mm": self.crystal_spacing_mm,
                "ring_positions_mm": self.ring_positions_mm.tolist()}

    def _crystal_xy(self) -> np.ndarray:
        phi = 2.0 * np.pi * np.arange(self.n_sides) / self.n_sides
        t = (np.arange(self.n_crystals_per_side) - (self.n_crystals_per_side - 1) / 2.0) * self.crystal_spacing_mm
        normal = np.stack([np.cos(phi), np.sin(phi)], axis=-1)  # (n_sides, 2)
        tangent = np.stack([-np.sin(phi), np.cos(phi)], axis=-1)
        xy = self.radius_mm * normal[:, None, :] + t[None, :, None] * tangent[:, None, :]
        return xy.reshape(-1, 2)

    def __repr__(self) -> str:
        return (f"RegularPolygonScanner(radius_mm={self.radius_mm}, n_sides={self.n_sides}, "
                f"n_crystals_per_side={self.n_crystals_per_side}, "
                f"crystal_spacing_mm={self.crystal_spacing_mm}, n_rings={self.n_rings})")


# --------------------------------------------------------------------------------------------
# Measurement geometries
# --------------------------------------------------------------------------------------------
def _check_ring_sinogram(n: int, radial_trim) -> int:
    """Validate the crystal count and radial trim of a ring sinogram; returns the trim."""
    if n % 2:
        raise ValueError(f"SinogramLayout needs an even number of crystals per ring, got "
                         f"n_sides * n_crystals_per_side = {n}")
    radial_trim = as_nonnegative_int("radial_trim", radial_trim)
    if radial_trim > n // 2:
        raise ValueError(f"radial_trim must be in [0, {n // 2}] for {n} crystals per ring, got {radial_trim}")
    return radial_trim


def _crystal_pairs(n: int, radial_trim: int) -> np.ndarray:
    """In-ring crystal pairs ``(start, end)`` per view and radial bin, ``(n // 2, n + 1 - 2 trim, 2)``."""
    v = np.arange(n // 2)[:, None]
    d = np.arange(n + 1 - 2 * radial_trim)[None, :] + radial_trim
    a = (v + (d + 1) // 2) % n
    b = (v - d // 2) % n
    pairs = np.stack(np.broadcast_arrays(a, b), axis=-1).astype(np.int64)
    pairs.setflags(write=False)
    return pairs


class SinogramLayout:
    """The sinogram ordering of the LORs of a :class:`RegularPolygonScanner`.

    Parameters
    ----------
    scanner : RegularPolygonScanner
        The scanner; its number of crystals per ring ``N`` must be even.
    radial_trim : int
        Radial bins removed at each edge of every view (the LORs between the closest crystals).
        At 0 the two outermost bins join a crystal to itself: zero-length LORs that always
        project to 0 (kept so that the bin count matches the field's convention).
    max_ring_difference : int, optional
        Largest ``|ring_end - ring_start|`` kept; ``None`` keeps every ring pair.

    Notes
    -----
    **Views and radial bins.** With ``N`` crystals per ring there are ``N // 2`` views and
    ``N + 1 - 2 * radial_trim`` radial bins (the convention of published scanner configurations,
    e.g. 129 bins for 448 crystals and trim 160). Radial bin ``r`` of view ``v`` joins the in-ring
    crystals ``a`` (start) and ``b`` (end) with ``a - b = D = r + radial_trim``:
    ``a = v + ceil(D / 2)``, ``b = v - floor(D / 2)`` (mod ``N``). Even ``D`` are LORs perpendicular
    to the direction of crystal ``v``, odd ``D`` the interleaved ones in between; the radial
    position runs from the edge of the field of view nearest crystal ``v`` (small ``D``) through
    the centre (``D = N / 2``) to the opposite edge.

    **Planes.** A plane is an ordered ring pair ``(ring_start, ring_end)``: the LOR starts in
    ``ring_start`` at crystal ``a`` and ends in ``ring_end`` at crystal ``b``. Planes are ordered by
    segment, with ring difference ``delta = ring_end - ring_start`` in the order
    ``0, +1, -1, +2, -2, ...`` up to ``max_ring_difference``, and within a segment by increasing
    ``ring_start``. :attr:`plane_rings` holds the pairs, shape ``(n_planes, 2)``.

    **Shape.** ``(n_planes, n_views, n_radial)``; subsets split the view axis (axis 1).
    """

    view_axis = 1
    ndim = 3

    def __init__(self, scanner: RegularPolygonScanner, radial_trim: int = 0,
                 max_ring_difference: int | None = None):
        if not isinstance(scanner, RegularPolygonScanner):
            raise TypeError(f"scanner must be a RegularPolygonScanner, got {type(scanner).__name__}")
        n = scanner.n_crystals_per_ring
        radial_trim = _check_ring_sinogram(n, radial_trim)
        n_rings = scanner.n_rings
        if max_ring_difference is None:
            max_ring_difference = n_rings - 1
        else:
            max_ring_difference = as_nonnegative_int("max_ring_difference", max_ring_difference)
            if max_ring_difference > n_rings - 1:
                raise ValueError(f"max_ring_difference must be in [0, {n_rings - 1}] for a scanner "
                                 f"with {n_rings} rings, got {max_ring_difference}")
        self.scanner = scanner
        self.radial_trim = radial_trim
        self.max_ring_difference = max_ring_difference
        self.n_views = n // 2
        self.n_radial = n + 1 - 2 * radial_trim

        planes = [(r, r) for r in range(n_rings)]
        for delta in range(1, max_ring_difference + 1):
            planes += [(r, r + delta) for r in range(n_rings - delta)]
            planes += [(r + delta, r) for r in range(n_rings - delta)]
        self.plane_rings = np.asarray(planes, dtype=np.int64).reshape(-1, 2)
        self.plane_rings.setflags(write=False)

        self.crystal_pairs = _crystal_pairs(n, radial_trim)

    @property
    def n_planes(self) -> int:
        return int(self.plane_rings.shape[0])

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(n_planes, n_views, n_radial)``."""
        return (self.n_planes, self.n_views, self.n_radial)

    @property
    def n_lors(self) -> int:
        return self.n_planes * self.n_views * self.n_radial

    def to_dict(self) -> dict:
        return {"type": "SinogramLayout", "scanner": self.scanner.to_dict(), "radial_trim": self.radial_trim,
                "max_ring_difference": self.max_ring_difference}

    def plane_index(self, ring_start: int, ring_end: int) -> int:
        """Index of the plane joining ``ring_start`` to ``ring_end``."""
        hit = np.nonzero((self.plane_rings[:, 0] == ring_start) & (self.plane_rings[:, 1] == ring_end))[0]
        if hit.size == 0:
            raise ValueError(f"no plane joins ring {ring_start} to ring {ring_end} (n_rings="
                             f"{self.scanner.n_rings}, max_ring_difference={self.max_ring_difference})")
        return int(hit[0])

    def shape_for_views(self, views=None) -> tuple[int, ...]:
        return (self.n_planes, int(_select_views(self.n_views, views).size), self.n_radial)

    def lor_tables(self, views=None) -> LORTables:
        """Factorised endpoints: transaxial ``(n_views_sel * n_radial, 4)``, axial ``(n_planes, 2)``."""
        idx = _select_views(self.n_views, views)
        pairs = self.crystal_pairs[idx].reshape(-1, 2)
        xy = self.scanner.crystal_xy_mm
        transaxial = np.concatenate([xy[pairs[:, 0]], xy[pairs[:, 1]]], axis=1)
        axial = self.scanner.ring_positions_mm[self.plane_rings]
        return LORTables(np.ascontiguousarray(transaxial), np.ascontiguousarray(axial), outer=True)

    def lor_endpoints(self, views=None) -> tuple[np.ndarray, np.ndarray]:
        """``(start_mm, end_mm)``, each of shape ``(n_planes, n_views_sel, n_radial, 3)``."""
        start, end = self.lor_tables(views).endpoints()
        shape = self.shape_for_views(views) + (3,)
        return start.reshape(shape), end.reshape(shape)

    def __repr__(self) -> str:
        return (f"SinogramLayout(shape={self.shape}, radial_trim={self.radial_trim}, "
                f"max_ring_difference={self.max_ring_difference})")


class SinogramLayout2D:
    """The transaxial sinogram ``(n_views, n_radial)`` of one ring of a scanner, for 2D grids.

    Same views, radial bins and crystal pairs as :class:`SinogramLayout` (see its notes), with 2D
    LOR endpoints (the crystals' x, y). This is the 2D geometry of the published brain-PET
    diffusion papers (an mMR-like ring: 224 views × 129 radial bins).
    """

    view_axis = 0
    ndim = 2

    def __init__(self, scanner: RegularPolygonScanner, radial_trim: int = 0):
        if not isinstance(scanner, RegularPolygonScanner):
            raise TypeError(f"scanner must be a RegularPolygonScanner, got {type(scanner).__name__}")
        n = scanner.n_crystals_per_ring
        self.radial_trim = _check_ring_sinogram(n, radial_trim)
        self.scanner = scanner
        self.n_views = n // 2
        self.n_radial = n + 1 - 2 * self.radial_trim
        self.crystal_pairs = _crystal_pairs(n, self.radial_trim)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.n_views, self.n_radial)

    @property
    def n_lors(self) -> int:
        return self.n_views * self.n_radial

    def shape_for_views(self, views=None) -> tuple[int, ...]:
        return (int(_select_views(self.n_views, views).size), self.n_radial)

    def lor_tables(self, views=None) -> LORTables:
        idx = _select_views(self.n_views, views)
        pairs = self.crystal_pairs[idx].reshape(-1, 2)
        xy = self.scanner.crystal_xy_mm
        return LORTables(np.ascontiguousarray(np.concatenate([xy[pairs[:, 0]], xy[pairs[:, 1]]], axis=1)),
                         None, outer=True)

    def lor_endpoints(self, views=None) -> tuple[np.ndarray, np.ndarray]:
        """``(start_mm, end_mm)``, each of shape ``(n_views_sel, n_radial, 2)``."""
        start, end = self.lor_tables(views).endpoints()
        shape = self.shape_for_views(views) + (2,)
        return start.reshape(shape), end.reshape(shape)

    def to_dict(self) -> dict:
        return {"type": "SinogramLayout2D", "scanner": self.scanner.to_dict(), "radial_trim": self.radial_trim}

    def __repr__(self) -> str:
        return f"SinogramLayout2D(shape={self.shape}, radial_trim={self.radial_trim})"


class ParallelBeam2D:
    """2D parallel-beam sinograms ``(n_views, n_radial)``.

    Parameters
    ----------
    n_views : int
        Number of projection angles, evenly spaced over ``[0, pi)``: ``theta_v = pi * v / n_views``.
    n_radial : int
        Number of radial bins, centred on the origin: ``s_r = (r - (n_radial - 1) / 2) * spacing``.
        ``n_views * n_radial`` is at most :data:`MAX_LORS`.
    radial_spacing_mm : float
        Distance between neighbouring parallel LORs, mm.
    half_length_mm : float, optional
        LORs run from ``t = -half_length_mm`` to ``+half_length_mm`` along their direction. The
        default, ``n_radial * radial_spacing_mm``, covers any image inside the square of side
        ``n_radial * radial_spacing_mm``. The projector checks that the image fits.

    Notes
    -----
    LOR ``(v, r)`` is ``s_r * (cos theta_v, sin theta_v) + t * (-sin theta_v, cos theta_v)`` with
    ``t`` running from ``-half_length_mm`` (start) to ``+half_length_mm`` (end). View 0 integrates
    along the second image axis (y).
    """

    view_axis = 0
    ndim = 2

    def __init__(self, n_views: int, n_radial: int, radial_spacing_mm: float, half_length_mm: float | None = None):
        self.n_views = as_positive_int("n_views", n_views, maximum=MAX_LORS)
        self.n_radial = as_positive_int("n_radial", n_radial, maximum=MAX_LORS)
        if self.n_views * self.n_radial > MAX_LORS:
            raise ValueError(f"n_views * n_radial must be <= {MAX_LORS}, got {self.n_views} * {self.n_radial}")
        self.radial_spacing_mm = as_positive_float("radial_spacing_mm", radial_spacing_mm)
        if half_length_mm is None:
            half_length_mm = self.n_radial * self.radial_spacing_mm
        self.half_length_mm = as_positive_float("half_length_mm", half_length_mm)

    @property
    def shape(self) -> tuple[int, int]:
        """``(n_views, n_radial)``."""
        return (self.n_views, self.n_radial)

    @property
    def n_lors(self) -> int:
        return self.n_views * self.n_radial

    @property
    def view_angles_rad(self) -> np.ndarray:
        return np.pi * np.arange(self.n_views) / self.n_views

    @property
    def radial_positions_mm(self) -> np.ndarray:
        return (np.arange(self.n_radial) - (self.n_radial - 1) / 2.0) * self.radial_spacing_mm

    def shape_for_views(self, views=None) -> tuple[int, ...]:
        return (int(_select_views(self.n_views, views).size), self.n_radial)

    def to_dict(self) -> dict:
        return {"type": "ParallelBeam2D", "n_views": self.n_views, "n_radial": self.n_radial,
                "radial_spacing_mm": self.radial_spacing_mm, "half_length_mm": self.half_length_mm}

    def lor_tables(self, views=None) -> LORTables:
        idx = _select_views(self.n_views, views)
        theta = self.view_angles_rad[idx][:, None]
        s = self.radial_positions_mm[None, :]
        c, sn = np.cos(theta), np.sin(theta)
        cx, cy = s * c, s * sn
        L = self.half_length_mm
        transaxial = np.stack(np.broadcast_arrays(cx + L * sn, cy - L * c, cx - L * sn, cy + L * c), axis=-1)
        return LORTables(np.ascontiguousarray(transaxial.reshape(-1, 4)), None, outer=True)

    def lor_endpoints(self, views=None) -> tuple[np.ndarray, np.ndarray]:
        """``(start_mm, end_mm)``, each of shape ``(n_views_sel, n_radial, 2)``."""
        start, end = self.lor_tables(views).endpoints()
        shape = self.shape_for_views(views) + (2,)
        return start.reshape(shape), end.reshape(shape)

    def __repr__(self) -> str:
        return (f"ParallelBeam2D(n_views={self.n_views}, n_radial={self.n_radial}, "
                f"radial_spacing_mm={self.radial_spacing_mm}, half_length_mm={self.half_length_mm})")


class LORList:
    """An arbitrary list of LORs given by their endpoints (list mode); shape ``(n_lors,)``.

    Parameters
    ----------
    start_mm, end_mm : array_like, shape ``(n_lors, 2)`` or ``(n_lors, 3)``
        Start and end point of every LOR in mm (any leading shape is flattened in C order).
        Zero-length LORs are rejected.
    tof_bin : array_like of int, shape ``(n_lors,)``, optional
        The TOF bin of every event, for list-mode TOF projection (see :class:`TOFParams`; bins
        count along the direction from start to end). A projector without TOF ignores it.

    Subsets split the events into interleaved groups (``i::n``).
    """

    view_axis = 0

    def __init__(self, start_mm, end_mm, tof_bin=None):
        start = as_point_array("start_mm", start_mm)
        end = as_point_array("end_mm", end_mm)
        if start.shape != end.shape:
            raise ValueError(f"start_mm and end_mm must have the same shape, got {start.shape} and {end.shape}")
        nd = start.shape[-1]
        start = start.reshape(-1, nd)
        end = end.reshape(-1, nd)
        if start.shape[0] == 0:
            raise ValueError("LORList needs at least one LOR, got 0")
        length = np.linalg.norm(end - start, axis=1)
        if np.any(length <= 0):
            bad = int(np.flatnonzero(length <= 0)[0])
            raise ValueError(f"LOR {bad} has zero length (start_mm == end_mm == {start[bad].tolist()})")
        if tof_bin is not None:
            bins = np.asarray(tof_bin)
            if not np.issubdtype(bins.dtype, np.integer):
                raise TypeError(f"tof_bin must hold integers, got dtype {bins.dtype}")
            bins = bins.reshape(-1).astype(np.int64)
            if bins.shape[0] != start.shape[0]:
                raise ValueError(f"tof_bin must have one entry per LOR ({start.shape[0]}), got {bins.shape[0]}")
            if bins.size and bins.min() < 0:
                raise ValueError(f"tof_bin must be >= 0, got {bins.min()}")
            bins.setflags(write=False)
            tof_bin = bins
        self.ndim = nd
        self.start_mm = start
        self.end_mm = end
        self.tof_bin = tof_bin
        self.start_mm.setflags(write=False)
        self.end_mm.setflags(write=False)

    @property
    def shape(self) -> tuple[int]:
        return (int(self.start_mm.shape[0]),)

    @property
    def n_lors(self) -> int:
        return self.shape[0]

    @property
    def n_views(self) -> int:
        """For subsets a list counts each event as one 'view'."""
        return self.shape[0]

    def shape_for_views(self, views=None) -> tuple[int, ...]:
        return (int(_select_views(self.n_lors, views).size),)

    def to_dict(self) -> dict:
        """Includes every endpoint: fine for modest lists, large for real list-mode files."""
        return {"type": "LORList", "start_mm": self.start_mm.tolist(), "end_mm": self.end_mm.tolist(),
                "tof_bin": None if self.tof_bin is None else self.tof_bin.tolist()}

    def lor_tables(self, views=None) -> LORTables:
        idx = _select_views(self.n_lors, views)
        s, e = self.start_mm[idx], self.end_mm[idx]
        transaxial = np.ascontiguousarray(np.concatenate([s[:, :2], e[:, :2]], axis=1))
        axial = None if self.ndim == 2 else np.ascontiguousarray(np.stack([s[:, 2], e[:, 2]], axis=1))
        tof_bin = None if self.tof_bin is None else np.ascontiguousarray(self.tof_bin[idx])
        return LORTables(transaxial, axial, outer=False, tof_bin=tof_bin)

    def lor_endpoints(self, views=None) -> tuple[np.ndarray, np.ndarray]:
        idx = _select_views(self.n_lors, views)
        return self.start_mm[idx].copy(), self.end_mm[idx].copy()

    def __repr__(self) -> str:
        tof = "" if self.tof_bin is None else ", with TOF bins"
        return f"LORList(n_lors={self.n_lors}, ndim={self.ndim}{tof})"


def from_dict(description: dict):
    """Rebuild an :class:`ImageGrid`, scanner, layout, parallel beam, LOR list or :class:`TOFParams`
    from its ``to_dict()`` description (e.g. read from a file's JSON metadata)."""
    if not isinstance(description, dict) or "type" not in description:
        raise ValueError(f"a geometry description must be a dict with a 'type' key, got {description!r}")
    d = dict(description)
    kind = d.pop("type")
    if kind == "ImageGrid":
        return ImageGrid(d["shape"], d["voxel_size_mm"], d.get("origin_mm"))
    if kind == "RegularPolygonScanner":
        return RegularPolygonScanner(**d)
    if kind == "SinogramLayout":
        return SinogramLayout(from_dict(d["scanner"]), d["radial_trim"], d["max_ring_difference"])
    if kind == "SinogramLayout2D":
        return SinogramLayout2D(from_dict(d["scanner"]), d["radial_trim"])
    if kind == "ParallelBeam2D":
        return ParallelBeam2D(**d)
    if kind == "LORList":
        return LORList(d["start_mm"], d["end_mm"], d.get("tof_bin"))
    if kind == "TOFParams":
        return TOFParams(**d)
    raise ValueError(f"unknown geometry type {kind!r}")


# --------------------------------------------------------------------------------------------
# Presets
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Preset:
    """A named scanner with its sinogram layout and image grids.

    Attributes
    ----------
    name : str
    scanner : RegularPolygonScanner
    layout : SinogramLayout
    grid : ImageGrid
        The 3D image grid.
    grid_2d : ImageGrid
        The transaxial 2D grid (one slice of ``grid``, or the preset's 2D grid).
    layout_2d : SinogramLayout2D
        The 2D sinogram of one ring (same radial trim), for ``grid_2d``.
    """

    name: str
    scanner: RegularPolygonScanner
    layout: SinogramLayout
    grid: ImageGrid
    grid_2d: ImageGrid

    @property
    def layout_2d(self) -> SinogramLayout2D:
        return SinogramLayout2D(self.scanner, self.layout.radial_trim)


def _centred(positions: np.ndarray) -> np.ndarray:
    return positions - 0.5 * (positions[0] + positions[-1])


def _bench_36ring() -> Preset:
    pitch, gap = 5.31556, 2.8
    rings = np.arange(36) * pitch + (np.arange(36) // 9) * gap
    scanner = RegularPolygonScanner(380.6, 34, 16, 4.03125, _centred(rings))
    layout = SinogramLayout(scanner, radial_trim=65)
    grid = ImageGrid((215, 215, 71), 2.78)
    return Preset("bench-36ring", scanner, layout, grid, ImageGrid((215, 215), 2.78))


def _mmr_like() -> Preset:
    rings = _centred(np.arange(64) * 4.0625)
    scanner = RegularPolygonScanner(330.0, 56, 8, 4.0, rings)
    layout = SinogramLayout(scanner, radial_trim=160)
    # 127 planes at half the ring pitch span the 64 rings' axial extent.
    grid = ImageGrid((128, 128, 127), (2.0863, 2.0863, 4.0625 / 2))
    return Preset("mmr-like", scanner, layout, grid, ImageGrid((128, 128), 2.0863))


def _tiny() -> Preset:
    scanner = RegularPolygonScanner(60.0, 12, 8, 3.9, _centred(np.arange(4) * 4.0))
    layout = SinogramLayout(scanner, radial_trim=24)
    grid = ImageGrid((32, 32, 8), (2.5, 2.5, 2.0))
    return Preset("tiny", scanner, layout, grid, ImageGrid((32, 32), 2.5))


_PRESETS = {"bench-36ring": _bench_36ring, "mmr-like": _mmr_like, "tiny": _tiny}
PRESET_NAMES: tuple[str, ...] = tuple(_PRESETS)


def preset(name: str) -> Preset:
    """Return a named :class:`Preset`.

    ``"bench-36ring"``
        radius 380.6 mm, 34 sides × 16 crystals at 4.03125 mm, 36 rings at 5.31556 mm pitch with
        a 2.8 mm gap after every 9th ring, centred on z = 0; radial trim 65 (415 radial bins,
        272 views, 1296 planes); image grid 215×215×71 at 2.78 mm. The geometry used by published
        PET projector benchmarks.
    ``"mmr-like"``
        radius 330 mm, 56 sides × 8 crystals at 4.0 mm, 64 rings at 4.0625 mm; radial trim 160
        (129 radial bins, 224 views); 2D grid 128×128 at 2.0863 mm, 3D grid 128×128×127 with
        2.03125 mm slices.
    ``"tiny"``
        radius 60 mm, 12 sides × 8 crystals at 3.9 mm, 4 rings at 4 mm; radial trim 24 (49 radial
        bins, 48 views, 16 planes); grid 32×32×8 at (2.5, 2.5, 2.0) mm. For tests.
    """
    if not isinstance(name, str):
        raise TypeError(f"preset name must be a string, got {type(name).__name__}")
    try:
        return _PRESETS[name]()
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; expected one of {', '.join(PRESET_NAMES)}") from None

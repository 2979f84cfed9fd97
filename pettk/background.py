"""Simple additive background models: randoms and scatter sinograms.

These are *models for simulation*, not estimators: randoms from singles-like rates
(``R_ab = 2 tau s_a s_b``, normalised to a requested total) and scatter as a heavily smoothed copy
of the unscattered (true) sinogram, scaled to a requested scatter fraction. Neither is a Monte
Carlo simulation; they give simulated data a realistic, smooth additive term ``randoms +
scatter`` for :class:`~pettk.physics.ForwardModel`.

Both run in memory proportional to the sinogram with a small constant: the result plus working
blocks of bounded size (:data:`pettk._filters.CHUNK_BYTES`; planes for the randoms, views for the
scatter), on the device of the input.

The scatter model in 3D
-----------------------
Scatter is a low-frequency distribution in every sinogram direction: radially, and axially too.
Single-scatter simulation exploits this by computing scatter on a coarse grid of rings and
interpolating, and by taking an oblique sinogram's scatter from the direct sinograms at the same
axial position (Watson, "New, faster, image-based scatter correction for 3D PET", IEEE Trans.
Nucl. Sci. 47(4), 2000). With a :class:`~pettk.geometry.SinogramLayout`, :func:`scatter_sinogram`
therefore also smooths across planes. A plane is a ring pair ``(ring_start, ring_end)``; on the
``n_rings × n_rings`` grid of pairs the model applies the separable Gaussian
``exp(-((z_a - z_a')^2 + (z_b - z_b')^2) / (4 sigma^2))`` over the rings' axial positions ``z``
(mm). In the plane's own coordinates, the mean axial position ``(z_start + z_end) / 2`` and the
axial offset ``z_end - z_start`` (the ring difference in mm), this is a Gaussian of standard
deviation ``sigma`` in the mean position and ``2 sigma`` in the offset: scatter varies slowly along
the axis and more slowly still with obliquity. Ring pairs that the layout leaves out (beyond its
``max_ring_difference``) and rings beyond the scanner's ends carry no data; the filter is a
*normalised* convolution over the pairs present (``smooth(T) / smooth(1)``), a local weighted
mean, so the truncation neither darkens the edge planes nor the most oblique segments.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from tqdm.auto import tqdm

from . import _filters
from ._filters import gaussian_filter
from ._validation import as_positive_float
from .geometry import LORList, ParallelBeam2D, SinogramLayout, SinogramLayout2D, TOFParams

__all__ = ["randoms_sinogram", "scatter_sinogram"]


def randoms_sinogram(geometry, total_counts: float, singles=None, tof: TOFParams | None = None,
                     dtype=torch.float32, device=None) -> torch.Tensor:
    """Expected randoms per LOR, summing to ``total_counts``.

    Parameters
    ----------
    geometry : SinogramLayout, SinogramLayout2D, ParallelBeam2D or LORList
    total_counts : float
        Expected randoms over the whole sinogram (>= 0).
    singles : array, shape ``(n_rings, n_crystals_per_ring)``, optional
        Relative singles rate of every crystal (ring sinograms only; one ring for
        SinogramLayout2D): randoms on the LOR joining crystals ``a`` and ``b`` are proportional
        to ``s_a * s_b``. ``None``: uniform singles, i.e. a uniform randoms sinogram.
    tof : TOFParams, optional
        Spread each LOR's randoms evenly over the TOF bins (randoms are uniform in time).
    dtype : torch dtype
        Of the result (the rates are computed in float64).
    device : torch device, optional
        Where the result is made (default: the CPU).

    Returns
    -------
    torch.Tensor of ``geometry.shape`` (plus the TOF axis), counts per bin.

    Memory: the result plus blocks of planes (the singles products are formed a block at a time).
    """
    if not isinstance(geometry, (SinogramLayout, SinogramLayout2D, ParallelBeam2D, LORList)):
        raise TypeError("geometry must be a SinogramLayout, SinogramLayout2D, ParallelBeam2D or LORList, "
                        f"got {type(geometry).__name__}")
    total = float(total_counts)
    if not np.isfinite(total) or total < 0:
        raise ValueError(f"total_counts must be a finite number >= 0, got {total_counts!r}")
    if tof is not None and not isinstance(tof, TOFParams):
        raise TypeError(f"tof must be a TOFParams or None, got {type(tof).__name__}")
    shape = tuple(geometry.shape)
    out_shape = shape + ((tof.n_bins,) if tof is not None else ())
    if singles is None:
        # the same numbers as ones / sum(ones) * total, cast to dtype, then spread over TOF bins
        value = torch.tensor(1.0 / math.prod(shape) * total, dtype=torch.float64).to(dtype)
        if tof is not None:
            value = value / tof.n_bins
        return torch.empty(out_shape, dtype=dtype, device=device).fill_(value.item())
    if not isinstance(geometry, (SinogramLayout, SinogramLayout2D)):
        raise ValueError("singles rates need a SinogramLayout (crystal pairs)")
    s = np.asarray(singles, dtype=np.float64)
    scanner = geometry.scanner
    n_rings = 1 if isinstance(geometry, SinogramLayout2D) else scanner.n_rings
    expected = (n_rings, scanner.n_crystals_per_ring)
    if s.shape != expected:
        raise ValueError(f"singles must have shape {expected} (rings, crystals per ring), got {s.shape}")
    if not np.all(np.isfinite(s)) or np.any(s < 0) or not np.any(s > 0):
        raise ValueError("singles must be finite, >= 0 and not all zero")
    pairs = geometry.crystal_pairs  # (views, radial, 2)
    rings = np.zeros((1, 2), dtype=np.int64) if isinstance(geometry, SinogramLayout2D) else geometry.plane_rings
    n_planes = rings.shape[0]
    block = max(1, _filters.CHUNK_BYTES // (pairs.shape[0] * pairs.shape[1] * 8))

    def rate(p0: int, p1: int) -> np.ndarray:
        """Singles products of planes ``p0:p1``, shape ``(p1 - p0, views, radial)``, float64."""
        return s[rings[p0:p1, 0]][:, pairs[..., 0]] * s[rings[p0:p1, 1]][:, pairs[..., 1]]

    rate_sum = sum(float(rate(p0, min(n_planes, p0 + block)).sum()) for p0 in range(0, n_planes, block))
    out = torch.empty((n_planes,) + out_shape[len(shape) - 2:], dtype=dtype, device=device)
    for p0 in range(0, n_planes, block):
        p1 = min(n_planes, p0 + block)
        values = torch.from_numpy(rate(p0, p1) / rate_sum * total).to(dtype=dtype, device=device)
        if tof is not None:
            out[p0:p1] = (values / tof.n_bins).unsqueeze(-1)
        else:
            out[p0:p1] = values
    return out.reshape(out_shape)


def _check_nonnegative_finite(t: torch.Tensor, name: str) -> float:
    """``float(t.sum())`` after checking that ``t`` is finite and >= 0, without a full-size mask.

    With every element >= 0 (``min`` propagates NaN, so a NaN fails that test) the sum is
    finite exactly when every element is (and the sum does not overflow).
    """
    if t.numel() == 0:
        return 0.0
    total = float(t.sum())
    if not math.isfinite(total) or not bool(t.min() >= 0):
        raise ValueError(f"{name} must be finite and >= 0")
    return total


def _fov_diameter_mm(layout: SinogramLayout) -> float:
    """Twice the largest distance (mm) of a LOR of view 0 from the scanner axis."""
    xy = layout.lor_tables(views=[0]).transaxial
    start, end = xy[:, :2], xy[:, 2:]
    length = np.hypot(*(end - start).T)
    cross = np.abs(start[:, 0] * end[:, 1] - start[:, 1] * end[:, 0])
    return float(2.0 * np.max(np.where(length > 0, cross / np.where(length > 0, length, 1.0), 0.0)))


class _AxialSmoother:
    """The normalised separable Gaussian over ring pairs of a :class:`SinogramLayout` (see the
    module notes), for blocks of views.

    ``weights`` is the ``(n_rings, n_rings)`` Gaussian of the ring positions with standard
    deviation ``sqrt(2) * sigma_mm`` (per ring axis: ``sigma_mm`` in the mean axial position),
    ``index`` the position ``ring_start * n_rings + ring_end`` of each plane on the grid, and
    ``inv_norm`` (``(n_planes,)``) the reciprocal of the filtered indicator of the pairs present.
    """

    def __init__(self, layout: SinogramLayout, sigma_mm: float, dtype, device):
        z = torch.tensor(np.array(layout.scanner.ring_positions_mm, dtype=np.float64))
        n = z.numel()
        weights = torch.exp(-((z[:, None] - z[None, :]) ** 2) / (4.0 * sigma_mm ** 2))
        rings = torch.tensor(np.array(layout.plane_rings, dtype=np.int64))
        index = rings[:, 0] * n + rings[:, 1]
        present = torch.zeros(n * n, dtype=torch.float64)
        present[index] = 1.0
        norm = weights @ present.view(n, n) @ weights  # >= 1 on every present pair (W[i, i] = 1)
        self.n_rings = n
        self.weights = weights.to(dtype=dtype, device=device)
        self.index = index.to(device)
        self.inv_norm = (1.0 / norm.reshape(-1)[index]).to(dtype=dtype, device=device)

    def __call__(self, block: torch.Tensor, plane_axis: int) -> torch.Tensor:
        """Smooth ``block`` (``(*batch, n_planes, ...)``, the planes at ``plane_axis``) across planes."""
        shape = block.shape
        n, n_planes = self.n_rings, shape[plane_axis]
        batch = math.prod(shape[:plane_axis])
        flat = block.reshape(batch, n_planes, -1)
        features = flat.shape[-1]
        grid = flat.new_zeros((batch, n * n, features))
        grid.index_copy_(1, self.index, flat)
        del flat
        grid = torch.matmul(self.weights, grid.view(batch, n, n * features))  # over ring_start
        grid = torch.matmul(self.weights, grid.view(batch, n, n, features))  # over ring_end
        smooth = grid.view(batch, n * n, features).index_select(1, self.index)
        del grid
        smooth.mul_(self.inv_norm.view(1, -1, 1))
        return smooth.reshape(shape)


def scatter_sinogram(trues, scatter_fraction: float, smoothing: float = 0.25, tof_axis: bool = False,
                     geometry=None, axial_sigma_mm: float | None = None, progress: bool = False):
    """A smooth scatter sinogram with ``sum(S) / (sum(T) + sum(S)) = scatter_fraction``.

    Parameters
    ----------
    trues : array or tensor, shape ``(..., n_views, n_radial)`` (TOF: ``(..., n_views, n_radial, n_tof)``)
        The expected unscattered coincidences (attenuated, normalised ``A x``), >= 0. With a
        :class:`SinogramLayout` as ``geometry``: ``(..., n_planes, n_views, n_radial[, n_tof])``.
    scatter_fraction : float
        In [0, 1).
    smoothing : float
        Gaussian sigma as a fraction of the number of radial bins; scatter is a low-frequency
        distribution, so the default blurs over about a quarter of the radial range. Views are
        not blurred (they wrap around, and the trues already vary slowly across them).
    tof_axis : bool
        Whether the last axis holds TOF bins (smoothed over the same fraction of its length).
    geometry : SinogramLayout, SinogramLayout2D or ParallelBeam2D, optional
        The sinogram's geometry. A :class:`SinogramLayout` adds the axial smoothing across planes
        of the module notes (``trues`` must then have its shape, plus the TOF axis); the 2D
        geometries only check the shape. ``None``: radial (and TOF) smoothing only.
    axial_sigma_mm : float, optional
        With a SinogramLayout: the standard deviation (mm) of the axial Gaussian in the planes'
        mean axial position (twice that in their axial offset); 0 turns the axial smoothing off.
        Default: ``smoothing`` times the transaxial field-of-view diameter, i.e. about the radial
        blur's width in mm (72 mm on the mmr-like scanner).
    progress : bool
        Show a tqdm bar over the blocks of views.

    Returns
    -------
    The scatter sinogram, same shape, dtype, device and array type as ``trues``.

    Memory: the result plus blocks of views of bounded size (the axial filter works on a block's
    ``n_rings × n_rings`` grid of ring pairs); every filter is exact, so the numbers do not depend
    on the block size.
    """
    is_numpy = isinstance(trues, np.ndarray)
    t = torch.as_tensor(trues)
    if not t.is_floating_point():
        raise TypeError(f"trues must hold floating-point values, got {t.dtype}")
    sf = float(scatter_fraction)
    if not 0.0 <= sf < 1.0:
        raise ValueError(f"scatter_fraction must be in [0, 1), got {scatter_fraction!r}")
    as_positive_float("smoothing", smoothing)
    if geometry is not None and not isinstance(geometry, (SinogramLayout, SinogramLayout2D, ParallelBeam2D)):
        raise TypeError("geometry must be a SinogramLayout, SinogramLayout2D, ParallelBeam2D or None, "
                        f"got {type(geometry).__name__}")
    core = 3 if tof_axis else 2
    sino_dims = core + (1 if isinstance(geometry, SinogramLayout) else 0)
    if t.ndim < sino_dims:
        what = ("planes, " if isinstance(geometry, SinogramLayout) else "") + "views, radial" + (
            ", tof" if tof_axis else "")
        raise ValueError(f"trues must have at least {sino_dims} dimensions ({what}), got shape {tuple(t.shape)}")
    if geometry is not None:
        n_geo = len(geometry.shape)
        got = tuple(t.shape[t.ndim - sino_dims:t.ndim - sino_dims + n_geo])
        if got != tuple(geometry.shape):
            raise ValueError(f"trues must have the geometry's shape {tuple(geometry.shape)} "
                             f"{'followed by the TOF axis ' if tof_axis else ''}in its last {sino_dims} "
                             f"dimensions, got shape {tuple(t.shape)}")
    axial = None
    if isinstance(geometry, SinogramLayout):
        if axial_sigma_mm is None:
            sigma_mm = float(smoothing) * _fov_diameter_mm(geometry)
        else:
            if isinstance(axial_sigma_mm, bool) or not isinstance(axial_sigma_mm, (int, float, np.floating,
                                                                                    np.integer)):
                raise TypeError(f"axial_sigma_mm must be a number or None, got {axial_sigma_mm!r}")
            sigma_mm = float(axial_sigma_mm)
            if not math.isfinite(sigma_mm) or sigma_mm < 0:
                raise ValueError(f"axial_sigma_mm must be a finite number >= 0, got {axial_sigma_mm!r}")
        if sigma_mm > 0 and geometry.scanner.n_rings > 1:
            axial = sigma_mm
    elif axial_sigma_mm is not None:
        raise ValueError("axial_sigma_mm needs a SinogramLayout geometry (ring pairs)")
    total_trues = _check_nonnegative_finite(t, "trues")
    if sf == 0.0 or total_trues == 0.0:
        out = torch.zeros_like(t)
        return out.numpy() if is_numpy else out

    view_axis = t.ndim - core
    axes = list(range(view_axis + 1, t.ndim))  # radial (and TOF)
    sigmas = [smoothing * t.shape[a] for a in axes]
    smoother = None
    per_view = t.numel() // t.shape[view_axis]  # elements of one view (numel > 0 here)
    if axial is not None:
        smoother = _AxialSmoother(geometry, axial, t.dtype, t.device)
        n_rings = geometry.scanner.n_rings
        per_view = per_view // geometry.n_planes * max(geometry.n_planes, n_rings * n_rings)
    n_views = t.shape[view_axis]
    block = max(1, _filters.CHUNK_BYTES // max(1, per_view * t.element_size()))
    out = torch.empty_like(t, memory_format=torch.contiguous_format)
    for v0 in tqdm(range(0, n_views, block), desc="scatter", disable=not progress, leave=False):
        nv = min(block, n_views - v0)
        smooth = gaussian_filter(t.narrow(view_axis, v0, nv), sigmas, axes)
        if smoother is not None:
            smooth = smoother(smooth, view_axis - 1)
        out.narrow(view_axis, v0, nv).copy_(smooth)
        del smooth
    total_smooth = float(out.sum())
    if total_smooth == 0.0:
        out.zero_()
    else:
        out.mul_(sf / (1.0 - sf) * total_trues / total_smooth)
    return out.numpy() if is_numpy else out

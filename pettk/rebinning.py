"""Single-slice rebinning (SSRB): a fully 3D ring sinogram as a stack of 2D direct-plane sinograms.

M. E. Daube-Witherspoon and G. Muehllehner, "Treatment of axial data in three-dimensional PET",
J. Nucl. Med. 28(11), 1717-1724, 1987. A LOR from ring ``r_a`` to ring ``r_b`` is assigned to the
transaxial slice at the mean axial position of its two rings, ``k = r_a + r_b`` (``2 R - 1``
slices for ``R`` rings: the direct planes at even ``k``, the cross planes at odd ``k``, half a
ring pitch apart). Each rebinned slice is the **sum** of its planes, so Poisson counts stay
Poisson counts, and :func:`ssrb_planes` tells how many planes went into each slice.

The transaxial sampling is unchanged (same views and radial bins as
:class:`~pettk.geometry.SinogramLayout2D` of the same scanner and radial trim), which is what lets
a network trained on 2D direct-plane sinograms (LegoPET, the sinogram restorers) read 3D data.
SSRB is exact for activity on the scanner axis and blurs axially off axis in proportion to the
ring difference and the radial distance; keep ``max_ring_difference`` small for it, or use it
only as a start for a fully 3D reconstruction (what :mod:`pettk.priors.volume` does).
"""

from __future__ import annotations

import numpy as np
import torch

from .geometry import SinogramLayout

__all__ = ["ssrb", "ssrb_planes", "ssrb_positions_mm"]


def _check_layout(layout) -> SinogramLayout:
    if not isinstance(layout, SinogramLayout):
        raise TypeError(f"layout must be a pettk SinogramLayout (a 3D ring sinogram), got {type(layout).__name__}")
    return layout


def _slice_index(layout: SinogramLayout) -> np.ndarray:
    rings = np.asarray(layout.plane_rings)
    return rings[:, 0] + rings[:, 1]


def _kept_planes(layout: SinogramLayout, max_ring_difference) -> np.ndarray:
    """Boolean mask of the planes with ``|r_a - r_b| <= max_ring_difference`` (all for ``None``)."""
    rings = np.asarray(layout.plane_rings)
    if max_ring_difference is None:
        return np.ones(rings.shape[0], dtype=bool)
    if isinstance(max_ring_difference, bool) or not isinstance(max_ring_difference, (int, np.integer)) \
            or max_ring_difference < 1:
        raise ValueError(f"max_ring_difference must be an integer >= 1 (or None: every plane), got "
                         f"{max_ring_difference!r}; with 0 the cross-plane slices would get no counts")
    return np.abs(rings[:, 0] - rings[:, 1]) <= int(max_ring_difference)


def ssrb_planes(layout: SinogramLayout, max_ring_difference: int | None = None) -> np.ndarray:
    """Planes summed into each rebinned slice, shape ``(2 R - 1,)`` (int); with
    ``max_ring_difference``, only the planes :func:`ssrb` keeps."""
    layout = _check_layout(layout)
    keep = _kept_planes(layout, max_ring_difference)
    return np.bincount(_slice_index(layout)[keep], minlength=2 * layout.scanner.n_rings - 1)


def ssrb_positions_mm(layout: SinogramLayout) -> np.ndarray:
    """Axial centre of each rebinned slice in mm, shape ``(2 R - 1,)``: the mean of its two rings'
    positions (``scanner.ring_positions_mm``)."""
    layout = _check_layout(layout)
    z = np.asarray(layout.scanner.ring_positions_mm, dtype=np.float64)
    n = z.size
    return np.array([(z[k // 2] + z[k - k // 2]) / 2 for k in range(2 * n - 1)])


def ssrb(layout: SinogramLayout, sinogram, max_ring_difference: int | None = None):
    """Rebin a 3D sinogram ``(..., n_planes, n_views, n_radial)`` to ``(..., 2 R - 1, n_views, n_radial)``.

    Parameters
    ----------
    layout : SinogramLayout
        The layout of ``sinogram`` (any ``max_ring_difference``).
    sinogram : numpy array or torch tensor
        Counts, factors or expected values per plane (real). Leading dimensions are kept.
    max_ring_difference : int >= 1, optional
        Rebin only the planes with ``|r_a - r_b| <=`` this (default: every plane of ``layout``):
        SSRB's axial blur grows with the ring difference, so a stack for a 2D network is sharper
        with fewer counts (every slice keeps at least one plane).

    Returns
    -------
    The per-slice sums, in ``sinogram``'s array type, dtype and device. A slice no plane reaches
    (possible only with ``max_ring_difference = 0``: the cross planes) is 0.
    """
    layout = _check_layout(layout)
    if not isinstance(sinogram, (np.ndarray, torch.Tensor)):
        raise TypeError(f"sinogram must be a numpy array or a torch tensor, got {type(sinogram).__name__}")
    shape = tuple(sinogram.shape[-3:])
    if sinogram.ndim < 3 or shape != tuple(layout.shape):
        raise ValueError(f"sinogram must have shape (..., {', '.join(map(str, layout.shape))}) (the layout's "
                         f"planes, views, radial bins), got {tuple(sinogram.shape)}")
    keep = _kept_planes(layout, max_ring_difference)
    is_numpy = isinstance(sinogram, np.ndarray)
    s = torch.from_numpy(np.ascontiguousarray(sinogram)) if is_numpy else sinogram
    if s.dtype == torch.bool or s.is_complex():
        raise TypeError(f"sinogram must hold real values, got dtype {s.dtype}")
    planes = np.flatnonzero(keep)
    if planes.size < keep.size:
        s = s.index_select(s.ndim - 3, torch.as_tensor(planes, device=s.device))
    index = torch.as_tensor(_slice_index(layout)[keep], device=s.device)
    n_slices = 2 * layout.scanner.n_rings - 1
    out = s.new_zeros((*s.shape[:-3], n_slices, *s.shape[-2:]))
    out.index_add_(s.ndim - 3, index, s)
    return out.numpy() if is_numpy else out

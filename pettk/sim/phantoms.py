"""Analytic phantoms sampled on an :class:`~pettk.geometry.ImageGrid`.

Each voxel holds the mean of the analytic object over ``supersample**ndim`` evenly spaced points
inside the voxel, so edges carry partial-volume values instead of staircase artefacts.
"""

from __future__ import annotations

import numpy as np

from .._validation import as_positive_int
from ..geometry import ImageGrid

__all__ = ["ellipse_phantom_2d", "shepp_logan_2d", "MODIFIED_SHEPP_LOGAN_2D"]

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
    supersample = as_positive_int("supersample", supersample)
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
    return ellipse_phantom_2d(grid, MODIFIED_SHEPP_LOGAN_2D, half_width_mm, supersample)

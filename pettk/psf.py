"""Image-space resolution model: a separable Gaussian point-spread function.

The PSF models detector blurring (positron range, non-collinearity, crystal size) in image space,
as most research and clinical reconstructions do: ``ForwardModel`` applies it before projecting.
"""

from __future__ import annotations

import numpy as np
import torch

from ._filters import FWHM_PER_SIGMA, gaussian_filter
from ._validation import as_bounded_float, as_float_vector
from .geometry import ImageGrid

__all__ = ["GaussianPSF"]

#: ``truncate`` (standard deviations) must lie in ``(0, MAX_TRUNCATE]``.
MAX_TRUNCATE = 20.0
#: A FWHM may be at most this many times the image's extent along its axis: wider kernels blur
#: everything flat anyway, and an unbounded one would allocate without limit.
MAX_FWHM_PER_EXTENT = 10.0


class GaussianPSF:
    """Separable Gaussian blur with a FWHM in mm per axis; self-adjoint.

    Parameters
    ----------
    grid : ImageGrid
        The image grid (sets the voxel size that converts mm to voxels).
    fwhm_mm : float or sequence of float
        FWHM per axis in mm (a scalar applies to every axis). 0 on an axis leaves it alone; 0
        everywhere is the identity.
    truncate : float
        The kernel is cut at ``truncate`` standard deviations.

    Notes
    -----
    The kernel is the sampled Gaussian normalised to sum 1 and the image is zero-padded, so the
    operator is a symmetric matrix: ``forward`` and ``adjoint`` are the same function and total
    activity is preserved away from the image border.
    """

    def __init__(self, grid: ImageGrid, fwhm_mm, truncate: float = 4.0):
        if not isinstance(grid, ImageGrid):
            raise TypeError(f"grid must be an ImageGrid, got {type(grid).__name__}")
        fwhm = as_float_vector("fwhm_mm", fwhm_mm, grid.ndim)
        if np.any(fwhm < 0):
            raise ValueError(f"fwhm_mm must be >= 0 on every axis, got {fwhm.tolist()}")
        extent = np.asarray(grid.shape, dtype=np.float64) * np.asarray(grid.voxel_size_mm, dtype=np.float64)
        limit = MAX_FWHM_PER_EXTENT * extent
        if np.any(fwhm > limit):
            axis = int(np.argmax(fwhm > limit))
            raise ValueError(f"fwhm_mm[{axis}] = {fwhm[axis]:g} mm is far larger than the image "
                             f"({extent[axis]:g} mm along that axis); it must be <= {limit[axis]:g} mm "
                             f"({MAX_FWHM_PER_EXTENT:g} x the extent)")
        self.grid = grid
        self.fwhm_mm = tuple(float(f) for f in fwhm)
        self.truncate = as_bounded_float("truncate", truncate, minimum=0.0, maximum=MAX_TRUNCATE,
                                         min_inclusive=False)
        self.sigma_voxels = tuple(f / FWHM_PER_SIGMA / v for f, v in zip(self.fwhm_mm, grid.voxel_size_mm))
        self.shape_in = self.shape_out = tuple(grid.shape)

    @property
    def is_identity(self) -> bool:
        return all(f == 0 for f in self.fwhm_mm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Blur ``x`` of shape ``(..., *grid.shape)``."""
        if self.is_identity:
            return x
        nd = self.grid.ndim
        return gaussian_filter(x, self.sigma_voxels, axes=range(x.ndim - nd, x.ndim), truncate=self.truncate)

    adjoint = forward
    __call__ = forward

    def __repr__(self) -> str:
        return f"GaussianPSF(fwhm_mm={self.fwhm_mm})"

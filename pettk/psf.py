"""Image-space resolution model: a separable Gaussian point-spread function.

The PSF models detector blurring (positron range, non-collinearity, crystal size) in image space,
as most research and clinical reconstructions do: ``ForwardModel`` applies it before projecting.
"""

from __future__ import annotations

import numpy as np
import torch

from ._filters import FWHM_PER_SIGMA, gaussian_filter
from ._validation import as_float_vector
from .geometry import ImageGrid

__all__ = ["GaussianPSF"]


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
        self.grid = grid
        self.fwhm_mm = tuple(float(f) for f in fwhm)
        self.truncate = float(truncate)
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

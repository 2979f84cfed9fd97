"""Post-reconstruction filtering, as clinics apply it after OSEM."""

from __future__ import annotations

import numpy as np
import torch

from .._validation import check_finite_tensor
from ..geometry import ImageGrid
from ..psf import GaussianPSF

__all__ = ["post_filter"]


def post_filter(x, grid: ImageGrid, fwhm_mm):
    """Gaussian post-filter with a FWHM in mm (scalar or per axis); numpy or torch in and out.

    The same separable, normalised Gaussian as the resolution model (zero padding at the image
    border, so activity near the border leaks out slightly).
    """
    if not isinstance(x, (np.ndarray, torch.Tensor)):
        raise TypeError(f"x must be a numpy array or a torch tensor, got {type(x).__name__}")
    psf = GaussianPSF(grid, fwhm_mm)
    nd = grid.ndim
    if tuple(x.shape[x.ndim - nd:]) != tuple(grid.shape):
        raise ValueError(f"x must have shape (..., {', '.join(map(str, grid.shape))}), got {tuple(x.shape)}")
    x_t = torch.from_numpy(np.ascontiguousarray(x)) if isinstance(x, np.ndarray) else x
    check_finite_tensor("x", x_t)
    if isinstance(x, np.ndarray):
        with torch.no_grad():
            return psf(x_t).numpy()
    return psf(x)

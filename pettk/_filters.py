"""Separable Gaussian filtering of torch tensors along chosen trailing axes.

Used by the image-space PSF (mm → voxels) and the smooth scatter model (bins). The filter is a
sampled, normalised Gaussian with zero padding: with a symmetric kernel and zero padding the
filter is a symmetric matrix, i.e. self-adjoint.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))


def gaussian_kernel(sigma: float, truncate: float = 4.0, dtype=torch.float64, device=None) -> torch.Tensor:
    """Sampled Gaussian with standard deviation ``sigma`` (in samples), normalised to sum 1."""
    radius = max(1, int(math.ceil(truncate * sigma)))
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    return (kernel / kernel.sum()).to(dtype=dtype, device=device)


def gaussian_filter(x: torch.Tensor, sigmas, axes, truncate: float = 4.0) -> torch.Tensor:
    """Filter ``x`` along each axis in ``axes`` with a Gaussian of the matching sigma (samples).

    Axes with sigma 0 are left alone. Zero padding; differentiable; runs on ``x``'s device.
    """
    out = x
    for sigma, axis in zip(sigmas, axes):
        if sigma <= 0:
            continue
        kernel = gaussian_kernel(float(sigma), truncate, dtype=x.dtype, device=x.device)
        moved = out.movedim(axis, -1)
        shape = moved.shape
        flat = moved.reshape(-1, 1, shape[-1])
        filtered = F.conv1d(flat, kernel.view(1, 1, -1), padding=kernel.numel() // 2)
        out = filtered.reshape(shape).movedim(-1, axis)
    return out

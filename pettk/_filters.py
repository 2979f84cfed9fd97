"""Separable Gaussian filtering of torch tensors along chosen axes, in bounded working memory.

Used by the image-space PSF (mm → voxels) and the smooth scatter model (bins). The filter is a
sampled, normalised Gaussian with zero padding: with a symmetric kernel and zero padding the
filter is a symmetric matrix, i.e. self-adjoint.

Memory
------
A plain ``conv1d`` over all rows at once needs, in float64 on the CPU, a working buffer of
``rows × taps × length`` elements (one unfolded copy of the input per kernel tap): 15 GB for the
scatter model of a 16-ring sinogram. :func:`gaussian_filter` therefore filters each axis in one
of two ways, both exact and both using about one copy of the input besides the output:

* **dense matrix** when the kernel is at least as long as the axis (``2 * radius + 1 >= n``, the
  scatter model's wide blurs): the zero-padded filter *is* the symmetric ``(n, n)`` matrix
  ``G[i, j] = kernel[j - i + radius]`` (0 beyond the radius), applied as one matrix product.
  Same numbers as the convolution up to floating-point rounding (the sums run in another order),
  and far faster (BLAS instead of a convolution whose taps mostly fall on the padding).
* **chunked convolution** otherwise (the PSF's short kernels): ``conv1d`` on blocks of rows whose
  working buffer stays under :data:`CHUNK_BYTES`. Every row is filtered independently, so the
  result is bit for bit that of one ``conv1d`` over all rows.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))

#: Working-memory budget (bytes) of one block of the chunked sinogram/image filters.
CHUNK_BYTES = 8 * 2**20


def gaussian_kernel(sigma: float, truncate: float = 4.0, dtype=torch.float64, device=None) -> torch.Tensor:
    """Sampled Gaussian with standard deviation ``sigma`` (in samples), normalised to sum 1.

    Shape ``(2 * radius + 1,)`` with ``radius = max(1, ceil(truncate * sigma))``.
    """
    radius = max(1, int(math.ceil(truncate * sigma)))
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    return (kernel / kernel.sum()).to(dtype=dtype, device=device)


def gaussian_matrix(sigma: float, n: int, truncate: float = 4.0, dtype=torch.float64, device=None) -> torch.Tensor:
    """The zero-padded Gaussian filter of an axis of length ``n`` as a symmetric ``(n, n)`` matrix.

    ``G[i, j] = k[j - i + radius]`` for ``|i - j| <= radius`` and 0 otherwise, with ``k`` the
    kernel of :func:`gaussian_kernel`; ``x @ G`` filters the last axis of ``x`` exactly as a
    zero-padded convolution with ``k`` does.
    """
    kernel = gaussian_kernel(sigma, truncate, dtype=torch.float64)
    radius = kernel.numel() // 2
    idx = torch.arange(n)
    offset = idx[None, :] - idx[:, None]
    inside = offset.abs() <= radius
    matrix = torch.where(inside, kernel[(offset + radius).clamp(0, 2 * radius)], torch.zeros((), dtype=torch.float64))
    return matrix.to(dtype=dtype, device=device)


def _conv_rows(flat: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Zero-padded ``conv1d`` of every row of ``flat`` (``(rows, n)``) with ``kernel``, in blocks
    of rows whose unfolded working buffer (``rows × taps × n``) stays under :data:`CHUNK_BYTES`."""
    rows, n = flat.shape
    taps = kernel.numel()
    weight = kernel.view(1, 1, -1)
    block = max(1, CHUNK_BYTES // max(1, taps * n * flat.element_size()))
    if block >= rows:
        return F.conv1d(flat.unsqueeze(1), weight, padding=taps // 2).squeeze(1)
    out = flat.new_empty((rows, n))
    for start in range(0, rows, block):
        stop = min(rows, start + block)
        out[start:stop] = F.conv1d(flat[start:stop].unsqueeze(1), weight, padding=taps // 2).squeeze(1)
    return out


def gaussian_filter(x: torch.Tensor, sigmas, axes, truncate: float = 4.0) -> torch.Tensor:
    """Filter ``x`` along each axis in ``axes`` with a Gaussian of the matching sigma (samples).

    Axes with sigma 0 are left alone. Zero padding; differentiable; runs on ``x``'s device and
    returns a new tensor of ``x``'s shape and dtype. Working memory: about one copy of ``x``
    besides the result (see the module notes), whatever the kernel length.
    """
    out = x
    for sigma, axis in zip(sigmas, axes):
        if sigma <= 0:
            continue
        moved = out.movedim(axis, -1)
        n = moved.shape[-1]
        radius = max(1, int(math.ceil(truncate * float(sigma))))
        if 2 * radius + 1 >= n:
            matrix = gaussian_matrix(float(sigma), n, truncate, dtype=x.dtype, device=x.device)
            filtered = torch.matmul(moved, matrix)
        else:
            kernel = gaussian_kernel(float(sigma), truncate, dtype=x.dtype, device=x.device)
            filtered = _conv_rows(moved.reshape(-1, n), kernel).reshape(moved.shape)
        out = filtered.movedim(-1, axis)
    return out

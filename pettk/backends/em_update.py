"""The fused EM update: ``x_new = x * back / sens`` and the data ratio ``y / ybar``.

An EM iteration is ``x <- x * A^T(y / ybar) / sens``. The two element-wise steps around the back
projection run as single fused passes: :func:`em_ratio` (``y / ybar`` with safe division, no
sinogram-sized temporaries) and :func:`em_update` (multiply, divide by the sensitivity, zero
outside the mask and where the sensitivity vanishes). CPU tensors use numba kernels (parallel, in place where
asked); CUDA tensors use the CUDA kernels of ``kernels/em_update.cu`` (through CuPy, see
:func:`pettk.backends.cuda.em_ratio`) when CuPy is importable; any other case (other devices,
mixed devices or dtypes, broadcasting shapes) uses the equivalent torch expression.

Safe division
-------------
``em_ratio``: bins with ``y == 0`` give 0 whatever ``ybar`` is; otherwise ``ybar`` is clamped from
below at ``eps`` (the likelihood's epsilon policy, :mod:`pettk.likelihood`).
``em_update``: voxels with ``sens <= sens_floor`` (never seen by any LOR) or outside the mask are
set to 0.
"""

from __future__ import annotations

import numpy as np
import torch
from numba import njit, prange

from ._threads import keep_torch_threads

#: Lower clamp of ybar in the ratio; the same value as ``pettk.likelihood.DEFAULT_EPS``.
DEFAULT_EPS = 1e-8

_FLOATS = (torch.float32, torch.float64)


def _on_one_cuda_device(*tensors: torch.Tensor) -> bool:
    """All tensors on the same CUDA device, and the CuPy kernels importable."""
    device = tensors[0].device
    if device.type != "cuda" or any(t.device != device for t in tensors[1:]):
        return False
    from . import cuda_available

    return cuda_available()


@njit(parallel=True, cache=True)
def _ratio_kernel(y, ybar, eps, out):
    for i in prange(y.shape[0]):
        yi = y[i]
        if yi == 0.0:
            out[i] = 0.0
        else:
            out[i] = yi / max(ybar[i], eps)


@njit(parallel=True, cache=True)
def _update_kernel(x, back, sens, mask, sens_floor, out):
    for i in prange(x.shape[0]):
        s = sens[i]
        if s > sens_floor and mask[i]:
            out[i] = x[i] * back[i] / s
        else:
            out[i] = 0.0


@keep_torch_threads
def em_ratio(y: torch.Tensor, ybar: torch.Tensor, eps: float = DEFAULT_EPS) -> torch.Tensor:
    """``y / max(ybar, eps)``, 0 where ``y == 0``; a new tensor of ``ybar``'s dtype.

    Memory: the result only on the CPU and CUDA kernel paths (plus a converted copy of ``y`` when
    its dtype differs from ``ybar``'s); the torch fallback adds one temporary and a bool mask.
    """
    if y.device.type == "cpu" and ybar.device.type == "cpu":
        yv = np.ascontiguousarray(y.detach().numpy().reshape(-1), dtype=ybar.detach().numpy().dtype)
        bv = np.ascontiguousarray(ybar.detach().numpy().reshape(-1))
        out = np.empty_like(bv)
        _ratio_kernel(yv, bv, float(eps), out)
        return torch.from_numpy(out).reshape(ybar.shape)
    if ybar.dtype in _FLOATS and y.shape == ybar.shape and _on_one_cuda_device(y, ybar):
        from . import cuda

        return cuda.em_ratio(y, ybar, float(eps))
    # the torch expression with one result-sized temporary (the clamp) and a bool mask
    out = y.to(ybar.dtype) / ybar.clamp_min(eps)
    return out.masked_fill_(y == 0, 0.0)


@keep_torch_threads
def em_update(x: torch.Tensor, back: torch.Tensor, sens: torch.Tensor, mask: torch.Tensor,
              sens_floor: float = 0.0, out: torch.Tensor | None = None) -> torch.Tensor:
    """``x * back / sens`` inside ``mask`` where ``sens > sens_floor``, else 0.

    ``mask`` is a bool tensor broadcastable to ``x`` only if it has ``x``'s shape (no implicit
    broadcasting in the kernel); ``out`` may be ``x`` for an in-place update.
    """
    if out is None:
        out = torch.empty_like(x)
    if all(t.device.type == "cpu" for t in (x, back, sens, mask)) and x.is_contiguous() and out.is_contiguous():
        dtype = x.detach().numpy().dtype
        _update_kernel(x.detach().numpy().reshape(-1),
                       np.ascontiguousarray(back.detach().numpy().reshape(-1), dtype=dtype),
                       np.ascontiguousarray(sens.detach().numpy().reshape(-1), dtype=dtype),
                       np.ascontiguousarray(mask.detach().numpy().reshape(-1)),
                       float(sens_floor), out.detach().numpy().reshape(-1))
        return out
    if (x.dtype in _FLOATS and out.dtype == x.dtype and mask.dtype == torch.bool
            and x.is_contiguous() and out.is_contiguous()
            and all(t.numel() == x.numel() for t in (back, sens, mask, out))
            and _on_one_cuda_device(x, back, sens, mask, out)):
        from . import cuda

        return cuda.em_update(x, back, sens, mask, float(sens_floor), out)
    keep = mask & (sens > sens_floor)
    out.copy_(torch.where(keep, x * back / torch.where(keep, sens, torch.ones_like(sens)), torch.zeros_like(x)))
    return out

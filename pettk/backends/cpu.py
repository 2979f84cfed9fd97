"""The ``cpu`` backend: numba kernels, parallel over LORs, for CPU tensors (float32/float64).

A :class:`CPUPlan` binds an image grid and a set of LOR tables; its ``forward``/``adjoint`` take
and return unbatched torch CPU tensors without copying them through Python lists. The kernels
themselves live in :mod:`pettk.backends._joseph_cpu`.
"""

from __future__ import annotations

import numpy as np
import torch

from . import _joseph_cpu as K

name = "cpu"


def supports(device: torch.device) -> bool:
    """The numba backend handles CPU tensors only."""
    return device.type == "cpu"


class CPUPlan:
    """Forward and adjoint Joseph projection of one grid onto one LOR table set, on the CPU.

    Parameters
    ----------
    grid : pettk.ImageGrid
    tables : pettk.geometry.LORTables
        Must have the grid's dimension.
    """

    def __init__(self, grid, tables):
        self.image_shape = tuple(grid.shape)
        self.ndim = grid.ndim
        self._shape = np.asarray(grid.shape, dtype=np.int64)
        self._origin = np.asarray(grid.origin_mm, dtype=np.float64)
        self._vs = np.asarray(grid.voxel_size_mm, dtype=np.float64)
        self._strides = K.padded_strides(grid.shape)
        self._trans = np.ascontiguousarray(tables.transaxial, dtype=np.float64)
        self._axial = (np.zeros((1, 2)) if tables.axial is None
                       else np.ascontiguousarray(tables.axial, dtype=np.float64))
        self._outer = bool(tables.outer)
        self.n_lors = tables.n_lors

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: CPU tensor of the grid's shape -> CPU tensor ``(n_lors,)`` of the same dtype."""
        img = K.pad_image(x.detach().numpy())
        out = np.empty(self.n_lors, dtype=img.dtype)
        if self.ndim == 3:
            K.forward3d(img, self._strides, self._shape, self._origin, self._vs,
                        self._trans, self._axial, self._outer, out)
        else:
            K.forward2d(img, self._strides, self._shape, self._origin, self._vs, self._trans, out)
        return torch.from_numpy(out)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """``y``: CPU tensor ``(n_lors,)`` -> CPU tensor of the grid's shape, same dtype."""
        yv = np.ascontiguousarray(y.detach().numpy())
        n_padded = int(np.prod([n + 2 * K.PAD for n in self.image_shape]))
        buffers = np.zeros((K.n_adjoint_chunks(self.n_lors), n_padded), dtype=yv.dtype)
        if self.ndim == 3:
            K.adjoint3d(yv, self._strides, self._shape, self._origin, self._vs,
                        self._trans, self._axial, self._outer, buffers)
        else:
            K.adjoint2d(yv, self._strides, self._shape, self._origin, self._vs, self._trans, buffers)
        total = buffers[0] if buffers.shape[0] == 1 else buffers.sum(axis=0, dtype=yv.dtype)
        return torch.from_numpy(K.crop_padded(total, self.image_shape))


def make_plan(grid, tables, device) -> CPUPlan:
    """Plan for CPU tensors (``device`` must be the CPU)."""
    return CPUPlan(grid, tables)

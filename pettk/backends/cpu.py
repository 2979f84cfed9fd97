"""The ``cpu`` backend: numba kernels, parallel over LORs, for CPU tensors (float32/float64).

A :class:`CPUPlan` binds an image grid, a set of LOR tables and optionally TOF parameters; its
``forward``/``adjoint`` take and return flat, unbatched torch CPU tensors (no copies beyond the
padded image buffer). The kernels live in :mod:`pettk.backends._joseph_cpu`.
"""

from __future__ import annotations

import numpy as np
import torch

from . import _joseph_cpu as K
from . import _joseph_lm_tof as LM
from . import _joseph_sino as S
from ._threads import keep_torch_threads

name = "cpu"


def supports(device: torch.device) -> bool:
    """The numba backend handles CPU tensors only."""
    return device.type == "cpu"


class CPUPlan:
    """Joseph projection of one grid onto one LOR table set on the CPU.

    Parameters
    ----------
    grid : pettk.ImageGrid
    tables : pettk.geometry.LORTables
        Must have the grid's dimension.
    tof : pettk.TOFParams, optional
        With TOF, sinogram tables give ``n_lors * n_bins`` values (TOF bins last); list-mode
        tables (with ``tof_bin``) give one value per event.
    """

    def __init__(self, grid, tables, tof=None):
        self.image_shape = tuple(grid.shape)
        self.ndim = grid.ndim
        self.n_lors = tables.n_lors
        self.tof = tof
        self.list_mode_tof = tof is not None and tables.tof_bin is not None
        self.n_out = self.n_lors * (tof.n_bins if tof is not None and not self.list_mode_tof else 1)
        if tof is None:
            self._shape = np.asarray(grid.shape, dtype=np.int64)
            self._origin = np.asarray(grid.origin_mm, dtype=np.float64)
            self._vs = np.asarray(grid.voxel_size_mm, dtype=np.float64)
            self._trans = np.ascontiguousarray(tables.transaxial, dtype=np.float64)
            self._axial = (np.zeros((1, 2)) if tables.axial is None
                           else np.ascontiguousarray(tables.axial, dtype=np.float64))
            self._outer = bool(tables.outer)
        else:  # TOF always runs through the 3D kernels (2D gets a singleton z axis)
            self._shape, self._origin, self._vs, self._trans, self._axial, self._outer = K.as_3d(grid, tables)
            self._tof = K.tof_vector(tof)
            self._tof_bin = None if tables.tof_bin is None else np.ascontiguousarray(tables.tof_bin, dtype=np.int64)
        self._kernel_shape = tuple(int(n) for n in self._shape)
        # 3D sinograms run through the factorised kernels, except the LORs those leave out
        self._sino = grid.ndim == 3 and self._outer and not self.list_mode_tof
        if self._sino:
            self._generic = S.generic_lors(self._trans, self._axial)
            n_t = self._trans.shape[0]
            self._g_trans = np.ascontiguousarray(self._trans[self._generic % n_t])
            self._g_axial = np.ascontiguousarray(self._axial[self._generic // n_t])
            self._groups = S.axial_groups(self._axial)
        self._strides = K.padded_strides(self._kernel_shape)

    @keep_torch_threads
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: CPU tensor of the grid's shape -> flat CPU tensor ``(n_out,)`` of the same dtype."""
        img = K.pad_image(x.detach().numpy().reshape(self._kernel_shape))
        args = (img, self._strides, self._shape, self._origin, self._vs, self._trans, self._axial)
        if self.tof is None:
            out = np.empty(self.n_lors, dtype=img.dtype)
            if self._sino:
                S.forward3d_sino(*args, out.reshape(self._axial.shape[0], -1))
                if self._generic.size:
                    part = np.empty(self._generic.size, dtype=img.dtype)
                    K.forward3d(*args[:5], self._g_trans, self._g_axial, False, part)
                    out[self._generic] = part
            elif self.ndim == 3:
                K.forward3d(*args, self._outer, out)
            else:
                K.forward2d(img, self._strides, self._shape, self._origin, self._vs, self._trans, out)
        elif self.list_mode_tof:
            out = np.empty(self.n_lors, dtype=img.dtype)
            LM.forward3d_lm_tof(*args, self._tof, self.tof.n_bins, self._tof_bin, out)
        else:
            if self._sino:
                out = np.empty((self._axial.shape[0], self._trans.shape[0], self.tof.n_bins), dtype=img.dtype)
                S.forward3d_sino_tof(*args, *self._groups, self._tof, out)
                out = out.reshape(self.n_lors, -1)
                if self._generic.size:
                    part = np.zeros((self._generic.size, self.tof.n_bins), dtype=img.dtype)
                    K.forward3d_tof(*args[:5], self._g_trans, self._g_axial, False, self._tof, part)
                    out[self._generic] = part
            else:
                out = np.zeros((self.n_lors, self.tof.n_bins), dtype=img.dtype)
                K.forward3d_tof(*args, self._outer, self._tof, out)
        return torch.from_numpy(out.reshape(-1))

    @keep_torch_threads
    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """``y``: flat CPU tensor ``(n_out,)`` -> CPU tensor of the grid's shape, same dtype."""
        yv = np.ascontiguousarray(y.detach().numpy())
        n_padded = int(np.prod([n + 2 * K.PAD for n in self._kernel_shape]))
        buffers = np.zeros((K.n_adjoint_chunks(self.n_lors), n_padded), dtype=yv.dtype)
        geo = (self._strides, self._shape, self._origin, self._vs, self._trans, self._axial)
        if self.tof is None:
            if self._sino:
                S.adjoint3d_sino(yv.reshape(self._axial.shape[0], -1), *geo, buffers)
                if self._generic.size:
                    K.adjoint3d(np.ascontiguousarray(yv[self._generic]), *geo[:4], self._g_trans, self._g_axial,
                                False, buffers)
            elif self.ndim == 3:
                K.adjoint3d(yv, *geo, self._outer, buffers)
            else:
                K.adjoint2d(yv, self._strides, self._shape, self._origin, self._vs, self._trans, buffers)
        elif self.list_mode_tof:
            LM.adjoint3d_lm_tof(yv, *geo, self._tof, self.tof.n_bins, self._tof_bin, buffers)
        else:
            y2 = yv.reshape(self.n_lors, self.tof.n_bins)
            if self._sino:
                S.adjoint3d_sino_tof(y2.reshape(self._axial.shape[0], -1, self.tof.n_bins), *geo, *self._groups,
                                     self._tof, buffers)
                if self._generic.size:
                    K.adjoint3d_tof(np.ascontiguousarray(y2[self._generic]), *geo[:4], self._g_trans, self._g_axial,
                                    False, self._tof, buffers)
            else:
                K.adjoint3d_tof(y2, *geo, self._outer, self._tof, buffers)
        total = buffers[0] if buffers.shape[0] == 1 else buffers.sum(axis=0, dtype=yv.dtype)
        return torch.from_numpy(K.crop_padded(total, self._kernel_shape).reshape(self.image_shape))


def make_plan(grid, tables, device, tof=None) -> CPUPlan:
    """Plan for CPU tensors (``device`` must be the CPU)."""
    return CPUPlan(grid, tables, tof)

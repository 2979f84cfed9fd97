"""The ``reference`` backend: the Joseph method written as plain vectorised torch.

It runs on any torch device and is the oracle the fast backends are tested against, so it follows
the definition literally and shares no code with the kernels: every LOR is sampled at *all*
planes of its stepping axis, samples outside the LOR segment are masked, and each of the 2 (2D)
or 4 (3D) interpolation corners carries its own in-grid mask. LORs are processed in chunks so
that memory stays bounded (about ``chunk_samples`` samples at a time).
"""

from __future__ import annotations

import itertools

import numpy as np
import torch

name = "reference"

#: Samples (LORs × planes) processed per chunk; bounds the temporary memory to a few hundred MB.
CHUNK_SAMPLES = 1 << 20


def supports(device: torch.device) -> bool:
    """Any torch device that holds data (not ``meta``)."""
    return device.type != "meta"


class ReferencePlan:
    """Forward and adjoint Joseph projection in plain torch on ``device``.

    Parameters
    ----------
    grid : pettk.ImageGrid
    tables : pettk.geometry.LORTables
    device : torch.device
    chunk_samples : int
        Upper bound on LORs × planes held in memory at once.
    """

    def __init__(self, grid, tables, device, chunk_samples: int = CHUNK_SAMPLES):
        self.image_shape = tuple(grid.shape)
        self.ndim = grid.ndim
        self.device = torch.device(device)
        start, end = tables.endpoints()
        f64 = torch.float64 if self.device.type != "mps" else torch.float32
        self._start = torch.as_tensor(start, dtype=f64, device=self.device)
        self._end = torch.as_tensor(end, dtype=f64, device=self.device)
        self._origin = torch.as_tensor(grid.origin_mm, dtype=f64, device=self.device)
        self._vs = torch.as_tensor(grid.voxel_size_mm, dtype=f64, device=self.device)
        self._strides = [int(np.prod(self.image_shape[k + 1:])) for k in range(self.ndim)]
        self.n_lors = tables.n_lors
        self._chunk = max(1, chunk_samples // max(self.image_shape))

    # -- the sampling pattern of a chunk of LORs, per stepping axis ------------------------------
    def _samples(self, lo: int, hi: int):
        """Yield ``(lor_index, flat_voxel_index, weight)`` triples for LORs ``lo:hi``.

        ``lor_index`` has shape ``(m,)``; ``flat_voxel_index`` and ``weight`` have shape
        ``(m, n_planes * corners)``; weights are zero for masked samples.
        """
        p0 = self._start[lo:hi]
        p1 = self._end[lo:hi]
        d = p1 - p0
        length = torch.linalg.vector_norm(d, dim=1)
        step_axis = torch.argmax(d.abs(), dim=1)
        u0 = (p0 - self._origin) / self._vs
        u1 = (p1 - self._origin) / self._vs
        for k in range(self.ndim):
            sel = torch.nonzero((step_axis == k) & (d[:, k] != 0), as_tuple=True)[0]
            if sel.numel() == 0:
                continue
            n_k = self.image_shape[k]
            planes = torch.arange(n_k, device=self.device, dtype=p0.dtype)[None, :]  # (1, n_k)
            u0k, u1k = u0[sel, k:k + 1], u1[sel, k:k + 1]
            t = (planes - u0k) / (u1k - u0k)  # line parameter of each plane, (m, n_k)
            inside = (t >= 0) & (t <= 1)
            weight = self._vs[k] * length[sel] / d[sel, k].abs()  # (m,)
            others = [j for j in range(self.ndim) if j != k]
            floors, fracs = [], []
            for j in others:
                coord = u0[sel, j:j + 1] + t * (u1[sel, j:j + 1] - u0[sel, j:j + 1])
                fl = torch.floor(coord)
                floors.append(fl.to(torch.int64))
                fracs.append(coord - fl)
            base = planes.to(torch.int64) * self._strides[k]
            idx_parts, w_parts = [], []
            for corner in itertools.product((0, 1), repeat=len(others)):
                idx = base.expand(sel.numel(), n_k)
                w = inside.to(p0.dtype) * weight[:, None]
                for j, bit, fl, fr in zip(others, corner, floors, fracs):
                    voxel = fl + bit
                    valid = (voxel >= 0) & (voxel < self.image_shape[j])
                    idx = idx + voxel.clamp(0, self.image_shape[j] - 1) * self._strides[j]
                    w = w * (fr if bit else 1.0 - fr) * valid
                idx_parts.append(idx)
                w_parts.append(w)
            yield sel + lo, torch.cat(idx_parts, dim=1), torch.cat(w_parts, dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: tensor of the grid's shape on ``device`` -> ``(n_lors,)`` of the same dtype."""
        flat = x.reshape(-1)
        out = torch.zeros(self.n_lors, dtype=x.dtype, device=x.device)
        for lo in range(0, self.n_lors, self._chunk):
            hi = min(lo + self._chunk, self.n_lors)
            for lor, idx, w in self._samples(lo, hi):
                out[lor] = (flat[idx].to(w.dtype) * w).sum(dim=1).to(x.dtype)
        return out

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """``y``: ``(n_lors,)`` on ``device`` -> image of the grid's shape, same dtype."""
        acc_dtype = torch.float64 if y.dtype == torch.float64 or y.device.type != "mps" else y.dtype
        flat = torch.zeros(int(np.prod(self.image_shape)), dtype=acc_dtype, device=y.device)
        for lo in range(0, self.n_lors, self._chunk):
            hi = min(lo + self._chunk, self.n_lors)
            for lor, idx, w in self._samples(lo, hi):
                vals = w * y[lor].to(w.dtype)[:, None]
                flat.index_add_(0, idx.reshape(-1), vals.reshape(-1).to(acc_dtype))
        return flat.to(y.dtype).reshape(self.image_shape)


def make_plan(grid, tables, device) -> ReferencePlan:
    """Plan for tensors on ``device``."""
    return ReferencePlan(grid, tables, device)

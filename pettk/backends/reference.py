"""The ``reference`` backend: the Joseph method written as plain vectorised torch.

It runs on any torch device and is the oracle the fast backends are tested against, so it follows
the definition literally and shares no code with the kernels: every LOR is sampled at *all*
planes of its stepping axis, samples outside the LOR segment are masked, and each of the 2 (2D)
or 4 (3D) interpolation corners carries its own in-grid mask. TOF weights are the Gaussian
integrals over each bin defined in :class:`pettk.geometry.TOFParams`. LORs are processed in
chunks so that memory stays bounded (about ``chunk_samples`` samples at a time).
"""

from __future__ import annotations

import itertools
import math

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
    tof : pettk.TOFParams, optional
        TOF sinograms (``n_lors * n_bins`` values, bins last) or, when the tables carry
        ``tof_bin``, list-mode TOF (one value per event).
    chunk_samples : int
        Upper bound on LORs × planes held in memory at once.
    """

    def __init__(self, grid, tables, device, tof=None, chunk_samples: int = CHUNK_SAMPLES):
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
        self.tof = tof
        self._tof_bin = (None if tof is None or tables.tof_bin is None
                         else torch.as_tensor(tables.tof_bin, dtype=torch.int64, device=self.device))
        self.n_out = self.n_lors * (tof.n_bins if tof is not None and self._tof_bin is None else 1)
        self._chunk = max(1, chunk_samples // max(self.image_shape))

    # -- the sampling pattern of a chunk of LORs, per stepping axis ------------------------------
    def _samples(self, lo: int, hi: int):
        """Yield ``(lor, index, weight, t)`` for the LORs ``lo:hi``, grouped by stepping axis.

        ``lor``: ``(m,)`` LOR numbers; ``index``: ``(m, corners, planes)`` flat voxel indices;
        ``weight``: the matching interpolation × segment-mask × ``voxel_size_k / |cos|`` weights;
        ``t``: ``(m, planes)`` signed distance (mm) of each sample from the LOR midpoint.
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
            s = (planes - u0k) / (u1k - u0k)  # position of each plane along the LOR in [0, 1]
            inside = (s >= 0) & (s <= 1)
            scale = self._vs[k] * length[sel] / d[sel, k].abs()  # (m,)
            others = [j for j in range(self.ndim) if j != k]
            floors, fracs = [], []
            for j in others:
                coord = u0[sel, j:j + 1] + s * (u1[sel, j:j + 1] - u0[sel, j:j + 1])
                fl = torch.floor(coord)
                floors.append(fl.to(torch.int64))
                fracs.append(coord - fl)
            base = planes.to(torch.int64) * self._strides[k]
            idx_parts, w_parts = [], []
            for corner in itertools.product((0, 1), repeat=len(others)):
                idx = base.expand(sel.numel(), n_k)
                w = inside.to(p0.dtype) * scale[:, None]
                for j, bit, fl, fr in zip(others, corner, floors, fracs):
                    voxel = fl + bit
                    valid = (voxel >= 0) & (voxel < self.image_shape[j])
                    idx = idx + voxel.clamp(0, self.image_shape[j] - 1) * self._strides[j]
                    w = w * (fr if bit else 1.0 - fr) * valid
                idx_parts.append(idx)
                w_parts.append(w)
            t = (s - 0.5) * length[sel, None]
            yield sel + lo, torch.stack(idx_parts, dim=1), torch.stack(w_parts, dim=1), t

    def _tof_weight(self, t: torch.Tensor, bin_) -> torch.Tensor:
        """Gaussian integral over TOF bin ``bin_`` (int or tensor broadcastable to ``t``)."""
        tof = self.tof
        sigma, width, first = tof.sigma_mm, tof.bin_width_mm, tof.first_edge_mm
        reach = tof.n_sigmas * sigma
        e_lo = first + bin_ * width
        inv = 1.0 / (math.sqrt(2.0) * sigma)
        w = 0.5 * (torch.erf((e_lo + width - t) * inv) - torch.erf((e_lo - t) * inv))
        in_window = ((bin_ >= torch.floor((t - reach - first) / width))
                     & (bin_ <= torch.floor((t + reach - first) / width)))
        return w * in_window

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: tensor of the grid's shape on ``device`` -> flat ``(n_out,)``, same dtype."""
        flat = x.reshape(-1)
        n_bins = 1 if self.tof is None or self._tof_bin is not None else self.tof.n_bins
        out = torch.zeros((self.n_lors, n_bins), dtype=x.dtype, device=x.device)
        for lo in range(0, self.n_lors, self._chunk):
            for lor, idx, w, t in self._samples(lo, min(lo + self._chunk, self.n_lors)):
                v = (flat[idx].to(w.dtype) * w).sum(dim=1)  # (m, planes)
                if self.tof is None:
                    out[lor, 0] = v.sum(dim=1).to(x.dtype)
                elif self._tof_bin is not None:
                    out[lor, 0] = (v * self._tof_weight(t, self._tof_bin[lor, None])).sum(dim=1).to(x.dtype)
                else:
                    for b in range(n_bins):
                        out[lor, b] = (v * self._tof_weight(t, b)).sum(dim=1).to(x.dtype)
        return out.reshape(-1)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """``y``: flat ``(n_out,)`` on ``device`` -> image of the grid's shape, same dtype."""
        acc_dtype = torch.float64 if y.device.type != "mps" else torch.float32
        flat = torch.zeros(int(np.prod(self.image_shape)), dtype=acc_dtype, device=y.device)
        y2 = y.reshape(self.n_lors, -1)
        for lo in range(0, self.n_lors, self._chunk):
            for lor, idx, w, t in self._samples(lo, min(lo + self._chunk, self.n_lors)):
                yl = y2[lor].to(w.dtype)
                if self.tof is None:
                    g = yl[:, :1].expand_as(t)
                elif self._tof_bin is not None:
                    g = yl[:, :1] * self._tof_weight(t, self._tof_bin[lor, None])
                else:
                    g = sum(yl[:, b:b + 1] * self._tof_weight(t, b) for b in range(self.tof.n_bins))
                flat.index_add_(0, idx.reshape(-1), (g[:, None, :] * w).reshape(-1).to(acc_dtype))
        return flat.to(y.dtype).reshape(self.image_shape)


def make_plan(grid, tables, device, tof=None) -> ReferencePlan:
    """Plan for tensors on ``device``."""
    return ReferencePlan(grid, tables, device, tof)

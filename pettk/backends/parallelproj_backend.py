"""The ``parallelproj`` backend: pettk geometries projected by parallelproj's Joseph kernels.

`parallelproj <https://github.com/KUL-recon-lab/parallelproj>`_ (Schramm & Thielemans) ships
OpenMP and CUDA Joseph projectors; it is installed with conda (``conda install -c conda-forge
parallelproj``), not from PyPI. This module lets ``Projector(..., backend="parallelproj")`` use
it on the same :class:`~pettk.ImageGrid` and measurement geometries as pettk's own backends.

Only the coordinate conversion is pettk's; the projection is parallelproj's:

* **Image.** pettk images are C-order ``(nx, ny, nz)`` (axial last) with ``grid.origin_mm`` the
  centre of voxel ``[0, 0, 0]``; parallelproj images are C-order ``(n0, n1, n2)`` with
  ``img_origin`` the centre of voxel ``[0, 0, 0]``. The axes map one to one (``0 <- x``,
  ``1 <- y``, ``2 <- z``): no transpose, no flip, no half-voxel shift. A 2D grid ``(nx, ny)``
  becomes ``(nx, ny, 1)`` with a 1 mm slice at ``z = 0``.
* **LORs.** parallelproj takes every LOR's start and end point in world coordinates (mm),
  ``xstart``/``xend`` of shape ``(n_lors, 3)``. They are the expanded
  :class:`~pettk.geometry.LORTables` in pettk's measurement order (C order of
  ``(n_planes, n_views, n_radial)`` for sinograms, event order for lists), so the flat output of
  parallelproj *is* pettk's flat measurement; 2D LORs get ``z = 0``.

:func:`image_geometry` and :func:`lor_endpoints` are these conversions (tested without
parallelproj). Both parallelproj generations are supported: 2.x (the in-place kernels
``joseph3d_fwd/joseph3d_back(xstart, xend, img, img_origin, voxsize, out)`` of
``parallelproj_core`` or ``parallelproj_backend``) and 1.x (``parallelproj.joseph3d_fwd`` and
``parallelproj.joseph3d_back`` returning new arrays).

Differences from pettk's Joseph definition (see :mod:`pettk.projector`): parallelproj computes in
float32 (float64 tensors are projected in float32 and returned as float64); when two axes tie
for the largest ``|d_k|`` (an exactly 45° LOR with square voxels) parallelproj steps along the
later axis and pettk along the earlier one, which gives a slightly different (equally valid)
Joseph sum for those LORs. TOF is not supported by this backend (use ``"cpu"``/``"cuda"``).
"""

from __future__ import annotations

import functools
import importlib

import numpy as np
import torch

name = "parallelproj"

__all__ = ["name", "available", "unavailable_reason", "supports", "image_geometry", "lor_endpoints",
           "ParallelprojPlan", "make_plan"]

INSTALL_HINT = ("backend='parallelproj' needs parallelproj, which is not on PyPI: install it with conda "
                "(conda install -c conda-forge parallelproj), or use backend='auto', 'cpu' or 'reference'")


class _Kernels:
    """The two Joseph calls of whichever parallelproj generation is installed."""

    def __init__(self, module, in_place: bool, label: str):
        self.module = module
        self.in_place = in_place
        self.label = label

    def forward(self, xstart, xend, img, origin, voxsize, n_lors: int, like):
        if self.in_place:
            out = _zeros_like_array(like, (n_lors,))
            self.module.joseph3d_fwd(xstart, xend, img, origin, voxsize, out)
            return out
        return self.module.joseph3d_fwd(xstart, xend, img, origin, voxsize)

    def back(self, xstart, xend, values, origin, voxsize, shape, like):
        if self.in_place:
            img = _zeros_like_array(like, shape)
            self.module.joseph3d_back(xstart, xend, img, origin, voxsize, values)
            return img
        return self.module.joseph3d_back(xstart, xend, shape, origin, voxsize, values)


def _zeros_like_array(like, shape):
    if isinstance(like, torch.Tensor):
        return torch.zeros(shape, dtype=torch.float32, device=like.device)
    return np.zeros(shape, dtype=np.float32)


@functools.cache
def _kernels() -> _Kernels | str:
    """The installed parallelproj kernels, or the reason why there are none (a string)."""
    reasons = []
    for module_name in ("parallelproj_core", "parallelproj_backend"):  # parallelproj 2.x
        try:
            module = importlib.import_module(module_name)
        except ImportError as err:
            reasons.append(f"{module_name}: {err}")
            continue
        if hasattr(module, "joseph3d_fwd") and hasattr(module, "joseph3d_back"):
            return _Kernels(module, True, module_name)
    try:  # parallelproj 1.x: Python functions over its C/CUDA libraries
        module = importlib.import_module("parallelproj")
    except ImportError as err:
        reasons.append(f"parallelproj: {err}")
    else:
        if hasattr(module, "joseph3d_fwd") and hasattr(module, "joseph3d_back"):
            return _Kernels(module, False, "parallelproj")
        reasons.append("parallelproj: imported, but neither it nor parallelproj_core/parallelproj_backend "
                       "exposes joseph3d_fwd/joseph3d_back")
    return "; ".join(reasons)


def available() -> bool:
    """True when parallelproj's Joseph kernels can be imported."""
    return not isinstance(_kernels(), str)


def unavailable_reason() -> str | None:
    """Why the backend is unavailable (the import errors), or ``None`` when it is available."""
    k = _kernels()
    return k if isinstance(k, str) else None


def supports(device: torch.device) -> bool:
    """parallelproj projects CPU tensors (OpenMP) and CUDA tensors (its CUDA kernels)."""
    return device.type in ("cpu", "cuda")


# ------------------------------------------------------------------------------------------------
# The coordinate conversion (pure numpy; what the tests pin down without parallelproj)
# ------------------------------------------------------------------------------------------------
def image_geometry(grid) -> tuple[tuple[int, int, int], np.ndarray, np.ndarray]:
    """parallelproj's image description of a pettk grid.

    Parameters
    ----------
    grid : pettk.ImageGrid
        2D ``(nx, ny)`` or 3D ``(nx, ny, nz)``.

    Returns
    -------
    shape : tuple of 3 int
        ``grid.shape`` (2D: ``(nx, ny, 1)``); pettk images reshape to it without copying.
    img_origin : ndarray, float32, shape ``(3,)``
        World position (mm) of the centre of voxel ``[0, 0, 0]``: ``grid.origin_mm`` (2D: z = 0).
    voxsize : ndarray, float32, shape ``(3,)``
        ``grid.voxel_size_mm`` (2D: a 1 mm slice).
    """
    from ..geometry import ImageGrid

    if not isinstance(grid, ImageGrid):
        raise TypeError(f"grid must be an ImageGrid, got {type(grid).__name__}")
    if grid.ndim == 3:
        shape, origin, voxsize = tuple(grid.shape), grid.origin_mm, grid.voxel_size_mm
    else:
        shape = tuple(grid.shape) + (1,)
        origin = tuple(grid.origin_mm) + (0.0,)
        voxsize = tuple(grid.voxel_size_mm) + (1.0,)
    return (tuple(int(n) for n in shape), np.asarray(origin, dtype=np.float32),
            np.asarray(voxsize, dtype=np.float32))


def lor_endpoints(tables) -> tuple[np.ndarray, np.ndarray]:
    """LOR start and end points for parallelproj, in pettk's flat measurement order.

    Parameters
    ----------
    tables : pettk.geometry.LORTables
        From ``geometry.lor_tables(views)``.

    Returns
    -------
    xstart, xend : ndarray, float32, C-contiguous, shape ``(n_lors, 3)``
        World coordinates (mm); 2D LORs lie in the plane ``z = 0``. Row ``i`` is the LOR whose
        value is element ``i`` of the flattened measurement array.
    """
    from ..geometry import LORTables

    if not isinstance(tables, LORTables):
        raise TypeError(f"tables must be a LORTables, got {type(tables).__name__}")
    start, end = tables.endpoints()
    if tables.ndim == 2:
        start = np.concatenate([start, np.zeros((start.shape[0], 1))], axis=1)
        end = np.concatenate([end, np.zeros((end.shape[0], 1))], axis=1)
    return (np.ascontiguousarray(start, dtype=np.float32), np.ascontiguousarray(end, dtype=np.float32))


# ------------------------------------------------------------------------------------------------
# The plan (same interface as pettk.backends.cpu.CPUPlan)
# ------------------------------------------------------------------------------------------------
class ParallelprojPlan:
    """Non-TOF Joseph projection of one grid onto one LOR table set with parallelproj.

    Parameters
    ----------
    grid : pettk.ImageGrid
    tables : pettk.geometry.LORTables
        Must have the grid's dimension.
    device : torch.device or str
        ``cpu`` or a CUDA device; the LOR endpoints are stored there once.
    tof : None
        TOF is not supported by this backend; anything else raises ``ValueError``.

    Notes
    -----
    ``forward``/``adjoint`` take and return flat, unbatched tensors on ``device`` like
    :class:`pettk.backends.cpu.CPUPlan`; the computation is float32 and the result has the
    input's dtype.
    """

    def __init__(self, grid, tables, device, tof=None):
        if tof is not None:
            raise ValueError("backend='parallelproj' projects non-TOF LORs only; use backend='cpu' (or 'cuda') "
                             "for TOF")
        device = torch.device(device)
        if not supports(device):
            raise ValueError(f"backend 'parallelproj' cannot run tensors on device {device}; use a CPU or CUDA tensor")
        if tables.ndim != grid.ndim:
            raise ValueError(f"the LOR tables are {tables.ndim}D but the grid is {grid.ndim}D")
        kernels = _kernels()
        if isinstance(kernels, str):
            raise ImportError(f"{INSTALL_HINT} ({kernels})")
        self._k = kernels
        self.device = device
        self.image_shape = tuple(grid.shape)
        self.ndim = grid.ndim
        self.n_lors = tables.n_lors
        self.tof = None
        self.n_out = self.n_lors
        self._shape3, origin, voxsize = image_geometry(grid)
        start, end = lor_endpoints(tables)
        if device.type == "cpu":  # numpy views: every parallelproj generation accepts them
            self._start, self._end, self._origin, self._voxsize = start, end, origin, voxsize
        else:
            self._start, self._end, self._origin, self._voxsize = (
                torch.from_numpy(a).to(device) for a in (start, end, origin, voxsize))

    def _as_kernel_array(self, t: torch.Tensor, shape):
        t32 = t.detach().to(torch.float32).reshape(shape).contiguous()
        return t32.numpy() if self.device.type == "cpu" else t32

    def _as_tensor(self, a, shape, dtype) -> torch.Tensor:
        out = torch.from_numpy(np.asarray(a)) if isinstance(a, np.ndarray) else torch.as_tensor(a, device=self.device)
        return out.reshape(shape).to(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: tensor of the grid's shape on ``device`` -> flat ``(n_lors,)`` of ``x``'s dtype."""
        img = self._as_kernel_array(x, self._shape3)
        p = self._k.forward(self._start, self._end, img, self._origin, self._voxsize, self.n_lors, img)
        return self._as_tensor(p, (self.n_lors,), x.dtype)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """``y``: flat ``(n_lors,)`` tensor on ``device`` -> image of the grid's shape, ``y``'s dtype."""
        values = self._as_kernel_array(y, (self.n_lors,))
        img = self._k.back(self._start, self._end, values, self._origin, self._voxsize, self._shape3, values)
        return self._as_tensor(img, self.image_shape, y.dtype)


def make_plan(grid, tables, device, tof=None) -> ParallelprojPlan:
    """Plan for tensors on ``device`` (CPU or CUDA)."""
    return ParallelprojPlan(grid, tables, device, tof)

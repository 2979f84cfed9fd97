"""The ``parallelproj`` backend: pettk geometries projected by parallelproj's Joseph kernels.

`parallelproj <https://github.com/KUL-recon-lab/parallelproj>`_ (Schramm & Thielemans) ships
OpenMP and CUDA Joseph projectors, non-TOF and TOF. It is not on PyPI: install it with conda
(``conda install -c conda-forge parallelproj``) or build it from source (``docs/parallelproj.md``).
This module lets ``Projector(..., backend="parallelproj")`` use it on the same
:class:`~pettk.ImageGrid`, measurement geometries and :class:`~pettk.TOFParams` as pettk's own
backends, with the same linear operator (see *The operator* below).

Only the conversion is pettk's; the projection is parallelproj's:

* **Image.** pettk images are C-order ``(nx, ny, nz)`` (axial last) with ``grid.origin_mm`` the
  centre of voxel ``[0, 0, 0]``; parallelproj images are C-order ``(n0, n1, n2)`` with
  ``img_origin`` the centre of voxel ``[0, 0, 0]``. The axes map one to one (``0 <- x``,
  ``1 <- y``, ``2 <- z``): no transpose, no flip, no half-voxel shift. A 2D grid ``(nx, ny)``
  becomes ``(nx, ny, 1)`` with a 1 mm slice at ``z = 0`` (:func:`image_geometry`).
* **LORs.** parallelproj takes every LOR's start and end point in world coordinates (mm),
  ``xstart``/``xend`` of shape ``(n_lors, 3)``. They are the expanded
  :class:`~pettk.geometry.LORTables` in pettk's measurement order (C order of
  ``(n_planes, n_views, n_radial)`` for sinograms, event order for lists), so the flat output of
  parallelproj *is* pettk's flat measurement; 2D LORs get ``z = 0`` (:func:`lor_endpoints`).
* **TOF** (:func:`tof_arguments`). pettk's TOF bins are centred on the LOR midpoint and count from
  the start point towards the end point, ``bin_width_mm`` wide, with a Gaussian of standard
  deviation ``sigma_mm``; parallelproj 2.x defines its bins the same way, so ``tof_bin_width =
  bin_width_mm``, ``tof_sigma = [sigma_mm]``, ``tof_center_offset = [0]`` (pettk has no offset),
  ``num_tof_bins = n_bins``; list-mode events pass their ``tof_bin`` as int16. Only the truncation
  needs converting, see below.

Both parallelproj generations are supported: 2.x (the in-place kernels
``joseph3d_fwd/joseph3d_back(xstart, xend, img, img_origin, voxsize, out)`` and the TOF kernels
``joseph3d_tof_sino_fwd/back`` and ``joseph3d_tof_lm_fwd/back`` of ``parallelproj_core`` or
``parallelproj_backend``) and 1.x (``parallelproj.joseph3d_fwd`` and ``parallelproj.joseph3d_back``
returning new arrays; non-TOF only through this backend).

The operator
------------
pettk's Joseph method (:mod:`pettk.projector`) samples every voxel plane of the stepping axis and
interpolates with zero outside the grid, so a LOR sees the image wherever the interpolant is
non-zero: the box of the voxel centres dilated by one voxel (in index units, ``(-1, n)``).
parallelproj 1.x is reported to clip each ray to that dilated box as well (only 2.x is built and
tested in pettk's checks). **parallelproj 2.x clips each ray
to the geometric box of the voxels** (the centres dilated by half a voxel, ``[-0.5, n - 0.5]``),
so on its own it drops the samples of a ray that passes within half a voxel outside the grid's
faces: up to ~9 % of a line integral that grazes a non-zero outermost voxel layer, and ~8 % of
the back projection into that layer. pettk therefore hands parallelproj the image padded with one
layer of zero voxels on each side of every axis (2D: of x and y; the origin moves back by one
voxel) and crops the padded layer off the back projection. The padded grid's geometric box
contains pettk's support, the extra samples read zeros, and the kernels compute exactly pettk's
sum. The padding is applied with both generations: whichever of the two boxes a kernel clips
to, it contains pettk's support. What remains:

* parallelproj computes in float32 (float64 tensors are projected in float32 and returned as
  float64): agreement with ``"cpu"`` is to float32 rounding (~1e-6 of the maximum).
* When two axes tie for the largest ``|d_k|`` (an exactly 45° LOR with square voxels)
  parallelproj steps along the later axis and pettk along the earlier one, which gives a
  slightly different (equally valid) Joseph sum for those LORs.
* TOF truncation and normalisation. pettk adds to the bins that overlap ``t +- n_sigmas * sigma``
  the bin integrals of ``N(t, sigma^2)`` as they are (:class:`~pettk.TOFParams`). parallelproj 2.x
  divides the TOF weights of a sample (sinogram) or of an event (list mode) by their sum over its
  truncation window. pettk passes ``num_sigmas`` such that parallelproj's window is pettk's:
  ``n_sigmas - bin_width / (2 sigma)`` for sinograms (bin windows, when that is positive) and
  ``n_sigmas + bin_width / (2 sigma)`` for list mode (plane windows). The normalisation is left:
  it divides by a sum that is 1 minus the Gaussian mass outside the window, so the two agree to
  about ``2 * Phi(-n_sigmas)`` relative (0.27 % at 3 sigma, 6e-7 at 5 sigma, float32 rounding
  beyond). For TOF values that agree with ``"cpu"`` to float32 precision use ``n_sigmas >= 5``.
  The sinogram kernel weighs at most 64 bins per sample: wider windows are rejected.
"""

from __future__ import annotations

import functools
import importlib
import math

import numpy as np
import torch

name = "parallelproj"

__all__ = ["name", "available", "unavailable_reason", "describe", "supports", "image_geometry", "lor_endpoints",
           "padded_image_geometry", "tof_arguments", "ParallelprojPlan", "make_plan", "MAX_TOF_WEIGHTS"]

INSTALL_HINT = ("backend='parallelproj' needs parallelproj, which is not on PyPI: install it with conda "
                "(conda install -c conda-forge parallelproj) or build it from source (docs/parallelproj.md), "
                "or use backend='auto', 'cpu' or 'reference'")

#: parallelproj 2.x's TOF sinogram kernels weigh at most this many TOF bins per sample
#: (``MAX_NUM_TOF_WEIGHTS`` in its ``utils.h``); beyond it they drop and renormalise bins.
MAX_TOF_WEIGHTS = 64

_TOF_KERNELS = ("joseph3d_tof_sino_fwd", "joseph3d_tof_sino_back", "joseph3d_tof_lm_fwd", "joseph3d_tof_lm_back")


class _Kernels:
    """The Joseph calls of whichever parallelproj generation is installed.

    ``in_place``: the 2.x calling convention (outputs passed in and filled). TOF is offered when
    the module has the four 2.x TOF kernels.
    """

    def __init__(self, module, in_place: bool, label: str):
        self.module = module
        self.in_place = in_place
        self.label = label
        self.has_tof = in_place and all(hasattr(module, f) for f in _TOF_KERNELS)

    def forward(self, xstart, xend, img, origin, voxsize, out):
        if self.in_place:
            self.module.joseph3d_fwd(xstart, xend, img, origin, voxsize, out)
        else:
            _assign(out, self.module.joseph3d_fwd(xstart, xend, img, origin, voxsize))

    def back(self, xstart, xend, img, origin, voxsize, values):
        if self.in_place:
            self.module.joseph3d_back(xstart, xend, img, origin, voxsize, values)
        else:
            _assign(img, self.module.joseph3d_back(xstart, xend, tuple(img.shape), origin, voxsize, values))

    def tof_sino_forward(self, xstart, xend, img, origin, voxsize, out, tof):
        self.module.joseph3d_tof_sino_fwd(xstart, xend, img, origin, voxsize, out, tof["tof_bin_width"],
                                          tof["tof_sigma"], tof["tof_center_offset"], tof["num_tof_bins"],
                                          tof["num_sigmas"])

    def tof_sino_back(self, xstart, xend, img, origin, voxsize, values, tof):
        self.module.joseph3d_tof_sino_back(xstart, xend, img, origin, voxsize, values, tof["tof_bin_width"],
                                           tof["tof_sigma"], tof["tof_center_offset"], tof["num_tof_bins"],
                                           tof["num_sigmas"])

    def tof_lm_forward(self, xstart, xend, img, origin, voxsize, out, tof, tof_bin):
        self.module.joseph3d_tof_lm_fwd(xstart, xend, img, origin, voxsize, out, tof["tof_bin_width"],
                                        tof["tof_sigma"], tof["tof_center_offset"], tof_bin, tof["num_tof_bins"],
                                        tof["num_sigmas"])

    def tof_lm_back(self, xstart, xend, img, origin, voxsize, values, tof, tof_bin):
        self.module.joseph3d_tof_lm_back(xstart, xend, img, origin, voxsize, values, tof["tof_bin_width"],
                                         tof["tof_sigma"], tof["tof_center_offset"], tof_bin, tof["num_tof_bins"],
                                         tof["num_sigmas"])


def _assign(dst, src) -> None:
    """Copy a 1.x result (numpy, or an array on ``dst``'s GPU) into the output buffer ``dst``."""
    if isinstance(dst, np.ndarray):
        dst[...] = np.asarray(src).reshape(dst.shape)
    else:
        dst.copy_(torch.as_tensor(src, device=dst.device).reshape(dst.shape))


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


def describe() -> str:
    """Which parallelproj runs the backend, e.g. ``'parallelproj_core 2.0.8 (TOF, no CUDA)'``."""
    k = _kernels()
    if isinstance(k, str):
        return f"unavailable ({k})"
    m = k.module
    version = getattr(m, "__version__", None)
    if version is None and all(hasattr(m, f"version_{p}") for p in ("major", "minor", "patch")):
        version = f"{m.version_major}.{m.version_minor}.{m.version_patch}"
    cuda = getattr(m, "cuda_enabled", None)
    extras = ["TOF" if k.has_tof else "non-TOF only"]
    if cuda is not None:
        extras.append("CUDA" if cuda else "no CUDA")
    return f"{k.label} {version or '(version unknown)'} ({', '.join(extras)})"


def supports(device: torch.device) -> bool:
    """parallelproj projects CPU tensors (OpenMP) and CUDA tensors (its CUDA kernels)."""
    return device.type in ("cpu", "cuda")


# ------------------------------------------------------------------------------------------------
# The conversion (pure numpy; what the tests pin down without parallelproj)
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


def padded_image_geometry(grid) -> tuple[tuple[int, int, int], np.ndarray, np.ndarray, tuple[slice, ...]]:
    """The image parallelproj 2.x is handed: the grid padded with one zero layer per side.

    Every axis of a 3D grid gets one layer of zero voxels on each side (a 2D grid: x and y; its
    singleton z slice stays), and the origin moves back by one voxel on those axes, so the padded
    grid's geometric box, to which parallelproj 2.x clips rays, contains the region where pettk's
    interpolant is non-zero (see the module docstring).

    Returns
    -------
    shape : tuple of 3 int
        The padded shape.
    img_origin : ndarray, float32, shape ``(3,)``
        Centre (mm) of the padded image's voxel ``[0, 0, 0]``.
    voxsize : ndarray, float32, shape ``(3,)``
        As in :func:`image_geometry`.
    interior : tuple of 3 slices
        Where the grid's voxels sit in the padded image.
    """
    shape, _, _ = image_geometry(grid)
    pad = (1, 1, 1) if grid.ndim == 3 else (1, 1, 0)
    padded = tuple(n + 2 * p for n, p in zip(shape, pad))
    origin = list(grid.origin_mm) + ([] if grid.ndim == 3 else [0.0])
    voxsize = list(grid.voxel_size_mm) + ([] if grid.ndim == 3 else [1.0])
    origin = np.asarray([o - p * v for o, p, v in zip(origin, pad, voxsize)], dtype=np.float32)
    interior = tuple(slice(p, p + n) for p, n in zip(pad, shape))
    return padded, origin, np.asarray(voxsize, dtype=np.float32), interior


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


def tof_arguments(tof, list_mode: bool) -> dict:
    """parallelproj 2.x's TOF arguments for a pettk :class:`~pettk.TOFParams`.

    Parameters
    ----------
    tof : pettk.TOFParams
    list_mode : bool
        The list-mode kernels (``joseph3d_tof_lm_*``) truncate over planes, the sinogram kernels
        (``joseph3d_tof_sino_*``) over bins; ``num_sigmas`` differs accordingly.

    Returns
    -------
    dict
        ``tof_bin_width`` (float, mm), ``tof_sigma`` and ``tof_center_offset`` (float32 arrays of
        shape ``(1,)``: one value for every LOR; pettk's bins have no centre offset),
        ``num_tof_bins`` (int) and ``num_sigmas`` (float): parallelproj's truncation that selects
        the same bins (sinogram) or planes (list mode) as pettk's ``n_sigmas``.

    Raises
    ------
    ValueError
        When parallelproj cannot represent the TOF parameters: more than 32767 bins (its bin
        numbers are int16) or a sinogram window wider than :data:`MAX_TOF_WEIGHTS` bins.
    """
    from ..geometry import TOFParams

    if not isinstance(tof, TOFParams):
        raise TypeError(f"tof must be a TOFParams, got {type(tof).__name__}")
    if tof.n_bins > np.iinfo(np.int16).max:
        raise ValueError(f"parallelproj numbers TOF bins as int16: at most {np.iinfo(np.int16).max} bins, "
                         f"got n_bins={tof.n_bins}; use backend='cpu'")
    half_bin = 0.5 * tof.bin_width_mm / tof.sigma_mm  # half a bin, in sigmas
    if list_mode:
        # pettk: planes whose sample t has |t - c_b| <= n_sigmas sigma + w / 2 from the centre c_b
        # of the event's bin; parallelproj: planes with |t - c_b| <= num_sigmas sigma
        num_sigmas = tof.n_sigmas + half_bin
    else:
        # pettk: bins b with floor(u + 1/2 - m) <= b <= floor(u + 1/2 + m), u = t in bin units from
        # bin 0's centre, m = n_sigmas sigma / w; parallelproj: floor(u - m') <= b <= ceil(u + m')
        # with m' = num_sigmas sigma / w: the same bins for m' = m - 1/2 (when that is >= 0)
        num_sigmas = max(tof.n_sigmas - half_bin, 1e-3)
        window = 2.0 * num_sigmas * tof.sigma_mm / tof.bin_width_mm + 3.0  # bins a sample can reach
        if window > MAX_TOF_WEIGHTS:
            raise ValueError(
                f"parallelproj's TOF sinogram kernel weighs at most {MAX_TOF_WEIGHTS} TOF bins per sample, but "
                f"n_sigmas={tof.n_sigmas:g} x sigma={tof.sigma_mm:.4g} mm spans up to {math.ceil(window)} bins of "
                f"{tof.bin_width_mm:g} mm; use wider bins, a smaller n_sigmas or backend='cpu'")
    return {"tof_bin_width": float(tof.bin_width_mm),
            "tof_sigma": np.asarray([tof.sigma_mm], dtype=np.float32),
            "tof_center_offset": np.zeros(1, dtype=np.float32),
            "num_tof_bins": int(tof.n_bins),
            "num_sigmas": float(num_sigmas)}


# ------------------------------------------------------------------------------------------------
# The plan (same interface as pettk.backends.cpu.CPUPlan)
# ------------------------------------------------------------------------------------------------
class ParallelprojPlan:
    """Joseph projection (non-TOF, TOF sinogram or list-mode TOF) of one grid onto one LOR table
    set with parallelproj.

    Parameters
    ----------
    grid : pettk.ImageGrid
    tables : pettk.geometry.LORTables
        Must have the grid's dimension. With ``tof`` and ``tables.tof_bin`` the plan is list-mode
        TOF (one value per event, in its bin); with ``tof`` alone a TOF sinogram (``n_lors *
        n_bins`` values, bins last).
    device : torch.device or str
        ``cpu`` or a CUDA device; the LOR endpoints are stored there once.
    tof : pettk.TOFParams, optional
        Needs parallelproj 2.x (its ``joseph3d_tof_*`` kernels).

    Notes
    -----
    ``forward``/``adjoint`` take and return flat, unbatched tensors on ``device`` like
    :class:`pettk.backends.cpu.CPUPlan`; the computation is float32 and the result has the
    input's dtype. The image is passed padded by one zero layer (see the module docstring).
    """

    def __init__(self, grid, tables, device, tof=None):
        device = torch.device(device)
        if not supports(device):
            raise ValueError(f"backend 'parallelproj' cannot run tensors on device {device}; use a CPU or CUDA tensor")
        if tables.ndim != grid.ndim:
            raise ValueError(f"the LOR tables are {tables.ndim}D but the grid is {grid.ndim}D")
        self.list_mode_tof = tof is not None and tables.tof_bin is not None
        tof_args = None if tof is None else tof_arguments(tof, self.list_mode_tof)
        kernels = _kernels()
        if isinstance(kernels, str):
            raise ImportError(f"{INSTALL_HINT} ({kernels})")
        if tof is not None and not kernels.has_tof:
            raise ValueError(f"TOF through backend='parallelproj' needs parallelproj 2.x (its joseph3d_tof_sino_* and "
                             f"joseph3d_tof_lm_* kernels); the installed {kernels.label} has none: use backend='cpu'")
        self._k = kernels
        self.device = device
        self.image_shape = tuple(grid.shape)
        self.ndim = grid.ndim
        self.n_lors = tables.n_lors
        self.tof = tof
        self.n_out = self.n_lors * (tof.n_bins if tof is not None and not self.list_mode_tof else 1)
        self._shape3, _, _ = image_geometry(grid)
        self._padded_shape, origin, voxsize, self._interior = padded_image_geometry(grid)
        start, end = lor_endpoints(tables)
        arrays = {"start": start, "end": end, "origin": origin, "voxsize": voxsize}
        if tof_args is not None:
            arrays["tof_sigma"] = tof_args.pop("tof_sigma")
            arrays["tof_center_offset"] = tof_args.pop("tof_center_offset")
        if self.list_mode_tof:
            arrays["tof_bin"] = np.ascontiguousarray(tables.tof_bin, dtype=np.int16)
        if device.type != "cpu":  # numpy on the CPU (every parallelproj generation accepts it), else torch
            arrays = {k: torch.from_numpy(a).to(device) for k, a in arrays.items()}
        self._a = arrays
        self._tof_args = tof_args
        if tof_args is not None:
            self._tof_args = {**tof_args, "tof_sigma": arrays["tof_sigma"],
                              "tof_center_offset": arrays["tof_center_offset"]}

    # -- buffers: numpy views of torch tensors on the CPU, torch tensors on CUDA --------------------
    def _kernel_view(self, t: torch.Tensor):
        return t.numpy() if self.device.type == "cpu" else t

    def _zeros(self, shape) -> torch.Tensor:
        return torch.zeros(shape, dtype=torch.float32, device=self.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: tensor of the grid's shape on ``device`` -> flat ``(n_out,)`` of ``x``'s dtype."""
        img = self._zeros(self._padded_shape)
        img[self._interior] = x.detach().reshape(self._shape3)
        a = self._a
        args = (a["start"], a["end"], self._kernel_view(img), a["origin"], a["voxsize"])
        if self.tof is None:
            out = self._zeros((self.n_lors,))
            self._k.forward(*args, self._kernel_view(out))
        elif self.list_mode_tof:
            out = self._zeros((self.n_lors,))
            self._k.tof_lm_forward(*args, self._kernel_view(out), self._tof_args, a["tof_bin"])
        else:
            out = self._zeros((self.n_lors, self.tof.n_bins))
            self._k.tof_sino_forward(*args, self._kernel_view(out), self._tof_args)
        return out.reshape(-1).to(x.dtype)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """``y``: flat ``(n_out,)`` tensor on ``device`` -> image of the grid's shape, ``y``'s dtype."""
        values = y.detach().to(torch.float32).contiguous()
        img = self._zeros(self._padded_shape)
        a = self._a
        args = (a["start"], a["end"], self._kernel_view(img), a["origin"], a["voxsize"])
        if self.tof is None:
            self._k.back(*args, self._kernel_view(values))
        elif self.list_mode_tof:
            self._k.tof_lm_back(*args, self._kernel_view(values), self._tof_args, a["tof_bin"])
        else:
            values = values.reshape(self.n_lors, self.tof.n_bins)
            self._k.tof_sino_back(*args, self._kernel_view(values), self._tof_args)
        return img[self._interior].reshape(self.image_shape).to(y.dtype).contiguous()


def make_plan(grid, tables, device, tof=None) -> ParallelprojPlan:
    """Plan for tensors on ``device`` (CPU or CUDA)."""
    return ParallelprojPlan(grid, tables, device, tof)

"""The ``cuda`` backend: pettk's CUDA kernels run through CuPy, for CUDA tensors (float32/float64).

A :class:`CUDAPlan` mirrors :class:`pettk.backends.cpu.CPUPlan`: it binds an image grid, a set of
LOR tables and optionally TOF parameters, and its ``forward``/``adjoint`` take and return flat,
unbatched torch CUDA tensors. The kernels (``kernels/joseph.cu``, ``kernels/em_update.cu``,
shipped as ``pettk.kernels``) compute exactly what the numba kernels of
:mod:`pettk.backends._joseph_cpu` compute, one thread per LOR, with atomic adds in the back
projections.

How it runs
-----------
* **Compilation**: each source is compiled once per process and device by ``cupy.RawModule``
  (NVRTC, options :data:`NVRTC_OPTIONS`; CuPy also keeps a disk cache), read from the installed
  package.
* **Zero copy**: tensors are handed to the kernels as CuPy views made through DLPack
  (:func:`to_cupy`, i.e. ``cupy.from_dlpack(tensor)``; :func:`to_torch` goes the other way). Outputs
  are allocated by torch's caching allocator, so torch and CuPy never hold two pools of the
  projector's memory.
* **Streams**: kernels launch on torch's current stream of the tensor's device (wrapped as a CuPy
  external stream), so they are ordered with the surrounding torch work, on the default stream
  and on any other.
* **Launch configuration**: :func:`kernel_geometry` and :func:`launches` turn a plan and one call
  into kernel names, grid/block sizes, shared memory and argument tuples. They are plain Python
  and numpy and are unit-tested without a GPU.

This module imports without CuPy: CuPy is imported on first use, and
:func:`cupy_available` says whether it can be. :mod:`pettk.backends` selects this backend for
CUDA tensors when CuPy is importable.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch

from . import _joseph_cpu

name = "cuda"

#: Threads per block of the one-thread-per-LOR (and one-thread-per-element) kernels.
BLOCK = 128
#: Dynamic shared memory one block may use without an opt-in, bytes (all GPUs since sm_30).
SHARED_MEMORY_LIMIT = 48 * 1024
#: Block sizes tried, largest first, for the TOF sinogram kernels (one row of bins per thread).
TOF_BLOCKS = (128, 64, 32)
#: NVRTC options: no multiply-add contraction, so that the double geometry is bit for bit the
#: numba kernels' (LLVM on the CPU does not contract either).
NVRTC_OPTIONS = ("--fmad=false",)
#: CUDA grids are limited to 2**31 - 1 blocks along x.
MAX_GRID = 2**31 - 1
#: The CUDA sources this backend compiles.
SOURCES = ("joseph.cu", "em_update.cu")


# ---------------------------------------------------------------------------------------------
# CuPy, imported lazily
# ---------------------------------------------------------------------------------------------
def _import_cupy():
    try:
        import cupy
    except ImportError as exc:
        raise ImportError("the 'cuda' backend needs CuPy built for your CUDA version, e.g. "
                          "pip install 'pettk[gpu]' (cupy-cuda12x) or pip install cupy-cuda13x") from exc
    return cupy


@functools.cache
def cupy_available() -> bool:
    """True when CuPy can be imported (checked once per process)."""
    try:
        _import_cupy()
    except (ImportError, OSError):
        return False
    return True


def supports(device: torch.device) -> bool:
    """The CUDA backend handles CUDA tensors only."""
    return device.type == "cuda"


def _device_id(device: torch.device) -> int:
    device = torch.device(device)
    return torch.cuda.current_device() if device.index is None else device.index


@functools.cache
def _raw_module(source: str, device_id: int):
    """``cupy.RawModule`` of one shipped source on one device (compiled on first use, then cached)."""
    from .. import kernels

    cupy = _import_cupy()
    with cupy.cuda.Device(device_id):
        return cupy.RawModule(code=kernels.source(source), options=NVRTC_OPTIONS)


@functools.cache
def _kernel(source: str, entry: str, device_id: int):
    """The entry point ``entry`` of ``source`` on ``device_id`` (compiles the module once)."""
    cupy = _import_cupy()
    with cupy.cuda.Device(device_id):
        return _raw_module(source, device_id).get_function(entry)


def _torch_stream(device: torch.device):
    """CuPy stream object for torch's current stream on ``device`` (no new stream is created)."""
    cupy = _import_cupy()
    stream = torch.cuda.current_stream(device)
    if hasattr(cupy.cuda.Stream, "from_external"):  # CuPy >= 14: the CUDA stream protocol
        return cupy.cuda.Stream.from_external(stream)
    return cupy.cuda.ExternalStream(stream.cuda_stream)


def to_cupy(tensor: torch.Tensor):
    """Zero-copy CuPy view of a CUDA tensor through DLPack (``cupy.from_dlpack``).

    Call it while the CuPy stream that will use the view is current (the tensor's producer stream
    is then synchronised with it, as the DLPack protocol specifies).
    """
    if not isinstance(tensor, torch.Tensor) or tensor.device.type != "cuda":
        raise TypeError(f"to_cupy needs a CUDA torch tensor, got {_describe(tensor)}")
    return _import_cupy().from_dlpack(tensor.detach())


def to_torch(array) -> torch.Tensor:
    """Zero-copy torch view of a CuPy array through DLPack (``torch.from_dlpack``)."""
    return torch.from_dlpack(array)


def _describe(obj) -> str:
    if isinstance(obj, torch.Tensor):
        return f"a tensor on {obj.device}"
    return type(obj).__name__


# ---------------------------------------------------------------------------------------------
# Host-side description of a projection problem and its kernel launches (no CuPy needed)
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class KernelGeometry:
    """What the projection kernels need about a grid, its LOR tables and TOF, as numpy arrays.

    The parameterisation is the CPU plan's: non-TOF problems run the 2D or 3D kernels of the
    grid's dimension; TOF problems always run the 3D kernels, a 2D grid getting a singleton z axis
    (:func:`pettk.backends._joseph_cpu.as_3d`).

    Attributes
    ----------
    kind : {"2d", "3d", "tof", "lm_tof"}
        Non-TOF 2D or 3D, TOF sinogram (outer or zipped tables, bins last) or list-mode TOF.
    shape : ndarray of int32, ``(2,)`` or ``(3,)``
        The kernels' image shape (with the singleton z axis for 2D TOF).
    origin, voxel_size : ndarray of float64
        Voxel centre of index 0 and voxel size, mm.
    trans : ndarray of float64, ``(n_t, 4)``
        Transaxial rows ``(x0, y0, x1, y1)``.
    axial : ndarray of float64, ``(n_a, 2)``, or None
        Axial rows ``(z0, z1)``; ``None`` for non-TOF 2D.
    outer : bool
        Outer product of the axial and transaxial rows (sinograms) or zipped (list mode).
    n_lors : int
    n_bins : int
        TOF bins per LOR in the output (1 without TOF and in list mode).
    tof : ndarray of float64, ``(6,)``, or None
        ``(first_edge_mm, bin_width_mm, sigma_mm, reach_mm, 1 / bin_width_mm, 1 / (sqrt2 sigma))``,
        the CPU plan's TOF vector.
    tof_n_bins : int
        Number of TOF bins of the TOF parameters (0 without TOF).
    tof_bin : ndarray of int64, ``(n_lors,)``, or None
        List-mode TOF: each event's bin.
    """

    kind: str
    shape: np.ndarray
    origin: np.ndarray
    voxel_size: np.ndarray
    trans: np.ndarray
    axial: np.ndarray | None
    outer: bool
    n_lors: int
    n_bins: int
    tof: np.ndarray | None
    tof_n_bins: int
    tof_bin: np.ndarray | None

    @property
    def n_t(self) -> int:
        """Rows of the transaxial table."""
        return int(self.trans.shape[0])

    @property
    def n_out(self) -> int:
        """Values of one projection: ``n_lors * n_bins``."""
        return self.n_lors * self.n_bins

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays that live on the device, by kernel argument name."""
        named = {"shape": self.shape, "origin": self.origin, "vs": self.voxel_size, "trans": self.trans,
                 "axial": self.axial, "tof": self.tof, "tof_bin": self.tof_bin}
        return {key: value for key, value in named.items() if value is not None}


def kernel_geometry(grid, tables, tof=None) -> KernelGeometry:
    """Describe ``grid``, ``tables`` (:class:`pettk.geometry.LORTables`) and ``tof`` for the kernels."""
    if tables.ndim != grid.ndim:
        raise ValueError(f"tables hold {tables.ndim}D LORs but the grid is {grid.ndim}D")
    if tof is None:
        trans = np.ascontiguousarray(tables.transaxial, dtype=np.float64)
        axial = None if grid.ndim == 2 else np.ascontiguousarray(tables.axial, dtype=np.float64)
        return KernelGeometry(
            kind="3d" if grid.ndim == 3 else "2d", shape=np.asarray(grid.shape, dtype=np.int32),
            origin=np.asarray(grid.origin_mm, dtype=np.float64), voxel_size=np.asarray(grid.voxel_size_mm, np.float64),
            trans=trans, axial=axial, outer=bool(tables.outer), n_lors=int(tables.n_lors), n_bins=1, tof=None,
            tof_n_bins=0, tof_bin=None)
    shape, origin, vs, trans, axial, outer = _joseph_cpu.as_3d(grid, tables)
    list_mode = tables.tof_bin is not None
    if list_mode and outer:
        raise ValueError("list-mode TOF needs zipped LOR tables (outer=False)")
    return KernelGeometry(
        kind="lm_tof" if list_mode else "tof", shape=np.asarray(shape, dtype=np.int32),
        origin=np.ascontiguousarray(origin, dtype=np.float64), voxel_size=np.ascontiguousarray(vs, dtype=np.float64),
        trans=np.ascontiguousarray(trans, dtype=np.float64), axial=np.ascontiguousarray(axial, dtype=np.float64),
        outer=bool(outer), n_lors=int(tables.n_lors), n_bins=1 if list_mode else int(tof.n_bins),
        tof=_joseph_cpu.tof_vector(tof), tof_n_bins=int(tof.n_bins),
        tof_bin=np.ascontiguousarray(tables.tof_bin, dtype=np.int64) if list_mode else None)


def grid_size(n: int, block: int) -> int:
    """Blocks of ``block`` threads that cover ``n`` items (0 for none)."""
    if n < 0 or block < 1:
        raise ValueError(f"grid_size needs n >= 0 and block >= 1, got n={n}, block={block}")
    blocks = -(-n // block)
    if blocks > MAX_GRID:
        raise ValueError(f"{n} items need {blocks} blocks of {block} threads, more than CUDA's {MAX_GRID}")
    return blocks


def tof_chunks(n_bins: int, itemsize: int, shared_limit: int = SHARED_MEMORY_LIMIT,
               blocks: tuple[int, ...] = TOF_BLOCKS) -> tuple[int, list[tuple[int, int]]]:
    """Block size and bin chunks ``[(bin0, n_chunk), ...]`` of the TOF sinogram kernels.

    Each thread keeps ``n_chunk`` values of its LOR's TOF row in shared memory
    (``block * n_chunk * itemsize`` bytes per block). The largest block size whose threads hold
    a whole row within ``shared_limit`` wins (one launch); when even the smallest block cannot, the
    bins are split into chunks, one launch each.
    """
    if n_bins < 1 or itemsize < 1:
        raise ValueError(f"tof_chunks needs n_bins >= 1 and itemsize >= 1, got {n_bins}, {itemsize}")
    for block in blocks:
        if block * n_bins * itemsize <= shared_limit:
            return block, [(0, n_bins)]
    block = blocks[-1]
    per = shared_limit // (block * itemsize)
    if per < 1:
        raise ValueError(f"shared_limit={shared_limit} bytes cannot hold one TOF bin per thread of a "
                         f"{block}-thread block")
    return block, [(bin0, min(per, n_bins - bin0)) for bin0 in range(0, n_bins, per)]


@dataclass(frozen=True)
class Launch:
    """One kernel launch: entry point, 1D grid and block, dynamic shared memory, arguments."""

    source: str
    entry: str
    grid: int
    block: int
    shared_mem: int
    args: tuple


_SUFFIX = {4: "f32", 8: "f64"}


def _suffix(itemsize: int) -> str:
    try:
        return _SUFFIX[itemsize]
    except KeyError:
        raise TypeError("the CUDA kernels take float32 or float64 data, "
                        f"got an item size of {itemsize} bytes") from None


def launches(geo: KernelGeometry, op: str, src, dst, arrays: dict, itemsize: int, block: int = BLOCK,
             shared_limit: int = SHARED_MEMORY_LIMIT) -> list[Launch]:
    """Kernel launches of one projection.

    Parameters
    ----------
    geo : KernelGeometry
    op : {"fwd", "adj"}
        Forward projection (``src`` image, ``dst`` flat output of ``geo.n_out`` values, every value
        written) or back projection (``src`` flat data, ``dst`` flat image, zeroed by the caller,
        accumulated with atomics).
    src, dst : device arrays
        Passed through as kernel arguments.
    arrays : dict
        The device copies of ``geo.arrays()``, same keys.
    itemsize : int
        4 (float32) or 8 (float64): picks the ``_f32``/``_f64`` entry point and sizes shared memory.
    """
    if op not in ("fwd", "adj"):
        raise ValueError(f"op must be 'fwd' or 'adj', got {op!r}")
    suffix = _suffix(itemsize)
    n = geo.n_lors
    head = (src, dst, arrays["shape"], arrays["origin"], arrays["vs"], arrays["trans"])
    if geo.kind == "2d":
        return [Launch("joseph.cu", f"joseph2d_{op}_{suffix}", grid_size(n, block), block, 0, head + (np.int64(n),))]
    sino = (arrays["axial"], np.int32(geo.outer), np.int64(geo.n_t), np.int64(n))
    if geo.kind == "3d":
        return [Launch("joseph.cu", f"joseph3d_{op}_{suffix}", grid_size(n, block), block, 0, head + sino)]
    if geo.kind == "lm_tof":
        args = head + (arrays["axial"], np.int64(n), arrays["tof"], np.int32(geo.tof_n_bins), arrays["tof_bin"])
        return [Launch("joseph.cu", f"joseph3d_lm_tof_{op}_{suffix}", grid_size(n, block), block, 0, args)]
    if geo.kind != "tof":
        raise ValueError(f"unknown kernel geometry kind {geo.kind!r}")
    tof_block, chunks = tof_chunks(geo.n_bins, itemsize, shared_limit)
    return [Launch("joseph.cu", f"joseph3d_tof_{op}_{suffix}", grid_size(n, tof_block), tof_block,
                   tof_block * n_chunk * itemsize,
                   head + sino + (arrays["tof"], np.int32(geo.n_bins), np.int32(bin0), np.int32(n_chunk)))
            for bin0, n_chunk in chunks]


def em_ratio_launch(y, ybar, eps: float, out, n: int, itemsize: int, block: int = BLOCK) -> Launch:
    """Launch of the fused ratio ``out = y == 0 ? 0 : y / max(ybar, eps)`` over ``n`` elements."""
    return Launch("em_update.cu", f"em_ratio_{_suffix(itemsize)}", grid_size(n, block), block, 0,
                  (y, ybar, np.float64(eps), out, np.int64(n)))


def em_update_launch(x, back, sens, mask, sens_floor: float, out, n: int, itemsize: int,
                     block: int = BLOCK) -> Launch:
    """Launch of the fused update ``out = mask & (sens > floor) ? x * back / sens : 0``."""
    return Launch("em_update.cu", f"em_update_{_suffix(itemsize)}", grid_size(n, block), block, 0,
                  (x, back, sens, mask, np.float64(sens_floor), out, np.int64(n)))


def _run(device_id: int, device: torch.device, build, tensors: dict) -> None:
    """Launch ``build(views)`` on torch's current stream of ``device``.

    ``tensors`` are the CUDA tensors of this call, by name; ``build`` receives their CuPy views
    (made while that stream is current) and returns the :class:`Launch` list.
    """
    cupy = _import_cupy()
    with cupy.cuda.Device(device_id), _torch_stream(device):
        views = {key: to_cupy(t) for key, t in tensors.items()}
        for launch in build(views):
            if launch.grid == 0:
                continue
            kernel = _kernel(launch.source, launch.entry, device_id)
            kernel((launch.grid,), (launch.block,), launch.args, shared_mem=launch.shared_mem)


# ---------------------------------------------------------------------------------------------
# The plan
# ---------------------------------------------------------------------------------------------
class CUDAPlan:
    """Joseph projection of one grid onto one LOR table set on one CUDA device.

    Parameters
    ----------
    grid : pettk.ImageGrid
    tables : pettk.geometry.LORTables
        Must have the grid's dimension.
    device : torch.device or str
        A CUDA device; the LOR tables are copied there once.
    tof : pettk.TOFParams, optional
        With TOF, sinogram tables give ``n_lors * n_bins`` values (TOF bins last); list-mode
        tables (with ``tof_bin``) give one value per event.

    Notes
    -----
    ``forward``/``adjoint`` run on torch's current stream of ``device``; their inputs must be
    CUDA tensors on ``device`` of dtype float32 or float64 (anything else raises ``TypeError`` or
    ``ValueError``). The results are new tensors of the input's dtype.
    """

    def __init__(self, grid, tables, device, tof=None):
        device = torch.device(device)
        if device.type != "cuda":
            raise ValueError(f"CUDAPlan needs a CUDA device, got {device}")
        self._device_id = _device_id(device)
        self.device = torch.device("cuda", self._device_id)
        self.image_shape = tuple(grid.shape)
        self.ndim = grid.ndim
        self.tof = tof
        self.geometry = kernel_geometry(grid, tables, tof)
        self.n_lors = self.geometry.n_lors
        self.list_mode_tof = self.geometry.kind == "lm_tof"
        self.n_out = self.geometry.n_out
        self._n_voxels = int(np.prod(self.image_shape))
        with torch.cuda.device(self.device):
            self._tables = {key: torch.as_tensor(value, device=self.device)
                            for key, value in self.geometry.arrays().items()}
            # the copies were queued on the current stream; a later call may run on another one
            self._home_stream = torch.cuda.current_stream(self.device)
            self._home_stream.synchronize()
        self._views: dict | None = None  # CuPy views of self._tables, made on first use

    def _check(self, name: str, t: torch.Tensor, numel: int) -> torch.Tensor:
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch tensor, got {type(t).__name__}")
        if t.device != self.device:
            raise ValueError(f"{name} must be on {self.device} (this plan's device), got {t.device}")
        if t.dtype not in (torch.float32, torch.float64):
            raise TypeError(f"{name} must have dtype torch.float32 or torch.float64, got {t.dtype}")
        if t.numel() != numel:
            raise ValueError(f"{name} must have {numel} elements, got {t.numel()} (shape {tuple(t.shape)})")
        return t.detach().contiguous()

    def _project(self, op: str, src: torch.Tensor, dst: torch.Tensor) -> None:
        itemsize = src.element_size()
        geo = self.geometry

        def build(views):
            if self._views is None:  # zero-copy views of the LOR tables, kept for later calls
                self._views = {key: to_cupy(t) for key, t in self._tables.items()}
            return launches(geo, op, views["src"], views["dst"], self._views, itemsize)

        stream = torch.cuda.current_stream(self.device)
        if stream != self._home_stream:  # keep the tables' memory from reuse while this stream reads it
            for t in self._tables.values():
                t.record_stream(stream)
        _run(self._device_id, self.device, build, {"src": src, "dst": dst})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: CUDA tensor of the grid's shape -> flat CUDA tensor ``(n_out,)`` of the same dtype."""
        x = self._check("x", x, self._n_voxels)
        with torch.cuda.device(self.device):
            out = torch.empty(self.n_out, dtype=x.dtype, device=self.device)
            if self.n_out:
                self._project("fwd", x, out)
        return out

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """``y``: flat CUDA tensor ``(n_out,)`` -> CUDA tensor of the grid's shape, same dtype."""
        y = self._check("y", y, self.n_out)
        with torch.cuda.device(self.device):
            img = torch.zeros(self._n_voxels, dtype=y.dtype, device=self.device)
            if self.n_out:
                self._project("adj", y, img)
        return img.reshape(self.image_shape)


def make_plan(grid, tables, device, tof=None) -> CUDAPlan:
    """Plan for tensors on the CUDA ``device``."""
    return CUDAPlan(grid, tables, device, tof)


# ---------------------------------------------------------------------------------------------
# The fused EM steps (called by pettk.backends.em_update for CUDA tensors)
# ---------------------------------------------------------------------------------------------
def em_ratio(y: torch.Tensor, ybar: torch.Tensor, eps: float) -> torch.Tensor:
    """``y / max(ybar, eps)``, 0 where ``y == 0``: a new tensor of ``ybar``'s shape and dtype.

    ``y`` and ``ybar`` are CUDA tensors of one shape on one device; ``ybar`` is float32/float64.
    """
    ybar = ybar.detach().contiguous()
    y = y.detach().to(ybar.dtype).contiguous()
    out = torch.empty_like(ybar)
    n = ybar.numel()
    if n:
        _run(_device_id(ybar.device), ybar.device,
             lambda v: [em_ratio_launch(v["y"], v["ybar"], eps, v["out"], n, ybar.element_size())],
             {"y": y, "ybar": ybar, "out": out})
    return out


def em_update(x: torch.Tensor, back: torch.Tensor, sens: torch.Tensor, mask: torch.Tensor,
              sens_floor: float, out: torch.Tensor) -> torch.Tensor:
    """``out = x * back / sens`` inside ``mask`` where ``sens > sens_floor``, else 0; returns ``out``.

    All CUDA tensors of one device and of ``x``'s number of elements; ``x`` and ``out`` contiguous
    float32/float64 of one dtype (``out`` may be ``x``), ``mask`` bool.
    """
    dtype = x.dtype
    x_c = x.detach()
    back = back.detach().to(dtype).contiguous()
    sens = sens.detach().to(dtype).contiguous()
    mask = mask.detach().contiguous().view(torch.uint8)  # same bytes as the kernel's bool
    n = x.numel()
    if n:
        _run(_device_id(x.device), x.device,
             lambda v: [em_update_launch(v["x"], v["back"], v["sens"], v["mask"], sens_floor, v["out"], n,
                                         x.element_size())],
             {"x": x_c, "back": back, "sens": sens, "mask": mask, "out": out.detach()})
    return out

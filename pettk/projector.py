"""The matrix-free Joseph projector, differentiable in torch.

:class:`Projector` maps images on an :class:`~pettk.geometry.ImageGrid` to line integrals along
the LORs of a measurement geometry (:class:`~pettk.geometry.SinogramLayout`,
:class:`~pettk.geometry.ParallelBeam2D` or :class:`~pettk.geometry.LORList`) and back. It never
stores a system matrix: memory is O(image + sinogram).

The Joseph method, defined exactly
----------------------------------
Voxel centres sit at ``origin + i * voxel_size`` and images are C-order arrays ``(n0, n1[, n2])``.
For a LOR from ``p0`` to ``p1`` (mm) with direction ``d = p1 - p0``, the stepping axis ``k`` is
the one with the largest ``|d_k|``. For every voxel plane ``i_k`` (``0 <= i_k < n_k``) whose centre
lies between ``p0`` and ``p1``, the image is sampled where the line crosses that plane, by bilinear
interpolation of the four nearest voxels in the two other axes (linear interpolation of the two
nearest in 2D); voxels outside the grid count as zero. The projection is the sum of the samples
times ``voxel_size_k / |cos theta_k|`` with ``cos theta_k = d_k / |d|``. The adjoint spreads
exactly the same weights, so ``<P x, y> = <x, P^T y>`` to rounding.

Arrays
------
``forward`` takes images ``(..., *grid.shape)`` and returns ``(..., *shape_out)``; ``adjoint`` the
reverse. Leading dimensions are batch dimensions. numpy in gives numpy out, torch in gives torch
out on the same device; float32 and float64 are supported and preserved. Torch calls go through a
``torch.autograd.Function`` whose backward is the other operator, so ``loss(P(x)).backward()``
gives ``P^T`` of the upstream gradient (and higher derivatives work the same way).

References
----------
P. M. Joseph, "An improved algorithm for reprojecting rays through pixel images",
IEEE Trans. Med. Imaging 1(3), 192-196 (1982).
"""

from __future__ import annotations

import math
import warnings
import weakref

import numpy as np
import torch

from . import backends
from ._validation import as_positive_int
from .backends import _joseph_cpu
from .geometry import ImageGrid, LORList, ParallelBeam2D, SinogramLayout, SinogramLayout2D, TOFParams

__all__ = ["Projector", "TOFCoverageWarning"]

_FLOAT_DTYPES = (torch.float32, torch.float64)
_GEOMETRIES = (SinogramLayout, SinogramLayout2D, ParallelBeam2D, LORList)


class TOFCoverageWarning(UserWarning):
    """TOF bins that do not cover every LOR's path through the image: the rest is dropped."""


# geometry -> {(grid, tof)} already warned about, so subsets and repeated projectors warn once
_TOF_WARNED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class _Project(torch.autograd.Function):
    """Autograd bridge: the backward of the forward projection is the adjoint and vice versa."""

    @staticmethod
    def forward(ctx, x, projector, mode):
        ctx.projector = projector
        ctx.mode = mode
        return projector._run(x, mode)

    @staticmethod
    def backward(ctx, grad):
        other = "adjoint" if ctx.mode == "forward" else "forward"
        return _Project.apply(grad.contiguous(), ctx.projector, other), None, None


class Projector:
    """Matrix-free Joseph forward and back projector.

    Parameters
    ----------
    grid : ImageGrid
        The image grid (2D or 3D).
    geometry : SinogramLayout, ParallelBeam2D or LORList
        The LORs; their point dimension must match ``grid.ndim``.
    backend : {"auto", "cpu", "reference", "cuda"}
        ``"auto"`` picks the numba kernels for CPU tensors and the CUDA kernels for CUDA tensors
        (falling back to ``"reference"`` when CuPy is missing).
    tof : TOFParams, optional
        Time of flight. With a sinogram geometry the output gains a last axis of ``tof.n_bins``
        TOF bins; with a :class:`LORList` carrying ``tof_bin`` every event is projected into its
        own TOF bin (list-mode TOF). The bins need not cover every LOR's whole path through the
        image (real scanners' TOF windows often miss the image corners): contributions that fall
        outside the bins are dropped, as in the detector, and a :class:`TOFCoverageWarning` says
        how far the path reaches beyond them (once per geometry, grid and ``tof``).
    views : slice or sequence of int, optional
        Restrict the projector to these views (list mode: these events). :meth:`subsets` builds
        such projectors; ``None`` keeps all of them.
    check_finite : bool
        Reject inputs holding NaN or inf (one pass over the input per call).

    Attributes
    ----------
    shape_in : tuple of int
        ``grid.shape``.
    shape_out : tuple of int
        The measurement shape, e.g. ``(n_planes, n_views, n_radial)`` for a sinogram layout, with
        the view axis reduced to the selected views, and ``(..., n_tof_bins)`` with TOF.
    """

    def __init__(self, grid: ImageGrid, geometry, backend: str = "auto", *, tof: TOFParams | None = None,
                 views=None, check_finite: bool = True):
        if not isinstance(grid, ImageGrid):
            raise TypeError(f"grid must be an ImageGrid, got {type(grid).__name__}")
        if not isinstance(geometry, _GEOMETRIES):
            raise TypeError("geometry must be a SinogramLayout, SinogramLayout2D, ParallelBeam2D or LORList, "
                            f"got {type(geometry).__name__}")
        if geometry.ndim != grid.ndim:
            hint = (" (use SinogramLayout2D, ParallelBeam2D or a 2D LORList for 2D grids)" if grid.ndim == 2
                    else " (use a SinogramLayout or a 3D LORList for 3D grids)")
            raise ValueError(f"geometry {type(geometry).__name__} has {geometry.ndim}D points but the grid "
                             f"is {grid.ndim}D{hint}")
        if isinstance(geometry, ParallelBeam2D):
            _check_parallel_beam_covers(grid, geometry)
        if tof is not None and not isinstance(tof, TOFParams):
            raise TypeError(f"tof must be a TOFParams or None, got {type(tof).__name__}")
        self.grid = grid
        self.geometry = geometry
        self.backend = backends.check_name(backend)
        self.check_finite = bool(check_finite)
        self.tof = tof
        self.views = views
        self._tables = geometry.lor_tables(views)
        tof_axis = (tof.n_bins,) if tof is not None and self._tables.tof_bin is None else ()
        self.shape_in: tuple[int, ...] = tuple(grid.shape)
        self.shape_out: tuple[int, ...] = tuple(geometry.shape_for_views(views)) + tof_axis
        self._full_shape: tuple[int, ...] = tuple(geometry.shape) + tof_axis
        if views is not None and self.shape_out[geometry.view_axis] == 0:
            raise ValueError(f"views={views!r} selects none of the geometry's "
                             f"{geometry.shape[geometry.view_axis]} views")
        if tof is not None:
            _check_tof(grid, geometry, self._tables, tof)
        self._plans: dict = {}

    # -- public API --------------------------------------------------------------------------------
    @property
    def n_lors(self) -> int:
        """Number of LORs (measurement bins) of this projector."""
        return int(np.prod(self.shape_out))

    def forward(self, x):
        """Line integrals of ``x`` (``(..., *shape_in)``) along every LOR: ``(..., *shape_out)``."""
        return self._apply(x, "forward")

    __call__ = forward

    def adjoint(self, y):
        """Back projection of ``y`` (``(..., *shape_out)``): ``(..., *shape_in)``."""
        return self._apply(y, "adjoint")

    def subsets(self, n: int) -> list[Projector]:
        """Split the views (list mode: the events) into ``n`` interleaved subsets.

        Subset ``i`` holds views ``i, i + n, i + 2n, ...`` of this projector. Use
        :meth:`select` to cut the matching part out of a full measurement array.
        """
        n_units = self.shape_out[self.geometry.view_axis]
        n = as_positive_int("n", n)
        if n > n_units:
            raise ValueError(f"n must be <= the number of views ({n_units}), got {n}")
        if self.views is None:  # strided slices keep select() a view, not a copy
            parts = [slice(i, None, n) for i in range(n)]
        else:
            parts = [self._view_indices()[i::n] for i in range(n)]
        return [Projector(self.grid, self.geometry, self.backend, tof=self.tof, views=part,
                          check_finite=self.check_finite) for part in parts]

    def without_tof(self) -> Projector:
        """The same LORs (and views) without TOF, e.g. for attenuation factors."""
        if self.tof is None:
            return self
        return Projector(self.grid, self.geometry, self.backend, views=self.views, check_finite=self.check_finite)

    def select(self, y_full):
        """The part of a full measurement array ``(..., *full_shape)`` this projector sees.

        ``full_shape`` is the geometry's shape (plus the TOF axis for TOF sinograms).
        """
        if isinstance(y_full, (list, tuple)):
            try:
                y_full = np.asarray(y_full)
            except ValueError:
                raise ValueError("y_full is a ragged sequence, not an array") from None
        if not isinstance(y_full, (np.ndarray, torch.Tensor)):
            raise TypeError(f"y_full must be a numpy array, a torch tensor or a (nested) list, "
                            f"got {type(y_full).__name__}")
        full = self._full_shape
        shape = tuple(y_full.shape)
        if len(shape) < len(full) or shape[len(shape) - len(full):] != full:
            raise ValueError(f"y_full must have shape (..., {', '.join(map(str, full))}), got {shape}")
        if self.views is None:
            return y_full
        axis = len(shape) - len(full) + self.geometry.view_axis
        if isinstance(self.views, slice):
            return y_full[(slice(None),) * axis + (self.views,)]
        index = self._view_indices()
        if isinstance(y_full, torch.Tensor):
            return y_full.index_select(axis, torch.as_tensor(index, device=y_full.device))
        return np.take(y_full, index, axis=axis)

    def __repr__(self) -> str:
        tof = "" if self.tof is None else f", tof={self.tof!r}"
        return (f"Projector(grid={self.grid!r}, geometry={self.geometry!r}, backend={self.backend!r}{tof}, "
                f"shape_out={self.shape_out})")

    # -- internals ---------------------------------------------------------------------------------
    def _view_indices(self) -> np.ndarray:
        n_all = self.geometry.shape[self.geometry.view_axis]
        if self.views is None:
            return np.arange(n_all)
        if isinstance(self.views, slice):
            return np.arange(n_all)[self.views]
        return np.asarray(self.views, dtype=np.int64)

    def _apply(self, data, mode: str):
        name = "x" if mode == "forward" else "y"
        expected = self.shape_in if mode == "forward" else self.shape_out
        if isinstance(data, np.ndarray):
            _check_array(name, data, expected)
            tensor = torch.from_numpy(np.ascontiguousarray(data))
        elif isinstance(data, torch.Tensor):
            _check_array(name, data, expected)
            tensor = data
        else:
            raise TypeError(f"{name} must be a numpy array or a torch tensor, got {type(data).__name__}")
        backends.resolve(self.backend, tensor.device)
        if self.check_finite:
            _check_finite(name, tensor)
        if isinstance(data, np.ndarray):
            with torch.no_grad():
                return self._run(tensor, mode).numpy()
        return _Project.apply(tensor, self, mode)

    def _plan(self, device: torch.device):
        module = backends.resolve(self.backend, device)
        key = (module.name, str(device))
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans[key] = module.make_plan(self.grid, self._tables, device, self.tof)
        return plan

    def _run(self, data: torch.Tensor, mode: str) -> torch.Tensor:
        """Run one operator on a validated tensor with leading batch dimensions."""
        plan = self._plan(data.device)
        n_core = len(self.shape_in if mode == "forward" else self.shape_out)
        batch = tuple(data.shape[:data.ndim - n_core])
        out_core = self.shape_out if mode == "forward" else self.shape_in
        flat = data.detach().reshape((-1,) + tuple(data.shape[data.ndim - n_core:]))
        op = plan.forward if mode == "forward" else plan.adjoint
        results = []
        for item in flat:
            item = item.contiguous()
            results.append(op(item.reshape(-1) if mode == "adjoint" else item).reshape(out_core))
        if len(results) == 1:  # no batch: the plan's fresh output as is (stack would copy it)
            out = results[0].unsqueeze(0)
        else:
            out = torch.stack(results) if results else flat.new_zeros((0,) + tuple(out_core))
        return out.reshape(batch + tuple(out_core))


def _check_array(name: str, data, expected: tuple) -> None:
    """Validate the dtype and shape of a projector input before any work."""
    if isinstance(data, np.ndarray):
        if data.dtype not in (np.float32, np.float64):
            raise TypeError(f"{name} must have dtype float32 or float64, got {data.dtype} "
                            f"(convert with {name}.astype(np.float32))")
    elif data.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"{name} must have dtype torch.float32 or torch.float64, got {data.dtype} "
                        f"(convert with {name}.float())")
    shape = tuple(data.shape)
    n = len(expected)
    if len(shape) < n or shape[len(shape) - n:] != tuple(expected):
        raise ValueError(f"{name} must have shape (..., {', '.join(map(str, expected))}), got {shape}")


def _check_finite(name: str, tensor: torch.Tensor) -> None:
    """Reject NaN and inf (one pass over the data)."""
    finite = torch.isfinite(tensor)
    if not bool(finite.all()):
        raise ValueError(f"{name} contains {int((~finite).sum())} non-finite values (NaN or inf)")


def _check_tof(grid: ImageGrid, geometry, tables, tof: TOFParams) -> None:
    """List-mode bins must be in range; bins that miss part of the image are warned about once."""
    if isinstance(geometry, LORList):
        if tables.tof_bin is None:
            raise ValueError("list-mode TOF needs the TOF bin of every event: LORList(start_mm, end_mm, tof_bin=...)")
        if tables.tof_bin.size and tables.tof_bin.max() >= tof.n_bins:
            raise ValueError(f"LORList.tof_bin must be < tof.n_bins = {tof.n_bins}, got {int(tables.tof_bin.max())}")
    half = 0.5 * tof.coverage_mm
    warned = _TOF_WARNED.setdefault(geometry, set())
    if (grid, tof) in warned:
        return
    reach = _joseph_cpu.max_sample_offset_mm(grid, tables)
    if reach > half * (1 + 1e-9):
        warned.add((grid, tof))
        warnings.warn(
            f"TOF bins cover +-{half:.4g} mm around each LOR's midpoint (n_bins={tof.n_bins} x "
            f"bin_width_mm={tof.bin_width_mm:g}) but LORs cross the image up to {reach:.4g} mm from their "
            f"midpoint, {reach - half:.4g} mm beyond the last bin: contributions outside the bins are dropped "
            f"(n_bins * bin_width_mm >= {2 * reach:.4g} covers the whole image)", TOFCoverageWarning, stacklevel=3)


def _check_parallel_beam_covers(grid: ImageGrid, geometry: ParallelBeam2D) -> None:
    """The LORs of a parallel-beam geometry must start and end outside the image."""
    lo = np.asarray(grid.origin_mm) - 0.5 * np.asarray(grid.voxel_size_mm)
    hi = lo + np.asarray(grid.extent_mm)
    reach = math.sqrt(float(np.sum(np.maximum(np.abs(lo), np.abs(hi)) ** 2)))
    if reach > geometry.half_length_mm:
        raise ValueError(
            f"the image grid reaches {reach:.4g} mm from the centre but the parallel-beam LORs end at "
            f"half_length_mm={geometry.half_length_mm:.4g} mm; pass ParallelBeam2D(..., "
            f"half_length_mm>={math.ceil(reach)})")

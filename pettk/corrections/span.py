"""Axial compression (span) of ring sinograms, and a projector for compressed sinograms.

* :class:`SpanLayout` -- a span-compressed :class:`~pettk.geometry.SinogramLayout`: every
  compressed plane is the sum (mash) of span-1 planes; :meth:`SpanLayout.compress` (that sum) and
  :meth:`SpanLayout.expand` (its exact adjoint) are the linear operator ``C`` and ``C^T``.
* :func:`compress` -- ``SpanLayout(layout, span)``.
* :class:`SpanProjector` -- a :class:`~pettk.projector.Projector` whose measurements are the
  compressed sinogram, so :class:`~pettk.physics.ForwardModel` and every reconstruction run on
  compressed data unchanged.

The standard definition (the Siemens/ECAT and STIR convention)
--------------------------------------------------------------
With an odd span ``s`` and ring difference ``delta = ring_end - ring_start``, segment 0 holds
``|delta| <= (s - 1) / 2`` and segment ``+-k`` holds ``k s - (s - 1) / 2 <= +-delta <= k s + (s -
1) / 2`` (the last segment may be partly filled when ``max_ring_difference`` is not at a segment
edge). Within a segment, span-1 planes with the same axial mean position
``(ring_start + ring_end) / 2`` are summed into one plane. Segments are ordered ``0, +1, -1, +2,
-2, ...`` and planes within a segment by increasing ``ring_start + ring_end``. Span 11 with 64
rings and maximum ring difference 60 gives the mMR's 837 planes (11 segments).

Projection
----------
``method="exact"`` projects the span-1 planes and compresses, ``C P`` (adjoint ``P^T C^T``): the
model of a compressed bin is exactly the sum of its LORs, as the data are. ``method="mean-lor"``
projects once along the mean LOR of every compressed plane (mean start and end ring position
of its members) and multiplies by the number of members, what scanner software does: faster
by about the ratio of span-1 to compressed planes, at the cost of an axial model mismatch.

Multiplicative factors of a compressed bin (normalisation, attenuation) are the means of their
members' (:meth:`SpanLayout.average`): ``ForwardModel(SpanProjector, mu=...)`` computes them so;
additive terms (randoms, scatter) are sums (:meth:`SpanLayout.compress`).
"""

from __future__ import annotations

import numpy as np
import torch

from .._validation import as_positive_int
from ..geometry import LORTables, SinogramLayout, _select_views, from_dict
from ..physics import attenuation_factors
from ..projector import Projector

__all__ = ["SpanLayout", "SpanProjector", "compress"]


class SpanLayout:
    """A span-compressed sinogram ``(n_planes, n_views, n_radial)`` of a span-1 layout.

    Parameters
    ----------
    base : SinogramLayout
        The span-1 layout (its ``max_ring_difference`` bounds the segments).
    span : int
        Odd, ``1 <= span <= 2 * base.max_ring_difference + 1``.

    Attributes
    ----------
    plane_of_base : ndarray of int64, shape ``(base.n_planes,)``
        The compressed plane every span-1 plane is summed into.
    n_merged : ndarray of int64, shape ``(n_planes,)``
        Number of span-1 planes in each compressed plane.
    segment : ndarray of int64, shape ``(n_planes,)``
        Signed segment number of each plane.
    axial_sum : ndarray of int64, shape ``(n_planes,)``
        ``ring_start + ring_end`` of the members (twice the axial mean position in rings).
    """

    view_axis = 1
    ndim = 3

    def __init__(self, base: SinogramLayout, span: int):
        if not isinstance(base, SinogramLayout):
            raise TypeError(f"base must be a SinogramLayout, got {type(base).__name__}")
        if isinstance(span, bool) or not isinstance(span, (int, np.integer)):
            raise TypeError(f"span must be an odd integer, got {span!r}")
        span = int(span)
        if span < 1 or span % 2 == 0:
            raise ValueError(f"span must be an odd integer >= 1 (1, 3, 5, ...), got {span}")
        mrd = base.max_ring_difference
        if span > 2 * mrd + 1:
            raise ValueError(f"span must be <= 2 * max_ring_difference + 1 = {2 * mrd + 1} for a layout with "
                             f"max_ring_difference={mrd}, got {span}")
        self.base = base
        self.span = span
        self.scanner = base.scanner
        self.n_views, self.n_radial = base.n_views, base.n_radial
        self.radial_trim, self.max_ring_difference = base.radial_trim, mrd
        self.crystal_pairs = base.crystal_pairs

        rings = np.asarray(base.plane_rings)
        delta = rings[:, 1] - rings[:, 0]
        half = (span - 1) // 2
        magnitude = (np.abs(delta) + half) // span
        seg = np.sign(delta) * magnitude
        order = np.where(seg > 0, 2 * seg - 1, -2 * seg)  # 0, +1, -1, +2, -2, ...
        axial = rings.sum(axis=1)
        keys = np.stack([order, axial], axis=1)
        unique, inverse = np.unique(keys, axis=0, return_inverse=True)  # sorted by (order, axial)
        self.plane_of_base = inverse.reshape(-1).astype(np.int64)
        self.n_merged = np.bincount(self.plane_of_base, minlength=unique.shape[0]).astype(np.int64)
        order_u = unique[:, 0]
        self.segment = np.where(order_u % 2 == 1, (order_u + 1) // 2, -(order_u // 2)).astype(np.int64)
        self.axial_sum = unique[:, 1].astype(np.int64)
        z = base.scanner.ring_positions_mm[rings]  # (n_base_planes, 2)
        mean_z = np.zeros((unique.shape[0], 2))
        np.add.at(mean_z, self.plane_of_base, z)
        self.mean_axial_mm = mean_z / self.n_merged[:, None]
        for name in ("plane_of_base", "n_merged", "segment", "axial_sum", "mean_axial_mm"):
            getattr(self, name).setflags(write=False)
        self._index = torch.as_tensor(self.plane_of_base.copy())

    # -- the layout interface ------------------------------------------------------------------
    @property
    def n_planes(self) -> int:
        return int(self.n_merged.size)

    @property
    def n_segments(self) -> int:
        return int(np.unique(self.segment).size)

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.n_planes, self.n_views, self.n_radial)

    @property
    def n_lors(self) -> int:
        return self.n_planes * self.n_views * self.n_radial

    def shape_for_views(self, views=None) -> tuple[int, ...]:
        return (self.n_planes, int(_select_views(self.n_views, views).size), self.n_radial)

    def lor_tables(self, views=None) -> LORTables:
        """The mean LORs: the base layout's transaxial table, axial ``(n_planes, 2)`` mean ring positions."""
        t = self.base.lor_tables(views)
        return LORTables(t.transaxial, np.ascontiguousarray(self.mean_axial_mm), outer=True)

    def to_dict(self) -> dict:
        return {"type": "SpanLayout", "base": self.base.to_dict(), "span": self.span}

    @classmethod
    def from_dict(cls, description: dict) -> SpanLayout:
        """Rebuild from :meth:`to_dict` (``pettk.geometry.from_dict`` does not know span layouts)."""
        if not isinstance(description, dict) or description.get("type") != "SpanLayout":
            raise ValueError(f"a SpanLayout description must be a dict with type 'SpanLayout', got {description!r}")
        return cls(from_dict(description["base"]), description["span"])

    # -- the compression operator --------------------------------------------------------------
    def compress(self, y, plane_axis: int = -3):
        """``C y``: sum the span-1 planes of ``y`` (``(..., base.n_planes, n_views, n_radial)``, or
        the plane axis at ``plane_axis``, e.g. -4 with a TOF axis) into compressed planes.
        numpy in, numpy out; torch in, torch out (differentiable)."""
        return self._apply(y, plane_axis, self.base.n_planes, "y", self._compress)

    def expand(self, y, plane_axis: int = -3):
        """``C^T y``: copy every compressed plane to each of its span-1 planes (the exact adjoint of
        :meth:`compress`)."""
        return self._apply(y, plane_axis, self.n_planes, "y", self._expand)

    def average(self, y, plane_axis: int = -3):
        """The mean of the span-1 planes of each compressed plane: ``C y / n_merged`` (for
        multiplicative factors such as normalisation and attenuation)."""
        out = self.compress(y, plane_axis)
        w = self.n_merged.reshape((-1,) + (1,) * (-plane_axis - 1)).astype(np.float64)
        return out / (torch.from_numpy(w).to(out.dtype).to(out.device) if isinstance(out, torch.Tensor) else w)

    def _compress(self, t: torch.Tensor, axis: int) -> torch.Tensor:
        shape = list(t.shape)
        shape[axis] = self.n_planes
        out = torch.zeros(shape, dtype=t.dtype, device=t.device)
        return out.index_add(axis, self._index.to(t.device), t)

    def _expand(self, t: torch.Tensor, axis: int) -> torch.Tensor:
        return t.index_select(axis, self._index.to(t.device))

    @staticmethod
    def _apply(y, plane_axis: int, n_expected: int, name: str, fn):
        if isinstance(plane_axis, bool) or not isinstance(plane_axis, int) or plane_axis >= 0:
            raise ValueError(f"plane_axis must be a negative integer (-3, or -4 with a TOF axis), got {plane_axis!r}")
        if not isinstance(y, (np.ndarray, torch.Tensor)):
            raise TypeError(f"{name} must be a numpy array or a torch tensor, got {type(y).__name__}")
        if y.ndim < -plane_axis or y.shape[plane_axis] != n_expected:
            raise ValueError(f"{name} must have {n_expected} planes on axis {plane_axis}, got shape {tuple(y.shape)}")
        if isinstance(y, np.ndarray):
            with torch.no_grad():
                return fn(torch.from_numpy(np.ascontiguousarray(y)), y.ndim + plane_axis).numpy()
        return fn(y, y.ndim + plane_axis)

    def __repr__(self) -> str:
        return (f"SpanLayout(span={self.span}, shape={self.shape}, n_segments={self.n_segments}, "
                f"base={self.base!r})")


def compress(layout: SinogramLayout, span: int) -> SpanLayout:
    """The span-``span`` compression of ``layout``: a :class:`SpanLayout`, whose ``compress`` and
    ``expand`` are the linear operator and its adjoint."""
    return SpanLayout(layout, span)


class _MeanLORLayout(SinogramLayout):
    """Internal: a SinogramLayout whose planes are a SpanLayout's mean LORs (for the projector)."""

    def __init__(self, span_layout: SpanLayout):  # noqa: D107 -- shares the base layout's tables
        base = span_layout.base
        self.scanner, self.radial_trim = base.scanner, base.radial_trim
        self.max_ring_difference = base.max_ring_difference
        self.n_views, self.n_radial = base.n_views, base.n_radial
        self.crystal_pairs = base.crystal_pairs
        self.plane_rings = np.zeros((span_layout.n_planes, 2), dtype=np.int64)  # only its length is used
        self._span_layout = span_layout

    def lor_tables(self, views=None) -> LORTables:
        return self._span_layout.lor_tables(views)


_METHODS = ("exact", "mean-lor")


class SpanProjector(Projector):
    """A projector onto a span-compressed sinogram (``shape_out = layout.shape``, plus TOF).

    Parameters
    ----------
    grid : ImageGrid
    layout : SpanLayout
    backend, tof, views, check_finite
        As for :class:`~pettk.projector.Projector` (``views`` selects views of the compressed
        sinogram, the same as of the span-1 one).
    method : {"exact", "mean-lor"}
        ``"exact"``: ``C P`` with ``P`` the span-1 projector (adjoint ``P^T C^T``).
        ``"mean-lor"``: ``n_merged * P_mean`` along each compressed plane's mean LOR.

    Both are linear with an exact adjoint, differentiable in torch, and split into view subsets.
    """

    def __init__(self, grid, layout: SpanLayout, backend: str = "auto", *, tof=None, views=None,
                 check_finite: bool = True, method: str = "exact"):
        if not isinstance(layout, SpanLayout):
            raise TypeError(f"layout must be a SpanLayout, got {type(layout).__name__}")
        if method not in _METHODS:
            raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
        geometry = layout.base if method == "exact" else _MeanLORLayout(layout)
        inner = Projector(grid, geometry, backend, tof=tof, views=views, check_finite=False)
        self.grid, self.geometry, self.backend = grid, layout, inner.backend
        self.check_finite, self.tof, self.views, self.method = bool(check_finite), tof, views, method
        self._inner = inner
        self._tables = inner._tables
        tof_axis = (tof.n_bins,) if tof is not None else ()
        self.shape_in = tuple(grid.shape)
        self.shape_out = tuple(layout.shape_for_views(views)) + tof_axis
        self._full_shape = tuple(layout.shape) + tof_axis
        self._plans = {}
        self._plane_axis = -4 if tof is not None else -3

    def subsets(self, n: int) -> list[SpanProjector]:
        n_units = self.shape_out[self.geometry.view_axis]
        n = as_positive_int("n", n)
        if n > n_units:
            raise ValueError(f"n must be <= the number of views ({n_units}), got {n}")
        if self.views is None:
            parts = [slice(i, None, n) for i in range(n)]
        else:
            parts = [self._view_indices()[i::n] for i in range(n)]
        return [self._like(views=part) for part in parts]

    def without_tof(self) -> SpanProjector:
        return self if self.tof is None else self._like(tof=None)

    def _like(self, **changes) -> SpanProjector:
        kw = dict(backend=self.backend, tof=self.tof, views=self.views, check_finite=self.check_finite,
                  method=self.method)
        kw.update(changes)
        return SpanProjector(self.grid, self.geometry, **kw)

    def _weights(self, like: torch.Tensor) -> torch.Tensor:
        w = torch.as_tensor(self.geometry.n_merged.copy()).to(dtype=like.dtype, device=like.device)
        return w.reshape((-1,) + (1,) * (-self._plane_axis - 1))

    def _run(self, data: torch.Tensor, mode: str) -> torch.Tensor:
        inner, layout, axis = self._inner, self.geometry, self._plane_axis
        if self.method == "exact":
            if mode == "forward":
                out = inner._run(data, "forward")
                return layout._compress(out, out.ndim + axis)
            return inner._run(layout._expand(data, data.ndim + axis), "adjoint")
        if mode == "forward":
            return inner._run(data, "forward").mul_(self._weights(data))
        return inner._run(data * self._weights(data), "adjoint")

    def attenuation_factors(self, mu):
        """Attenuation factors of the compressed bins: the mean of ``exp(-P mu)`` over each plane's
        span-1 LORs (``"exact"``) or ``exp(-P_mean mu)`` along the mean LOR (``"mean-lor"``); shape
        ``without_tof().shape_out``, differentiable in ``mu``."""
        inner = self._inner.without_tof()
        if self.method == "exact":
            return self.geometry.average(attenuation_factors(inner, mu))
        return attenuation_factors(inner, mu)

    def __repr__(self) -> str:
        tof = "" if self.tof is None else f", tof={self.tof!r}"
        return (f"SpanProjector(grid={self.grid!r}, layout={self.geometry!r}, method={self.method!r}, "
                f"backend={self.backend!r}{tof}, shape_out={self.shape_out})")

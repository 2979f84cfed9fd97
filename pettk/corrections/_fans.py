"""Crystal-pair algebra of ring sinograms: which crystals a bin joins, fan sums, pair products.

A bin ``(plane p, view v, radial r)`` of a :class:`~pettk.geometry.SinogramLayout` joins crystal
``a`` of ring ``plane_rings[p, 0]`` (start) to crystal ``b`` of ring ``plane_rings[p, 1]`` (end),
with ``(a, b) = crystal_pairs[v, r]``; a :class:`~pettk.geometry.SinogramLayout2D` is one ring
(plane ``(0, 0)``). Every unordered pair of distinct crystals appears in at most one bin. Bins
that join a crystal to itself (``radial_trim = 0``, direct planes) are not LORs: they get no pair
product and their counts are ignored in fan sums.

Per-crystal arrays have shape ``(n_rings, n_crystals_per_ring)``; the *global* crystal index is
``ring * n_crystals_per_ring + crystal``.

Everything is factorised (rings × transaxial bins), so the cost is O(sinogram) with no
sinogram-sized index arrays.
"""

from __future__ import annotations

import numpy as np
import torch

from ..geometry import SinogramLayout, SinogramLayout2D

__all__ = ["ring_layout_parts", "fan_sums", "partner_sums", "FanOperator", "pair_products", "as_crystal_array",
           "as_sinogram_array"]


def ring_layout_parts(layout):
    """``(plane_rings (n_planes, 2), pairs (n_t, 2), n_rings, n_crystals_per_ring, self_bin (n_t,))``.

    ``self_bin`` marks transaxial bins whose two crystals coincide within a ring.
    """
    if isinstance(layout, SinogramLayout):
        rings, n_rings = np.asarray(layout.plane_rings), layout.scanner.n_rings
    elif isinstance(layout, SinogramLayout2D):
        rings, n_rings = np.zeros((1, 2), dtype=np.int64), 1
    else:
        raise TypeError(f"layout must be a SinogramLayout or SinogramLayout2D (crystal pairs), "
                        f"got {type(layout).__name__}")
    pairs = np.asarray(layout.crystal_pairs).reshape(-1, 2)
    return rings, pairs, n_rings, layout.scanner.n_crystals_per_ring, pairs[:, 0] == pairs[:, 1]


def as_crystal_array(name: str, value, layout) -> np.ndarray:
    """``value`` as a finite, non-negative float64 array of shape ``(n_rings, n_crystals_per_ring)``
    (a flat array of global crystal indices is accepted)."""
    _, _, n_rings, n, _ = ring_layout_parts(layout)
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if not isinstance(value, np.ndarray):
        raise TypeError(f"{name} must be a numpy array or a torch tensor, got {type(value).__name__}")
    arr = np.asarray(value, dtype=np.float64)
    if arr.shape == (n_rings * n,):
        arr = arr.reshape(n_rings, n)
    if arr.shape != (n_rings, n):
        raise ValueError(f"{name} must have shape ({n_rings}, {n}) (rings, crystals per ring) or "
                         f"({n_rings * n},), got {tuple(arr.shape)}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains non-finite values (NaN or inf)")
    if np.any(arr < 0):
        raise ValueError(f"{name} must be >= 0 everywhere; its minimum is {arr.min():.4g}")
    return arr


def _by_ring(sino: np.ndarray, ring_of_plane: np.ndarray, n_rings: int) -> np.ndarray:
    """Sum of the planes of each ring: ``out[r] = sum_{p: ring_of_plane[p] == r} sino[p]``."""
    out = torch.zeros((n_rings,) + sino.shape[1:], dtype=torch.float64)
    out.index_add_(0, torch.from_numpy(np.ascontiguousarray(ring_of_plane, dtype=np.int64)),
                   torch.from_numpy(np.ascontiguousarray(sino, dtype=np.float64)))
    return out.numpy()


def fan_sums(sino: np.ndarray, layout) -> np.ndarray:
    """Fan sums ``F_i = sum of sino over the bins that have crystal i at either end``.

    ``sino`` has shape ``layout.shape`` (float64); returns ``(n_rings, n_crystals_per_ring)``.
    """
    rings, pairs, n_rings, n, self_bin = ring_layout_parts(layout)
    flat = sino.reshape(rings.shape[0], -1).astype(np.float64, copy=True)
    flat[np.ix_(rings[:, 0] == rings[:, 1], self_bin)] = 0.0
    start = _by_ring(flat, rings[:, 0], n_rings)  # (n_rings, n_t): summed over the end ring
    end = _by_ring(flat, rings[:, 1], n_rings)
    ring_base = (np.arange(n_rings) * n)[:, None]
    f = np.bincount((ring_base + pairs[None, :, 0]).ravel(), start.ravel(), n_rings * n)
    f += np.bincount((ring_base + pairs[None, :, 1]).ravel(), end.ravel(), n_rings * n)
    return f.reshape(n_rings, n)


class FanOperator:
    """``f -> G`` with ``G_i = sum over the bins joining crystal i to a crystal j of f_j`` (unweighted
    :func:`partner_sums`), precomputed for one layout: ``G = (Q f) M^T + (Q^T f) M`` minus the
    crystal-to-itself bins, with ``Q`` the ``(n_rings, n_rings)`` plane incidence and ``M`` the
    ``(n, n)`` count of transaxial bins joining crystal ``a`` (start) to ``b`` (end)."""

    def __init__(self, layout):
        rings, pairs, n_rings, n, self_bin = ring_layout_parts(layout)
        self.q = np.zeros((n_rings, n_rings))
        np.add.at(self.q, (rings[:, 0], rings[:, 1]), 1.0)
        self.m = np.zeros((n, n))
        np.add.at(self.m, (pairs[:, 0], pairs[:, 1]), 1.0)
        n_self = np.bincount(pairs[self_bin, 0], minlength=n).astype(np.float64)
        # the crystal-to-itself bins of the direct planes, counted once from each end
        self.self_weight = 2.0 * np.diag(self.q)[:, None] * n_self[None, :]

    def __call__(self, f: np.ndarray) -> np.ndarray:
        return (self.q @ f) @ self.m.T + (self.q.T @ f) @ self.m - self.self_weight * f


def partner_sums(f: np.ndarray, layout, weights: np.ndarray | None = None) -> np.ndarray:
    """``G_i = sum over the bins joining crystal i to a crystal j of w_bin * f_j``.

    ``f``: ``(n_rings, n_crystals_per_ring)``; ``weights``: ``layout.shape`` or ``None`` (all 1, the
    factorised :class:`FanOperator`). ``sum_i f_i G_i = 2 sum_bins w f_i f_j``.
    """
    if weights is None:
        return FanOperator(layout)(f)
    rings, pairs, n_rings, n, self_bin = ring_layout_parts(layout)
    a, b = pairs[:, 0], pairs[:, 1]
    ring_base = (np.arange(n_rings) * n)[:, None]
    w = weights.reshape(rings.shape[0], -1).astype(np.float64, copy=True)
    w[np.ix_(rings[:, 0] == rings[:, 1], self_bin)] = 0.0
    start = _by_ring(w * f[rings[:, 1]][:, b], rings[:, 0], n_rings)  # partner at the end
    end = _by_ring(w * f[rings[:, 0]][:, a], rings[:, 1], n_rings)
    g = np.bincount((ring_base + a[None]).ravel(), start.ravel(), n_rings * n)
    g += np.bincount((ring_base + b[None]).ravel(), end.ravel(), n_rings * n)
    return g.reshape(n_rings, n)


def pair_products(f: np.ndarray, layout, out_dtype=np.float64) -> np.ndarray:
    """``f_i * f_j`` for the two crystals of every bin, shape ``layout.shape`` (0 on self bins)."""
    rings, pairs, _, _, self_bin = ring_layout_parts(layout)
    out = np.empty((rings.shape[0], pairs.shape[0]), dtype=out_dtype)
    block = max(1, (1 << 22) // max(1, pairs.shape[0]))
    for p0 in range(0, rings.shape[0], block):
        r = rings[p0:p0 + block]
        values = f[r[:, 0]][:, pairs[:, 0]] * f[r[:, 1]][:, pairs[:, 1]]
        values[np.ix_(r[:, 0] == r[:, 1], self_bin)] = 0.0
        out[p0:p0 + block] = values
    return out.reshape(layout.shape)


def as_sinogram_array(name: str, value, layout) -> np.ndarray:
    """``value`` (numpy or torch) as a float64 array of ``layout.shape``: finite and >= 0, else a clear error."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if not isinstance(value, np.ndarray):
        raise TypeError(f"{name} must be a numpy array or a torch tensor, got {type(value).__name__}")
    if tuple(value.shape) != tuple(layout.shape):
        raise ValueError(f"{name} must have the layout's shape {tuple(layout.shape)}, got {tuple(value.shape)}")
    arr = np.asarray(value, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains non-finite values (NaN or inf)")
    if np.any(arr < 0):
        raise ValueError(f"{name} must be >= 0 everywhere; its minimum is {arr.min():.4g}")
    return arr

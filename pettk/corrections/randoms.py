"""Randoms estimates from the data: from singles rates and from delayed coincidences.

* :func:`randoms_from_singles` -- ``R_ij = 2 tau S_i S_j T`` per sinogram bin (the classic
  singles-rate formula; ``tau`` the coincidence resolving time, so the full timing window is
  ``2 tau``; ``S`` singles rates in 1/s; ``T`` the frame duration in s).
* :func:`fan_sum_factors` -- per-crystal singles-like factors ``s`` with ``R_ij = s_i s_j`` fitted
  to a delayed-coincidence sinogram by its fan sums (variance reduction).
* :func:`randoms_from_delayeds` -- the smoothed randoms sinogram ``s_i s_j`` scaled to the total
  delayeds.
* :func:`event_randoms` -- ``s_i s_j`` (or ``2 tau S_i S_j T``) for a list of crystal pairs, the
  per-event ``additive`` term of list-mode reconstruction.
* :func:`histogram_crystal_pairs` -- list-mode events (crystal pairs) into a sinogram, e.g. the
  delayeds of a PETSIRD file (``PETSIRDFile.events(kind="delayed")`` or
  ``histogram_petsird(..., kind="delayed")``).

Fan-sum variance reduction
--------------------------
The delayeds ``D_ij`` of a crystal pair are Poisson with mean ``R_ij = 2 tau S_i S_j T``: the
randoms sinogram has only ``n_crystals`` degrees of freedom. Casey and Hoffman estimated them from
the *fan sums* ``F_i = sum_j D_ij``, whose relative noise is that of thousands of bins. Here the
factors solve the fan-sum equations ``F_i = s_i sum_{j in fan(i)} s_j`` exactly, which are the
Poisson maximum-likelihood equations of the model ``D_ij ~ Poisson(s_i s_j)`` (the iterative
fan-sum solution of Defrise et al. 1991 and the ML randoms estimate of Panin et al. 2007), by
the multiplicative update ``s_i <- sqrt(s_i F_i / sum_j s_j)``; at the solution
``sum_ij s_i s_j = sum_ij D_ij``.

References
----------
M. E. Casey and E. J. Hoffman, "Quantitation in positron emission computed tomography: 7. A
technique to reduce noise in accidental coincidence measurements and coincidence efficiency
calibration", J. Comput. Assist. Tomogr. 10(5), 845-850 (1986).
M. Defrise, D. W. Townsend, D. Bailey, A. Geissbuhler, C. Michel and T. Jones, "A normalization
technique for 3D PET data", Phys. Med. Biol. 36(7), 939-952 (1991).
V. Y. Panin, M. K. Chen and C. Michel, "Simultaneous update iterative algorithm for variance
reduction on random coincidences in PET", IEEE NSS/MIC Conf. Rec., 2807-2811 (2007).
"""

from __future__ import annotations

import numpy as np
import torch

from .._validation import as_positive_float, as_positive_int
from ._fans import FanOperator, as_crystal_array, as_sinogram_array, fan_sums, pair_products, ring_layout_parts
from .span import SpanLayout

__all__ = ["randoms_from_singles", "fan_sum_factors", "randoms_from_delayeds", "event_randoms",
           "histogram_crystal_pairs"]


def _base(layout):
    """The span-1 layout of ``layout`` (itself unless it is a :class:`SpanLayout`)."""
    return layout.base if isinstance(layout, SpanLayout) else layout


def _like(result: np.ndarray, template):
    """``result`` as the caller's array type (a tensor of the template's float dtype and device)."""
    if isinstance(template, torch.Tensor):
        dtype = template.dtype if template.is_floating_point() else torch.float64
        return torch.from_numpy(result).to(dtype=dtype, device=template.device)
    return result


def _window_and_duration(tau_s, duration_s) -> float:
    tau = as_positive_float("tau_s", tau_s)
    duration = as_positive_float("duration_s", duration_s)
    return 2.0 * tau * duration


def randoms_from_singles(singles, tau_s: float, duration_s: float, layout):
    """Expected randoms per sinogram bin from the singles rates: ``2 tau S_i S_j T``.

    Parameters
    ----------
    singles : array or tensor, shape ``(n_rings, n_crystals_per_ring)`` (or flat, global index)
        Singles rate of every crystal, 1/s (>= 0).
    tau_s : float
        Coincidence resolving time tau, s (> 0); the full coincidence window is ``2 tau``.
    duration_s : float
        Frame duration T, s (> 0).
    layout : SinogramLayout, SinogramLayout2D or SpanLayout
        A :class:`~pettk.corrections.span.SpanLayout` gets the sum over the crystal pairs of each
        compressed bin.

    Returns
    -------
    Expected randoms counts, shape ``layout.shape``; float64 numpy, or a tensor like ``singles``.
    Bins joining a crystal to itself get 0.
    """
    scale = _window_and_duration(tau_s, duration_s)
    base = _base(layout)
    s = as_crystal_array("singles", singles, base)
    out = pair_products(s, base) * scale
    if isinstance(layout, SpanLayout):
        out = layout.compress(out)
    return _like(out, singles)


def fan_sum_factors(delayeds, layout, *, n_iter: int = 200, tol: float = 1e-10) -> np.ndarray:
    """Per-crystal factors ``s`` with ``R_ij = s_i s_j`` fitted to delayed coincidences by fan sums.

    Parameters
    ----------
    delayeds : array or tensor, shape ``layout.shape``
        Delayed-coincidence counts of a span-1 sinogram (>= 0, not all 0).
    layout : SinogramLayout or SinogramLayout2D
        Span 1: fan sums need the crystal pair of every bin (compress the result instead).
    n_iter : int
        Maximum number of multiplicative updates.
    tol : float
        Stop when the largest relative change of ``s`` is below ``tol``.

    Returns
    -------
    ndarray of float64, shape ``(n_rings, n_crystals_per_ring)``
        In sqrt(counts): ``s_i s_j`` is the expected delayeds (= randoms) count of the LOR ``ij``
        over the frame. ``s_i / sqrt(2 tau T)`` estimates the singles rate of crystal ``i``.
        Crystals without delayeds get 0.
    """
    if isinstance(layout, SpanLayout):
        raise ValueError("fan sums need span-1 delayeds (the crystal pair of every bin); estimate on "
                         "layout.base and compress the randoms with layout.compress")
    d = as_sinogram_array("delayeds", delayeds, layout)
    n_iter = as_positive_int("n_iter", n_iter)
    tol = as_positive_float("tol", tol)
    f = fan_sums(d, layout)
    total = float(f.sum()) / 2.0
    if total <= 0:
        raise ValueError("delayeds must hold at least one count on a LOR (all bins are 0)")
    partners = FanOperator(layout)
    s = np.sqrt(f / np.maximum(partners(np.ones_like(f)), 1.0))  # exact for uniform singles
    for _ in range(n_iter):
        g = partners(s)
        new = np.sqrt(s * np.divide(f, g, out=np.zeros_like(f), where=g > 0))
        change = np.abs(new - s).max() / max(float(new.max()), 1e-300)
        s = new
        if change < tol:
            break
    return s


def randoms_from_delayeds(delayeds, layout, *, n_iter: int = 200, tol: float = 1e-10):
    """Randoms estimated from delayed coincidences with fan-sum variance reduction.

    Fits ``R_ij = s_i s_j`` to the delayeds by :func:`fan_sum_factors` and rescales it so that its
    total equals the total delayeds (the fit already does, up to ``tol``).

    Parameters
    ----------
    delayeds : array or tensor, shape ``layout.shape``
        Span-1 delayed counts (of a :class:`SpanLayout`'s ``base`` when ``layout`` is one).
    layout : SinogramLayout, SinogramLayout2D or SpanLayout
        For a :class:`SpanLayout` the estimate is made in span 1 and compressed (summed).

    Returns
    -------
    Expected randoms counts, shape ``layout.shape`` (float64 numpy, or a tensor like ``delayeds``).
    """
    base = _base(layout)
    s = fan_sum_factors(delayeds, base, n_iter=n_iter, tol=tol)
    r = pair_products(s, base)
    d_total = float(as_sinogram_array("delayeds", delayeds, base).sum())
    r *= d_total / float(r.sum())
    if isinstance(layout, SpanLayout):
        r = layout.compress(r)
    return _like(r, delayeds)


def event_randoms(factors, crystals, *, tau_s: float | None = None, duration_s: float | None = None):
    """Expected randoms on the LOR of each list-mode event: ``f_i f_j`` (times ``2 tau T``).

    Parameters
    ----------
    factors : array, shape ``(n_crystals,)`` or ``(n_rings, n_crystals_per_ring)``
        Fan-sum factors from :func:`fan_sum_factors` (then leave ``tau_s`` and ``duration_s`` out),
        or singles rates in 1/s (then give both: the result is ``2 tau S_i S_j T``).
    crystals : int array, shape ``(n_events, 2)``
        Global crystal indices ``ring * n_crystals_per_ring + crystal`` of the two ends.

    Returns
    -------
    float64 array (or tensor like ``factors``) of shape ``(n_events,)``: counts per LOR over the
    frame, the list-mode ``additive`` of each event's LOR.
    """
    if (tau_s is None) != (duration_s is None):
        raise ValueError("give both tau_s and duration_s (singles rates) or neither (fan-sum factors)")
    scale = 1.0 if tau_s is None else _window_and_duration(tau_s, duration_s)
    f = factors.detach().cpu().numpy() if isinstance(factors, torch.Tensor) else factors
    if not isinstance(f, np.ndarray):
        raise TypeError(f"factors must be a numpy array or a torch tensor, got {type(factors).__name__}")
    f = np.asarray(f, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(f)) or np.any(f < 0):
        raise ValueError("factors must be finite and >= 0")
    c = _crystal_index_pairs(crystals, f.size)
    return _like(f[c[:, 0]] * f[c[:, 1]] * scale, factors)


def histogram_crystal_pairs(crystals, layout) -> np.ndarray:
    """Counts of list-mode events (crystal pairs) in the bins of a span-1 ring sinogram.

    ``crystals``: ``(n_events, 2)`` global crystal indices (either order; PETSIRD detector indices
    map to them by ``PETSIRDScanner.regular_polygon()``). Events on LORs the layout does not hold
    (trimmed radially, ring difference too large, a crystal with itself) are dropped. Returns
    float64 counts of shape ``layout.shape``.
    """
    rings, pairs, n_rings, n, self_bin = ring_layout_parts(layout)
    c = _crystal_index_pairs(crystals, n_rings * n)
    plane = np.full((n_rings, n_rings), -1, dtype=np.int64)
    plane[rings[:, 0], rings[:, 1]] = np.arange(rings.shape[0])
    tbin = np.full((n, n), -1, dtype=np.int64)
    tbin[pairs[:, 0], pairs[:, 1]] = np.arange(pairs.shape[0])
    ring0, xtal0, ring1, xtal1 = c[:, 0] // n, c[:, 0] % n, c[:, 1] // n, c[:, 1] % n
    forward = tbin[xtal0, xtal1] >= 0
    # a pair stored the other way round in the sinogram swaps its ends (and rings)
    rs, re = np.where(forward, ring0, ring1), np.where(forward, ring1, ring0)
    t = np.where(forward, tbin[xtal0, xtal1], tbin[xtal1, xtal0])
    p = plane[rs, re]
    good = (t >= 0) & (p >= 0) & (c[:, 0] != c[:, 1])
    counts = np.bincount(p[good] * pairs.shape[0] + t[good], minlength=rings.shape[0] * pairs.shape[0])
    return counts.astype(np.float64).reshape(layout.shape)


def _crystal_index_pairs(crystals, n_crystals: int) -> np.ndarray:
    c = crystals.detach().cpu().numpy() if isinstance(crystals, torch.Tensor) else np.asarray(crystals)
    if not np.issubdtype(c.dtype, np.integer):
        raise TypeError(f"crystals must hold integer crystal indices, got dtype {c.dtype}")
    if c.ndim != 2 or c.shape[1] != 2:
        raise ValueError(f"crystals must have shape (n_events, 2), got {tuple(c.shape)}")
    if c.size and (c.min() < 0 or c.max() >= n_crystals):
        raise ValueError(f"crystals must lie in [0, {n_crystals}), got values from {c.min()} to {c.max()}")
    return c.astype(np.int64)

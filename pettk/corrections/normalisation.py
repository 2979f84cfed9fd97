"""Component-based normalisation: geometric factors × crystal efficiencies, from a calibration scan.

The detection efficiency of the LOR joining crystals ``i`` and ``j`` in sinogram bin
``(plane p, view v, radial r)`` is modelled as ``n = g[p, r] * eps_i * eps_j``: crystal
efficiencies ``eps`` and view-independent geometric factors ``g`` (radial profile and plane
efficiency; the rotational symmetry of the ring makes them the same for every view). This
``n`` is a *multiplicative efficiency*, exactly what :class:`~pettk.physics.ForwardModel` takes as
``normalisation`` (``ybar = n * a * P x + additive``); the correction factor applied to data
would be ``1 / n``.

* :func:`estimate_normalisation` -- fit ``g`` and ``eps`` to a uniform calibration scan (cylinder
  or plane source) given its expected counts without normalisation, by alternating
  (a) the iterated fan-sum solution for ``eps`` (Defrise et al. 1991; Casey & Hoffman 1986):
  ``F_i = eps_i sum_j eps_j g m_ij`` with ``F_i`` the fan sum of the counts, solved by the
  multiplicative update ``eps_i <- sqrt(eps_i F_i / sum_j eps_j g m_ij)`` (the Poisson ML equations
  of the model), and (b) ``g[p, r] = sum_v y / sum_v eps_i eps_j m``.
* :func:`simulate_crystal_efficiencies` -- random crystal efficiencies for tests (lognormal).
* :func:`efficiency_sinogram` -- ``g * eps_i * eps_j`` on a layout.

The per-ring scale of ``eps`` and the plane factors of ``g`` are interchangeable
(``eps -> alpha_ring eps`` is absorbed by ``g[p] -> g[p] / (alpha_start alpha_end)``); the fit
fixes it by giving ``eps`` mean 1 in every ring. Not modelled: crystal interference (position in
the block) and dead time; a source that misses some LORs of a plane leaves their ``g`` to the
nearest radial bin of the same plane that it does cover.

References
----------
M. Defrise, D. W. Townsend, D. Bailey, A. Geissbuhler, C. Michel and T. Jones, "A normalization
technique for 3D PET data", Phys. Med. Biol. 36(7), 939-952 (1991).
M. E. Casey and E. J. Hoffman, J. Comput. Assist. Tomogr. 10(5), 845-850 (1986).
R. D. Badawi and P. K. Marsden, "Developments in component-based normalization for 3D PET",
Phys. Med. Biol. 44(2), 571-594 (1999).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .._validation import as_nonnegative_float, as_positive_int
from ..geometry import RegularPolygonScanner, SinogramLayout, SinogramLayout2D
from ._fans import as_crystal_array, as_sinogram_array, fan_sums, pair_products, partner_sums, ring_layout_parts

__all__ = ["NormalisationEstimate", "estimate_normalisation", "simulate_crystal_efficiencies",
           "efficiency_sinogram"]


def simulate_crystal_efficiencies(scanner: RegularPolygonScanner, sd: float = 0.1, seed=None) -> np.ndarray:
    """Random crystal efficiencies, lognormal with mean 1 and standard deviation ``sd``.

    Returns float64 ``(n_rings, n_crystals_per_ring)``. ``seed``: an int, ``None`` or a
    ``numpy.random.Generator``.
    """
    if not isinstance(scanner, RegularPolygonScanner):
        raise TypeError(f"scanner must be a RegularPolygonScanner, got {type(scanner).__name__}")
    sd = as_nonnegative_float("sd", sd)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    sigma2 = math.log1p(sd * sd)
    return rng.lognormal(-0.5 * sigma2, math.sqrt(sigma2), (scanner.n_rings, scanner.n_crystals_per_ring))


def efficiency_sinogram(efficiencies, layout, geometric=None) -> np.ndarray:
    """The normalisation sinogram ``g[p, r] * eps_i * eps_j`` (float64, ``layout.shape``).

    ``efficiencies``: ``(n_rings, n_crystals_per_ring)``; ``geometric``: ``(n_planes, n_radial)``
    or ``None`` (1). Bins joining a crystal to itself get 0.
    """
    eps = as_crystal_array("efficiencies", efficiencies, layout)
    out = pair_products(eps, layout)
    if geometric is not None:
        out *= _geometric_array(geometric, layout)[:, None, :]
    return out


def _geometric_array(geometric, layout) -> np.ndarray:
    g = geometric.detach().cpu().numpy() if isinstance(geometric, torch.Tensor) else np.asarray(geometric)
    shape = (layout.shape[0], layout.shape[-1]) if isinstance(layout, SinogramLayout) else (1, layout.shape[-1])
    g = np.asarray(g, dtype=np.float64).reshape(shape) if g.size == math.prod(shape) else g
    if g.shape != shape:
        raise ValueError(f"geometric must have shape {shape} (planes, radial bins), got {tuple(g.shape)}")
    if not np.all(np.isfinite(g)) or np.any(g < 0):
        raise ValueError("geometric must be finite and >= 0")
    return g


@dataclass(frozen=True)
class NormalisationEstimate:
    """The fitted components.

    Attributes
    ----------
    efficiencies : ndarray, ``(n_rings, n_crystals_per_ring)``
        Crystal efficiencies, mean 1 in every ring.
    geometric : ndarray, ``(n_planes, n_radial)``
        Geometric (radial × plane) factors, in the units of ``counts / expected``.
    layout : SinogramLayout or SinogramLayout2D
    """

    efficiencies: np.ndarray
    geometric: np.ndarray
    layout: object

    @property
    def normalisation(self) -> np.ndarray:
        """``g * eps_i * eps_j`` of every bin (``layout.shape``): the ``normalisation`` (multiplicative
        efficiency) of :class:`~pettk.physics.ForwardModel`."""
        return efficiency_sinogram(self.efficiencies, self.layout, self.geometric)


def estimate_normalisation(counts, expected, layout, *, n_iter: int = 10,
                           n_fan_iter: int = 20) -> NormalisationEstimate:
    """Fit crystal efficiencies and geometric factors to a uniform calibration scan.

    Parameters
    ----------
    counts : array or tensor, shape ``layout.shape``
        Measured (or simulated) counts of the calibration scan, span 1, non-TOF, randoms and
        scatter subtracted or negligible (>= 0).
    expected : array or tensor, shape ``layout.shape``
        Its expected counts *without* normalisation: the known source projected, attenuated
        (e.g. ``ForwardModel(projector, mu=mu).forward(source)``). Only its shape across bins
        matters; its scale ends up in ``geometric``.
    layout : SinogramLayout or SinogramLayout2D
    n_iter : int
        Alternations of the efficiency and geometric updates.
    n_fan_iter : int
        Fan-sum updates of the efficiencies per alternation.

    Returns
    -------
    NormalisationEstimate; ``.normalisation`` is ``counts / expected`` in the model's terms.
    """
    y = _sinogram("counts", counts, layout)
    rings = ring_layout_parts(layout)[0]
    m = _sinogram("expected", expected, layout)
    n_iter = as_positive_int("n_iter", n_iter)
    n_fan_iter = as_positive_int("n_fan_iter", n_fan_iter)
    if not np.any(y * m > 0):
        raise ValueError("counts and expected share no bin with counts > 0: is the source in the field of view?")
    n_planes, n_radial = rings.shape[0], layout.shape[-1]
    f = fan_sums(y, layout)
    eps = np.ones_like(f)
    g = np.ones((n_planes, n_radial))
    m3 = m.reshape(n_planes, -1, n_radial)
    y_sum = y.reshape(n_planes, -1, n_radial).sum(axis=1)
    for _ in range(n_iter):
        weights = (g[:, None, :] * m3).reshape(layout.shape)
        for _ in range(n_fan_iter):
            denominator = partner_sums(eps, layout, weights)
            eps = np.sqrt(eps * np.divide(f, denominator, out=np.zeros_like(f), where=denominator > 0))
        eps = _unit_mean_per_ring(eps)
        model_sum = (pair_products(eps, layout).reshape(n_planes, -1, n_radial) * m3).sum(axis=1)
        g = _fill_radially(np.divide(y_sum, model_sum, out=np.zeros_like(y_sum), where=model_sum > 0),
                           model_sum > 0)
    return NormalisationEstimate(eps, g, layout)


def _unit_mean_per_ring(eps: np.ndarray) -> np.ndarray:
    alive = eps > 0
    mean = np.where(alive.any(axis=1), (eps * alive).sum(axis=1) / np.maximum(alive.sum(axis=1), 1), 1.0)
    return eps / mean[:, None]


def _fill_radially(g: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Copy each plane's value from its nearest valid radial bin where the source gave no data."""
    out = g.copy()
    r = np.arange(g.shape[1])
    for p in np.flatnonzero(~valid.all(axis=1)):
        ok = np.flatnonzero(valid[p])
        if ok.size == 0:
            raise ValueError(f"the calibration source gives no expected counts in plane {p}: it must cover "
                             "every plane (a cylinder as long as the scanner's axial field of view)")
        nearest = ok[np.abs(r[:, None] - ok[None, :]).argmin(axis=1)]
        out[p] = g[p, nearest]
    return out


def _sinogram(name: str, value, layout) -> np.ndarray:
    if not isinstance(layout, (SinogramLayout, SinogramLayout2D)):
        raise TypeError(f"layout must be a SinogramLayout or SinogramLayout2D (span 1), got {type(layout).__name__}")
    return as_sinogram_array(name, value, layout)

"""Simple additive background models: randoms and scatter sinograms.

These are *models for simulation*, not estimators: randoms from singles-like rates
(``R_ab = 2 tau s_a s_b``, normalised to a requested total) and scatter as a heavily smoothed copy
of the unscattered (true) sinogram, scaled to a requested scatter fraction. Neither is a Monte
Carlo simulation; they give simulated data a realistic, smooth additive term ``randoms +
scatter`` for :class:`~pettk.physics.ForwardModel`.
"""

from __future__ import annotations

import numpy as np
import torch

from ._filters import gaussian_filter
from ._validation import as_positive_float
from .geometry import LORList, ParallelBeam2D, SinogramLayout, SinogramLayout2D, TOFParams

__all__ = ["randoms_sinogram", "scatter_sinogram"]


def randoms_sinogram(geometry, total_counts: float, singles=None, tof: TOFParams | None = None,
                     dtype=torch.float32) -> torch.Tensor:
    """Expected randoms per LOR, summing to ``total_counts``.

    Parameters
    ----------
    geometry : SinogramLayout, SinogramLayout2D, ParallelBeam2D or LORList
    total_counts : float
        Expected randoms over the whole sinogram (>= 0).
    singles : array, shape ``(n_rings, n_crystals_per_ring)``, optional
        Relative singles rate of every crystal (ring sinograms only; one ring for
        SinogramLayout2D): randoms on the LOR joining crystals ``a`` and ``b`` are proportional
        to ``s_a * s_b``. ``None``: uniform singles, i.e. a uniform randoms sinogram.
    tof : TOFParams, optional
        Spread each LOR's randoms evenly over the TOF bins (randoms are uniform in time).

    Returns
    -------
    torch.Tensor of ``geometry.shape`` (plus the TOF axis).
    """
    if not isinstance(geometry, (SinogramLayout, SinogramLayout2D, ParallelBeam2D, LORList)):
        raise TypeError("geometry must be a SinogramLayout, SinogramLayout2D, ParallelBeam2D or LORList, "
                        f"got {type(geometry).__name__}")
    total = float(total_counts)
    if not np.isfinite(total) or total < 0:
        raise ValueError(f"total_counts must be a finite number >= 0, got {total_counts!r}")
    shape = tuple(geometry.shape)
    if singles is None:
        rate = np.ones(shape)
    else:
        if not isinstance(geometry, (SinogramLayout, SinogramLayout2D)):
            raise ValueError("singles rates need a SinogramLayout (crystal pairs)")
        s = np.asarray(singles, dtype=np.float64)
        scanner = geometry.scanner
        n_rings = 1 if isinstance(geometry, SinogramLayout2D) else scanner.n_rings
        expected = (n_rings, scanner.n_crystals_per_ring)
        if s.shape != expected:
            raise ValueError(f"singles must have shape {expected} (rings, crystals per ring), got {s.shape}")
        if not np.all(np.isfinite(s)) or np.any(s < 0) or not np.any(s > 0):
            raise ValueError("singles must be finite, >= 0 and not all zero")
        pairs = geometry.crystal_pairs  # (views, radial, 2)
        if isinstance(geometry, SinogramLayout2D):
            rate = s[0, pairs[..., 0]] * s[0, pairs[..., 1]]
        else:
            rings = geometry.plane_rings  # (planes, 2)
            rate = (s[rings[:, 0][:, None, None], pairs[None, :, :, 0]]
                    * s[rings[:, 1][:, None, None], pairs[None, :, :, 1]])
    rate = rate / rate.sum() * total
    out = torch.as_tensor(rate, dtype=dtype)
    if tof is not None:
        if not isinstance(tof, TOFParams):
            raise TypeError(f"tof must be a TOFParams or None, got {type(tof).__name__}")
        out = (out / tof.n_bins).unsqueeze(-1).expand(*shape, tof.n_bins).contiguous()
    return out


def scatter_sinogram(trues, scatter_fraction: float, smoothing: float = 0.25, tof_axis: bool = False):
    """A smooth scatter sinogram with ``sum(S) / (sum(T) + sum(S)) = scatter_fraction``.

    Parameters
    ----------
    trues : array or tensor, shape ``(..., n_views, n_radial)`` (TOF: ``(..., n_views, n_radial, n_tof)``)
        The expected unscattered coincidences (attenuated, normalised ``A x``), >= 0.
    scatter_fraction : float
        In [0, 1).
    smoothing : float
        Gaussian sigma as a fraction of the number of radial bins; scatter is a low-frequency
        distribution, so the default blurs over about a quarter of the radial range. Views are
        not blurred (they wrap around, and the trues already vary slowly across them).
    tof_axis : bool
        Whether the last axis holds TOF bins (smoothed over the same fraction of its length).

    Returns the scatter sinogram, same shape and array type as ``trues``.
    """
    is_numpy = isinstance(trues, np.ndarray)
    t = torch.as_tensor(trues)
    if not t.is_floating_point():
        raise TypeError(f"trues must hold floating-point values, got {t.dtype}")
    sf = float(scatter_fraction)
    if not 0.0 <= sf < 1.0:
        raise ValueError(f"scatter_fraction must be in [0, 1), got {scatter_fraction!r}")
    as_positive_float("smoothing", smoothing)
    if not bool(torch.isfinite(t).all()) or bool((t < 0).any()):
        raise ValueError("trues must be finite and >= 0")
    core = 3 if tof_axis else 2
    if t.ndim < core:
        raise ValueError(f"trues must have at least {core} dimensions (views, radial{', tof' if tof_axis else ''}), "
                         f"got shape {tuple(t.shape)}")
    axes = list(range(t.ndim - core + 1, t.ndim))  # radial (and TOF)
    sigmas = [smoothing * t.shape[a] for a in axes]
    smooth = gaussian_filter(t, sigmas, axes)
    total_trues = float(t.sum())
    total_smooth = float(smooth.sum())
    if sf == 0.0 or total_trues == 0.0 or total_smooth == 0.0:
        out = torch.zeros_like(t)
    else:
        out = smooth * (sf / (1.0 - sf) * total_trues / total_smooth)
    return out.numpy() if is_numpy else out

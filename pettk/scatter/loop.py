"""Scatter in the forward model: the additive scatter term and the scatter ↔ reconstruction loop.

* :func:`scatter_additive` -- SSS of an activity estimate, times the normalisation and a scale,
  in the shape :class:`~pettk.physics.ForwardModel` takes as its additive term (add the randoms).
* :func:`scatter_loop` -- the usual estimation from data (Watson 2000; STIR's
  ``ScatterEstimation``): reconstruct with OSEM using the current scatter (none at first) as
  additive term, simulate single scatter from that activity, fit its scale to the tails, repeat
  (2-3 rounds).

With a TOF projector both use :func:`~pettk.scatter.sss_tof.single_scatter_tof` (the scatter gets
the TOF axis) and the loop fits its one scale to the tails of the TOF-summed data (the tail mask is
a non-TOF one).

Units: the SSS sinogram is in the units of the projector's line integrals of the activity, like
``P(x)``; the model's unscattered counts are ``normalisation * attenuation * P(x)``, so the scatter
counts are ``scale * normalisation * sss(x)``. With the activity reconstructed from the same
model, the fitted scale is about 1 when single scatter explains the tails; it absorbs multiple
scatter and scatter from outside the field of view.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from .._validation import as_nonnegative_int, as_positive_int
from ..physics import ForwardModel, attenuation_factors
from ..projector import Projector
from .sss import single_scatter
from .sss_tof import single_scatter_tof
from .tail_fit import fit_tail_scale, tail_mask

__all__ = ["scatter_additive", "scatter_loop", "ScatterLoopResult"]


def _projector_of(model) -> Projector:
    if isinstance(model, ForwardModel):
        projector = model.projector
    elif isinstance(model, Projector):
        projector = model
    else:
        raise TypeError(f"model must be a ForwardModel or a Projector, got {type(model).__name__}")
    if projector.views is not None:
        raise ValueError("scatter is estimated on all views; pass the full model, not a subset")
    return projector


def _sss(projector: Projector, activity, mu, options: dict):
    """Single scatter on the projector's sinogram: TOF (its bins) or not."""
    if projector.tof is None:
        return single_scatter(projector, activity, mu, **options)
    return single_scatter_tof(projector, activity, mu, **options)


def scatter_additive(model, activity, mu, *, scale: float = 1.0, normalisation=None, **sss_options):
    """Scatter counts ``scale * normalisation * single_scatter(activity, mu)``, shape ``model.shape_out``.

    Parameters
    ----------
    model : ForwardModel or Projector (all views; TOF or not)
    activity, mu : the activity estimate and the 511 keV mu-map (1/mm) on the model's grid.
    scale : float
        From :func:`~pettk.scatter.tail_fit.fit_tail_scale` (or :func:`scatter_loop`).
    normalisation : array or tensor of ``model.shape_out``, optional
        The detection efficiencies that multiply the model's trues (``None``: 1).
    **sss_options
        Passed to :func:`~pettk.scatter.sss.single_scatter` (window, scatter_step_mm, ...), or to
        :func:`~pettk.scatter.sss_tof.single_scatter_tof` with a TOF model.

    Returns the same array type as ``activity``; add randoms and give it to
    ``ForwardModel(..., additive=...)`` or ``model.with_background(additive)``.
    """
    projector = _projector_of(model)
    scale = float(scale)
    if not np.isfinite(scale) or scale < 0:
        raise ValueError(f"scale must be a finite number >= 0, got {scale!r}")
    s = _sss(projector, activity, mu, sss_options) * scale
    if normalisation is not None:
        n = normalisation
        if isinstance(s, torch.Tensor) and isinstance(n, np.ndarray):
            n = torch.from_numpy(n).to(s.device, s.dtype)
        elif isinstance(s, np.ndarray) and isinstance(n, torch.Tensor):
            n = n.detach().cpu().numpy()
        if tuple(n.shape) != tuple(s.shape):
            raise ValueError(f"normalisation must have shape {tuple(s.shape)}, got {tuple(n.shape)}")
        s = s * n
    return s


@dataclass
class ScatterLoopResult:
    """What :func:`scatter_loop` found.

    Attributes
    ----------
    scatter : torch.Tensor -- the scaled scatter counts of the last round (model's shape)
    activity : torch.Tensor -- the reconstruction the last scatter was simulated from
    scales : list of float -- the fitted tail scale per round
    mask : torch.Tensor -- the tail mask used
    """

    scatter: torch.Tensor
    activity: torch.Tensor
    scales: list = field(default_factory=list)
    mask: torch.Tensor | None = None


def scatter_loop(projector: Projector, prompts, mu, *, randoms=None, normalisation=None, psf=None,
                 n_rounds: int = 3, n_iter: int = 2, n_subsets: int = 4, tail_threshold: float = 0.95,
                 tail_margin: int = 2, method: str = "poisson", sss_options: dict | None = None,
                 progress: bool = False) -> ScatterLoopResult:
    """Estimate scatter from data by alternating OSEM and tail-fitted SSS.

    Parameters
    ----------
    projector : Projector on a SinogramLayout or SinogramLayout2D; with TOF, ``prompts``,
        ``randoms`` and ``normalisation`` have its TOF shape and the scale is fitted to the
        TOF-summed tails
    prompts : array or tensor, ``projector.shape_out`` (counts)
    mu : array or tensor, the 511 keV mu-map (1/mm) on the projector's grid
    randoms : array or tensor, optional: expected randoms (>= 0)
    normalisation : array or tensor, optional: detection efficiencies (>= 0)
    psf : as :class:`~pettk.physics.ForwardModel`'s ``psf``
    n_rounds : int
        Rounds of (reconstruct, simulate, fit); 2-3 are usual.
    n_iter, n_subsets : int
        OSEM epochs and subsets per round (each round starts from the last round's image).
    tail_threshold, tail_margin : see :func:`~pettk.scatter.tail_fit.tail_mask`
    method : "poisson" or "lsq", see :func:`~pettk.scatter.tail_fit.fit_tail_scale`
    sss_options : dict, optional -- passed to :func:`~pettk.scatter.sss.single_scatter` (or
        :func:`~pettk.scatter.sss_tof.single_scatter_tof`)
    progress : bool -- a tqdm bar over the rounds
    """
    projector = _projector_of(projector)
    n_rounds = as_positive_int("n_rounds", n_rounds)
    n_iter = as_positive_int("n_iter", n_iter)
    n_subsets = as_positive_int("n_subsets", n_subsets)
    as_nonnegative_int("tail_margin", tail_margin)
    y = prompts if isinstance(prompts, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(prompts))
    if not y.is_floating_point():
        y = y.double()
    if tuple(y.shape) != tuple(projector.shape_out):
        raise ValueError(f"prompts must have shape {tuple(projector.shape_out)}, got {tuple(y.shape)}")
    if not bool(torch.isfinite(y).all()) or bool((y < 0).any()):
        raise ValueError("prompts must be finite and >= 0")
    mu_t = mu if isinstance(mu, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(mu))
    mu_t = mu_t.to(y.dtype)

    def as_sino(name, value):
        if value is None:
            return None
        t = value if isinstance(value, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(value))
        if tuple(t.shape) != tuple(y.shape):
            raise ValueError(f"{name} must have shape {tuple(y.shape)}, got {tuple(t.shape)}")
        return t.to(y.dtype)

    r = as_sino("randoms", randoms)
    norm = as_sino("normalisation", normalisation)
    options = dict(sss_options or {})
    from ..recon import osem

    att = attenuation_factors(projector, mu_t)
    mask = tail_mask(att, tail_threshold, tail_margin)
    base = ForwardModel(projector, psf=psf, normalisation=norm, attenuation=att)
    zeros = torch.zeros_like(y)
    scatter = zeros.clone()
    x = None
    scales = []
    for _ in tqdm(range(n_rounds), desc="scatter rounds", disable=not progress, leave=False):
        additive = scatter if r is None else scatter + r
        model = base.with_background(additive)
        x = osem(model, y, n_iter, n_subsets, x0=x)
        unscaled = _sss(projector, x, mu_t, options)
        if norm is not None:
            unscaled = unscaled * norm
        if projector.tof is None:
            scale = fit_tail_scale(y, unscaled, mask, zeros if r is None else r, method=method)
        else:
            scale = fit_tail_scale(y.sum(-1), unscaled.sum(-1), mask, zeros.sum(-1) if r is None else r.sum(-1),
                                   method=method)
        scales.append(scale)
        scatter = unscaled * scale
    return ScatterLoopResult(scatter=scatter, activity=x, scales=scales, mask=mask)

"""Scan simulation: expected counts, Poisson prompts, randoms, scatter, and dose reduction.

``simulate_scan`` follows ``METHODS.md`` §1.1: full-dose expected counts
``ybar = m * P(psf(x)) + randoms + scatter`` scaled to a requested total, prompts
``y_fd ~ Poisson(ybar)``; low-dose data come from **binomial thinning** ``y_ld ~ Binomial(y_fd,
1/DRF)`` (:func:`thin`), the sinogram equivalent of list-mode subsampling, so low- and full-dose
realisations are nested and ``y_ld`` is marginally ``Poisson(ybar / DRF)``.

Fractions (of expected counts): ``randoms_fraction = R / (T + S + R)`` (of all prompts) and
``scatter_fraction = S / (T + S)`` (the usual scatter fraction, of the true coincidences incl.
scatter).

Memory: every sinogram-domain step (scatter and randoms models, Poisson draw, thinning) works in
the result plus blocks of bounded size, so a simulation needs a handful of sinogram copies (those
:class:`Scan` keeps: prompts, trues, scatter, randoms, and the model's ``mult`` and ``additive``;
``expected`` is computed on access) whatever the scanner.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from .. import _filters
from .._validation import as_positive_float
from ..background import randoms_sinogram, scatter_sinogram
from ..geometry import SinogramLayout
from ..physics import ForwardModel

#: The most expected prompts :func:`simulate_scan` draws (1e15, a million times a long clinical
#: scan): torch's Poisson sampler turns means beyond 2**63 into negative counts.
MAX_TOTAL_COUNTS = 1e15

__all__ = ["Scan", "simulate_scan", "thin", "make_generator", "MAX_TOTAL_COUNTS"]


def make_generator(seed) -> torch.Generator:
    """A CPU ``torch.Generator`` from an int seed, a generator (returned as is) or ``None`` (fresh)."""
    if isinstance(seed, torch.Generator):
        return seed
    g = torch.Generator()
    if seed is None:
        g.seed()
    else:
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise TypeError(f"seed must be a non-negative int, a torch.Generator or None, got {seed!r}")
        g.manual_seed(int(seed))
    return g


@dataclass
class Scan:
    """A simulated scan (all tensors on the CPU, float64, shape ``model.shape_out``).

    Attributes
    ----------
    prompts : measured counts ``y_fd ~ Poisson(expected)``
    trues, scatter, randoms : the expected components
    model : ForwardModel
        Maps the *activity image* to ``expected`` (its ``mult`` includes the counts scale, its
        ``additive`` is ``scatter + randoms``): the model to reconstruct with.
    counts_per_unit : float
        The factor applied to the input model's linear part.
    expected : property
        ``ybar = trues + scatter + randoms`` (``trues + model.additive``), computed on each access:
        not stored, which saves a sinogram copy (about 0.9 GB on the full mmr-like scanner).
    """

    prompts: torch.Tensor
    trues: torch.Tensor
    scatter: torch.Tensor
    randoms: torch.Tensor
    model: ForwardModel
    counts_per_unit: float

    @property
    def expected(self) -> torch.Tensor:
        """``trues + scatter + randoms`` (a new tensor on each access)."""
        return self.trues + self.model.additive

    def low_dose(self, drf: float, seed=None) -> tuple[torch.Tensor, ForwardModel]:
        """Thinned prompts at dose-reduction factor ``drf`` and the matching model (mult and
        background divided by ``drf``)."""
        y_ld = thin(self.prompts, drf, seed)
        model = self.model.with_background(self.model.additive / float(drf), scale=1.0 / float(drf))
        return y_ld, model


def simulate_scan(phantom, model: ForwardModel, total_counts: float, randoms_fraction: float = 0.0,
                  scatter_fraction: float = 0.0, seed=None, progress: bool = False) -> Scan:
    """Simulate a full-dose scan of ``phantom`` with ``model``.

    Parameters
    ----------
    phantom : array, tensor, or an object with an ``activity`` attribute (e.g. a brain phantom)
        Activity image of ``model.shape_in`` (>= 0).
    model : ForwardModel
        Geometry, PSF, normalisation and attenuation; it must have no additive term (randoms and
        scatter are added here) and no view restriction.
    total_counts : float
        Expected prompts ``sum(ybar)``, at most :data:`MAX_TOTAL_COUNTS`.
    randoms_fraction, scatter_fraction : float
        See the module docstring; each in [0, 1).
    seed : int, torch.Generator or None
        Seeds the Poisson draw.
    progress : bool
        Show tqdm bars: one over the steps (projection, scatter, randoms, Poisson draw) and one
        over the blocks of views of the projection and of the scatter model (worth it in 3D,
        where each step takes seconds to minutes; same numbers).

    Notes
    -----
    With a 3D :class:`~pettk.geometry.SinogramLayout` the scatter model is also smooth across
    planes (:func:`~pettk.background.scatter_sinogram` with the layout as ``geometry``).
    """
    if not isinstance(model, ForwardModel):
        raise TypeError(f"model must be a ForwardModel, got {type(model).__name__}")
    if model.additive is not None:
        raise ValueError("model must have no additive term: simulate_scan adds randoms and scatter itself")
    if model.projector.views is not None:
        raise ValueError("model must cover all views (not a subset)")
    activity = getattr(phantom, "activity", phantom)
    if isinstance(activity, np.ndarray):
        activity = torch.from_numpy(np.ascontiguousarray(activity))
    if not isinstance(activity, torch.Tensor):
        raise TypeError(f"phantom must be an array, a tensor or have an .activity array, got {type(phantom).__name__}")
    activity = activity.to(torch.float64)
    if tuple(activity.shape) != tuple(model.shape_in):
        raise ValueError(f"the activity must have shape {tuple(model.shape_in)}, got {tuple(activity.shape)}")
    if not bool(torch.isfinite(activity).all()) or bool((activity < 0).any()):
        raise ValueError("the activity must be finite and >= 0")
    total = as_positive_float("total_counts", total_counts)
    if total > MAX_TOTAL_COUNTS:
        raise ValueError(f"total_counts must be <= {MAX_TOTAL_COUNTS:g}, got {total_counts!r}")
    for name, frac in (("randoms_fraction", randoms_fraction), ("scatter_fraction", scatter_fraction)):
        if isinstance(frac, (bool, str)) or frac is None:
            raise TypeError(f"{name} must be a number in [0, 1), got {frac!r}")
        if not 0.0 <= float(frac) < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {frac!r}")
    generator = make_generator(seed)

    geometry = model.projector.geometry
    tof = model.projector.tof
    steps = tqdm(total=4, desc="simulate_scan", disable=not progress, leave=False)
    with torch.no_grad(), steps:
        steps.set_postfix_str("projection")
        trues = model._linear_with_progress(activity) if progress else model.linear(activity)
        unit_total = float(trues.sum())
        if unit_total <= 0:
            raise ValueError("the phantom produces no true coincidences (empty image or no LOR crosses it)")
        target_trues = (1.0 - scatter_fraction) * (1.0 - randoms_fraction) * total
        scale = target_trues / unit_total
        trues.mul_(scale)
        steps.update(1)
        steps.set_postfix_str("scatter")
        if scatter_fraction > 0:
            layout = geometry if isinstance(geometry, SinogramLayout) else None
            scatter = torch.as_tensor(scatter_sinogram(trues, scatter_fraction, tof_axis=tof is not None,
                                                       geometry=layout, progress=progress))
        else:
            scatter = torch.zeros_like(trues)
        steps.update(1)
        steps.set_postfix_str("randoms")
        if randoms_fraction > 0:
            randoms = randoms_sinogram(geometry, randoms_fraction * total, tof=tof, dtype=torch.float64,
                                       device=trues.device)
        else:
            randoms = torch.zeros_like(trues)
        steps.update(1)
        steps.set_postfix_str("Poisson draw")
        background = scatter + randoms
        prompts = _poisson(trues, background, generator)
        steps.update(1)
    counts_model = model.with_background(background, scale=scale)  # shares `background`
    return Scan(prompts, trues, scatter, randoms, counts_model, scale)


def _poisson(trues: torch.Tensor, background: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """``Poisson(trues + background)``, the sum formed a block at a time (no sinogram-sized
    temporary); the draws equal those of one ``torch.poisson`` call over the whole sum."""
    out = torch.empty_like(trues)
    flat_out, flat_t, flat_b = out.view(-1), trues.reshape(-1), background.reshape(-1)
    block = max(1, _filters.CHUNK_BYTES // trues.element_size())
    for i in range(0, flat_out.numel(), block):
        flat_out[i:i + block] = torch.poisson(flat_t[i:i + block] + flat_b[i:i + block], generator=generator)
    return out


def thin(counts, drf: float, seed=None):
    """Binomial thinning ``Binomial(counts, 1 / drf)`` (dose reduction by a factor ``drf``).

    ``counts`` are non-negative integers (any float/int dtype, numpy or torch); the result has the
    same type, shape, dtype and device and never exceeds ``counts``.

    The draws come from a CPU generator (``seed``), one block of elements at a time (blocks of
    :data:`pettk._filters.CHUNK_BYTES` in float64, moved to the CPU and back when ``counts`` is on
    another device): the working memory is bounded, and the draws are those of a single
    ``torch.binomial`` call over all elements, whatever the block size.
    """
    drf = float(drf)
    if not np.isfinite(drf) or drf < 1.0:
        raise ValueError(f"drf must be a finite number >= 1, got {drf!r}")
    is_numpy = isinstance(counts, np.ndarray)
    if not isinstance(counts, (np.ndarray, torch.Tensor)):
        raise TypeError(f"counts must be a numpy array or a torch tensor, got {type(counts).__name__}")
    c = torch.from_numpy(np.ascontiguousarray(counts)) if is_numpy else counts
    flat = c.detach().reshape(-1)
    block = max(1, _filters.CHUNK_BYTES // 8)
    for i in range(0, flat.numel(), block):
        part = flat[i:i + block].to(torch.float64)
        if not bool(torch.isfinite(part).all()) or bool((part < 0).any()) or bool((part != torch.round(part)).any()):
            raise ValueError("counts must be finite non-negative integers")
    generator = make_generator(seed)
    if drf == 1.0:
        out = c.detach().clone()
    else:
        out = torch.empty(c.shape, dtype=c.dtype, device=c.device)
        flat_out = out.view(-1)
        probability = torch.tensor(1.0 / drf, dtype=torch.float64)
        for i in range(0, flat.numel(), block):
            part = flat[i:i + block].to(device="cpu", dtype=torch.float64)
            drawn = torch.binomial(part, probability.expand(part.shape), generator=generator)
            flat_out[i:i + block] = drawn.to(device=c.device, dtype=c.dtype)
    return out.numpy() if is_numpy else out

"""Posterior (data-consistent) sampling with a pretrained image diffusion model.

Any unconditional (or already guided) image model ``model(x_t, t) -> eps | x0 | v`` becomes a
reconstruction prior by steering its sampler toward the measured data ``y``:

* :func:`dps_sample` -- Diffusion Posterior Sampling (Chung et al. 2023, "Diffusion Posterior
  Sampling for General Noisy Inverse Problems", ICLR). At every step Tweedie's estimate
  ``x0_hat(x_t)`` is computed *with* gradients, the data misfit of ``x0_hat`` is differentiated
  with respect to ``x_t`` by autograd (through the network and the PET forward model) and
  ``step_size * grad`` is subtracted from the DDIM/DDPM update.
* :func:`diffpir_sample` / :func:`dds_sample` -- plug-and-play variants (Zhu et al. 2023,
  "Denoising Diffusion Models for Plug-and-Play Image Restoration" (DiffPIR), CVPR; Chung, Lee &
  Ye 2024, "Decomposed Diffusion Sampler for Accelerating Large-Scale Inverse Problems" (DDS),
  ICLR): at every step ``x0_hat`` (no gradient through the network) is corrected by a few
  (penalised) EM iterations with positivity, then re-noised to the next time with DDIM. No
  back-propagation through the projector. DiffPIR re-derives the noise from the corrected
  estimate, DDS keeps the network's noise (as DDIP does, Hashimoto & Gong 2025).
* :func:`penalised_em_step` -- one EM update followed by the closed-form HQS root of
  ``min_x -log L(y|x) + beta/2 ||x - anchor||^2`` under the EM surrogate (METHODS §4.4.3).

PET data path
-------------
Samples are images ``(B, 1, H, W)`` in the model's normalised space; the forward model takes
activity images ``(..., H, W)`` (``forward_model.shape_in == (H, W)``), so the channel axis is
squeezed and the batch axis kept. ``y`` is one sinogram ``shape_out`` (shared by all samples) or
one per sample ``(B, *shape_out)``. The intensity scale is an :class:`ImageScale`::

    activity = scale * to_unit(x),   to_unit(x) = x ([0, 1] models) or (x + 1) / 2 ([-1, 1] models)

given as a number (``scale``, [0, 1] models), an ``ImageScale(scale, "symmetric")`` or a pair of
callables ``(to_activity, from_activity)``. Every data term is evaluated on the activity.

DPS normalisation (our choice)
------------------------------
The data misfit is ``m(x0) = D(y, ybar(x0)) / 2`` -- half the Poisson deviance, i.e. the Poisson
negative log-likelihood ``poisson_nll(y, ybar)`` shifted by its value at ``ybar = y`` so that
``m >= 0`` (same gradient). With ``normalise="sqrt"`` (default) the correction is
``step_size * grad_{x_t} sqrt(2 m)`` ``= step_size * grad_{x_t} m / sqrt(2 m)``, per sample: for a
Gaussian misfit ``||y - A x0||^2 / 2`` this is exactly Chung et al.'s ``zeta / ||y - A x0_hat||``
step (their code differentiates the residual norm), and for Poisson data it is the square root of
the deviance, which is well defined where ``sqrt(NLL)`` is not (the NLL can be negative).
``normalise="none"`` uses ``step_size * grad_{x_t} m``, and ``normalise="score"`` weights that by
the DDIM coefficient of a likelihood score (:func:`dps_score_weight`), so ``step_size = 1`` is DPS's
likelihood approximation ``p(y | x_t) ~ p(y | x0_hat(x_t))`` with no tuned step. Expected counts
below ``count_floor`` (default ``1e-3 * mean(y)``) are floored inside the logarithm and the ratio
``y / ybar``; the gradient is ``A^T(1 - y / max(ybar, floor))`` (the convention of
:func:`pettk.likelihood.poisson_nll_gradient`) everywhere, so early, badly scaled ``x0_hat``
estimates with ``ybar <= 0`` cannot produce ``1/eps`` steps or dead gradients.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch
from tqdm.auto import tqdm

from ..physics import ForwardModel
from ..recon._common import SENSITIVITY_FLOOR
from ..recon.em import em_step
from .samplers import (
    _initial,
    check_clip,
    check_eta,
    check_prediction,
    check_schedule,
    ddim_sigma,
    ddim_step,
    model_predictions,
)
from .schedules import NoiseSchedule

__all__ = ["ImageScale", "as_image_scale", "PoissonData", "penalised_em_step", "dps_sample", "dps_score_weight",
           "diffpir_sample", "dds_sample"]


# -- intensity scale ---------------------------------------------------------------------------------
class ImageScale:
    """``activity = scale * to_unit(x)`` between a diffusion model's space and activity units.

    Parameters
    ----------
    scale : float > 0
        Activity (e.g. Bq/mL, or counts per voxel of a counts model) of a unit image value.
    range : {"unit", "symmetric"}
        The model's intensity range: ``"unit"`` ([0, 1], ``to_unit(x) = x``) or ``"symmetric"``
        ([-1, 1], ``to_unit(x) = (x + 1) / 2``).
    """

    def __init__(self, scale: float = 1.0, range: str = "unit"):
        if isinstance(scale, bool) or not isinstance(scale, numbers.Real) or not math.isfinite(scale) or scale <= 0:
            raise ValueError(f"scale must be a finite number > 0, got {scale!r}")
        if range not in ("unit", "symmetric"):
            raise ValueError(f"range must be 'unit' ([0, 1]) or 'symmetric' ([-1, 1]), got {range!r}")
        self.scale = float(scale)
        self.range = range

    def to_activity(self, x: torch.Tensor) -> torch.Tensor:
        u = x if self.range == "unit" else (x + 1.0) * 0.5
        return self.scale * u

    def from_activity(self, a: torch.Tensor) -> torch.Tensor:
        u = a / self.scale
        return u if self.range == "unit" else 2.0 * u - 1.0

    def __repr__(self) -> str:
        return f"ImageScale(scale={self.scale:g}, range={self.range!r})"


class _CallableScale:
    def __init__(self, to_activity, from_activity):
        self.to_activity = to_activity
        self.from_activity = from_activity


def as_image_scale(scale):
    """An object with ``to_activity``/``from_activity`` from a number, an :class:`ImageScale` or a pair of callables."""
    if isinstance(scale, (ImageScale, _CallableScale)):
        return scale
    if isinstance(scale, numbers.Real) and not isinstance(scale, bool):
        return ImageScale(float(scale), "unit")
    if isinstance(scale, (tuple, list)) and len(scale) == 2 and all(callable(f) for f in scale):
        return _CallableScale(scale[0], scale[1])
    raise TypeError("scale must be a number, an ImageScale or a pair of callables (to_activity, from_activity), "
                    f"got {scale!r}")


# -- the PET data term --------------------------------------------------------------------------------
def _as_counts(y, forward_model: ForwardModel, batch: int | None, dtype, device) -> torch.Tensor:
    if isinstance(y, np.ndarray):
        y = torch.from_numpy(np.ascontiguousarray(y))
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"y must be a numpy array or a torch tensor of counts, got {type(y).__name__}")
    out = tuple(forward_model.shape_out)
    shape = tuple(y.shape)
    if shape != out and not (batch is not None and shape == (batch,) + out):
        allowed = f"{out}" + (f" or {(batch,) + out}" if batch is not None else "")
        raise ValueError(f"y must have shape {allowed} (forward_model.shape_out, optionally per sample), got {shape}")
    y = y.detach().to(device=device, dtype=dtype)
    if not bool(torch.isfinite(y).all()):
        raise ValueError("y contains non-finite values (NaN or inf)")
    if bool((y < 0).any()):
        raise ValueError(f"y holds counts and must be >= 0; its minimum is {float(y.min()):.4g}")
    return y


class PoissonData:
    """The Poisson data term of a PET forward model on diffusion-space images ``(B, 1, H, W)``.

    Parameters
    ----------
    forward_model : ForwardModel
        With ``shape_in == (H, W)``.
    y : array or tensor
        Counts, ``shape_out`` or ``(B, *shape_out)``.
    scale : number, ImageScale or (to_activity, from_activity)
        See the module docstring.
    count_floor : float, optional
        Floor of the expected counts inside the logarithm and the ratio (default ``1e-3 * mean(y)``,
        at least 1e-8).
    batch, dtype, device : used to validate and place ``y``.
    """

    def __init__(self, forward_model, y, scale=1.0, count_floor: float | None = None, *, batch: int | None = None,
                 dtype=torch.float32, device="cpu"):
        if not isinstance(forward_model, ForwardModel):
            raise TypeError(f"forward_model must be a pettk ForwardModel, got {type(forward_model).__name__}")
        if len(forward_model.shape_in) != 2:
            raise ValueError(f"posterior sampling works on 2D images; forward_model.shape_in is "
                             f"{tuple(forward_model.shape_in)}")
        self.forward_model = forward_model
        self.scale = as_image_scale(scale)
        self.y = _as_counts(y, forward_model, batch, dtype, device)
        if count_floor is None:
            count_floor = max(1e-3 * float(self.y.mean()), 1e-8)
        if not (isinstance(count_floor, numbers.Real) and count_floor > 0):
            raise ValueError(f"count_floor must be a number > 0, got {count_floor!r}")
        self.count_floor = float(count_floor)
        self._ylogy = torch.xlogy(self.y, self.y)

    def check_image_shape(self, shape) -> None:
        expected = tuple(self.forward_model.shape_in)
        shape = tuple(shape)
        if len(shape) != 4 or shape[1] != 1 or shape[2:] != expected:
            raise ValueError(f"samples must have shape (B, 1, {expected[0]}, {expected[1]}) to match "
                             f"forward_model.shape_in {expected}, got {shape}")
        if self.y.ndim == len(self.forward_model.shape_out) + 1 and self.y.shape[0] != shape[0]:
            raise ValueError(f"y holds {self.y.shape[0]} sinograms but there are {shape[0]} samples")

    def activity(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 1, H, W)`` model-space images to ``(B, H, W)`` activity images."""
        return self.scale.to_activity(x).squeeze(1)

    def image(self, activity: torch.Tensor) -> torch.Tensor:
        """``(B, H, W)`` activity images to ``(B, 1, H, W)`` model-space images."""
        return self.scale.from_activity(activity).unsqueeze(1)

    def misfit(self, x: torch.Tensor) -> torch.Tensor:
        """Half the Poisson deviance per sample, shape ``(B,)``, differentiable in ``x``.

        The gradient with respect to the activity is ``A^T(1 - y / max(ybar, count_floor))``.
        """
        ybar = self.forward_model.forward(self.activity(x))
        floored = ybar.detach().clamp_min(self.count_floor)
        value = ybar.detach() - self.y + self._ylogy - torch.xlogy(self.y, floored)
        weight = 1.0 - self.y / floored
        sum_dims = tuple(range(1, ybar.ndim))
        surrogate = (weight * ybar).sum(dim=sum_dims)
        return value.sum(dim=sum_dims) + surrogate - surrogate.detach()

    def nll(self, x: torch.Tensor) -> torch.Tensor:
        """``pettk.likelihood.poisson_nll`` of each sample, shape ``(B,)`` (no gradient)."""
        from ..likelihood import poisson_nll

        with torch.no_grad():
            ybar = self.forward_model.forward(self.activity(x))
            y = self.y.expand_as(ybar)
            return torch.stack([poisson_nll(y[i], ybar[i]) for i in range(ybar.shape[0])])


# -- penalised EM (HQS) ------------------------------------------------------------------------------
def penalised_em_step(forward_model, y, x, anchor, beta: float, *, sens=None, mask=None, eps: float = 1e-8):
    """One EM update of ``x`` followed by the HQS closed form with the quadratic anchor (METHODS §4.4.3).

    Solves, per voxel, the EM surrogate of ``min_x -log L(y | x) + beta/2 ||x - anchor||^2``::

        beta x^2 + (s - beta a) x - s x_EM = 0,
        x = ((a - s/beta) + sqrt((a - s/beta)^2 + 4 x_EM s / beta)) / 2

    (its positive root; computed in the cancellation-free form ``2 c / (b + sqrt(b^2 + 4 beta c))``
    where ``b = s - beta a > 0``), with ``s = A^T 1`` the sensitivity, ``a`` the anchor and
    ``x_EM`` one MLEM update of ``x``. ``beta = 0`` is plain MLEM. With ``beta > 0``, voxels no LOR sees (``s`` below
    ``1e-6 max s``) take ``max(anchor, 0)`` (the prior alone); voxels outside ``mask`` are 0.

    Parameters
    ----------
    forward_model : ForwardModel
    y : tensor, ``shape_out`` or ``(B, *shape_out)``
        Counts.
    x, anchor : tensors ``(..., *shape_in)``
        Current estimate (>= 0) and anchor (activity units; e.g. the diffusion model's ``x0_hat``).
    beta : float >= 0
        Anchor weight in (counts / activity^2): ``beta x / s`` is the anchor's weight relative to
        the likelihood curvature at ``x``. DDIP uses 0.01 on [0, 1] images; scale it with
        ``mean(s) / mean(x)`` for other count levels.
    sens : tensor ``shape_in``, optional
        ``A^T 1`` (default ``forward_model.sensitivity``).
    mask : bool tensor ``shape_in``, optional

    Returns the new estimate (a new tensor of ``x``'s shape, >= 0).
    """
    if isinstance(beta, bool) or not isinstance(beta, numbers.Real) or not float(beta) >= 0 or not math.isfinite(beta):
        raise ValueError(f"beta must be a finite number >= 0, got {beta!r}")
    beta = float(beta)
    if sens is None:
        sens = forward_model.sensitivity(x.dtype, x.device)
    fov = sens > SENSITIVITY_FLOOR * float(sens.max())
    if mask is not None:
        mask = torch.as_tensor(mask, device=x.device)
        if mask.dtype != torch.bool:
            raise TypeError(f"mask must be a boolean image, got dtype {mask.dtype}")
        if tuple(mask.shape) != tuple(sens.shape):
            raise ValueError(f"mask must have shape {tuple(sens.shape)}, got {tuple(mask.shape)}")
    keep = fov if mask is None else fov & mask
    y = y.to(x.dtype)
    x_em = em_step(forward_model, y, x, sens, keep, fused=False)
    if beta == 0.0:
        return x_em
    a = anchor.to(x.dtype)
    b = sens - beta * a
    c = sens * x_em
    root = torch.sqrt(b * b + 4.0 * beta * c)
    tiny = torch.finfo(x.dtype).tiny
    x_new = torch.where(b > 0, 2.0 * c / (b + root).clamp_min(tiny), (root - b) / (2.0 * beta))
    x_new = torch.where(fov, x_new, a.clamp_min(0.0))
    if mask is not None:
        x_new = torch.where(mask, x_new, torch.zeros_like(x_new))
    return x_new.clamp_min(0.0)


# -- shared plumbing ----------------------------------------------------------------------------------
def dps_score_weight(schedule: NoiseSchedule, t: int, t_next: int, eta: float = 0.0, eta_form: str = "ddim") -> float:
    """The coefficient ``w_t`` with which a likelihood score enters one DDIM step ``t -> t_next``.

    Replacing ``eps_hat`` by the conditional noise ``eps_hat - sqrt(1 - abar_t) g``, with
    ``g = grad_{x_t} log p(y | x_t)`` (so ``x0_hat`` moves by ``(1 - abar_t)/sqrt(abar_t) g``), changes
    the DDIM update :func:`~pettk.diffusion.samplers.ddim_step` by ``w_t g`` with::

        w_t = sqrt(1 - abar_t) (sqrt(abar_{t'}) sqrt(1 - abar_t) / sqrt(abar_t) - sqrt(1 - abar_{t'} - sigma^2))

    (``w_t > 0``). ``normalise="score"`` in :func:`dps_sample` uses ``g = -grad_{x_t} m(x0_hat)``,
    DPS's approximation of the likelihood score.
    """
    a = float(schedule.alphas_cumprod[t])
    a_next = 1.0 if t_next < 0 else float(schedule.alphas_cumprod[t_next])
    sigma = ddim_sigma(schedule, t, t_next, eta, eta_form)
    return math.sqrt(1.0 - a) * (math.sqrt(a_next) * math.sqrt(1.0 - a) / math.sqrt(a)
                                 - math.sqrt(max(1.0 - a_next - sigma * sigma, 0.0)))


def _step_value(step_size, t: int) -> float:
    value = step_size(t) if callable(step_size) else step_size
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value < 0:
        raise ValueError(f"step sizes must be finite numbers >= 0, got {value!r} at t = {t}")
    return float(value)


def _setup(shape, schedule, generator, x_T, dtype, device, forward_model, y, nll_or_step, scale, count_floor,
           generic_name):
    if forward_model is None and nll_or_step is None:
        raise ValueError(f"give a forward_model and y (PET data), or a {generic_name} callable")
    if forward_model is not None and nll_or_step is not None:
        raise ValueError(f"give either a forward_model and y, or a {generic_name} callable, not both")
    x, g = _initial(shape, schedule, generator, x_T, dtype, device)
    data = None
    if forward_model is not None:
        if y is None:
            raise ValueError("y (the measured counts) is required with a forward_model")
        data = PoissonData(forward_model, y, scale, count_floor, batch=x.shape[0], dtype=x.dtype, device=x.device)
        data.check_image_shape(x.shape)
    elif not callable(nll_or_step):
        raise TypeError(f"{generic_name} must be callable, got {type(nll_or_step).__name__}")
    return x, g, data


# -- DPS ---------------------------------------------------------------------------------------------
def dps_sample(model, forward_model, y, shape, schedule: NoiseSchedule, n_steps: int, step_size, *,
               prediction: str = "eps", generator=None, eta: float = 1.0, eta_form: str = "ddim", scale=1.0,
               nll=None, normalise: str = "sqrt", count_floor: float | None = None, x_T=None,
               t_start: int | None = None, clip=None, dtype=None, device=None, progress: bool = False,
               callback=None) -> torch.Tensor:
    """Diffusion Posterior Sampling (Chung et al. 2023) on a strided DDIM grid.

    For each grid time ``t`` (next time ``t'``)::

        x0_hat, eps_hat = model(x_t)                           (with gradients w.r.t. x_t)
        g = grad_{x_t} sqrt(2 m(x0_hat))   (normalise="sqrt")  or  grad_{x_t} m(x0_hat)  ("none", "score")
        x_{t'} = DDIM(x0_hat, eps_hat; eta) - step_size(t) * [w_t] * g

    ``n_steps = T`` with ``eta = 1`` (``eta_form="ddim"``) is Chung et al.'s Algorithm 1 (DDPM
    ancestral steps); fewer steps and smaller ``eta`` give the faster DDIM variants. The last step
    returns ``x0_hat`` minus the last correction.

    Parameters
    ----------
    model : callable ``model(x_t, t)``
        Must be differentiable in ``x_t`` (an ``nn.Module`` in eval mode is).
    forward_model, y : ForwardModel and counts, or ``None`` with ``nll``
        PET data term ``m`` = half the Poisson deviance of ``y`` given ``forward_model.forward(
        scale.to_activity(x0_hat).squeeze(1))`` (see the module docstring).
    shape : ``(B, 1, H, W)``
    schedule, n_steps, eta, eta_form, prediction, generator, x_T, t_start, clip, dtype, device :
        As in :func:`~pettk.diffusion.samplers.ddim_sample`.
    step_size : float or callable ``t -> float``
        ``zeta``. Chung et al. use 0.1-1 on natural images, but the normalised step still scales
        with the size of ``A`` (counts per unit image) and DPS's explicit steps overshoot when
        the data are stiff: tune it. On a 16x16 image with 7e3 counts, 0.03 (50 steps) fits the
        data well; at 3.5e4 counts the same step starts to diverge. The EM-based
        :func:`diffpir_sample`/:func:`dds_sample` need no step size and are stable at any count
        level.
    nll : callable ``x0_hat -> misfit``, optional
        A generic data misfit instead of the PET path (e.g. ``||A x0 - y||^2 / (2 sigma^2)``): a
        ``(B,)`` tensor (one value per sample) or a scalar (one joint value), ``>= 0`` when
        ``normalise="sqrt"``.
    normalise : {"sqrt", "none", "score"}
        ``"sqrt"``: Chung et al.'s normalised step (module docstring). ``"none"``: ``step_size *
        grad m``. ``"score"``: ``step_size * w_t * grad m`` with :func:`dps_score_weight`, so that
        ``-grad m`` enters the update exactly as a likelihood score would (``step_size = 1`` is DPS's
        posterior approximation without a tuned step; it needs a fine grid, e.g. ``n_steps = T``,
        when the data are strong, or the explicit steps overshoot).
    scale : number, ImageScale or pair of callables
        The PET path's intensity scale.
    count_floor : float, optional
        See :class:`PoissonData`.
    callback : ``callback(i, t, x, x0_hat)`` after every step.

    Returns
    -------
    The sample ``(B, 1, H, W)`` in the model's space (``scale.to_activity`` gives activity).
    """
    schedule = check_schedule(schedule)
    check_prediction(prediction)
    clip = check_clip(clip)
    eta = check_eta(eta, eta_form)
    if normalise not in ("sqrt", "none", "score"):
        raise ValueError(f"normalise must be 'sqrt', 'none' or 'score', got {normalise!r}")
    if not callable(step_size):
        _step_value(step_size, 0)
    grid = schedule.timesteps(n_steps, t_start).tolist()
    x, g, data = _setup(shape, schedule, generator, x_T, dtype, device, forward_model, y, nll, scale, count_floor,
                        "nll")
    misfit_fn = data.misfit if data is not None else nll
    for i, t in enumerate(tqdm(grid, desc="DPS", disable=not progress, leave=False)):
        t_next = grid[i + 1] if i + 1 < len(grid) else -1
        with torch.enable_grad():
            x_in = x.detach().requires_grad_(True)
            x0, eps = model_predictions(model, x_in, t, schedule, prediction, clip)
            m = misfit_fn(x0)
            if not isinstance(m, torch.Tensor) or m.ndim > 1 or (m.ndim == 1 and m.shape[0] != x.shape[0]):
                raise ValueError("the data misfit must return a scalar or a (B,) tensor")
            if normalise == "sqrt":
                if bool((m.detach() < 0).any()):
                    raise ValueError("normalise='sqrt' needs a misfit >= 0 (e.g. ||A x - y||^2 / 2); "
                                     f"got {float(m.detach().min()):.4g}")
                objective = torch.sqrt(2.0 * m.clamp_min(1e-30))
            else:
                objective = m
            grad, = torch.autograd.grad(objective.sum(), x_in)
        with torch.no_grad():
            x = ddim_step(schedule, t, t_next, x0.detach(), eps.detach(), eta, generator=g, eta_form=eta_form)
            zeta = _step_value(step_size, t)
            if normalise == "score":
                zeta = zeta * dps_score_weight(schedule, t, t_next, eta, eta_form)
            x = x - zeta * grad
        if callback is not None:
            callback(i, t, x, x0.detach())
    return x.detach()


# -- DiffPIR / DDS -----------------------------------------------------------------------------------
@torch.no_grad()
def _plug_and_play(model, forward_model, y, shape, schedule, n_steps, *, n_em, beta, eta, eta_form, eps_source,
                   prediction, generator, scale, data_step, mask, x_T, t_start, clip, dtype, device, progress,
                   callback, desc):
    schedule = check_schedule(schedule)
    check_prediction(prediction)
    clip = check_clip(clip)
    eta = check_eta(eta, eta_form)
    if isinstance(n_em, bool) or not isinstance(n_em, numbers.Integral) or n_em < 1:
        raise ValueError(f"n_em must be an integer >= 1, got {n_em!r}")
    if not callable(beta):
        _step_value(beta, 0)
    grid = schedule.timesteps(n_steps, t_start).tolist()
    x, g, data = _setup(shape, schedule, generator, x_T, dtype, device, forward_model, y, data_step, scale, None,
                        "data_step")
    sens = None
    if data is not None:
        sens = forward_model.sensitivity(x.dtype, x.device)
    for i, t in enumerate(tqdm(grid, desc=desc, disable=not progress, leave=False)):
        t_next = grid[i + 1] if i + 1 < len(grid) else -1
        x0, eps = model_predictions(model, x, t, schedule, prediction, clip)
        if data is None:
            x0_dc = data_step(x0, t)
            if not isinstance(x0_dc, torch.Tensor) or x0_dc.shape != x0.shape:
                raise ValueError("data_step must return a tensor of x0's shape")
        else:
            anchor = data.activity(x0).clamp_min(0.0)
            floor = 1e-6 * float(anchor.max()) + 1e-12
            a = anchor.clamp_min(floor)  # EM is multiplicative: keep every voxel able to grow
            b_t = _step_value(beta, t)
            for _ in range(int(n_em)):
                a = penalised_em_step(forward_model, data.y, a, anchor, b_t, sens=sens, mask=mask)
            x0_dc = data.image(a)
        if eps_source == "recompute":
            eps = schedule.predict_eps_from_x0(x, t, x0_dc)
        x = ddim_step(schedule, t, t_next, x0_dc, eps, eta, generator=g, eta_form=eta_form)
        if callback is not None:
            callback(i, t, x, x0_dc)
    return x


def diffpir_sample(model, forward_model, y, shape, schedule: NoiseSchedule, n_steps: int, *, n_em: int = 3,
                   beta=0.0, eta: float = 0.5, eta_form: str = "ddip", prediction: str = "eps", generator=None,
                   scale=1.0, data_step=None, mask=None, x_T=None, t_start: int | None = None, clip=None,
                   dtype=None, device=None, progress: bool = False, callback=None) -> torch.Tensor:
    """DiffPIR-style plug-and-play sampling (Zhu et al. 2023) with an EM data step.

    For each grid time ``t`` (next ``t'``)::

        x0_hat = model(x_t)                                       (no gradient)
        x0_dc  = EM_data_step(x0_hat)       n_em (penalised) EM iterations, positivity
        eps'   = (x_t - sqrt(abar_t) x0_dc) / sqrt(1 - abar_t)     (noise re-derived from x0_dc)
        x_{t'} = sqrt(abar_{t'}) x0_dc + sqrt(1 - abar_{t'}) (eta xi + sqrt(1 - eta^2) eps')

    (``eta^2`` is DiffPIR's ``zeta``; ``eta_form="ddim"`` uses DDIM's ``sigma(eta)`` instead.)
    The PET data step starts from ``max(x0_hat activity, 0)`` and runs ``n_em`` iterations of
    :func:`penalised_em_step` anchored at it with weight ``beta`` (``0``: plain MLEM; a callable
    ``t -> beta`` gives DiffPIR's time-dependent ``rho_t``, e.g. proportional to the SNR). The last
    step returns ``x0_dc``, so the output is data-consistent.

    Parameters
    ----------
    data_step : callable ``(x0_hat, t) -> x0_dc``, optional
        A generic data-consistency step instead of the PET path (e.g. a proximal step).
    mask : bool tensor ``shape_in``, optional
        Voxels to reconstruct in the EM step.
    Others as in :func:`dps_sample`.
    """
    return _plug_and_play(model, forward_model, y, shape, schedule, n_steps, n_em=n_em, beta=beta, eta=eta,
                          eta_form=eta_form, eps_source="recompute", prediction=prediction, generator=generator,
                          scale=scale, data_step=data_step, mask=mask, x_T=x_T, t_start=t_start, clip=clip,
                          dtype=dtype, device=device, progress=progress, callback=callback, desc="DiffPIR")


def dds_sample(model, forward_model, y, shape, schedule: NoiseSchedule, n_steps: int, *, n_em: int = 3,
               beta=0.0, eta: float = 0.85, eta_form: str = "ddip", prediction: str = "eps", generator=None,
               scale=1.0, data_step=None, mask=None, x_T=None, t_start: int | None = None, clip=None,
               dtype=None, device=None, progress: bool = False, callback=None) -> torch.Tensor:
    """DDS-style sampling (Chung, Lee & Ye 2024): like :func:`diffpir_sample`, but the DDIM update
    keeps the *network's* noise estimate::

        x_{t'} = sqrt(abar_{t'}) x0_dc + sqrt(1 - abar_{t'}) (eta xi + sqrt(1 - eta^2) eps_hat)

    which is DDIP's sampling step (η = 0.85) with EM instead of conjugate gradients as the data
    step. With a partial start (``x_T = q_sample(init, t_start)``, ``t_start`` e.g. 200) this is
    DDIP-PET without the per-step fine-tuning. Parameters as in :func:`diffpir_sample`.
    """
    return _plug_and_play(model, forward_model, y, shape, schedule, n_steps, n_em=n_em, beta=beta, eta=eta,
                          eta_form=eta_form, eps_source="network", prediction=prediction, generator=generator,
                          scale=scale, data_step=data_step, mask=mask, x_T=x_T, t_start=t_start, clip=clip,
                          dtype=dtype, device=device, progress=progress, callback=callback, desc="DDS")

"""DDPM and DDIM samplers, and SDEdit partial starts, for any denoiser callable.

Diffusers-style: a sampler knows a :class:`~pettk.diffusion.schedules.NoiseSchedule` and a
*model*, which is any callable ``model(x_t, t)`` taking ``x_t`` of shape ``(B, C, ...)`` and ``t``
a ``(B,)`` long tensor, and returning a tensor of ``x_t``'s shape: the noise ``eps``
(``prediction="eps"``), the clean image (``"x0"``) or the velocity (``"v"``). Conditioning and
guidance are closures around the network (see :mod:`pettk.diffusion.guidance`).

* :func:`ddpm_sample` -- ancestral sampling (Ho et al. 2020, "Denoising Diffusion Probabilistic
  Models"): ``x_{t-1} ~ N(mu~_t(x0_hat, x_t), beta~_t I)`` for ``t = t_start .. 0``.
* :func:`ddim_sample` -- DDIM on a strided grid (Song et al. 2021, "Denoising Diffusion Implicit
  Models"), see :func:`ddim_step` for the two ``eta`` forms.
* :func:`sdedit` -- SDEdit partial start (Meng et al. 2022): noise a given image to ``t0`` with
  ``q(x_t0 | x_0)`` and run DDIM from ``t0``.
* :func:`model_predictions`, :func:`ddim_step`, :func:`ddpm_step` -- the single steps, for
  algorithms that do something between steps (posterior sampling, DDIP's per-step fine-tuning).

Randomness comes only from the ``generator`` (a ``torch.Generator`` or an int seed): the same
generator state gives the same samples. The samplers run under ``torch.no_grad()``.

``clip``: ``None``, a number ``c`` (clamp to ``[-c, c]``) or a pair ``(lo, hi)``; the estimate
``x0_hat`` is clamped and ``eps_hat`` recomputed from the clamped ``x0_hat`` so the update stays
consistent with ``x_t`` (guided-diffusion's "clip_denoised").

``callback(i, t, x, x0_hat)`` runs after every step ``i`` (time ``t``) with the new state ``x``
and the estimate used; ``progress=True`` shows a tqdm bar.
"""

from __future__ import annotations

import math
import numbers

import torch
from tqdm.auto import tqdm

from .schedules import NoiseSchedule

__all__ = [
    "PREDICTIONS", "ETA_FORMS", "model_predictions", "ddim_step", "ddpm_step", "ddpm_sample", "ddim_sample",
    "sdedit", "make_generator", "check_clip", "check_eta",
]

#: What a model may predict.
PREDICTIONS = ("eps", "x0", "v")
#: The two parameterisations of DDIM's stochasticity, see :func:`ddim_step`.
ETA_FORMS = ("ddim", "ddip")


# -- validation helpers ------------------------------------------------------------------------------
def check_prediction(prediction) -> str:
    if prediction not in PREDICTIONS:
        raise ValueError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")
    return prediction


def check_eta(eta, eta_form: str = "ddim") -> float:
    """``eta`` as a float in [0, 1]; ``eta_form`` in :data:`ETA_FORMS`."""
    if eta_form not in ETA_FORMS:
        raise ValueError(f"eta_form must be one of {ETA_FORMS}, got {eta_form!r}")
    if isinstance(eta, bool) or not isinstance(eta, numbers.Real):
        raise TypeError(f"eta must be a number in [0, 1], got {eta!r}")
    eta = float(eta)
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta must lie in [0, 1] (0: deterministic DDIM, 1: DDPM-like), got {eta}")
    return eta


def check_clip(clip):
    """``None`` or a ``(lo, hi)`` pair of floats with ``lo < hi``."""
    if clip is None:
        return None
    if isinstance(clip, numbers.Real) and not isinstance(clip, bool):
        c = float(clip)
        if not c > 0:
            raise ValueError(f"clip must be > 0 (meaning [-clip, clip]) or a (lo, hi) pair, got {clip!r}")
        return (-c, c)
    try:
        lo, hi = (float(v) for v in clip)
    except (TypeError, ValueError):
        raise TypeError(f"clip must be None, a number or a (lo, hi) pair, got {clip!r}") from None
    if not lo < hi:
        raise ValueError(f"clip must satisfy lo < hi, got {clip!r}")
    return (lo, hi)


def check_schedule(schedule) -> NoiseSchedule:
    if not isinstance(schedule, NoiseSchedule):
        raise TypeError(f"schedule must be a NoiseSchedule, got {type(schedule).__name__}")
    return schedule


def make_generator(generator, device) -> torch.Generator | None:
    """A ``torch.Generator`` on ``device`` from a generator, an int seed or ``None`` (torch's global RNG)."""
    if generator is None or isinstance(generator, torch.Generator):
        return generator
    if isinstance(generator, numbers.Integral) and not isinstance(generator, bool):
        g = torch.Generator(device=torch.device(device))
        g.manual_seed(int(generator))
        return g
    raise TypeError(f"generator must be a torch.Generator, an int seed or None, got {type(generator).__name__}")


def randn(shape, generator, like_or_device, dtype=None) -> torch.Tensor:
    """Standard normal noise drawn from ``generator`` on the device of the generator, moved to the target."""
    if isinstance(like_or_device, torch.Tensor):
        device, dtype = like_or_device.device, like_or_device.dtype
    else:
        device = torch.device(like_or_device)
    gen_device = generator.device if generator is not None else device
    return torch.randn(tuple(shape), generator=generator, device=gen_device, dtype=dtype).to(device)


def _initial(shape, schedule, generator, x_T, dtype, device):
    if x_T is not None:
        if not isinstance(x_T, torch.Tensor):
            raise TypeError(f"x_T must be a torch tensor, got {type(x_T).__name__}")
        if shape is not None and tuple(x_T.shape) != tuple(shape):
            raise ValueError(f"x_T must have shape {tuple(shape)}, got {tuple(x_T.shape)}")
        if not x_T.is_floating_point():
            raise TypeError(f"x_T must be floating point, got {x_T.dtype}")
        return x_T.detach().clone(), make_generator(generator, x_T.device)
    if shape is None:
        raise ValueError("give the sample shape or x_T")
    shape = tuple(int(s) for s in shape)
    if len(shape) < 1 or any(s < 1 for s in shape):
        raise ValueError(f"shape must be a tuple of positive ints (B, C, ...), got {shape}")
    device = torch.device(device) if device is not None else torch.device("cpu")
    g = make_generator(generator, device)
    return randn(shape, g, device, dtype or torch.float32), g


# -- single steps ------------------------------------------------------------------------------------
def model_predictions(model, x_t: torch.Tensor, t: int, schedule: NoiseSchedule, prediction: str = "eps",
                      clip=None):
    """Call ``model(x_t, t)`` and return ``(x0_hat, eps_hat)``.

    ``t`` is an int time; the model receives it as a ``(B,)`` long tensor on ``x_t``'s device. With
    ``clip`` the estimate ``x0_hat`` is clamped and ``eps_hat`` recomputed from it. Gradients flow
    if the caller enables them (DPS differentiates ``x0_hat`` with respect to ``x_t``).
    """
    prediction = check_prediction(prediction)
    clip = check_clip(clip)
    t_vec = torch.full((x_t.shape[0],), int(t), dtype=torch.long, device=x_t.device)
    out = model(x_t, t_vec)
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"the model must return a tensor, got {type(out).__name__}")
    if out.shape != x_t.shape:
        raise ValueError(f"the model returned shape {tuple(out.shape)} for x_t of shape {tuple(x_t.shape)}; "
                         "a model must return eps, x0 or v of the input's shape")
    if out.dtype != x_t.dtype:
        out = out.to(x_t.dtype)
    if prediction == "eps":
        eps = out
        x0 = schedule.predict_x0_from_eps(x_t, t, eps)
    elif prediction == "x0":
        x0 = out
        eps = schedule.predict_eps_from_x0(x_t, t, x0)
    else:
        x0 = schedule.predict_x0_from_v(x_t, t, out)
        eps = schedule.predict_eps_from_v(x_t, t, out)
    if clip is not None:
        x0 = x0.clamp(clip[0], clip[1])
        eps = schedule.predict_eps_from_x0(x_t, t, x0)
    return x0, eps


def _abar(schedule: NoiseSchedule, t: int) -> float:
    return 1.0 if t < 0 else float(schedule.alphas_cumprod[t])


def ddim_sigma(schedule: NoiseSchedule, t: int, t_next: int, eta: float, eta_form: str = "ddim") -> float:
    """The fresh-noise standard deviation of one DDIM step ``t -> t_next`` (see :func:`ddim_step`)."""
    a, a_next = _abar(schedule, t), _abar(schedule, t_next)
    if eta == 0.0 or t_next < 0:
        return 0.0
    if eta_form == "ddim":
        return eta * math.sqrt((1.0 - a_next) / (1.0 - a) * (1.0 - a / a_next))
    return eta * math.sqrt(1.0 - a_next)


def ddim_step(schedule: NoiseSchedule, t: int, t_next: int, x0: torch.Tensor, eps: torch.Tensor,
              eta: float = 0.0, *, generator=None, noise: torch.Tensor | None = None,
              eta_form: str = "ddim") -> torch.Tensor:
    """One DDIM update from time ``t`` to ``t_next < t`` (``t_next = -1``: the clean image).

    ``x_{t'} = sqrt(abar_{t'}) x0 + sqrt(1 - abar_{t'} - sigma^2) eps + sigma xi``, ``xi ~ N(0, I)``
    (Song et al. 2021, eq. 12). The total noise variance ``1 - abar_{t'}`` is the same for any
    ``sigma``; ``eta`` sets how much of it is fresh noise:

    * ``eta_form="ddim"``: ``sigma = eta sqrt((1 - abar_{t'})/(1 - abar_t)) sqrt(1 - abar_t/abar_{t'})``
      (Song et al.): ``eta = 0`` is the deterministic DDIM, ``eta = 1`` on the stride-1 grid is
      exactly DDPM ancestral sampling with the posterior variance ``beta~_t``.
    * ``eta_form="ddip"``: ``sigma = eta sqrt(1 - abar_{t'})``, i.e.
      ``x_{t'} = sqrt(abar_{t'}) x0 + sqrt(1 - abar_{t'}) (eta xi + sqrt(1 - eta^2) eps)``: the
      constant-total-variance mix of fresh and predicted noise used by DDS (Chung et al. 2024),
      DiffPIR (Zhu et al. 2023, with ``zeta = eta^2``) and DDIP (eta = 0.85).

    ``noise`` (``xi``) may be given; otherwise it is drawn from ``generator`` when ``sigma > 0``.
    """
    sigma = ddim_sigma(schedule, t, t_next, eta, eta_form)
    a_next = _abar(schedule, t_next)
    coef_eps = math.sqrt(max(1.0 - a_next - sigma * sigma, 0.0))
    x = math.sqrt(a_next) * x0 + coef_eps * eps
    if sigma > 0.0:
        if noise is None:
            noise = randn(x0.shape, generator, x0)
        x = x + sigma * noise
    return x


def ddpm_step(schedule: NoiseSchedule, t: int, x_t: torch.Tensor, x0: torch.Tensor, *, generator=None,
              variance: str = "posterior", noise: torch.Tensor | None = None) -> torch.Tensor:
    """One ancestral step ``x_{t-1} = mu~_t(x0, x_t) + sqrt(var) z`` (Ho et al. 2020, Algorithm 2).

    ``variance="posterior"`` uses ``beta~_t`` (the exact ``q(x_{t-1} | x_t, x0)`` variance),
    ``"beta"`` uses ``beta_t``; no noise is added at ``t = 0``.
    """
    mean, var = schedule.posterior_mean_variance(x0, x_t, t)
    if t == 0:
        return mean
    if variance == "beta":
        var = float(schedule.betas[t])
    else:
        var = float(schedule.posterior_variance[t])
    if noise is None:
        noise = randn(x_t.shape, generator, x_t)
    return mean + math.sqrt(var) * noise


# -- full samplers -----------------------------------------------------------------------------------
def _loop(grid, progress, desc):
    return tqdm(grid, desc=desc, disable=not progress, leave=False)


@torch.no_grad()
def ddpm_sample(model, shape, schedule: NoiseSchedule, *, prediction: str = "eps", generator=None, x_T=None,
                t_start: int | None = None, clip=None, variance: str = "posterior", dtype=None, device=None,
                progress: bool = False, callback=None) -> torch.Tensor:
    """DDPM ancestral sampling over every step ``t`` from ``t_start`` down to 0 (Ho et al. 2020, Algorithm 2).

    Parameters
    ----------
    model : callable ``model(x_t, t) -> eps | x0 | v``
    shape : tuple ``(B, C, ...)``
        The sample shape (ignored if ``x_T`` is given, which must then have this shape if both are).
    schedule : NoiseSchedule
    prediction : {"eps", "x0", "v"}
    generator : torch.Generator or int, optional
        The only source of randomness (``x_T`` and every step's noise).
    x_T : tensor, optional
        The start state at ``t_start`` (default: standard normal noise).
    t_start : int, optional
        First time (default ``T - 1``).
    clip : None, float or (lo, hi)
        Clamp ``x0_hat`` at every step.
    variance : {"posterior", "beta"}
        ``beta~_t`` or ``beta_t`` as the step variance.
    dtype, device : used when ``x_T`` is not given (default float32, CPU).

    Returns
    -------
    The sample ``x_0``, shape ``shape``.
    """
    schedule = check_schedule(schedule)
    check_prediction(prediction)
    clip = check_clip(clip)
    if variance not in ("posterior", "beta"):
        raise ValueError(f"variance must be 'posterior' or 'beta', got {variance!r}")
    first = schedule.timesteps(1, t_start)  # validates t_start
    grid = schedule.timesteps(int(first[0]) + 1, int(first[0]))  # every step t_start .. 0
    x, g = _initial(shape, schedule, generator, x_T, dtype, device)
    for i, t in enumerate(_loop(grid.tolist(), progress, "DDPM")):
        x0, _ = model_predictions(model, x, t, schedule, prediction, clip)
        x = ddpm_step(schedule, t, x, x0, generator=g, variance=variance)
        if callback is not None:
            callback(i, t, x, x0)
    return x


@torch.no_grad()
def ddim_sample(model, shape, schedule: NoiseSchedule, n_steps: int, eta: float = 0.0, *, prediction: str = "eps",
                generator=None, x_T=None, t_start: int | None = None, clip=None, eta_form: str = "ddim",
                dtype=None, device=None, progress: bool = False, callback=None) -> torch.Tensor:
    """DDIM sampling on the strided grid ``schedule.timesteps(n_steps, t_start)`` (Song et al. 2021).

    Each step goes from ``t`` to the next grid time (``-1`` after the last, i.e. to the clean
    image ``x0_hat``) with :func:`ddim_step`. ``eta = 0`` is deterministic: the output is a function
    of ``x_T`` alone. ``eta_form`` chooses DDIM's ``sigma(eta)`` (``"ddim"``) or DDIP's
    constant-total-variance mix ``sqrt(1 - abar') (eta xi + sqrt(1 - eta^2) eps)`` (``"ddip"``).
    Other parameters as in :func:`ddpm_sample`.
    """
    schedule = check_schedule(schedule)
    check_prediction(prediction)
    clip = check_clip(clip)
    eta = check_eta(eta, eta_form)
    grid = schedule.timesteps(n_steps, t_start).tolist()
    x, g = _initial(shape, schedule, generator, x_T, dtype, device)
    for i, t in enumerate(_loop(grid, progress, "DDIM")):
        t_next = grid[i + 1] if i + 1 < len(grid) else -1
        x0, eps = model_predictions(model, x, t, schedule, prediction, clip)
        x = ddim_step(schedule, t, t_next, x0, eps, eta, generator=g, eta_form=eta_form)
        if callback is not None:
            callback(i, t, x, x0)
    return x


@torch.no_grad()
def sdedit(model, x0_init: torch.Tensor, schedule: NoiseSchedule, t0: int, n_steps: int, eta: float = 0.0,
           generator=None, *, prediction: str = "eps", clip=None, eta_form: str = "ddim", progress: bool = False,
           callback=None) -> torch.Tensor:
    """SDEdit (Meng et al. 2022): ``x_t0 = sqrt(abar_t0) x0_init + sqrt(1 - abar_t0) xi``, then DDIM from ``t0``.

    ``x0_init`` is an image in the model's (normalised) space, shape ``(B, C, ...)``; the noise
    ``xi`` is drawn from ``generator`` first, then the DDIM steps ``schedule.timesteps(n_steps,
    t0)`` run as in :func:`ddim_sample`. This is DDIP's warm start (MLEM image, ``t0 = 200``).
    """
    schedule = check_schedule(schedule)
    if not isinstance(x0_init, torch.Tensor) or not x0_init.is_floating_point():
        raise TypeError("x0_init must be a floating-point torch tensor")
    check_prediction(prediction)
    eta = check_eta(eta, eta_form)
    grid = schedule.timesteps(n_steps, t0)  # validates t0 and n_steps before drawing anything
    g = make_generator(generator, x0_init.device)
    noise = randn(x0_init.shape, g, x0_init)
    x_t0 = schedule.q_sample(x0_init, int(grid[0]), noise)
    return ddim_sample(model, None, schedule, n_steps, eta, prediction=prediction, generator=g, x_T=x_t0,
                       t_start=t0, clip=clip, eta_form=eta_form, progress=progress, callback=callback)

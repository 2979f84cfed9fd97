"""Variance-preserving (DDPM) noise schedules: the tables and the closed-form conversions.

A :class:`NoiseSchedule` owns the discrete forward process of Ho et al. (2020, "Denoising
Diffusion Probabilistic Models", NeurIPS) for ``t = 0 .. T-1``::

    q(x_t | x_{t-1}) = N(sqrt(alpha_t) x_{t-1}, beta_t I),       alpha_t = 1 - beta_t
    q(x_t | x_0)     = N(sqrt(abar_t) x_0, (1 - abar_t) I),       abar_t  = prod_{s<=t} alpha_s

so ``t = 0`` is the first (least noisy) step and ``abar_{-1} = 1`` by convention (the clean
image). It knows nothing about networks (diffusers-style): it converts between the noise
``eps``, the clean estimate ``x0`` and the velocity ``v`` (Salimans & Ho 2022), gives the DDPM
posterior ``q(x_{t-1} | x_t, x_0)``, the signal-to-noise ratio and the strided, descending time
grids used by DDIM (Song et al. 2021, "Denoising Diffusion Implicit Models", ICLR) and partial
starts (SDEdit, Meng et al. 2022, ICLR).

Constructors: :meth:`NoiseSchedule.linear` (Ho et al. 2020: ``beta`` linear from 1e-4 to 0.02)
and :meth:`NoiseSchedule.cosine` (Nichol & Dhariwal 2021, "Improved Denoising Diffusion
Probabilistic Models", ICML: ``abar(t) = f(t)/f(0)``, ``f(t) = cos^2(pi/2 (t/T + s)/(1 + s))``,
``beta`` clipped at 0.999).

The tables are float64 tensors (``betas``, ``alphas``, ``alphas_cumprod``,
``alphas_cumprod_prev``); every method gathers them at a ``(B,)`` long tensor (or an int) of
times, on the input's device, cast to the input's dtype and shaped ``(B, 1, ..., 1)`` to
broadcast against ``(B, C, H, W)`` images.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch

from .._validation import as_positive_int

__all__ = ["NoiseSchedule"]


class NoiseSchedule:
    """A discrete variance-preserving noise schedule with ``T`` steps.

    Parameters
    ----------
    betas : 1D array or tensor of ``T`` floats in (0, 1)
        The per-step noise variances ``beta_t``, ``t = 0 .. T-1``.

    Attributes
    ----------
    num_steps, T : int
        The number of diffusion steps.
    betas, alphas, alphas_cumprod, alphas_cumprod_prev : torch.Tensor, float64, shape ``(T,)``
        ``beta_t``, ``alpha_t = 1 - beta_t``, ``abar_t`` and ``abar_{t-1}`` (with ``abar_{-1} = 1``).
    posterior_variance : torch.Tensor, float64, shape ``(T,)``
        ``beta~_t = beta_t (1 - abar_{t-1}) / (1 - abar_t)`` (0 at ``t = 0``).
    """

    def __init__(self, betas):
        if isinstance(betas, torch.Tensor):
            b = betas.detach().to(device="cpu", dtype=torch.float64)
        elif isinstance(betas, (np.ndarray, list, tuple)):
            try:
                b = torch.as_tensor(np.asarray(betas, dtype=np.float64))
            except (TypeError, ValueError):
                raise TypeError(f"betas must be a sequence of numbers, got {betas!r}") from None
        else:
            raise TypeError(f"betas must be a 1D array or tensor of floats, got {type(betas).__name__}")
        if b.ndim != 1 or b.numel() == 0:
            raise ValueError(f"betas must be a non-empty 1D sequence, got shape {tuple(b.shape)}")
        if not bool(torch.isfinite(b).all()):
            raise ValueError("betas must be finite (no NaN or inf)")
        if bool((b <= 0).any()) or bool((b >= 1).any()):
            raise ValueError(f"betas must lie in (0, 1); got min {float(b.min()):.4g}, max {float(b.max()):.4g}")
        self._init_tables(b.contiguous())

    def _init_tables(self, betas: torch.Tensor, device=None) -> None:
        self.betas = betas
        self.alphas = 1.0 - betas
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)
        self.alphas_cumprod_prev = torch.cat([torch.ones(1, dtype=betas.dtype, device=betas.device),
                                              self.alphas_cumprod[:-1]])
        self.posterior_variance = betas * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        self.num_steps = int(betas.numel())
        self._cache: dict = {}

    # -- constructors ------------------------------------------------------------------------------
    @classmethod
    def linear(cls, T: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> NoiseSchedule:
        """``beta_t`` linear from ``beta_start`` (t = 0) to ``beta_end`` (t = T-1) (Ho et al. 2020)."""
        T = as_positive_int("T", T)
        for name, value in (("beta_start", beta_start), ("beta_end", beta_end)):
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 < float(value) < 1.0:
                raise ValueError(f"{name} must be a number in (0, 1), got {value!r}")
        if T == 1:
            return cls(torch.tensor([float(beta_end)], dtype=torch.float64))
        return cls(torch.linspace(float(beta_start), float(beta_end), T, dtype=torch.float64))

    @classmethod
    def cosine(cls, T: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> NoiseSchedule:
        """The cosine schedule of Nichol & Dhariwal (2021).

        ``abar(u) = f(u) / f(0)`` with ``f(u) = cos^2(pi/2 (u/T + s)/(1 + s))``; ``beta_t = 1 -
        abar(t+1)/abar(t)`` for ``t = 0 .. T-1``, clipped at ``max_beta`` (so ``abar_{T-1}`` is
        about 0 but never exactly).
        """
        T = as_positive_int("T", T)
        if isinstance(s, bool) or not isinstance(s, numbers.Real) or not float(s) >= 0:
            raise ValueError(f"s must be a number >= 0, got {s!r}")
        if not 0.0 < float(max_beta) < 1.0:
            raise ValueError(f"max_beta must lie in (0, 1), got {max_beta!r}")
        u = torch.arange(T + 1, dtype=torch.float64) / T
        f = torch.cos((u + s) / (1.0 + s) * math.pi / 2.0) ** 2
        abar = f / f[0]
        betas = (1.0 - abar[1:] / abar[:-1]).clamp(min=1e-12, max=float(max_beta))
        return cls(betas)

    # -- bookkeeping -------------------------------------------------------------------------------
    @property
    def T(self) -> int:
        return self.num_steps

    def __len__(self) -> int:
        return self.num_steps

    def __repr__(self) -> str:
        return (f"NoiseSchedule(T={self.num_steps}, beta=[{float(self.betas[0]):.3g} .. {float(self.betas[-1]):.3g}], "
                f"abar_T-1={float(self.alphas_cumprod[-1]):.3g})")

    def to(self, device) -> NoiseSchedule:
        """A copy whose tables live on ``device`` (float64 where the device supports it)."""
        out = NoiseSchedule.__new__(NoiseSchedule)
        out._init_tables(self.betas.to(device))
        return out

    def _table(self, name: str, like: torch.Tensor) -> torch.Tensor:
        key = (name, like.device, like.dtype if like.is_floating_point() else torch.float64)
        if key not in self._cache:
            self._cache[key] = getattr(self, name).to(device=like.device, dtype=key[2])
        return self._cache[key]

    def check_t(self, t, batch: int | None = None, device=None) -> torch.Tensor:
        """Validate times and return them as a ``(B,)`` long tensor on ``device``.

        ``t`` may be an int (broadcast to ``batch``) or an integer tensor of shape ``()`` or
        ``(B,)`` with values in ``[0, T-1]``.
        """
        if isinstance(t, bool):
            raise TypeError(f"t must be an int or an integer tensor, got {t!r}")
        if isinstance(t, numbers.Integral):
            t = torch.tensor(int(t), dtype=torch.long, device=device)
        elif isinstance(t, torch.Tensor):
            if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
                raise TypeError(f"t must be an integer tensor, got dtype {t.dtype}")
            t = t.to(device=device if device is not None else t.device, dtype=torch.long)
        else:
            raise TypeError(f"t must be an int or an integer tensor, got {type(t).__name__}")
        if t.ndim > 1:
            raise ValueError(f"t must be a scalar or a (B,) tensor, got shape {tuple(t.shape)}")
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= self.num_steps):
            raise ValueError(f"t must lie in [0, {self.num_steps - 1}], got values in "
                             f"[{int(t.min())}, {int(t.max())}]")
        if batch is not None:
            if t.ndim == 0:
                t = t.expand(batch)
            elif t.shape[0] != batch:
                raise ValueError(f"t has {t.shape[0]} entries but the batch has {batch} samples")
        return t

    def _at(self, name: str, t, x: torch.Tensor) -> torch.Tensor:
        """``table[t]`` shaped ``(B, 1, ..., 1)`` (or a scalar for an int t) to broadcast on ``x``."""
        batch = x.shape[0] if x.ndim > 0 else None
        tt = self.check_t(t, batch=None, device=x.device)
        v = self._table(name, x)[tt]
        if v.ndim == 1:
            if batch is None or v.shape[0] != batch:
                raise ValueError(f"t has {v.shape[0]} entries but x has batch size {batch}")
            v = v.reshape((batch,) + (1,) * (x.ndim - 1))
        return v

    # -- forward process and conversions ------------------------------------------------------------
    def q_sample(self, x0: torch.Tensor, t, noise: torch.Tensor) -> torch.Tensor:
        """Draw from ``q(x_t | x_0)``: ``sqrt(abar_t) x0 + sqrt(1 - abar_t) noise``."""
        if noise.shape != x0.shape:
            raise ValueError(f"noise must have x0's shape {tuple(x0.shape)}, got {tuple(noise.shape)}")
        a = self._at("alphas_cumprod", t, x0)
        return a.sqrt() * x0 + (1.0 - a).sqrt() * noise

    def predict_x0_from_eps(self, x_t: torch.Tensor, t, eps: torch.Tensor) -> torch.Tensor:
        """``x0 = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)`` (Tweedie's estimate for the MMSE eps)."""
        a = self._at("alphas_cumprod", t, x_t)
        return (x_t - (1.0 - a).sqrt() * eps) / a.sqrt()

    def predict_eps_from_x0(self, x_t: torch.Tensor, t, x0: torch.Tensor) -> torch.Tensor:
        """``eps = (x_t - sqrt(abar_t) x0) / sqrt(1 - abar_t)``."""
        a = self._at("alphas_cumprod", t, x_t)
        return (x_t - a.sqrt() * x0) / (1.0 - a).sqrt()

    def predict_x0_from_v(self, x_t: torch.Tensor, t, v: torch.Tensor) -> torch.Tensor:
        """``x0 = sqrt(abar_t) x_t - sqrt(1 - abar_t) v`` with ``v = sqrt(abar) eps - sqrt(1 - abar) x0``."""
        a = self._at("alphas_cumprod", t, x_t)
        return a.sqrt() * x_t - (1.0 - a).sqrt() * v

    def predict_eps_from_v(self, x_t: torch.Tensor, t, v: torch.Tensor) -> torch.Tensor:
        """``eps = sqrt(1 - abar_t) x_t + sqrt(abar_t) v``."""
        a = self._at("alphas_cumprod", t, x_t)
        return (1.0 - a).sqrt() * x_t + a.sqrt() * v

    def get_v(self, x0: torch.Tensor, t, eps: torch.Tensor) -> torch.Tensor:
        """The velocity target ``v = sqrt(abar_t) eps - sqrt(1 - abar_t) x0`` (Salimans & Ho 2022)."""
        a = self._at("alphas_cumprod", t, x0)
        return a.sqrt() * eps - (1.0 - a).sqrt() * x0

    def posterior_mean_variance(self, x0: torch.Tensor, x_t: torch.Tensor, t):
        """The DDPM posterior ``q(x_{t-1} | x_t, x_0) = N(mean, variance I)`` (Ho et al. 2020, eq. 6-7).

        ``mean = beta_t sqrt(abar_{t-1}) / (1 - abar_t) x0 + (1 - abar_{t-1}) sqrt(alpha_t) /
        (1 - abar_t) x_t`` and ``variance = beta~_t``; at ``t = 0`` the mean is ``x0`` and the
        variance 0.

        Returns
        -------
        mean : tensor of ``x_t``'s shape
        variance : tensor broadcastable to it (``(B, 1, ..., 1)``)
        """
        if x0.shape != x_t.shape:
            raise ValueError(f"x0 and x_t must have the same shape, got {tuple(x0.shape)} and {tuple(x_t.shape)}")
        a = self._at("alphas_cumprod", t, x_t)
        a_prev = self._at("alphas_cumprod_prev", t, x_t)
        beta = self._at("betas", t, x_t)
        alpha = self._at("alphas", t, x_t)
        coef_x0 = beta * a_prev.sqrt() / (1.0 - a)
        coef_xt = (1.0 - a_prev) * alpha.sqrt() / (1.0 - a)
        variance = self._at("posterior_variance", t, x_t)
        return coef_x0 * x0 + coef_xt * x_t, variance

    def snr(self, t=None) -> torch.Tensor:
        """Signal-to-noise ratio ``abar_t / (1 - abar_t)`` (float64), for all steps or at ``t``."""
        table = self.alphas_cumprod / (1.0 - self.alphas_cumprod)
        if t is None:
            return table
        return table[self.check_t(t, device=table.device)]

    # -- time grids --------------------------------------------------------------------------------
    def timesteps(self, n_steps: int, t_start: int | None = None) -> torch.Tensor:
        """A strided, descending grid of ``n_steps`` distinct times from ``t_start`` down to 0.

        The grid is ``round(linspace(t_start, 0, n_steps))`` (for ``n_steps = 1``: ``[t_start]``),
        so it always starts at ``t_start`` (default ``T - 1``, pure noise) and ends at ``t = 0``,
        after which a sampler steps to the clean image (``abar_{-1} = 1``). The stride is exact
        when ``n_steps - 1`` divides ``t_start``: e.g. ``T = 1000, n_steps = 1000`` is every step
        and ``t_start = 200, n_steps = 201`` is the stride-1 grid ``200 .. 0`` of DDIP.

        Returns a long tensor of shape ``(n_steps,)`` on the CPU.
        """
        if t_start is None:
            t_start = self.num_steps - 1
        if isinstance(t_start, bool) or not isinstance(t_start, numbers.Integral):
            raise TypeError(f"t_start must be an integer in [0, {self.num_steps - 1}], got {t_start!r}")
        if not 0 <= int(t_start) < self.num_steps:
            raise ValueError(f"t_start must lie in [0, {self.num_steps - 1}] (T = {self.num_steps}), got {t_start}")
        t_start = int(t_start)
        if isinstance(n_steps, bool) or not isinstance(n_steps, numbers.Integral):
            raise TypeError(f"n_steps must be an integer >= 1, got {n_steps!r}")
        if not 1 <= int(n_steps) <= t_start + 1:
            raise ValueError(f"n_steps must lie in [1, {t_start + 1}] (at most t_start + 1 = {t_start + 1} distinct "
                             f"times of T = {self.num_steps}), got {n_steps}")
        n_steps = int(n_steps)
        if n_steps == 1:
            return torch.tensor([t_start], dtype=torch.long)
        grid = torch.linspace(float(t_start), 0.0, n_steps, dtype=torch.float64).round().long()
        return grid

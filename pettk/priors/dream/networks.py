"""DREAM's 4-step latent diffusion (schedule and deterministic reverse chain), its networks and the
transient stage modules used in training (:class:`DREAM` holds the bare networks)."""

from __future__ import annotations

import math

import torch
from torch import nn

from ...diffusion.nets.restormer import TransformerRestorer
from ...diffusion.schedules import NoiseSchedule
from .config import DREAMConfig, _positive_int

__all__ = ["latent_schedule", "latent_reverse"]


def latent_schedule(T: int = 4, beta_start: float = 0.1, beta_end: float = 0.99) -> NoiseSchedule:
    """DREAM's latent schedule: ``β_i = (√β_start + i/(T-1)·(√β_end - √β_start))²``, ``i = 0..T-1``.

    For ``T = 4``: ``β ≈ [0.100, 0.294, 0.591, 0.990]``, ``ᾱ ≈ [0.900, 0.635, 0.260, 0.0026]``.
    """
    T = _positive_int("T", T)
    steps = torch.linspace(0.0, 1.0, T, dtype=torch.float64) if T > 1 else torch.zeros(1, dtype=torch.float64)
    root = math.sqrt(beta_start) + steps * (math.sqrt(beta_end) - math.sqrt(beta_start))
    return NoiseSchedule(root ** 2)


def latent_reverse(denoiser, z_T: torch.Tensor, c: torch.Tensor, schedule: NoiseSchedule) -> torch.Tensor:
    """Run the deterministic reverse chain from ``z_T (B, D)`` to ``ẑ₀ (B, D)`` given ``c (B, D)``.

    ``ẑ₀ = denoiser(z_t, t, c)`` then ``z_{t-1} = μ̃_t(ẑ₀, z_t)`` (the DDPM posterior mean, no noise)
    for ``t = T-1 … 0``; the last step returns ``ẑ₀`` exactly. Differentiable (training unrolls it).
    """
    z = z_T
    for t in range(schedule.T - 1, -1, -1):
        tt = torch.full((z.shape[0],), t, dtype=torch.long, device=z.device)
        z0 = denoiser(z, tt, c)
        z, _ = schedule.posterior_mean_variance(z0, z, tt)
    return z


# --------------------------------------------------------------------------------------------
# Stage modules (transient wrappers used for training; DREAM holds the bare networks)
# --------------------------------------------------------------------------------------------
def _build_restorer(config: DREAMConfig) -> TransformerRestorer:
    if config.prior:
        return config.net.build_restorer()
    n = config.net
    return TransformerRestorer(n.in_channels, n.in_channels, n.dim, n.num_blocks, n.num_refinement_blocks, n.heads,
                               n.ffn_expansion, n.bias, prior_dim=0)


def _build_nets(config: DREAMConfig) -> nn.ModuleDict:
    if not config.prior:
        return nn.ModuleDict({"restorer": _build_restorer(config)})
    return config.net.build()


class _Stage1(nn.Module):
    def __init__(self, cpen: nn.Module | None, restorer: nn.Module):
        super().__init__()
        self.cpen, self.restorer = cpen, restorer

    def forward(self, lq, gt):
        z = None if self.cpen is None else self.cpen(lq, gt)
        return self.restorer(lq, z), z


class _LatentPrior(nn.Module):
    """CPEN-S2 + latent denoiser: ``(lq block, z_T) -> ẑ₀``."""

    def __init__(self, cpen: nn.Module, denoiser: nn.Module, schedule: NoiseSchedule):
        super().__init__()
        self.cpen, self.denoiser, self.schedule = cpen, denoiser, schedule

    def forward(self, lq, z_T):
        return latent_reverse(self.denoiser, z_T, self.cpen(lq), self.schedule)


class _Stage2(nn.Module):
    def __init__(self, prior: _LatentPrior, restorer: nn.Module):
        super().__init__()
        self.prior, self.restorer = prior, restorer

    def forward(self, lq, z_T):
        z = self.prior(lq, z_T)
        return self.restorer(lq, z), z

"""RED's training objectives (:func:`ren_loss`, :func:`dcn_loss`, with :func:`gaussian_ssim`) and its
intensity normalisation (:func:`normalise_red`, :func:`denormalise_red`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .config import RED_SCALE_FLOOR
from .process import ResidualSchedule, apply_net

__all__ = ["gaussian_ssim", "ren_loss", "dcn_loss", "normalise_red", "denormalise_red"]


# --------------------------------------------------------------------------------------------
# Losses
# --------------------------------------------------------------------------------------------
def gaussian_ssim(x: torch.Tensor, y: torch.Tensor, window: int = 11, sigma: float = 1.5, c1: float = 0.01 ** 2,
                  c2: float = 0.03 ** 2) -> torch.Tensor:
    """Mean SSIM of ``x, y (B, H, W)`` with a ``window×window`` Gaussian window, valid mode.

    RED's constants ``C1 = 0.01², C2 = 0.03²`` (data range 1, applied to [-1, 1] data).
    """
    coords = torch.arange(window, dtype=x.dtype, device=x.device) - (window - 1) / 2
    g = torch.exp(-coords ** 2 / (2 * sigma ** 2))
    g = g / g.sum()
    kernel = (g[:, None] * g[None, :])[None, None]
    a, b = x.unsqueeze(1), y.unsqueeze(1)

    def blur(z):
        return F.conv2d(z, kernel)

    mu_a, mu_b = blur(a), blur(b)
    s_aa = blur(a * a) - mu_a ** 2
    s_bb = blur(b * b) - mu_b ** 2
    s_ab = blur(a * b) - mu_a * mu_b
    num = (2 * mu_a * mu_b + c1) * (2 * s_ab + c2)
    den = (mu_a ** 2 + mu_b ** 2 + c1) * (s_aa + s_bb + c2)
    return (num / den).mean()


def _pair(batch: dict, part: slice) -> tuple[torch.Tensor, torch.Tensor]:
    x_T, x0 = batch["low"], batch["full"]
    if x_T.ndim == 4:
        x_T, x0 = x_T[:, 0], x0[:, 0]
    return x_T, x0


def ren_loss(schedule: ResidualSchedule, lambda_ssim: float = 1.0):
    """REN objective ``MSE(R_θ(x_k, k), R) + λ (1 - SSIM(x_k - alpha_k R_θ, x_0))`` (METHODS §3.4).

    ``batch["low"]``/``batch["full"]`` are ``(B, H, W)`` RED-normalised sinograms (``x_T``, ``x_0``).
    """

    def loss_fn(model, batch, generator, part):
        x_T, x0 = _pair(batch, part)
        k = torch.randint(1, schedule.T + 1, (x0.shape[0],), generator=generator)
        x_T, x0, k = x_T[part], x0[part], k[part].to(x0.device)
        residual = x_T - x0
        x_k = schedule.q_sample(x0, residual, k)
        pred = apply_net(model, x_k, k)
        loss = torch.mean((pred - residual) ** 2)
        if lambda_ssim:
            x0_hat = x_k - schedule.alpha_at(k, x_k) * pred
            loss = loss + lambda_ssim * (1 - gaussian_ssim(x0_hat, x0))
        return loss

    return loss_fn


def dcn_loss(schedule: ResidualSchedule, ren: torch.nn.Module, r_max: float = 10.0):
    """DCN objective ``MSE(D_φ(x̃_k, k), x_k - x̃_k)`` with ``x̃_k = x_0 + alpha_k r R_θ(x_k, k)``.

    The REN is frozen (no gradient) and sees the true state ``x_k`` at step ``k`` (proposal of
    METHODS §3.4); ``r ~ U(0, r_max)`` per sample.
    """
    ren.eval()
    for p in ren.parameters():
        p.requires_grad_(False)

    def loss_fn(model, batch, generator, part):
        x_T, x0 = _pair(batch, part)
        n = x0.shape[0]
        k = torch.randint(1, schedule.T + 1, (n,), generator=generator)
        r = torch.rand((n,), generator=generator, dtype=torch.float64) * r_max
        x_T, x0, k = x_T[part], x0[part], k[part].to(x0.device)
        r = r[part].to(x0.device, x0.dtype).reshape(-1, 1, 1)
        residual = x_T - x0
        x_k = schedule.q_sample(x0, residual, k)
        with torch.no_grad():
            r_hat = apply_net(ren, x_k, k)
        x_drift = x0 + schedule.alpha_at(k, x0) * r * r_hat
        pred = apply_net(model, x_drift, k)
        return torch.mean((pred - (x_k - x_drift)) ** 2)

    return loss_fn


# --------------------------------------------------------------------------------------------
# Normalisation
# --------------------------------------------------------------------------------------------
def normalise_red(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``y (B, H, W)`` (= DRF·y_low, counts) → ``(x_T in [-1, 1], v (B, 1, 1))``, ``v = max(y)`` floored at 0.1."""
    v = y.amax(dim=(-2, -1), keepdim=True).clamp_min(RED_SCALE_FLOOR)
    return 2 * y / v - 1, v


def denormalise_red(x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`normalise_red`, negatives clipped at 0."""
    return ((x + 1) / 2 * v).clamp_min(0)

"""DDIP's per-pixel MR guidance (:attr:`DDIPConfig.mr_disagreement`): the MR's classifier-free
guidance weight falls where the MR-free and MR-guided estimates disagree (PET-only lesions)."""

from __future__ import annotations

import math

import torch

from ..._filters import gaussian_filter

__all__ = ["mr_agreement_weight"]


def mr_agreement_weight(diff: torch.Tensor, t: int, tau: float, sigma_px: float, schedule,
                        prediction: str) -> torch.Tensor:
    """Per-pixel weight in (0, 1] of the MR guidance (``DDIPConfig.mr_disagreement``).

    ``diff`` is the MR-guided minus the MR-free network output ``(B, C, H, W)``; for an
    ε-network it becomes the difference of the Tweedie estimates, ``-sqrt((1 - ᾱ_t) / ᾱ_t) · Δε``.
    The difference is blurred in-plane (Gaussian, ``sigma_px`` pixels) and mapped to
    ``exp(-½ (d / tau)²)``; no gradient flows through the weight.
    """
    d = diff.detach()
    if prediction == "eps":
        abar = float(schedule.alphas_cumprod[t])
        d = d * -math.sqrt((1.0 - abar) / max(abar, 1e-12))
    if sigma_px > 0:
        d = gaussian_filter(d, (sigma_px, sigma_px), (-2, -1))
    return torch.exp(-0.5 * (d / tau) ** 2)

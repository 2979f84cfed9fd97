"""LegoPET's training objectives: the Haar wavelet term and PnPNet loss, and the cDPM loss with
condition dropout (classifier-free guidance)."""

from __future__ import annotations

import torch

from ...diffusion.guidance import drop_condition
from ...diffusion.nets import UNet
from ...diffusion.schedules import NoiseSchedule
from .._config import is_int

__all__ = ["haar_dwt2", "haar_idwt2", "dwt_loss", "pnpnet_loss", "cdpm_loss"]


def _check_even(name: str, x) -> None:
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point torch tensor (..., H, W)")
    if x.ndim < 2 or x.shape[-1] % 2 or x.shape[-2] % 2 or x.shape[-1] == 0 or x.shape[-2] == 0:
        raise ValueError(f"{name} must have shape (..., H, W) with H and W even and > 0, got {tuple(x.shape)}")


def haar_dwt2(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One level of the orthonormal 2D Haar wavelet transform.

    With ``a, b, c, d`` the top-left, top-right, bottom-left and bottom-right pixels of each 2×2
    block (rows along ``H``)::

        LL = (a + b + c + d) / 2     LH = (a - b + c - d) / 2   (detail across columns)
        HL = (a + b - c - d) / 2     HH = (a - b - c + d) / 2   (detail across rows / diagonal)

    The transform is orthonormal: ``Σ x² = Σ (LL² + LH² + HL² + HH²)`` and :func:`haar_idwt2`
    inverts it exactly.

    Parameters
    ----------
    x : tensor ``(..., H, W)``, ``H`` and ``W`` even

    Returns
    -------
    ``(LL, LH, HL, HH)``, each ``(..., H/2, W/2)``.
    """
    _check_even("x", x)
    a, b = x[..., 0::2, 0::2], x[..., 0::2, 1::2]
    c, d = x[..., 1::2, 0::2], x[..., 1::2, 1::2]
    return ((a + b + c + d) * 0.5, (a - b + c - d) * 0.5, (a + b - c - d) * 0.5, (a - b - c + d) * 0.5)


def haar_idwt2(ll: torch.Tensor, lh: torch.Tensor, hl: torch.Tensor, hh: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`haar_dwt2`: four ``(..., h, w)`` sub-bands → ``(..., 2h, 2w)``."""
    if not all(isinstance(t, torch.Tensor) for t in (ll, lh, hl, hh)):
        raise TypeError("haar_idwt2 takes four torch tensors (LL, LH, HL, HH)")
    if not (ll.shape == lh.shape == hl.shape == hh.shape) or ll.ndim < 2:
        raise ValueError(f"the four sub-bands must share one shape (..., h, w), got "
                         f"{[tuple(t.shape) for t in (ll, lh, hl, hh)]}")
    out = ll.new_empty(ll.shape[:-2] + (2 * ll.shape[-2], 2 * ll.shape[-1]))
    out[..., 0::2, 0::2] = (ll + lh + hl + hh) * 0.5
    out[..., 0::2, 1::2] = (ll - lh + hl - hh) * 0.5
    out[..., 1::2, 0::2] = (ll + lh - hl - hh) * 0.5
    out[..., 1::2, 1::2] = (ll - lh - hl + hh) * 0.5
    return out


def dwt_loss(pred: torch.Tensor, target: torch.Tensor, levels: int = 1) -> torch.Tensor:
    """Mean absolute difference of the high-frequency Haar sub-bands (LH, HL, HH), summed over levels.

    Level ``k + 1`` transforms level ``k``'s LL band. ``pred`` and ``target`` are ``(..., H, W)``
    with ``H, W`` divisible by ``2**levels``. Returns a scalar.
    """
    if not is_int(levels) or levels < 1:
        raise ValueError(f"levels must be an int >= 1, got {levels!r}")
    if not isinstance(pred, torch.Tensor) or not isinstance(target, torch.Tensor) or pred.shape != target.shape:
        raise ValueError("pred and target must be tensors of the same shape")
    loss = pred.new_zeros(())
    p, q = pred, target
    for _ in range(int(levels)):
        pb, qb = haar_dwt2(p), haar_dwt2(q)
        loss = loss + sum((pb[i] - qb[i]).abs().mean() for i in (1, 2, 3))
        p, q = pb[0], qb[0]
    return loss


def pnpnet_loss(dwt_weight: float = 0.1):
    """PnPNet objective ``MSE(P(s), x) + dwt_weight · dwt_loss(P(s), x)`` (METHODS §5.2).

    ``batch["sino"]`` and ``batch["image"]`` are ``(B, 1, H, W)`` canvas tensors; returns a
    ``loss_fn(model, batch, generator, part)`` for :class:`~pettk.diffusion.train.Trainer`.
    """
    w = float(dwt_weight)

    def loss_fn(model, batch, generator, part):
        s, x = batch["sino"][part], batch["image"][part]
        pred = model(s)
        loss = torch.mean((pred - x) ** 2)
        if w:
            loss = loss + w * dwt_loss(pred, x)
        return loss

    return loss_fn


def _zero_where(features: dict, dropped: torch.Tensor) -> dict:
    def zero(f):
        return torch.where(dropped.reshape((-1,) + (1,) * (f.ndim - 1)).to(f.device), torch.zeros_like(f), f)

    return {"encoder": [zero(f) for f in features["encoder"]], "middle": zero(features["middle"])}


def cdpm_loss(schedule: NoiseSchedule, pnpnet: UNet | None = None, p_dp: float = 0.1, prediction: str = "eps"):
    """The cDPM objective ``E ||eps_theta(x_t, t, C) - eps||²`` with condition dropout (METHODS §5.3).

    ``C`` is the canvas sinogram ``batch["sino"]`` plus, with a ``pnpnet``, its frozen encoder and
    middle feature maps. With probability ``p_dp`` per sample the *whole* condition is replaced by
    zeros: the sinogram by :func:`~pettk.diffusion.guidance.drop_condition`, the feature maps by
    zero maps (not the PnPNet's response to a zero sinogram). Times, noise and the drop decisions
    are drawn for the global batch from the trainer's generator. ``prediction="x0"`` regresses the
    clean image instead.
    """
    if pnpnet is not None:
        pnpnet.eval()
        for p in pnpnet.parameters():
            p.requires_grad_(False)
    p_dp = float(p_dp)

    def loss_fn(model, batch, generator, part):
        x0, s = batch["image"], batch["sino"]
        n = x0.shape[0]
        t = torch.randint(0, schedule.T, (n,), generator=generator)
        noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype)
        s_dropped, dropped = drop_condition(s, p_dp, generator)
        x0, t, noise = x0[part], t[part].to(x0.device), noise[part].to(x0.device)
        cond, dropped = s_dropped[part], dropped[part]
        features = None
        if pnpnet is not None:
            with torch.no_grad():
                features = _zero_where(pnpnet.encoder_features(s[part]), dropped)
        x_t = schedule.q_sample(x0, t, noise)
        pred = model(x_t, t, cond=cond, features=features)
        return torch.mean((pred - (noise if prediction == "eps" else x0)) ** 2)

    return loss_fn

"""RED's residual process: the α/β schedules (:class:`ResidualSchedule`), the networks on padded
sinograms (:func:`apply_net`) and the reverse chain (:func:`red_sample`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

__all__ = ["ResidualSchedule", "apply_net", "red_sample"]


# --------------------------------------------------------------------------------------------
# Schedules and the process
# --------------------------------------------------------------------------------------------
class ResidualSchedule:
    """RED's α (residual fraction) and β (drift-correction weight) schedules over ``k = 0..T``.

    ``alpha[k] = max(1 - (1 - k/T)², 1e-4)`` rises from 1e-4 at ``k = 0`` to 1 at ``k = T``
    (concave); ``beta[k] = (k/T)³ / Σ_j (j/T)³`` sums to 1 with maximum ≈ 4/T at ``k = T``.
    Both are float64 tensors of length ``T + 1``.
    """

    def __init__(self, T: int):
        if isinstance(T, bool) or not isinstance(T, int) or T < 1:
            raise ValueError(f"T must be a positive int, got {T!r}")
        self.T = T
        k = torch.arange(T + 1, dtype=torch.float64)
        s = 1.0 - k / T
        self.alpha = torch.clamp(1.0 - s ** 2, min=1e-4)
        cubic = (k / T) ** 3
        self.beta = cubic / cubic.sum()

    def _gather(self, table: torch.Tensor, k, like: torch.Tensor) -> torch.Tensor:
        k = torch.as_tensor(k, device=table.device).long()
        out = table[k].to(like.device, like.dtype)
        return out.reshape(out.shape + (1,) * (like.ndim - out.ndim))

    def alpha_at(self, k, like: torch.Tensor) -> torch.Tensor:
        """``alpha[k]`` broadcastable against ``like`` (``k`` a scalar or ``(B,)`` ints)."""
        return self._gather(self.alpha, k, like)

    def beta_at(self, k, like: torch.Tensor) -> torch.Tensor:
        return self._gather(self.beta, k, like)

    def q_sample(self, x0: torch.Tensor, residual: torch.Tensor, k) -> torch.Tensor:
        """Forward (degradation) path ``x_k = x_0 + alpha_k R`` (no noise)."""
        return x0 + self.alpha_at(k, x0) * residual

    def timesteps(self, steps: int) -> list[int]:
        """The reverse-process indices ``T, T-Δ, ..., Δ`` for ``steps`` steps."""
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1 or self.T % steps:
            raise ValueError(f"steps must be a positive divisor of T={self.T}, got {steps!r}")
        delta = self.T // steps
        return list(range(self.T, 0, -delta))


def _padding(size: int, factor: int) -> tuple[int, int]:
    extra = (-size) % factor
    return extra // 2, extra - extra // 2


def apply_net(net: torch.nn.Module, x: torch.Tensor, k) -> torch.Tensor:
    """Run a REN/DCN on sinograms ``x (B, H, W)`` at steps ``k`` (scalar or ``(B,)``).

    ``H, W`` not divisible by the network's ``2**(levels-1)`` are zero-padded symmetrically
    before the network and cropped after. Returns ``(B, H, W)``.
    """
    factor = getattr(net, "downsample_factor", None)
    if factor is None:
        factor = getattr(getattr(net, "module", None), "downsample_factor", 1)
    h, w = x.shape[-2:]
    (top, bottom), (left, right) = _padding(h, factor), _padding(w, factor)
    z = F.pad(x.unsqueeze(1), (left, right, top, bottom))
    t = torch.as_tensor(k, device=x.device)
    if t.ndim == 0:
        t = t.expand(x.shape[0])
    out = net(z, t)[:, 0]
    return out[..., top:top + h, left:left + w]


@torch.no_grad()
def red_sample(ren, dcn, x_T: torch.Tensor, schedule: ResidualSchedule, steps: int, *, progress: bool = False):
    """RED's reverse process from the normalised low-dose sinogram ``x_T (B, H, W)``.

    Parameters
    ----------
    ren : callable ``(x (B, H, W), k (B,)) -> R (B, H, W)``
        Residual estimate (e.g. ``lambda x, k: apply_net(net, x, k)``).
    dcn : callable or None
        Drift correction ``(x̂, k) -> drift``; ``None`` runs without drift correction.
    schedule : ResidualSchedule
    steps : int
        ``S``; stride ``Δ = T/S``.

    Returns
    -------
    ``x_0`` estimate ``(B, H, W)`` in the normalised domain.
    """
    x = x_T
    delta = schedule.T // steps
    for k in tqdm(schedule.timesteps(steps), desc="RED", disable=not progress, leave=False):
        kk = torch.full((x.shape[0],), k, device=x.device, dtype=torch.long)
        step = schedule.alpha_at(k, x) - schedule.alpha_at(k - delta, x)
        x = x - step * ren(x, kk)
        if dcn is not None and k - delta > 0:  # beta_0 = 0: the last correction is a no-op
            x = x + schedule.beta_at(k - delta, x) * dcn(x, kk - delta)
    return x

"""RED: residual estimation diffusion for low-dose PET sinograms (Ai et al., MedIA 2025).

A deterministic, noise-free "diffusion" between the normalised low-dose sinogram (``x_T``) and
the full-dose sinogram (``x_0``), see METHODS.md §3:

- schedules (:class:`ResidualSchedule`): ``s_k = 1 - k/T``, ``alpha_k = max(1 - s_k², 1e-4)``,
  ``beta_k = (k/T)³ / Σ_j (j/T)³``;
- forward path: ``x_k = x_0 + alpha_k R`` with the residual ``R = x_T - x_0``;
- the residual-estimation network REN ``R_θ(x_k, k)`` and the drift-correction network DCN
  ``D_φ(x̂, k)`` are both :class:`~pettk.diffusion.nets.ConvNeXtUNet` (presets ``RED_*``);
- reverse process with ``S`` steps of stride ``Δ = T/S``:
  ``x̂_{k-Δ} = x_k - (alpha_k - alpha_{k-Δ}) R_θ(x_k, k)`` then
  ``x_{k-Δ} = x̂_{k-Δ} + beta_{k-Δ} D_φ(x̂_{k-Δ}, k-Δ)`` (drift *added*, DCN time ``k-Δ``);
- two-stage training (:func:`train_red`): REN with ``MSE + λ(1 - SSIM)`` (11×11 Gaussian SSIM on
  [-1, 1] data), then the DCN on drifted states ``x_0 + alpha_k r R̂`` with ``r ~ U(0, r_max)``
  and the REN frozen and fed ``(x_k, k)`` (the pettk proposal of §3.4).

:class:`RED` is a :class:`~pettk.priors.base.SinogramRestorer`: ``restore(y_low, drf)`` takes raw
low-dose counts, normalises ``DRF·y_low`` by ``v = max(DRF·y_low)`` (floored at 0.1) to [-1, 1],
runs the reverse process and returns the de-normalised sinogram, clipped at 0. One model per DRF.
Reconstruct with :func:`pettk.priors.reconstruct` (OSEM by default, FBP optional).

Reference: Ai, Huang, Chen, Shi, Li, Wang, Liu, "RED: Residual estimation diffusion for low-dose
PET sinogram reconstruction", Medical Image Analysis (2025).

Modules (one job each): :mod:`.config` (:class:`REDConfig` and presets), :mod:`.process` (schedules,
the networks on sinograms, sampling), :mod:`.losses` (objectives, normalisation), :mod:`.model`
(:class:`RED`: restore, save/load), :mod:`.training` (:func:`train_red`).
"""

from .config import RED_SCALE_FLOOR, REDConfig
from .losses import dcn_loss, denormalise_red, gaussian_ssim, normalise_red, ren_loss
from .model import RED
from .process import ResidualSchedule, apply_net, red_sample
from .training import train_red

__all__ = ["REDConfig", "ResidualSchedule", "RED", "train_red", "ren_loss", "dcn_loss", "red_sample", "apply_net",
           "gaussian_ssim", "normalise_red", "denormalise_red", "RED_SCALE_FLOOR"]

"""RED's configuration (:class:`REDConfig`, declared with :mod:`pettk.priors._config`) and its presets."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ...diffusion.nets import RED_FULL, RED_GPU, RED_TINY, ConvNeXtUNetConfig
from ...diffusion.train import TrainConfig
from .._config import Bool, Int, Nested, PriorConfig, Real, checked

__all__ = ["REDConfig", "RED_SCALE_FLOOR"]

#: The normalisation factor ``v = max(DRF·y_low)`` is floored at this value (METHODS §3.1).
RED_SCALE_FLOOR = 0.1


@dataclass(frozen=True)
class REDConfig(PriorConfig):
    """RED's networks, process and optimisation (METHODS §3.8). JSON-serialisable via :meth:`to_dict`.

    Attributes
    ----------
    net : ConvNeXtUNetConfig
        REN and DCN architecture (two networks of this configuration).
    T : int
        Number of process steps (index ``k = 0..T``).
    sampling_steps : int
        Reverse steps ``S`` (``T`` must be divisible by ``S``).
    ren_steps, dcn_steps : int
        Optimiser steps of the two training stages.
    ren_lr, dcn_lr : float
        AdamW learning rates.
    batch_size : int
    r_max : float
        Drift scale range ``r ~ U(0, r_max)`` of DCN training.
    lambda_ssim : float
        Weight of ``1 - SSIM`` in the REN loss.
    drf : float
        The dose-reduction factor this model is for (one model per DRF).
    crop_size : int, optional
        Train both networks on random ``crop_size``² windows of the sinograms (patch training, as
        DREAM's crops; the networks are convolutional with linear attention and restore whole
        sinograms). ``None``: whole sinograms (the paper). Measured reason for crops: a whole
        224 × 129 mmr-like sinogram costs 4.6× a 64 × 97 one per step on the CPU.
    augment : bool
        Reverse both sinogram axes (views and radial bins) of a random half of each batch, as
        DREAM's augmentation.
    weight_decay, ema_decay, grad_clip, lr_schedule, warmup_steps : optimisation details
        (passed to :class:`~pettk.diffusion.train.TrainConfig`; AdamW's default weight decay
        0.01 as in the released code).
    checkpoint_every : int
        Optimiser steps between periodic trainer checkpoints of a stage (0: only at the end of a
        stage or chunk), so that a process killed without warning (SIGKILL) loses at most this many
        steps; ``resume=True`` continues from the last one. No effect on the training result.
    seed : int
    """

    _name = "RED"

    net: ConvNeXtUNetConfig = checked(RED_TINY, Nested(ConvNeXtUNetConfig))
    T: int = checked(50, Int(1))
    sampling_steps: int = checked(10, Int(1))
    ren_steps: int = checked(600, Int(1))
    dcn_steps: int = checked(300, Int(0))
    ren_lr: float = checked(1e-3, Real(0.0, min_open=True))
    dcn_lr: float = checked(1e-3, Real(0.0, min_open=True))
    batch_size: int = checked(8, Int(1))
    r_max: float = checked(10.0, Real(0.0, min_open=True))
    lambda_ssim: float = checked(1.0, Real(0.0))
    drf: float = checked(20.0, Real(1.0))
    crop_size: int | None = checked(None, Int(8, optional=True))
    augment: bool = checked(False, Bool())
    weight_decay: float = 0.01
    ema_decay: float = 0.0
    grad_clip: float | None = 1.0
    lr_schedule: str = "constant"
    warmup_steps: int = 0
    checkpoint_every: int = checked(200, Int(0))
    seed: int = 0

    TINY = None  # set below (dataclass fields cannot default to instances of the class itself)
    GPU = None
    FULL = None

    def _check(self) -> None:
        if self.T % self.sampling_steps:
            raise ValueError(f"T={self.T} must be divisible by sampling_steps={self.sampling_steps}")

    @classmethod
    def from_dict(cls, d: dict, base: REDConfig | None = None) -> REDConfig:
        """Inverse of :meth:`to_dict` (see :meth:`PriorConfig.from_dict`); keys that are no field are
        ignored, as in checkpoints written by older versions."""
        if isinstance(d, dict):
            known = {f.name for f in dataclasses.fields(cls)}
            d = {k: v for k, v in d.items() if k in known}
        return super().from_dict(d, base)

    def train_config(self, stage: str) -> TrainConfig:
        """The :class:`TrainConfig` of stage ``"ren"`` or ``"dcn"``."""
        steps, lr = (self.ren_steps, self.ren_lr) if stage == "ren" else (self.dcn_steps, self.dcn_lr)
        return TrainConfig(steps=steps, batch_size=self.batch_size, lr=lr, weight_decay=self.weight_decay,
                           lr_schedule=self.lr_schedule, warmup_steps=self.warmup_steps, ema_decay=self.ema_decay,
                           grad_clip=self.grad_clip, seed=self.seed + (0 if stage == "ren" else 1), log_every=10,
                           checkpoint_every=self.checkpoint_every)


REDConfig.TINY = REDConfig()
REDConfig.GPU = REDConfig(net=RED_GPU, T=500, sampling_steps=50, ren_steps=20_000, dcn_steps=10_000, ren_lr=1e-4,
                          dcn_lr=1e-4, ema_decay=0.999, checkpoint_every=1000)
REDConfig.FULL = REDConfig(net=RED_FULL, T=500, sampling_steps=50, ren_steps=500_000, dcn_steps=500_000,
                           ren_lr=2e-5, dcn_lr=5e-5, ema_decay=0.999, checkpoint_every=5000)

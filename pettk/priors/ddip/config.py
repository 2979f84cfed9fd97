"""DDIP's configuration (:class:`DDIPConfig`, declared with :mod:`pettk.priors._config`) and its
presets."""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import torch

from ...diffusion.nets import DDIP_FULL, DDIP_GPU, DDIP_TINY, UNetConfig
from ...diffusion.schedules import NoiseSchedule
from ...diffusion.train import TrainConfig
from .._config import Choice, Int, Nested, PriorConfig, Real, checked

__all__ = ["DDIPConfig", "LOSSES"]

LOSSES = ("image", "sinogram")


def _count(minimum: int) -> Int:
    return Int(minimum, type_error=True)


def _number(minimum: float = 0.0, maximum: float | None = None, **kwargs) -> Real:
    return Real(minimum, maximum, type_error=True, **kwargs)


@dataclass(frozen=True)
class DDIPConfig(PriorConfig):
    """DDIP's network, pretraining and reconstruction settings (METHODS §4.7). JSON-serialisable.

    Attributes
    ----------
    net : UNetConfig
        Score network. ``in_channels`` is the number of slices per sample (1: 2D, 3: 2.5D);
        ``cond_channels`` must be 0 (unconditional) or ``in_channels`` (the MR slices);
        ``out_channels`` is ``in_channels`` or ``2·in_channels`` (learned variance, only the
        first half is used and trained).
    schedule : {"linear", "cosine"}
    T : int
        Diffusion steps (linear β from 1e-4 to 0.02 for ``"linear"``).
    prediction : {"eps", "x0"}
        What the network predicts (DDIP, ``GPU`` and ``FULL``: ``"eps"``). ``TINY`` predicts
        ``x0``: after ~500 CPU steps a tiny ε-model's Tweedie estimate at ``t ≈ 100`` is still
        noisy (a few dB worse), as for :data:`pettk.diffusion.image_model.TINY`.
    train_steps, batch_size, lr, weight_decay, ema_decay, lr_schedule, warmup_steps, grad_clip :
        Pretraining (AdamW, see :class:`~pettk.diffusion.train.TrainConfig`). ``TINY`` trains 500
        steps (METHODS proposes ~1500): longer, the tiny model maps the MR to the FDG contrast so
        confidently that it adapts worse to other tracers (-1.4 dB out of distribution at 1500).
    augment : bool
        Also train on the left-right mirrored images.
    target_mean : float
        Normalised images have this mean inside the head mask (see :meth:`intensity_scale`).
    mask_threshold : float
        The head mask is ``mr > mask_threshold · max(mr)`` (conditional models) or
        ``image > mask_threshold · q99(image)`` (unconditional ones).
    init_iterations : int
        MLEM iterations of the warm start (DDIP: 20).
    start_t : int
        SDEdit start time ``t₀`` (DDIP: 200 of 1000).
    steps : int
        Sampling steps from ``start_t`` to 0 (DDIP: 200, i.e. stride 1).
    adapt_steps : int
        Optimiser steps of the fine-tuning stage at every sampling step (DDIP: 2; 0 = no adaptation).
    adapt_lr, adapt_weight_decay, adapt_grad_clip : float
        Fresh AdamW per sampling step (DDIP: lr 5e-4, torch's default weight decay 0.01, clip 1.0).
        ``TINY`` uses lr 2e-3: it has 20 sampling steps instead of 200 (on the out-of-distribution
        test slice 5e-4 gains 0.9 dB over MLEM-20, 2e-3 1.8 dB, 5e-3 starts to fit the noise).
    lora_rank, lora_alpha, lora_dropout : LoRA on every Linear/Conv inside the ResBlocks and
        attention blocks (DDIP: r = 4, scale 1; ``lora_alpha=None`` means ``alpha = rank``).
    train_biases : bool
        Also fine-tune the non-embedding biases (DDIP: yes).
    em_iterations : int
        Penalised-EM iterations per target (DDIP: 5).
    final_em_iterations : int
        Penalised-EM iterations (the same anchor weight ``beta``) from the last Tweedie estimate
        ``x̂₀``, anchored at it, after sampling: the measured data restore what the network's
        final estimate lost, e.g. the contrast of PET-only lesions an MR-conditioned network
        smooths away. 0 (DDIP) returns ``x̂₀`` itself.
    beta : float
        Dimensionless anchor weight of the HQS step (DDIP: 0.01); see :meth:`DDIP.reconstruct`.
    eta : float
        DDIM-η (DDIP's constant-variance form, 0.85).
    loss : {"image", "sinogram"}
        Fine-tuning loss: ``mean((x̂₀ - x_PEM)²)`` (HQS, default) or the Poisson deviance of the
        sinogram through the projector.
    mc_slices : int
        3D volumes: slices drawn per fine-tuning step (Monte Carlo over slices, DDIP3D: 3).
    mr_dropout, mr_mismatch : float
        Pretraining of an MR-conditioned model: probabilities that a sample's MR is replaced by the
        null condition (zeros, so that the network also predicts without MR and can be guided) or by
        another sample's MR (so that it learns not to copy MR structure the PET does not show).
        0 (the paper's recipe) keeps the MR always.
    mr_guidance : float
        Reconstruction: ``out = out(no MR) + mr_guidance · (out(MR) - out(no MR))``; 1 is the plain
        conditional model, 0 ignores the MR. Values other than 1 need ``mr_dropout > 0``.
    mr_fallback : bool
        Reconstruction: before sampling, compare the Poisson deviance of the MR-guided and the
        MR-free Tweedie estimates of the start image against the data and keep the MR only when it
        fits the data at least as well; the intensity scale then comes from a head mask of the PET
        start image, not of the MR. Needs ``mr_dropout > 0``. ``last_info["mr_guidance"]`` records
        the choice.
    checkpoint_every : int
        Pretraining steps between periodic trainer checkpoints (0: only at the end of a chunk), so
        that a process killed without warning (SIGKILL) loses at most this many steps; no effect
        on the training result.
    seed : int
        Pretraining seed and the default reconstruction seed.
    """

    _name = "DDIP"

    net: UNetConfig = checked(DDIP_TINY, Nested(UNetConfig, unknown="unknown DDIP net fields"))
    schedule: str = checked("linear", Choice(("linear", "cosine")))
    T: int = checked(1000, _count(1))
    prediction: str = checked("x0", Choice(("eps", "x0")))
    train_steps: int = checked(500, _count(1))
    batch_size: int = checked(16, _count(1))
    lr: float = checked(2e-3, _number(min_open=True))
    weight_decay: float = checked(0.0, _number())
    ema_decay: float = checked(0.995, _number(0.0, 1.0, max_open=True))
    lr_schedule: str = checked("cosine", Choice(("constant", "cosine", "linear")))
    warmup_steps: int = checked(50, _count(0))
    grad_clip: float | None = checked(1.0, _number(min_open=True, optional=True))
    augment: bool = True
    target_mean: float = checked(0.2, _number(0.0, 1.0, min_open=True, max_open=True))
    mask_threshold: float = checked(0.2, _number(0.0, 1.0, max_open=True))
    init_iterations: int = checked(20, _count(1))
    start_t: int = checked(100, _count(0))
    steps: int = checked(20, _count(1))
    adapt_steps: int = checked(1, _count(0))
    adapt_lr: float = checked(2e-3, _number(min_open=True))
    adapt_weight_decay: float = checked(0.01, _number())
    adapt_grad_clip: float | None = checked(1.0, _number(min_open=True, optional=True))
    lora_rank: int = checked(2, _count(1))
    lora_alpha: float | None = checked(None, _number(min_open=True, optional=True))
    lora_dropout: float = checked(0.0, _number(0.0, 1.0, max_open=True))
    train_biases: bool = True
    em_iterations: int = checked(2, _count(1))
    final_em_iterations: int = checked(0, _count(0))
    beta: float = checked(0.01, _number())
    eta: float = checked(0.85, _number(0.0, 1.0))
    loss: str = checked("image", Choice(LOSSES))
    mc_slices: int = checked(3, _count(1))
    mr_dropout: float = checked(0.0, _number(0.0, 1.0))
    mr_mismatch: float = checked(0.0, _number(0.0, 1.0))
    mr_guidance: float = checked(1.0, _number())
    mr_fallback: bool = False
    checkpoint_every: int = checked(200, _count(0))
    seed: int = checked(0, _count(0))

    TINY = None  # set below (dataclass fields cannot default to instances of the class itself)
    GPU = None
    FULL = None

    # -- validation -----------------------------------------------------------------------------
    @property
    def slices(self) -> int:
        """Slices per network sample (1: 2D, 3: 2.5D)."""
        return self.net.in_channels

    @property
    def conditional(self) -> bool:
        """Whether the network takes the MR slices as extra input channels."""
        return self.net.cond_channels > 0

    def _check(self) -> None:
        """The network's channels (slices, MR condition, learned variance) and the SDEdit start."""
        c = self.net.in_channels
        if c not in (1, 3):
            raise ValueError(f"net.in_channels must be 1 (2D) or 3 (2.5D, adjacent slices), got {c}")
        if self.net.cond_channels not in (0, c):
            raise ValueError(f"net.cond_channels must be 0 (unconditional) or in_channels={c} (MR slices), "
                             f"got {self.net.cond_channels}")
        if self.net.out_channels not in (c, 2 * c):
            raise ValueError(f"net.out_channels must be in_channels={c} or 2*in_channels={2 * c} (learned "
                             f"variance), got {self.net.out_channels}")
        if not self.net.time_embedding:
            raise ValueError("net.time_embedding must be True for a diffusion model")
        if not self.start_t < self.T:
            raise ValueError(f"start_t must be < T={self.T}, got {self.start_t}")
        if not self.steps <= self.start_t + 1:
            raise ValueError(f"steps must be <= start_t + 1 = {self.start_t + 1}, got {self.steps}")
        if self.mr_dropout + self.mr_mismatch > 1:
            raise ValueError(f"mr_dropout + mr_mismatch must be <= 1, got {self.mr_dropout} + {self.mr_mismatch}")
        if (self.mr_dropout or self.mr_mismatch) and not self.conditional:
            raise ValueError("mr_dropout and mr_mismatch are for an MR-conditioned net (net.cond_channels > 0)")
        if (self.mr_guidance != 1.0 or self.mr_fallback) and not self.mr_dropout > 0:
            raise ValueError("mr_guidance != 1 and mr_fallback need a model pretrained with mr_dropout > 0 (the "
                             "network must know the null condition)")

    # -- (de)serialisation ------------------------------------------------------------------------
    @classmethod
    def from_json(cls, source) -> DDIPConfig:
        """Read a configuration from a JSON file path, a JSON string or a dict (see :meth:`from_dict`:
        a partial ``"net"`` overrides :data:`~pettk.diffusion.nets.configs.DDIP_TINY`).

        A string naming one of ``"tiny"``, ``"gpu"``, ``"full"`` returns that preset.
        """
        if isinstance(source, dict):
            return cls.from_dict(source)
        if isinstance(source, str) and source.lower() in ("tiny", "gpu", "full"):
            return getattr(cls, source.upper())
        return super().from_json(source)

    # -- pieces ---------------------------------------------------------------------------------
    def build_schedule(self) -> NoiseSchedule:
        return NoiseSchedule.linear(self.T) if self.schedule == "linear" else NoiseSchedule.cosine(self.T)

    def train_config(self) -> TrainConfig:
        return TrainConfig(steps=self.train_steps, batch_size=self.batch_size, lr=self.lr,
                           weight_decay=self.weight_decay, lr_schedule=self.lr_schedule,
                           warmup_steps=self.warmup_steps, ema_decay=self.ema_decay, grad_clip=self.grad_clip,
                           seed=self.seed, log_every=10, checkpoint_every=self.checkpoint_every)

    def head_mask(self, image: torch.Tensor, mr: torch.Tensor | None) -> torch.Tensor:
        """The head mask ``(..., H, W)`` used for the intensity scale (from the MR when given)."""
        dims = (-2, -1)
        if mr is not None:
            peak = mr.amax(dim=dims, keepdim=True)
            return mr > self.mask_threshold * peak
        flat = image.flatten(-2)
        q = torch.quantile(flat.to(torch.float32), 0.99, dim=-1).to(image.dtype)[..., None, None]
        return image > self.mask_threshold * q

    def intensity_scale(self, image: torch.Tensor, mr: torch.Tensor | None = None) -> torch.Tensor:
        """Activity per unit normalised value of each image ``(..., H, W)`` → ``(...)``.

        ``scale = mean(image inside the head mask) / target_mean``; images whose mask is empty
        or whose mean is not positive fall back to the mean over the whole image (then 1).
        """
        mask = self.head_mask(image, mr)
        counts = mask.sum(dim=(-2, -1))
        inside = torch.where(mask, image, torch.zeros_like(image)).sum(dim=(-2, -1)) / counts.clamp_min(1)
        whole = image.mean(dim=(-2, -1))
        value = torch.where((counts > 0) & (inside > 0), inside, whole)
        value = torch.where(value > 0, value, torch.ones_like(value))
        return value / self.target_mean


def _int(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {value!r} ({type(value).__name__})")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


DDIPConfig.TINY = DDIPConfig()
DDIPConfig.GPU = DDIPConfig(net=DDIP_GPU, prediction="eps", train_steps=20_000, batch_size=16, lr=1e-4,
                            ema_decay=0.999, lr_schedule="constant", warmup_steps=500, start_t=200, steps=100,
                            adapt_steps=2, adapt_lr=5e-4, lora_rank=4, lora_dropout=0.1, em_iterations=5,
                            checkpoint_every=1000)
DDIPConfig.FULL = DDIPConfig(net=DDIP_FULL, prediction="eps", train_steps=1_100_000, batch_size=16, lr=1e-4,
                             ema_decay=0.9999, lr_schedule="constant", warmup_steps=1000, start_t=200, steps=201,
                             adapt_steps=2, adapt_lr=5e-4, lora_rank=4, lora_dropout=0.1, em_iterations=5,
                             checkpoint_every=5000)

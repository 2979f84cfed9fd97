"""LegoPET: hierarchical feature-guided, sinogram-conditioned image diffusion (Sun & Mawlawi, ISBI 2025).

LegoPET reconstructs a PET image directly from its sinogram with two networks of one U-Net
backbone (:class:`~pettk.diffusion.nets.LegoPETNetsConfig`, METHODS.md §5):

- **PnPNet** ``P(s) -> x``: a plain (time-free) U-Net mapping the sinogram to the image, trained
  first with ``MSE + 0.1 · L_DWT`` (:func:`pnpnet_loss`; ``L_DWT`` is the mean absolute difference
  of the LH, HL and HH sub-bands of a one-level orthonormal Haar transform, :func:`haar_dwt2`),
  then **frozen**;
- **cDPM** ``eps_theta(x_t, t, C)``: an ε-predicting DDPM U-Net (x0-predicting in the tiny CPU
  preset, see :attr:`LegoPETConfig.TINY`) whose input is ``x_t`` with the sinogram concatenated
  (``C = {s, b_d, b_m}``); the frozen PnPNet's encoder-level outputs
  ``b_d`` and middle output ``b_m`` (:meth:`UNet.encoder_features`) are *added* to the cDPM's
  matching activations (the U-Net's ``features`` hook), so the guidance adds no trainable
  parameter: LegoPET and the plain cDPM (``LegoPETConfig(features=False)``, the ablation) have
  the same trainable parameter count, the paper's 35.71 M in the full configuration.
- **Classifier-free guidance**: in training the whole condition (sinogram *and* injected feature
  maps) is replaced by zeros with probability ``p_dp`` (:func:`cdpm_loss`); sampling uses
  ``eps~ = (1 + λ) eps(x_t, t, C) - λ eps(x_t, t, ∅)`` (:class:`~pettk.diffusion.guidance.CFGModel`),
  with DDPM ancestral steps (the paper) or DDIM (practical).
- **Data consistency** (a pettk extension, off by default, ``dc_iterations > 0``): a few
  (penalised) EM iterations with the measurement's :class:`~pettk.physics.ForwardModel` correct
  ``x0_hat`` at every sampling step (:func:`~pettk.diffusion.posterior.diffpir_sample` with a
  data step built on :func:`~pettk.diffusion.posterior.penalised_em_step`).

Intensities and sizes
---------------------
Images are mapped to [-1, 1] by the training set's maximum activity ``image_max``
(``x = 2 a / image_max - 1``) and sinograms are divided by their own maximum (the ``"legopet"``
normalisation of :class:`~pettk.sim.SliceDataset`). Both networks work on a square *canvas*, the
preset's ``net.image_size`` (32² tiny, 128² GPU, 256² full as in the paper):

- the image grid ``(nx, ny)`` must fit the canvas; it is padded symmetrically with -1 (activity
  0) and the result is centre-cropped back to ``(nx, ny)`` (:func:`pad_image`, :func:`crop_image`);
- the sinogram ``(n_views, n_radial)`` is fitted to the canvas axis by axis ("pad or resize",
  :func:`fit_sinogram`): an axis no longer than the canvas is zero-padded symmetrically (no
  counts), a longer one is resized to the canvas length (bilinear, antialiased). The paper pads
  sinogram and image to 256² (§5.1); with pettk's 224 × 129 ``mmr-like`` sinogram and a 256²
  canvas that is pure padding, while the tiny 32 × 49 parallel-beam sinogram on a 32² canvas has
  its radial axis resized 49 → 32.

Because the sinogram is normalised by its maximum, the output's activity scale is the training
data's (``image_max``): LegoPET is not quantitative by itself. The data-consistency steps (or a
calibration of ``image_max``) tie it to the measured counts.

Reference: Y. Sun, O. Mawlawi, "LegoPET: Hierarchical Feature Guided Conditional Diffusion for
PET Image Reconstruction", IEEE ISBI 2025, arXiv:2411.16629. The authors' code was not released;
this is written from the paper text (METHODS.md §5).
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..diffusion.guidance import CFGModel, drop_condition
from ..diffusion.nets import LEGOPET_FULL, LEGOPET_GPU, LEGOPET_TINY, LegoPETNetsConfig, UNet
from ..diffusion.posterior import diffpir_sample, penalised_em_step
from ..diffusion.samplers import ddim_sample, ddpm_sample, make_generator, randn
from ..diffusion.schedules import NoiseSchedule
from ..diffusion.train import TrainConfig, Trainer
from ..io.checkpoint import load_checkpoint, save_checkpoint
from ..physics import ForwardModel
from .base import ImagePrior

__all__ = [
    "LegoPETConfig", "LegoPET", "train_legopet", "haar_dwt2", "haar_idwt2", "dwt_loss", "pnpnet_loss", "cdpm_loss",
    "fit_sinogram", "pad_image", "crop_image", "normalise_image", "denormalise_image", "normalise_sinogram",
    "count_parameters", "warm_start_cdpm", "SAMPLERS", "TARGETS", "CDPM_INITS", "BETA_SCHEDULES",
]

SAMPLERS = ("ddim", "ddpm")
TARGETS = ("reference", "truth")
CDPM_INITS = ("random", "pnpnet")
BETA_SCHEDULES = ("linear", "cosine")
_SINO_FLOOR = 1e-12


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------
def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_real(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(float(v))


_TINY_NET = LEGOPET_TINY.replace(channel_mults=(1, 2, 2), num_res_blocks=1, attention_levels=())


@dataclass(frozen=True)
class LegoPETConfig:
    """LegoPET's networks, diffusion, sampling, data and optimisation (METHODS §5.6).

    JSON-serialisable (:meth:`to_dict`, :meth:`to_json`, :meth:`from_dict`, :meth:`from_json`).
    Presets: :attr:`TINY` (CPU tests), :attr:`GPU` (practical), :attr:`FULL` (the paper).

    Attributes
    ----------
    net : LegoPETNetsConfig
        The shared backbone; ``net.image_size`` is the canvas (H, W) both networks work on.
    features : bool
        ``True``: LegoPET (PnPNet features injected). ``False``: the plain sinogram-conditioned
        cDPM (the ablation; no PnPNet is trained).
    T : int
        Diffusion steps.
    beta_schedule : {"linear", "cosine"}
        ``"linear"``: Ho et al.'s betas 1e-4 → 0.02 at ``T = 1000``, both ends multiplied by
        ``1000 / T`` for other ``T`` (so ``abar_T`` stays ≈ 0, the usual rescaling of short
        chains). ``"cosine"``: Nichol & Dhariwal.
    prediction : {"eps", "x0"}
        What the cDPM predicts (the paper: ``"eps"``).
    p_dp : float in [0, 1]
        Probability of dropping the whole condition in training (classifier-free guidance).
    guidance_scale : float >= 0
        λ of ``(1 + λ) eps_c - λ eps_∅`` (0: the conditional model alone).
    sampler : {"ddim", "ddpm"}
        DDIM on a strided grid of ``sampling_steps`` times (with ``eta``), or DDPM ancestral
        sampling over all ``T`` steps.
    sampling_steps : int
        DDIM steps (ignored by DDPM).
    eta : float in [0, 1]
        DDIM's stochasticity (0: deterministic).
    clip_denoised : bool
        Clamp ``x0_hat`` to [-1, 1] at every step.
    dc_iterations : int
        EM iterations of the optional data-consistency step per sampling step (0: off, the paper).
    dc_weight : float >= 0
        Anchor weight of those EM iterations, relative: ``beta = dc_weight · mean(sens) /
        mean(x0_hat activity)`` in :func:`~pettk.diffusion.posterior.penalised_em_step`
        (0: plain EM started at ``x0_hat``).
    n_samples : int >= 1
        Samples averaged per reconstruction (1: one posterior sample, the paper). More give a
        Monte Carlo estimate of the posterior mean (pettk extension): lower error, less texture,
        ``n_samples`` times the cost.
    target : {"reference", "truth"}
        Training image: the data set's high-count OSEM reference (the paper) or the phantom.
    cdpm_init : {"random", "pnpnet"}
        Initialisation of the cDPM: random (the paper), or a warm start of the shared backbone
        from the trained PnPNet (pettk extension, :func:`warm_start_cdpm`), which lets a CPU-sized
        cDPM train in fewer steps.
    drf : float or None
        Input sinogram: the full-dose prompts (``None``) or the low-dose prompts at this DRF.
    pnpnet_steps, pnpnet_lr : PnPNet optimiser steps and learning rate.
    dwt_weight : float >= 0
        Weight of the wavelet term in the PnPNet loss (the paper: 0.1).
    cdpm_steps, cdpm_lr : cDPM optimiser steps and learning rate.
    batch_size, weight_decay, ema_decay, grad_clip, lr_schedule, warmup_steps :
        Passed to :class:`~pettk.diffusion.train.TrainConfig` (AdamW; weight decay 0 is Adam).
    seed : int
        Initialisation, batches and noise in training (PnPNet ``seed``, cDPM ``seed + 1``) and the
        default sampling seed.
    """

    net: LegoPETNetsConfig = _TINY_NET
    features: bool = True
    T: int = 100
    beta_schedule: str = "linear"
    prediction: str = "x0"
    p_dp: float = 0.1
    guidance_scale: float = 0.5
    sampler: str = "ddim"
    sampling_steps: int = 20
    eta: float = 0.0
    clip_denoised: bool = True
    dc_iterations: int = 0
    dc_weight: float = 0.0
    n_samples: int = 1
    target: str = "truth"
    cdpm_init: str = "random"
    drf: float | None = None
    pnpnet_steps: int = 400
    pnpnet_lr: float = 2e-3
    dwt_weight: float = 0.1
    cdpm_steps: int = 1500
    cdpm_lr: float = 2e-3
    batch_size: int = 8
    weight_decay: float = 0.0
    ema_decay: float = 0.0
    grad_clip: float | None = 1.0
    lr_schedule: str = "cosine"
    warmup_steps: int = 20
    seed: int = 0

    TINY = None  # set below (a dataclass field cannot default to an instance of its own class)
    GPU = None
    FULL = None

    # -- checks ----------------------------------------------------------------------------------
    def validate(self) -> LegoPETConfig:
        """Return ``self`` if every field is valid, else raise ``TypeError``/``ValueError``."""
        if not isinstance(self.net, LegoPETNetsConfig):
            raise TypeError(f"net must be a LegoPETNetsConfig, got {type(self.net).__name__}")
        size = tuple(self.net.image_size)
        factor = 2 ** (len(self.net.channel_mults) - 1)
        if len(size) != 2 or any(not _is_int(s) or s < 1 or s % factor for s in size):
            raise ValueError(f"net.image_size must be two positive ints divisible by {factor} "
                             f"(2**(levels - 1)), got {self.net.image_size!r}")
        if self.net.image_channels != 1 or self.net.sino_channels != 1:
            raise ValueError("LegoPET works on single-channel 2D slices: net.image_channels and net.sino_channels "
                             f"must be 1, got {self.net.image_channels} and {self.net.sino_channels}")
        if not isinstance(self.features, bool):
            raise TypeError(f"features must be a bool, got {self.features!r}")
        for name in ("T", "sampling_steps", "batch_size", "pnpnet_steps", "cdpm_steps", "n_samples"):
            v = getattr(self, name)
            if not _is_int(v) or v < (0 if name == "pnpnet_steps" else 1):
                raise ValueError(f"{name} must be an int >= {0 if name == 'pnpnet_steps' else 1}, got {v!r}")
        if self.features and self.pnpnet_steps < 1:
            raise ValueError("pnpnet_steps must be >= 1 when features=True (the PnPNet must be trained)")
        if self.sampling_steps > self.T:
            raise ValueError(f"sampling_steps={self.sampling_steps} must be <= T={self.T}")
        if self.beta_schedule not in BETA_SCHEDULES:
            raise ValueError(f"beta_schedule must be one of {BETA_SCHEDULES}, got {self.beta_schedule!r}")
        if self.prediction not in ("eps", "x0"):
            raise ValueError(f"prediction must be 'eps' or 'x0', got {self.prediction!r}")
        if self.sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {SAMPLERS}, got {self.sampler!r}")
        if self.target not in TARGETS:
            raise ValueError(f"target must be one of {TARGETS}, got {self.target!r}")
        if self.cdpm_init not in CDPM_INITS:
            raise ValueError(f"cdpm_init must be one of {CDPM_INITS}, got {self.cdpm_init!r}")
        if not _is_real(self.p_dp) or not 0.0 <= float(self.p_dp) <= 1.0:
            raise ValueError(f"p_dp must be a number in [0, 1], got {self.p_dp!r}")
        if not _is_real(self.eta) or not 0.0 <= float(self.eta) <= 1.0:
            raise ValueError(f"eta must be a number in [0, 1], got {self.eta!r}")
        for name in ("guidance_scale", "dc_weight", "dwt_weight", "weight_decay", "ema_decay"):
            v = getattr(self, name)
            if not _is_real(v) or float(v) < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
        if float(self.ema_decay) >= 1:
            raise ValueError(f"ema_decay must be < 1, got {self.ema_decay!r}")
        for name in ("pnpnet_lr", "cdpm_lr"):
            v = getattr(self, name)
            if not _is_real(v) or float(v) <= 0:
                raise ValueError(f"{name} must be a finite number > 0, got {v!r}")
        if not _is_int(self.dc_iterations) or self.dc_iterations < 0:
            raise ValueError(f"dc_iterations must be an int >= 0, got {self.dc_iterations!r}")
        if self.drf is not None and (not _is_real(self.drf) or float(self.drf) < 1):
            raise ValueError(f"drf must be None (full dose) or a number >= 1, got {self.drf!r}")
        if not isinstance(self.clip_denoised, bool):
            raise TypeError(f"clip_denoised must be a bool, got {self.clip_denoised!r}")
        if not _is_int(self.seed):
            raise TypeError(f"seed must be an int, got {self.seed!r}")
        self.train_config("pnpnet").validate()
        return self

    # -- conversions -----------------------------------------------------------------------------
    def replace(self, **changes) -> LegoPETConfig:
        """A copy with some fields changed (``net`` may be given as a dict of changes)."""
        if isinstance(changes.get("net"), dict):
            changes["net"] = self.net.replace(**_net_fields(changes["net"]))
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """Plain JSON-compatible dict (tuples become lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def to_json(self, path=None, indent: int = 2) -> str:
        """The JSON text; also written (atomically) to ``path`` when given."""
        text = json.dumps(self.to_dict(), indent=indent)
        if path is not None:
            from ..io.atomic import atomic_path

            with atomic_path(path) as tmp:
                tmp.write_text(text + "\n")
        return text

    @classmethod
    def from_dict(cls, d: dict, base: LegoPETConfig | None = None) -> LegoPETConfig:
        """Build a configuration from a dict, missing keys taken from ``base`` (default :attr:`TINY`).

        ``d`` may also name a preset: ``{"preset": "gpu", "cdpm_steps": 1000}``. ``net`` may be a
        partial dict of :class:`LegoPETNetsConfig` fields. Unknown keys raise ``ValueError``.
        """
        if not isinstance(d, dict):
            raise TypeError(f"a LegoPET configuration must be a dict, got {type(d).__name__}")
        d = dict(d)
        preset = d.pop("preset", None)
        if preset is not None:
            presets = {"tiny": cls.TINY, "gpu": cls.GPU, "full": cls.FULL}
            if preset not in presets:
                raise ValueError(f"preset must be one of {sorted(presets)}, got {preset!r}")
            base = presets[preset]
        base = base if base is not None else cls.TINY
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown LegoPET configuration keys {unknown}; expected some of {sorted(known)}")
        if "net" in d:
            net = d.pop("net")
            if not isinstance(net, dict):
                raise TypeError(f"net must be a dict of LegoPETNetsConfig fields, got {type(net).__name__}")
            d["net"] = base.net.replace(**_net_fields(net))
        return dataclasses.replace(base, **d).validate()

    @classmethod
    def from_json(cls, source) -> LegoPETConfig:
        """Read a configuration from a JSON file path or JSON text (see :meth:`from_dict`)."""
        if isinstance(source, Path) or (isinstance(source, str) and not source.lstrip().startswith("{")):
            path = Path(source)
            if not path.is_file():
                raise FileNotFoundError(f"no LegoPET configuration file at {path}")
            source = path.read_text()
        if not isinstance(source, str):
            raise TypeError(f"source must be a path or JSON text, got {type(source).__name__}")
        return cls.from_dict(json.loads(source))

    # -- derived objects -------------------------------------------------------------------------
    @property
    def canvas(self) -> tuple[int, int]:
        """The networks' input size (H, W)."""
        return tuple(int(s) for s in self.net.image_size)

    def schedule(self) -> NoiseSchedule:
        """The :class:`NoiseSchedule` of ``T`` and ``beta_schedule``."""
        if self.beta_schedule == "cosine":
            return NoiseSchedule.cosine(self.T)
        factor = 1000.0 / self.T
        return NoiseSchedule.linear(self.T, min(1e-4 * factor, 0.5), min(0.02 * factor, 0.999))

    def train_config(self, stage: str) -> TrainConfig:
        """The :class:`TrainConfig` of stage ``"pnpnet"`` or ``"cdpm"``."""
        if stage not in ("pnpnet", "cdpm"):
            raise ValueError(f"stage must be 'pnpnet' or 'cdpm', got {stage!r}")
        steps, lr = (self.pnpnet_steps, self.pnpnet_lr) if stage == "pnpnet" else (self.cdpm_steps, self.cdpm_lr)
        return TrainConfig(steps=max(int(steps), 1), batch_size=self.batch_size, lr=float(lr),
                           weight_decay=float(self.weight_decay), lr_schedule=self.lr_schedule,
                           warmup_steps=self.warmup_steps, ema_decay=float(self.ema_decay), grad_clip=self.grad_clip,
                           seed=self.seed + (0 if stage == "pnpnet" else 1), log_every=10)


def _net_fields(net: dict) -> dict:
    out = dict(net)
    known = {f.name for f in dataclasses.fields(LegoPETNetsConfig)}
    unknown = sorted(set(out) - known)
    if unknown:
        raise ValueError(f"unknown net keys {unknown}; expected some of {sorted(known)}")
    for key in ("channel_mults", "attention_levels", "image_size"):
        if key in out and out[key] is not None:
            out[key] = tuple(out[key])
    return out


#: CPU tests (§5.6 tiny): 32² canvas, 16 channels, T = 100, DDIM 20 steps, 400 PnPNet + 1500 cDPM
#: steps. Two deliberate departures from §5.6, both measured on held-out slices (see the issue-10
#: note): (1) three levels (32², 16², 8²; one ResBlock each, attention only in the middle block)
#: instead of two: the sinogram → image map is non-local, and with the middle attention at 8² the
#: PnPNet gains 1.5 dB at half the cost of LEGOPET_TINY; (2) the cDPM predicts x0: after a few
#: hundred CPU steps an ε-predicting cDPM still has ε errors of ~5e-3 at t = T-1, which
#: ``1/sqrt(abar)`` ≈ 220 amplifies into a useless x0 estimate (held-out samples at ≈ 9 dB), while
#: the x0 parameterisation samples at the PnPNet's accuracy. The GPU and full presets keep ε.
LegoPETConfig.TINY = LegoPETConfig()
#: GPU-practical: 128² canvas (4 levels, 64–128 channels, 8.95 M), T = 1000, 5k + 20k iterations, DDIM 50.
LegoPETConfig.GPU = LegoPETConfig(net=LEGOPET_GPU, T=1000, prediction="eps", sampling_steps=50, target="reference",
                                  pnpnet_steps=5000, pnpnet_lr=1e-4, cdpm_steps=20_000, cdpm_lr=1e-4, batch_size=16,
                                  ema_decay=0.999, lr_schedule="constant", warmup_steps=500)
#: The paper: 256² canvas, 35.7 M per network, T = 1000 with DDPM sampling, Adam 3e-5 for the PnPNet
#: over 119 epochs and batch 4 over 500 epochs for the cDPM (4675 training slices: 1169 steps per
#: epoch). The cDPM's learning rate and EMA are not given: DDPM's 256² settings (2e-5, 0.9999).
LegoPETConfig.FULL = LegoPETConfig(net=LEGOPET_FULL, T=1000, prediction="eps", sampler="ddpm", sampling_steps=1000,
                                   target="reference", pnpnet_steps=119 * 1169, pnpnet_lr=3e-5,
                                   cdpm_steps=500 * 1169, cdpm_lr=2e-5, batch_size=4, ema_decay=0.9999,
                                   lr_schedule="constant", warmup_steps=0)


# --------------------------------------------------------------------------------------------
# Haar wavelets and the PnPNet loss
# --------------------------------------------------------------------------------------------
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
    if not _is_int(levels) or levels < 1:
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


# --------------------------------------------------------------------------------------------
# Normalisation and the canvas
# --------------------------------------------------------------------------------------------
def normalise_image(activity: torch.Tensor, image_max: float) -> torch.Tensor:
    """Activity → [-1, 1]: ``2 a / image_max - 1`` (SliceDataset's ``"legopet"`` images)."""
    return 2.0 * activity / float(image_max) - 1.0


def denormalise_image(x: torch.Tensor, image_max: float) -> torch.Tensor:
    """Inverse of :func:`normalise_image`, negatives clipped at 0."""
    return ((x + 1.0) * 0.5 * float(image_max)).clamp_min(0.0)


def normalise_sinogram(y: torch.Tensor) -> torch.Tensor:
    """Each sinogram ``(..., n_views, n_radial)`` divided by its own maximum (floored at 1e-12)."""
    peak = y.amax(dim=(-2, -1), keepdim=True).clamp_min(_SINO_FLOOR)
    return y / peak


def _offsets(size: int, canvas: int) -> tuple[int, int]:
    extra = canvas - size
    return extra // 2, extra - extra // 2


def _canvas(canvas) -> tuple[int, int]:
    try:
        h, w = (int(c) for c in canvas)
    except (TypeError, ValueError):
        raise TypeError(f"canvas must be a pair of positive ints (H, W), got {canvas!r}") from None
    if h < 1 or w < 1:
        raise ValueError(f"canvas must be a pair of positive ints (H, W), got {canvas!r}")
    return h, w


def fit_sinogram(s: torch.Tensor, canvas) -> torch.Tensor:
    """Fit sinograms ``(..., n_views, n_radial)`` to the canvas ``(H, W)`` ("pad or resize").

    Each axis no longer than the canvas is zero-padded symmetrically (the extra half pixel goes
    after); each longer axis is first resized to the canvas length (bilinear, antialiased, done
    on both axes at once). Returns ``(..., H, W)``. Resizing loses information, so choose a canvas
    at least as large as the sinogram where memory allows (the paper pads to 256²).
    """
    h, w = _canvas(canvas)
    if not isinstance(s, torch.Tensor) or not s.is_floating_point() or s.ndim < 2:
        raise TypeError("s must be a floating-point torch tensor (..., n_views, n_radial)")
    lead = s.shape[:-2]
    v, r = s.shape[-2:]
    z = s.reshape((-1, 1, v, r))
    nv, nr = min(v, h), min(r, w)
    if (nv, nr) != (v, r):
        z = F.interpolate(z, size=(nv, nr), mode="bilinear", align_corners=False, antialias=True)
    (top, bottom), (left, right) = _offsets(nv, h), _offsets(nr, w)
    z = F.pad(z, (left, right, top, bottom))
    return z.reshape(lead + (h, w))


def pad_image(x: torch.Tensor, canvas, value: float = -1.0) -> torch.Tensor:
    """Pad images ``(..., nx, ny)`` symmetrically to the canvas ``(H, W)`` with ``value``.

    ``value = -1`` is activity 0 in the [-1, 1] space. The image must fit: a larger image raises
    ``ValueError`` (images are never resized, the output must live on the reconstruction grid).
    """
    h, w = _canvas(canvas)
    if not isinstance(x, torch.Tensor) or x.ndim < 2:
        raise TypeError("x must be a torch tensor (..., nx, ny)")
    nx, ny = x.shape[-2:]
    if nx > h or ny > w:
        raise ValueError(f"the image grid {(nx, ny)} does not fit the canvas {(h, w)}: use a preset whose "
                         "net.image_size is at least the image size")
    (top, bottom), (left, right) = _offsets(nx, h), _offsets(ny, w)
    if (top, bottom, left, right) == (0, 0, 0, 0):
        return x
    lead = x.shape[:-2]
    z = F.pad(x.reshape((-1, nx, ny)), (left, right, top, bottom), value=float(value))
    return z.reshape(lead + (h, w))


def crop_image(x: torch.Tensor, shape) -> torch.Tensor:
    """Centre-crop canvas images ``(..., H, W)`` back to ``shape = (nx, ny)`` (inverse of :func:`pad_image`)."""
    nx, ny = _canvas(shape)
    h, w = x.shape[-2:]
    if nx > h or ny > w:
        raise ValueError(f"cannot crop {(h, w)} to the larger {(nx, ny)}")
    top, left = _offsets(nx, h)[0], _offsets(ny, w)[0]
    return x[..., top:top + nx, left:left + ny]


def count_parameters(module: torch.nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters of ``module``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


# --------------------------------------------------------------------------------------------
# The prior
# --------------------------------------------------------------------------------------------
def _as_counts(name: str, y) -> tuple[torch.Tensor, bool]:
    if not isinstance(y, (np.ndarray, torch.Tensor)):
        raise TypeError(f"{name} must be a numpy array or a torch tensor of counts, got {type(y).__name__}")
    t = torch.from_numpy(np.ascontiguousarray(y)) if isinstance(y, np.ndarray) else y.detach()
    if t.dtype == torch.bool or t.is_complex():
        raise TypeError(f"{name} must hold real counts, got dtype {t.dtype}")
    if t.is_floating_point() and not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains non-finite values (NaN or inf)")
    if t.numel() and bool((t < 0).any()):
        raise ValueError(f"{name} must be non-negative, got a minimum of {float(t.min()):g}")
    return t, isinstance(y, np.ndarray)


class LegoPET(ImagePrior):
    """A (trained) LegoPET model: frozen PnPNet + sinogram-conditioned cDPM with feature guidance.

    Parameters
    ----------
    config : LegoPETConfig
    image_shape : (nx, ny)
        The reconstruction grid it was trained on (must fit ``config.canvas``).
    sinogram_shape : (n_views, n_radial)
        The sinogram size it was trained on (inputs must match).
    image_max : float > 0
        Activity of image value 1 (the training set's maximum; ``x = 2 a / image_max - 1``).
    pnpnet, cdpm : UNet, optional
        Trained networks; fresh ones from ``config.net`` when omitted (``pnpnet`` is only built
        when ``config.features`` is true).

    Attributes
    ----------
    history : dict
        Training loss curves (``pnpnet_loss``, ``cdpm_loss``).
    """

    def __init__(self, config: LegoPETConfig, image_shape, sinogram_shape, image_max: float, pnpnet: UNet | None = None,
                 cdpm: UNet | None = None):
        if not isinstance(config, LegoPETConfig):
            raise TypeError(f"config must be a LegoPETConfig, got {type(config).__name__}")
        self.config = config.validate()
        self.image_shape = self._shape("image_shape", image_shape)
        self.sinogram_shape = self._shape("sinogram_shape", sinogram_shape)
        canvas = config.canvas
        if self.image_shape[0] > canvas[0] or self.image_shape[1] > canvas[1]:
            raise ValueError(f"image_shape {self.image_shape} does not fit the canvas {canvas} (net.image_size)")
        if not _is_real(image_max) or float(image_max) <= 0:
            raise ValueError(f"image_max must be a finite number > 0, got {image_max!r}")
        self.image_max = float(image_max)
        if pnpnet is None and config.features:
            pnpnet = config.net.build_pnpnet()
        self.pnpnet = None if pnpnet is None else self._frozen(pnpnet)
        self.cdpm = (cdpm if cdpm is not None else config.net.build_cdpm()).eval()
        self.schedule = config.schedule()
        self.history: dict = {}

    @staticmethod
    def _shape(name, value) -> tuple[int, int]:
        try:
            shape = tuple(int(s) for s in value)
        except (TypeError, ValueError):
            raise TypeError(f"{name} must be a pair of positive ints, got {value!r}") from None
        if len(shape) != 2 or min(shape) < 1:
            raise ValueError(f"{name} must be a pair of positive ints, got {value!r}")
        return shape

    @staticmethod
    def _frozen(net: UNet) -> UNet:
        net.eval()
        for p in net.parameters():
            p.requires_grad_(False)
        return net

    # -- bookkeeping --------------------------------------------------------------------------------
    @property
    def uses_features(self) -> bool:
        """``True`` for LegoPET, ``False`` for the plain cDPM."""
        return self.config.features

    @property
    def device(self) -> torch.device:
        return next(self.cdpm.parameters()).device

    def to(self, device) -> LegoPET:
        self.cdpm.to(device)
        if self.pnpnet is not None:
            self.pnpnet.to(device)
        return self

    def trainable_parameters(self) -> int:
        """Trainable parameters of the diffusion model (the cDPM; the PnPNet is frozen).

        Equal for LegoPET and the plain cDPM: the feature guidance adds none (the paper's
        35.71 M for both, full preset).
        """
        return count_parameters(self.cdpm, trainable_only=False)

    def __repr__(self) -> str:
        kind = "LegoPET" if self.uses_features else "cDPM"
        return (f"{kind}(canvas={self.config.canvas}, image={self.image_shape}, sinogram={self.sinogram_shape}, "
                f"trainable={self.trainable_parameters():,}, T={self.config.T}, sampler={self.config.sampler!r})")

    # -- canvas-space building blocks ---------------------------------------------------------------
    def sinogram_canvas(self, y: torch.Tensor) -> torch.Tensor:
        """Counts ``(B, n_views, n_radial)`` → the network condition ``(B, 1, H, W)`` (normalised, fitted)."""
        return fit_sinogram(normalise_sinogram(y.to(torch.float32)), self.config.canvas).unsqueeze(1)

    def condition(self, sino: torch.Tensor) -> dict:
        """The condition ``C`` of canvas sinograms ``(B, 1, H, W)``.

        ``{"sino": sino}`` for the plain cDPM, ``{"sino": sino, "features": {"encoder": [b_d per
        level], "middle": b_m}}`` for LegoPET (frozen PnPNet, no gradient). Its null is zeros of
        the same structure (:func:`~pettk.diffusion.guidance.null_like`).
        """
        cond = {"sino": sino}
        if self.uses_features:
            with torch.no_grad():
                cond["features"] = self.pnpnet.encoder_features(sino)
        return cond

    def eps_model(self, x_t: torch.Tensor, t, cond: dict) -> torch.Tensor:
        """The cDPM on a condition from :meth:`condition` (or its null)."""
        return self.cdpm(x_t, t, cond=cond["sino"], features=cond.get("features"))

    def guided_model(self, cond: dict, guidance_scale: float | None = None) -> CFGModel:
        """The sampler's model ``(x_t, t) -> (1 + λ) eps(x_t, t, C) - λ eps(x_t, t, ∅)``."""
        lam = self.config.guidance_scale if guidance_scale is None else guidance_scale
        return CFGModel(self.eps_model, cond, lam=lam)

    @torch.no_grad()
    def sample(self, sino: torch.Tensor, *, sampler: str | None = None, steps: int | None = None,
               guidance_scale: float | None = None, eta: float | None = None, generator=None, x_T=None,
               t_start: int | None = None, data_step=None, progress: bool = False) -> torch.Tensor:
        """Sample canvas images ``(B, 1, H, W)`` in [-1, 1] given canvas sinograms ``(B, 1, H, W)``.

        ``data_step(x0_hat, t) -> x0_dc`` (canvas space) turns on data consistency (DiffPIR-style
        sampling: the corrected estimate replaces ``x0_hat`` and the noise is re-derived from it).
        Defaults come from the configuration; DDPM is DDIM with ``eta = 1`` on every step when a
        data step is given.
        """
        cfg = self.config
        sampler = cfg.sampler if sampler is None else sampler
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
        steps = cfg.sampling_steps if steps is None else steps
        eta = cfg.eta if eta is None else eta
        model = self.guided_model(self.condition(sino), guidance_scale)
        shape = (sino.shape[0], 1) + tuple(sino.shape[2:])
        clip = 1.0 if cfg.clip_denoised else None
        start = cfg.T - 1 if t_start is None else int(t_start)
        schedule = self.schedule
        common = dict(prediction=cfg.prediction, generator=generator, x_T=x_T, t_start=t_start, clip=clip,
                      dtype=sino.dtype, device=sino.device, progress=progress)
        if data_step is not None:
            if sampler == "ddpm":
                steps, eta = start + 1, 1.0
            return diffpir_sample(model, None, None, shape, schedule, min(int(steps), start + 1), n_em=1, eta=eta,
                                  eta_form="ddim", data_step=data_step, **common)
        if sampler == "ddpm":
            return ddpm_sample(model, shape, schedule, **common)
        return ddim_sample(model, shape, schedule, min(int(steps), start + 1), eta, **common)

    # -- the ImagePrior interface --------------------------------------------------------------------
    def _check_sampling(self, sampler, steps, eta, guidance_scale) -> None:
        if sampler is not None and sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
        if steps is not None and (not _is_int(steps) or not 1 <= steps <= self.config.T):
            raise ValueError(f"steps must be an int in [1, {self.config.T}], got {steps!r}")
        if eta is not None and (not _is_real(eta) or not 0.0 <= float(eta) <= 1.0):
            raise ValueError(f"eta must be a number in [0, 1], got {eta!r}")
        if guidance_scale is not None and (not _is_real(guidance_scale) or float(guidance_scale) < 0):
            raise ValueError(f"guidance_scale (lam) must be a finite number >= 0, got {guidance_scale!r}")

    def _check_inputs(self, forward_model, y):
        if not isinstance(forward_model, ForwardModel):
            raise TypeError(f"forward_model must be a pettk ForwardModel, got {type(forward_model).__name__}")
        if tuple(forward_model.shape_in) != self.image_shape:
            raise ValueError(f"forward_model.shape_in must be {self.image_shape} (the grid this LegoPET was "
                             f"trained on), got {tuple(forward_model.shape_in)}")
        if tuple(forward_model.shape_out) != self.sinogram_shape:
            raise ValueError(f"forward_model.shape_out must be {self.sinogram_shape} (the sinogram this LegoPET "
                             f"was trained on), got {tuple(forward_model.shape_out)}")
        t, is_numpy = _as_counts("y", y)
        if t.ndim < 2 or tuple(t.shape[-2:]) != self.sinogram_shape:
            raise ValueError(f"y must have shape (..., {self.sinogram_shape[0]}, {self.sinogram_shape[1]}) "
                             f"(n_views, n_radial), got {tuple(t.shape)}")
        return t, is_numpy

    def _image_in(self, name: str, image, batch_shape, device) -> torch.Tensor:
        t, _ = _as_counts(name, image)
        if tuple(t.shape) not in (self.image_shape, tuple(batch_shape) + self.image_shape):
            raise ValueError(f"{name} must have shape {self.image_shape} (or with y's batch dimensions "
                             f"{tuple(batch_shape)} in front), got {tuple(t.shape)}")
        return t.to(device=device, dtype=torch.float32)

    def _data_step(self, forward_model: ForwardModel, y: torch.Tensor, iterations: int, weight: float):
        fm = forward_model
        sens = fm.sensitivity(torch.float32, y.device)
        mean_sens = float(sens.mean())
        image_shape, canvas = self.image_shape, self.config.canvas

        def step(x0: torch.Tensor, t: int) -> torch.Tensor:
            anchor = denormalise_image(crop_image(x0[:, 0], image_shape), self.image_max)
            a = anchor.clamp_min(1e-6 * float(anchor.max()) + 1e-12)  # EM is multiplicative: let every voxel grow
            beta = weight * mean_sens / max(float(anchor.mean()), 1e-12) if weight > 0 else 0.0
            for _ in range(iterations):
                a = penalised_em_step(fm, y, a, anchor, beta, sens=sens)
            out = x0.clone()
            top, left = _offsets(image_shape[0], canvas[0])[0], _offsets(image_shape[1], canvas[1])[0]
            out[:, 0, top:top + image_shape[0], left:left + image_shape[1]] = normalise_image(a, self.image_max)
            return out

        return step

    def _prepare(self, forward_model, y, mr):
        if mr is not None:
            raise ValueError("LegoPET conditions on the sinogram only; mr must be None")
        t, is_numpy = self._check_inputs(forward_model, y)
        out_dtype = t.dtype if t.is_floating_point() else torch.float32
        if self.device != t.device:
            self.to(t.device)
        return t, is_numpy, out_dtype

    @staticmethod
    def _out(x: torch.Tensor, batch_shape, image_shape, dtype, is_numpy):
        x = x.reshape(tuple(batch_shape) + tuple(image_shape)).to(dtype)
        return x.cpu().numpy() if is_numpy else x

    def reconstruct(self, forward_model: ForwardModel, y, *, mr=None, init=None, guidance_scale: float | None = None,
                    sampler: str | None = None, steps: int | None = None, eta: float | None = None,
                    dc_iterations: int | None = None, dc_weight: float | None = None, t_start: int | None = None,
                    n_samples: int | None = None, generator=None, chunk_size: int = 16, progress: bool = False):
        """Sample the image of measured counts ``y`` (LegoPET or, if ``features=False``, the plain cDPM).

        Parameters
        ----------
        forward_model : ForwardModel
            The measurement's model; ``shape_in`` and ``shape_out`` must be the trained sizes. It is
            used only for the optional data-consistency steps (with a batch of sinograms, all
            samples share it).
        y : array or tensor ``(..., n_views, n_radial)``
            Counts (>= 0, finite; any scale: the sinogram is normalised by its maximum); leading
            dimensions are a batch, one sample each.
        mr : None
            Not used by LegoPET (must be ``None``).
        init : array or tensor ``(nx, ny)`` or ``(..., nx, ny)``, optional
            A starting image (activity): it is noised to ``t_start`` and denoised from there
            (SDEdit-style partial start) instead of starting from pure noise.
        guidance_scale, sampler, steps, eta : optional
            Override the configuration's λ, sampler, DDIM steps and DDIM η.
        dc_iterations, dc_weight : optional
            Data-consistency EM iterations per step and anchor weight (default: the configuration,
            0 = off). The EM steps use ``forward_model`` and ``y`` as counts, so the model must
            describe ``y``'s count level (e.g. ``mult / DRF`` for low-dose data).
        t_start : int, optional
            First time step (default ``T - 1``, or ``T // 5`` when ``init`` is given).
        n_samples : int, optional
            Independent samples averaged per sinogram (default ``config.n_samples``).
        generator : torch.Generator or int, optional
            Randomness of the sampler (default: seeded with ``config.seed``, so calls repeat).
        chunk_size : int
            Sinograms per network batch (doubled inside by the guidance).
        progress : bool

        Returns
        -------
        Activity image(s) ``(..., nx, ny)`` (>= 0) in ``y``'s array type, device and floating dtype
        (integer counts give float32).
        """
        self._check_sampling(sampler, steps, eta, guidance_scale)
        t_y, is_numpy, out_dtype = self._prepare(forward_model, y, mr)
        cfg = self.config
        dc_iterations = cfg.dc_iterations if dc_iterations is None else dc_iterations
        dc_weight = cfg.dc_weight if dc_weight is None else dc_weight
        if not _is_int(dc_iterations) or dc_iterations < 0:
            raise ValueError(f"dc_iterations must be an int >= 0, got {dc_iterations!r}")
        if not _is_real(dc_weight) or float(dc_weight) < 0:
            raise ValueError(f"dc_weight must be a finite number >= 0, got {dc_weight!r}")
        if not _is_int(chunk_size) or chunk_size < 1:
            raise ValueError(f"chunk_size must be an int >= 1, got {chunk_size!r}")
        n_samples = cfg.n_samples if n_samples is None else n_samples
        if not _is_int(n_samples) or n_samples < 1:
            raise ValueError(f"n_samples must be an int >= 1, got {n_samples!r}")
        batch_shape = t_y.shape[:-2]
        flat = t_y.reshape((-1,) + self.sinogram_shape).to(torch.float32)
        if init is not None:
            init_t = self._image_in("init", init, batch_shape, t_y.device)
            init_t = init_t.expand(tuple(batch_shape) + self.image_shape).reshape((-1,) + self.image_shape)
            t_start = max(cfg.T // 5, 0) if t_start is None else t_start
        if t_start is not None and (not _is_int(t_start) or not 0 <= t_start < cfg.T):
            raise ValueError(f"t_start must be an int in [0, {cfg.T - 1}], got {t_start!r}")
        g = make_generator(cfg.seed if generator is None else generator, t_y.device)
        outs = []
        starts = range(0, flat.shape[0], int(chunk_size))
        for start in tqdm(starts, desc="LegoPET", disable=not progress or len(starts) < 2, leave=False):
            y_chunk = flat[start:start + chunk_size]
            sino = self.sinogram_canvas(y_chunk)
            data_step = None
            if dc_iterations > 0:
                data_step = self._data_step(forward_model, y_chunk, int(dc_iterations), float(dc_weight))
            total = None
            for _ in range(int(n_samples)):
                x_T = None
                if init is not None:
                    x0 = pad_image(normalise_image(init_t[start:start + chunk_size], self.image_max), cfg.canvas)
                    x0 = x0.unsqueeze(1).clamp(-1.0, 1.0)
                    x_T = self.schedule.q_sample(x0, int(t_start), randn(x0.shape, g, x0))
                x = self.sample(sino, sampler=sampler, steps=steps, guidance_scale=guidance_scale, eta=eta,
                                generator=g, x_T=x_T, t_start=t_start, data_step=data_step, progress=progress)
                image = denormalise_image(crop_image(x[:, 0], self.image_shape), self.image_max)
                total = image if total is None else total + image
            outs.append(total / int(n_samples))
        return self._out(torch.cat(outs), batch_shape, self.image_shape, out_dtype, is_numpy)

    @torch.no_grad()
    def pnpnet_reconstruct(self, forward_model: ForwardModel, y, *, mr=None):
        """The PnPNet's regression image of ``y`` (the deterministic baseline); same conventions as
        :meth:`reconstruct`."""
        if self.pnpnet is None:
            raise ValueError("this model has no PnPNet (a plain cDPM trained with features=False)")
        t_y, is_numpy, out_dtype = self._prepare(forward_model, y, mr)
        batch_shape = t_y.shape[:-2]
        flat = t_y.reshape((-1,) + self.sinogram_shape).to(torch.float32)
        x = self.pnpnet(self.sinogram_canvas(flat)).clamp(-1.0, 1.0)
        image = denormalise_image(crop_image(x[:, 0], self.image_shape), self.image_max)
        return self._out(image, batch_shape, self.image_shape, out_dtype, is_numpy)

    # -- persistence -----------------------------------------------------------------------------------
    def save(self, path) -> Path:
        """Write ``path`` (``.safetensors``: ``cdpm.*`` and ``pnpnet.*`` weights) and its JSON metadata."""
        state = {f"cdpm.{k}": v for k, v in self.cdpm.state_dict().items()}
        if self.pnpnet is not None:
            state.update({f"pnpnet.{k}": v for k, v in self.pnpnet.state_dict().items()})
        meta = {"method": "LegoPET", "legopet_config": self.config.to_dict(), "image_shape": list(self.image_shape),
                "sinogram_shape": list(self.sinogram_shape), "image_max": self.image_max,
                "has_pnpnet": self.pnpnet is not None, "history": self.history}
        return save_checkpoint(path, state, meta)

    @classmethod
    def load(cls, path, device="cpu") -> LegoPET:
        """Read a model written by :meth:`save`."""
        state, meta = load_checkpoint(path, device=device)
        if meta.get("method") != "LegoPET":
            raise ValueError(f"{path} is not a LegoPET checkpoint (method={meta.get('method')!r})")
        config = LegoPETConfig.from_dict(meta["legopet_config"])
        cdpm = config.net.build_cdpm()
        cdpm.load_state_dict({k[5:]: v for k, v in state.items() if k.startswith("cdpm.")})
        pnpnet = None
        if meta.get("has_pnpnet"):
            pnpnet = config.net.build_pnpnet()
            pnpnet.load_state_dict({k[7:]: v for k, v in state.items() if k.startswith("pnpnet.")})
        model = cls(config, meta["image_shape"], meta["sinogram_shape"], meta["image_max"], pnpnet, cdpm)
        model.history = meta.get("history", {})
        return model.to(device)


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------
class _CanvasPairs(torch.utils.data.Dataset):
    """In-memory ``{"sino", "image"}`` canvas pairs ``(1, H, W)`` of one split."""

    def __init__(self, sino: torch.Tensor, image: torch.Tensor):
        self.sino, self.image = sino, image

    def __len__(self) -> int:
        return self.sino.shape[0]

    def __getitem__(self, i):
        return {"sino": self.sino[i], "image": self.image[i]}


def _split_pairs(config: LegoPETConfig, root, split: str = "train"):
    """Canvas pairs of a data set split plus ``(image_shape, sinogram_shape, image_max)``."""
    from ..sim.datasets import SliceDataset

    root = Path(root)
    manifest_path = root / "manifest.json"
    if not manifest_path.is_file():
        raise FileNotFoundError(f"no pettk data set at {root} (missing manifest.json)")
    manifest = json.loads(manifest_path.read_text())
    drfs = sorted(manifest["drf_keys"], key=float)
    if config.drf is not None and f"{float(config.drf):g}" not in manifest["drf_keys"]:
        raise ValueError(f"config.drf={config.drf!r} is not in the data set at {root}; it has DRFs {drfs}")
    ds = SliceDataset(root, split, float(config.drf if config.drf is not None else drfs[0]), "none")
    if len(ds) == 0:
        raise ValueError(f"the data set at {root} has no '{split}' slices")
    image_max = float(manifest["train_image_max"])
    items = [ds[i] for i in range(len(ds))]
    sino = torch.stack([it["full"] if config.drf is None else it["low"] for it in items])
    image = torch.stack([it[config.target] for it in items])
    image_shape, sinogram_shape = tuple(image.shape[-2:]), tuple(sino.shape[-2:])
    canvas = config.canvas
    if image_shape[0] > canvas[0] or image_shape[1] > canvas[1]:
        raise ValueError(f"the data set's images {image_shape} do not fit the canvas {canvas}: choose a preset "
                         "with a larger net.image_size")
    s = fit_sinogram(normalise_sinogram(sino), canvas).unsqueeze(1)
    x = pad_image(normalise_image(image, image_max), canvas).unsqueeze(1)
    return _CanvasPairs(s.contiguous(), x.contiguous()), image_shape, sinogram_shape, image_max


@torch.no_grad()
def warm_start_cdpm(cdpm: UNet, pnpnet: UNet) -> UNet:
    """Initialise ``cdpm``'s backbone from a trained ``pnpnet`` of the same architecture (in place).

    Every weight the two networks share is copied, and the input convolution's sinogram
    channels take the PnPNet's input weights. The paths the PnPNet does not have keep their
    random initialisation: the input convolution's ``x_t`` channels and the time embedding with
    its projections into the residual blocks. (Zeroing them too would make the cDPM start as
    exactly the PnPNet, but measured on 64² brains that start never learns to use ``x_t``: the
    model stays a deterministic regressor and its samples do not depend on the noise.)
    """
    if not isinstance(cdpm, UNet) or not isinstance(pnpnet, UNet):
        raise TypeError("warm_start_cdpm needs two UNets (the cDPM and the PnPNet)")
    target, source = cdpm.state_dict(), pnpnet.state_dict()
    missing = [k for k in source if k not in target]
    if missing or cdpm.cond_channels != pnpnet.in_channels:
        raise ValueError("the cDPM and the PnPNet do not share a backbone (build both from one LegoPETNetsConfig)")
    new_state = dict(target)
    for key, value in source.items():
        if key == "input_conv.weight":
            weight = target[key].clone()
            weight[:, cdpm.in_channels:] = value
            new_state[key] = weight
        elif value.shape != target[key].shape:
            raise ValueError(f"cannot warm-start {key}: shape {tuple(value.shape)} vs {tuple(target[key].shape)}")
        else:
            new_state[key] = value.clone()
    cdpm.load_state_dict(new_state)
    return cdpm


def _pnpnet_from(pnpnet, config: LegoPETConfig) -> UNet:
    source = pnpnet.pnpnet if isinstance(pnpnet, LegoPET) else pnpnet
    if not isinstance(source, UNet):
        raise TypeError(f"pnpnet must be a trained LegoPET or a PnPNet UNet, got {type(pnpnet).__name__}")
    net = config.net.build_pnpnet()
    try:
        net.load_state_dict(source.state_dict())
    except RuntimeError as err:
        raise ValueError(f"pnpnet does not match config.net's PnPNet architecture: {err}") from None
    return net


def train_legopet(config: LegoPETConfig, dataset_root, out_dir=None, progress: bool = False, device=None, *,
                  pnpnet=None, resume: bool = False) -> LegoPET:
    """Train LegoPET (PnPNet, then the feature-guided cDPM) or, with ``features=False``, the plain cDPM.

    Parameters
    ----------
    config : LegoPETConfig
    dataset_root : path
        A data set folder made by :func:`pettk.sim.build_dataset`: its ``train`` split is used
        (sinogram: ``full`` or ``low_drf{drf}``; image: ``config.target``; intensity scale: the
        manifest's ``train_image_max``).
    out_dir : path, optional
        Trainer checkpoints go to ``out_dir/pnpnet`` and ``out_dir/cdpm`` and the model to
        ``out_dir/legopet.safetensors`` (``cdpm.safetensors`` for the plain cDPM).
    progress : bool
    device : torch device, optional (default CPU)
    pnpnet : LegoPET or UNet, optional
        A trained PnPNet to reuse (its stage is skipped), e.g. to train LegoPET and its ablations
        on one PnPNet.
    resume : bool
        Continue each stage from its checkpoint in ``out_dir`` (a finished stage is not rerun; a
        larger ``pnpnet_steps`` / ``cdpm_steps`` than before trains on from where it stopped).

    Returns
    -------
    LegoPET
        With EMA weights when ``config.ema_decay > 0`` and the loss curves in ``history``.
    """
    if not isinstance(config, LegoPETConfig):
        raise TypeError(f"config must be a LegoPETConfig, got {type(config).__name__}")
    config = config.validate()
    if resume and out_dir is None:
        raise ValueError("resume=True needs an out_dir")
    pairs, image_shape, sinogram_shape, image_max = _split_pairs(config, dataset_root)
    device = torch.device(device) if device is not None else torch.device("cpu")
    out = None if out_dir is None else Path(out_dir)
    meta = {"legopet_config": config.to_dict()}
    history: dict = {}

    net_p = None
    if config.features:
        if pnpnet is not None:
            net_p = _pnpnet_from(pnpnet, config).to(device)
        else:
            torch.manual_seed(config.seed)
            net_p = config.net.build_pnpnet().to(device)
            trainer = Trainer(net_p, pnpnet_loss(config.dwt_weight), pairs, config.train_config("pnpnet"),
                              out_dir=None if out is None else out / "pnpnet", device=device, model_config=meta,
                              progress=progress)
            trainer.fit(resume=resume)
            net_p = trainer.averaged_model()
            history["pnpnet_loss"] = list(trainer.history.loss)
        net_p = LegoPET._frozen(net_p)

    torch.manual_seed(config.seed + 1)
    cdpm = config.net.build_cdpm().to(device)
    if config.cdpm_init == "pnpnet":
        warm_start_cdpm(cdpm, net_p)
    schedule = config.schedule().to(device)
    trainer = Trainer(cdpm, cdpm_loss(schedule, net_p, config.p_dp, config.prediction), pairs,
                      config.train_config("cdpm"), out_dir=None if out is None else out / "cdpm", device=device,
                      model_config=meta, progress=progress)
    trainer.fit(resume=resume)
    history["cdpm_loss"] = list(trainer.history.loss)
    cdpm = trainer.averaged_model().eval()
    model = LegoPET(config, image_shape, sinogram_shape, image_max, net_p, cdpm)
    model.history = history
    if out is not None:
        model.save(out / ("legopet.safetensors" if config.features else "cdpm.safetensors"))
    return model

"""DDIP for PET: a deep diffusion image prior adapted to the measured sinogram inside the reconstruction.

DDIP-PET: Hashimoto & Gong, arXiv 2507.15078 (IEEE TMI 2026, doi 10.1109/TMI.2026.3659792), built
on Chung & Ye, "Deep Diffusion Image Prior for Efficient OOD Adaptation in 3D Inverse Problems"
(ECCV 2024, arXiv 2407.10641). METHODS.md §4 is the specification; this module composes
:mod:`pettk.diffusion` (U-Net, schedule, DDIM step, LoRA, penalised EM) with
:mod:`pettk.physics`:

- **Pretraining** (:func:`train_ddip`): a :class:`~pettk.diffusion.nets.UNet` learns ``ε`` (or
  ``x0``) on activity images of one tracer (FDG-like), with the MR image **concatenated** as
  extra input channels; 2D (1 slice) or 2.5D (3 adjacent slices in, 3 MR slices as condition).
  Every training slab is divided by its own intensity scale (:meth:`DDIPConfig.intensity_scale`:
  the mean activity inside the MR head mask, mapped to ``target_mean``), so a reconstruction can
  normalise its MLEM start the same way without knowing the activity units.
- **Reconstruction** (:meth:`DDIP.reconstruct`, METHODS §4.4): MLEM (20 iterations) →
  normalise → SDEdit to ``t₀ = start_t`` → for each of ``steps`` grid times ``t → t'``:

  1. *fine-tune* (fresh AdamW, ``adapt_steps`` steps, gradient clipping) only the LoRA adapters
     and the non-embedding biases so that Tweedie's ``x̂₀(x_t; θ)`` matches the **penalised-EM
     image** ``x_PEM`` = ``em_iterations`` iterations of :func:`~pettk.diffusion.posterior.
     penalised_em_step` (one EM update with attenuation, normalisation and background, then the
     closed-form HQS root of METHODS §4.4.3) anchored at ``x̂₀`` (no gradient through the
     projector); ``loss="sinogram"`` instead back-propagates the Poisson deviance of
     ``forward_model(x̂₀)`` through the projector's autograd (the unused option of the released
     code);
  2. *sample*: ``x̂₀`` with the adapted θ, clamped to ``[0, 1]``, then the DDIM-η step
     ``x_{t'} = √ᾱ_{t'} x̂₀ + √(1-ᾱ_{t'}) (η ξ + √(1-η²) ε̂)`` (``eta_form="ddip"``).

  The output is the last ``x̂₀`` (the centre slice for 2.5D), back in activity units. The LoRA
  adapters are reset at the start and at the end of every call: the pretrained weights never
  change. ``adapt=False`` gives "DDIP without adaptation" (conditional SDEdit from the same start).
- **3D** (``forward_model.shape_in == (nx, ny, nz)``): the volume is processed slice by slice
  (2.5D slabs ``z-1, z, z+1`` with edge replication) with **one shared LoRA**; each fine-tuning
  step uses ``mc_slices`` randomly drawn slices (Monte-Carlo slice sampling, as DDIP3D), while the
  penalised-EM target is computed on the whole volume with the 3D model.

Configurations (METHODS §4.7): :attr:`DDIPConfig.TINY` (32×32, CPU, 1 slice + MR; it predicts
``x0``, pretrains 500 steps and adapts with lr 2e-3, see :class:`DDIPConfig`),
:attr:`DDIPConfig.GPU` (128×128, 2.5D, 64 channels) and :attr:`DDIPConfig.FULL` (the released
code's defaults, ≈126 M parameters). ``β`` is dimensionless here (see :meth:`DDIP.reconstruct`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import numbers
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..diffusion.nets import DDIP_FULL, DDIP_GPU, DDIP_TINY, UNet, UNetConfig
from ..diffusion.nets.layers import AttentionBlock, ResBlock
from ..diffusion.nets.lora import LoRALayer, inject_lora, mark_only_lora_and_bias_trainable, reset_lora
from ..diffusion.posterior import penalised_em_step
from ..diffusion.samplers import ddim_step, model_predictions
from ..diffusion.schedules import NoiseSchedule
from ..diffusion.train import TrainConfig, Trainer, diffusion_loss
from ..io.checkpoint import load_checkpoint, save_checkpoint
from ..physics import ForwardModel
from ..recon import mlem
from ..recon._common import SENSITIVITY_FLOOR
from .base import ImagePrior, check_prior_inputs

__all__ = ["DDIPConfig", "DDIP", "train_ddip", "DDIPImages", "phantom_training_images", "slab_indices"]

log = logging.getLogger(__name__)

LOSSES = ("image", "sinogram")


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DDIPConfig:
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
    beta : float
        Dimensionless anchor weight of the HQS step (DDIP: 0.01); see :meth:`DDIP.reconstruct`.
    eta : float
        DDIM-η (DDIP's constant-variance form, 0.85).
    loss : {"image", "sinogram"}
        Fine-tuning loss: ``mean((x̂₀ - x_PEM)²)`` (HQS, default) or the Poisson deviance of the
        sinogram through the projector.
    mc_slices : int
        3D volumes: slices drawn per fine-tuning step (Monte Carlo over slices, DDIP3D: 3).
    seed : int
        Pretraining seed and the default reconstruction seed.
    """

    net: UNetConfig = DDIP_TINY
    schedule: str = "linear"
    T: int = 1000
    prediction: str = "x0"
    train_steps: int = 500
    batch_size: int = 16
    lr: float = 2e-3
    weight_decay: float = 0.0
    ema_decay: float = 0.995
    lr_schedule: str = "cosine"
    warmup_steps: int = 50
    grad_clip: float | None = 1.0
    augment: bool = True
    target_mean: float = 0.2
    mask_threshold: float = 0.2
    init_iterations: int = 20
    start_t: int = 100
    steps: int = 20
    adapt_steps: int = 1
    adapt_lr: float = 2e-3
    adapt_weight_decay: float = 0.01
    adapt_grad_clip: float | None = 1.0
    lora_rank: int = 2
    lora_alpha: float | None = None
    lora_dropout: float = 0.0
    train_biases: bool = True
    em_iterations: int = 2
    beta: float = 0.01
    eta: float = 0.85
    loss: str = "image"
    mc_slices: int = 3
    seed: int = 0

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

    def validate(self) -> DDIPConfig:
        """Check every field; returns ``self`` (raises ``TypeError``/``ValueError``)."""
        if not isinstance(self.net, UNetConfig):
            raise TypeError(f"net must be a UNetConfig, got {type(self.net).__name__}")
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
        if self.schedule not in ("linear", "cosine"):
            raise ValueError(f"schedule must be 'linear' or 'cosine', got {self.schedule!r}")
        if self.prediction not in ("eps", "x0"):
            raise ValueError(f"prediction must be 'eps' or 'x0', got {self.prediction!r}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        for name in ("T", "train_steps", "batch_size", "init_iterations", "steps", "lora_rank", "em_iterations",
                     "mc_slices"):
            _int(name, getattr(self, name), 1)
        for name in ("warmup_steps", "adapt_steps", "seed"):
            _int(name, getattr(self, name), 0)
        _int("start_t", self.start_t, 0)
        if not self.start_t < self.T:
            raise ValueError(f"start_t must be < T={self.T}, got {self.start_t}")
        if not self.steps <= self.start_t + 1:
            raise ValueError(f"steps must be <= start_t + 1 = {self.start_t + 1}, got {self.steps}")
        for name in ("lr", "adapt_lr", "target_mean"):
            _real(name, getattr(self, name), positive=True)
        for name in ("weight_decay", "adapt_weight_decay", "beta"):
            _real(name, getattr(self, name))
        for name in ("grad_clip", "adapt_grad_clip", "lora_alpha"):
            if getattr(self, name) is not None:
                _real(name, getattr(self, name), positive=True)
        if not 0.0 <= float(self.ema_decay) < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay!r}")
        if not 0.0 <= float(self.lora_dropout) < 1.0:
            raise ValueError(f"lora_dropout must be in [0, 1), got {self.lora_dropout!r}")
        if not 0.0 <= float(self.eta) <= 1.0:
            raise ValueError(f"eta must be in [0, 1], got {self.eta!r}")
        if not 0.0 < float(self.target_mean) < 1.0:
            raise ValueError(f"target_mean must be in (0, 1) (images are clamped to [0, 1]), got {self.target_mean!r}")
        if not 0.0 <= float(self.mask_threshold) < 1.0:
            raise ValueError(f"mask_threshold must be in [0, 1), got {self.mask_threshold!r}")
        if self.lr_schedule not in ("constant", "cosine", "linear"):
            raise ValueError(f"lr_schedule must be 'constant', 'cosine' or 'linear', got {self.lr_schedule!r}")
        return self

    # -- (de)serialisation ------------------------------------------------------------------------
    def replace(self, **changes) -> DDIPConfig:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """A JSON-compatible dict (tuples become lists in JSON)."""
        return dataclasses.asdict(self)

    def to_json(self, path=None, indent: int = 2) -> str:
        """The configuration as JSON text (also written to ``path`` when given)."""
        text = json.dumps(self.to_dict(), indent=indent)
        if path is not None:
            from ..io.atomic import atomic_path

            with atomic_path(Path(path)) as tmp:
                tmp.write_text(text)
        return text

    @classmethod
    def from_dict(cls, d: dict) -> DDIPConfig:
        """Inverse of :meth:`to_dict`; missing fields take their defaults, unknown ones are refused.

        ``"net"`` may be partial: its keys override :data:`~pettk.diffusion.nets.configs.DDIP_TINY`.
        """
        if not isinstance(d, dict):
            raise TypeError(f"a DDIPConfig dict is required, got {type(d).__name__}")
        d = dict(d)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown DDIPConfig fields {sorted(unknown)}")
        net = d.pop("net", None)
        if isinstance(net, dict):
            net = dict(net)
            for key in ("channel_mults", "attention_levels", "image_size"):
                if key in net and net[key] is not None:
                    net[key] = tuple(net[key])
            unknown_net = set(net) - {f.name for f in dataclasses.fields(UNetConfig)}
            if unknown_net:
                raise ValueError(f"unknown DDIP net fields {sorted(unknown_net)}")
            net = DDIP_TINY.replace(**net)  # a partial "net" overrides the tiny preset's network
        elif net is None:
            net = DDIP_TINY
        return cls(net=net, **d).validate()

    @classmethod
    def from_json(cls, source) -> DDIPConfig:
        """Read a configuration from a JSON file path, a JSON string or a dict.

        A string naming one of ``"tiny"``, ``"gpu"``, ``"full"`` returns that preset.
        """
        if isinstance(source, dict):
            return cls.from_dict(source)
        if isinstance(source, str) and source.lower() in ("tiny", "gpu", "full"):
            return getattr(cls, source.upper())
        if isinstance(source, (str, Path)):
            text = str(source)
            if not text.lstrip().startswith("{"):
                path = Path(source)
                if not path.is_file():
                    raise FileNotFoundError(f"no DDIP configuration file at {path}")
                text = path.read_text()
            return cls.from_dict(json.loads(text))
        raise TypeError(f"source must be a path, a JSON string or a dict, got {type(source).__name__}")

    # -- pieces ---------------------------------------------------------------------------------
    def build_schedule(self) -> NoiseSchedule:
        return NoiseSchedule.linear(self.T) if self.schedule == "linear" else NoiseSchedule.cosine(self.T)

    def train_config(self) -> TrainConfig:
        return TrainConfig(steps=self.train_steps, batch_size=self.batch_size, lr=self.lr,
                           weight_decay=self.weight_decay, lr_schedule=self.lr_schedule,
                           warmup_steps=self.warmup_steps, ema_decay=self.ema_decay, grad_clip=self.grad_clip,
                           seed=self.seed, log_every=10, checkpoint_every=max(500, self.train_steps // 4))

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


def _real(name, value, positive: bool = False):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise TypeError(f"{name} must be a finite number, got {value!r}")
    if (positive and not value > 0) or value < 0:
        raise ValueError(f"{name} must be {'> 0' if positive else '>= 0'}, got {value!r}")
    return float(value)


DDIPConfig.TINY = DDIPConfig()
DDIPConfig.GPU = DDIPConfig(net=DDIP_GPU, prediction="eps", train_steps=20_000, batch_size=16, lr=1e-4,
                            ema_decay=0.999, lr_schedule="constant", warmup_steps=500, start_t=200, steps=100,
                            adapt_steps=2, adapt_lr=5e-4, lora_rank=4, lora_dropout=0.1, em_iterations=5)
DDIPConfig.FULL = DDIPConfig(net=DDIP_FULL, prediction="eps", train_steps=1_100_000, batch_size=16, lr=1e-4,
                             ema_decay=0.9999, lr_schedule="constant", warmup_steps=1000, start_t=200, steps=201,
                             adapt_steps=2, adapt_lr=5e-4, lora_rank=4, lora_dropout=0.1, em_iterations=5)


# --------------------------------------------------------------------------------------------
# Slabs (2.5D) and training images
# --------------------------------------------------------------------------------------------
def slab_indices(n_slices: int, channels: int) -> torch.Tensor:
    """Slice indices of every slab: ``(n_slices, channels)``, slab ``z`` holds ``z - c//2 .. z + c//2``
    clamped to the volume (edge slices replicated)."""
    half = channels // 2
    z = torch.arange(n_slices)[:, None] + torch.arange(-half, half + 1)[None, :]
    return z.clamp(0, n_slices - 1)


class DDIPImages(torch.utils.data.Dataset):
    """In-memory normalised training slabs ``{"x": (C, H, W), "cond": (C, H, W)}`` for :func:`train_ddip`.

    Parameters
    ----------
    activity, mr : arrays or tensors ``(N, H, W)``
        Activity images (any units) and the co-registered MR, slice by slice.
    config : DDIPConfig
        Gives the slab size (``net.in_channels``), whether to serve ``cond`` and the intensity
        normalisation (each slab divided by :meth:`DDIPConfig.intensity_scale` of its centre
        slice; the MR slab by its maximum).
    groups : sequence of hashables, optional
        The subject of every slice: 2.5D slabs never cross subjects and ``slice_positions`` order
        the slices inside a subject (default: one subject, in the given order).
    slice_positions : sequence of numbers, optional
        Axial position (or index) of every slice inside its subject.
    """

    def __init__(self, activity, mr, config: DDIPConfig, groups=None, slice_positions=None):
        config = config.validate()
        act = torch.as_tensor(np.asarray(activity, dtype=np.float32))
        mri = torch.as_tensor(np.asarray(mr, dtype=np.float32))
        if act.ndim != 3 or mri.shape != act.shape:
            raise ValueError(f"activity and mr must both have shape (N, H, W), got {tuple(act.shape)} and "
                             f"{tuple(mri.shape)}")
        if act.shape[0] == 0:
            raise ValueError("no training images")
        if not bool(torch.isfinite(act).all()) or bool((act < 0).any()):
            raise ValueError("activity images must be finite and >= 0")
        n = act.shape[0]
        groups = [0] * n if groups is None else list(groups)
        positions = list(range(n)) if slice_positions is None else [float(p) for p in slice_positions]
        if len(groups) != n or len(positions) != n:
            raise ValueError(f"groups and slice_positions must have one entry per image ({n})")
        c = config.slices
        slabs, conds = [], []
        by_group: dict = {}
        for i, gname in enumerate(groups):
            by_group.setdefault(gname, []).append(i)
        for members in by_group.values():
            members = sorted(members, key=lambda i: positions[i])
            order = torch.tensor(members)
            idx = order[slab_indices(len(members), c)]           # (n_g, C) global indices
            a, m = act[idx], mri[idx]                            # (n_g, C, H, W)
            centre = c // 2
            use_mr = m[:, centre] if config.conditional else None
            scale = config.intensity_scale(a[:, centre], use_mr)
            slabs.append(a / scale[:, None, None, None])
            conds.append(m / m.amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-12))
        x = torch.cat(slabs)
        cond = torch.cat(conds)
        if config.augment:
            x = torch.cat([x, x.flip(-2)])    # left-right mirror (x is the first image axis)
            cond = torch.cat([cond, cond.flip(-2)])
        self.x = x.contiguous()
        self.cond = cond.contiguous() if config.conditional else None

    def __len__(self) -> int:
        return self.x.shape[0]

    def __getitem__(self, i: int) -> dict:
        item = {"x": self.x[i]}
        if self.cond is not None:
            item["cond"] = self.cond[i]
        return item

    @classmethod
    def from_dataset(cls, root, config: DDIPConfig, split: str = "train") -> DDIPImages:
        """Slabs from the ``truth`` and ``mr`` images of a :func:`pettk.sim.build_dataset` split."""
        from ..sim.datasets import SliceDataset

        manifest = json.loads((Path(root) / "manifest.json").read_text()) if Path(root).is_dir() else None
        if manifest is None:
            raise FileNotFoundError(f"no pettk data set at {root} (missing manifest.json)")
        drf = sorted(manifest["drf_keys"], key=float)[0]
        ds = SliceDataset(root, split, float(drf), "none")
        if len(ds) == 0:
            raise ValueError(f"the {split!r} split of {root} is empty")
        cfg = manifest.get("config", {})
        if config.slices > 1:
            n = int(cfg.get("slices_per_subject", 1))
            spacing = float(cfg.get("slice_range_mm", 0.0)) / max(n - 1, 1)
            if n > 1 and abs(spacing - 2.03125) > 0.5:
                log.warning("2.5D training on slices %.2f mm apart (adjacent slices are 2.03 mm apart); "
                            "build the data set with slice_range_mm = (slices_per_subject - 1) * 2.03125", spacing)
        items = [ds[i] for i in range(len(ds))]
        return cls(np.stack([it["truth"].numpy() for it in items]), np.stack([it["mr"].numpy() for it in items]),
                   config, groups=[it["subject"] for it in items], slice_positions=[it["slice"] for it in items])


def phantom_training_images(config: DDIPConfig, n_subjects: int, slices_per_subject: int = 1, *,
                            image_size: int | None = None, tracer: str = "fdg", lesions: int = 2,
                            slice_range_mm: float | None = None, seed: int = 0) -> DDIPImages:
    """Training slabs straight from :func:`pettk.sim.brain_phantom` (no scan simulation): quick pretraining.

    Subject ``i`` uses seed ``seed + i``; its slices are evenly spaced over ``slice_range_mm``
    around the basal-ganglia level (default: adjacent 2.03 mm slices for 2.5D, 40 mm otherwise)
    on the 267 mm field of view of :class:`pettk.sim.DatasetConfig` at ``image_size`` (default
    ``config.net.image_size``).
    """
    from ..geometry import ImageGrid
    from ..sim.phantoms import brain_phantom

    _int("n_subjects", n_subjects, 1)
    _int("slices_per_subject", slices_per_subject, 1)
    size = int(image_size or config.net.image_size[0])
    thick = 2.03125
    if slice_range_mm is None:
        slice_range_mm = (slices_per_subject - 1) * thick if config.slices > 1 else 40.0
    zs = np.linspace(-slice_range_mm / 2, slice_range_mm / 2, slices_per_subject) if slices_per_subject > 1 else [0.0]
    voxel = 128 * 2.0863 / size
    grid = ImageGrid((size, size, len(zs)), (voxel, voxel, thick))
    acts, mrs, groups, pos = [], [], [], []
    for s in range(n_subjects):
        for k, z in enumerate(zs):
            slab = ImageGrid((size, size, 1), (voxel, voxel, thick), origin_mm=grid.origin_mm[:2] + (float(z),))
            ph = brain_phantom(slab, seed=seed + s, tracer=tracer, lesions=lesions)
            acts.append(ph.activity[..., 0])
            mrs.append(ph.mr[..., 0])
            groups.append(s)
            pos.append(k)
    return DDIPImages(np.stack(acts), np.stack(mrs), config, groups=groups, slice_positions=pos)


# --------------------------------------------------------------------------------------------
# The prior
# --------------------------------------------------------------------------------------------
class _EpsHead(nn.Module):
    """The first ``channels`` outputs of a (learned-variance) U-Net: what the diffusion loss sees."""

    def __init__(self, net: UNet, channels: int):
        super().__init__()
        self.net = net
        self.channels = channels

    def forward(self, x, t, cond=None):
        out = self.net(x, t, cond)
        return out[:, :self.channels] if out.shape[1] != self.channels else out


class DDIP(ImagePrior):
    """A pretrained, MR-conditioned image diffusion model used as a DDIP reconstruction prior.

    Parameters
    ----------
    config : DDIPConfig
    net : UNet, optional
        The pretrained score network (a fresh, untrained one from ``config.net`` when omitted).
        It is never modified: reconstructions adapt a LoRA-wrapped working copy.

    Attributes
    ----------
    history : dict
        Pretraining loss curve (filled by :func:`train_ddip`).
    last_info : dict
        Details of the last :meth:`reconstruct` call: ``init`` (the start image, activity),
        ``scale`` (activity per unit normalised value, per slice), ``beta_abs`` (the HQS weight in
        counts/activity²), ``trainable`` (number of fine-tuned parameters), ``losses`` (the
        fine-tuning loss of every step).
    """

    def __init__(self, config: DDIPConfig | None = None, net: UNet | None = None):
        self.config = (config or DDIPConfig.TINY).validate()
        if net is None:
            net = self.config.net.build()
        if not isinstance(net, UNet):
            raise TypeError(f"net must be a pettk UNet, got {type(net).__name__}")
        if any(isinstance(m, LoRALayer) for m in net.modules()):
            raise ValueError("net already holds LoRA layers; give the plain pretrained network")
        for name in ("in_channels", "out_channels", "cond_channels"):
            if getattr(net, name) != getattr(self.config.net, name):
                raise ValueError(f"net.{name}={getattr(net, name)} does not match config.net.{name}="
                                 f"{getattr(self.config.net, name)}")
        self.net = net.eval()
        for p in self.net.parameters():
            p.requires_grad_(False)
        self.schedule = self.config.build_schedule()
        self.history: dict = {}
        self.last_info: dict = {}
        self._work = None  # (key, LoRA-wrapped copy, trainable parameters)

    # -- device --------------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def to(self, device) -> DDIP:
        self.net.to(device)
        self._work = None
        return self

    def replace(self, **changes) -> DDIP:
        """A DDIP sharing this pretrained network with some reconstruction settings changed
        (e.g. ``ddip.replace(steps=50, beta=0.1)``); network fields cannot change."""
        config = self.config.replace(**changes).validate()
        for name in ("net", "schedule", "T", "prediction", "target_mean", "mask_threshold"):
            if getattr(config, name) != getattr(self.config, name):
                raise ValueError(f"{name} is fixed by the pretrained model and cannot be replaced")
        other = DDIP(config, self.net)
        other.history = self.history
        return other

    # -- the LoRA-wrapped working copy ------------------------------------------------------------------
    def _working_copy(self, generator: torch.Generator):
        cfg = self.config
        key = (cfg.lora_rank, cfg.lora_alpha, cfg.lora_dropout, cfg.train_biases, str(self.device))
        if self._work is None or self._work[0] != key:
            import copy

            work = copy.deepcopy(self.net)
            inject_lora(work, cfg.lora_rank, cfg.lora_alpha, targets=(ResBlock, AttentionBlock),
                        dropout=cfg.lora_dropout)
            trainable = mark_only_lora_and_bias_trainable(work, bias=cfg.train_biases)
            work.eval()
            self._work = (key, work, trainable)
        _, work, trainable = self._work
        reset_lora(work, generator)
        return work, trainable

    # -- input checks -------------------------------------------------------------------------------------
    def _check_inputs(self, forward_model, y, mr, init):
        y_t, images = check_prior_inputs(forward_model, y, {"mr": mr, "init": init}, self.net.downsample_factor)
        mr_t, init_t = images["mr"], images["init"]
        shape_in = tuple(forward_model.shape_in)
        if self.config.conditional and mr_t is None:
            raise ValueError("this DDIP model is MR-conditioned: pass mr (the co-registered MR image, shape "
                             f"{shape_in})")
        if mr_t is not None and not float(mr_t.max()) > 0:
            raise ValueError("mr is zero everywhere")
        return y_t, mr_t, init_t

    # -- reconstruction -----------------------------------------------------------------------------------
    def reconstruct(self, forward_model: ForwardModel, y, *, mr=None, init=None, adapt: bool = True,
                    seed: int | None = None, progress: bool = False, callback=None, chunk_size: int = 32):
        """Reconstruct an activity image with DDIP (METHODS §4.4).

        Parameters
        ----------
        forward_model : ForwardModel
            The measurement model ``ybar = mult · P(psf(x)) + additive`` (attenuation,
            normalisation, counts scale and background are all used in the EM steps); 2D
            (``shape_in = (nx, ny)``) or 3D (``(nx, ny, nz)``, processed slice by slice with one
            shared LoRA; slab ``z`` of a 2.5D network holds slices ``z-1, z, z+1``, edges
            replicated, so a 2D model gives it the slice three times). ``nx, ny`` must be
            divisible by the network's down-sampling factor.
        y : array or tensor ``forward_model.shape_out``
            Measured counts (>= 0, finite).
        mr : array or tensor ``forward_model.shape_in``, optional
            The co-registered MR image (>= 0, any scale; each slab is divided by its maximum).
            Required for an MR-conditioned model (ignored by an unconditional one).
        init : array or tensor ``forward_model.shape_in``, optional
            The start image (activity); default MLEM with ``config.init_iterations`` iterations
            from a uniform image.
        adapt : bool
            Fine-tune the LoRA adapters at every step (DDIP). ``False`` (or ``adapt_steps = 0``)
            runs the same conditional SDEdit sampling without adaptation (no data consistency
            apart from the start image).
        seed : int, optional
            Seeds the SDEdit noise, the η noise, the LoRA initialisation and the Monte-Carlo
            slice draws (default ``config.seed``): the same seed gives the same image.
        progress : bool
            A tqdm bar over the sampling steps.
        callback : callable ``(i, t, x0_activity)``, optional
            Called after every step with the current estimate (activity, ``shape_in``).
        chunk_size : int
            Slabs per network call when no gradient is needed (3D volumes).

        Returns
        -------
        The activity image, ``forward_model.shape_in``, in ``y``'s array type (float32; a torch
        result lives on ``y``'s device).

        Notes
        -----
        ``β`` is dimensionless: the penalised-EM step uses ``β_abs = beta · mean_FOV(A^T 1) / s``
        (counts/activity²), where ``s`` is the activity of one normalised unit. In normalised
        units the anchor's curvature relative to the likelihood's at a voxel of value ``u`` and
        mean sensitivity is then about ``beta · u``, independent of the count level and units.
        """
        cfg = self.config
        y_t, mr_t, init_t = self._check_inputs(forward_model, y, mr, init)
        if not isinstance(adapt, bool):
            raise TypeError(f"adapt must be a bool, got {adapt!r}")
        seed = cfg.seed if seed is None else _int("seed", seed, 0)
        chunk_size = _int("chunk_size", chunk_size, 1)
        if callback is not None and not callable(callback):
            raise TypeError("callback must be callable")
        is_numpy = isinstance(y, np.ndarray)
        device = y_t.device
        if self.device != device:
            self.to(device)
        model = forward_model
        if model.mult is not None and model.mult.device != device or (
                model.additive is not None and model.additive.device != device):
            raise ValueError(f"forward_model's sinograms are not on y's device {device}; use forward_model.to(...)")

        shape_in = tuple(model.shape_in)
        three_d = len(shape_in) == 3
        n_z = shape_in[2] if three_d else 1

        # 1. warm start and normalisation -------------------------------------------------------
        if init_t is None:
            init_t = mlem(model, y_t, cfg.init_iterations)
        init_t = init_t.to(torch.float32)
        vol = init_t.permute(2, 0, 1) if three_d else init_t[None]          # (nz, H, W)
        mr_vol = None
        if mr_t is not None:
            mr_vol = mr_t.permute(2, 0, 1) if three_d else mr_t[None]
        scale = cfg.intensity_scale(vol, mr_vol if cfg.conditional else None)   # (nz,)
        idx = slab_indices(n_z, cfg.slices).to(device)                    # (nz, C)
        centre = cfg.slices // 2
        cond = None
        if cfg.conditional:
            cond = mr_vol[idx]
            cond = cond / cond.amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-12)

        def slabs(volume):                       # (nz, H, W) activity → (nz, C, H, W) normalised
            return volume[idx] / scale[:, None, None, None]

        def to_image(x0):                        # (nz, C, H, W) normalised → activity shape_in
            v = x0[:, centre] * scale[:, None, None]
            return v.permute(1, 2, 0) if three_d else v[0]

        sens = model.sensitivity(torch.float32, device)
        fov = sens > SENSITIVITY_FLOOR * float(sens.max())
        s_ref = float(scale.mean())
        beta_abs = float(cfg.beta) * float(sens[fov].mean()) / s_ref if bool(fov.any()) else 0.0

        gen = torch.Generator(device=device).manual_seed(seed)
        gen_cpu = torch.Generator().manual_seed(seed + 1)
        grid = self.schedule.timesteps(cfg.steps, cfg.start_t).tolist()
        x0_init = slabs(vol).clamp(0.0, 1.0)
        noise = torch.randn(x0_init.shape, generator=gen, device=device, dtype=x0_init.dtype)
        x = self.schedule.q_sample(x0_init, grid[0], noise)

        do_adapt = adapt and cfg.adapt_steps > 0
        net, trainable = self._working_copy(gen_cpu) if do_adapt else (self.net, [])
        losses: list[float] = []
        info = {"init": init_t, "scale": scale, "beta_abs": beta_abs,
                "trainable": sum(p.numel() for p in trainable), "losses": losses}

        def predict(xs, t, conds, grad=False):
            def call(a, c):
                out = net(a, torch.full((a.shape[0],), int(t), dtype=torch.long, device=device), c)
                return out[:, :cfg.slices] if out.shape[1] != cfg.slices else out
            ctx = torch.enable_grad() if grad else torch.no_grad()
            with ctx:
                if grad or xs.shape[0] <= chunk_size:
                    return model_predictions(lambda a, _t: call(a, conds), xs, t, self.schedule, cfg.prediction)
                parts = [model_predictions(lambda a, _t, c=None if conds is None else conds[k:k + chunk_size]:
                                           call(a, c), xs[k:k + chunk_size], t, self.schedule, cfg.prediction)
                         for k in range(0, xs.shape[0], chunk_size)]
                return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])

        def pem_target(x0_all):                  # penalised EM anchored at x̂₀ (activity), → (nz, C, H, W)
            anchor = to_image(x0_all.clamp(0.0, 1.0))
            floor = 1e-6 * float(anchor.max()) + 1e-12
            a = anchor.clamp_min(floor)
            for _ in range(cfg.em_iterations):
                a = penalised_em_step(model, y_t, a, anchor, beta_abs, sens=sens)
            a_vol = a.permute(2, 0, 1) if three_d else a[None]
            return slabs(a_vol)

        def sinogram_loss(x0_sel, sel, x0_all):
            full = x0_all.detach().clone()
            full = torch.index_put(full, (sel,), x0_sel)
            act = to_image(full.clamp_min(0.0))
            ybar = model.forward(act)
            floor = max(1e-3 * float(y_t.mean()), 1e-8)
            yb = ybar.clamp_min(floor)
            dev = (yb - y_t - torch.xlogy(y_t, yb) + torch.xlogy(y_t, y_t.clamp_min(floor))).sum()
            return dev / y_t.sum().clamp_min(1.0)

        try:
            for i, t in enumerate(tqdm(grid, desc="DDIP", disable=not progress, leave=False)):
                t_next = grid[i + 1] if i + 1 < len(grid) else -1
                if do_adapt:
                    opt = torch.optim.AdamW(trainable, lr=cfg.adapt_lr, weight_decay=cfg.adapt_weight_decay)
                    _lora_dropout(net, True)
                    for _ in range(cfg.adapt_steps):
                        if cfg.mc_slices >= n_z:
                            sel = torch.arange(n_z, device=device)
                        else:
                            sel = torch.randperm(n_z, generator=gen_cpu)[:cfg.mc_slices].to(device)
                        x0_sel, _ = predict(x[sel], t, None if cond is None else cond[sel], grad=True)
                        if sel.numel() == n_z:
                            x0_all = x0_sel.detach()
                        else:
                            x0_all, _ = predict(x, t, cond)
                            x0_all[sel] = x0_sel.detach()
                        if cfg.loss == "image":
                            with torch.no_grad():
                                target = pem_target(x0_all)[sel]
                            loss = torch.mean((x0_sel - target) ** 2)
                        else:
                            with torch.enable_grad():
                                loss = sinogram_loss(x0_sel, sel, x0_all)
                        opt.zero_grad(set_to_none=True)
                        loss.backward()
                        if cfg.adapt_grad_clip is not None:
                            torch.nn.utils.clip_grad_norm_(trainable, cfg.adapt_grad_clip)
                        opt.step()
                        losses.append(float(loss.detach()))
                    _lora_dropout(net, False)
                x0, eps = predict(x, t, cond)
                x0 = x0.clamp(0.0, 1.0)
                x = ddim_step(self.schedule, t, t_next, x0, eps, cfg.eta, generator=gen, eta_form="ddip")
                if callback is not None:
                    callback(i, t, to_image(x0))
            result = to_image(x0).detach()
        finally:
            if do_adapt:
                _lora_dropout(net, False)
                reset_lora(net, gen_cpu)   # leave the working copy equal to the pretrained network
        self.last_info = info
        return result.cpu().numpy() if is_numpy else result

    # -- persistence ---------------------------------------------------------------------------------------
    def save(self, path) -> Path:
        """Write ``path`` (``.safetensors``: the pretrained network) and its JSON configuration."""
        meta = {"method": "DDIP", "ddip_config": self.config.to_dict(), "history": self.history}
        return save_checkpoint(path, self.net.state_dict(), meta)

    @classmethod
    def load(cls, path, device="cpu") -> DDIP:
        """Read a model written by :meth:`save`."""
        state, meta = load_checkpoint(path, device=device)
        if meta.get("method") != "DDIP":
            raise ValueError(f"{path} is not a DDIP checkpoint (method={meta.get('method')!r})")
        config = DDIPConfig.from_dict(meta["ddip_config"])
        net = config.net.build()
        net.load_state_dict(state)
        model = cls(config, net.to(device))
        model.history = meta.get("history", {})
        return model


def _lora_dropout(net: nn.Module, active: bool) -> None:
    """Switch the LoRA-path dropout on during fine-tuning only (the base network stays in eval mode)."""
    for m in net.modules():
        if isinstance(m, LoRALayer):
            m.dropout.train(active)


# --------------------------------------------------------------------------------------------
# Pretraining
# --------------------------------------------------------------------------------------------
def train_ddip(config: DDIPConfig, dataset_root, out_dir=None, progress: bool = False, device=None, *,
               resume: bool = False) -> DDIP:
    """Pretrain DDIP's score network (ε- or x0-MSE, MR concatenated) on one tracer's images.

    Parameters
    ----------
    config : DDIPConfig
    dataset_root : path or DDIPImages
        A data set folder built by :func:`pettk.sim.build_dataset` (its ``train`` split's
        ``truth`` and ``mr`` images; for 2.5D build it with adjacent slices), or training slabs
        made by :class:`DDIPImages` / :func:`phantom_training_images`.
    out_dir : path, optional
        Trainer checkpoints (``checkpoint.safetensors``, resumable) and the model
        (``ddip.safetensors`` + ``ddip.json``).
    progress : bool
    device : torch device, optional (default CPU)
    resume : bool
        Continue from ``out_dir/checkpoint.safetensors`` when it exists.

    Returns
    -------
    DDIP
        The prior with the EMA weights (when ``config.ema_decay > 0``) and the loss curve in
        ``history``.
    """
    if not isinstance(config, DDIPConfig):
        raise TypeError(f"config must be a DDIPConfig, got {type(config).__name__}")
    config = config.validate()
    if isinstance(dataset_root, DDIPImages):
        data = dataset_root
    elif isinstance(dataset_root, (str, Path)):
        data = DDIPImages.from_dataset(dataset_root, config)
    else:
        raise TypeError(f"dataset_root must be a data set folder or DDIPImages, got {type(dataset_root).__name__}")
    if data.x.shape[1] != config.slices:
        raise ValueError(f"the training slabs have {data.x.shape[1]} slices but config.net.in_channels is "
                         f"{config.slices}")
    if config.conditional and data.cond is None:
        raise ValueError("config.net is MR-conditioned but the training slabs have no MR")
    f = 2 ** (len(config.net.channel_mults) - 1)
    if data.x.shape[-1] % f or data.x.shape[-2] % f:
        raise ValueError(f"training images {tuple(data.x.shape[-2:])} must be divisible by {f}")
    device = torch.device(device) if device is not None else torch.device("cpu")
    out = None if out_dir is None else Path(out_dir)
    torch.manual_seed(config.seed)
    net = config.net.build().to(device)
    head = _EpsHead(net, config.slices)
    schedule = config.build_schedule().to(device)
    loss = diffusion_loss(schedule, key="x", prediction=config.prediction,
                          cond_key="cond" if config.conditional else None)
    trainer = Trainer(head, loss, data, config.train_config(), out_dir=out, device=device,
                      model_config={"ddip_config": config.to_dict()}, progress=progress)
    if resume and out is None:
        raise ValueError("resume=True needs an out_dir")
    trainer.fit(resume=resume)
    trained = trainer.averaged_model().net.eval()
    prior = DDIP(config, trained)
    prior.history = {"loss": list(trainer.history.loss)}
    if out is not None:
        prior.save(out / "ddip.safetensors")
    return prior

"""DREAM: a diffusion transformer with random masks for low-dose PET sinograms.

DREAM (METHODS.md §2) is a DiffIR-type two-stage "compact prior" restorer applied to sinograms:

- **random block masks** (:func:`random_block_masks`): the padded sinogram plane is cut into a
  grid of ``cell_size`` cells; ``round(n_cells · mask_fraction)`` cells are drawn uniformly *with
  replacement* and zeroed (≤ 10 % of the area by default). The block fed to the networks is
  ``[m₁⊙s, …, m_{N-1}⊙s, s]`` (:func:`block_masks` + :func:`make_block`, ``N = 3`` by default);
  the *same* masks multiply the low- and the full-dose copy;
- the **hierarchical masks** are a crop-size curriculum (:func:`curriculum_stage`): masks are
  drawn on the whole plane, then random crops of growing size (and shrinking batch) are taken,
  so small crops see large holes relative to their field of view;
- **stage 1 (S1)**: the compact prior encoder CPEN-S1 sees the low- *and* the full-dose block and
  gives ``z ∈ R^{prior_dim}``; the Restormer-style transformer ``G`` restores the low-dose block
  with ``z`` injected in every attention and feed-forward sub-layer; loss ``L1(G(lq, z), gt)``;
- **stage 2 (S2)**: CPEN-S2 sees the low-dose block only and conditions a 4-step latent
  diffusion (:func:`latent_schedule`: ``β`` linear in ``√β`` from 0.1 to 0.99) whose MLP
  denoiser predicts ``ẑ₀`` (x0 parameterisation); the reverse steps are the *deterministic*
  posterior means (:func:`latent_reverse`). Phase A trains CPEN-S2 + denoiser on
  ``L1(ẑ, z_S1)`` (the frozen teacher prior), phase B all of S2 (``G`` initialised from S1) on
  ``L1(G(lq, ẑ), gt) + L1(ẑ, z_S1)``;
- **inference** (:meth:`DREAM.restore`): ``DRF·y_low`` divided by its maximum, padded
  symmetrically to the network plane, masked block, CPEN-S2 → latent diffusion from
  ``N(0, I)`` → ``G``, then the **mask-aware weighted average** of the channels
  (:func:`mask_aware_average`; optionally over ``K`` independent mask draws), crop back, undo the
  scale, clip negatives, optional total-count rescale. Reconstruct with MLEM/OSEM and the slice's
  physics model (:func:`pettk.priors.reconstruct`, :meth:`DREAM.restore_and_reconstruct`).

The networks are the shared building blocks of :mod:`pettk.diffusion.nets.restormer` (presets
:data:`~pettk.diffusion.nets.DREAM_TINY` / ``_GPU`` / ``_FULL``); training runs on
:class:`~pettk.diffusion.train.Trainer` (EMA, exact resume, checkpoints). Configurations:
:attr:`DREAMConfig.TINY`, :attr:`DREAMConfig.GPU`, :attr:`DREAMConfig.FULL` (METHODS §2.9); a
JSON file holding ``{"base": "tiny", ...overrides}`` or a full ``to_dict()`` is read by
:meth:`DREAMConfig.from_json`. Ablations: ``n_channels=1`` (no masks) and ``prior=False`` (``G``
without prior injection) at training time, ``restore(..., use_prior=False)`` (``z = 0``) at test
time.

Reference: Huang, He, Chen, Liu, Wang, Li, Liu, "DREAM: Diffusion transformer meets random masks
for low-dose PET sinogram restoration", arXiv 2503.08339 (2025).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import numbers
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..diffusion.nets import DREAM_FULL, DREAM_GPU, DREAM_TINY, DREAMNetsConfig
from ..diffusion.nets.restormer import TransformerRestorer
from ..diffusion.schedules import NoiseSchedule
from ..diffusion.train import TrainConfig, Trainer
from ..io.checkpoint import load_checkpoint, save_checkpoint
from ..physics import ForwardModel
from .base import SinogramRestorer, check_low_dose_counts, reconstruct

__all__ = [
    "DREAMConfig", "DREAM", "train_dream", "random_block_masks", "block_masks", "make_block",
    "mask_aware_average", "curriculum_stage", "random_crop", "latent_schedule", "latent_reverse",
    "plane_shape", "pad_plane", "crop_plane", "normalise_dream", "count_parameters", "DREAM_SCALE_FLOOR",
    "PLANE_MULTIPLE",
]

#: The normalisation factor ``max(DRF·y_low)`` is floored at this value (as ``SliceDataset``'s "dream").
DREAM_SCALE_FLOOR = 1e-12
#: Padded planes and crops are multiples of this (``G`` down-samples by 8, CPEN by 4).
PLANE_MULTIPLE = 8

_PRESETS = {"tiny": "TINY", "gpu": "GPU", "full": "FULL"}


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------
def _positive_int(name, value, minimum=1):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class DREAMConfig:
    """DREAM's masks, curriculum, networks and optimisation (METHODS §2.9). JSON-serialisable.

    Attributes
    ----------
    net : DREAMNetsConfig
        CPEN-S1/S2, ``G`` and the latent denoiser; ``net.in_channels`` must equal ``n_channels``
        (``replace(n_channels=...)`` keeps them in step).
    n_channels : int
        ``N``: the block holds ``N - 1`` masked copies and the unmasked sinogram (3). ``N = 1``
        is the "no masks" ablation.
    cell_size : int
        Mask cell size in pixels (16 in the paper, 8 in the tiny configuration).
    mask_fraction : float
        ``1 -`` white rate: ``round(n_cells · mask_fraction)`` cells are drawn with replacement (0.1).
    mask_mode : {"fixed", "scaled"}
        ``"fixed"`` (paper): masks on the whole plane with fixed cells, then cropped.
        ``"scaled"``: masks drawn on each crop with cells scaled by ``crop / plane``.
    pad_mode : {"square", "multiple"}
        ``"square"`` (paper): pad the shorter axis symmetrically to a square plane whose side is a
        multiple of 8. ``"multiple"``: pad each axis to its own multiple of 8 (cheaper).
    crop_sizes, batch_sizes, curriculum : tuples of equal length
        The "hierarchical mask" curriculum: crop side (multiple of 8; clamped to the plane),
        batch size and fraction of each training stage's steps (fractions sum to 1).
    s1_steps, s2a_steps, s2b_steps : int
        Optimiser steps of stage 1, stage-2 phase A (prior only) and phase B (joint); 0 skips.
    lr : float
        Adam learning rate (2e-4 in the paper).
    s1_betas, s2_betas : (float, float)
        Adam betas of stage 1 and stage 2.
    lr_schedule : {"cosine", "constant", "paper"}
        Per training stage: cosine decay to ``min_lr_ratio · lr``, constant, or the paper's
        (S1: cosine with restarts at 30 % / 70 % of the steps, rising to 1.425·lr then decaying
        to 0.005·lr; S2A: ×0.1 after 60 %; S2B: ×0.5 every 80/300 of the phase).
    min_lr_ratio, warmup_steps, ema_decay, grad_clip, weight_decay : optimisation details
        (passed to :class:`~pettk.diffusion.train.TrainConfig`).
    latent_beta_start, latent_beta_end : float
        End points of the latent schedule (``T = net.latent_timesteps``).
    prior : bool
        ``False``: the "no prior" ablation: ``G`` without prior injection, trained alone (stage 1
        only; no CPEN, no latent diffusion).
    augment : bool
        Random sinogram flips (views reversed together with the radial axis) in training.
    channel_weights : tuple of N floats or None
        Weights ``w_k`` of the mask-aware average (equal by default).
    n_draws : int
        Default number ``K`` of independent mask draws averaged at test time (1).
    rescale_counts : bool
        Default for rescaling the restored sinogram to the total of ``DRF·y_low``.
    drf : float
        The dose-reduction factor this model is for (one model per DRF).
    seed : int
    """

    net: DREAMNetsConfig = DREAM_TINY
    n_channels: int = 3
    cell_size: int = 8
    mask_fraction: float = 0.1
    mask_mode: str = "fixed"
    pad_mode: str = "square"
    crop_sizes: tuple = (32, 64)
    batch_sizes: tuple = (4, 4)
    curriculum: tuple = (0.5, 0.5)
    s1_steps: int = 300
    s2a_steps: int = 100
    s2b_steps: int = 200
    lr: float = 2e-3
    s1_betas: tuple = (0.9, 0.999)
    s2_betas: tuple = (0.9, 0.99)
    lr_schedule: str = "cosine"
    min_lr_ratio: float = 0.05
    warmup_steps: int = 0
    ema_decay: float = 0.0
    grad_clip: float | None = 1.0
    weight_decay: float = 0.0
    latent_beta_start: float = 0.1
    latent_beta_end: float = 0.99
    prior: bool = True
    augment: bool = False
    channel_weights: tuple | None = None
    n_draws: int = 1
    rescale_counts: bool = False
    drf: float = 20.0
    seed: int = 0

    TINY = None  # set below (dataclass fields cannot default to instances of the class itself)
    GPU = None
    FULL = None

    # -- checks --------------------------------------------------------------------------------------
    def validate(self) -> DREAMConfig:
        """Check every field; return ``self`` (raises ``TypeError``/``ValueError`` naming the field)."""
        if not isinstance(self.net, DREAMNetsConfig):
            raise TypeError(f"net must be a DREAMNetsConfig, got {type(self.net).__name__}")
        n = _positive_int("n_channels", self.n_channels)
        if self.net.in_channels != n:
            raise ValueError(f"net.in_channels={self.net.in_channels} must equal n_channels={n} "
                             f"(use config.replace(n_channels={n}), which updates the net too)")
        _positive_int("cell_size", self.cell_size)
        if not 0.0 <= float(self.mask_fraction) <= 1.0:
            raise ValueError(f"mask_fraction must lie in [0, 1], got {self.mask_fraction!r}")
        if self.mask_mode not in ("fixed", "scaled"):
            raise ValueError(f"mask_mode must be 'fixed' or 'scaled', got {self.mask_mode!r}")
        if self.pad_mode not in ("square", "multiple"):
            raise ValueError(f"pad_mode must be 'square' or 'multiple', got {self.pad_mode!r}")
        k = len(self.crop_sizes)
        if k == 0 or len(self.batch_sizes) != k or len(self.curriculum) != k:
            raise ValueError(f"crop_sizes, batch_sizes and curriculum must be non-empty and of equal length, got "
                             f"{self.crop_sizes!r}, {self.batch_sizes!r}, {self.curriculum!r}")
        for c in self.crop_sizes:
            if _positive_int("crop_sizes entries", c) % PLANE_MULTIPLE:
                raise ValueError(f"crop_sizes entries must be multiples of {PLANE_MULTIPLE}, got {c!r}")
        for b in self.batch_sizes:
            _positive_int("batch_sizes entries", b)
        fr = [float(f) for f in self.curriculum]
        if any(not f >= 0 for f in fr) or not math.isclose(sum(fr), 1.0, rel_tol=1e-6):
            raise ValueError(f"curriculum fractions must be >= 0 and sum to 1, got {self.curriculum!r}")
        for name in ("s1_steps", "s2a_steps", "s2b_steps"):
            _positive_int(name, getattr(self, name), minimum=0)
        if self.s1_steps == 0:
            raise ValueError("s1_steps must be >= 1 (stage 1 trains G and the teacher prior)")
        if not float(self.lr) > 0:
            raise ValueError(f"lr must be > 0, got {self.lr!r}")
        for name in ("s1_betas", "s2_betas"):
            betas = getattr(self, name)
            if len(betas) != 2 or not all(0.0 <= float(b) < 1.0 for b in betas):
                raise ValueError(f"{name} must be two numbers in [0, 1), got {betas!r}")
        if self.lr_schedule not in ("cosine", "constant", "paper"):
            raise ValueError(f"lr_schedule must be 'cosine', 'constant' or 'paper', got {self.lr_schedule!r}")
        if not 0.0 <= float(self.min_lr_ratio) <= 1.0:
            raise ValueError(f"min_lr_ratio must lie in [0, 1], got {self.min_lr_ratio!r}")
        if not 0.0 <= float(self.ema_decay) < 1.0:
            raise ValueError(f"ema_decay must lie in [0, 1), got {self.ema_decay!r}")
        if not 0.0 < float(self.latent_beta_start) < 1.0 or not 0.0 < float(self.latent_beta_end) < 1.0:
            raise ValueError(f"latent_beta_start/end must lie in (0, 1), got {self.latent_beta_start!r}, "
                             f"{self.latent_beta_end!r}")
        if self.channel_weights is not None:
            _check_weights(self.channel_weights, n)
        _positive_int("n_draws", self.n_draws)
        if not float(self.drf) >= 1:
            raise ValueError(f"drf must be >= 1, got {self.drf!r}")
        return self

    # -- copies and (de)serialisation ---------------------------------------------------------------
    def replace(self, **changes) -> DREAMConfig:
        """A copy with some fields changed; changing ``n_channels`` alone also sets ``net.in_channels``."""
        if "n_channels" in changes and "net" not in changes:
            changes["net"] = self.net.replace(in_channels=int(changes["n_channels"]))
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """A JSON-serialisable dict (``from_dict(to_dict())`` gives back an equal config)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, d: dict) -> DREAMConfig:
        """Build a config from a dict.

        ``d`` is either a full :meth:`to_dict` or a partial one with an optional ``"base"`` key
        naming a preset (``"tiny"``, ``"gpu"``, ``"full"``; default ``"tiny"``) whose fields the
        others override; ``"net"`` may itself be partial. Unknown keys raise ``ValueError``.
        """
        if not isinstance(d, dict):
            raise TypeError(f"a DREAM configuration must be a dict, got {type(d).__name__}")
        d = dict(d)
        base_name = d.pop("base", "tiny")
        if base_name not in _PRESETS:
            raise ValueError(f"base must be one of {sorted(_PRESETS)}, got {base_name!r}")
        base = getattr(cls, _PRESETS[base_name])
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown DREAM configuration keys {unknown}; known: {sorted(known)}")
        net_changes = dict(d.pop("net", {}) or {})
        net_known = {f.name for f in dataclasses.fields(DREAMNetsConfig)}
        bad = sorted(set(net_changes) - net_known)
        if bad:
            raise ValueError(f"unknown DREAM net keys {bad}; known: {sorted(net_known)}")
        for key in ("num_blocks", "heads", "image_size"):
            if key in net_changes:
                net_changes[key] = tuple(net_changes[key])
        if "n_channels" in d and "in_channels" not in net_changes:
            net_changes["in_channels"] = int(d["n_channels"])
        for key in ("crop_sizes", "batch_sizes", "curriculum", "s1_betas", "s2_betas", "channel_weights"):
            if d.get(key) is not None:
                d[key] = tuple(d[key])
        return dataclasses.replace(base, net=base.net.replace(**net_changes), **d).validate()

    @classmethod
    def from_json(cls, path) -> DREAMConfig:
        """Read a configuration file (JSON; see :meth:`from_dict`), e.g. for ``pettk train dream --config``.

        Example file: ``{"base": "tiny", "s1_steps": 1000, "net": {"dim": 16}, "drf": 10}``.
        A model checkpoint's JSON (``{"config": {"dream_config": ...}}``) is accepted too.
        """
        data = json.loads(Path(path).read_text())
        if isinstance(data, dict) and isinstance(data.get("config"), dict) and "dream_config" in data["config"]:
            data = data["config"]["dream_config"]
        return cls.from_dict(data)

    def save_json(self, path) -> Path:
        """Write :meth:`to_dict` to ``path`` (atomically)."""
        from ..io.atomic import atomic_path

        path = Path(path)
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(self.to_dict(), indent=2))
        return path

    # -- derived quantities -----------------------------------------------------------------------------
    def train_config(self, stage: str) -> TrainConfig:
        """The :class:`TrainConfig` of stage ``"s1"``, ``"s2a"`` or ``"s2b"``."""
        steps = {"s1": self.s1_steps, "s2a": self.s2a_steps, "s2b": self.s2b_steps}[stage]
        schedule = "constant" if self.lr_schedule == "paper" else self.lr_schedule
        betas = self.s1_betas if stage == "s1" else self.s2_betas
        return _DREAMTrainConfig(steps=steps, batch_size=max(self.batch_sizes), lr=self.lr,
                                 weight_decay=self.weight_decay, betas=tuple(betas), lr_schedule=schedule,
                                 warmup_steps=self.warmup_steps, min_lr_ratio=self.min_lr_ratio,
                                 ema_decay=self.ema_decay, grad_clip=self.grad_clip,
                                 seed=self.seed + {"s1": 0, "s2a": 1, "s2b": 2}[stage], log_every=10,
                                 dream_stage=stage, paper_schedule=self.lr_schedule == "paper")


def _check_weights(weights, n: int) -> torch.Tensor:
    try:
        w = torch.as_tensor([float(v) for v in weights], dtype=torch.float64)
    except (TypeError, ValueError):
        raise TypeError(f"channel_weights must be a sequence of {n} numbers, got {weights!r}") from None
    if w.numel() != n:
        raise ValueError(f"channel_weights must have n_channels={n} entries, got {len(w)}")
    if not bool(torch.isfinite(w).all()) or bool((w < 0).any()) or not float(w[-1]) > 0:
        raise ValueError(f"channel_weights must be finite and >= 0 with the unmasked (last) one > 0, got {weights!r}")
    return w


@dataclass
class _DREAMTrainConfig(TrainConfig):
    """A :class:`TrainConfig` that also knows the paper's per-stage learning-rate rules."""

    dream_stage: str = "s1"
    paper_schedule: bool = False

    def lr_factor(self, step: int) -> float:
        if not self.paper_schedule:
            return super().lr_factor(step)
        n = max(1, self.steps)
        if self.dream_stage == "s1":  # cosine restarts: periods 120k/280k of 400k, minima 2.85e-4, 1e-6
            first = 0.3 * n
            if step < first:
                floor, progress = 2.85e-4 / 2e-4, step / first
            else:
                floor, progress = 1e-6 / 2e-4, (step - first) / (n - first)
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        if self.dream_stage == "s2a":  # x0.1 every 60k of 100k
            return 0.1 ** math.floor(step / (0.6 * n))
        return 0.5 ** math.floor(step / (n * 80 / 300))  # s2b: x0.5 every 80k of 300k


DREAMConfig.TINY = DREAMConfig()
DREAMConfig.GPU = DREAMConfig(net=DREAM_GPU, cell_size=16, crop_sizes=(64, 128, 192), batch_sizes=(16, 8, 8),
                              curriculum=(0.4, 0.3, 0.3), s1_steps=15_000, s2a_steps=3_000, s2b_steps=12_000,
                              lr=2e-4, ema_decay=0.999, min_lr_ratio=0.005)
DREAMConfig.FULL = DREAMConfig(net=DREAM_FULL, cell_size=16, crop_sizes=(64, 128, 192, 256),
                               batch_sizes=(8, 4, 2, 2), curriculum=(0.3, 0.25, 0.25, 0.2), s1_steps=400_000,
                               s2a_steps=100_000, s2b_steps=300_000, lr=2e-4, lr_schedule="paper",
                               ema_decay=0.999, grad_clip=None)


def count_parameters(config: DREAMConfig | DREAMNetsConfig) -> dict:
    """Parameter counts of S1 (CPEN-S1 + G) and S2 (CPEN-S2 + G + denoiser), built on the meta device.

    Returns ``{"cpen_s1", "cpen_s2", "restorer", "denoiser", "s1", "s2"}`` (ints; no memory is
    allocated, so the full configuration is free to count).
    """
    net = config.net if isinstance(config, DREAMConfig) else config
    if not isinstance(net, DREAMNetsConfig):
        raise TypeError(f"config must be a DREAMConfig or DREAMNetsConfig, got {type(config).__name__}")
    with torch.device("meta"):
        nets = net.build()
    counts = {k: sum(p.numel() for p in m.parameters()) for k, m in nets.items()}
    counts["s1"] = counts["cpen_s1"] + counts["restorer"]
    counts["s2"] = counts["cpen_s2"] + counts["restorer"] + counts["denoiser"]
    return counts


# --------------------------------------------------------------------------------------------
# Masks, blocks, planes and the curriculum
# --------------------------------------------------------------------------------------------
def _generator(generator, seed):
    if generator is not None:
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        return generator
    if seed is None:
        return None
    return torch.Generator().manual_seed(int(seed))


def random_block_masks(n: int, shape, cell_size: int, fraction: float = 0.1, *, generator=None, seed=None,
                       device=None, dtype=torch.float32) -> torch.Tensor:
    """Draw ``n`` independent random block masks.

    The plane ``shape = (H, W)`` is cut into a grid of ``cell_size × cell_size`` cells anchored at
    ``(0, 0)`` (the last row/column of cells is cut short when ``cell_size`` does not divide the
    plane); ``round(n_cells · fraction)`` cells are drawn uniformly *with replacement* and set to 0,
    so at most that many distinct cells (≤ ``fraction`` of the cells) are hidden.

    Parameters
    ----------
    n : int
        Number of masks.
    shape : (int, int)
    cell_size : int
        Cell side in pixels.
    fraction : float in [0, 1]
        ``1 -`` the white rate (0.1).
    generator : torch.Generator, optional
        CPU generator for the draws (else ``seed``, else torch's global one).
    device, dtype : where and how to return the masks.

    Returns
    -------
    masks : tensor ``(n, H, W)``: 1 where visible, 0 in the hidden cells.
    """
    n = _positive_int("n", n, minimum=0)
    if len(tuple(shape)) != 2:
        raise ValueError(f"shape must be (H, W), got {shape!r}")
    h, w = (_positive_int("shape entries", s) for s in shape)
    c = _positive_int("cell_size", cell_size)
    if not 0.0 <= float(fraction) <= 1.0:
        raise ValueError(f"fraction must lie in [0, 1], got {fraction!r}")
    gen = _generator(generator, seed)
    gh, gw = -(-h // c), -(-w // c)
    n_cells = gh * gw
    draws = int(math.floor(n_cells * float(fraction) + 0.5))
    grid = torch.ones(n, n_cells, dtype=dtype)
    if draws and n:
        idx = torch.randint(0, n_cells, (n, draws), generator=gen)
        grid.scatter_(1, idx, 0.0)
    masks = grid.reshape(n, gh, gw).repeat_interleave(c, 1).repeat_interleave(c, 2)[:, :h, :w]
    return masks.contiguous().to(device)


def block_masks(batch: int, n_channels: int, shape, cell_size: int, fraction: float = 0.1, *, generator=None,
                seed=None, device=None, dtype=torch.float32) -> torch.Tensor:
    """The masks of a block: ``(batch, N, H, W)``, channels ``0..N-2`` random, channel ``N-1`` all ones."""
    n = _positive_int("n_channels", n_channels)
    batch = _positive_int("batch", batch, minimum=0)
    masks = random_block_masks(batch * (n - 1), shape, cell_size, fraction, generator=generator, seed=seed,
                               dtype=dtype)
    h, w = masks.shape[-2:]
    out = torch.cat([masks.reshape(batch, n - 1, h, w), torch.ones(batch, 1, h, w, dtype=dtype)], dim=1)
    return out.to(device)


def make_block(s: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """The stacked block ``[m₁⊙s, …, m_{N-1}⊙s, s]``: ``s (B, H, W)``, ``masks (B, N, H, W)`` → ``(B, N, H, W)``.

    Use the same ``masks`` for the low- and the full-dose sinogram.
    """
    if s.ndim != 3 or masks.ndim != 4 or masks.shape[0] != s.shape[0] or masks.shape[-2:] != s.shape[-2:]:
        raise ValueError(f"s must be (B, H, W) and masks (B, N, H, W) with the same B, H, W; got "
                         f"{tuple(s.shape)} and {tuple(masks.shape)}")
    return masks.to(s.dtype) * s.unsqueeze(1)


def mask_aware_average(outputs: torch.Tensor, masks: torch.Tensor, weights=None) -> torch.Tensor:
    """Mask-aware weighted mean of restored channels (METHODS §2.6 step 4).

    ``ŝ(p) = Σ_k w_k m_k(p) ŝ_k(p) / Σ_k w_k m_k(p)``: a channel counts only where its mask let
    the pixel through (masked channels are trained to output zeros in their holes). Several mask
    draws are averaged by concatenating their channels (``K·N`` of them) with weights tiled.

    Parameters
    ----------
    outputs, masks : tensors ``(B, C, H, W)``
        Restored channels and the masks they were made with (the unmasked channel's mask is 1).
    weights : sequence of ``C`` (or of ``N`` dividing ``C``, tiled) non-negative numbers, optional
        Equal by default. Every pixel must be seen by a channel of positive weight.

    Returns
    -------
    tensor ``(B, H, W)``
    """
    if outputs.shape != masks.shape or outputs.ndim != 4:
        raise ValueError(f"outputs and masks must both be (B, C, H, W), got {tuple(outputs.shape)} and "
                         f"{tuple(masks.shape)}")
    c = outputs.shape[1]
    m = masks.to(outputs.dtype)
    if weights is not None:
        w = torch.as_tensor([float(v) for v in weights], dtype=outputs.dtype, device=outputs.device)
        if w.numel() == 0 or c % w.numel():
            raise ValueError(f"weights must have {c} entries (or a divisor of {c}, tiled), got {w.numel()}")
        if bool((w < 0).any()) or not bool(torch.isfinite(w).all()):
            raise ValueError("weights must be finite and >= 0")
        m = m * w.repeat(c // w.numel()).reshape(1, c, 1, 1)
    den = m.sum(dim=1)
    if bool((den <= 0).any()):
        raise ValueError("some pixels are hidden from every channel of positive weight")
    return (m * outputs).sum(dim=1) / den


def curriculum_stage(step: int, total: int, crop_sizes, batch_sizes, fractions) -> tuple[int, int]:
    """``(crop, batch)`` of the curriculum stage containing ``step`` (0-based) of ``total`` steps."""
    bounds = np.cumsum([float(f) for f in fractions]) * total
    for crop, batch, bound in zip(crop_sizes, batch_sizes, bounds):
        if step < bound - 1e-9:
            return int(crop), int(batch)
    return int(crop_sizes[-1]), int(batch_sizes[-1])


def random_crop(tensors, size, generator=None):
    """Crop every tensor ``(B, C, H, W)`` in ``tensors`` at the same per-sample random offsets.

    ``size`` is an int or ``(h, w)``, clamped to ``(H, W)``. Returns a list of ``(B, C, h, w)``.
    """
    first = tensors[0]
    b, _, h, w = first.shape
    ch, cw = (size, size) if isinstance(size, numbers.Integral) else size
    ch, cw = min(int(ch), h), min(int(cw), w)
    if (ch, cw) == (h, w):
        return list(tensors)
    top = torch.randint(0, h - ch + 1, (b,), generator=generator).tolist()
    left = torch.randint(0, w - cw + 1, (b,), generator=generator).tolist()
    return [torch.stack([t[i, :, y:y + ch, x:x + cw] for i, (y, x) in enumerate(zip(top, left))])
            for t in tensors]


def plane_shape(shape, pad_mode: str = "square", multiple: int = PLANE_MULTIPLE) -> tuple[int, int]:
    """The network plane for a ``(n_views, n_radial)`` sinogram.

    ``"square"``: both sides equal the longer one rounded up to ``multiple`` (the shorter axis is
    padded, as 256×192 → 256×256 in the paper). ``"multiple"``: each side rounded up on its own.
    """
    h, w = (int(s) for s in shape)
    up = lambda v: -(-v // multiple) * multiple  # noqa: E731
    if pad_mode == "square":
        side = up(max(h, w))
        return side, side
    if pad_mode == "multiple":
        return up(h), up(w)
    raise ValueError(f"pad_mode must be 'square' or 'multiple', got {pad_mode!r}")


def _pads(size: int, target: int) -> tuple[int, int]:
    extra = target - size
    return extra // 2, extra - extra // 2


def pad_plane(x: torch.Tensor, plane) -> torch.Tensor:
    """Zero-pad the last two axes of ``x`` symmetrically to ``plane = (P_h, P_w)``."""
    (t, b), (left, r) = _pads(x.shape[-2], plane[0]), _pads(x.shape[-1], plane[1])
    if min(t, b, left, r) < 0:
        raise ValueError(f"cannot pad {tuple(x.shape[-2:])} to the smaller plane {tuple(plane)}")
    return F.pad(x, (left, r, t, b))


def crop_plane(x: torch.Tensor, shape) -> torch.Tensor:
    """Inverse of :func:`pad_plane`: the centre ``shape = (H, W)`` of the last two axes."""
    t, _ = _pads(int(shape[0]), x.shape[-2])
    left, _ = _pads(int(shape[1]), x.shape[-1])
    return x[..., t:t + int(shape[0]), left:left + int(shape[1])]


def normalise_dream(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``y (B, H, W)`` (= DRF·y_low, counts) → ``(y / v, v (B, 1, 1))`` with ``v = max(y)`` (floored at 1e-12)."""
    v = y.amax(dim=(-2, -1), keepdim=True).clamp_min(DREAM_SCALE_FLOOR)
    return y / v, v


# --------------------------------------------------------------------------------------------
# Latent diffusion (T = 4, x0 parameterisation, deterministic reverse steps)
# --------------------------------------------------------------------------------------------
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


# --------------------------------------------------------------------------------------------
# Training data and losses
# --------------------------------------------------------------------------------------------
class _Pairs(torch.utils.data.Dataset):
    """In-memory DREAM-normalised ``{"low", "full"}`` pairs, zero-padded to the network plane."""

    def __init__(self, dataset, pad_mode: str):
        items = [dataset[i] for i in range(len(dataset))]
        low = torch.stack([torch.as_tensor(it["low"], dtype=torch.float32) for it in items])
        full = torch.stack([torch.as_tensor(it["full"], dtype=torch.float32) for it in items])
        if low.ndim == 4 and low.shape[1] == 1:
            low, full = low[:, 0], full[:, 0]
        if low.ndim != 3 or low.shape != full.shape:
            raise ValueError(f"dataset items must hold 'low' and 'full' sinograms of one shape (n_views, n_radial), "
                             f"got {tuple(low.shape[1:])} and {tuple(full.shape[1:])}")
        if not bool(torch.isfinite(low).all() & torch.isfinite(full).all()):
            raise ValueError("dataset sinograms contain non-finite values")
        self.sinogram_shape = tuple(low.shape[-2:])
        self.plane = plane_shape(self.sinogram_shape, pad_mode)
        self.low, self.full = pad_plane(low, self.plane), pad_plane(full, self.plane)

    def __len__(self):
        return self.low.shape[0]

    def __getitem__(self, i):
        return {"low": self.low[i], "full": self.full[i]}


def _training_pairs(config: DREAMConfig, dataset) -> _Pairs:
    from ..sim.datasets import SliceDataset

    if isinstance(dataset, (str, Path)):
        dataset = SliceDataset(dataset, "train", config.drf, "dream")
    if isinstance(dataset, SliceDataset):
        if dataset.normalisation != "dream":
            raise ValueError(f"dataset must use normalisation='dream', got {dataset.normalisation!r}")
        if not math.isclose(dataset.drf, float(config.drf)):
            raise ValueError(f"dataset serves DRF {dataset.drf:g} but config.drf is {config.drf:g}")
    if len(dataset) == 0:
        raise ValueError("dataset is empty")
    first = dataset[0]
    if not isinstance(first, dict) or "low" not in first or "full" not in first:
        raise ValueError("dataset items must be dicts with DREAM-normalised 'low' and 'full' sinograms")
    return _Pairs(dataset, config.pad_mode)


class _Clock:
    """The global step of a training stage (``offset + trainer.step``) for the curriculum."""

    def __init__(self, total: int, offset: int = 0):
        self.total, self.offset, self.trainer = total, offset, None

    @property
    def step(self) -> int:
        return self.offset + (self.trainer.step if self.trainer is not None else 0)


def _sub_part(part: slice, n_global: int, b: int) -> slice:
    """This rank's slice of the first ``b`` samples, given its slice ``part`` of ``n_global``."""
    per = part.stop - part.start
    world = max(1, n_global // max(per, 1))
    rank = part.start // max(per, 1)
    if b % world:
        raise ValueError(f"curriculum batch size {b} must be divisible by the world size {world}")
    q = b // world
    return slice(rank * q, (rank + 1) * q)


def _blocks(config: DREAMConfig, clock: _Clock, batch, generator, part):
    """Masked low/full blocks of this step's curriculum stage (global draws, then this rank's part)."""
    crop, b = curriculum_stage(clock.step, clock.total, config.crop_sizes, config.batch_sizes, config.curriculum)
    lq, gt = batch["low"], batch["full"]
    b = min(b, lq.shape[0])
    lq, gt = lq[:b], gt[:b]
    plane = tuple(lq.shape[-2:])
    if config.augment:
        flip = (torch.rand(b, generator=generator) < 0.5).to(lq.device).reshape(b, 1, 1)
        lq = torch.where(flip, lq.flip(-2, -1), lq)
        gt = torch.where(flip, gt.flip(-2, -1), gt)
    n = config.n_channels
    if config.mask_mode == "fixed":
        masks = block_masks(b, n, plane, config.cell_size, config.mask_fraction, generator=generator,
                            device=lq.device)
        lq_b, gt_b = random_crop([make_block(lq, masks), make_block(gt, masks)], crop, generator)
    else:
        lq_c, gt_c = random_crop([lq.unsqueeze(1), gt.unsqueeze(1)], crop, generator)
        shape = tuple(lq_c.shape[-2:])
        cell = max(1, round(config.cell_size * max(shape) / max(plane)))
        masks = block_masks(b, n, shape, cell, config.mask_fraction, generator=generator, device=lq.device)
        lq_b, gt_b = make_block(lq_c[:, 0], masks), make_block(gt_c[:, 0], masks)
    sub = _sub_part(part, batch["low"].shape[0], b)
    return lq_b, gt_b, sub


def _stage1_loss(config: DREAMConfig, clock: _Clock):
    def loss_fn(model, batch, generator, part):
        lq, gt, sub = _blocks(config, clock, batch, generator, part)
        out, _ = model(lq[sub], gt[sub])
        return F.l1_loss(out, gt[sub])

    return loss_fn


def _stage2_loss(config: DREAMConfig, clock: _Clock, teacher: nn.Module, schedule: NoiseSchedule, joint: bool):
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)

    def loss_fn(model, batch, generator, part):
        lq, gt, sub = _blocks(config, clock, batch, generator, part)
        noise = torch.randn((lq.shape[0], config.net.prior_dim), generator=generator).to(lq.device, lq.dtype)
        lq, gt, noise = lq[sub], gt[sub], noise[sub]
        with torch.no_grad():
            z_teacher = teacher(lq, gt)
        z_T = schedule.q_sample(z_teacher, schedule.T - 1, noise)
        if not joint:
            return F.l1_loss(model(lq, z_T), z_teacher)
        out, z_hat = model(lq, z_T)
        return F.l1_loss(out, gt) + F.l1_loss(z_hat, z_teacher)

    return loss_fn


# --------------------------------------------------------------------------------------------
# The restorer
# --------------------------------------------------------------------------------------------
class DREAM(SinogramRestorer):
    """A trained DREAM restorer (CPEN-S2 + latent denoiser + ``G``) for one dose-reduction factor.

    Parameters
    ----------
    config : DREAMConfig
    sinogram_shape : (n_views, n_radial)
        The sinogram size it was trained on (inputs must match); the network plane is
        ``plane_shape(sinogram_shape, config.pad_mode)``.
    nets : nn.ModuleDict, optional
        ``restorer`` and (with ``config.prior``) ``cpen_s2``, ``denoiser`` and the stage-1 teacher
        ``cpen_s1`` (kept for analysis); fresh networks when omitted.
    """

    def __init__(self, config: DREAMConfig, sinogram_shape, nets: nn.ModuleDict | None = None):
        self.config = config.validate()
        shape = tuple(int(s) for s in sinogram_shape)
        if len(shape) != 2 or min(shape) < 1:
            raise ValueError(f"sinogram_shape must be (n_views, n_radial), got {sinogram_shape!r}")
        self.sinogram_shape = shape
        self.plane = plane_shape(shape, config.pad_mode)
        self.drf = float(config.drf)
        self.schedule = latent_schedule(config.net.latent_timesteps, config.latent_beta_start,
                                        config.latent_beta_end)
        nets = nets if nets is not None else _build_nets(config)
        needed = {"restorer", "cpen_s2", "denoiser"} if config.prior else {"restorer"}
        if not isinstance(nets, nn.ModuleDict) or not needed <= set(nets.keys()):
            raise ValueError(f"nets must be an nn.ModuleDict with keys {sorted(needed)}")
        self.nets = nets.eval()
        for p in self.nets.parameters():
            p.requires_grad_(False)
        self.history: dict = {}

    # -- device ------------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.nets.parameters()).device

    def to(self, device) -> DREAM:
        self.nets.to(device)
        return self

    def parameter_counts(self) -> dict:
        """Parameters per network (``cpen_s1``, ``cpen_s2``, ``restorer``, ``denoiser`` as present)."""
        return {k: sum(p.numel() for p in m.parameters()) for k, m in self.nets.items()}

    # -- the networks on blocks ------------------------------------------------------------------------
    @torch.no_grad()
    def prior(self, block: torch.Tensor, *, generator=None, z_T: torch.Tensor | None = None) -> torch.Tensor:
        """The student prior ``ẑ (B, prior_dim)`` of a low-dose block ``(B, N, P_h, P_w)``.

        CPEN-S2 gives the condition; the 4-step deterministic latent chain starts at ``z_T``
        (default ``N(0, I)`` drawn from ``generator``).
        """
        if not self.config.prior:
            raise ValueError("this DREAM model was trained without a prior (config.prior=False)")
        if z_T is None:
            z_T = torch.randn((block.shape[0], self.config.net.prior_dim), generator=generator)
        z_T = z_T.to(block.device, block.dtype)
        return latent_reverse(self.nets["denoiser"], z_T, self.nets["cpen_s2"](block), self.schedule)

    @torch.no_grad()
    def restore_block(self, block: torch.Tensor, *, use_prior: bool = True, generator=None) -> torch.Tensor:
        """Run S2 on a normalised low-dose block ``(B, N, P_h, P_w)`` → restored block (same shape).

        ``use_prior=False`` feeds ``z = 0`` to ``G`` (the "no prior" ablation at test time).
        """
        restorer = self.nets["restorer"]
        if not self.config.prior:
            return restorer(block, None)
        if use_prior:
            z = self.prior(block, generator=generator)
        else:
            z = torch.zeros(block.shape[0], self.config.net.prior_dim, device=block.device, dtype=block.dtype)
        return restorer(block, z)

    # -- the SinogramRestorer interface ----------------------------------------------------------------
    def _check(self, y_low, drf) -> torch.Tensor:
        return check_low_dose_counts(y_low, drf, self.drf, self.sinogram_shape, "DREAM")

    @torch.no_grad()
    def restore(self, y_low, drf: float, *, n_draws: int | None = None, use_prior: bool = True,
                weights=None, rescale_counts: bool | None = None, seed: int | None = 0, generator=None,
                chunk_size: int = 16, progress: bool = False):
        """Estimate the full-dose sinogram from raw low-dose counts.

        Parameters
        ----------
        y_low : array or tensor ``(..., n_views, n_radial)``
            Raw low-dose counts (>= 0, finite), any leading batch dimensions.
        drf : float
            The dose-reduction factor of ``y_low``; must equal the model's.
        n_draws : int, optional
            ``K`` independent mask (and latent-noise) draws averaged together (default
            ``config.n_draws``, 1).
        use_prior : bool
            ``False`` feeds ``z = 0`` to ``G`` (test-time "no prior" ablation).
        weights : sequence of N numbers, optional
            Channel weights of the mask-aware average (default ``config.channel_weights``, equal).
        rescale_counts : bool, optional
            Rescale each slice to the total counts of ``DRF·y_low`` (default ``config.rescale_counts``).
        seed, generator : the masks and latent noise come from ``generator`` (a CPU
            ``torch.Generator``) or a fresh one seeded with ``seed`` (default 0: deterministic).
        chunk_size : int
            Slices per network call.
        progress : bool

        Returns
        -------
        ``y_hat`` with ``y_low``'s shape, device and array type; floating dtypes are kept
        (integers give float32). Full-dose counts scale, >= 0.
        """
        y = self._check(y_low, drf)
        k_draws = _positive_int("n_draws", self.config.n_draws if n_draws is None else n_draws)
        weights = self.config.channel_weights if weights is None else weights
        if weights is not None:
            _check_weights(weights, self.config.n_channels)
        rescale = self.config.rescale_counts if rescale_counts is None else bool(rescale_counts)
        chunk = _positive_int("chunk_size", chunk_size)
        gen = _generator(generator, seed)
        is_numpy = isinstance(y_low, np.ndarray)
        out_dtype = y.dtype if y.is_floating_point() else torch.float32
        if self.device != y.device:
            self.to(y.device)
        flat = y.reshape(-1, *self.sinogram_shape).to(torch.float32) * self.drf
        n = self.config.n_channels
        outs = []
        starts = range(0, flat.shape[0], chunk)
        for start in tqdm(starts, desc="DREAM", disable=not progress, leave=False):
            part = flat[start:start + chunk]
            s, v = normalise_dream(part)
            s = pad_plane(s, self.plane)
            restored, masks = [], []
            for _ in range(k_draws):
                m = block_masks(s.shape[0], n, self.plane, self.config.cell_size, self.config.mask_fraction,
                                generator=gen, device=s.device)
                restored.append(self.restore_block(make_block(s, m), use_prior=use_prior, generator=gen))
                masks.append(m)
            avg = mask_aware_average(torch.cat(restored, 1), torch.cat(masks, 1), weights)
            y_hat = (crop_plane(avg, self.sinogram_shape) * v).clamp_min(0)
            if rescale:
                total = y_hat.sum(dim=(-2, -1), keepdim=True)
                y_hat = torch.where(total > 0, y_hat * part.sum(dim=(-2, -1), keepdim=True) / total.clamp_min(1e-30),
                                    y_hat)
            outs.append(y_hat)
        result = (torch.cat(outs) if outs else flat).reshape(y.shape).to(out_dtype)
        return result.cpu().numpy() if is_numpy else result

    def restore_and_reconstruct(self, y_low, drf: float, model: ForwardModel, method: str = "mlem",
                                n_iter: int = 50, n_subsets: int = 8, **restore_kwargs):
        """Restore one slice, then reconstruct it with the physics ``model`` (MLEM, 50 iterations by default).

        Returns ``(y_hat, image)`` in ``y_low``'s array type; see :meth:`restore` and
        :func:`pettk.priors.reconstruct`.
        """
        y_hat = self.restore(y_low, drf, **restore_kwargs)
        return y_hat, reconstruct(model, y_hat, method, n_iter, n_subsets)

    # -- persistence -----------------------------------------------------------------------------------
    def save(self, path) -> Path:
        """Write ``path`` (``.safetensors``: ``<network>.<param>`` weights) and its JSON config."""
        state = {f"{name}.{k}": v for name, net in self.nets.items() for k, v in net.state_dict().items()}
        meta = {"method": "DREAM", "dream_config": self.config.to_dict(),
                "sinogram_shape": list(self.sinogram_shape), "networks": sorted(self.nets.keys()),
                "history": self.history}
        return save_checkpoint(path, state, meta)

    @classmethod
    def load(cls, path, device="cpu") -> DREAM:
        """Read a model written by :meth:`save`."""
        state, meta = load_checkpoint(path, device=device)
        if meta.get("method") != "DREAM":
            raise ValueError(f"{path} is not a DREAM checkpoint (method={meta.get('method')!r})")
        config = DREAMConfig.from_dict(meta["dream_config"])
        full = _build_nets(config)
        nets = nn.ModuleDict({name: full[name] for name in meta["networks"]})
        for name, net in nets.items():
            prefix = name + "."
            net.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
        model = cls(config, meta["sinogram_shape"], nets)
        model.history = meta.get("history", {})
        return model.to(device)


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------
def _fit(module, loss_fn, pairs, tc, clock, out, name, device, meta, progress, resume):
    trainer = Trainer(module, loss_fn, pairs, tc, out_dir=None if out is None else out / name, device=device,
                      model_config=meta, progress=progress)
    clock.trainer = trainer
    trainer.fit(resume=resume and out is not None)
    return trainer


def train_dream(config: DREAMConfig, dataset, out_dir=None, progress: bool = False, device=None, *,
                resume: bool = False) -> DREAM:
    """Train DREAM: stage 1, then stage 2 phase A (prior only) and phase B (joint) (METHODS §2.5).

    Parameters
    ----------
    config : DREAMConfig
        E.g. :attr:`DREAMConfig.TINY`, or ``DREAMConfig.from_json(path)``.
    dataset : path or dataset
        A data set folder (its ``train`` split at ``config.drf`` with the ``"dream"`` normalisation
        is used), or a :class:`~pettk.sim.SliceDataset` / any dataset of dicts with DREAM-normalised
        ``low`` and ``full`` sinograms ``(n_views, n_radial)`` (both divided by ``max(DRF·y_low)``).
    out_dir : path, optional
        Trainer checkpoints go to ``out_dir/s1``, ``out_dir/s2a``, ``out_dir/s2b``; the model to
        ``out_dir/dream.safetensors`` (+ ``.json``).
    progress : bool
        tqdm bars for the training stages.
    device : torch device, optional (default CPU)
    resume : bool
        Continue each stage from its checkpoint in ``out_dir`` (finished stages are not rerun).

    Returns
    -------
    DREAM
        The trained restorer (EMA weights when ``config.ema_decay > 0``), the loss curves in
        ``history`` (``s1_loss``, ``s2a_loss``, ``s2b_loss``).
    """
    if not isinstance(config, DREAMConfig):
        raise TypeError(f"config must be a DREAMConfig, got {type(config).__name__}")
    config = config.validate()
    pairs = _training_pairs(config, dataset)
    device = torch.device(device) if device is not None else torch.device("cpu")
    out = None if out_dir is None else Path(out_dir)
    meta = {"dream_config": config.to_dict()}
    schedule = latent_schedule(config.net.latent_timesteps, config.latent_beta_start, config.latent_beta_end)

    torch.manual_seed(config.seed)
    nets = _build_nets(config)
    history = {}
    stage1 = _Stage1(nets["cpen_s1"] if config.prior else None, nets["restorer"])
    clock = _Clock(config.s1_steps)
    trainer = _fit(stage1, _stage1_loss(config, clock), pairs, config.train_config("s1"), clock, out, "s1", device,
                   meta, progress, resume)
    stage1 = trainer.averaged_model().eval()
    history["s1_loss"] = list(trainer.history.loss)
    final = nn.ModuleDict({"restorer": stage1.restorer})

    if config.prior:
        teacher = stage1.cpen
        torch.manual_seed(config.seed + 1)
        prior = _LatentPrior(nets["cpen_s2"].to(device), nets["denoiser"].to(device), schedule)
        total = config.s2a_steps + config.s2b_steps
        if config.s2a_steps:
            clock = _Clock(total)
            loss = _stage2_loss(config, clock, teacher, schedule, joint=False)
            trainer = _fit(prior, loss, pairs, config.train_config("s2a"), clock, out, "s2a", device, meta, progress,
                           resume)
            prior = trainer.averaged_model()
            history["s2a_loss"] = list(trainer.history.loss)
        restorer = stage1.restorer
        if config.s2b_steps:
            stage2 = _Stage2(prior, copy.deepcopy(stage1.restorer))
            for p in stage2.parameters():
                p.requires_grad_(True)
            clock = _Clock(total, offset=config.s2a_steps)
            loss = _stage2_loss(config, clock, teacher, schedule, joint=True)
            trainer = _fit(stage2, loss, pairs, config.train_config("s2b"), clock, out, "s2b", device, meta, progress,
                           resume)
            stage2 = trainer.averaged_model()
            prior, restorer = stage2.prior, stage2.restorer
            history["s2b_loss"] = list(trainer.history.loss)
        final = nn.ModuleDict({"cpen_s1": teacher, "cpen_s2": prior.cpen, "denoiser": prior.denoiser,
                               "restorer": restorer})
    model = DREAM(config, pairs.sinogram_shape, final)
    model.history = history
    if out is not None:
        model.save(out / "dream.safetensors")
    return model

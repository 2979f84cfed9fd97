"""DREAM's configuration (:class:`DREAMConfig`, declared with :mod:`pettk.priors._config`), its
presets and parameter counts."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import torch

from ...diffusion.nets import DREAM_FULL, DREAM_GPU, DREAM_TINY, DREAMNetsConfig
from ...diffusion.train import TrainConfig
from .._config import Any, Choice, Int, Nested, PriorConfig, Real, checked

__all__ = ["DREAMConfig", "count_parameters", "DREAM_SCALE_FLOOR", "PLANE_MULTIPLE"]

#: The normalisation factor ``max(DRF·y_low)`` is floored at this value (as ``SliceDataset``'s "dream").
DREAM_SCALE_FLOOR = 1e-12
#: Padded planes and crops are multiples of this (``G`` down-samples by 8, CPEN by 4).
PLANE_MULTIPLE = 8


def _positive_int(name, value, minimum=1):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class DREAMConfig(PriorConfig):
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
    checkpoint_every : int
        Optimiser steps between periodic trainer checkpoints of a stage (0: only at the end of a
        stage or chunk), so that a process killed without warning (SIGKILL) loses at most this many
        steps; ``resume=True`` continues from the last one. No effect on the training result.
    seed : int
    """

    _name = "DREAM"
    _presets = {"tiny": "TINY", "gpu": "GPU", "full": "FULL"}
    _preset_key = "base"
    _default_preset = "TINY"
    _checkpoint_key = "dream_config"

    net: DREAMNetsConfig = checked(DREAM_TINY, Nested(DREAMNetsConfig, unknown="unknown DREAM net keys"))
    n_channels: int = checked(3, Int(1))
    cell_size: int = checked(8, Int(1))
    mask_fraction: float = checked(0.1, Real(0.0, 1.0))
    mask_mode: str = checked("fixed", Choice(("fixed", "scaled")))
    pad_mode: str = checked("square", Choice(("square", "multiple")))
    crop_sizes: tuple = checked((32, 64), Any())  # the curriculum is checked in _check
    batch_sizes: tuple = checked((4, 4), Any())
    curriculum: tuple = checked((0.5, 0.5), Any())
    s1_steps: int = checked(300, Int(0))
    s2a_steps: int = checked(100, Int(0))
    s2b_steps: int = checked(200, Int(0))
    lr: float = checked(2e-3, Real(0.0, min_open=True))
    s1_betas: tuple = checked((0.9, 0.999), Any())  # _check
    s2_betas: tuple = checked((0.9, 0.99), Any())
    lr_schedule: str = checked("cosine", Choice(("cosine", "constant", "paper")))
    min_lr_ratio: float = checked(0.05, Real(0.0, 1.0))
    warmup_steps: int = 0
    ema_decay: float = checked(0.0, Real(0.0, 1.0, max_open=True))
    grad_clip: float | None = 1.0
    weight_decay: float = 0.0
    latent_beta_start: float = checked(0.1, Real(0.0, 1.0, min_open=True, max_open=True))
    latent_beta_end: float = checked(0.99, Real(0.0, 1.0, min_open=True, max_open=True))
    prior: bool = True
    augment: bool = False
    channel_weights: tuple | None = checked(None, Any())  # _check
    n_draws: int = checked(1, Int(1))
    rescale_counts: bool = False
    drf: float = checked(20.0, Real(1.0))
    checkpoint_every: int = checked(200, Int(0))
    seed: int = 0

    TINY = None  # set below (dataclass fields cannot default to instances of the class itself)
    GPU = None
    FULL = None

    # -- checks --------------------------------------------------------------------------------------
    def _check(self) -> None:
        """``net`` in step with ``n_channels``, the curriculum, stage 1 and the Adam betas."""
        n = int(self.n_channels)
        if self.net.in_channels != n:
            raise ValueError(f"net.in_channels={self.net.in_channels} must equal n_channels={n} "
                             f"(use config.replace(n_channels={n}), which updates the net too)")
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
        if self.s1_steps == 0:
            raise ValueError("s1_steps must be >= 1 (stage 1 trains G and the teacher prior)")
        for name in ("s1_betas", "s2_betas"):
            betas = getattr(self, name)
            if len(betas) != 2 or not all(0.0 <= float(b) < 1.0 for b in betas):
                raise ValueError(f"{name} must be two numbers in [0, 1), got {betas!r}")
        if self.channel_weights is not None:
            _check_weights(self.channel_weights, n)

    # -- copies and (de)serialisation ---------------------------------------------------------------
    def replace(self, **changes) -> DREAMConfig:
        """A copy with some fields changed; changing ``n_channels`` alone also sets ``net.in_channels``."""
        if "n_channels" in changes and "net" not in changes:
            changes["net"] = self.net.replace(in_channels=int(changes["n_channels"]))
        return super().replace(**changes)

    @classmethod
    def from_dict(cls, d: dict, base: DREAMConfig | None = None) -> DREAMConfig:
        """Build a config from a dict.

        ``d`` is either a full :meth:`to_dict` or a partial one with an optional ``"base"`` key
        naming a preset (``"tiny"``, ``"gpu"``, ``"full"``; default ``"tiny"``) whose fields the
        others override; ``"net"`` may itself be partial, and ``n_channels`` without
        ``net.in_channels`` sets both. Unknown keys raise ``ValueError``.
        """
        if isinstance(d, dict) and ("net" in d or "n_channels" in d):
            d = dict(d)
            net = d.pop("net", None)
            net = {} if net is None else net
            if isinstance(net, dict):
                net = dict(net)
                if "n_channels" in d and "in_channels" not in net:
                    net["in_channels"] = int(d["n_channels"])
            if net != {}:
                d["net"] = net
        return super().from_dict(d, base)

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
                                 checkpoint_every=self.checkpoint_every,
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
                              lr=2e-4, ema_decay=0.999, min_lr_ratio=0.005, checkpoint_every=1000)
DREAMConfig.FULL = DREAMConfig(net=DREAM_FULL, cell_size=16, crop_sizes=(64, 128, 192, 256),
                               batch_sizes=(8, 4, 2, 2), curriculum=(0.3, 0.25, 0.25, 0.2), s1_steps=400_000,
                               s2a_steps=100_000, s2b_steps=300_000, lr=2e-4, lr_schedule="paper",
                               ema_decay=0.999, grad_clip=None, checkpoint_every=5000)


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

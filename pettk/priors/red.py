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
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..diffusion.nets import RED_FULL, RED_GPU, RED_TINY, ConvNeXtUNet, ConvNeXtUNetConfig
from ..diffusion.train import TrainConfig, Trainer
from ..io.checkpoint import load_checkpoint, save_checkpoint
from .base import SinogramRestorer, check_low_dose_counts

__all__ = ["REDConfig", "ResidualSchedule", "RED", "train_red", "ren_loss", "dcn_loss", "red_sample", "apply_net",
           "gaussian_ssim", "normalise_red", "denormalise_red", "RED_SCALE_FLOOR"]

#: The normalisation factor ``v = max(DRF·y_low)`` is floored at this value (METHODS §3.1).
RED_SCALE_FLOOR = 0.1


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class REDConfig:
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
    weight_decay, ema_decay, grad_clip, lr_schedule, warmup_steps : optimisation details
        (passed to :class:`~pettk.diffusion.train.TrainConfig`; AdamW's default weight decay
        0.01 as in the released code).
    seed : int
    """

    net: ConvNeXtUNetConfig = RED_TINY
    T: int = 50
    sampling_steps: int = 10
    ren_steps: int = 600
    dcn_steps: int = 300
    ren_lr: float = 1e-3
    dcn_lr: float = 1e-3
    batch_size: int = 8
    r_max: float = 10.0
    lambda_ssim: float = 1.0
    drf: float = 20.0
    weight_decay: float = 0.01
    ema_decay: float = 0.0
    grad_clip: float | None = 1.0
    lr_schedule: str = "constant"
    warmup_steps: int = 0
    seed: int = 0

    TINY = None  # set below (dataclass fields cannot default to instances of the class itself)
    GPU = None
    FULL = None

    def validate(self) -> REDConfig:
        if not isinstance(self.net, ConvNeXtUNetConfig):
            raise TypeError(f"net must be a ConvNeXtUNetConfig, got {type(self.net).__name__}")
        for name in ("T", "sampling_steps", "ren_steps", "batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if isinstance(self.dcn_steps, bool) or not isinstance(self.dcn_steps, int) or self.dcn_steps < 0:
            raise ValueError(f"dcn_steps must be an int >= 0, got {self.dcn_steps!r}")
        if self.T % self.sampling_steps:
            raise ValueError(f"T={self.T} must be divisible by sampling_steps={self.sampling_steps}")
        for name in ("ren_lr", "dcn_lr", "r_max"):
            if not float(getattr(self, name)) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if not float(self.lambda_ssim) >= 0:
            raise ValueError(f"lambda_ssim must be >= 0, got {self.lambda_ssim!r}")
        if not float(self.drf) >= 1:
            raise ValueError(f"drf must be >= 1, got {self.drf!r}")
        return self

    def replace(self, **changes) -> REDConfig:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> REDConfig:
        d = dict(d)
        net = dict(d.pop("net"))
        for key in ("channel_mults", "image_size"):
            if key in net and net[key] is not None:
                net[key] = tuple(net[key])
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(net=ConvNeXtUNetConfig(**net), **{k: v for k, v in d.items() if k in known})

    def train_config(self, stage: str) -> TrainConfig:
        """The :class:`TrainConfig` of stage ``"ren"`` or ``"dcn"``."""
        steps, lr = (self.ren_steps, self.ren_lr) if stage == "ren" else (self.dcn_steps, self.dcn_lr)
        return TrainConfig(steps=steps, batch_size=self.batch_size, lr=lr, weight_decay=self.weight_decay,
                           lr_schedule=self.lr_schedule, warmup_steps=self.warmup_steps, ema_decay=self.ema_decay,
                           grad_clip=self.grad_clip, seed=self.seed + (0 if stage == "ren" else 1), log_every=10)


REDConfig.TINY = REDConfig()
REDConfig.GPU = REDConfig(net=RED_GPU, T=500, sampling_steps=50, ren_steps=20_000, dcn_steps=10_000, ren_lr=1e-4,
                          dcn_lr=1e-4, ema_decay=0.999)
REDConfig.FULL = REDConfig(net=RED_FULL, T=500, sampling_steps=50, ren_steps=500_000, dcn_steps=500_000,
                           ren_lr=2e-5, dcn_lr=5e-5, ema_decay=0.999)


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


# --------------------------------------------------------------------------------------------
# Losses
# --------------------------------------------------------------------------------------------
def gaussian_ssim(x: torch.Tensor, y: torch.Tensor, window: int = 11, sigma: float = 1.5, c1: float = 0.01 ** 2,
                  c2: float = 0.03 ** 2) -> torch.Tensor:
    """Mean SSIM of ``x, y (B, H, W)`` with a ``window×window`` Gaussian window, valid mode.

    RED's constants ``C1 = 0.01², C2 = 0.03²`` (data range 1, applied to [-1, 1] data).
    """
    coords = torch.arange(window, dtype=x.dtype, device=x.device) - (window - 1) / 2
    g = torch.exp(-coords ** 2 / (2 * sigma ** 2))
    g = g / g.sum()
    kernel = (g[:, None] * g[None, :])[None, None]
    a, b = x.unsqueeze(1), y.unsqueeze(1)

    def blur(z):
        return F.conv2d(z, kernel)

    mu_a, mu_b = blur(a), blur(b)
    s_aa = blur(a * a) - mu_a ** 2
    s_bb = blur(b * b) - mu_b ** 2
    s_ab = blur(a * b) - mu_a * mu_b
    num = (2 * mu_a * mu_b + c1) * (2 * s_ab + c2)
    den = (mu_a ** 2 + mu_b ** 2 + c1) * (s_aa + s_bb + c2)
    return (num / den).mean()


def _pair(batch: dict, part: slice) -> tuple[torch.Tensor, torch.Tensor]:
    x_T, x0 = batch["low"], batch["full"]
    if x_T.ndim == 4:
        x_T, x0 = x_T[:, 0], x0[:, 0]
    return x_T, x0


def ren_loss(schedule: ResidualSchedule, lambda_ssim: float = 1.0):
    """REN objective ``MSE(R_θ(x_k, k), R) + λ (1 - SSIM(x_k - alpha_k R_θ, x_0))`` (METHODS §3.4).

    ``batch["low"]``/``batch["full"]`` are ``(B, H, W)`` RED-normalised sinograms (``x_T``, ``x_0``).
    """

    def loss_fn(model, batch, generator, part):
        x_T, x0 = _pair(batch, part)
        k = torch.randint(1, schedule.T + 1, (x0.shape[0],), generator=generator)
        x_T, x0, k = x_T[part], x0[part], k[part].to(x0.device)
        residual = x_T - x0
        x_k = schedule.q_sample(x0, residual, k)
        pred = apply_net(model, x_k, k)
        loss = torch.mean((pred - residual) ** 2)
        if lambda_ssim:
            x0_hat = x_k - schedule.alpha_at(k, x_k) * pred
            loss = loss + lambda_ssim * (1 - gaussian_ssim(x0_hat, x0))
        return loss

    return loss_fn


def dcn_loss(schedule: ResidualSchedule, ren: torch.nn.Module, r_max: float = 10.0):
    """DCN objective ``MSE(D_φ(x̃_k, k), x_k - x̃_k)`` with ``x̃_k = x_0 + alpha_k r R_θ(x_k, k)``.

    The REN is frozen (no gradient) and sees the true state ``x_k`` at step ``k`` (proposal of
    METHODS §3.4); ``r ~ U(0, r_max)`` per sample.
    """
    ren.eval()
    for p in ren.parameters():
        p.requires_grad_(False)

    def loss_fn(model, batch, generator, part):
        x_T, x0 = _pair(batch, part)
        n = x0.shape[0]
        k = torch.randint(1, schedule.T + 1, (n,), generator=generator)
        r = torch.rand((n,), generator=generator, dtype=torch.float64) * r_max
        x_T, x0, k = x_T[part], x0[part], k[part].to(x0.device)
        r = r[part].to(x0.device, x0.dtype).reshape(-1, 1, 1)
        residual = x_T - x0
        x_k = schedule.q_sample(x0, residual, k)
        with torch.no_grad():
            r_hat = apply_net(ren, x_k, k)
        x_drift = x0 + schedule.alpha_at(k, x0) * r * r_hat
        pred = apply_net(model, x_drift, k)
        return torch.mean((pred - (x_k - x_drift)) ** 2)

    return loss_fn


# --------------------------------------------------------------------------------------------
# Normalisation
# --------------------------------------------------------------------------------------------
def normalise_red(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``y (B, H, W)`` (= DRF·y_low, counts) → ``(x_T in [-1, 1], v (B, 1, 1))``, ``v = max(y)`` floored at 0.1."""
    v = y.amax(dim=(-2, -1), keepdim=True).clamp_min(RED_SCALE_FLOOR)
    return 2 * y / v - 1, v


def denormalise_red(x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`normalise_red`, negatives clipped at 0."""
    return ((x + 1) / 2 * v).clamp_min(0)


# --------------------------------------------------------------------------------------------
# The restorer
# --------------------------------------------------------------------------------------------
class RED(SinogramRestorer):
    """A trained RED restorer (REN + DCN) for one dose-reduction factor.

    Parameters
    ----------
    config : REDConfig
    sinogram_shape : (n_views, n_radial)
        The sinogram size it was trained on (inputs must match).
    ren, dcn : ConvNeXtUNet, optional
        Trained networks (fresh ones from ``config.net`` when omitted; ``dcn=None`` with
        ``config.dcn_steps == 0`` means no drift correction).
    """

    def __init__(self, config: REDConfig, sinogram_shape, ren: ConvNeXtUNet | None = None,
                 dcn: ConvNeXtUNet | None = None):
        self.config = config.validate()
        shape = tuple(int(s) for s in sinogram_shape)
        if len(shape) != 2 or min(shape) < 1:
            raise ValueError(f"sinogram_shape must be (n_views, n_radial), got {sinogram_shape!r}")
        self.sinogram_shape = shape
        self.drf = float(config.drf)
        self.schedule = ResidualSchedule(config.T)
        self.ren = (ren if ren is not None else config.net.build()).eval()
        if dcn is None and config.dcn_steps > 0:
            dcn = config.net.build()
        self.dcn = dcn.eval() if dcn is not None else None
        self.history: dict = {}

    # -- device ------------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.ren.parameters()).device

    def to(self, device) -> RED:
        self.ren.to(device)
        if self.dcn is not None:
            self.dcn.to(device)
        return self

    # -- process in the normalised domain ------------------------------------------------------------
    def sample(self, x_T: torch.Tensor, steps: int | None = None, use_dcn: bool = True,
               progress: bool = False) -> torch.Tensor:
        """Reverse process on normalised sinograms ``x_T (B, H, W)`` (float32, model's device) → ``x_0``."""
        steps = self.config.sampling_steps if steps is None else steps
        dcn = self.dcn if use_dcn else None
        return red_sample(lambda x, k: apply_net(self.ren, x, k),
                          None if dcn is None else (lambda x, k: apply_net(dcn, x, k)),
                          x_T, self.schedule, steps, progress=progress)

    # -- the SinogramRestorer interface ----------------------------------------------------------------
    def _check(self, y_low, drf) -> torch.Tensor:
        return check_low_dose_counts(y_low, drf, self.drf, self.sinogram_shape, "RED")

    @torch.no_grad()
    def restore(self, y_low, drf: float, *, use_dcn: bool = True, steps: int | None = None,
                chunk_size: int = 16, progress: bool = False):
        """Estimate the full-dose sinogram from raw low-dose counts.

        Parameters
        ----------
        y_low : array or tensor ``(..., n_views, n_radial)``
            Raw low-dose counts (>= 0, finite), any leading batch dimensions.
        drf : float
            The dose-reduction factor of ``y_low``; must equal the model's.
        use_dcn : bool
            Apply the drift correction (default, as in the paper).
        steps : int, optional
            Reverse steps ``S`` (default ``config.sampling_steps``).
        chunk_size : int
            Slices per network call.

        Returns
        -------
        ``y_hat`` with ``y_low``'s shape, device and array type; floating dtypes are kept
        (integers give float32). Full-dose counts scale, >= 0.
        """
        y = self._check(y_low, drf)
        is_numpy = isinstance(y_low, np.ndarray)
        out_dtype = y.dtype if y.is_floating_point() else torch.float32
        if self.device != y.device:
            self.to(y.device)
        flat = y.reshape(-1, *self.sinogram_shape).to(torch.float32) * self.drf
        outs = []
        for start in range(0, flat.shape[0], max(1, int(chunk_size))):
            x_T, v = normalise_red(flat[start:start + chunk_size])
            x0 = self.sample(x_T, steps, use_dcn, progress)
            outs.append(denormalise_red(x0, v))
        result = (torch.cat(outs) if outs else flat).reshape(y.shape).to(out_dtype)
        return result.cpu().numpy() if is_numpy else result

    # -- persistence -----------------------------------------------------------------------------------
    def save(self, path) -> Path:
        """Write ``path`` (``.safetensors``: ``ren.*`` and ``dcn.*`` weights) and its JSON config."""
        state = {f"ren.{k}": v for k, v in self.ren.state_dict().items()}
        if self.dcn is not None:
            state.update({f"dcn.{k}": v for k, v in self.dcn.state_dict().items()})
        meta = {"method": "RED", "red_config": self.config.to_dict(), "sinogram_shape": list(self.sinogram_shape),
                "has_dcn": self.dcn is not None, "history": self.history}
        return save_checkpoint(path, state, meta)

    @classmethod
    def load(cls, path, device="cpu") -> RED:
        """Read a model written by :meth:`save`."""
        state, meta = load_checkpoint(path, device=device)
        if meta.get("method") != "RED":
            raise ValueError(f"{path} is not a RED checkpoint (method={meta.get('method')!r})")
        config = REDConfig.from_dict(meta["red_config"])
        ren = config.net.build()
        ren.load_state_dict({k[4:]: v for k, v in state.items() if k.startswith("ren.")})
        dcn = None
        if meta.get("has_dcn"):
            dcn = config.net.build()
            dcn.load_state_dict({k[4:]: v for k, v in state.items() if k.startswith("dcn.")})
        model = cls(config.replace(dcn_steps=config.dcn_steps if dcn is not None else 0), meta["sinogram_shape"],
                    ren, dcn)
        model.history = meta.get("history", {})
        return model.to(device)


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------
class _Pairs(torch.utils.data.Dataset):
    """In-memory ``{"low", "full"}`` pairs (RED-normalised) from a data set's items."""

    def __init__(self, dataset):
        items = [dataset[i] for i in range(len(dataset))]
        self.low = torch.stack([torch.as_tensor(it["low"], dtype=torch.float32) for it in items])
        self.full = torch.stack([torch.as_tensor(it["full"], dtype=torch.float32) for it in items])

    def __len__(self):
        return self.low.shape[0]

    def __getitem__(self, i):
        return {"low": self.low[i], "full": self.full[i]}


def _training_pairs(config: REDConfig, dataset):
    from ..sim.datasets import SliceDataset

    if isinstance(dataset, (str, Path)):
        dataset = SliceDataset(dataset, "train", config.drf, "red")
    if isinstance(dataset, SliceDataset):
        if dataset.normalisation != "red":
            raise ValueError(f"dataset must use normalisation='red', got {dataset.normalisation!r}")
        if not math.isclose(dataset.drf, float(config.drf)):
            raise ValueError(f"dataset serves DRF {dataset.drf:g} but config.drf is {config.drf:g}")
    if len(dataset) == 0:
        raise ValueError("dataset is empty")
    first = dataset[0]
    if not isinstance(first, dict) or "low" not in first or "full" not in first:
        raise ValueError("dataset items must be dicts with RED-normalised 'low' and 'full' sinograms")
    return _Pairs(dataset)


def train_red(config: REDConfig, dataset, out_dir=None, progress: bool = False, device=None) -> RED:
    """Train RED's REN, then its DCN with the REN frozen (METHODS §3.4).

    Parameters
    ----------
    config : REDConfig
    dataset : path or dataset
        A data set folder (its ``train`` split at ``config.drf`` with the ``"red"`` normalisation
        is used), or a :class:`~pettk.sim.SliceDataset` / any dataset of dicts with RED-normalised
        ``low`` (x_T) and ``full`` (x_0) sinograms ``(n_views, n_radial)``.
    out_dir : path, optional
        Trainer checkpoints go to ``out_dir/ren`` and ``out_dir/dcn``; the model to
        ``out_dir/red.safetensors``.
    progress : bool
    device : torch device, optional (default CPU)

    Returns
    -------
    RED
        The trained restorer (EMA weights when ``config.ema_decay > 0``), with the loss curves in
        ``history``.
    """
    config = config.validate()
    pairs = _training_pairs(config, dataset)
    shape = tuple(pairs.low.shape[-2:])
    device = torch.device(device) if device is not None else torch.device("cpu")
    schedule = ResidualSchedule(config.T)
    out = None if out_dir is None else Path(out_dir)
    meta = {"red_config": config.to_dict()}

    torch.manual_seed(config.seed)
    ren = config.net.build().to(device)
    trainer = Trainer(ren, ren_loss(schedule, config.lambda_ssim), pairs, config.train_config("ren"),
                      out_dir=None if out is None else out / "ren", device=device, model_config=meta,
                      progress=progress)
    trainer.fit()
    ren = trainer.averaged_model().eval()
    history = {"ren_loss": list(trainer.history.loss)}

    dcn = None
    if config.dcn_steps > 0:
        torch.manual_seed(config.seed + 1)
        dcn = config.net.build().to(device)
        trainer = Trainer(dcn, dcn_loss(schedule, ren, config.r_max), pairs, config.train_config("dcn"),
                          out_dir=None if out is None else out / "dcn", device=device, model_config=meta,
                          progress=progress)
        trainer.fit()
        dcn = trainer.averaged_model().eval()
        history["dcn_loss"] = list(trainer.history.loss)
    for net in (ren, dcn):
        if net is not None:
            for p in net.parameters():
                p.requires_grad_(False)
    model = RED(config, shape, ren, dcn)
    model.history = history
    if out is not None:
        model.save(out / "red.safetensors")
    return model

"""Training DREAM: the pairs, the curriculum blocks, the stage losses and :func:`train_dream`
(stage 1, then stage 2 phase A and phase B)."""

from __future__ import annotations

import copy
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ...diffusion.chunks import TrainingBudget
from ...diffusion.schedules import NoiseSchedule
from ...diffusion.train import Trainer
from .._data import sinogram_pairs
from .config import DREAMConfig
from .masks import block_masks, curriculum_stage, make_block, pad_plane, plane_shape, random_crop
from .model import DREAM
from .networks import _build_nets, _LatentPrior, _Stage1, _Stage2, latent_schedule

__all__ = ["train_dream"]


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
    return _Pairs(sinogram_pairs(dataset, config.drf, "dream", "DREAM"), config.pad_mode)


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


def _fit(module, loss_fn, pairs, tc, clock, out, name, device, meta, progress, budget):
    trainer = Trainer(module, loss_fn, pairs, tc, out_dir=None if out is None else out / name, device=device,
                      model_config=meta, progress=progress)
    clock.trainer = trainer
    return budget.fit(trainer, name)


def train_dream(config: DREAMConfig, dataset, out_dir=None, progress: bool = False, device=None, *,
                resume: bool = False, time_limit_s: float | None = None) -> DREAM:
    """Train DREAM: stage 1, then stage 2 phase A (prior only) and phase B (joint) (METHODS §2.5).

    Parameters
    ----------
    config : DREAMConfig
        E.g. :attr:`DREAMConfig.TINY`, or ``DREAMConfig.from_json(path)``.
    dataset : path or dataset
        A data set folder (its ``train`` split at ``config.drf`` with the ``"dream"`` normalisation
        is used), or a :class:`~pettk.sim.datasets.SliceDataset` / any dataset of dicts with DREAM-normalised
        ``low`` and ``full`` sinograms ``(n_views, n_radial)`` (both divided by ``max(DRF·y_low)``).
    out_dir : path, optional
        Trainer checkpoints go to ``out_dir/s1``, ``out_dir/s2a``, ``out_dir/s2b``; the model to
        ``out_dir/dream.safetensors`` (+ ``.json``).
    progress : bool
        tqdm bars for the training stages.
    device : torch device, optional (default CPU)
    resume : bool
        Continue each stage from its checkpoint in ``out_dir`` (finished stages are not rerun).
    time_limit_s : float, optional
        Wall-clock seconds for this call (a chunk of a long run): when they run out, the stage's
        checkpoint is written and :class:`~pettk.diffusion.TrainingIncomplete` raised; call again
        with ``resume=True`` to continue.

    Returns
    -------
    DREAM
        The trained restorer (EMA weights when ``config.ema_decay > 0``), the loss curves in
        ``history`` (``s1_loss``, ``s2a_loss``, ``s2b_loss``).
    """
    if not isinstance(config, DREAMConfig):
        raise TypeError(f"config must be a DREAMConfig, got {type(config).__name__}")
    config = config.validate()
    budget = TrainingBudget(time_limit_s, out_dir, resume)
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
                   meta, progress, budget)
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
                           budget)
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
                           budget)
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

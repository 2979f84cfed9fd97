"""Pretraining DDIP's score network (:func:`train_ddip`)."""

from __future__ import annotations

from pathlib import Path

import torch

from ...diffusion.chunks import TrainingBudget
from ...diffusion.train import Trainer, diffusion_loss
from .config import DDIPConfig
from .data import DDIPImages
from .model import DDIP, _EpsHead

__all__ = ["train_ddip", "corrupted_condition"]


def corrupted_condition(loss_fn, p_drop: float, p_mismatch: float, key: str = "cond"):
    """Wrap a training loss so that each sample's condition (the MR) is, with probability
    ``p_mismatch``, another sample's of the same global batch (a cyclic shift over a random
    permutation: never its own) and, with probability ``p_drop``, zeros (the null condition of
    classifier-free guidance). The draws come from the trainer's generator, so a resumed run
    repeats them exactly; they are made for the global batch before each rank takes its part.
    """

    def loss(model, batch, generator, part):
        cond = batch[key]
        b = cond.shape[0]
        u = torch.rand(b, generator=generator)
        order = torch.randperm(b, generator=generator)
        other = torch.empty_like(order)
        other[order] = order.roll(1)                 # sample order[i] takes order[i - 1]'s condition
        mismatch = u < p_mismatch if b > 1 else torch.zeros(b, dtype=torch.bool)
        drop = (u >= p_mismatch) & (u < p_mismatch + p_drop)
        new = torch.where(mismatch.to(cond.device).view(-1, *([1] * (cond.ndim - 1))), cond[other.to(cond.device)],
                          cond)
        new = torch.where(drop.to(cond.device).view(-1, *([1] * (cond.ndim - 1))), torch.zeros_like(cond), new)
        return loss_fn(model, {**batch, key: new}, generator, part)

    return loss


def train_ddip(config: DDIPConfig, dataset_root, out_dir=None, progress: bool = False, device=None, *,
               resume: bool = False, time_limit_s: float | None = None, init_from=None) -> DDIP:
    """Pretrain DDIP's score network (ε- or x0-MSE, MR concatenated) on one tracer's images.

    Parameters
    ----------
    config : DDIPConfig
    dataset_root : path or DDIPImages
        A data set folder built by :func:`pettk.sim.datasets.build_dataset` (its ``train`` split's
        ``truth`` and ``mr`` images; for 2.5D build it with adjacent slices), or training slabs
        made by :class:`DDIPImages` / :func:`phantom_training_images`.
    out_dir : path, optional
        Trainer checkpoints (``checkpoint.safetensors``, resumable) and the model
        (``ddip.safetensors`` + ``ddip.json``).
    progress : bool
    device : torch device, optional (default CPU)
    resume : bool
        Continue from ``out_dir/checkpoint.safetensors`` when it exists.
    time_limit_s : float, optional
        Wall-clock seconds for this call (a chunk of a long run): when they run out, the stage's
        checkpoint is written and :class:`~pettk.diffusion.TrainingIncomplete` raised; call again
        with ``resume=True`` to continue.
    init_from : path, optional
        A DDIP model (``ddip.safetensors``, e.g. a shipped one) with the same network settings:
        its weights start this run instead of random ones (a new run that continues an earlier
        one's training; fresh optimiser and schedule). ``resume`` takes precedence.

    Returns
    -------
    DDIP
        The prior with the EMA weights (when ``config.ema_decay > 0``) and the loss curve in
        ``history``.
    """
    if not isinstance(config, DDIPConfig):
        raise TypeError(f"config must be a DDIPConfig, got {type(config).__name__}")
    config = config.validate()
    budget = TrainingBudget(time_limit_s, out_dir, resume)
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
    net = config.net.build()
    if init_from is not None:
        trained = DDIP.load(init_from)
        if trained.config.net != config.net:
            raise ValueError(f"init_from {init_from} holds another network: {trained.config.net}, this "
                             f"configuration's {config.net}")
        net.load_state_dict(trained.net.state_dict())
    net = net.to(device)
    head = _EpsHead(net, config.slices)
    schedule = config.build_schedule().to(device)
    loss = diffusion_loss(schedule, key="x", prediction=config.prediction,
                          cond_key="cond" if config.conditional else None)
    if config.mr_dropout or config.mr_mismatch:
        loss = corrupted_condition(loss, config.mr_dropout, config.mr_mismatch)
    trainer = Trainer(head, loss, data, config.train_config(), out_dir=out, device=device,
                      model_config={"ddip_config": config.to_dict()}, progress=progress)
    budget.fit(trainer, "ddip")
    trained = trainer.averaged_model().net.eval()
    prior = DDIP(config, trained)
    prior.history = {"loss": list(trainer.history.loss)}
    if out is not None:
        prior.save(out / "ddip.safetensors")
    return prior

"""Training RED: the REN, then the DCN on the REN's drift (:func:`train_red`)."""

from __future__ import annotations

from pathlib import Path

import torch

from ...diffusion.chunks import TrainingBudget
from ...diffusion.train import Trainer, random_crops, random_flips
from .._data import sinogram_pairs
from .config import REDConfig
from .losses import dcn_loss, ren_loss
from .model import RED
from .process import ResidualSchedule

__all__ = ["train_red"]


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
    return _Pairs(sinogram_pairs(dataset, config.drf, "red", "RED"))


def _windowed(loss_fn, config: REDConfig):
    """``loss_fn`` on random flips (``config.augment``) and crops (``config.crop_size``) of the pairs."""
    if config.crop_size is not None:
        loss_fn = random_crops(loss_fn, config.crop_size, keys=("low", "full"))
    if config.augment:
        loss_fn = random_flips(loss_fn, keys=("low", "full"))
    return loss_fn


def train_red(config: REDConfig, dataset, out_dir=None, progress: bool = False, device=None, *,
              resume: bool = False, time_limit_s: float | None = None) -> RED:
    """Train RED's REN, then its DCN with the REN frozen (METHODS §3.4).

    Parameters
    ----------
    config : REDConfig
    dataset : path or dataset
        A data set folder (its ``train`` split at ``config.drf`` with the ``"red"`` normalisation
        is used), or a :class:`~pettk.sim.datasets.SliceDataset` / any dataset of dicts with RED-normalised
        ``low`` (x_T) and ``full`` (x_0) sinograms ``(n_views, n_radial)``.
    out_dir : path, optional
        Trainer checkpoints go to ``out_dir/ren`` and ``out_dir/dcn``; the model to
        ``out_dir/red.safetensors``.
    progress : bool
    device : torch device, optional (default CPU)
    resume : bool
        Continue each stage from its checkpoint in ``out_dir`` (a finished stage is not rerun).
    time_limit_s : float, optional
        Wall-clock seconds for this call (a chunk of a long run): when they run out, the stage's
        checkpoint is written and :class:`~pettk.diffusion.TrainingIncomplete` raised; call again
        with ``resume=True`` to continue.

    Returns
    -------
    RED
        The trained restorer (EMA weights when ``config.ema_decay > 0``), with the loss curves in
        ``history``.
    """
    config = config.validate()
    budget = TrainingBudget(time_limit_s, out_dir, resume)
    pairs = _training_pairs(config, dataset)
    shape = tuple(pairs.low.shape[-2:])
    if config.crop_size is not None and config.crop_size > min(shape):
        raise ValueError(f"crop_size={config.crop_size} is larger than the training sinograms {shape}")
    device = torch.device(device) if device is not None else torch.device("cpu")
    schedule = ResidualSchedule(config.T)
    out = None if out_dir is None else Path(out_dir)
    meta = {"red_config": config.to_dict()}

    torch.manual_seed(config.seed)
    ren = config.net.build().to(device)
    trainer = Trainer(ren, _windowed(ren_loss(schedule, config.lambda_ssim), config), pairs,
                      config.train_config("ren"),
                      out_dir=None if out is None else out / "ren", device=device, model_config=meta,
                      progress=progress)
    budget.fit(trainer, "ren")
    ren = trainer.averaged_model().eval()
    history = {"ren_loss": list(trainer.history.loss)}

    dcn = None
    if config.dcn_steps > 0:
        torch.manual_seed(config.seed + 1)
        dcn = config.net.build().to(device)
        trainer = Trainer(dcn, _windowed(dcn_loss(schedule, ren, config.r_max), config), pairs,
                          config.train_config("dcn"),
                          out_dir=None if out is None else out / "dcn", device=device, model_config=meta,
                          progress=progress)
        budget.fit(trainer, "dcn")
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

"""Training LegoPET: the PnPNet stage, then the (feature-guided) cDPM stage, on canvas pairs of a
pettk data set (:func:`train_legopet`), and the optional warm start of the cDPM from the PnPNet."""

from __future__ import annotations

from pathlib import Path

import torch

from ...diffusion.chunks import TrainingBudget
from ...diffusion.nets import UNet
from ...diffusion.train import Trainer
from .._data import TensorPairs, load_split
from .canvas import fit_sinogram, normalise_image, normalise_sinogram, pad_image, precorrect_sinogram
from .config import LegoPETConfig
from .losses import cdpm_loss, pnpnet_loss
from .model import LegoPET

__all__ = ["train_legopet", "warm_start_cdpm"]


def _network_sinograms(config: LegoPETConfig, items: list[dict], sino: torch.Tensor):
    """The networks' sinogram input of a split (before fitting to the canvas) and ``sinogram_scale``.

    ``"precorrected"``: ``(y - additive) / mult`` with each slice's full-dose model (the low-dose
    prompts of a data set item are already multiplied by the DRF), over the mean per-slice peak of
    the full-dose precorrected sinograms (less noisy than the low-dose peaks)."""
    if config.sinogram_input != "precorrected":
        return normalise_sinogram(sino), 1.0
    mult = torch.stack([it["mult"] for it in items])
    additive = torch.stack([it["additive"] for it in items])
    full = precorrect_sinogram(torch.stack([it["full"] for it in items]), mult, additive)
    scale = float(full.amax(dim=(-2, -1)).mean())
    if not scale > 0:
        raise ValueError("the data set's precorrected full-dose sinograms are all <= 0: no counts to learn from")
    return precorrect_sinogram(sino, mult, additive) / scale, scale


def _split_pairs(config: LegoPETConfig, root, split: str = "train"):
    """Canvas pairs ``{"sino", "image"}`` ``(1, H, W)`` of a data set split plus
    ``(image_shape, sinogram_shape, image_max, sinogram_scale)``."""
    items, manifest = load_split(root, split, config.drf)
    image_max = float(manifest["train_image_max"])
    sino = torch.stack([it["full"] if config.drf is None else it["low"] for it in items])
    image = torch.stack([it[config.target] for it in items])
    image_shape, sinogram_shape = tuple(image.shape[-2:]), tuple(sino.shape[-2:])
    canvas = config.canvas
    if image_shape[0] > canvas[0] or image_shape[1] > canvas[1]:
        raise ValueError(f"the data set's images {image_shape} do not fit the canvas {canvas}: choose a preset "
                         "with a larger net.image_size")
    network_sino, sinogram_scale = _network_sinograms(config, items, sino)
    s = fit_sinogram(network_sino, canvas).unsqueeze(1)
    x = pad_image(normalise_image(image, image_max), canvas).unsqueeze(1)
    pairs = TensorPairs(sino=s.contiguous(), image=x.contiguous())
    return pairs, image_shape, sinogram_shape, image_max, sinogram_scale


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
    if isinstance(pnpnet, LegoPET) and pnpnet.config.sinogram_input != config.sinogram_input:
        raise ValueError(f"pnpnet was trained on {pnpnet.config.sinogram_input!r} sinograms but config.sinogram_input "
                         f"is {config.sinogram_input!r}")
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
                  pnpnet=None, resume: bool = False, time_limit_s: float | None = None) -> LegoPET:
    """Train LegoPET (PnPNet, then the feature-guided cDPM) or, with ``features=False``, the plain cDPM.

    Parameters
    ----------
    config : LegoPETConfig
    dataset_root : path
        A data set folder made by :func:`pettk.sim.datasets.build_dataset`: its ``train`` split is used
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
    time_limit_s : float, optional
        Wall-clock seconds for this call (a chunk of a long run): when they run out, the stage's
        checkpoint is written and :class:`~pettk.diffusion.TrainingIncomplete` raised; call again
        with ``resume=True`` to continue.

    Returns
    -------
    LegoPET
        With EMA weights when ``config.ema_decay > 0`` and the loss curves in ``history``.
    """
    if not isinstance(config, LegoPETConfig):
        raise TypeError(f"config must be a LegoPETConfig, got {type(config).__name__}")
    config = config.validate()
    budget = TrainingBudget(time_limit_s, out_dir, resume)
    pairs, image_shape, sinogram_shape, image_max, sinogram_scale = _split_pairs(config, dataset_root)
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
            budget.fit(trainer, "pnpnet")
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
    budget.fit(trainer, "cdpm")
    history["cdpm_loss"] = list(trainer.history.loss)
    cdpm = trainer.averaged_model().eval()
    model = LegoPET(config, image_shape, sinogram_shape, image_max, net_p, cdpm, sinogram_scale=sinogram_scale)
    model.history = history
    if out is not None:
        model.save(out / ("legopet.safetensors" if config.features else "cdpm.safetensors"))
    return model

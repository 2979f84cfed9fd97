"""Train and load an (optionally conditional) image diffusion model on a pettk data set.

This is the generic recipe behind ``pettk train diffusion``: a :class:`~pettk.diffusion.nets.UNet`
learns ``ε`` (or ``x0``) on 2D slices of one field of a data set built by ``pettk simulate``
(:class:`~pettk.sim.datasets.SliceDataset`), with the :class:`~pettk.diffusion.train.Trainer`.
The priors build on the same pieces with their own losses.

A configuration is a plain JSON-compatible dict (see :data:`TINY` and :data:`FULL`)::

    {"unet": {...UNet arguments...}, "schedule": {"kind": "cosine", "T": 1000},
     "prediction": "eps", "data": {"root": "...", "field": "truth", "split": "train",
     "drf": 20, "normalisation": "ddip", "cond_field": null}, "train": {...TrainConfig...}}

``cond_field`` (e.g. ``"mr"``) makes the model conditional by channel concatenation; ``augment``
(``null``, ``"default"`` or a dict of :class:`~pettk.sim.augment.Augmentation` fields) turns on
image-domain augmentation of the training slices; ``crop`` (pixels, or ``null``) trains on random
square windows of the slices (:func:`~pettk.diffusion.train.random_crops`), the model is still
applied to whole slices.
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict
from pathlib import Path

import torch

from ..io.checkpoint import load_checkpoint, save_checkpoint
from .nets import UNet
from .schedules import NoiseSchedule
from .train import TrainConfig, Trainer, diffusion_loss, random_crops

__all__ = ["TINY", "FULL", "merge_config", "build_schedule", "train_image_diffusion", "load_image_diffusion",
           "FieldDataset"]

#: Trains in about 30 s on 2 CPU cores at 32×32 (the test and CI configuration). It predicts x0:
#: after a few hundred steps an ε-predicting tiny model still leaves visible noise in its samples
#: (its ε error at small t is large), while the x0 parameterisation already samples brain-like
#: images with the data's mean intensity.
TINY = {
    "unet": {"in_channels": 1, "out_channels": 1, "base_channels": 16, "channel_mults": [1, 2, 2],
             "num_res_blocks": 1, "attention_levels": [], "num_heads": 1, "dropout": 0.0},
    "schedule": {"kind": "cosine", "T": 200},
    "prediction": "x0",
    "data": {"root": None, "field": "truth", "split": "train", "drf": None, "normalisation": "ddip",
             "cond_field": None, "augment": None, "crop": None},
    "train": {"steps": 400, "batch_size": 16, "lr": 2e-3, "ema_decay": 0.99, "lr_schedule": "cosine",
              "warmup_steps": 20, "grad_clip": 1.0, "seed": 0, "checkpoint_every": 200},
}

#: A GPU-size image model (guided-diffusion-like widths at 128×128).
FULL = {
    "unet": {"in_channels": 1, "out_channels": 1, "base_channels": 128, "channel_mults": [1, 1, 2, 2, 4],
             "num_res_blocks": 2, "attention_levels": [3], "num_heads": 4, "dropout": 0.1},
    "schedule": {"kind": "linear", "T": 1000},
    "prediction": "eps",
    "data": {"root": None, "field": "truth", "split": "train", "drf": None, "normalisation": "ddip",
             "cond_field": None, "augment": None, "crop": None},
    "train": {"steps": 200000, "batch_size": 32, "lr": 1e-4, "ema_decay": 0.9999, "lr_schedule": "constant",
              "warmup_steps": 1000, "grad_clip": 1.0, "seed": 0, "checkpoint_every": 5000},
}


def merge_config(base: dict, override: dict | None) -> dict:
    """A deep copy of ``base`` updated with ``override`` (nested dicts merged, unknown keys refused)."""
    out = copy.deepcopy(base)
    for key, value in (override or {}).items():
        if key not in out:
            raise ValueError(f"unknown configuration key {key!r}; expected one of {', '.join(sorted(out))}")
        if isinstance(out[key], dict) and isinstance(value, dict):
            for sub in value:
                if sub not in out[key]:
                    raise ValueError(f"unknown configuration key {key}.{sub}; expected one of "
                                     f"{', '.join(sorted(out[key]))}")
            out[key].update(value)
        else:
            out[key] = value
    return out


def build_schedule(spec: dict) -> NoiseSchedule:
    kind = spec.get("kind", "cosine")
    if kind == "cosine":
        return NoiseSchedule.cosine(int(spec["T"]))
    if kind == "linear":
        return NoiseSchedule.linear(int(spec["T"]))
    raise ValueError(f"schedule kind must be 'cosine' or 'linear', got {kind!r}")


class FieldDataset(torch.utils.data.Dataset):
    """Serves ``{"x": field[None], "cond": cond_field[None]}`` from a :class:`SliceDataset`."""

    def __init__(self, slices, field: str, cond_field: str | None = None):
        self.slices = slices
        self.field = field
        self.cond_field = cond_field

    def __len__(self) -> int:
        return len(self.slices)

    def __getitem__(self, idx: int) -> dict:
        item = self.slices[idx]
        out = {"x": item[self.field].unsqueeze(0)}
        if self.cond_field is not None:
            out["cond"] = item[self.cond_field].unsqueeze(0)
        return out


def _unet_from(config: dict) -> UNet:
    kwargs = dict(config["unet"])
    if config["data"].get("cond_field"):
        kwargs["cond_channels"] = kwargs.get("cond_channels") or 1
    return UNet(**{k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()})


def train_image_diffusion(config: dict, out_dir, *, dataset=None, progress: bool = True, resume: bool = False,
                          device=None, time_limit_s: float | None = None,
                          init_from=None) -> tuple[UNet, NoiseSchedule, Trainer]:
    """Train per ``config`` (merged onto :data:`TINY` defaults by the caller); returns the EMA model,
    the schedule and the trainer. ``out_dir=None`` keeps everything in memory.

    ``time_limit_s`` ends this call early (a chunk of a long run: the checkpoint and the EMA weights
    so far are written, the metadata records the step; ``resume=True`` continues).
    ``dataset`` overrides ``config["data"]`` with any map-style dataset of ``{"x": (1, H, W)}``
    items (and ``"cond"`` if conditional). ``init_from`` (a ``model.safetensors`` of this function
    or a PET-DDS model, e.g. a shipped one, with the same U-Net settings) starts the weights and
    their average from a trained model instead of random ones: a new run that continues an
    earlier one's training (fresh optimiser and learning-rate schedule; ``resume`` continues an
    interrupted run exactly and takes precedence over it). Writes ``out_dir/checkpoint.safetensors`` (trainer
    state, resumable) and ``out_dir/model.safetensors`` (EMA weights + configuration).
    """
    from ..sim.datasets import SliceDataset

    out_dir = None if out_dir is None else Path(out_dir)
    data = config["data"]
    if dataset is None:
        if not data.get("root"):
            raise ValueError("config['data']['root'] must name a data set folder (built by `pettk simulate`)")
        slices = SliceDataset(data["root"], data.get("split", "train"), drf=data.get("drf") or
                              _first_drf(data["root"]), normalisation=data.get("normalisation", "none"),
                              augment=_augmentation(data.get("augment")), augment_domain="image",
                              seed=int(config["train"].get("seed", 0)))
        dataset = FieldDataset(slices, data.get("field", "truth"), data.get("cond_field"))
    with torch.random.fork_rng(devices=[]):  # reproducible initial weights, global RNG untouched
        torch.manual_seed(int(config["train"].get("seed", 0)))
        model = _unet_from(config)
    if init_from is not None:
        model.load_state_dict(_initial_weights(init_from, config))
    if device is not None:
        model = model.to(device)
    schedule = build_schedule(config["schedule"])
    loss = diffusion_loss(schedule.to(next(model.parameters()).device), key="x", prediction=config["prediction"],
                          cond_key="cond" if data.get("cond_field") else None)
    if data.get("crop") is not None:
        loss = random_crops(loss, data["crop"])
    train_cfg = TrainConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in config["train"].items()})
    trainer = Trainer(model, loss, dataset, train_cfg, out_dir=out_dir, model_config=config, progress=progress)
    trainer.fit(resume=resume, time_limit_s=time_limit_s)
    averaged = trainer.averaged_model()
    if out_dir is not None:
        save_checkpoint(out_dir / "model.safetensors", averaged.state_dict(),
                        {"kind": "image-diffusion", "config": config, "train": asdict(train_cfg), "step": trainer.step,
                         "train_seconds": trainer.seconds})
    return averaged, schedule, trainer


def _initial_weights(path, config: dict) -> dict:
    """The U-Net weights of ``path`` (an image-diffusion or PET-DDS checkpoint) for ``config``'s network."""
    state, meta = load_checkpoint(path)
    if meta.get("kind") == "image-diffusion":
        trained = meta["config"]
    elif meta.get("method") == "PET-DDS":
        trained = meta["diffusion_config"]
    else:
        raise ValueError(f"init_from {path} is neither an image-diffusion model nor a PET-DDS model "
                         f"(kind={meta.get('kind')!r}, method={meta.get('method')!r})")
    if trained["unet"] != config["unet"] or bool(trained["data"].get("cond_field")) != bool(
            config["data"].get("cond_field")):
        raise ValueError(f"init_from {path} holds another network: its unet settings are {trained['unet']}, "
                         f"this configuration's {config['unet']}")
    return state


def _augmentation(spec):
    """``config["data"]["augment"]``: None (off), ``"default"`` or a dict of
    :class:`~pettk.sim.augment.Augmentation` fields."""
    from ..sim.augment import Augmentation

    if spec is None:
        return None
    if spec == "default":
        return Augmentation.default()
    if isinstance(spec, dict):
        return Augmentation(**{k: tuple(v) if isinstance(v, list) else v for k, v in spec.items()})
    raise ValueError(f"config['data']['augment'] must be null, 'default' or an object of Augmentation fields, "
                     f"got {spec!r}")


def _first_drf(root) -> float:
    manifest = json.loads((Path(root) / "manifest.json").read_text())
    return float(sorted(manifest["drf_keys"], key=float)[0])


def load_image_diffusion(path, device="cpu") -> tuple[UNet, NoiseSchedule, dict]:
    """Load ``model.safetensors`` written by :func:`train_image_diffusion`: ``(model, schedule, config)``."""
    state, meta = load_checkpoint(path, device=device)
    if meta.get("kind") != "image-diffusion":
        raise ValueError(f"{path} is not an image-diffusion checkpoint (kind {meta.get('kind')!r})")
    config = meta["config"]
    model = _unet_from(config).to(device)
    model.load_state_dict(state)
    model.eval()
    return model, build_schedule(config["schedule"]), config

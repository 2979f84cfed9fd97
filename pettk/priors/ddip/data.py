"""DDIP's training data: 2.5D slabs (:func:`slab_indices`), normalised training slabs
(:class:`DDIPImages`) from a data set or from phantoms (:func:`phantom_training_images`)."""

from __future__ import annotations

import logging

import numpy as np
import torch

from .._data import load_split
from .config import DDIPConfig, _int

__all__ = ["slab_indices", "DDIPImages", "phantom_training_images"]

log = logging.getLogger("pettk.priors.ddip")


def slab_indices(n_slices: int, channels: int) -> torch.Tensor:
    """Slice indices of every slab: ``(n_slices, channels)``, slab ``z`` holds slices ``z - c//2`` to ``z + c//2``
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
        """Slabs from the ``truth`` and ``mr`` images of a :func:`pettk.sim.datasets.build_dataset` split."""
        items, manifest = load_split(root, split, None)
        cfg = manifest.get("config", {})
        if config.slices > 1:
            n = int(cfg.get("slices_per_subject", 1))
            spacing = float(cfg.get("slice_range_mm", 0.0)) / max(n - 1, 1)
            if n > 1 and abs(spacing - 2.03125) > 0.5:
                log.warning("2.5D training on slices %.2f mm apart (adjacent slices are 2.03 mm apart); "
                            "build the data set with slice_range_mm = (slices_per_subject - 1) * 2.03125", spacing)
        return cls(np.stack([it["truth"].numpy() for it in items]), np.stack([it["mr"].numpy() for it in items]),
                   config, groups=[it["subject"] for it in items], slice_positions=[it["slice"] for it in items])


def phantom_training_images(config: DDIPConfig, n_subjects: int, slices_per_subject: int = 1, *,
                            image_size: int | None = None, tracer: str = "fdg", lesions: int = 2,
                            slice_range_mm: float | None = None, seed: int = 0) -> DDIPImages:
    """Training slabs straight from :func:`pettk.sim.brain_phantom` (no scan simulation): quick pretraining.

    Subject ``i`` uses seed ``seed + i``; its slices are evenly spaced over ``slice_range_mm``
    around the basal-ganglia level (default: adjacent 2.03 mm slices for 2.5D, 40 mm otherwise)
    on the 267 mm field of view of :class:`pettk.sim.datasets.DatasetConfig` at ``image_size`` (default
    ``config.net.image_size``).
    """
    from ...geometry import ImageGrid
    from ...sim.phantoms import brain_phantom

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

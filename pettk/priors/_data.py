"""Data plumbing shared by the learned priors' training: the data set manifest, one split's
slices, and in-memory tensor pairs for :class:`~pettk.diffusion.train.Trainer`."""

from __future__ import annotations

import json
from pathlib import Path

import torch

__all__ = ["TensorPairs", "read_manifest", "load_split", "sinogram_pairs"]


class TensorPairs(torch.utils.data.Dataset):
    """In-memory samples: item ``i`` is ``{name: tensor[i]}`` for every named tensor (one length)."""

    def __init__(self, **tensors: torch.Tensor):
        if not tensors:
            raise ValueError("TensorPairs needs at least one tensor")
        lengths = {name: t.shape[0] for name, t in tensors.items()}
        if len(set(lengths.values())) != 1:
            raise ValueError(f"the tensors must share their first dimension, got {lengths}")
        self.tensors = tensors
        for name, t in tensors.items():
            setattr(self, name, t)

    def __len__(self) -> int:
        return next(iter(self.tensors.values())).shape[0]

    def __getitem__(self, i):
        return {name: t[i] for name, t in self.tensors.items()}


def read_manifest(root) -> dict:
    """The ``manifest.json`` of a data set made by :func:`pettk.sim.datasets.build_dataset`.

    Raises ``FileNotFoundError`` when ``root`` holds none.
    """
    path = Path(root) / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"no pettk data set at {Path(root)} (missing manifest.json)")
    return json.loads(path.read_text())


def load_split(root, split: str, drf: float | None, normalisation: str = "none"):
    """All items of one split of a data set, with its manifest: ``(items, manifest)``.

    ``drf`` picks the low-dose prompts (``None``: the data set's lowest DRF, for callers that only
    use the full-dose sinogram); a DRF the data set lacks raises ``ValueError`` naming the ones it
    has, an empty split raises ``ValueError``.
    """
    from ..sim.datasets import SliceDataset

    manifest = read_manifest(root)
    drfs = sorted(manifest["drf_keys"], key=float)
    if drf is not None and f"{float(drf):g}" not in manifest["drf_keys"]:
        raise ValueError(f"config.drf={drf!r} is not in the data set at {Path(root)}; it has DRFs {drfs}")
    ds = SliceDataset(root, split, float(drf if drf is not None else drfs[0]), normalisation)
    if len(ds) == 0:
        raise ValueError(f"the data set at {Path(root)} has no '{split}' slices")
    return [ds[i] for i in range(len(ds))], manifest


def sinogram_pairs(dataset, drf: float, normalisation: str, method: str):
    """The training source of a sinogram restorer: ``dataset`` (a data set folder, opened as its
    ``train`` split with ``normalisation``, or any dataset of ``{"low", "full"}`` dicts), checked
    to serve ``drf`` with ``normalisation`` and to be non-empty."""
    import math

    from ..sim.datasets import SliceDataset

    if isinstance(dataset, (str, Path)):
        dataset = SliceDataset(dataset, "train", drf, normalisation)
    if isinstance(dataset, SliceDataset):
        if dataset.normalisation != normalisation:
            raise ValueError(f"dataset must use normalisation={normalisation!r}, got {dataset.normalisation!r}")
        if not math.isclose(dataset.drf, float(drf)):
            raise ValueError(f"dataset serves DRF {dataset.drf:g} but config.drf is {drf:g}")
    if len(dataset) == 0:
        raise ValueError("dataset is empty")
    first = dataset[0]
    if not isinstance(first, dict) or "low" not in first or "full" not in first:
        raise ValueError(f"dataset items must be dicts with {method}-normalised 'low' and 'full' sinograms")
    return dataset

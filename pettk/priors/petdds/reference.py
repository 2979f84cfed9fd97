"""The intensity level of PET-DDS: an image's head mean (:func:`activity_level`) and the training
images' reference (:func:`reference_statistics`)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

__all__ = ["activity_level", "reference_statistics"]

#: Image-model normalisations whose images are on a [0, 1]-like activity scale (``activity = s * x``).
_UNIT_NORMALISATIONS = ("ddip", "none")


# --------------------------------------------------------------------------------------------
# Intensity level and the training data's reference
# --------------------------------------------------------------------------------------------
def activity_level(image, mask_threshold: float = 0.2) -> float:
    """The "head mean" of an image or volume (any shape): its mean over ``{x > mask_threshold * q99(x)}``.

    ``q99`` is the ``ceil(0.99 n)``-th smallest of the ``n`` voxels (an order statistic, no
    interpolation); when it is not positive (an object covering under 1 % of the voxels) the
    maximum stands in for it. Returns 0.0 for an image with no positive voxel (all zero, say) or an
    empty mask (``mask_threshold >= 1``). ``ValueError`` for an image with no voxel. One image of
    :func:`_levels`.
    """
    x = torch.as_tensor(np.asarray(image) if isinstance(image, np.ndarray) else image).detach()
    return float(_levels(x.reshape(1, -1), mask_threshold)[0])


def _levels(images: torch.Tensor, mask_threshold: float) -> torch.Tensor:
    """:func:`activity_level` of each of ``N`` images ``(N, ...)`` at once → float64 ``(N,)`` on the CPU
    (0 for an image with no positive voxel or an empty mask; see :func:`activity_level`)."""
    flat = torch.as_tensor(images).detach().reshape(images.shape[0], -1).to(torch.float64).cpu()
    if flat.shape[1] == 0:
        raise ValueError("activity_level of an empty image")
    k = max(1, int(math.ceil(0.99 * flat.shape[1])))
    q = torch.kthvalue(flat, k, dim=1, keepdim=True).values
    q = torch.where(q > 0, q, flat.amax(dim=1, keepdim=True))    # sparse objects: the maximum instead
    mask = (flat > mask_threshold * q) & (q > 0)
    counts = mask.sum(dim=1)
    inside = torch.where(mask, flat, torch.zeros_like(flat)).sum(dim=1) / counts.clamp_min(1)
    return torch.where(counts > 0, inside, torch.zeros_like(inside))


def reference_statistics(source, normalisation: str = "ddip", mask_threshold: float = 0.2,
                         split: str = "train", max_slices: int = 4000) -> dict:
    """The training images' intensity reference for :attr:`PETDDSConfig.reference_mean`.

    Parameters
    ----------
    source : path or array
        A data set folder built by :func:`pettk.sim.datasets.build_dataset` (its ``split`` subjects'
        ``truth`` images, normalised as the image model was: ``"ddip"`` divides by the
        manifest's ``train_image_max``, ``"none"`` keeps the activity), or the normalised training
        images themselves, ``(N, H, W)``.
    normalisation : {"ddip", "none"}
        The image model's ``config["data"]["normalisation"]`` (data set folders only).
    mask_threshold : float
    split : str
    max_slices : int
        At most this many slices (evenly spaced) are measured.

    Returns
    -------
    dict with ``reference_mean`` (median per-slice :func:`activity_level`), ``image_scale``
    (activity of a unit normalised image, ``None`` for arrays), ``image_size`` ``(H, W)`` and
    ``n_slices`` (slices measured).
    """
    if normalisation not in _UNIT_NORMALISATIONS:
        raise ValueError(f"PET-DDS supports image models trained with normalisation in {_UNIT_NORMALISATIONS} "
                         f"(activity = scale * image), got {normalisation!r}")
    if isinstance(source, (str, Path)):
        root = Path(source)
        manifest_path = root / "manifest.json"
        if not manifest_path.is_file():
            raise FileNotFoundError(f"no pettk data set at {root} (missing manifest.json)")
        manifest = json.loads(manifest_path.read_text())
        subjects = [s for s in manifest["subjects"] if s["split"] == split]
        if not subjects:
            raise ValueError(f"the {split!r} split of {root} has no subjects")
        scale = float(manifest["train_image_max"]) if normalisation == "ddip" else 1.0
        total = sum(int(s["n_slices"]) for s in subjects)
        step = max(1, total // max_slices)
        chunks, k = [], 0
        for s in subjects:
            arr = np.load(root / s["name"] / "truth.npy", mmap_mode="r")
            idx = [i for i in range(arr.shape[0]) if (k + i) % step == 0]
            k += arr.shape[0]
            if idx:
                chunks.append(torch.from_numpy(np.asarray(arr[idx], dtype=np.float32)) / scale)
        image_scale = scale
    else:
        images = torch.as_tensor(np.asarray(source, dtype=np.float32))
        if images.ndim != 3 or images.shape[0] == 0:
            raise ValueError(f"training images must have shape (N, H, W) with N >= 1, got {tuple(images.shape)}")
        chunks = list(torch.split(images, 64))
        image_scale = None
    levels, n = [], 0
    for images in chunks:                     # a slice set at a time: torch.quantile's input is limited
        if images.ndim != 3:
            raise ValueError(f"training images must have shape (N, H, W), got {tuple(images.shape)}")
        if not bool(torch.isfinite(images).all()) or bool((images < 0).any()):
            raise ValueError("training images must be finite and >= 0")
        level = _levels(images, mask_threshold)
        levels.append(level[level > 0])       # slices with no positive voxel have no level
        n += images.shape[0]
    levels = torch.cat(levels)
    if levels.numel() == 0:
        raise ValueError("the training images are all zero")
    return {"reference_mean": float(levels.median()), "image_scale": image_scale,
            "image_size": (int(images.shape[1]), int(images.shape[2])), "n_slices": n}

"""NIfTI images with the affine of an :class:`~pettk.geometry.ImageGrid` (via nibabel)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from ..geometry import ImageGrid
from .atomic import atomic_path

__all__ = ["save_nifti", "load_nifti"]


def save_nifti(path, image, grid: ImageGrid) -> Path:
    """Write ``image`` (shape ``grid.shape``; numpy or torch) to ``path`` (``.nii`` or ``.nii.gz``)
    atomically, with ``grid.affine`` and millimetre units. 2D images are stored as one slice."""
    if not isinstance(grid, ImageGrid):
        raise TypeError(f"grid must be an ImageGrid, got {type(grid).__name__}")
    data = np.asarray(image.detach().cpu() if hasattr(image, "detach") else image)
    if data.shape != tuple(grid.shape):
        raise ValueError(f"image must have shape {tuple(grid.shape)}, got {data.shape}")
    if not np.issubdtype(data.dtype, np.floating) and not np.issubdtype(data.dtype, np.integer):
        raise TypeError(f"image must be numeric, got dtype {data.dtype}")
    name = str(path)
    if not (name.endswith(".nii") or name.endswith(".nii.gz")):
        raise ValueError(f"path must end in .nii or .nii.gz, got {name!r}")
    if data.ndim == 2:
        data = data[:, :, None]
    img = nib.Nifti1Image(np.ascontiguousarray(data), grid.affine)
    img.header.set_xyzt_units("mm", "sec")
    suffix = ".nii.gz" if name.endswith(".nii.gz") else ".nii"
    with atomic_path(path, suffix=suffix) as tmp:
        nib.save(img, str(tmp))
    return Path(path)


def load_nifti(path, ndim: int | None = None):
    """Read a NIfTI file; returns ``(image, grid)`` with an axis-aligned affine.

    ``ndim=2`` drops a singleton third axis (pettk's 2D images are stored as one slice).
    """
    img = nib.load(str(path))
    data = np.asarray(img.dataobj)
    if ndim == 2 and data.ndim == 3 and data.shape[2] == 1:
        data = data[:, :, 0]
    if data.ndim not in (2, 3):
        raise ValueError(f"expected a 2D or 3D image in {path}, got shape {data.shape}")
    affine = np.asarray(img.affine, dtype=np.float64)
    grid = ImageGrid.from_affine(data.shape, affine)
    return data, grid

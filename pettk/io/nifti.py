"""NIfTI images with the affine of an :class:`~pettk.geometry.ImageGrid` (via nibabel).

Conventions
-----------
pettk's grids are axis-aligned: image axis ``k`` runs along world axis ``k`` (x, y, z in mm) with a
positive voxel size, and the centre of voxel ``i`` is ``origin_mm + i * voxel_size_mm``
(:attr:`ImageGrid.affine <pettk.geometry.ImageGrid.affine>` is diagonal). World coordinates are
those of the NIfTI affine (RAS+ for scanner/patient files: x to the right, y anterior, z superior).

Files written by other tools often store the axes in another order or direction: LAS (``diag(-2,
2, 2)``, many DICOM converters), FreeSurfer's conformed LIA, LPS, permuted axes. :func:`load_nifti`
reorders and flips such an image (exactly, no interpolation) so that it follows pettk's
convention; every voxel keeps its world position. An *oblique* affine (a rotation that is not a
multiple of 90 degrees, or a shear) has no axis-aligned equivalent: it is refused unless the
caller asks for it to be resampled (``resample=True``).
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel import orientations

from ..geometry import ImageGrid
from .atomic import atomic_path
from .errors import FileFormatError, as_path, existing_file, reading

__all__ = ["save_nifti", "load_nifti"]

#: An affine counts as axis-aligned when the diagonal (axis-aligned) grid puts every voxel centre of
#: the image within this fraction of a voxel of where the affine puts it (NIfTI stores affines in
#: float32 and quaternions, so exact zeros off the diagonal are not guaranteed).
ALIGNMENT_TOL_VOXELS = 1e-3

#: Largest image (voxels) :func:`load_nifti` creates when it resamples an oblique image.
MAX_RESAMPLED_VOXELS = 2**28

#: The dtypes nibabel writes in NIfTI-1 that :func:`save_nifti` stores as they are.
_NIFTI_DTYPES = (np.uint8, np.int8, np.uint16, np.int16, np.uint32, np.int32, np.uint64, np.int64,
                 np.float32, np.float64)


def save_nifti(path, image, grid: ImageGrid, *, allow_nonfinite: bool = False) -> Path:
    """Write ``image`` (shape ``grid.shape``; numpy or torch) to ``path`` (``.nii`` or ``.nii.gz``).

    The file carries ``grid.affine`` (voxel index -> mm) in both the sform and the qform, with
    millimetre units; 2D images are stored as one slice (shape ``(nx, ny, 1)``, slice at z = 0,
    1 mm thick). Integer and float32/float64 images are stored in their own dtype; float16 is
    stored as float32 (exact). Other dtypes (bool, complex, long double) are refused. Everything is
    checked before anything is written, and the file is written atomically (a temporary file
    renamed into place), so a refused or failed save leaves no file behind.

    A floating-point image holding NaN or +-Inf (a diverged reconstruction, a division by zero
    upstream) is refused with a :class:`ValueError` that counts the bad voxels, unless
    ``allow_nonfinite=True`` (then it is written as it is; most viewers show such voxels blank).
    """
    if not isinstance(grid, ImageGrid):
        raise TypeError(f"grid must be an ImageGrid, got {type(grid).__name__}")
    target = as_path(path, "path")
    name = str(target)
    if not (name.endswith(".nii") or name.endswith(".nii.gz")):
        raise ValueError(f"path must end in .nii or .nii.gz, got {name!r}")
    data = image_array(image, grid)
    if data.dtype == np.float16:
        data = data.astype(np.float32)  # NIfTI-1 has no float16; float32 holds every float16 exactly
    if not any(data.dtype == np.dtype(t) for t in _NIFTI_DTYPES):
        raise TypeError(f"image must be real numbers (an integer type, float16, float32 or float64); NIfTI "
                        f"cannot store dtype {data.dtype}" + (" (convert to float64 first)"
                                                               if data.dtype.kind == "f" else ""))
    if not isinstance(allow_nonfinite, (bool, np.bool_)):
        raise TypeError(f"allow_nonfinite must be True or False, got {allow_nonfinite!r}")
    if data.dtype.kind == "f" and not allow_nonfinite:
        check_finite_image(data, f"cannot write {name}")
    if data.ndim == 2:
        data = data[:, :, None]
    data = np.ascontiguousarray(data)
    img = nib.Nifti1Image(data, grid.affine, dtype=data.dtype)
    img.header.set_xyzt_units("mm", "sec")
    suffix = ".nii.gz" if name.endswith(".nii.gz") else ".nii"
    with atomic_path(target, suffix=suffix) as tmp:
        nib.save(img, str(tmp))
    return target


def load_nifti(path, ndim: int | None = None, *, resample: bool = False, order: int = 1):
    """Read an image file; returns ``(image, grid)`` on an axis-aligned :class:`ImageGrid`.

    Reads NIfTI-1/2 (``.nii``, ``.nii.gz``) and the other volume formats nibabel reads with an
    affine (e.g. FreeSurfer ``.mgz``). The image is returned in pettk's convention (see the module
    docstring): when the file's affine is a permutation and/or sign flip of the axes (LAS, LIA,
    LPS, ...), the array is transposed and flipped so that axis ``k`` runs along +world axis ``k``
    and ``grid`` holds the positive voxel sizes and the origin (mm) of the reoriented voxel
    ``[0, 0, 0]``. This is exact: every value is kept, each voxel keeps its world position, and
    ``save_nifti`` + ``load_nifti`` reproduce the values and the grid (voxel sizes and origin to
    float32 precision: the NIfTI header stores the affine in float32).

    Parameters
    ----------
    path : str or os.PathLike
        The file.
    ndim : {None, 2, 3}
        ``2`` returns a 2D image: the file must hold a single slice (after reorientation, a
        singleton third axis), which is dropped together with its z position (pettk's 2D images
        live at z = 0). ``3`` returns a 3D image (a 2D file gets a singleton third axis). ``None``
        returns what the file holds (2D only when the file's data array is 2D). Trailing singleton
        axes beyond the third (e.g. one time frame) are dropped.
    resample : bool
        An oblique affine (rotated by an angle that is not a multiple of 90 degrees, or sheared) is
        refused with a :class:`FileFormatError` unless this is true. When true, the image is
        resampled onto the axis-aligned grid that covers the voxel centres of the file's image,
        with voxel sizes equal to the file's voxel sizes (lengths of the affine's columns after
        reorientation), centred on that box. Values are interpolated with
        :func:`scipy.ndimage.affine_transform` (``order``); an output voxel whose centre lies
        outside the file's field of view (its voxels extended by half a voxel) is 0, one inside
        within half a voxel of the edge takes the nearest edge value. Axis-aligned files are
        never resampled.
    order : {1, 0}
        Interpolation when resampling: ``1`` linear (the default; the result is float32, or
        float64 for float64 and 32/64-bit integer data), ``0`` nearest neighbour (keeps the dtype:
        for label or tissue-class maps).

    Returns
    -------
    image : numpy.ndarray
        Shape ``grid.shape``; the file's data type (scaling by ``scl_slope``/``scl_inter``
        applied as nibabel does).
    grid : ImageGrid

    Raises
    ------
    FileNotFoundError
        Nothing at ``path``.
    FileFormatError
        (a ``ValueError``) the file cannot be read (damaged, truncated, not an image), holds
        complex/RGB/boolean data or more than three non-singleton axes, has a singular or
        non-finite affine, an oblique affine without ``resample=True``, or is not a single slice
        when ``ndim=2`` is asked for. The message names the file.
    """
    if ndim is not None and (isinstance(ndim, bool) or ndim not in (2, 3)):
        raise ValueError(f"ndim must be None, 2 or 3, got {ndim!r}")
    if not isinstance(resample, (bool, np.bool_)):
        raise TypeError(f"resample must be True or False, got {resample!r}")
    if isinstance(order, bool) or order not in (0, 1):
        raise ValueError(f"order must be 0 (nearest) or 1 (linear), got {order!r}")
    path = existing_file(path, "NIfTI file")
    with reading(path, "image file"):
        img = nib.load(str(path), mmap=False)  # read now: errors surface here, no open file kept
        affine = getattr(img, "affine", None)
        if affine is None or not hasattr(img, "dataobj"):
            raise FileFormatError(f"{path}: a {type(img).__name__} is not a volume with an affine")
        data = np.asarray(img.dataobj)
        affine = np.array(affine, dtype=np.float64)

    if data.dtype.kind not in "iuf":
        raise FileFormatError(f"{path}: the image holds {data.dtype} values; pettk reads real (integer or "
                              "floating-point) images")
    file_ndim = data.ndim
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim == 2:
        data = data[:, :, None]
    if data.ndim != 3:
        raise FileFormatError(f"{path}: expected a 2D or 3D image, got shape {tuple(np.shape(img.dataobj))}")
    if data.size == 0:
        raise FileFormatError(f"{path}: the image is empty (shape {data.shape})")
    check_affine(affine, path)

    # reorder and flip the axes to the closest axis-aligned (RAS+) orientation -- exact
    ornt = orientations.ornt_transform(orientations.io_orientation(affine), orientations.axcodes2ornt("RAS"))
    reoriented_affine = affine @ orientations.inv_ornt_aff(ornt, data.shape)
    data = np.ascontiguousarray(orientations.apply_orientation(data, ornt))

    if _is_axis_aligned(reoriented_affine, data.shape):
        voxel_size = np.diag(reoriented_affine)[:3].copy()
        origin = reoriented_affine[:3, 3].copy()
    elif resample:
        data, voxel_size, origin = _resample_axis_aligned(data, reoriented_affine, order, path)
    else:
        angle = _obliquity_degrees(reoriented_affine)
        raise FileFormatError(
            f"{path}: the affine is oblique (axes {angle:.3g} degrees off the world axes, or sheared), so the "
            "image has no axis-aligned grid; load_nifti(path, resample=True) resamples it onto one "
            f"(linear interpolation). Affine: {np.round(affine[:3], 6).tolist()}")

    want2d = ndim == 2 or (ndim is None and file_ndim == 2)
    if want2d:
        if data.shape[2] != 1:
            raise FileFormatError(f"{path}: a 2D image was asked for, but the image has shape {data.shape} "
                                  "(in pettk's axis order); a 2D image is stored as one slice (nx, ny, 1)")
        data = data[:, :, 0]
        voxel_size, origin = voxel_size[:2], origin[:2]
    try:
        grid = ImageGrid(data.shape, voxel_size, origin)
    except (TypeError, ValueError) as exc:
        raise FileFormatError(f"{path}: the affine gives no valid grid ({exc})") from exc
    return data, grid


def check_finite_image(data: np.ndarray, what: str) -> None:
    """Raise a :class:`ValueError` starting with ``what`` when the float array ``data`` holds NaN or
    +-Inf, saying how many voxels of each and where the first one is (``allow_nonfinite=True``
    writes it anyway)."""
    finite = np.isfinite(data)
    if finite.all():
        return
    n_nan = int(np.isnan(data).sum())
    n_inf = int(data.size - finite.sum()) - n_nan
    first = tuple(int(i) for i in np.argwhere(~finite)[0])
    raise ValueError(f"{what}: the image holds {n_nan} NaN and {n_inf} infinite voxel(s) of {data.size} (first at "
                     f"index {first}); fix the computation that produced them, or pass allow_nonfinite=True to "
                     "write them anyway")


def image_array(image, grid: ImageGrid) -> np.ndarray:
    """``image`` (numpy array or torch tensor, any device) as a numpy array of ``grid.shape``;
    ``TypeError``/``ValueError`` otherwise (shared by the NIfTI and DICOM writers)."""
    if hasattr(image, "detach"):
        image = image.detach().cpu()
    try:
        data = np.asarray(image)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise TypeError(f"image must be a numpy array or a torch tensor, got {type(image).__name__}") from exc
    if data.shape != tuple(grid.shape):
        raise ValueError(f"image must have shape {tuple(grid.shape)}, got {data.shape}")
    return data


def check_affine(affine: np.ndarray, where) -> np.ndarray:
    """``affine`` if it is a finite, non-singular 4 x 4 voxel-to-world matrix; otherwise a
    :class:`FileFormatError` naming ``where`` (the file)."""
    if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
        raise FileFormatError(f"{where}: the affine is not a finite 4x4 matrix: {affine.tolist()}")
    linear = affine[:3, :3]
    sizes = np.linalg.norm(linear, axis=0)
    if np.any(sizes == 0) or abs(np.linalg.det(linear / sizes)) < 1e-6:
        raise FileFormatError(f"{where}: the affine is singular (a voxel axis has no direction in space), so the "
                              f"image has no world coordinates: {np.round(affine[:3], 6).tolist()}")
    return affine


def _is_axis_aligned(affine: np.ndarray, shape) -> bool:
    """True when the diagonal of ``affine`` places every voxel centre within
    :data:`ALIGNMENT_TOL_VOXELS` of where the full affine does (and the diagonal is positive)."""
    linear = affine[:3, :3]
    diag = np.diag(linear)
    if np.any(diag <= 0):
        return False
    off = linear - np.diag(diag)
    # largest displacement (mm) of a voxel centre along world axis r: sum_c |off[r, c]| * (n_c - 1)
    extent = np.maximum(np.asarray(shape, dtype=np.float64) - 1.0, 1.0)
    displacement = np.abs(off) @ extent
    return bool(np.all(displacement <= ALIGNMENT_TOL_VOXELS * diag))


def _obliquity_degrees(affine: np.ndarray) -> float:
    """Largest angle (degrees) between a voxel axis and the world axis it is closest to."""
    linear = affine[:3, :3]
    cosines = np.abs(np.diag(linear)) / np.linalg.norm(linear, axis=0)
    return float(np.degrees(np.arccos(np.clip(cosines.min(), -1.0, 1.0))))


def _resample_axis_aligned(data: np.ndarray, affine: np.ndarray, order: int, path):
    """Resample ``data`` (index -> mm by ``affine``) onto the axis-aligned grid described in
    :func:`load_nifti`; returns ``(image, voxel_size_mm, origin_mm)``."""
    from scipy import ndimage

    shape = np.asarray(data.shape)
    # the column lengths, rounded to float32 as NIfTI stores them (so 2.0 stays 2.0 after a rotation)
    voxel_size = np.linalg.norm(affine[:3, :3], axis=0).astype(np.float32).astype(np.float64)
    corners = np.array(list(itertools.product(*[(0.0, float(n - 1)) for n in shape])))
    world = corners @ affine[:3, :3].T + affine[:3, 3]
    lo, hi = world.min(axis=0), world.max(axis=0)
    out_shape = tuple(int(math.ceil((h - low) / v - 1e-6)) + 1 for low, h, v in zip(lo, hi, voxel_size))
    n_out = math.prod(out_shape)
    if n_out > MAX_RESAMPLED_VOXELS:
        raise FileFormatError(f"{path}: resampling this oblique image needs a {out_shape} grid ({n_out} voxels), "
                              f"more than the {MAX_RESAMPLED_VOXELS} allowed")
    origin = (lo + hi) / 2.0 - (np.asarray(out_shape) - 1.0) / 2.0 * voxel_size
    target = np.eye(4)
    target[:3, :3] = np.diag(voxel_size)
    target[:3, 3] = origin
    to_source = np.linalg.solve(affine, target)  # output voxel index -> file voxel index
    matrix, offset = to_source[:3, :3], to_source[:3, 3]
    out_dtype = data.dtype if order == 0 else np.result_type(data.dtype, np.float32)
    source = data if order == 0 else data.astype(out_dtype, copy=False)
    out = ndimage.affine_transform(source, matrix, offset, output_shape=out_shape, output=out_dtype,
                                   order=order, mode="nearest")
    # zero the output voxels whose centre lies outside the file's field of view, a slab at a time
    per_slab = max(1, (1 << 20) // max(1, out_shape[1] * out_shape[2]))
    j, k = np.meshgrid(np.arange(out_shape[1], dtype=np.float64), np.arange(out_shape[2], dtype=np.float64),
                       indexing="ij")
    tol = 1e-6
    for start in range(0, out_shape[0], per_slab):
        i = np.arange(start, min(start + per_slab, out_shape[0]), dtype=np.float64)[:, None, None]
        inside = np.ones((i.shape[0],) + out_shape[1:], dtype=bool)
        for axis in range(3):
            s = matrix[axis, 0] * i + matrix[axis, 1] * j + matrix[axis, 2] * k + offset[axis]
            inside &= (s >= -0.5 - tol) & (s <= shape[axis] - 0.5 + tol)
        out[start:start + i.shape[0]][~inside] = 0
    return out, voxel_size, origin

"""Training-data augmentation applied identically to paired images and sinograms.

Standard data augmentation for supervised denoising/reconstruction networks: one random draw per
item, applied to *every* array of the pair (input and target alike) so that the pair stays
aligned. The elastic part is the smooth random displacement field of P. Y. Simard, D. Steinkraus
and J. C. Platt, "Best practices for convolutional neural networks applied to visual document
analysis", ICDAR 2003 (white noise smoothed by a Gaussian and scaled).

Two domains
-----------
*Images* ``(nx, ny)`` (``truth``, ``reference``, ``mr``, ``mu``, ``labels``, ``lesions``) may be
mirrored, rotated, zoomed and elastically deformed (:func:`augment_images`): continuous images by
linear interpolation (non-negative inputs stay non-negative), ``labels`` and ``lesions`` by
nearest-neighbour interpolation (codes are preserved); image edges are extended (``mode="nearest"``).

*Sinograms* ``(n_views, n_radial)`` (``low``, ``full``, ``mult``, ``additive``) only take
transforms that are exact symmetries of the measurement geometry (:func:`augment_sinograms`): the
mirror ``x -> -x`` and rotations about the scanner axis by whole multiples of
:func:`exact_view_step` views (one view for :class:`~pettk.geometry.ParallelBeam2D`, one polygon
side for :class:`~pettk.geometry.SinogramLayout2D`). They are permutations of sinogram bins
(:func:`sinogram_symmetry`), found by mapping every LOR's endpoints through the inverse transform
and matching them to the geometry's own LORs, so that the augmented sinogram is *exactly* the one
of the transformed object (views past ``pi`` wrap with the radial flip ``p(theta + pi, s) =
p(theta, -s)``). The image grid must be centred on the scanner axis (the default of
:class:`~pettk.geometry.ImageGrid`) with ``x`` along array axis 0.

:func:`augment_item` applies one draw to a :class:`~pettk.sim.datasets.SliceDataset` item: with
``domain="both"`` images *and* sinograms take the sinogram-exact transform (mirror + rotation by
whole exact view steps; no zoom, no elastic, no per-tissue scaling, which have no exact sinogram
counterpart), so projecting the augmented ``truth`` still gives the augmented sinograms up to the
interpolation of the image rotation.

Intensities
-----------
``global_intensity`` multiplies the activity images (``truth``, ``reference``) and the counts
(``low``, ``full`` and ``additive``) by one factor ``c`` (log-uniform); ``mr``, ``mu`` and
``mult`` are unchanged, so ``c * ybar = mult * A(c * truth) + c * additive`` stays consistent.
The noise is *not* that of a scan with ``c`` times the counts: a scaled Poisson draw has variance
``c**2 * ybar`` (a scan with the original counts and a different calibration).
``tissue_intensity`` multiplies the ``truth`` by an independent log-normal factor per tissue code
of ``labels`` (images only; skipped silently when ``labels`` or ``truth`` is absent). The other
activity images (the ``reference``, an OSEM of a scan of the same truth) are multiplied by the
ratio ``(B(truth * F) + e) / (B(truth) + e)`` with ``B`` a Gaussian blur of ``tissue_blur_mm``
FWHM, the noiseless, linear-resolution approximation of re-reconstructing the scaled truth; their
relative noise level is kept, and partial-volume voxels take the factor of their majority label.

Apply augmentation to raw items (``normalisation="none"``) and normalise afterwards; normalised
items are accepted (geometry is unaffected) but intensity factors then act on normalised values.
Arrays keep their type, dtype, device and shape; everything random comes from one
``numpy.random.Generator``, drawn in a fixed order (deterministic for a seed).
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from scipy import ndimage
from scipy.spatial import cKDTree

from .._validation import (
    as_bounded_float,
    as_float_vector,
    as_lowercase_choice,
    as_nonnegative_float,
    as_positive_float,
)
from ..geometry import ParallelBeam2D, SinogramLayout2D, from_dict

__all__ = ["Augmentation", "augment_images", "augment_sinograms", "augment_item", "warp_images",
           "transform_sinograms", "sinogram_symmetry", "exact_view_step", "IMAGE_KEYS", "LABEL_KEYS",
           "ACTIVITY_KEYS", "SINOGRAM_KEYS", "COUNT_KEYS", "DOMAINS", "MAX_TISSUE_CODE"]

IMAGE_KEYS = ("truth", "reference", "mr", "mu", "labels", "lesions")
LABEL_KEYS = ("labels", "lesions")  # nearest-neighbour interpolation
ACTIVITY_KEYS = ("truth", "reference")  # global (and per-tissue) intensity factors
SINOGRAM_KEYS = ("low", "full", "mult", "additive")
COUNT_KEYS = ("low", "full", "additive")  # global intensity factor; ``mult`` is unchanged
DOMAINS = ("both", "image", "sinogram")
#: Tissue codes 1..MAX_TISSUE_CODE of ``labels`` get a factor each (0 is background, unscaled).
MAX_TISSUE_CODE = 255
_FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))


@dataclass(frozen=True)
class Augmentation:
    """Ranges of the random augmentation (validated on construction).

    Attributes
    ----------
    flip : float
        Probability of the left-right mirror ``x -> -x`` (image axis 0), in [0, 1].
    rotation_deg : float
        Rotations about the image centre are uniform in ``[-rotation_deg, +rotation_deg]`` degrees,
        in [0, 180]. For sinograms they are whole exact view steps within that range (uniform over
        the allowed steps; none when a step is larger than the range).
    zoom : float
        The object is magnified by a factor uniform in ``[1 - zoom, 1 + zoom]``, zoom in [0, 0.5].
    elastic_mm : float
        Largest displacement (mm) of the smooth random field, >= 0 (0: no elastic deformation).
        Keep it well below ``elastic_smoothness_mm`` so that the warp does not fold.
    elastic_smoothness_mm : float
        Standard deviation (mm) of the Gaussian that smooths the white-noise field, > 0.
    global_intensity : (float, float)
        Range ``(low, high)``, ``0 < low <= high``, of the log-uniform intensity factor.
    tissue_intensity : float
        Standard deviation of the log of the per-tissue factors, in [0, 1] (needs ``labels``).
    tissue_blur_mm : float
        FWHM (mm) of the blur ``B`` that carries the per-tissue factors to the ``reference``, > 0.
    """

    flip: float = 0.5
    rotation_deg: float = 10.0
    zoom: float = 0.08
    elastic_mm: float = 2.0
    elastic_smoothness_mm: float = 16.0
    global_intensity: tuple = (0.8, 1.25)
    tissue_intensity: float = 0.1
    tissue_blur_mm: float = 6.0

    def __post_init__(self):
        put = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731
        put("flip", as_bounded_float("Augmentation.flip", self.flip, minimum=0.0, maximum=1.0))
        put("rotation_deg", as_bounded_float("Augmentation.rotation_deg", self.rotation_deg, minimum=0.0,
                                             maximum=180.0))
        put("zoom", as_bounded_float("Augmentation.zoom", self.zoom, minimum=0.0, maximum=0.5))
        put("elastic_mm", as_nonnegative_float("Augmentation.elastic_mm", self.elastic_mm))
        put("elastic_smoothness_mm", as_positive_float("Augmentation.elastic_smoothness_mm",
                                                       self.elastic_smoothness_mm))
        if isinstance(self.global_intensity, (str, bytes)) or isinstance(self.global_intensity, numbers.Number):
            raise TypeError(f"Augmentation.global_intensity must be a pair (low, high), got {self.global_intensity!r}")
        low, high = as_float_vector("Augmentation.global_intensity", self.global_intensity, 2, positive=True,
                                    broadcast_scalar=False)
        if low > high:
            raise ValueError(f"Augmentation.global_intensity must be (low, high) with low <= high, "
                             f"got {self.global_intensity!r}")
        put("global_intensity", (float(low), float(high)))
        put("tissue_intensity", as_bounded_float("Augmentation.tissue_intensity", self.tissue_intensity,
                                                 minimum=0.0, maximum=1.0))
        put("tissue_blur_mm", as_positive_float("Augmentation.tissue_blur_mm", self.tissue_blur_mm))

    @classmethod
    def none(cls) -> Augmentation:
        """No augmentation: every output equals its input."""
        return cls(flip=0.0, rotation_deg=0.0, zoom=0.0, elastic_mm=0.0, global_intensity=(1.0, 1.0),
                   tissue_intensity=0.0)

    @classmethod
    def default(cls) -> Augmentation:
        """Mirror (p = 0.5), ±10°, ±8 % zoom, 2 mm elastic at 16 mm, ×0.8–1.25, 10 % per tissue."""
        return cls()


# ----------------------------------------------------------------------------------------------
# Validation and array conversion
# ----------------------------------------------------------------------------------------------
def _check_rng(rng) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, numbers.Integral) and not isinstance(rng, bool):
        return np.random.default_rng(int(rng))
    raise TypeError(f"rng must be a numpy.random.Generator or an integer seed, got {type(rng).__name__}")


def _check_aug(aug) -> Augmentation:
    if not isinstance(aug, Augmentation):
        raise TypeError(f"aug must be an Augmentation, got {type(aug).__name__}")
    return aug


def _voxel_size(value) -> np.ndarray:
    if value is None:
        raise TypeError("voxel_size_mm is required for image augmentation (a number or a pair, mm)")
    return as_float_vector("voxel_size_mm", value, 2, positive=True)


def _check_arrays(arrays, what: str, integer_ok=(), shape=None) -> tuple[int, ...]:
    """All values must be 2D real numpy arrays / torch tensors of one shape (floats, finite)."""
    if not isinstance(arrays, Mapping):
        raise TypeError(f"{what} must be a dict of arrays, got {type(arrays).__name__}")
    first = None
    for name, value in arrays.items():
        label = f"{what}[{name!r}]"
        if not isinstance(value, (np.ndarray, torch.Tensor)):
            raise TypeError(f"{label} must be a numpy array or a torch tensor, got {type(value).__name__}")
        if value.ndim != 2:
            raise ValueError(f"{label} must be 2D, got shape {tuple(value.shape)}")
        floating = value.is_floating_point() if isinstance(value, torch.Tensor) else \
            np.issubdtype(value.dtype, np.floating)
        integer = (not value.is_floating_point() and not value.is_complex() and value.dtype != torch.bool) \
            if isinstance(value, torch.Tensor) else np.issubdtype(value.dtype, np.integer)
        if not (floating or (integer and name in integer_ok)):
            raise TypeError(f"{label} must hold floating-point values, got dtype {value.dtype}")
        if floating and not bool(torch.isfinite(value).all() if isinstance(value, torch.Tensor)
                                  else np.isfinite(value).all()):
            raise ValueError(f"{label} contains non-finite values (NaN or inf)")
        if shape is not None and tuple(value.shape) != tuple(shape):
            raise ValueError(f"{label} must have shape {tuple(shape)}, got {tuple(value.shape)}")
        if first is None:
            first, shape = name, tuple(value.shape)
        elif tuple(value.shape) != shape:
            raise ValueError(f"{label} has shape {tuple(value.shape)} but {what}[{first!r}] has {shape}: "
                             f"the arrays of a pair must share one shape")
    return shape


def _check_labels(labels) -> None:
    arr = _numpy(labels)
    codes = np.rint(arr)
    if not np.array_equal(codes, arr) or (arr.size and (arr.min() < 0 or arr.max() > MAX_TISSUE_CODE)):
        raise ValueError(f"images['labels'] must hold integer tissue codes in [0, {MAX_TISSUE_CODE}] "
                         f"(stored as floats is fine), got values in [{arr.min()}, {arr.max()}]")


def _numpy(value) -> np.ndarray:
    return value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)


def _like(arr: np.ndarray, original):
    """``arr`` with the type, dtype and device of ``original``."""
    if isinstance(original, torch.Tensor):
        return torch.from_numpy(np.ascontiguousarray(arr)).to(device=original.device, dtype=original.dtype)
    return np.ascontiguousarray(arr).astype(original.dtype, copy=False)


# ----------------------------------------------------------------------------------------------
# Images
# ----------------------------------------------------------------------------------------------
def _sample_points(shape, vs, flip, rotation_deg, zoom, displacement_mm) -> np.ndarray:
    """Index coordinates ``(2, nx, ny)`` at which the input is sampled for every output voxel."""
    centre = (np.asarray(shape, dtype=np.float64) - 1.0) / 2.0
    i, j = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    x, y = (i - centre[0]) * vs[0], (j - centre[1]) * vs[1]
    a = math.radians(rotation_deg)
    c, s = math.cos(a), math.sin(a)
    # the object moves by g = R(a) . S(zoom) . F, so output point p samples the input at g^-1 p (+ d)
    qx, qy = (c * x + s * y) / zoom, (-s * x + c * y) / zoom
    if flip:
        qx = -qx
    if displacement_mm is not None:
        qx, qy = qx + displacement_mm[0], qy + displacement_mm[1]
    q = np.stack([qx / vs[0] + centre[0], qy / vs[1] + centre[1]])
    snapped = np.rint(q)
    return np.where(np.abs(q - snapped) < 1e-9, snapped, q)  # whole-voxel moves stay exact


def warp_images(images: Mapping, voxel_size_mm, *, flip: bool = False, rotation_deg: float = 0.0,
                zoom: float = 1.0, displacement_mm=None, label_keys=LABEL_KEYS) -> dict:
    """Apply one geometric transform to every image of ``images`` (deterministic).

    Parameters
    ----------
    images : dict of str -> ndarray or Tensor, each ``(nx, ny)``
        Arrays on one grid centred on the rotation centre; ``x`` along axis 0.
    voxel_size_mm : float or (float, float)
    flip : bool
        Mirror ``x -> -x`` first, then
    zoom : float
        magnify by ``zoom`` about the centre, then
    rotation_deg : float
        rotate counter-clockwise (from ``+x`` towards ``+y``) by this many degrees, then
    displacement_mm : ndarray ``(2, nx, ny)``, optional
        sample at the transformed point plus this displacement (mm) of every output voxel.
    label_keys : sequence of str
        Keys interpolated by nearest neighbour (integer dtypes allowed); the others linearly.

    Returns a new dict with the same keys, types, dtypes, devices and shapes.
    """
    shape = _check_arrays(images, "images", integer_ok=label_keys)
    vs = _voxel_size(voxel_size_mm)
    zoom = as_positive_float("zoom", zoom)
    rotation_deg = as_bounded_float("rotation_deg", rotation_deg, minimum=-360.0, maximum=360.0)
    if displacement_mm is not None:
        displacement_mm = np.asarray(displacement_mm, dtype=np.float64)
        if displacement_mm.shape != (2,) + tuple(shape or ()):
            raise ValueError(f"displacement_mm must have shape {(2,) + tuple(shape or ())}, "
                             f"got {displacement_mm.shape}")
    if not images:
        return {}
    points = _sample_points(shape, vs, bool(flip), rotation_deg, zoom, displacement_mm)
    out = {}
    for name, value in images.items():
        arr = _numpy(value)
        if arr.dtype not in (np.float32, np.float64) and name not in label_keys:
            arr = arr.astype(np.float64)
        out[name] = _like(ndimage.map_coordinates(arr, points, order=0 if name in label_keys else 1,
                                                  mode="nearest"), value)
    return out


def _elastic_field(noise: np.ndarray, vs: np.ndarray, amplitude_mm: float, smoothness_mm: float) -> np.ndarray | None:
    """Smooth the white noise ``(2, nx, ny)`` and scale it to a largest displacement of ``amplitude_mm``."""
    if amplitude_mm == 0.0:
        return None
    field = np.stack([ndimage.gaussian_filter(n, smoothness_mm / vs, mode="reflect") for n in noise])
    largest = float(np.sqrt((field ** 2).sum(axis=0)).max())
    return field * (amplitude_mm / largest) if largest > 0 else None


def _tissue_scaling(arrays: dict, labels: np.ndarray, factors: np.ndarray, activity_keys, vs, blur_mm) -> None:
    """Scale ``truth`` by the per-tissue map, the other activity images by the blurred ratio (in place)."""
    codes = np.rint(labels).astype(np.int64)
    table = np.concatenate([[1.0], factors])
    truth = arrays["truth"].astype(np.float64)
    scaled = truth * table[codes]
    sigma = blur_mm / _FWHM_PER_SIGMA / vs
    for name in activity_keys:
        if name == "truth" or name not in arrays:
            continue
        blurred = np.maximum(ndimage.gaussian_filter(truth, sigma, mode="nearest"), 0.0)
        blurred_scaled = np.maximum(ndimage.gaussian_filter(scaled, sigma, mode="nearest"), 0.0)
        eps = max(1e-3 * float(blurred.max()), 1e-30)
        arrays[name] = (arrays[name] * ((blurred_scaled + eps) / (blurred + eps))).astype(arrays[name].dtype)
    arrays["truth"] = scaled.astype(arrays["truth"].dtype)


def augment_images(images: Mapping, aug: Augmentation, rng, voxel_size_mm, *, activity_keys=ACTIVITY_KEYS,
                   label_keys=LABEL_KEYS) -> dict:
    """One random draw of ``aug`` applied identically to every image of ``images``.

    Parameters
    ----------
    images : dict of str -> ndarray or Tensor, each ``(nx, ny)``
        E.g. ``truth``, ``reference``, ``mr``, ``mu`` (1/mm), ``labels``, ``lesions``.
    aug : Augmentation
    rng : numpy.random.Generator or int
        Draws, in order: flip, rotation, zoom, elastic noise ``(2, nx, ny)``, global factor, the
        ``MAX_TISSUE_CODE`` per-tissue factors (always all of them: a seed gives the same draw
        whatever the ranges and keys).
    voxel_size_mm : float or (float, float)
    activity_keys : sequence of str
        Images that take the intensity factors (the same factor for all of them).
    label_keys : sequence of str
        Images interpolated by nearest neighbour.

    Returns a new dict (same keys, types, dtypes, devices, shapes). Per-tissue scaling needs both
    ``labels`` and ``truth`` and is skipped silently otherwise (see the module notes).
    """
    aug = _check_aug(aug)
    rng = _check_rng(rng)
    shape = _check_arrays(images, "images", integer_ok=label_keys)
    vs = _voxel_size(voxel_size_mm)
    tissue = aug.tissue_intensity > 0 and "labels" in images and "truth" in images
    if tissue:
        _check_labels(images["labels"])
    if not images:
        return {}
    flip = bool(rng.random() < aug.flip)
    rotation = float(rng.uniform(-aug.rotation_deg, aug.rotation_deg))
    zoom = float(rng.uniform(1.0 - aug.zoom, 1.0 + aug.zoom))
    noise = rng.standard_normal((2,) + shape)
    factor = float(np.exp(rng.uniform(*np.log(aug.global_intensity))))
    tissue_factors = np.exp(aug.tissue_intensity * rng.standard_normal(MAX_TISSUE_CODE))

    arrays = {name: _numpy(value) for name, value in images.items()}
    if tissue:
        _tissue_scaling(arrays, _numpy(images["labels"]), tissue_factors, activity_keys, vs, aug.tissue_blur_mm)
    if factor != 1.0:
        for name in activity_keys:
            if name in arrays:
                arrays[name] = (arrays[name] * factor).astype(arrays[name].dtype)
    displacement = _elastic_field(noise, vs, aug.elastic_mm, aug.elastic_smoothness_mm)
    warped = warp_images(arrays, vs, flip=flip, rotation_deg=rotation, zoom=zoom, displacement_mm=displacement,
                         label_keys=label_keys)
    return {name: _like(warped[name], value) for name, value in images.items()}


# ----------------------------------------------------------------------------------------------
# Sinograms
# ----------------------------------------------------------------------------------------------
def _check_geometry(geometry):
    if not isinstance(geometry, (ParallelBeam2D, SinogramLayout2D)):
        raise TypeError(f"geometry must be a ParallelBeam2D or a SinogramLayout2D, got {type(geometry).__name__}")
    return geometry


def exact_view_step(geometry) -> int:
    """Smallest view shift that is an exact rotation of ``geometry``: 1 for parallel beams, the
    crystals per side (one polygon side, ``360° / n_sides``) for a ring."""
    geometry = _check_geometry(geometry)
    return 1 if isinstance(geometry, ParallelBeam2D) else geometry.scanner.n_crystals_per_side


@lru_cache(maxsize=8)
def _lor_tree(key: str):
    start, end = from_dict(json.loads(key)).lor_endpoints()
    points = np.concatenate([start.reshape(-1, 2), end.reshape(-1, 2)], axis=1)
    return points, cKDTree(points)


@lru_cache(maxsize=128)
def _symmetry(key: str, flip: bool, view_shift: int) -> np.ndarray:
    points, tree = _lor_tree(key)
    n_views = from_dict(json.loads(key)).n_views
    a = math.pi * view_shift / n_views
    c, s = math.cos(a), math.sin(a)

    def inverse(xy):  # g^-1 = F . R(-a) for the object motion g = R(a) . F
        x, y = c * xy[:, 0] + s * xy[:, 1], -s * xy[:, 0] + c * xy[:, 1]
        return np.stack([-x if flip else x, y], axis=1)

    moved = np.concatenate([inverse(points[:, :2]), inverse(points[:, 2:])], axis=1)
    tol = 1e-6 * max(1.0, float(np.abs(points).max()))
    dist, index = tree.query(moved, distance_upper_bound=tol)
    dist_swapped, index_swapped = tree.query(moved[:, [2, 3, 0, 1]], distance_upper_bound=tol)
    index = np.where(dist <= tol, index, index_swapped)
    missing = int(np.sum((dist > tol) & (dist_swapped > tol)))
    if missing or np.unique(index).size != index.size:
        raise ValueError(f"mirror={flip} with a rotation by {view_shift} views is not an exact symmetry of "
                         f"{from_dict(json.loads(key))!r} ({missing} LORs have no counterpart)")
    index = index.astype(np.int64)
    index.setflags(write=False)
    return index


def sinogram_symmetry(geometry, flip: bool = False, view_shift: int = 0) -> np.ndarray:
    """Flat bin permutation of an exact sinogram symmetry (read-only int64, ``n_views * n_radial``).

    The object moved by ``g = R(view_shift * pi / n_views) . F`` (``F`` the mirror ``x -> -x`` when
    ``flip``; rotation counter-clockwise) has the sinogram ``p.reshape(-1)[index].reshape(shape)``
    where ``p`` is the sinogram of the original object: bin ``b`` takes the bin whose LOR is
    ``g^-1`` of LOR ``b``. Raises ``ValueError`` when the transform is not an exact symmetry
    (``view_shift`` not a multiple of :func:`exact_view_step`, or a mirror of a ring with an odd
    number of sides). Cached per geometry and transform.
    """
    geometry = _check_geometry(geometry)
    if isinstance(view_shift, bool) or not isinstance(view_shift, numbers.Integral):
        raise TypeError(f"view_shift must be an integer, got {view_shift!r}")
    view_shift = int(view_shift) % (2 * geometry.n_views)
    return _symmetry(json.dumps(geometry.to_dict(), sort_keys=True), bool(flip), view_shift)


def transform_sinograms(sinograms: Mapping, geometry, *, flip: bool = False, view_shift: int = 0) -> dict:
    """Apply the exact symmetry ``(flip, view_shift)`` (see :func:`sinogram_symmetry`) to every
    sinogram ``(n_views, n_radial)`` of ``sinograms``; returns a new dict (types, dtypes, devices kept)."""
    geometry = _check_geometry(geometry)
    _check_arrays(sinograms, "sinograms", shape=geometry.shape)
    index = sinogram_symmetry(geometry, flip, view_shift)
    out = {}
    for name, value in sinograms.items():
        if isinstance(value, torch.Tensor):
            flat = value.detach().reshape(-1)[torch.tensor(index, device=value.device)]
        else:
            flat = np.asarray(value).reshape(-1)[index]
        out[name] = flat.reshape(value.shape)
    return out


def _draw_exact(aug: Augmentation, rng: np.random.Generator, geometry) -> tuple[bool, int, float]:
    """Mirror, view shift (whole exact steps within ±rotation_deg) and global factor."""
    step = exact_view_step(geometry)
    largest = int(math.floor(aug.rotation_deg / (180.0 * step / geometry.n_views) + 1e-9))
    flip = bool(rng.random() < aug.flip)
    view_shift = step * int(rng.integers(-largest, largest + 1))
    factor = float(np.exp(rng.uniform(*np.log(aug.global_intensity))))
    return flip, view_shift, factor


def _scale(value, factor: float):
    return value * factor if isinstance(value, torch.Tensor) else (value * factor).astype(value.dtype)


def augment_sinograms(sinograms: Mapping, aug: Augmentation, rng, geometry, *, count_keys=COUNT_KEYS) -> dict:
    """One random exact symmetry and global factor applied to every sinogram of ``sinograms``.

    ``sinograms`` : dict of ``(n_views, n_radial)`` arrays of ``geometry`` (ParallelBeam2D or
    SinogramLayout2D). Draws, in order: mirror, view shift, global factor. ``count_keys`` take the
    factor (``mult`` does not). ``zoom``, ``elastic_*`` and ``tissue_*`` are not used: they have no
    exact sinogram counterpart.
    """
    aug, rng, geometry = _check_aug(aug), _check_rng(rng), _check_geometry(geometry)
    _check_arrays(sinograms, "sinograms", shape=geometry.shape)
    if aug.flip > 0:
        sinogram_symmetry(geometry, True, 0)  # refuse a mirror the geometry does not have, before drawing
    flip, view_shift, factor = _draw_exact(aug, rng, geometry)
    out = transform_sinograms(sinograms, geometry, flip=flip, view_shift=view_shift)
    return {name: _scale(v, factor) if name in count_keys and factor != 1.0 else v for name, v in out.items()}


# ----------------------------------------------------------------------------------------------
# Items
# ----------------------------------------------------------------------------------------------
def augment_item(item: Mapping, aug: Augmentation, rng, voxel_size_mm=None, geometry=None,
                 domain: str = "both") -> dict:
    """Augment a :class:`~pettk.sim.datasets.SliceDataset` item with one random draw.

    Parameters
    ----------
    item : dict
        Image fields (:data:`IMAGE_KEYS`, ``(nx, ny)``), sinogram fields (:data:`SINOGRAM_KEYS`,
        ``(n_views, n_radial)``) and scalars (``drf``, ``scale``, ``subject``, ``slice``, passed
        through). Other array fields are refused (``ValueError``).
    aug : Augmentation
    rng : numpy.random.Generator or int
    voxel_size_mm : float or (float, float)
        Image voxel size; needed unless ``domain="sinogram"``. The grid must be centred on the
        scanner axis for ``domain="both"``.
    geometry : ParallelBeam2D or SinogramLayout2D
        The sinograms' geometry (e.g. ``pettk.geometry.from_dict(manifest["geometry"])``); needed
        unless ``domain="image"``.
    domain : {"both", "image", "sinogram"}
        ``"both"``: images and sinograms take the same sinogram-exact transform (mirror, rotation
        by whole exact view steps, global factor; no zoom, elastic or per-tissue scaling).
        ``"image"``: the images take the full augmentation (:func:`augment_images`); the sinogram
        fields, which would no longer match, are left out of the result. ``"sinogram"``: the
        sinograms take :func:`augment_sinograms`; the image fields are left out.

    Returns a new dict; arrays keep type, dtype, device and shape.
    """
    domain = as_lowercase_choice("domain", domain, DOMAINS)
    aug, rng = _check_aug(aug), _check_rng(rng)
    if not isinstance(item, Mapping):
        raise TypeError(f"item must be a dict, got {type(item).__name__}")
    for name, value in item.items():
        if name not in IMAGE_KEYS + SINOGRAM_KEYS and isinstance(value, (np.ndarray, torch.Tensor)) \
                and value.ndim > 0:
            raise ValueError(f"item[{name!r}] is neither an image field {IMAGE_KEYS} nor a sinogram field "
                             f"{SINOGRAM_KEYS}; augmentation would leave it misaligned")
    images = {k: v for k, v in item.items() if k in IMAGE_KEYS}
    sinograms = {k: v for k, v in item.items() if k in SINOGRAM_KEYS}
    scalars = {k: v for k, v in item.items() if k not in IMAGE_KEYS + SINOGRAM_KEYS}
    vs = None
    if domain != "sinogram":
        vs = _voxel_size(voxel_size_mm) if images else None
        _check_arrays(images, "item", integer_ok=LABEL_KEYS)
    if domain != "image":
        if geometry is None:
            raise TypeError(f"geometry is required for domain={domain!r} (a ParallelBeam2D or SinogramLayout2D)")
        _check_arrays(sinograms, "item", shape=_check_geometry(geometry).shape)
    if domain == "image":
        out = augment_images(images, aug, rng, vs)
    elif domain == "sinogram":
        out = augment_sinograms(sinograms, aug, rng, geometry)
    else:
        out = _augment_both(images, sinograms, aug, rng, vs, geometry)
    return {k: out[k] if k in out else v for k, v in item.items() if k in out or k in scalars}


def _augment_both(images, sinograms, aug, rng, vs, geometry) -> dict:
    if aug.flip > 0:
        sinogram_symmetry(geometry, True, 0)
    flip, view_shift, factor = _draw_exact(aug, rng, geometry)
    out = transform_sinograms(sinograms, geometry, flip=flip, view_shift=view_shift)
    out = {k: _scale(v, factor) if k in COUNT_KEYS and factor != 1.0 else v for k, v in out.items()}
    if images:
        scaled = {k: _scale(v, factor) if k in ACTIVITY_KEYS and factor != 1.0 else v for k, v in images.items()}
        out.update(warp_images(scaled, vs, flip=flip, rotation_deg=180.0 * view_shift / geometry.n_views))
    return out

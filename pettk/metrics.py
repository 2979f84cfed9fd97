"""Image-quality metrics: PSNR, SSIM, NRMSE, contrast recovery, background variability, deviance.

Lesion contrast recovery against a known truth (simulations): :func:`lesion_rois` finds, per
lesion of a lesion-number map, the lesion's pixels and a background shell around it;
:func:`lesion_contrast_recovery` compares an image's lesion-to-background ratio with the truth's.

Inputs are numpy arrays or torch tensors (any device); results are Python floats. The papers
behind pettk's priors compute these differently (``METHODS.md`` §1.2), so the conventions are
parameters:

* ``data_range``: ``None`` means the *reference's* maximum (RED's and LegoPET's convention);
  DREAM normalises each image by its own maximum and uses ``data_range = 1``, available as
  ``normalise="max"``.
* NRMSE: ``norm="euclidean"`` is ``||x - ref|| / ||ref||``; ``norm="min-max"`` divides the RMSE
  by the reference's range (scikit-image's ``normalized_root_mse`` with min-max), ``"mean"`` by
  its mean.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np
from skimage.metrics import structural_similarity

from ._validation import as_bool_mask, as_nonnegative_float

__all__ = ["psnr", "ssim", "nrmse", "contrast_recovery", "lesion_contrast_recovery", "LesionROI", "lesion_rois",
           "background_variability", "poisson_deviance", "axial_gradient_error"]


def _np(name, x):
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    a = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} must be finite")
    return a


def _pair(x, ref, normalise=None):
    a, b = _np("x", x), _np("ref", ref)
    if a.shape != b.shape:
        raise ValueError(f"x and ref must have the same shape, got {a.shape} and {b.shape}")
    if a.size == 0:
        raise ValueError(f"x and ref are empty (shape {a.shape}): there is nothing to compare")
    if normalise not in (None, "max"):
        raise ValueError(f"normalise must be None or 'max', got {normalise!r}")
    if normalise == "max":
        for name, arr in (("x", a), ("ref", b)):
            if not arr.max() > 0:
                raise ValueError(f"normalise='max' needs a positive maximum in {name}")
        a, b = a / a.max(), b / b.max()
    return a, b


def _range(b, data_range, normalise):
    if data_range is None:
        data_range = 1.0 if normalise == "max" else float(b.max())
    if isinstance(data_range, bool) or not isinstance(data_range, numbers.Real):
        raise TypeError(f"data_range must be a number > 0 or None, got {data_range!r}")
    if not (data_range > 0 and math.isfinite(data_range)):
        raise ValueError(f"data_range must be a finite number > 0, got {data_range!r}")
    return float(data_range)


def psnr(x, ref, data_range: float | None = None, normalise: str | None = None) -> float:
    """Peak signal-to-noise ratio (dB): ``10 log10(data_range^2 / MSE)``.

    ``data_range`` defaults to ``max(ref)`` (1 with ``normalise="max"``).
    """
    a, b = _pair(x, ref, normalise)
    rng = _range(b, data_range, normalise)
    mse = float(np.mean((a - b) ** 2))
    # in logs: rng ** 2 overflows a float for rng > 1e154
    return math.inf if mse == 0 else 20.0 * math.log10(rng) - 10.0 * math.log10(mse)


def ssim(x, ref, data_range: float | None = None, normalise: str | None = None, **kwargs) -> float:
    """Structural similarity (scikit-image, Gaussian-free 7×7 windows by default).

    ``data_range`` defaults to ``max(ref)`` (1 with ``normalise="max"``); extra keyword arguments
    go to :func:`skimage.metrics.structural_similarity`.
    """
    a, b = _pair(x, ref, normalise)
    if a.ndim == 0:
        raise ValueError("ssim compares images: x and ref must have at least one axis, got scalars")
    rng = _range(b, data_range, normalise)
    if rng > 1e150:  # SSIM's constants (K * data_range)**2 would overflow
        raise ValueError(f"data_range must be <= 1e150 for SSIM, got {rng:g}")
    return float(structural_similarity(a, b, data_range=rng, **kwargs))


def nrmse(x, ref, norm: str = "euclidean") -> float:
    """Normalised root-mean-square error (see the module docstring for ``norm``)."""
    a, b = _pair(x, ref)
    if norm == "euclidean":
        denom = float(np.linalg.norm(b))
        value = float(np.linalg.norm(a - b))
    elif norm in ("min-max", "mean"):
        denom = float(b.max() - b.min()) if norm == "min-max" else float(b.mean())
        value = float(np.sqrt(np.mean((a - b) ** 2)))
    else:
        raise ValueError(f"norm must be 'euclidean', 'min-max' or 'mean', got {norm!r}")
    if denom == 0:
        raise ValueError(f"the reference's {norm} normaliser is 0; NRMSE is undefined")
    return value / denom


def axial_gradient_error(x, ref, mask=None) -> float:
    """Inter-slice consistency of a volume: ``||D_z x - D_z ref|| / ||D_z ref||``.

    ``D_z`` is the difference between neighbouring slices along the last (axial) axis, kept where
    both voxels are in ``mask`` (default everywhere). Slice-by-slice methods that treat each slice
    independently add axial noise or steps that the truth does not have, which this error exposes
    even when every slice on its own scores well (Webber et al. 2025 use the same idea to show the
    slice artefacts of 2D priors in 3D). 0 for an image with the truth's axial structure.
    """
    a, b = _pair(x, ref)
    if a.ndim < 3:
        raise ValueError(f"axial_gradient_error needs 3D volumes (..., nz), got shape {a.shape}")
    da, db = np.diff(a, axis=-1), np.diff(b, axis=-1)
    if mask is not None:
        m = as_bool_mask("mask", mask, a.shape)
        both = m[..., 1:] & m[..., :-1]
        da, db = da[both], db[both]
    denom = float(np.linalg.norm(db))
    if denom == 0:
        raise ValueError("the reference has no axial variation inside the mask (its axial gradient is 0)")
    return float(np.linalg.norm(da - db)) / denom


def contrast_recovery(x, hot_mask, background_mask, true_contrast: float) -> float:
    """Contrast recovery coefficient ``(mean_hot / mean_bg - 1) / (true_contrast - 1)``.

    For cold regions (``true_contrast`` = 0) this is ``1 - mean_cold / mean_bg`` (NEMA NU 2).
    """
    true_contrast = as_nonnegative_float("true_contrast", true_contrast)
    a = _np("x", x)
    hot = as_bool_mask("hot_mask", hot_mask, a.shape)
    bg = as_bool_mask("background_mask", background_mask, a.shape)
    for name, m in (("hot_mask", hot), ("background_mask", bg)):
        if not m.any():
            raise ValueError(f"{name} is empty")
    mean_bg = float(a[bg].mean())
    if mean_bg == 0:
        raise ValueError("the background mean is 0; contrast is undefined")
    ratio = float(a[hot].mean()) / mean_bg
    if true_contrast == 0:
        return 1.0 - ratio
    if true_contrast == 1:
        raise ValueError("true_contrast must differ from 1")
    return (ratio - 1.0) / (true_contrast - 1.0)


def lesion_contrast_recovery(image, truth, lesion_mask, background_mask) -> float:
    """Contrast recovery of one lesion against the true activity:

    ``CR = (mean_img(L) / mean_img(B) - 1) / (mean_true(L) / mean_true(B) - 1)``

    with ``L`` the lesion's pixels and ``B`` its background (e.g. from :func:`lesion_rois`). 1 means
    the image has the lesion's true contrast, 0 no contrast at all; it works alike for hot
    (``mean_true(L) > mean_true(B)``) and cold lesions (a cold lesion filled in halfway scores
    0.5), and values above 1 mean overshoot. Unlike :func:`contrast_recovery`, the true contrast is
    measured on ``truth`` with the same masks, so the truth's own partial volume is in the reference.

    Raises ``ValueError`` when a mask is empty, the masks overlap, a background mean (image or
    truth) is not positive, or the true contrast is zero (``mean_true(L) == mean_true(B)``).
    """
    a, t = _np("image", image), _np("truth", truth)
    if a.shape != t.shape:
        raise ValueError(f"image and truth must have the same shape, got {a.shape} and {t.shape}")
    les = as_bool_mask("lesion_mask", lesion_mask, a.shape)
    bg = as_bool_mask("background_mask", background_mask, a.shape)
    for name, m in (("lesion_mask", les), ("background_mask", bg)):
        if not m.any():
            raise ValueError(f"{name} is empty")
    if (les & bg).any():
        raise ValueError("lesion_mask and background_mask must not overlap")
    true_bg = float(t[bg].mean())
    if not true_bg > 0:
        raise ValueError(f"the true background mean must be > 0, got {true_bg!r}")
    true_contrast = float(t[les].mean()) / true_bg - 1.0
    if abs(true_contrast) <= 1e-9:
        raise ValueError("the true contrast is 0 (the lesion's true mean equals its background's); "
                         "contrast recovery is undefined")
    image_bg = float(a[bg].mean())
    if not image_bg > 0:
        raise ValueError(f"the image's background mean must be > 0, got {image_bg!r}")
    return (float(a[les].mean()) / image_bg - 1.0) / true_contrast


@dataclass(frozen=True, eq=False)
class LesionROI:
    """The regions of one lesion in one image (see :func:`lesion_rois`).

    Attributes
    ----------
    lesion : int
        The lesion's number in the lesion map.
    mask, background : bool arrays
        The lesion's pixels and its background shell.
    true_contrast : float
        ``mean_true(mask) / mean_true(background)`` (> 1 hot, < 1 cold; NaN when not measurable).
    skipped : str
        Why the lesion is not measured ("" when it is).
    """

    lesion: int
    mask: np.ndarray
    background: np.ndarray
    true_contrast: float
    skipped: str = ""

    @property
    def kind(self) -> str:
        """``"hot"`` (true contrast > 1), ``"cold"`` (< 1) or ``""`` (not measured)."""
        if not math.isfinite(self.true_contrast) or self.true_contrast == 1.0:
            return ""
        return "hot" if self.true_contrast > 1.0 else "cold"

    @property
    def pixels(self) -> int:
        return int(self.mask.sum())

    @property
    def background_pixels(self) -> int:
        return int(self.background.sum())

    def recovery(self, image, truth) -> float:
        """:func:`lesion_contrast_recovery` of ``image`` on this lesion (NaN when skipped)."""
        if self.skipped:
            return math.nan
        return lesion_contrast_recovery(image, truth, self.mask, self.background)


def lesion_rois(lesions, truth, labels=None, *, parenchyma=None, inner_px: float = 1.5, outer_px: float = 3.5,
                min_pixels: int = 2, min_background: int = 4, min_contrast: float = 0.1,
                truth_fraction: float = 0.1) -> list[LesionROI]:
    """Lesion and background regions of every lesion in a lesion-number map (2D or 3D).

    Definition (pixel units, so that it scales with the image's resolution):

    * **lesion** ``k``: the pixels numbered ``k`` in ``lesions`` (pixel centre inside the lesion);
    * **background**: the shell of pixels whose Euclidean distance ``d`` to the nearest pixel of
      lesion ``k`` is ``inner_px < d <= outer_px`` (defaults 1.5 and 3.5: a ring about two pixels
      thick that leaves out the eight neighbours of the lesion, whose true activity is partly the
      lesion's by partial volume), minus the pixels of every lesion and their neighbours within
      ``inner_px``, restricted to the tissue a lesion sits in: brain parenchyma
      (``labels`` in ``parenchyma``; default the v2 codes
      :data:`pettk.sim.anatomy.PARENCHYMA`) when ``labels`` is given, else pixels whose true
      activity is at least ``truth_fraction`` times the maximum outside the lesions.

    A lesion is reported but not measured (``skipped`` says why) when it has fewer than
    ``min_pixels`` pixels in the image (a lesion cut near its edge by a slice), a background of
    fewer than ``min_background`` pixels, no true activity around it, or a true contrast within
    ``min_contrast`` of 1 (``|mean_true(L) / mean_true(B) - 1| < min_contrast``: the denominator of
    :func:`lesion_contrast_recovery` would be too small to trust).

    Parameters
    ----------
    lesions : array
        Lesion number per pixel (1, 2, ...; 0 outside), e.g. the ``lesions`` of a data set slice.
    truth : array
        The true activity (classifies hot and cold lesions by their true contrast).
    labels : array, optional
        Tissue label per pixel.

    Returns
    -------
    list of LesionROI
        One per lesion number present, in increasing order.
    """
    from scipy.ndimage import distance_transform_edt

    t = _np("truth", truth)
    ids = _np("lesions", lesions)
    if ids.shape != t.shape:
        raise ValueError(f"lesions and truth must have the same shape, got {ids.shape} and {t.shape}")
    if np.any(ids < 0) or np.any(ids != np.round(ids)):
        raise ValueError("lesions must hold non-negative integer lesion numbers")
    if not 0 <= inner_px < outer_px:
        raise ValueError(f"need 0 <= inner_px < outer_px, got {inner_px!r} and {outer_px!r}")
    ids = ids.astype(np.int64)
    any_lesion = ids > 0
    if labels is not None:
        lab = _np("labels", labels)
        if lab.shape != t.shape:
            raise ValueError(f"labels and truth must have the same shape, got {lab.shape} and {t.shape}")
        if parenchyma is None:
            from .sim.anatomy import PARENCHYMA as parenchyma
        tissue = np.isin(np.round(lab).astype(np.int64), np.asarray(tuple(parenchyma), dtype=np.int64))
    else:
        outside = t[~any_lesion]
        tissue = t >= truth_fraction * (float(outside.max()) if outside.size else 0.0)
        tissue &= t > 0
    near_any = distance_transform_edt(~any_lesion) <= inner_px if any_lesion.any() else np.zeros_like(any_lesion)
    out = []
    for k in np.unique(ids[any_lesion]):
        mask = ids == k
        d = distance_transform_edt(~mask)
        background = (d > inner_px) & (d <= outer_px) & ~near_any & tissue
        skipped, contrast = "", math.nan
        if mask.sum() < min_pixels:
            skipped = f"fewer than {min_pixels} pixels"
        elif background.sum() < min_background:
            skipped = f"fewer than {min_background} background pixels"
        else:
            true_bg = float(t[background].mean())
            if not true_bg > 0:
                skipped = "no true activity in the background"
            else:
                contrast = float(t[mask].mean()) / true_bg
                if abs(contrast - 1.0) < min_contrast:
                    skipped = f"true contrast within {min_contrast:g} of 1"
        out.append(LesionROI(int(k), mask, background, contrast, skipped))
    return out


def background_variability(x, background_rois) -> float:
    """Background variability: standard deviation of the ROI means over their mean (NEMA NU 2).

    ``background_rois`` is a sequence of boolean masks (at least two).
    """
    a = _np("x", x)
    rois = [as_bool_mask(f"background_rois[{i}]", m, a.shape) for i, m in enumerate(background_rois)]
    if len(rois) < 2:
        raise ValueError(f"background_rois needs at least 2 masks, got {len(rois)}")
    means = []
    for i, m in enumerate(rois):
        if not m.any():
            raise ValueError(f"background_rois[{i}] must be a non-empty mask of shape {a.shape}")
        means.append(float(a[m].mean()))
    means = np.asarray(means)
    if means.mean() == 0:
        raise ValueError("the mean over the background ROIs is 0")
    return float(means.std(ddof=1) / means.mean())


def poisson_deviance(y, ybar) -> float:
    """Poisson deviance in the sinogram domain (see :func:`pettk.likelihood.poisson_deviance`)."""
    from .likelihood import poisson_deviance as deviance

    return float(deviance(_np("y", y), _np("ybar", ybar)))

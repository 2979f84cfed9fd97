"""Image-quality metrics: PSNR, SSIM, NRMSE, contrast recovery, background variability, deviance.

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

import numpy as np
from skimage.metrics import structural_similarity

from ._validation import as_bool_mask, as_nonnegative_float

__all__ = ["psnr", "ssim", "nrmse", "contrast_recovery", "background_variability", "poisson_deviance"]


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
    if not data_range > 0:
        raise ValueError(f"data_range must be > 0, got {data_range!r}")
    return float(data_range)


def psnr(x, ref, data_range: float | None = None, normalise: str | None = None) -> float:
    """Peak signal-to-noise ratio (dB): ``10 log10(data_range^2 / MSE)``.

    ``data_range`` defaults to ``max(ref)`` (1 with ``normalise="max"``).
    """
    a, b = _pair(x, ref, normalise)
    rng = _range(b, data_range, normalise)
    mse = float(np.mean((a - b) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(rng ** 2 / mse)


def ssim(x, ref, data_range: float | None = None, normalise: str | None = None, **kwargs) -> float:
    """Structural similarity (scikit-image, Gaussian-free 7×7 windows by default).

    ``data_range`` defaults to ``max(ref)`` (1 with ``normalise="max"``); extra keyword arguments
    go to :func:`skimage.metrics.structural_similarity`.
    """
    a, b = _pair(x, ref, normalise)
    rng = _range(b, data_range, normalise)
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

"""The common interface of sinogram-domain restorers ("restorer then EM", DESIGN.md).

A :class:`SinogramRestorer` maps a low-dose sinogram of raw counts to an estimate of the
full-dose sinogram (``restore(y_low, drf) -> y_hat``); :func:`reconstruct` then turns any
sinogram into an image with the slice's physics model (MLEM/OSEM by default, FBP for
parallel-beam data), and :func:`dataset_forward_model` rebuilds that physics model for a slice
of a data set made by :func:`pettk.sim.datasets.build_dataset`. RED (:mod:`.red`) and DREAM implement
the interface.

An :class:`ImagePrior` reconstructs an image directly from a measured sinogram and the physics
model, with the learned prior inside the loop (DDIP, LegoPET):
``prior.reconstruct(forward_model, y, mr=None, init=None) -> x``.
"""

from __future__ import annotations

import abc
import json
import math
from pathlib import Path

import numpy as np
import torch

from ..geometry import ImageGrid, ParallelBeam2D, from_dict
from ..physics import ForwardModel
from ..projector import Projector
from ..recon import fbp, mlem, osem

__all__ = ["SinogramRestorer", "ImagePrior", "reconstruct", "dataset_forward_model", "precorrect_sinogram",
           "check_low_dose_counts", "RECON_METHODS"]

RECON_METHODS = ("osem", "mlem", "fbp")


class SinogramRestorer(abc.ABC):
    """A low-dose → full-dose sinogram restorer.

    Subclasses implement :meth:`restore`. ``drf`` is the dose-reduction factor of ``y_low``
    (raw low-dose counts, ``(..., n_views, n_radial)``); the result estimates the full-dose
    expected counts on the same scale as the full-dose prompts, same shape, device and array type.
    """

    #: Dose-reduction factor the restorer was trained for (``None``: any).
    drf: float | None = None

    @abc.abstractmethod
    def restore(self, y_low, drf: float):
        """Return ``y_hat`` (full-dose counts scale, >= 0) from low-dose counts ``y_low``."""

    def __call__(self, y_low, drf: float):
        return self.restore(y_low, drf)


class ImagePrior(abc.ABC):
    """A learned image prior that reconstructs from measured data (DDIP, LegoPET).

    Subclasses implement :meth:`reconstruct`. ``forward_model`` is the
    :class:`~pettk.physics.ForwardModel` of the measurement (for priors that only condition on
    the sinogram it supplies the geometry and, optionally, data-consistency steps); ``y`` holds
    the measured counts (``forward_model.shape_out``, numpy or torch). ``mr`` is an optional
    anatomical image on the reconstruction grid, ``init`` an optional starting image (activity
    per voxel). The result is an activity image of ``forward_model.shape_in`` in ``y``'s array
    type.
    """

    @abc.abstractmethod
    def reconstruct(self, forward_model: ForwardModel, y, *, mr=None, init=None):
        """Return the reconstructed activity image."""

    def __call__(self, forward_model: ForwardModel, y, **kwargs):
        return self.reconstruct(forward_model, y, **kwargs)


def check_low_dose_counts(y_low, drf, model_drf: float, sinogram_shape: tuple, model_name: str) -> torch.Tensor:
    """Validate a restorer's input before any work: ``y_low`` as a tensor (numpy shared, not copied).

    ``y_low`` must be a numpy array or tensor of real, finite, non-negative counts shaped
    ``(..., n_views, n_radial) == (..., *sinogram_shape)``; ``drf`` a number equal to the model's
    (one model per DRF). Raises ``TypeError`` / ``ValueError`` naming ``model_name``.
    """
    if not isinstance(y_low, (np.ndarray, torch.Tensor)):
        raise TypeError(f"y_low must be a numpy array or a torch tensor, got {type(y_low).__name__}")
    if isinstance(drf, bool) or not isinstance(drf, (int, float, np.integer, np.floating)):
        raise TypeError(f"drf must be a number, got {type(drf).__name__}")
    if not math.isclose(float(drf), model_drf, rel_tol=1e-6):
        raise ValueError(f"drf={drf!r} does not match this {model_name} model's DRF {model_drf:g} (one model per DRF)")
    y = torch.from_numpy(np.ascontiguousarray(y_low)) if isinstance(y_low, np.ndarray) else y_low
    if y.dtype == torch.bool or y.is_complex():
        raise TypeError(f"y_low must hold real counts, got dtype {y.dtype}")
    if y.ndim < 2 or tuple(y.shape[-2:]) != tuple(sinogram_shape):
        raise ValueError(f"y_low must have shape (..., {sinogram_shape[0]}, {sinogram_shape[1]}) "
                         f"(n_views, n_radial), got {tuple(y.shape)}")
    if y.is_floating_point() and not bool(torch.isfinite(y).all()):
        raise ValueError("y_low contains non-finite values (NaN or inf)")
    if bool((y < 0).any()):
        raise ValueError(f"y_low must be non-negative counts, got a minimum of {float(y.min()):g}")
    return y


def check_prior_inputs(forward_model, y, images: dict, downsample_factor: int = 1):
    """Shared input checks of the image priors' ``reconstruct`` (before any work).

    ``forward_model`` a :class:`ForwardModel` with a 2D or 3D image whose in-plane size is
    divisible by ``downsample_factor``; ``y`` real, finite, non-negative counts of
    ``forward_model.shape_out``; ``images`` ``{name: array or None}`` real, finite, non-negative
    images of ``forward_model.shape_in``. Returns ``(y, {name: tensor or None})`` as float32
    tensors on ``y``'s device.
    """
    if not isinstance(forward_model, ForwardModel):
        raise TypeError(f"forward_model must be a pettk ForwardModel, got {type(forward_model).__name__}")
    shape_in = tuple(forward_model.shape_in)
    if len(shape_in) not in (2, 3):
        raise ValueError(f"forward_model.shape_in must be 2D (nx, ny) or 3D (nx, ny, nz), got {shape_in}")
    f = int(downsample_factor)
    if shape_in[0] % f or shape_in[1] % f:
        raise ValueError(f"the image size {shape_in[:2]} must be divisible by {f} (the network's down-sampling factor)")
    y_t = _real_tensor("y", y, tuple(forward_model.shape_out), "forward_model.shape_out", "counts")
    if not bool(torch.isfinite(y_t).all()):
        raise ValueError("y contains non-finite values (NaN or inf)")
    if bool((y_t < 0).any()):
        raise ValueError(f"y holds counts and must be >= 0; its minimum is {float(y_t.min()):g}")
    out = {}
    for name, value in images.items():
        if value is None:
            out[name] = None
            continue
        t = _real_tensor(name, value, shape_in, "forward_model.shape_in", "values").to(y_t.device)
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"{name} contains non-finite values (NaN or inf)")
        if bool((t < 0).any()):
            raise ValueError(f"{name} must be >= 0; its minimum is {float(t.min()):g}")
        out[name] = t
    return y_t, out


def _real_tensor(name: str, value, shape: tuple, shape_name: str, what: str) -> torch.Tensor:
    if not isinstance(value, (np.ndarray, torch.Tensor)):
        raise TypeError(f"{name} must be a numpy array or a torch tensor, got {type(value).__name__}")
    t = torch.from_numpy(np.ascontiguousarray(value)) if isinstance(value, np.ndarray) else value.detach()
    if tuple(t.shape) != shape:
        raise ValueError(f"{name} must have shape {shape} ({shape_name}), got {tuple(t.shape)}")
    if t.dtype == torch.bool or t.is_complex():
        raise TypeError(f"{name} must hold real {what}, got dtype {t.dtype}")
    return t.to(torch.float32)


def _load_manifest(manifest) -> dict:
    if isinstance(manifest, dict):
        return manifest
    path = Path(manifest)
    if path.is_dir():
        path = path / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"manifest must be a data set folder, a manifest.json or its dict; got {manifest!r}")
    return json.loads(path.read_text())


def dataset_forward_model(manifest, mult, additive) -> ForwardModel:
    """The physics model of one slice of a :func:`pettk.sim.datasets.build_dataset` data set.

    Parameters
    ----------
    manifest : dict or path
        The data set's manifest (or its folder / ``manifest.json`` path).
    mult, additive : array or tensor ``(n_views, n_radial)``
        The slice's multiplicative factors (attenuation × counts scale) and expected
        randoms + scatter (counts), as served by :class:`pettk.sim.datasets.SliceDataset`.

    Returns
    -------
    ForwardModel
        ``ybar = mult * P(psf(x)) + additive`` with the data set's PSF.
    """
    manifest = _load_manifest(manifest)
    grid = from_dict(manifest["grid"])
    geometry = from_dict(manifest["geometry"])
    psf = manifest.get("config", {}).get("psf_fwhm_mm")
    return ForwardModel(Projector(grid, geometry), psf=psf or None, normalisation=mult, additive=additive)


def reconstruct(model: ForwardModel, y_hat, method: str = "osem", n_iter: int = 4, n_subsets: int = 8, *,
                window: str = "hamming", progress: bool = False):
    """Reconstruct a (restored) sinogram with the physics model.

    Parameters
    ----------
    model : ForwardModel
        The slice's model (see :func:`dataset_forward_model`).
    y_hat : array or tensor ``(n_views, n_radial)`` (or the model's output shape)
        Sinogram on the counts scale. Negative values are clipped at 0 before EM.
    method : {"osem", "mlem", "fbp"}
        EM (default, Poisson model with attenuation, PSF and background) or FBP (parallel beam
        only; the sinogram is first corrected ``(y - additive) / mult`` where ``mult > 0``).
    n_iter, n_subsets : int
        EM iterations (epochs) and OSEM subsets.
    window : str
        FBP window (RED's released code used Hamming).

    Returns
    -------
    image ``model.shape_in`` in ``y_hat``'s array type (activity per voxel).
    """
    if not isinstance(model, ForwardModel):
        raise TypeError(f"model must be a ForwardModel, got {type(model).__name__}")
    if method not in RECON_METHODS:
        raise ValueError(f"method must be one of {', '.join(RECON_METHODS)}, got {method!r}")
    is_numpy = isinstance(y_hat, np.ndarray)
    if not isinstance(y_hat, (np.ndarray, torch.Tensor)):
        raise TypeError(f"y_hat must be a numpy array or a torch tensor, got {type(y_hat).__name__}")
    y = torch.from_numpy(np.ascontiguousarray(y_hat)) if is_numpy else y_hat
    if not y.is_floating_point():
        y = y.to(torch.float32)
    if not bool(torch.isfinite(y).all()):
        raise ValueError("y_hat contains non-finite values (NaN or inf)")
    y = y.clamp_min(0)
    if method == "fbp":
        image = _fbp(model, y, window)
    elif method == "osem":
        image = osem(model, y, n_iter, n_subsets, progress=progress)
    else:
        image = mlem(model, y, n_iter, progress=progress)
    return image.cpu().numpy() if is_numpy else image


def _fbp(model: ForwardModel, y: torch.Tensor, window: str) -> torch.Tensor:
    geometry, grid = model.projector.geometry, model.projector.grid
    if not isinstance(geometry, ParallelBeam2D) or not isinstance(grid, ImageGrid):
        raise ValueError("method='fbp' needs a 2D parallel-beam (ParallelBeam2D) model; use 'osem' or 'mlem'")
    return fbp(precorrect_sinogram(y, model.mult, model.additive), geometry, grid, window=window)


def precorrect_sinogram(y: torch.Tensor, mult=None, additive=None) -> torch.Tensor:
    """The precorrected sinogram ``(y - additive) / mult`` (0 where ``mult`` is 0).

    With the counts model ``E[y] = mult · A x + additive`` of the data's own count level, its mean
    is the line integral ``A x`` of the activity: it carries the image's scale (which the prompts
    alone do not, when the acquisition time or dose differs per scan) and is free of attenuation.
    ``mult`` and ``additive`` (``None``: 1 and 0) broadcast against ``y`` ``(..., n_views, n_radial)``.
    """
    out = y if additive is None else y - torch.as_tensor(additive, dtype=y.dtype, device=y.device)
    if mult is None:
        return out
    m = torch.as_tensor(mult, dtype=y.dtype, device=y.device)
    return torch.where(m > 0, out / m.clamp_min(1e-12), torch.zeros_like(out))

"""One entry point for every learned method on 2D or 3D data: :func:`reconstruct_learned`.

``pettk recon --method NAME`` and user scripts call it with a loaded model (``pettk.models.load``
or ``pettk.models.load_checkpoint_for``), the measurement's :class:`~pettk.physics.ForwardModel`
and its counts; it picks the path that fits the method and the data:

========  =====================================  ===================================================
method    2D (one transaxial sinogram)           3D ring sinogram (direct and oblique planes)
========  =====================================  ===================================================
red       restore, then OSEM or BSREM            every plane restored (:func:`.volume.restore_planes`),
dream     (full-dose model)                      then 3D OSEM or BSREM (:func:`.volume.reconstruct_restored`)
legopet   conditional sampling                   SSRB, per-slice sampling, 3D refinement
                                                 (:func:`.volume.rebinned_volume`)
ddip      ``prior.reconstruct`` (2D)             ``prior.reconstruct`` with the 3D model (network on
pet-dds                                          the axial slices inside the 3D iteration)
========  =====================================  ===================================================

LegoPET's sample can be continued by MLEM of the data (:func:`refine_sample`, ``refine_iterations``)
in 2D and 3D alike; every method's result can be post-filtered (``post_filter_mm``).
"""

from __future__ import annotations

import numpy as np
import torch

from .._validation import as_nonnegative_float, as_nonnegative_int, as_positive_float, as_positive_int
from ..geometry import SinogramLayout
from ..physics import ForwardModel
from ..recon.filters import post_filter
from .base import ImagePrior, SinogramRestorer

__all__ = ["reconstruct_learned", "refine_sample", "LEARNED_METHODS"]

LEARNED_METHODS = ("red", "dream", "ddip", "legopet", "pet-dds")


def reconstruct_learned(method: str, prior, forward_model: ForwardModel, y, *, drf: float | None = None, mr=None,
                        iterations: int = 2, subsets: int = 8, post_filter_mm: float = 0.0, map_prior=None,
                        beta: float = 0.0, refine_iterations: int = 0, batch_size: int | None = None,
                        progress: bool = False):
    """Reconstruct counts ``y`` with a learned ``method``.

    Parameters
    ----------
    method : one of :data:`LEARNED_METHODS`
    prior : the loaded model of that method
    forward_model : ForwardModel
        The model of ``y``'s count level (for low-dose data: ``mult`` and the background already at
        the low dose, as a scanner would give them).
    y : array or tensor ``forward_model.shape_out``
        Counts.
    drf : float, optional
        Restorers only: the dose-reduction factor of ``y`` (default: the model's own). The restored
        counts are reconstructed with the model scaled to full dose (``mult × drf``, background
        ``× drf``).
    mr : array or tensor ``forward_model.shape_in``, optional
        DDIP / PET-DDS: the co-registered MR.
    iterations, subsets :
        Restorers only: the OSEM (BSREM epochs with ``map_prior``) of the restored data.
    post_filter_mm : float
        Gaussian post-filter FWHM in mm of the result, every method (0: none).
    map_prior, beta : optional
        Restorers only: BSREM with this :mod:`pettk.recon` prior instead of OSEM, ``beta`` on the
        scale of a BSREM of the raw low-dose counts (:func:`.volume.reconstruct_restored`).
    refine_iterations : int
        LegoPET only: MLEM iterations of ``y`` started from the sample (:func:`refine_sample`),
        before the post-filter; 0 (default) keeps the sample. ``pettk evaluate`` tunes this pair
        on validation slices (``ClassicalSettings.legopet_em_iterations``, ``legopet_post_filter_mm``).
    batch_size : int, optional
        Planes (restorers) or slices (LegoPET 3D) per network call.

    Returns
    -------
    The activity image ``forward_model.shape_in`` (numpy when ``y`` is numpy).
    """
    if method not in LEARNED_METHODS:
        raise ValueError(f"method must be one of {', '.join(LEARNED_METHODS)}, got {method!r}")
    if not isinstance(forward_model, ForwardModel):
        raise TypeError(f"forward_model must be a pettk ForwardModel, got {type(forward_model).__name__}")
    is_3d = isinstance(forward_model.projector.geometry, SinogramLayout)
    refine_iterations = as_nonnegative_int("refine_iterations", refine_iterations)
    if refine_iterations and method != "legopet":
        raise ValueError(f"refine_iterations is for legopet (MLEM from its sample), not {method!r}")
    post_filter_mm = as_nonnegative_float("post_filter_mm", post_filter_mm)
    if method in ("red", "dream"):
        from .volume import reconstruct_restored

        if not isinstance(prior, SinogramRestorer):
            raise TypeError(f"method {method!r} needs a sinogram restorer, got {type(prior).__name__}")
        drf = float(prior.drf) if drf is None else as_positive_float("drf", drf)
        additive = None if forward_model.additive is None else forward_model.additive * drf
        full = forward_model.with_background(additive, scale=drf)
        return reconstruct_restored(prior, full, y, drf, iterations=as_positive_int("iterations", iterations),
                                    subsets=as_positive_int("subsets", subsets), post_filter_mm=post_filter_mm,
                                    map_prior=map_prior, beta=beta, batch_size=batch_size, progress=progress)
    if map_prior is not None or as_nonnegative_float("beta", beta) > 0:
        raise ValueError(f"map_prior and beta are for the sinogram restorers (red, dream), not {method!r}: "
                         "an image prior brings its own regularisation")
    if not isinstance(prior, ImagePrior):
        raise TypeError(f"method {method!r} needs an image prior, got {type(prior).__name__}")
    if method == "legopet":
        if mr is not None:
            raise ValueError("LegoPET conditions on the sinogram only: give no mr")
        if is_3d:
            from .volume import rebinned_volume

            image = rebinned_volume(prior, forward_model, y, batch_size=batch_size, progress=progress)
        else:
            image = prior.reconstruct(forward_model, y, progress=progress)
        if refine_iterations:
            image = _like(refine_sample(forward_model, y, image, refine_iterations), image)
    else:
        chunk = {} if batch_size is None else {"chunk_size": as_positive_int("batch_size", batch_size)}
        image = prior.reconstruct(forward_model, y, mr=mr, progress=progress, **chunk)
    return post_filter(image, forward_model.projector.grid, post_filter_mm) if post_filter_mm > 0 else image


def refine_sample(forward_model: ForwardModel, y, sample, iterations: int) -> torch.Tensor:
    """``iterations`` MLEM iterations of counts ``y`` started from a sampled image (LegoPET's).

    The start is ``sample`` kept above 1e-3 of its maximum, so that EM (multiplicative) can move
    every voxel, including those the sample set to zero. A sample carries structure the data do not
    pin down; a few EM iterations restore the data's contrast (lesions) at the cost of noise, which
    a post-filter then trades back (the pair is tuned on validation slices by ``pettk evaluate``).

    Parameters
    ----------
    forward_model : ForwardModel
        The model of ``y``'s count level.
    y : array or tensor ``forward_model.shape_out``
    sample : array or tensor ``forward_model.shape_in``
        Activity image (e.g. LegoPET's sample), non-negative.
    iterations : int
        MLEM iterations (0 returns the sample as a tensor).

    Returns
    -------
    torch.Tensor ``forward_model.shape_in``
    """
    from ..recon import mlem

    iterations = as_nonnegative_int("iterations", iterations)
    x = torch.as_tensor(sample)
    if tuple(x.shape) != tuple(forward_model.shape_in):
        raise ValueError(f"sample must have the forward model's image shape {tuple(forward_model.shape_in)}, "
                         f"got {tuple(x.shape)}")
    if iterations == 0:
        return x
    return mlem(forward_model, torch.as_tensor(y), iterations, x0=x.clamp_min(1e-3 * float(x.max())))


def _like(x: torch.Tensor, reference):
    """``x`` as numpy when ``reference`` is numpy (the entry point answers in its input's kind)."""
    return x.detach().cpu().numpy() if isinstance(reference, np.ndarray) else x

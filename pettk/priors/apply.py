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
"""

from __future__ import annotations

from .._validation import as_nonnegative_float, as_positive_float, as_positive_int
from ..geometry import SinogramLayout
from ..physics import ForwardModel
from .base import ImagePrior, SinogramRestorer

__all__ = ["reconstruct_learned", "LEARNED_METHODS"]

LEARNED_METHODS = ("red", "dream", "ddip", "legopet", "pet-dds")


def reconstruct_learned(method: str, prior, forward_model: ForwardModel, y, *, drf: float | None = None, mr=None,
                        iterations: int = 2, subsets: int = 8, post_filter_mm: float = 0.0, map_prior=None,
                        beta: float = 0.0, batch_size: int | None = None, progress: bool = False):
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
    iterations, subsets, post_filter_mm :
        Restorers only: the OSEM (BSREM epochs with ``map_prior``) of the restored data and its
        Gaussian post-filter (mm).
    map_prior, beta : optional
        Restorers only: BSREM with this :mod:`pettk.recon` prior instead of OSEM, ``beta`` on the
        scale of a BSREM of the raw low-dose counts (:func:`.volume.reconstruct_restored`).
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
    if method in ("red", "dream"):
        from .volume import reconstruct_restored

        if not isinstance(prior, SinogramRestorer):
            raise TypeError(f"method {method!r} needs a sinogram restorer, got {type(prior).__name__}")
        drf = float(prior.drf) if drf is None else as_positive_float("drf", drf)
        additive = None if forward_model.additive is None else forward_model.additive * drf
        full = forward_model.with_background(additive, scale=drf)
        return reconstruct_restored(prior, full, y, drf, iterations=as_positive_int("iterations", iterations),
                                    subsets=as_positive_int("subsets", subsets), post_filter_mm=post_filter_mm,
                                    prior=map_prior, beta=beta, batch_size=batch_size, progress=progress)
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

            return rebinned_volume(prior, forward_model, y, batch_size=batch_size, progress=progress)
        return prior.reconstruct(forward_model, y, progress=progress)
    chunk = {} if batch_size is None else {"chunk_size": as_positive_int("batch_size", batch_size)}
    return prior.reconstruct(forward_model, y, mr=mr, progress=progress, **chunk)

"""PET-DDS's configuration (:class:`PETDDSConfig`, declared with :mod:`pettk.priors._config`)."""

from __future__ import annotations

import numbers
from dataclasses import dataclass

from .._config import Choice, Int, PriorConfig, Real, checked

__all__ = ["PETDDSConfig", "SCALE_MODES", "BETA_SCHEDULES"]

SCALE_MODES = ("counts", "fixed")
BETA_SCHEDULES = ("constant", "snr")


def _count(minimum: int, optional: bool = False) -> Int:
    return Int(minimum, type_error=True, optional=optional)


def _number(minimum: float = 0.0, maximum: float | None = None, **kwargs) -> Real:
    return Real(minimum, maximum, type_error=True, **kwargs)


@dataclass(frozen=True)
class PETDDSConfig(PriorConfig):
    """PET-DDS reconstruction settings. JSON-serialisable (:meth:`to_dict` / :meth:`from_dict`).

    Attributes
    ----------
    steps : int
        DDIM grid times (Singh et al.: tens; 25 by default).
    start_t : int, optional
        ``None``: start from pure noise at ``T - 1`` (PET-DDS). An int: SDEdit start, ``x_T`` is
        the normalised initial image noised to ``start_t``.
    em_iterations : int
        EM epochs of the data-consistency step per diffusion step.
    subsets : int
        View subsets of each epoch (1: MLEM-type steps; > 1: OSEM-type, ``beta / subsets`` per subset).
    beta : float >= 0
        Dimensionless anchor weight (module docstring).
    beta_schedule : {"constant", "snr"}
    axial_beta : float >= 0
        Dimensionless weight of the axial coupling of 3D reconstructions (scaled like ``beta``):
        a quadratic penalty on the differences between neighbouring axial slices inside every
        data-consistency step (:mod:`pettk.diffusion.axial`, DiffusionMBIR's z-prior in PET form).
        0 (default): no coupling, the slices meet only through the 3D data. Not scheduled (the
        same at every diffusion step); ignored for 2D forward models.
    eta : float in [0, 1]
        DDS/DDIM stochasticity (``eta_form="ddip"``: fresh-noise fraction of the re-noising).
    guidance : float >= 0
        MR classifier-free guidance weight: 0 unconditional, 1 conditional, > 1 guided
        (conditional models only).
    clip_max : float > 0, optional
        Upper clamp of Tweedie's estimate in normalised units (the lower clamp is always 0).
    scale_mode : {"counts", "fixed"}
        ``"counts"``: the activity of a unit image from the scan's initial image
        (``level(x_init) / reference_mean``); ``"fixed"``: ``image_scale`` (the training maximum,
        right when the scans are in the training data's calibrated units).
    reference_mean : float > 0, optional
        The training images' median ``activity_level`` in normalised units (measured from the
        training data by :func:`reference_statistics`; required for ``"counts"``).
    image_scale : float > 0, optional
        Activity of a unit normalised image in the training data (its maximum; required for ``"fixed"``).
    image_size : (int, int), optional
        The training images' size; forward models of another in-plane grid are refused.
    mask_threshold : float in (0, 1)
        Object mask of :func:`activity_level`: voxels above this fraction of the 99th percentile.
    init_iterations, init_subsets : int
        The initial OSEM (scale estimate and SDEdit start).
    samples : int
        Independent runs averaged (1: one posterior sample).
    seed : int
        Default seed of the noise (sample ``k`` uses ``seed + k``).
    """

    _name = "PET-DDS"

    steps: int = checked(25, _count(1))
    start_t: int | None = checked(None, _count(0, optional=True))
    em_iterations: int = checked(2, _count(1))
    subsets: int = checked(1, _count(1))
    beta: float = checked(0.01, _number())
    beta_schedule: str = checked("constant", Choice(BETA_SCHEDULES))
    axial_beta: float = checked(0.0, _number())
    eta: float = checked(0.85, _number(0.0, 1.0))
    guidance: float = checked(1.0, _number())
    clip_max: float | None = checked(2.0, _number(min_open=True, optional=True))
    scale_mode: str = checked("counts", Choice(SCALE_MODES))
    reference_mean: float | None = checked(None, _number(min_open=True, optional=True))
    image_scale: float | None = checked(None, _number(min_open=True, optional=True))
    image_size: tuple | None = None  # checked (and made a tuple of ints) in _check
    mask_threshold: float = checked(0.2, _number(0.0, 1.0, min_open=True, max_open=True))
    init_iterations: int = checked(2, _count(1))
    init_subsets: int = checked(8, _count(1))
    samples: int = checked(1, _count(1))
    seed: int = checked(0, _count(0))

    def _check(self) -> None:
        """``image_size``: ``None`` or a pair of positive ints (stored as a tuple of ints)."""
        if self.image_size is not None:
            size = tuple(self.image_size)
            if len(size) != 2 or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) and v > 0
                                         for v in size):
                raise ValueError(f"image_size must be a pair of positive ints (H, W), got {self.image_size!r}")
            if size != self.image_size:
                object.__setattr__(self, "image_size", tuple(int(v) for v in size))

    def replace(self, **changes) -> PETDDSConfig:
        """A validated copy with some fields changed."""
        return super().replace(**changes).validate()

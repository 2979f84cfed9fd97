"""Whether a learned model fits the data it is asked to reconstruct (checked before any work).

A learned model fixes part of the data's layout:

* an image prior (DDIP, PET-DDS) the in-plane image size it was trained on;
* a sinogram restorer (RED, DREAM) its sinogram shape ``(n_views, n_radial)``, which for pettk's
  data sets (``pettk.sim.datasets.DatasetConfig.make_geometry``) names the geometry and, for
  parallel beam, the image size too: ``n × n`` pixels are projected to ``n`` views of
  ``ceil(1.5 n) | 1`` bins, while the ``mmr-like`` direct plane is 224 × 129 at every image size;
* LegoPET both (its ``image_shape`` and ``sinogram_shape``).

:func:`model_image_size` says which image size a model fixes, :func:`check_models_fit_data`
refuses a model that does not fit the evaluated data with a ``ValueError`` saying what to give.
"""

from __future__ import annotations

import math

from ..sim.datasets import DatasetConfig

__all__ = ["model_image_size", "implied_image_size", "check_models_fit_data"]

#: The sinogram of pettk's ``mmr-like`` data sets (the scanner's direct plane, any image size).
_MMR_PLANE = tuple(DatasetConfig(geometry="mmr-like").make_geometry().shape)


def implied_image_size(sinogram_shape) -> int | None:
    """The image side ``n`` (pixels) of the pettk data sets whose sinograms are ``sinogram_shape``
    ``(n_views, n_radial)``: ``n_views`` for a parallel-beam sinogram of ``n × n`` images
    (``n_radial = ceil(1.5 n) | 1``); ``None`` for the ``mmr-like`` direct plane (the same at every
    image size) and for a shape no pettk data set has."""
    shape = tuple(int(v) for v in sinogram_shape)
    if len(shape) != 2 or shape[0] < 1:
        return None
    parallel = DatasetConfig(image_size=shape[0], geometry="parallel").make_geometry().shape
    return shape[0] if tuple(parallel) == shape else None


def model_image_size(model) -> tuple[int, int] | None:
    """The in-plane image size ``(n, n)`` in pixels a learned model fixes, or ``None`` when it fixes none.

    * PET-DDS: its configuration's ``image_size``; DDIP: its U-Net's ``image_size``.
    * A sinogram restorer (RED, DREAM): the size its ``sinogram_shape`` implies
      (:func:`implied_image_size`): ``(n, n)`` for a parallel-beam sinogram of ``n`` views;
      ``None`` for the ``mmr-like`` direct plane (its restored sinograms are reconstructed on the
      data's grid, whatever its size) and for other shapes (then only the sinogram check of
      :func:`check_models_fit_data` applies).
    * LegoPET and anything else: ``None`` (LegoPET's sinogram is checked by
      :func:`check_models_fit_data`, its image grid by the model itself).
    """
    from ..priors.base import SinogramRestorer
    from ..priors.ddip import DDIP
    from ..priors.petdds import PETDDS

    if isinstance(model, PETDDS) and model.config.image_size is not None:
        return tuple(int(v) for v in model.config.image_size)
    if isinstance(model, DDIP):
        return tuple(int(v) for v in model.config.net.image_size)
    if isinstance(model, SinogramRestorer) and getattr(model, "sinogram_shape", None) is not None:
        n = implied_image_size(model.sinogram_shape)
        return None if n is None else (n, n)
    return None


def _layout_words(shape: tuple) -> str:
    if shape == _MMR_PLANE:
        return "the mmr-like direct plane"
    n = implied_image_size(shape)
    return "n_views x n_radial" if n is None else f"parallel beam of {n} x {n} images"


def check_models_fit_data(models: dict, image_size: int, sinogram_shape, drfs=None) -> None:
    """Raise ``ValueError`` naming the first model of ``{method: model}`` that does not fit data of
    ``image_size × image_size`` pixels and sinograms ``sinogram_shape`` ``(n_views, n_radial)``:
    the image size :func:`model_image_size` gives, and the ``sinogram_shape`` of a sinogram model
    (RED, DREAM, LegoPET), must be the data's; with ``drfs`` (the evaluated dose-reduction factors),
    a sinogram restorer's DRF (one model per DRF) must be each of them."""
    from .. import models as shipped

    size = int(image_size)
    data_sinogram = tuple(int(v) for v in sinogram_shape)
    for method, model in models.items():
        names = " / ".join(n for n, m in shipped.REGISTRY.items() if m == method) or "none yet"
        model_drf = getattr(model, "drf", None)
        # the same tolerance as the restorers' own check (priors.base.check_low_dose_counts)
        others = [] if model_drf is None else [float(d) for d in drfs or ()
                                               if not math.isclose(float(d), model_drf, rel_tol=1e-6)]
        if others:
            raise ValueError(f"the {method} model restores DRF {model_drf:g} data (one model per DRF) but DRF "
                             f"{', '.join(f'{d:g}' for d in others)} is evaluated too; evaluate its DRF only (--drf "
                             f"{model_drf:g}) or give a {method} model of that DRF "
                             f"(--checkpoint {method}=NAME_OR_PATH; shipped: {names})")
        trained = model_image_size(model)
        if trained is not None and trained != (size, size):
            raise ValueError(f"the {method} model was trained on {trained[0]} x {trained[1]} images but the "
                             f"evaluated data are {size} x {size}; give a model of this size (--checkpoint "
                             f"{method}=NAME_OR_PATH: a checkpoint or a shipped {method} model; shipped: {names}) "
                             "or data of the model's size")
        sinogram = getattr(model, "sinogram_shape", None)
        if sinogram is not None and tuple(int(v) for v in sinogram) != data_sinogram:
            sinogram = tuple(int(v) for v in sinogram)
            raise ValueError(f"the {method} model was trained on {sinogram[0]} x {sinogram[1]} sinograms "
                             f"({_layout_words(sinogram)}) but the evaluated data's are {data_sinogram[0]} x "
                             f"{data_sinogram[1]} ({_layout_words(data_sinogram)}); give data of the model's "
                             f"geometry (--data: a data set of `pettk simulate --geometry ...`) or a {method} model "
                             f"of this one (--checkpoint {method}=NAME_OR_PATH; shipped: {names})")

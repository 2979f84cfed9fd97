"""Published learned priors as thin compositions of :mod:`pettk.diffusion` and :mod:`pettk.physics`.

One interface per kind (DESIGN.md):

- sinogram restorers (:class:`SinogramRestorer`: ``restore(y_low, drf) -> y_hat``, then
  :func:`reconstruct` with the slice's physics model, OSEM by default):

  - :mod:`.red`: RED, residual estimation diffusion (Ai et al., MedIA 2025): :class:`RED`,
    :class:`REDConfig` (``TINY``/``GPU``/``FULL``), :func:`train_red`.

:mod:`.base` holds the interface and the reconstruction helpers shared by the restorers.
"""

from .base import RECON_METHODS, ImagePrior, SinogramRestorer, dataset_forward_model, reconstruct
from .red import (
    RED,
    REDConfig,
    ResidualSchedule,
    apply_net,
    dcn_loss,
    denormalise_red,
    gaussian_ssim,
    normalise_red,
    red_sample,
    ren_loss,
    train_red,
)

__all__ = [
    "RECON_METHODS", "ImagePrior", "SinogramRestorer", "dataset_forward_model", "reconstruct", "RED", "REDConfig",
    "ResidualSchedule", "apply_net", "dcn_loss", "denormalise_red", "gaussian_ssim", "normalise_red", "red_sample",
    "ren_loss", "train_red",
]

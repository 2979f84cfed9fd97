"""Published learned priors as thin compositions of :mod:`pettk.diffusion` and :mod:`pettk.physics`.

One interface per kind (DESIGN.md):

- sinogram restorers (:class:`SinogramRestorer`: ``restore(y_low, drf) -> y_hat``, then
  :func:`reconstruct` with the slice's physics model, OSEM by default):

  - :mod:`.red`: RED, residual estimation diffusion (Ai et al., MedIA 2025): :class:`RED`,
    :class:`REDConfig` (``TINY``/``GPU``/``FULL``), :func:`train_red`.
  - :mod:`.dream`: DREAM, diffusion transformer with random masks (Huang et al.): :class:`DREAM`,
    :class:`DREAMConfig`, :func:`train_dream`.

- image priors (:class:`ImagePrior`: ``reconstruct(forward_model, y, mr=None, init=None)``):

  - :mod:`.ddip`: DDIP-PET, deep diffusion image prior with HQS (Hashimoto & Gong): :class:`DDIP`,
    :class:`DDIPConfig`, :func:`train_ddip`.
  - :mod:`.legopet`: LegoPET, feature-guided sinogram-conditioned diffusion (Sun & Mawlawi):
    :class:`LegoPET`, :class:`LegoPETConfig`, :func:`train_legopet`.
  - :mod:`.petdds`: PET-DDS, an image diffusion model (``pettk train diffusion``) as the prior of
    an EM reconstruction by decomposed diffusion sampling (Singh et al. 2024): :class:`PETDDS`,
    :class:`PETDDSConfig`.

:mod:`.base` holds the interface and the reconstruction helpers shared by the restorers. Each method
is a package of modules of one job (``config``, data, model, ``training``) built on three shared
pieces: :mod:`._config` (:class:`~pettk.priors._config.PriorConfig`: configurations declared as
frozen dataclasses with per-field specs, validated and (de)serialised in one place), :mod:`._data`
(data set manifest, one split's slices, in-memory tensor pairs) and :mod:`._checkpoint` (several
named networks in one checkpoint, the method checked on load).
"""

from .base import RECON_METHODS, ImagePrior, SinogramRestorer, dataset_forward_model, reconstruct
from .ddip import DDIP, DDIPConfig, train_ddip
from .dream import DREAM, DREAMConfig, train_dream
from .legopet import LegoPET, LegoPETConfig, train_legopet
from .petdds import PETDDS, PETDDSConfig
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
    "ren_loss", "train_red", "DREAM", "DREAMConfig", "train_dream", "DDIP", "DDIPConfig", "train_ddip", "LegoPET",
    "LegoPETConfig", "train_legopet", "PETDDS", "PETDDSConfig",
]

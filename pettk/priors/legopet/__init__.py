"""LegoPET: hierarchical feature-guided, sinogram-conditioned image diffusion (Sun & Mawlawi, ISBI 2025).

LegoPET reconstructs a PET image directly from its sinogram with two networks of one U-Net
backbone (:class:`~pettk.diffusion.nets.LegoPETNetsConfig`, METHODS.md §5):

- **PnPNet** ``P(s) -> x``: a plain (time-free) U-Net mapping the sinogram to the image, trained
  first with ``MSE + 0.1 · L_DWT`` (:func:`pnpnet_loss`; ``L_DWT`` is the mean absolute difference
  of the LH, HL and HH sub-bands of a one-level orthonormal Haar transform, :func:`haar_dwt2`),
  then **frozen**;
- **cDPM** ``eps_theta(x_t, t, C)``: an ε-predicting DDPM U-Net (x0-predicting in the tiny CPU
  preset, see :attr:`LegoPETConfig.TINY`) whose input is ``x_t`` with the sinogram concatenated
  (``C = {s, b_d, b_m}``); the frozen PnPNet's encoder-level outputs
  ``b_d`` and middle output ``b_m`` (:meth:`UNet.encoder_features`) are *added* to the cDPM's
  matching activations (the U-Net's ``features`` hook), so the guidance adds no trainable
  parameter: LegoPET and the plain cDPM (``LegoPETConfig(features=False)``, the ablation) have
  the same trainable parameter count, the paper's 35.71 M in the full configuration.
- **Classifier-free guidance**: in training the whole condition (sinogram *and* injected feature
  maps) is replaced by zeros with probability ``p_dp`` (:func:`cdpm_loss`); sampling uses
  ``eps~ = (1 + λ) eps(x_t, t, C) - λ eps(x_t, t, ∅)`` (:class:`~pettk.diffusion.guidance.CFGModel`),
  with DDPM ancestral steps (the paper) or DDIM (practical).
- **Data consistency** (a pettk extension, off by default, ``dc_iterations > 0``): a few
  (penalised) EM iterations with the measurement's :class:`~pettk.physics.ForwardModel` correct
  ``x0_hat`` at every sampling step (:func:`~pettk.diffusion.posterior.diffpir_sample` with a
  data step built on :func:`~pettk.diffusion.posterior.penalised_em_step`).

Intensities and sizes
---------------------
Images are mapped to [-1, 1] by the training set's maximum activity ``image_max``
(``x = 2 a / image_max - 1``) and sinograms are divided by their own maximum (the ``"legopet"``
normalisation of :class:`~pettk.sim.datasets.SliceDataset`). Both networks work on a square *canvas*, the
preset's ``net.image_size`` (32² tiny, 128² GPU, 256² full as in the paper):

- the image grid ``(nx, ny)`` must fit the canvas; it is padded symmetrically with -1 (activity
  0) and the result is centre-cropped back to ``(nx, ny)`` (:func:`pad_image`, :func:`crop_image`);
- the sinogram ``(n_views, n_radial)`` is fitted to the canvas axis by axis ("pad or resize",
  :func:`fit_sinogram`): an axis no longer than the canvas is zero-padded symmetrically (no
  counts), a longer one is resized to the canvas length (bilinear, antialiased). The paper pads
  sinogram and image to 256² (§5.1); with pettk's 224 × 129 ``mmr-like`` sinogram and a 256²
  canvas that is pure padding, while the tiny 32 × 49 parallel-beam sinogram on a 32² canvas has
  its radial axis resized 49 → 32.

Because the sinogram is normalised by its maximum, the output's activity scale is the training
data's (``image_max``): LegoPET is not quantitative by itself. The data-consistency steps (or a
calibration of ``image_max``) tie it to the measured counts. ``sinogram_input="precorrected"``
(pettk extension) gives the networks ``(y - additive) / mult`` over a data-set constant instead,
whose mean is the activity's line integral, so the image scale is in the input.

Reference: Y. Sun, O. Mawlawi, "LegoPET: Hierarchical Feature Guided Conditional Diffusion for
PET Image Reconstruction", IEEE ISBI 2025, arXiv:2411.16629. The authors' code was not released;
this is written from the paper text (METHODS.md §5).

Modules (one job each): :mod:`.config` (:class:`LegoPETConfig` and presets), :mod:`.canvas`
(normalisation, padding, cropping), :mod:`.losses` (Haar wavelets, PnPNet and cDPM objectives),
:mod:`.model` (:class:`LegoPET`: sampling, reconstruction, save/load), :mod:`.training`
(:func:`train_legopet`, :func:`warm_start_cdpm`).
"""

from .canvas import (
    count_parameters,
    crop_image,
    denormalise_image,
    fit_sinogram,
    normalise_image,
    normalise_sinogram,
    pad_image,
    precorrect_sinogram,
)
from .config import BETA_SCHEDULES, CDPM_INITS, SAMPLERS, SINOGRAM_INPUTS, TARGETS, LegoPETConfig
from .losses import cdpm_loss, dwt_loss, haar_dwt2, haar_idwt2, pnpnet_loss
from .model import LegoPET
from .training import train_legopet, warm_start_cdpm

__all__ = [
    "LegoPETConfig", "LegoPET", "train_legopet", "haar_dwt2", "haar_idwt2", "dwt_loss", "pnpnet_loss", "cdpm_loss",
    "fit_sinogram", "pad_image", "crop_image", "normalise_image", "denormalise_image", "normalise_sinogram",
    "precorrect_sinogram", "count_parameters", "warm_start_cdpm", "SAMPLERS", "TARGETS", "CDPM_INITS", "BETA_SCHEDULES",
    "SINOGRAM_INPUTS",
]

"""PET-DDS: an image diffusion prior as the regulariser of an EM reconstruction (decomposed diffusion sampling).

Singh, Denker, Barbano, Kereta, Jin, Thielemans, Maass & Arridge, "Score-Based Generative Models
for PET Image Reconstruction", Machine Learning for Biomedical Imaging 2 (2024) 547-585,
doi 10.59275/j.melba.2024-5d51 (arXiv 2308.14190): PET-DPS and PET-DDS, 2D and 3D (2D models
applied slice by slice), MR guidance by classifier-free guidance. The sampler is Chung, Lee & Ye,
"Decomposed Diffusion Sampler for Accelerating Large-Scale Inverse Problems" (ICLR 2024). This
module is pettk's own implementation of that recipe on :mod:`pettk.diffusion`; it composes

- a pretrained **image** diffusion model (``pettk train diffusion``, :mod:`pettk.diffusion.image_model`:
  a U-Net on single slices normalised to [0, 1] by the training set's maximum activity,
  ``normalisation="ddip"``; optionally MR-conditioned by channel concatenation), and
- the Poisson data term of the scan's :class:`~pettk.physics.ForwardModel` (attenuation,
  normalisation, PSF, randoms + scatter), through the penalised-EM (HQS) step
  :func:`~pettk.diffusion.posterior.penalised_em_step`, inside
  :func:`~pettk.diffusion.posterior.dds_sample`.

Algorithm (:meth:`PETDDS.reconstruct`)
--------------------------------------
1. **Initial image and intensity scale.** A short OSEM (``init_iterations`` x ``init_subsets``)
   of the measured counts gives ``x_init`` (activity units). The activity ``s`` of one unit of
   the model's normalised image is estimated from it (``scale_mode="counts"``, below) or taken
   from the training data (``"fixed"``).
2. **Decomposed diffusion sampling** on ``steps`` DDIM grid times from ``T - 1`` (pure noise; or
   from ``start_t`` with ``x_T = q(x_t | x_init / s)``, an SDEdit start). At each time ``t``
   (next ``t'``):

   a. Tweedie's estimate ``x0_hat = E[x0 | x_t]`` from the network (with classifier-free MR
      guidance for a conditional model), clamped to ``[0, clip_max]``;
   b. **data consistency**: ``em_iterations`` epochs of penalised EM (OSEM-style over
      ``subsets`` view subsets) started from ``a = s x0_hat`` and anchored to it, each the EM
      surrogate's closed-form minimiser of ``-log L(y | x) + beta_t / 2 ||x - s x0_hat||^2``
      (``beta_t / subsets`` per subset); EM is multiplicative, so the result is >= 0;
   c. the DDS/DDIM step ``x_{t'} = sqrt(abar_{t'}) x0_dc + sqrt(1 - abar_{t'}) (eta xi +
      sqrt(1 - eta^2) eps_hat)`` with the network's noise ``eps_hat`` and ``x0_dc = a / s``.

   The output is the last ``x0_dc`` in activity units (data-consistent and non-negative);
   ``samples > 1`` averages independent runs (seeds ``seed .. seed + samples - 1``), an estimate
   of the posterior mean.
3. **3D** (``forward_model.shape_in == (nx, ny, nz)``): the axial slices are one batch of 2D
   images through the network (in chunks of ``chunk_size``; MR condition per slice), while the
   data-consistency step runs on the whole volume with the 3D model, so oblique LORs couple the
   slices; one volume-wide scale ``s``.

Intensity normalisation from the counts (``scale_mode="counts"``, the default)
-------------------------------------------------------------------------------
PET activity has no fixed scale (dose, uptake time, calibration), while the prior knows one
range: it was trained on ``truth / max(training set)``. PET-DDS therefore derives the scale of
each scan from its own data, as Singh et al. do from an initial OSEM image. The rule here::

    level(x) = mean of x over {x > mask_threshold * q99(x)}       (the "head mean")
    s        = level(x_init) / reference_mean
    reference_mean = median over the training slices of level(truth / training maximum)

i.e. the mean activity inside the object (voxels above 20 % of the 99th percentile) of the
initial OSEM image is mapped onto the typical value of the same statistic in the model's
training images. Why this statistic: (i) EM conserves counts, so the mean of an early OSEM
image over many voxels is nearly unbiased and barely affected by Poisson noise (a maximum or
percentile of a noisy image is biased upwards by the noise, a sum depends on how much of the
object the slice holds); (ii) on the training slices it is the most stable per-slice statistic
of those tried (coefficient of variation 16-18 % across slices of the tiny test sets, against
18-21 % for the 99th percentile, 20-24 % for the maximum and 24 % for the total activity). A
slice is thus shown to the prior at the training set's median level; the data-consistency
steps run in activity units, so the final image keeps the scan's own scale. ``reference_mean``
(and ``image_scale``, the training maximum, for ``scale_mode="fixed"``) are measured from the
training data when the prior is built (:func:`reference_statistics`) and stored with the model.
For 3D volumes ``level`` is computed over the whole volume.

Anchor weight
-------------
``beta`` is dimensionless, as in :class:`~pettk.priors.ddip.DDIP`: the HQS step uses
``beta_abs = beta * mean_FOV(A^T 1) / s`` (counts/activity^2), so the anchor's curvature relative
to the likelihood's at a normalised value ``u`` is about ``beta * u`` whatever the count level
and the activity units. ``beta_schedule="snr"`` multiplies it by ``abar_t / (1 - abar_t)`` (the
anchor strengthens as Tweedie's estimate becomes reliable, DiffPIR's ``rho_t``). With few EM
iterations per step the anchor matters little (the EM iterations start at ``x0_hat``: early
stopping is the implicit regulariser, as DDS's few conjugate-gradient steps); large ``beta``
pulls the result toward the prior sample, which a weak prior makes worse.

MR guidance
-----------
A model trained with ``cond_field="mr"`` (each MR slice divided by its maximum) and condition
dropout (:class:`ConditionDropout`: the MR replaced by zeros with probability ``p``) predicts
both ``out(x_t, mr)`` and ``out(x_t, 0)``; PET-DDS combines them as
``out_u + guidance * (out_c - out_u)`` (Ho & Salimans 2022): ``guidance = 0`` is the
unconditional model, ``1`` the plain conditional one, ``> 1`` amplifies the MR's influence
(Singh et al.'s guided PET-DDS). A conditional model trained without dropout supports only
``guidance = 1``. An unconditional model ignores ``mr`` and ``guidance``.

Limitations: the prior is 2D (3D by slices; the only inter-slice coupling is the optional
quadratic axial penalty ``axial_beta`` inside the data step, :mod:`pettk.diffusion.axial`); the
model's image size is checked but not its voxel size; the prior can only represent
what its training data held (out-of-distribution lesions are restored by the data term alone).

Modules (one job each): :mod:`.config` (:class:`PETDDSConfig`), :mod:`.reference` (intensity
level and the training images' reference), :mod:`.data` (condition dropout for training),
:mod:`.model` (:class:`PETDDS`: reconstruction, load/save).
"""

from .config import BETA_SCHEDULES, SCALE_MODES, PETDDSConfig
from .data import ConditionDropout
from .model import PETDDS
from .reference import activity_level, reference_statistics

__all__ = ["PETDDSConfig", "PETDDS", "ConditionDropout", "activity_level", "reference_statistics",
           "SCALE_MODES", "BETA_SCHEDULES"]

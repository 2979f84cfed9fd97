"""DDIP for PET: a deep diffusion image prior adapted to the measured sinogram inside the reconstruction.

DDIP-PET: Hashimoto & Gong, arXiv 2507.15078 (IEEE TMI 2026, doi 10.1109/TMI.2026.3659792), built
on Chung & Ye, "Deep Diffusion Image Prior for Efficient OOD Adaptation in 3D Inverse Problems"
(ECCV 2024, arXiv 2407.10641). METHODS.md §4 is the specification; this module composes
:mod:`pettk.diffusion` (U-Net, schedule, DDIM step, LoRA, penalised EM) with
:mod:`pettk.physics`:

- **Pretraining** (:func:`train_ddip`): a :class:`~pettk.diffusion.nets.UNet` learns ``ε`` (or
  ``x0``) on activity images of one tracer (FDG-like), with the MR image **concatenated** as
  extra input channels; 2D (1 slice) or 2.5D (3 adjacent slices in, 3 MR slices as condition).
  Every training slab is divided by its own intensity scale (:meth:`DDIPConfig.intensity_scale`:
  the mean activity inside the MR head mask, mapped to ``target_mean``), so a reconstruction can
  normalise its MLEM start the same way without knowing the activity units.
- **Reconstruction** (:meth:`DDIP.reconstruct`, METHODS §4.4): MLEM (20 iterations) →
  normalise → SDEdit to ``t₀ = start_t`` → for each of ``steps`` grid times ``t → t'``:

  1. *fine-tune* (fresh AdamW, ``adapt_steps`` steps, gradient clipping) only the LoRA adapters
     and the non-embedding biases so that Tweedie's ``x̂₀(x_t; θ)`` matches the **penalised-EM
     image** ``x_PEM`` = ``em_iterations`` iterations of
     :func:`~pettk.diffusion.posterior.penalised_em_step` (one EM update with attenuation,
     normalisation and background, then the closed-form HQS root of METHODS §4.4.3) anchored at
     ``x̂₀`` (no gradient through the projector); ``loss="sinogram"`` instead back-propagates
     the Poisson deviance of ``forward_model(x̂₀)`` through the projector's autograd (the unused option of the released
     code);
  2. *sample*: ``x̂₀`` with the adapted θ, clamped to ``[0, 1]``, then the DDIM-η step
     ``x_{t'} = √ᾱ_{t'} x̂₀ + √(1-ᾱ_{t'}) (η ξ + √(1-η²) ε̂)`` (``eta_form="ddip"``).

  The output is the last ``x̂₀`` (the centre slice for 2.5D), back in activity units. The LoRA
  adapters are reset at the start and at the end of every call: the pretrained weights never
  change. ``adapt=False`` gives "DDIP without adaptation" (conditional SDEdit from the same start).
- **3D** (``forward_model.shape_in == (nx, ny, nz)``): the volume is processed slice by slice
  (2.5D slabs ``z-1, z, z+1`` with edge replication) with **one shared LoRA**; each fine-tuning
  step uses ``mc_slices`` randomly drawn slices (Monte-Carlo slice sampling, as DDIP3D), while the
  penalised-EM target is computed on the whole volume with the 3D model.

Configurations (METHODS §4.7): :attr:`DDIPConfig.TINY` (32×32, CPU, 1 slice + MR; it predicts
``x0``, pretrains 500 steps and adapts with lr 2e-3, see :class:`DDIPConfig`),
:attr:`DDIPConfig.GPU` (128×128, 2.5D, 64 channels) and :attr:`DDIPConfig.FULL` (the released
code's defaults, ≈126 M parameters). ``β`` is dimensionless here (see :meth:`DDIP.reconstruct`).

Modules (one job each): :mod:`.config` (:class:`DDIPConfig` and presets), :mod:`.data` (slabs and
training images), :mod:`.model` (:class:`DDIP`: reconstruction, save/load), :mod:`.training`
(:func:`train_ddip`).
"""

from .config import DDIPConfig
from .data import DDIPImages, phantom_training_images, slab_indices
from .model import DDIP
from .training import corrupted_condition, train_ddip

__all__ = ["DDIPConfig", "DDIP", "train_ddip", "corrupted_condition", "DDIPImages", "phantom_training_images",
           "slab_indices"]

"""DREAM: a diffusion transformer with random masks for low-dose PET sinograms.

DREAM (METHODS.md §2) is a DiffIR-type two-stage "compact prior" restorer applied to sinograms:

- **random block masks** (:func:`random_block_masks`): the padded sinogram plane is cut into a
  grid of ``cell_size`` cells; ``round(n_cells · mask_fraction)`` cells are drawn uniformly *with
  replacement* and zeroed (≤ 10 % of the area by default). The block fed to the networks is
  ``[m₁⊙s, …, m_{N-1}⊙s, s]`` (:func:`block_masks` + :func:`make_block`, ``N = 3`` by default);
  the *same* masks multiply the low- and the full-dose copy;
- the **hierarchical masks** are a crop-size curriculum (:func:`curriculum_stage`): masks are
  drawn on the whole plane, then random crops of growing size (and shrinking batch) are taken,
  so small crops see large holes relative to their field of view;
- **stage 1 (S1)**: the compact prior encoder CPEN-S1 sees the low- *and* the full-dose block and
  gives ``z ∈ R^{prior_dim}``; the Restormer-style transformer ``G`` restores the low-dose block
  with ``z`` injected in every attention and feed-forward sub-layer; loss ``L1(G(lq, z), gt)``;
- **stage 2 (S2)**: CPEN-S2 sees the low-dose block only and conditions a 4-step latent
  diffusion (:func:`latent_schedule`: ``β`` linear in ``√β`` from 0.1 to 0.99) whose MLP
  denoiser predicts ``ẑ₀`` (x0 parameterisation); the reverse steps are the *deterministic*
  posterior means (:func:`latent_reverse`). Phase A trains CPEN-S2 + denoiser on
  ``L1(ẑ, z_S1)`` (the frozen teacher prior), phase B all of S2 (``G`` initialised from S1) on
  ``L1(G(lq, ẑ), gt) + L1(ẑ, z_S1)``;
- **inference** (:meth:`DREAM.restore`): ``DRF·y_low`` divided by its maximum, padded
  symmetrically to the network plane, masked block, CPEN-S2 → latent diffusion from
  ``N(0, I)`` → ``G``, then the **mask-aware weighted average** of the channels
  (:func:`mask_aware_average`; optionally over ``K`` independent mask draws), crop back, undo the
  scale, clip negatives, optional total-count rescale. Reconstruct with MLEM/OSEM and the slice's
  physics model (:func:`pettk.priors.reconstruct`, :meth:`DREAM.restore_and_reconstruct`).

The networks are the shared building blocks of :mod:`pettk.diffusion.nets.restormer` (presets
:data:`~pettk.diffusion.nets.DREAM_TINY` / ``_GPU`` / ``_FULL``); training runs on
:class:`~pettk.diffusion.train.Trainer` (EMA, exact resume, checkpoints). Configurations:
:attr:`DREAMConfig.TINY`, :attr:`DREAMConfig.GPU`, :attr:`DREAMConfig.FULL` (METHODS §2.9); a
JSON file holding ``{"base": "tiny", ...overrides}`` or a full ``to_dict()`` is read by
:meth:`DREAMConfig.from_json`. Ablations: ``n_channels=1`` (no masks) and ``prior=False`` (``G``
without prior injection) at training time, ``restore(..., use_prior=False)`` (``z = 0``) at test
time.

Reference: Huang, He, Chen, Liu, Wang, Li, Liu, "DREAM: Diffusion transformer meets random masks
for low-dose PET sinogram restoration", arXiv 2503.08339 (2025).

Modules (one job each): :mod:`.config` (:class:`DREAMConfig`, presets, parameter counts),
:mod:`.masks` (masks, blocks, curriculum, plane), :mod:`.networks` (latent diffusion and stage
modules), :mod:`.model` (:class:`DREAM`: restore, save/load), :mod:`.training` (:func:`train_dream`).
"""

from .config import DREAM_SCALE_FLOOR, PLANE_MULTIPLE, DREAMConfig, count_parameters
from .masks import (
    block_masks,
    crop_plane,
    curriculum_stage,
    make_block,
    mask_aware_average,
    normalise_dream,
    pad_plane,
    plane_shape,
    random_block_masks,
    random_crop,
)
from .model import DREAM
from .networks import latent_reverse, latent_schedule
from .training import _blocks, _Clock, train_dream  # noqa: F401 (the private helpers: tests import them)

__all__ = [
    "DREAMConfig", "DREAM", "train_dream", "random_block_masks", "block_masks", "make_block",
    "mask_aware_average", "curriculum_stage", "random_crop", "latent_schedule", "latent_reverse",
    "plane_shape", "pad_plane", "crop_plane", "normalise_dream", "count_parameters", "DREAM_SCALE_FLOOR",
    "PLANE_MULTIPLE",
]

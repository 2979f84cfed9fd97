"""Learned 2D priors on fully 3D ring data: plane-wise restoration and rebinned conditional sampling.

None of the seed papers reconstructs a 3D scan; this module carries the 2D networks to one, with
the data consistency done by the 3D :class:`~pettk.physics.ForwardModel` (oblique planes,
attenuation, normalisation, PSF, randoms and scatter):

* **Sinogram restorers** (RED, DREAM) see every 2D plane of the 3D sinogram, direct and oblique,
  as one of their training sinograms (same views and radial bins as the scanner's direct plane);
  :func:`restore_planes` runs them over the planes in memory-bounded batches and
  :func:`reconstruct_restored` then reconstructs the restored 3D data with 3D OSEM.
* **Rebinned conditional sampling** (LegoPET, :func:`rebinned_volume`): the 3D sinogram is
  rebinned to direct-plane sinograms by SSRB (:mod:`pettk.rebinning`), each rebinned slice is
  sampled by the 2D conditional model, the slices are interpolated onto the image grid, scaled to
  the measured counts and refined by penalised EM against the full 3D data, anchored to the
  sampled volume (:func:`~pettk.diffusion.posterior.penalised_em_step`).

The image priors (DDIP, PET-DDS) take a 3D forward model directly (their network runs on the
axial slices inside the 3D iteration; see their ``reconstruct``).
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from .._validation import as_nonnegative_float, as_nonnegative_int, as_positive_int
from ..diffusion.samplers import make_generator
from ..geometry import ImageGrid, SinogramLayout, SinogramLayout2D
from ..physics import ForwardModel
from ..projector import Projector
from ..rebinning import ssrb, ssrb_positions_mm
from ..recon import bsrem, osem
from ..recon.filters import post_filter
from ..recon.priors import Prior
from .base import SinogramRestorer

__all__ = ["restore_planes", "reconstruct_restored", "rebinned_volume", "axial_interpolation", "planes_per_batch",
           "plane_pairs"]

#: Planes per network batch on the CPU (the CPU is bound by arithmetic, not memory).
CPU_PLANES_PER_BATCH = 16
#: Largest ring difference of the planes in :func:`rebinned_volume`'s SSRB stack (None: every plane).
#: Chosen on the two validation volumes of the 3D acceptance case (16 rings, DRF 20,
#: ``legopet-drf20-128``, 10 refinement iterations; ``docs/priors_3d.md``): brain PSNR with ring
#: differences up to 2 / 3 / 5 / 15 (every plane) 15.12 / 15.22 / 15.14 / 14.81 dB on one, up to
#: 3 / 15: 17.01 / 15.31 dB on the other.
SSRB_MAX_RING_DIFFERENCE = 3


def planes_per_batch(n_planes: int, device, batch_size: int | None = None, *, plane_bytes: int | None = None) -> int:
    """Planes per network call: ``batch_size`` when given; on CUDA, as many as fit in half the free
    memory at ``plane_bytes`` each (a measured or estimated activation footprint per plane); on the
    CPU :data:`CPU_PLANES_PER_BATCH`. Always in ``[1, n_planes]``."""
    if batch_size is not None:
        return min(as_positive_int("batch_size", batch_size), max(1, n_planes))
    device = torch.device(device)
    if device.type == "cuda" and plane_bytes:
        free, _ = torch.cuda.mem_get_info(device)
        return int(min(max(1, n_planes), max(1, (free // 2) // int(plane_bytes))))
    return min(CPU_PLANES_PER_BATCH, max(1, n_planes))


def _counts_tensor(name: str, y) -> tuple[torch.Tensor, bool]:
    if not isinstance(y, (np.ndarray, torch.Tensor)):
        raise TypeError(f"{name} must be a numpy array or a torch tensor, got {type(y).__name__}")
    is_numpy = isinstance(y, np.ndarray)
    return (torch.from_numpy(np.ascontiguousarray(y)) if is_numpy else y), is_numpy


def plane_pairs(y_low, y_full, drf: float, normalisation: str):
    """Training pairs for a plane-wise restorer from 3D scans: every plane of every scan.

    Parameters
    ----------
    y_low, y_full : sequences of arrays/tensors ``(n_planes, n_views, n_radial)`` (or stacked)
        Raw low-dose counts and full-dose counts of the same scans.
    drf : float
        The dose-reduction factor of ``y_low``.
    normalisation : {"red", "dream"}
        The restorer's (:func:`pettk.sim.datasets.normalise_sinogram_pair`, as a 2D data set's).

    Returns
    -------
    A map-style dataset of ``{"low", "full"}`` ``(n_views, n_radial)`` items for
    :func:`~pettk.priors.red.train_red` / :func:`~pettk.priors.dream.train_dream`.
    """
    from ..sim.datasets import normalise_sinogram_pair
    from ._data import TensorPairs

    drf = as_nonnegative_float("drf", drf)
    low = torch.cat([torch.as_tensor(a).reshape(-1, *a.shape[-2:]) for a in y_low]).to(torch.float32) * drf
    full = torch.cat([torch.as_tensor(a).reshape(-1, *a.shape[-2:]) for a in y_full]).to(torch.float32)
    if low.shape != full.shape or low.shape[0] == 0:
        raise ValueError(f"y_low and y_full must hold the same non-empty planes, got {tuple(low.shape)} and "
                         f"{tuple(full.shape)}")
    pairs = [normalise_sinogram_pair(a, b, normalisation)[:2] for a, b in zip(low, full)]
    return TensorPairs(low=torch.stack([p[0] for p in pairs]), full=torch.stack([p[1] for p in pairs]))


def restore_planes(restorer: SinogramRestorer, y_low, drf: float, *, batch_size: int | None = None,
                   progress: bool = False):
    """Restore every 2D plane of a 3D sinogram with a 2D sinogram restorer.

    Parameters
    ----------
    restorer : SinogramRestorer
        RED or DREAM (trained on 2D sinograms ``(n_views, n_radial)`` of the scanner's direct plane).
    y_low : array or tensor ``(..., n_planes, n_views, n_radial)``
        Low-dose counts (raw, >= 0); a single 2D sinogram ``(n_views, n_radial)`` works too.
    drf : float
        Dose-reduction factor of ``y_low`` (the restorer's).
    batch_size : int, optional
        Planes per network call (default :func:`planes_per_batch`). The result does not depend on it
        for deterministic restorers.
    progress : bool
        One bar per volume.

    Returns
    -------
    The restored full-dose counts, ``y_low``'s shape and array type.
    """
    if not isinstance(restorer, SinogramRestorer):
        raise TypeError(f"restorer must be a pettk SinogramRestorer (RED, DREAM), got {type(restorer).__name__}")
    y, is_numpy = _counts_tensor("y_low", y_low)
    if y.ndim < 2:
        raise ValueError(f"y_low must be sinogram planes (..., n_views, n_radial), got shape {tuple(y.shape)}")
    flat = y.reshape((-1,) + tuple(y.shape[-2:]))
    first = restorer.restore(flat[:1], drf)            # checks shape, DRF and values before the long run
    n = flat.shape[0]
    step = planes_per_batch(n, y.device, batch_size)
    out = torch.empty(flat.shape, dtype=first.dtype, device=first.device)
    out[:1] = first
    starts = range(1, n, step)
    for start in tqdm(starts, desc="restoring planes", disable=not progress or len(starts) < 2, leave=False):
        out[start:start + step] = restorer.restore(flat[start:start + step], drf)
    out = out.reshape(y.shape)
    return out.cpu().numpy() if is_numpy else out


def reconstruct_restored(restorer: SinogramRestorer, forward_model: ForwardModel, y_low, drf: float, *,
                         iterations: int = 2, subsets: int = 8, post_filter_mm: float = 0.0, map_prior=None,
                         beta: float = 0.0, batch_size: int | None = None, progress: bool = False):
    """Restore every plane of a low-dose sinogram (2D or 3D), then reconstruct it with OSEM or BSREM.

    Parameters
    ----------
    restorer : SinogramRestorer
    forward_model : ForwardModel
        The **full-dose** model of the scan (the restored data estimate full-dose counts), any
        geometry whose sinogram ends in ``(n_views, n_radial)`` planes.
    y_low : array or tensor ``forward_model.shape_out``
    drf : float
    iterations, subsets : int
        OSEM (or with ``map_prior``, BSREM epochs) of the restored data (tune them on validation
        volumes: a restored sinogram is far less noisy than the raw one).
    post_filter_mm : float
        Gaussian FWHM after the reconstruction (0: none).
    map_prior, beta : optional
        A :mod:`pettk.recon` prior (e.g. ``pettk.recon.rdp(grid)``) and its strength: BSREM
        (:func:`pettk.recon.bsrem`, from a uniform image) maximises the Poisson likelihood of the
        restored counts minus ``beta * drf * R(x)`` with the full-dose model. That is the optimum of
        the restored data scaled to the low dose (``y_hat / drf``) with the low-dose model and
        ``beta``, so ``beta`` has the scale of a BSREM of the raw low-dose counts (a restored
        sinogram is smoother than Poisson data, so tune it separately; ``beta`` 0: the likelihood
        alone).

    Returns
    -------
    The activity volume ``forward_model.shape_in`` (a tensor; numpy when ``y_low`` is numpy).
    """
    if not isinstance(forward_model, ForwardModel):
        raise TypeError(f"forward_model must be a pettk ForwardModel, got {type(forward_model).__name__}")
    y, is_numpy = _counts_tensor("y_low", y_low)
    if tuple(y.shape) != tuple(forward_model.shape_out):
        raise ValueError(f"y_low must have the forward model's shape {tuple(forward_model.shape_out)}, "
                         f"got {tuple(y.shape)}")
    fwhm = as_nonnegative_float("post_filter_mm", post_filter_mm)
    beta = as_nonnegative_float("beta", beta)
    if map_prior is not None and not isinstance(map_prior, Prior):
        raise TypeError(f"map_prior must be a pettk.recon prior (quadratic, rdp, tv) or None, got "
                        f"{type(map_prior).__name__}")
    if map_prior is None and beta > 0:
        raise ValueError(f"beta {beta:g} needs a prior (e.g. pettk.recon.rdp(grid)); without one the "
                         "restored data are reconstructed with OSEM")
    y_hat = restore_planes(restorer, y, drf, batch_size=batch_size, progress=progress).clamp_min(0)
    if map_prior is None:
        x = osem(forward_model, y_hat, iterations, subsets)
    else:
        x = bsrem(forward_model, y_hat, map_prior, beta * float(drf), iterations, subsets)
    if fwhm > 0:
        x = post_filter(x, forward_model.projector.grid, fwhm)
    return x.cpu().numpy() if is_numpy else x


def axial_interpolation(slices: torch.Tensor, positions_mm, grid: ImageGrid) -> torch.Tensor:
    """Linear interpolation of a stack ``(n, nx, ny)`` at axial ``positions_mm`` (increasing) onto
    the slice centres of the 3D ``grid``: ``(nx, ny, nz)``; constant beyond the end slices."""
    z_src = torch.as_tensor(np.asarray(positions_mm, dtype=np.float64))
    if slices.ndim != 3 or slices.shape[0] != z_src.numel():
        raise ValueError(f"slices must be (n, nx, ny) with one position per slice, got {tuple(slices.shape)} "
                         f"and {z_src.numel()} positions")
    if z_src.numel() > 1 and not bool((z_src[1:] > z_src[:-1]).all()):
        raise ValueError("positions_mm must be strictly increasing")
    z = torch.as_tensor(grid.voxel_centres(2), dtype=torch.float64)
    z = z.clamp(float(z_src[0]), float(z_src[-1]))
    hi = torch.searchsorted(z_src, z).clamp(1, max(1, z_src.numel() - 1))
    lo = hi - 1
    if z_src.numel() == 1:
        return slices[0].unsqueeze(-1).expand(*slices.shape[1:], z.numel()).clone()
    w = ((z - z_src[lo]) / (z_src[hi] - z_src[lo])).to(slices.dtype).to(slices.device)
    vol = slices[lo] * (1 - w).reshape(-1, 1, 1) + slices[hi] * w.reshape(-1, 1, 1)
    return vol.permute(1, 2, 0).contiguous()


def rebinned_volume(prior, forward_model: ForwardModel, y, *, refine_iterations: int = 10,
                    refine_weight: float = 0.0, ssrb_max_ring_difference: int | None = SSRB_MAX_RING_DIFFERENCE,
                    batch_size: int | None = None, generator=None, progress: bool = False, **sample_kwargs):
    """A sinogram-conditioned 2D prior (LegoPET) on a 3D ring scan: SSRB, 2D sampling, 3D refinement.

    1. The 3D counts are rebinned by SSRB into ``2 R - 1`` direct-plane sinograms, each the sum of
       its planes with ring difference ``<= ssrb_max_ring_difference`` (:func:`pettk.rebinning.ssrb`;
       SSRB blurs axially in proportion to the ring difference, so the stack that conditions the
       sampler takes the near-direct planes only; the refinement uses every plane).
    2. Each rebinned sinogram is sampled by ``prior.reconstruct`` with a 2D model of the direct
       plane (its own data-consistency steps off: the slices have no 2D physics model of their own),
       in batches of ``batch_size`` (each batch one call of the sampler, drawing on from one
       generator for the volume: the same ``generator`` / seed repeats the volume for the same
       batches; other batches are other independent draws). A prior with ``sinogram_input =
       "precorrected"`` gets the SSRB sums of the 3D model's ``mult`` and ``additive`` as each
       slice's precorrection factors, so that it precorrects the rebinned counts to the planes'
       mult-weighted mean line integral.
    3. The slices are interpolated linearly onto the grid's slice centres and scaled so the volume's
       expected counts match the measured ones (``sum(y - additive) / sum(A x)``).
    4. ``refine_iterations`` penalised-EM iterations against the full 3D data, anchored to the
       scaled volume with weight ``refine_weight`` (dimensionless, as PET-DDS's ``beta``: the
       anchor's curvature relative to the likelihood's is ``refine_weight`` at the volume's mean
       activity; 0, the default: plain EM started from the sampled volume); ``refine_iterations =
       0`` returns the scaled volume. The defaults were chosen on the 3D acceptance case's two
       validation volumes (``legopet-drf20-128``, ``docs/priors_3d.md``): brain PSNR after 10
       iterations with weight 0 / 0.1 / 1 was 18.73 / 17.59 / 17.01 dB on one; with weight 0,
       2 / 4 / 10 / 15 / 20 / 30 iterations gave 17.99 / 18.38 / 18.73 / 18.59 / 18.26 / 17.32 dB
       on it and 15.91 / 16.25 / 16.54 / 16.33 / 15.91 / 14.81 dB on the other (the sampled volume
       alone: 16.89 and 15.14 dB).

    Parameters
    ----------
    prior : LegoPET (or any model with its ``reconstruct(forward_model_2d, y_batch, dc_iterations=0,
        ...)`` and ``image_shape`` / ``sinogram_shape``)
    forward_model : ForwardModel
        The 3D model of ``y``'s count level (e.g. ``mult / DRF`` for low-dose data) on a
        :class:`~pettk.geometry.SinogramLayout`; the grid's transaxial shape must be the prior's.
    y : array or tensor ``forward_model.shape_out``
        Counts.
    refine_iterations, refine_weight : step 4.
    ssrb_max_ring_difference : int >= 1 or None
        The planes of the sampler's SSRB stack (step 1; ``None``: every plane). Default
        :data:`SSRB_MAX_RING_DIFFERENCE`.
    sample_kwargs : passed to ``prior.reconstruct`` (e.g. ``steps``, ``n_samples``).

    Returns
    -------
    The activity volume ``forward_model.shape_in`` (numpy when ``y`` is numpy).
    """
    from ..diffusion.posterior import penalised_em_step

    if not isinstance(forward_model, ForwardModel):
        raise TypeError(f"forward_model must be a pettk ForwardModel, got {type(forward_model).__name__}")
    layout, grid = forward_model.projector.geometry, forward_model.projector.grid
    if not isinstance(layout, SinogramLayout) or grid.ndim != 3:
        raise ValueError("rebinned_volume needs a 3D ring sinogram (a SinogramLayout) and a 3D image grid, got "
                         f"{type(layout).__name__} and a {grid.ndim}D grid")
    if tuple(grid.shape[:2]) != tuple(prior.image_shape):
        raise ValueError(f"the grid's transaxial shape {tuple(grid.shape[:2])} is not the prior's image shape "
                         f"{tuple(prior.image_shape)} (a 2D model on a mismatched grid)")
    if tuple(layout.shape[1:]) != tuple(prior.sinogram_shape):
        raise ValueError(f"the sinogram planes {tuple(layout.shape[1:])} are not the prior's sinogram shape "
                         f"{tuple(prior.sinogram_shape)} (a sinogram of another layout)")
    iterations = as_nonnegative_int("refine_iterations", refine_iterations)
    weight = as_nonnegative_float("refine_weight", refine_weight)
    y_t, is_numpy = _counts_tensor("y", y)
    if tuple(y_t.shape) != tuple(forward_model.shape_out):
        raise ValueError(f"y must have the forward model's shape {tuple(forward_model.shape_out)}, got "
                         f"{tuple(y_t.shape)}")
    y_t = y_t.to(torch.float32)
    if not bool(torch.isfinite(y_t).all()) or bool((y_t < 0).any()):
        raise ValueError("y must hold finite counts >= 0")

    grid_2d = ImageGrid(tuple(grid.shape[:2]), tuple(grid.voxel_size_mm[:2]))
    projector_2d = Projector(grid_2d, SinogramLayout2D(layout.scanner, layout.radial_trim))
    stack = ssrb(layout, y_t, ssrb_max_ring_difference)
    factors = None
    if getattr(getattr(prior, "config", None), "sinogram_input", "prompts") == "precorrected":
        # per-slice factors: the SSRB sums of the 3D model's mult and additive, so each slice is
        # precorrected to (sum y - sum additive) / sum mult, the mean line integral of its planes
        mult = torch.ones_like(y_t) if forward_model.mult is None else torch.as_tensor(forward_model.mult).to(y_t)
        add_stack = None
        if forward_model.additive is not None:
            add_stack = ssrb(layout, torch.as_tensor(forward_model.additive).to(y_t), ssrb_max_ring_difference)
        factors = (ssrb(layout, mult, ssrb_max_ring_difference), add_stack)
    model_2d = ForwardModel(projector_2d)
    step = planes_per_batch(stack.shape[0], y_t.device, batch_size)
    # one generator for the volume: each batch draws on from it (an int seed per call would give
    # every batch the same noise)
    seed = getattr(getattr(prior, "config", None), "seed", 0) if generator is None else generator
    generator = make_generator(seed, y_t.device)
    slices = []
    starts = range(0, stack.shape[0], step)
    for start in tqdm(starts, desc="sampling slices", disable=not progress or len(starts) < 2, leave=False):
        part = slice(start, start + step)
        per_slice = {} if factors is None else {"precorrection": tuple(None if f is None else f[part] for f in factors)}
        slices.append(torch.as_tensor(prior.reconstruct(model_2d, stack[part], dc_iterations=0, generator=generator,
                                                        **per_slice, **sample_kwargs)))
    volume = axial_interpolation(torch.cat(slices).to(torch.float32).clamp_min(0), ssrb_positions_mm(layout), grid)

    with torch.no_grad():
        signal = float(forward_model.linear(volume).sum())
        background = 0.0 if forward_model.additive is None else float(torch.as_tensor(forward_model.additive).sum())
        net = max(float(y_t.sum()) - background, 0.0)
        scale = net / signal if signal > 0 else 0.0
        anchor = volume * scale
        x = anchor.clone()
        if iterations:
            sens = forward_model.sensitivity(torch.float32, y_t.device)
            mean_anchor = float(anchor.mean())
            beta = weight * float(sens.mean()) / mean_anchor if mean_anchor > 0 else 0.0
            for _ in tqdm(range(iterations), desc="3D refinement", disable=not progress, leave=False):
                x = penalised_em_step(forward_model, y_t, x.clamp_min(1e-8 * max(mean_anchor, 1e-30)), anchor, beta,
                                      sens=sens)
    return x.cpu().numpy() if is_numpy else x

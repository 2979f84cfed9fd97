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

Limitations: the prior is 2D (3D by slices; no inter-slice prior, Singh et al.'s 3D variants add
one); the model's image size is checked but not its voxel size; the prior can only represent
what its training data held (out-of-distribution lesions are restored by the data term alone).
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .._validation import as_nonnegative_int, as_positive_int
from ..diffusion.guidance import CFGModel, null_like
from ..diffusion.image_model import _unet_from, build_schedule, load_image_diffusion
from ..diffusion.posterior import dds_sample, penalised_em_step
from ..diffusion.samplers import randn
from ..diffusion.schedules import NoiseSchedule
from ..io.checkpoint import load_checkpoint, save_checkpoint
from ..physics import ForwardModel
from ..recon import osem
from ..recon._common import SENSITIVITY_FLOOR
from .base import ImagePrior, check_prior_inputs

__all__ = ["PETDDSConfig", "PETDDS", "ConditionDropout", "activity_level", "reference_statistics",
           "SCALE_MODES", "BETA_SCHEDULES"]

SCALE_MODES = ("counts", "fixed")
BETA_SCHEDULES = ("constant", "snr")
#: Image-model normalisations whose images are on a [0, 1]-like activity scale (``activity = s * x``).
_UNIT_NORMALISATIONS = ("ddip", "none")


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PETDDSConfig:
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

    steps: int = 25
    start_t: int | None = None
    em_iterations: int = 2
    subsets: int = 1
    beta: float = 0.01
    beta_schedule: str = "constant"
    eta: float = 0.85
    guidance: float = 1.0
    clip_max: float | None = 2.0
    scale_mode: str = "counts"
    reference_mean: float | None = None
    image_scale: float | None = None
    image_size: tuple | None = None
    mask_threshold: float = 0.2
    init_iterations: int = 2
    init_subsets: int = 8
    samples: int = 1
    seed: int = 0

    def validate(self) -> PETDDSConfig:
        """Check every field; returns ``self`` (raises ``TypeError``/``ValueError``)."""
        for name in ("steps", "em_iterations", "subsets", "init_iterations", "init_subsets", "samples"):
            as_positive_int(name, getattr(self, name))
        as_nonnegative_int("seed", self.seed)
        if self.start_t is not None:
            as_nonnegative_int("start_t", self.start_t)
        _real("beta", self.beta)
        _real("guidance", self.guidance)
        _real("eta", self.eta)
        if not float(self.eta) <= 1.0:
            raise ValueError(f"eta must be in [0, 1], got {self.eta!r}")
        for name in ("clip_max", "reference_mean", "image_scale"):
            if getattr(self, name) is not None:
                _real(name, getattr(self, name), positive=True)
        _real("mask_threshold", self.mask_threshold)
        if not 0.0 < float(self.mask_threshold) < 1.0:
            raise ValueError(f"mask_threshold must be in (0, 1), got {self.mask_threshold!r}")
        if self.beta_schedule not in BETA_SCHEDULES:
            raise ValueError(f"beta_schedule must be one of {BETA_SCHEDULES}, got {self.beta_schedule!r}")
        if self.scale_mode not in SCALE_MODES:
            raise ValueError(f"scale_mode must be one of {SCALE_MODES}, got {self.scale_mode!r}")
        if self.image_size is not None:
            size = tuple(self.image_size)
            if len(size) != 2 or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) and v > 0
                                         for v in size):
                raise ValueError(f"image_size must be a pair of positive ints (H, W), got {self.image_size!r}")
            if size != self.image_size:
                object.__setattr__(self, "image_size", tuple(int(v) for v in size))
        return self

    def replace(self, **changes) -> PETDDSConfig:
        """A validated copy with some fields changed."""
        return dataclasses.replace(self, **changes).validate()

    def to_dict(self) -> dict:
        """A JSON-compatible dict."""
        d = dataclasses.asdict(self)
        if d["image_size"] is not None:
            d["image_size"] = list(d["image_size"])
        return d

    @classmethod
    def from_dict(cls, d: dict) -> PETDDSConfig:
        """Inverse of :meth:`to_dict`; missing fields take their defaults, unknown ones are refused."""
        if not isinstance(d, dict):
            raise TypeError(f"a PETDDSConfig dict is required, got {type(d).__name__}")
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown PETDDSConfig fields {sorted(unknown)}")
        d = dict(d)
        if d.get("image_size") is not None:
            d["image_size"] = tuple(d["image_size"])
        return cls(**d).validate()


def _real(name, value, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise TypeError(f"{name} must be a finite number, got {value!r}")
    if (positive and not value > 0) or value < 0:
        raise ValueError(f"{name} must be {'> 0' if positive else '>= 0'}, got {value!r}")
    return float(value)


# --------------------------------------------------------------------------------------------
# Intensity level and the training data's reference
# --------------------------------------------------------------------------------------------
def activity_level(image, mask_threshold: float = 0.2) -> float:
    """The "head mean" of an image or volume: its mean over ``{x > mask_threshold * q99(x)}``.

    ``q99`` is the 99th percentile of all voxels. Returns 0.0 for an image with no positive voxel.
    """
    x = torch.as_tensor(np.asarray(image) if isinstance(image, np.ndarray) else image).detach()
    flat = x.reshape(-1).to(torch.float64).cpu()
    if flat.numel() == 0:
        raise ValueError("activity_level of an empty image")
    k = max(1, int(math.ceil(0.99 * flat.numel())))
    q = float(torch.kthvalue(flat, k).values)
    if not q > 0:
        q = float(flat.max())
        if not q > 0:
            return 0.0
    mask = flat > mask_threshold * q
    return float(flat[mask].mean()) if bool(mask.any()) else 0.0


def _levels(images: torch.Tensor, mask_threshold: float) -> torch.Tensor:
    """Per-slice :func:`activity_level` of ``(N, H, W)`` images."""
    flat = images.reshape(images.shape[0], -1).to(torch.float64)
    q = torch.quantile(flat, 0.99, dim=1, keepdim=True)
    mask = (flat > mask_threshold * q) & (q > 0)
    counts = mask.sum(dim=1)
    inside = torch.where(mask, flat, torch.zeros_like(flat)).sum(dim=1) / counts.clamp_min(1)
    return inside[counts > 0]


def reference_statistics(source, normalisation: str = "ddip", mask_threshold: float = 0.2,
                         split: str = "train", max_slices: int = 4000) -> dict:
    """The training images' intensity reference for :attr:`PETDDSConfig.reference_mean`.

    Parameters
    ----------
    source : path or array
        A data set folder built by :func:`pettk.sim.build_dataset` (its ``split`` subjects'
        ``truth`` images, normalised as the image model was: ``"ddip"`` divides by the
        manifest's ``train_image_max``, ``"none"`` keeps the activity), or the normalised training
        images themselves, ``(N, H, W)``.
    normalisation : {"ddip", "none"}
        The image model's ``config["data"]["normalisation"]`` (data set folders only).
    mask_threshold : float
    split : str
    max_slices : int
        At most this many slices (evenly spaced) are measured.

    Returns
    -------
    dict with ``reference_mean`` (median per-slice :func:`activity_level`), ``image_scale``
    (activity of a unit normalised image, ``None`` for arrays), ``image_size`` ``(H, W)`` and
    ``n_slices`` (slices measured).
    """
    if normalisation not in _UNIT_NORMALISATIONS:
        raise ValueError(f"PET-DDS supports image models trained with normalisation in {_UNIT_NORMALISATIONS} "
                         f"(activity = scale * image), got {normalisation!r}")
    if isinstance(source, (str, Path)):
        root = Path(source)
        manifest_path = root / "manifest.json"
        if not manifest_path.is_file():
            raise FileNotFoundError(f"no pettk data set at {root} (missing manifest.json)")
        manifest = json.loads(manifest_path.read_text())
        subjects = [s for s in manifest["subjects"] if s["split"] == split]
        if not subjects:
            raise ValueError(f"the {split!r} split of {root} has no subjects")
        scale = float(manifest["train_image_max"]) if normalisation == "ddip" else 1.0
        total = sum(int(s["n_slices"]) for s in subjects)
        step = max(1, total // max_slices)
        chunks, k = [], 0
        for s in subjects:
            arr = np.load(root / s["name"] / "truth.npy", mmap_mode="r")
            idx = [i for i in range(arr.shape[0]) if (k + i) % step == 0]
            k += arr.shape[0]
            if idx:
                chunks.append(torch.from_numpy(np.asarray(arr[idx], dtype=np.float32)) / scale)
        image_scale = scale
    else:
        images = torch.as_tensor(np.asarray(source, dtype=np.float32))
        if images.ndim != 3 or images.shape[0] == 0:
            raise ValueError(f"training images must have shape (N, H, W) with N >= 1, got {tuple(images.shape)}")
        chunks = list(torch.split(images, 64))
        image_scale = None
    levels, n = [], 0
    for images in chunks:                     # a slice set at a time: torch.quantile's input is limited
        if images.ndim != 3:
            raise ValueError(f"training images must have shape (N, H, W), got {tuple(images.shape)}")
        if not bool(torch.isfinite(images).all()) or bool((images < 0).any()):
            raise ValueError("training images must be finite and >= 0")
        levels.append(_levels(images, mask_threshold))
        n += images.shape[0]
    levels = torch.cat(levels)
    if levels.numel() == 0:
        raise ValueError("the training images are all zero")
    return {"reference_mean": float(levels.median()), "image_scale": image_scale,
            "image_size": (int(images.shape[1]), int(images.shape[2])), "n_slices": n}


# --------------------------------------------------------------------------------------------
# Training helper: condition dropout for classifier-free MR guidance
# --------------------------------------------------------------------------------------------
class ConditionDropout(torch.utils.data.Dataset):
    """Wraps a dataset of ``{"x", "cond"}`` items: each item's ``cond`` becomes zeros with probability ``p``.

    Train an MR-conditioned image model with it (``train_image_diffusion(config, out,
    dataset=ConditionDropout(FieldDataset(slices, "truth", "mr"), 0.1))``) so that the same
    network also predicts unconditionally (the null condition is zeros, as in
    :class:`~pettk.diffusion.guidance.CFGModel`) and PET-DDS can use ``guidance != 1``. The draws
    come from one generator seeded with ``seed``, in the order the items are read.
    """

    def __init__(self, dataset, p: float = 0.1, seed: int = 0):
        if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0.0 <= float(p) <= 1.0:
            raise ValueError(f"p (drop probability) must be a number in [0, 1], got {p!r}")
        self.dataset = dataset
        self.p = float(p)
        self.generator = torch.Generator().manual_seed(as_nonnegative_int("seed", seed))

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, idx: int) -> dict:
        item = dict(self.dataset[idx])
        if "cond" not in item:
            raise KeyError("ConditionDropout needs items with a 'cond' entry (a conditional dataset)")
        if float(torch.rand((), generator=self.generator)) < self.p:
            item["cond"] = torch.zeros_like(item["cond"])
        return item


# --------------------------------------------------------------------------------------------
# The prior
# --------------------------------------------------------------------------------------------
class PETDDS(ImagePrior):
    """PET-DDS (Singh et al. 2024) with a pretrained image diffusion model.

    Parameters
    ----------
    net : UNet
        The image model (``model(x_t, t[, cond])`` predicting ``config["prediction"]``), never modified.
    schedule : NoiseSchedule
        Its noise schedule (must equal ``diffusion_config["schedule"]``'s).
    diffusion_config : dict
        The image model's configuration as written by ``pettk train diffusion``
        (:mod:`pettk.diffusion.image_model`): ``unet``, ``schedule``, ``prediction`` and ``data``
        (``normalisation``, ``cond_field``, ``root``).
    config : PETDDSConfig, optional
        Reconstruction settings. Missing ``reference_mean``, ``image_scale`` and ``image_size``
        are measured from ``dataset`` (or the image model's training data set,
        ``diffusion_config["data"]["root"]``, when it exists) with :func:`reference_statistics`.
    dataset : path or array, optional
        The training data set folder, or the normalised training images ``(N, H, W)``.

    Attributes
    ----------
    last_info : dict
        Of the last :meth:`reconstruct`: ``init`` (the initial OSEM image), ``scale`` (activity of
        a unit normalised value), ``scale_mode``, ``level`` (the init's :func:`activity_level`),
        ``beta_abs`` and ``seeds``.
    """

    def __init__(self, net, schedule: NoiseSchedule, diffusion_config: dict, config: PETDDSConfig | None = None,
                 *, dataset=None):
        if not isinstance(net, torch.nn.Module):
            raise TypeError(f"net must be a torch module (a pettk UNet), got {type(net).__name__}")
        if not isinstance(schedule, NoiseSchedule):
            raise TypeError(f"schedule must be a NoiseSchedule, got {type(schedule).__name__}")
        if not isinstance(diffusion_config, dict) or not {"unet", "schedule", "prediction"} <= set(diffusion_config):
            raise ValueError("diffusion_config must be the image model's configuration dict (with 'unet', "
                             "'schedule', 'prediction' and 'data'), as written by `pettk train diffusion`")
        config = (config or PETDDSConfig())
        if not isinstance(config, PETDDSConfig):
            raise TypeError(f"config must be a PETDDSConfig, got {type(config).__name__}")
        config = config.validate()
        data = dict(diffusion_config.get("data") or {})
        self.normalisation = data.get("normalisation", "ddip")
        if self.normalisation not in _UNIT_NORMALISATIONS:
            raise ValueError(f"PET-DDS needs an image model on an activity-proportional scale (normalisation in "
                             f"{_UNIT_NORMALISATIONS}), got {self.normalisation!r}")
        self.prediction = diffusion_config["prediction"]
        if self.prediction not in ("eps", "x0", "v"):
            raise ValueError(f"prediction must be 'eps', 'x0' or 'v', got {self.prediction!r}")
        cond_field = data.get("cond_field")
        self.conditional = int(getattr(net, "cond_channels", 0) or 0) > 0
        if self.conditional and cond_field != "mr":
            raise ValueError(f"a conditional image model must be conditioned on the MR (cond_field='mr'), got "
                             f"cond_field={cond_field!r}")
        reference = build_schedule(diffusion_config["schedule"])
        if reference.num_steps != schedule.num_steps or not torch.allclose(
                reference.alphas_cumprod.cpu().double(), schedule.alphas_cumprod.cpu().double(), rtol=1e-5, atol=1e-7):
            raise ValueError("schedule does not match diffusion_config['schedule']")
        self.net = net.eval()
        for p in self.net.parameters():
            p.requires_grad_(False)
        self.schedule = schedule
        self.diffusion_config = json.loads(json.dumps(diffusion_config))
        # the training data's reference, when the configuration lacks it
        if config.reference_mean is None or config.image_size is None or (
                config.image_scale is None and self.normalisation == "ddip"):
            source = dataset
            root = data.get("root")
            if source is None and root and (Path(root) / "manifest.json").is_file():
                source = root
            if source is not None:
                stats = reference_statistics(source, self.normalisation, config.mask_threshold,
                                             data.get("split") or "train")
                changes = {k: stats[k] for k in ("reference_mean", "image_scale", "image_size")
                           if getattr(config, k) is None and stats[k] is not None}
                config = config.replace(**changes)
        if self.normalisation == "none" and config.image_scale is None:
            config = config.replace(image_scale=1.0)
        self.config = self._check_config(config)
        self.last_info: dict = {}

    def _check_config(self, config: PETDDSConfig) -> PETDDSConfig:
        if config.scale_mode == "counts" and config.reference_mean is None:
            raise ValueError("scale_mode='counts' needs config.reference_mean: give dataset= (the training data set "
                             "folder or images) or set reference_mean (see pettk.priors.petdds.reference_statistics)")
        if config.scale_mode == "fixed" and config.image_scale is None:
            raise ValueError("scale_mode='fixed' needs config.image_scale (the training data's activity of a unit "
                             "image): give dataset= or set image_scale")
        T = self.schedule.num_steps
        start = T - 1 if config.start_t is None else config.start_t
        if not start < T:
            raise ValueError(f"start_t must be < T = {T}, got {config.start_t}")
        if config.steps > start + 1:
            raise ValueError(f"steps must be <= start_t + 1 = {start + 1}, got {config.steps}")
        return config

    # -- construction / persistence ------------------------------------------------------------------
    @classmethod
    def from_image_diffusion(cls, path, config: PETDDSConfig | None = None, *, dataset=None,
                             device="cpu") -> PETDDS:
        """PET-DDS with the image model ``model.safetensors`` written by ``pettk train diffusion``."""
        net, schedule, diffusion_config = load_image_diffusion(path, device=device)
        return cls(net, schedule, diffusion_config, config, dataset=dataset)

    def replace(self, **changes) -> PETDDS:
        """A PET-DDS sharing this network with some settings changed (e.g. ``prior.replace(samples=4)``)."""
        other = PETDDS.__new__(PETDDS)
        other.__dict__.update(self.__dict__)
        other.config = self._check_config(self.config.replace(**changes))
        other.last_info = {}
        return other

    def save(self, path) -> Path:
        """Write ``path`` (``.safetensors``: the network) and ``.json`` (both configurations)."""
        meta = {"method": "PET-DDS", "petdds_config": self.config.to_dict(),
                "diffusion_config": self.diffusion_config}
        return save_checkpoint(path, self.net.state_dict(), meta)

    @classmethod
    def load(cls, path, device="cpu") -> PETDDS:
        """Read a model written by :meth:`save`, or an image model written by ``pettk train diffusion``
        (then the reference statistics come from its training data set, which must exist)."""
        state, meta = load_checkpoint(path, device=device)
        if meta.get("kind") == "image-diffusion":
            return cls.from_image_diffusion(path, device=device)
        if meta.get("method") != "PET-DDS":
            raise ValueError(f"{path} is neither a PET-DDS checkpoint nor an image-diffusion model "
                             f"(method={meta.get('method')!r}, kind={meta.get('kind')!r})")
        diffusion_config = meta["diffusion_config"]
        net = _unet_from(diffusion_config).to(device)
        net.load_state_dict(state)
        config = PETDDSConfig.from_dict(meta["petdds_config"])
        return cls(net, build_schedule(diffusion_config["schedule"]), diffusion_config, config)

    # -- device ------------------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def to(self, device) -> PETDDS:
        self.net.to(device)
        return self

    # -- intensity scale ------------------------------------------------------------------------------------
    def estimate_scale(self, init) -> float:
        """Activity of one normalised unit for the initial image ``init`` (see the module docstring)."""
        cfg = self.config
        if cfg.scale_mode == "fixed":
            return float(cfg.image_scale)
        level = activity_level(init, cfg.mask_threshold)
        if not level > 0:
            raise ValueError("the initial image is zero: the counts are too few to estimate the activity scale; "
                             "use scale_mode='fixed' or pass init")
        return level / float(cfg.reference_mean)

    # -- input checks -----------------------------------------------------------------------------------------
    def _check_inputs(self, forward_model, y, mr, init):
        cfg = self.config
        y_t, images = check_prior_inputs(forward_model, y, {"mr": mr, "init": init},
                                         int(getattr(self.net, "downsample_factor", 1)))
        mr_t, init_t = images["mr"], images["init"]
        shape_in = tuple(forward_model.shape_in)
        if cfg.image_size is not None and tuple(shape_in[:2]) != tuple(cfg.image_size):
            raise ValueError(f"this PET-DDS image model was trained on {cfg.image_size[0]}x{cfg.image_size[1]} "
                             f"images but the forward model's grid is {shape_in[0]}x{shape_in[1]} in-plane; "
                             "reconstruct on the training grid or train a model for this one")
        if cfg.subsets > 1 or cfg.init_subsets > 1:
            proj = forward_model.projector
            axis = getattr(proj.geometry, "view_axis", None)
            views = int(proj.shape_out[axis]) if axis is not None else None
            if views is not None and max(cfg.subsets, cfg.init_subsets) > views:
                raise ValueError(f"subsets ({cfg.subsets}) and init_subsets ({cfg.init_subsets}) must not exceed the "
                                 f"{views} views of the forward model")
        if not float(y_t.sum()) > 0:
            raise ValueError("y holds no counts")
        if self.conditional and cfg.guidance > 0:
            if mr is None:
                raise ValueError("this PET-DDS image model is MR-conditioned: pass mr (the co-registered MR image, "
                                 f"shape {shape_in}) or use guidance=0 (unconditional)")
            if not float(mr_t.max()) > 0:
                raise ValueError("mr is zero everywhere")
        if init_t is not None and not float(init_t.max()) > 0:
            raise ValueError("init is zero everywhere")
        for name, t in (("mult", forward_model.mult), ("additive", forward_model.additive)):
            if t is not None and t.device != y_t.device:
                raise ValueError(f"forward_model's {name} is on {t.device}, y on {y_t.device}; "
                                 "use forward_model.to(...)")
        return y_t, mr_t, init_t

    # -- the guided network ---------------------------------------------------------------------------------
    def _denoiser(self, cond, chunk_size: int):
        net, w = self.net, float(self.config.guidance)
        channels = int(getattr(net, "in_channels", 1))

        def head(out):
            return out[:, :channels] if out.shape[1] != channels else out

        def call(x, t, c):
            if c is None:
                return head(net(x, t))
            if w >= 1.0:
                return head(CFGModel(lambda a, tt, cond: head(net(a, tt, cond)), c, lam=w - 1.0)(x, t))
            null = null_like(c)
            if w == 0.0:
                return head(net(x, t, null))
            both = head(net(torch.cat([x, x]), torch.cat([t, t]), torch.cat([c, null])))
            out_c, out_u = both[:x.shape[0]], both[x.shape[0]:]
            return out_u + w * (out_c - out_u)

        def denoiser(x, t):
            if x.shape[0] <= chunk_size:
                return call(x, t, cond)
            return torch.cat([call(x[k:k + chunk_size], t[k:k + chunk_size],
                                   None if cond is None else cond[k:k + chunk_size])
                              for k in range(0, x.shape[0], chunk_size)])

        return denoiser

    # -- reconstruction ----------------------------------------------------------------------------------------
    def reconstruct(self, forward_model: ForwardModel, y, *, mr=None, init=None, seed: int | None = None,
                    samples: int | None = None, progress: bool = False, callback=None, chunk_size: int = 64):
        """Reconstruct an activity image with PET-DDS.

        Parameters
        ----------
        forward_model : ForwardModel
            ``ybar = mult * P(psf(x)) + additive`` of the measured counts (all of it is used by the
            EM steps); 2D (``shape_in = (nx, ny)``, the model's image size) or 3D
            (``(nx, ny, nz)``: axial slices through the 2D prior, data consistency on the volume).
        y : array or tensor ``forward_model.shape_out``
            Measured counts (>= 0, finite, not all zero).
        mr : array or tensor ``forward_model.shape_in``, optional
            The co-registered MR image (any scale; each slice is divided by its maximum). Required
            by an MR-conditioned model unless ``guidance = 0``; ignored by an unconditional one.
        init : array or tensor ``forward_model.shape_in``, optional
            The initial image (activity) for the scale estimate and an SDEdit start; default OSEM
            with ``config.init_iterations`` x ``config.init_subsets``.
        seed : int, optional
            Default ``config.seed``; sample ``k`` draws all its noise from ``seed + k``: the same
            seed gives the same image.
        samples : int, optional
            Runs averaged (default ``config.samples``).
        progress : bool
            A tqdm bar over the diffusion steps (of each sample).
        callback : callable ``(i, t, x0_hat, x0_dc)``, optional
            After every step of every sample, with Tweedie's estimate and its data-consistent
            update, both activity images of ``shape_in``.
        chunk_size : int
            Slices per network call (3D).

        Returns
        -------
        The activity image (>= 0), ``forward_model.shape_in``, float32 in ``y``'s array type
        (a torch result lives on ``y``'s device).
        """
        cfg = self.config
        y_t, mr_t, init_t = self._check_inputs(forward_model, y, mr, init)
        seed = cfg.seed if seed is None else as_nonnegative_int("seed", seed)
        samples = cfg.samples if samples is None else as_positive_int("samples", samples)
        chunk_size = as_positive_int("chunk_size", chunk_size)
        if callback is not None and not callable(callback):
            raise TypeError("callback must be callable")
        is_numpy = isinstance(y, np.ndarray)
        device = y_t.device
        if self.device != device:
            self.to(device)
        model = forward_model
        shape_in = tuple(model.shape_in)
        three_d = len(shape_in) == 3
        n_z = shape_in[2] if three_d else 1
        batch_shape = (n_z, 1) + shape_in[:2]

        # 1. initial image and scale -------------------------------------------------------------
        if init_t is None:
            init_t = osem(model, y_t, cfg.init_iterations, cfg.init_subsets).to(torch.float32)
        level = activity_level(init_t, cfg.mask_threshold)
        scale = self.estimate_scale(init_t)

        def to_volume(x):                    # (nz, 1, H, W) normalised -> activity shape_in
            v = x[:, 0] * scale
            return v.permute(1, 2, 0) if three_d else v[0]

        def to_batch(v):                     # activity shape_in -> (nz, 1, H, W) normalised
            b = v.permute(2, 0, 1) if three_d else v[None]
            return (b / scale)[:, None]

        cond = None
        if self.conditional:
            if mr_t is None or cfg.guidance == 0:      # the null condition only
                cond = torch.zeros(batch_shape, device=device)
            else:
                m = mr_t.permute(2, 0, 1) if three_d else mr_t[None]
                cond = (m / m.amax(dim=(1, 2), keepdim=True).clamp_min(1e-12))[:, None]

        # 2. the data-consistency step -----------------------------------------------------------
        sens = model.sensitivity(torch.float32, device)
        fov = sens > SENSITIVITY_FLOOR * float(sens.max())
        beta_abs = float(cfg.beta) * float(sens[fov].mean()) / scale if bool(fov.any()) else 0.0
        if cfg.subsets > 1:
            subs = model.subsets(cfg.subsets)
            parts = [(m, m.projector.select(y_t), m.sensitivity(torch.float32, device)) for m in subs]
        else:
            parts = [(model, y_t, sens)]
        n_parts = len(parts)
        abar = self.schedule.alphas_cumprod
        last = {}

        def beta_at(t):
            if cfg.beta_schedule == "constant":
                return beta_abs
            a = float(abar[t])
            return beta_abs * a / max(1.0 - a, 1e-12)

        def data_step(x0, t):
            anchor = to_volume(x0).clamp_min(0.0)
            a = anchor.clamp_min(1e-6 * float(anchor.max()) + 1e-12)   # EM is multiplicative: every voxel can grow
            b = beta_at(int(t)) / n_parts
            for _ in range(cfg.em_iterations):
                for sub, y_sub, s_sub in parts:
                    a = penalised_em_step(sub, y_sub, a, anchor, b, sens=s_sub)
            last["x0_hat"], last["x0_dc"] = anchor, a
            return to_batch(a)

        step_callback = None
        if callback is not None:
            def step_callback(i, t, x, x0_dc):
                callback(i, t, last["x0_hat"], last["x0_dc"])

        # 3. sampling ------------------------------------------------------------------------------
        denoiser = self._denoiser(cond, chunk_size)
        clip = None if cfg.clip_max is None else (0.0, float(cfg.clip_max))
        total = None
        for k in range(samples):
            g = torch.Generator(device=device).manual_seed(seed + k)
            x_T = None
            if cfg.start_t is not None:
                start = to_batch(init_t).clamp(0.0, cfg.clip_max if cfg.clip_max is not None else float("inf"))
                x_T = self.schedule.q_sample(start, cfg.start_t, randn(start.shape, g, start))
            out = dds_sample(denoiser, None, None, batch_shape, self.schedule, cfg.steps, n_em=1, eta=cfg.eta,
                             eta_form="ddip", prediction=self.prediction, generator=g, data_step=data_step,
                             x_T=x_T, t_start=cfg.start_t, clip=clip, dtype=torch.float32, device=device,
                             progress=progress, callback=step_callback)
            image = to_volume(out).clamp_min(0.0)
            total = image if total is None else total + image
        result = (total / samples).detach().to(torch.float32)
        self.last_info = {"init": init_t, "scale": scale, "scale_mode": cfg.scale_mode, "level": level,
                          "beta_abs": beta_abs, "seeds": list(range(seed, seed + samples))}
        return result.cpu().numpy() if is_numpy else result

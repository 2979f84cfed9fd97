"""The reconstruction methods an evaluation compares, behind one call signature.

Every method is ``run(case) -> image`` where :class:`Case` holds one held-out slice: the raw
low-dose counts ``y_low`` (``n_views × n_radial``), the physics model of the full-dose scan
(``model``: activity → expected full-dose counts) and the DRF. The low-dose Poisson model is
``model_low = model`` with ``mult / DRF`` and ``additive / DRF``, so every method returns an
image on the activity scale of the truth.

Classical methods (their settings are tuned on validation subjects, see
:func:`pettk.evaluation.tune_classical`):

- ``osem``: OSEM of the low-dose data, Gaussian post-filter;
- ``bsrem-rdp``: the MAP image of the relative difference prior with its tuned ``(beta, gamma)``:
  BSREM (``bsrem_subsets`` subsets) started from the OSEM image and run until the objective
  stops changing (:func:`converged_bsrem`);
- ``mlem``: plain MLEM of the low-dose data (a fixed iteration count).

Learned methods, each with a model (a shipped default from :mod:`pettk.models` or a checkpoint):

- ``red``, ``dream``: sinogram restorers (``restore(y_low, DRF)``) followed by OSEM with the
  full-dose model, or by the converged BSREM-RDP of the restored data (:func:`restored_map`;
  the reconstruction and its settings tuned per restorer: ``ClassicalSettings.red_*``,
  ``dream_*``);
- ``ddip``, ``pet-dds``, ``legopet``: image priors (``reconstruct(model_low, y_low, mr=...)``);
  LegoPET's sample optionally followed by MLEM and a post-filter (:func:`refined_sample`,
  ``ClassicalSettings.legopet_*``), DDIP's and PET-DDS's image by a post-filter
  (``ClassicalSettings.ddip_post_filter_mm``, ``pet_dds_post_filter_mm``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ..geometry import ImageGrid
from ..physics import ForwardModel
from ..priors.apply import reconstruct_learned, refine_sample
from ..priors.volume import reconstruct_restored, restore_planes
from ..recon import bsrem_iterates, map_objective, mlem, osem, post_filter, rdp

__all__ = ["Case", "ClassicalSettings", "TUNED", "METHODS", "CLASSICAL", "LEARNED", "DEFAULT_MODELS", "make_runner",
           "converged_bsrem", "restored_map", "refined_sample", "filter_field", "RESTORED_RECONSTRUCTIONS"]

CLASSICAL = ("osem", "bsrem-rdp", "mlem")
LEARNED = ("red", "dream", "ddip", "legopet", "pet-dds")
METHODS = CLASSICAL + LEARNED

#: The shipped model each learned method uses unless a checkpoint is given.
DEFAULT_MODELS = {"red": "red-drf20", "dream": "dream-drf20", "ddip": "ddip-fdg", "legopet": "legopet",
                  "pet-dds": "pet-dds-mr"}


@dataclass
class Case:
    """One held-out slice.

    Attributes
    ----------
    y_low : tensor ``(n_views, n_radial)``
        Raw low-dose prompts (counts).
    model : ForwardModel
        Full-dose model (activity → expected counts, with attenuation, PSF, randoms + scatter).
    drf : float
    grid : ImageGrid
    mr : tensor ``grid.shape``
        The co-registered MR image (arbitrary units).
    truth : tensor ``grid.shape``
        The true activity (for metrics only; methods never read it).
    """

    y_low: torch.Tensor
    model: ForwardModel
    drf: float
    grid: ImageGrid
    mr: torch.Tensor
    truth: torch.Tensor
    info: dict = field(default_factory=dict)

    @property
    def model_low(self) -> ForwardModel:
        """The Poisson model of the low-dose counts (``mult / DRF``, ``additive / DRF``)."""
        additive = None if self.model.additive is None else self.model.additive / self.drf
        return self.model.with_background(additive, scale=1.0 / self.drf)


#: How a restorer's restored sinogram is reconstructed (``ClassicalSettings.red_reconstruction``).
RESTORED_RECONSTRUCTIONS = ("osem", "bsrem-rdp")


@dataclass(frozen=True)
class ClassicalSettings:
    """Settings of the classical methods (and of the EM after the sinogram restorers).

    The defaults were chosen by :func:`pettk.evaluation.tune_classical` on validation subjects
    (seeds disjoint from both training and test) at DRF 20 for the default data (best mean
    PSNR over the grids ``osem_iterations`` ∈ {1, 2, 4, 8, 16} × ``post_filter_mm`` ∈ {0, 4, 6,
    8, 10, 12} and ``bsrem_beta`` ∈ {0.01, 0.03, 0.1, 0.3, 1, 3, 10}); :data:`TUNED` holds the
    choices at DRF 4, 20 and 100.

    ``red_*`` and ``dream_*`` are the OSEM iterations (× ``osem_subsets`` subsets, full-dose
    model) and post-filter after each restorer. A restored sinogram is far less noisy than the
    raw data, so its best EM differs from the raw data's; they were chosen the same way, on the
    same validation subjects, for the shipped DRF-20 models (grid 1–14 iterations × 0–6 mm:
    RED 2 iterations / no filter, 22.21 dB; DREAM 10 iterations / no filter, 23.82 dB; the raw
    data's best OSEM there: 2 iterations / 5 mm, 22.15 dB).

    ``red_reconstruction`` / ``dream_reconstruction`` = ``"bsrem-rdp"`` replace that OSEM by the
    converged BSREM-RDP of the restored data (:func:`restored_map`) with ``(beta, gamma)`` =
    ``(*_bsrem_beta, *_rdp_gamma)``, on the same scale as ``bsrem_beta`` (``"osem"``, the
    default: OSEM + filter, the papers' recipe). The classical baseline's penalised
    reconstruction is the freedom a restorer gets too. Measured on 16 out-of-family validation
    slices at DRF 20 (``red-drf20-128``): 26.55 dB at beta 3, gamma 12.5, a tie with the best
    OSEM there (1 iteration, no filter, 26.56 dB).

    ``legopet_em_iterations`` and ``legopet_post_filter_mm``: MLEM iterations (low-dose model)
    started from LegoPET's sample and a Gaussian post-filter after them (:func:`refined_sample`;
    0 and 0, the default: the sample as it is), the post-processing freedom of OSEM + filter,
    chosen on validation data like the restorers' EM.

    ``ddip_post_filter_mm`` and ``pet_dds_post_filter_mm``: a Gaussian post-filter (FWHM, mm) of
    DDIP's and PET-DDS's reconstruction (0, the default: the image as it is), the post-filter
    freedom of OSEM + filter, chosen on validation data. A diffusion reconstruction at few counts
    carries sampling texture that a filter removes: on 16 out-of-family validation slices at DRF
    100, PET-DDS (``pet-dds-mr``) rose from 25.17 dB as it is to 26.53 dB with 10 mm.
    """

    osem_iterations: int = 2
    osem_subsets: int = 8
    post_filter_mm: float = 4.0
    bsrem_beta: float = 0.3
    bsrem_iterations: int = 1000
    bsrem_subsets: int = 4
    bsrem_tolerance: float = 1e-7
    rdp_gamma: float = 2.0
    mlem_iterations: int = 20
    red_osem_iterations: int = 2
    red_post_filter_mm: float = 0.0
    dream_osem_iterations: int = 10
    dream_post_filter_mm: float = 0.0
    legopet_em_iterations: int = 0
    legopet_post_filter_mm: float = 0.0
    ddip_post_filter_mm: float = 0.0
    pet_dds_post_filter_mm: float = 0.0
    red_reconstruction: str = "osem"
    red_bsrem_beta: float = 1.0
    red_rdp_gamma: float = 2.0
    dream_reconstruction: str = "osem"
    dream_bsrem_beta: float = 1.0
    dream_rdp_gamma: float = 2.0

    def validate(self) -> ClassicalSettings:
        for name in ("osem_iterations", "osem_subsets", "bsrem_iterations", "bsrem_subsets", "mlem_iterations",
                     "red_osem_iterations", "dream_osem_iterations"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        value = self.legopet_em_iterations
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"legopet_em_iterations must be an integer >= 0, got {value!r}")
        for name in ("post_filter_mm", "red_post_filter_mm", "dream_post_filter_mm", "legopet_post_filter_mm",
                     "ddip_post_filter_mm", "pet_dds_post_filter_mm"):
            if not float(getattr(self, name)) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        for name in ("red_reconstruction", "dream_reconstruction"):
            if getattr(self, name) not in RESTORED_RECONSTRUCTIONS:
                raise ValueError(f"{name} must be one of {', '.join(map(repr, RESTORED_RECONSTRUCTIONS))}, "
                                 f"got {getattr(self, name)!r}")
        for name in ("bsrem_beta", "rdp_gamma", "bsrem_tolerance", "red_bsrem_beta", "red_rdp_gamma",
                     "dream_bsrem_beta", "dream_rdp_gamma"):
            value = float(getattr(self, name))
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        return self


#: OSEM: ``tune_classical`` on 3 validation subjects × 2 slices (seeds 50000+), 64 × 64, 5·10⁵
#: full-dose counts. BSREM-RDP (the converged MAP image): ``tune_classical`` on 2 validation
#: subjects × 2 slices (seeds 50000+) over beta ∈ {0.1, 0.3, 1, 3, 10} × gamma ∈ {0.5, 2, 5, 20}
#: (mean PSNR at DRF 20, best beta per gamma: 22.70 dB at gamma 0.5 / beta 0.3, 22.45 at 2 / 1,
#: **22.72 at 5 / 1**, 22.63 at 20 / 3; at DRF 4: 24.46 at 0.5 / 0.3, **24.58 at 2 / 1**,
#: 24.52 at 5 / 1, 24.29 at 20 / 3; at DRF 100: **21.25 at 0.5 / 0.3** (the grid extended to gamma
#: 0.2: 21.23), 21.22 at 2 / 0.3, 21.21 at 5 / 1, 21.15 at 20 / 3; see ``docs/bsrem.md``).
TUNED = {4.0: ClassicalSettings(osem_iterations=4, post_filter_mm=4.0, bsrem_beta=1.0, rdp_gamma=2.0),
         20.0: ClassicalSettings(osem_iterations=2, post_filter_mm=4.0, bsrem_beta=1.0, rdp_gamma=5.0),
         100.0: ClassicalSettings(osem_iterations=1, post_filter_mm=8.0, bsrem_beta=0.3, rdp_gamma=0.5)}


def filter_field(method: str) -> str:
    """The :class:`ClassicalSettings` field of an image prior's post-filter (``"pet-dds"`` →
    ``"pet_dds_post_filter_mm"``)."""
    return f"{method.replace('-', '_')}_post_filter_mm"


def filtered(x: torch.Tensor, grid: ImageGrid, fwhm_mm: float) -> torch.Tensor:
    return post_filter(x, grid, fwhm_mm) if fwhm_mm > 0 else x


def _osem(case: Case, s: ClassicalSettings) -> torch.Tensor:
    x = osem(case.model_low, case.y_low, s.osem_iterations, s.osem_subsets)
    return filtered(x, case.grid, s.post_filter_mm)


#: Epochs between two checks of the MAP objective in :func:`converged_bsrem`.
CHECK_EVERY = 10


def _rdp_for(case: Case, gamma: float, model_low: ForwardModel | None = None):
    # epsilon in image units: 1 % of the mean activity estimated from the data (counts / sensitivity)
    model_low = model_low or case.model_low
    mean_activity = float(case.y_low.sum()) / max(float(model_low.sensitivity().sum()), 1e-12)
    return rdp(case.grid, gamma=gamma, epsilon=1e-2 * max(mean_activity, 1e-12))


def converged_bsrem(case: Case, s: ClassicalSettings, *, history: list | None = None) -> torch.Tensor:
    """The MAP image of RDP with ``(s.bsrem_beta, s.rdp_gamma)`` for one case.

    BSREM (:func:`pettk.recon.bsrem_iterates`, ``s.bsrem_subsets`` subsets, default step
    schedule) starts from the OSEM image of the case (``s.osem_iterations`` × ``s.osem_subsets``,
    no filter) and runs until the MAP objective ``Phi`` stops changing: it is evaluated every
    :data:`CHECK_EVERY` epochs and the run stops when its change over those epochs,
    ``|Phi_k - Phi_{k-10}|``, falls below ``s.bsrem_tolerance`` times the measured counts
    ``sum(y)`` (the scale of a Poisson log-likelihood; ``Phi`` itself has no fixed scale since
    its constant is dropped), or after ``s.bsrem_iterations`` epochs. ``history`` (a list)
    receives ``(epoch, Phi)`` at every check.
    """
    model_low = case.model_low
    prior = _rdp_for(case, s.rdp_gamma, model_low)
    x0 = osem(model_low, case.y_low, s.osem_iterations, s.osem_subsets)
    previous = None
    x = x0
    y64 = case.y_low.double()
    counts = float(y64.sum())
    for state in bsrem_iterates(model_low, case.y_low, prior, s.bsrem_beta, s.bsrem_iterations, s.bsrem_subsets,
                                x0=x0):
        x = state.x
        if state.iteration % CHECK_EVERY:
            continue
        # in float64: the changes sought are below float32's resolution of the sum
        phi = map_objective(model_low, y64, x.double(), prior, s.bsrem_beta)
        if history is not None:
            history.append((state.iteration, phi))
        if previous is not None and abs(phi - previous) <= s.bsrem_tolerance * counts:
            break
        previous = phi
    return x


def _mlem(case: Case, s: ClassicalSettings) -> torch.Tensor:
    return mlem(case.model_low, case.y_low, s.mlem_iterations)


def restored_map(case: Case, y_restored: torch.Tensor, s: ClassicalSettings) -> torch.Tensor:
    """The converged BSREM-RDP image (:func:`converged_bsrem`, ``s.bsrem_beta`` × ``s.rdp_gamma``)
    of a restored sinogram ``y_restored`` (an estimate of the full-dose counts of ``case``).

    The restored data enter scaled to the low-dose counts (``y_restored / DRF`` with the low-dose
    model), so that ``beta`` has the raw data's scale: their Poisson log-likelihood is the
    full-dose one over DRF. A restored sinogram is smoother than Poisson data of that count
    level, so its best ``beta`` is tuned separately (``ClassicalSettings.red_bsrem_beta``).
    """
    return converged_bsrem(dataclasses.replace(case, y_low=y_restored / case.drf), s)


def _restorer(restorer, method: str) -> Callable[[Case, ClassicalSettings], torch.Tensor]:
    def run(case: Case, s: ClassicalSettings) -> torch.Tensor:
        if getattr(s, f"{method}_reconstruction") == "bsrem-rdp":
            y_restored = restore_planes(restorer, case.y_low, case.drf).clamp_min(0)
            return restored_map(case, y_restored, dataclasses.replace(
                s, bsrem_beta=getattr(s, f"{method}_bsrem_beta"), rdp_gamma=getattr(s, f"{method}_rdp_gamma")))
        return reconstruct_restored(restorer, case.model, case.y_low, case.drf,
                                    iterations=getattr(s, f"{method}_osem_iterations"), subsets=s.osem_subsets,
                                    post_filter_mm=getattr(s, f"{method}_post_filter_mm"))
    return run


def refined_sample(case: Case, sample, em_iterations: int, post_filter_mm: float) -> torch.Tensor:
    """:func:`pettk.priors.apply.refine_sample` of ``case``'s low-dose data (``em_iterations`` MLEM
    from ``sample``), then the Gaussian post-filter (FWHM in mm; 0: none)."""
    return filtered(refine_sample(case.model_low, case.y_low, sample, em_iterations), case.grid, post_filter_mm)


def _image_prior(prior, method: str) -> Callable[[Case, ClassicalSettings], torch.Tensor]:
    use_mr = method in ("ddip", "pet-dds")  # an unconditional PET-DDS ignores mr

    def run(case: Case, s: ClassicalSettings) -> torch.Tensor:
        post = ({"refine_iterations": s.legopet_em_iterations, "post_filter_mm": s.legopet_post_filter_mm}
                if method == "legopet" else {"post_filter_mm": getattr(s, filter_field(method))})
        return torch.as_tensor(reconstruct_learned(method, prior, case.model_low, case.y_low,
                                                   mr=case.mr if use_mr else None, **post))
    return run


def make_runner(method: str, model=None, settings: ClassicalSettings | None = None) -> Callable[[Case], torch.Tensor]:
    """``run(case) -> image`` for ``method`` (one of :data:`METHODS`).

    ``model`` is the loaded learned model for :data:`LEARNED` methods (ignored otherwise).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    settings = (settings or ClassicalSettings()).validate()
    if method in LEARNED and model is None:
        raise ValueError(f"method {method!r} needs a model (a pettk.models name or a checkpoint)")
    if method == "osem":
        fn = _osem
    elif method == "bsrem-rdp":
        fn = converged_bsrem
    elif method == "mlem":
        fn = _mlem
    elif method in ("red", "dream"):
        fn = _restorer(model, method)
    else:
        fn = _image_prior(model, method)
    return lambda case: fn(case, settings)

"""Classical reconstruction: MLEM, OSEM, one-step-late MAP, BSREM, SVRG-MAP, priors, post-filter, FBP.

Iterative algorithms come in two forms: a function that runs to completion and returns the image
(``mlem``, ``osem``, ``osl_map``, ``bsrem``, ``svrg_map``; with ``callback`` and ``progress``) and a generator
of :class:`ReconState` per iteration (``*_iterates``). List-mode versions (``lm_mlem``, ``lm_osem``) take events (a
:class:`~pettk.geometry.LORList`, optionally with TOF bins) instead of a sinogram.
"""

from ._common import ReconState
from .em import em_step, mlem, mlem_iterates, osem, osem_iterates
from .fbp import fbp, ramp_filter
from .filters import post_filter
from .listmode import EventList, lm_mlem, lm_mlem_iterates, lm_osem, lm_osem_iterates
from .map import bsrem, bsrem_iterates, map_objective, osl_map, osl_map_iterates, subset_order
from .priors import Prior, QuadraticPrior, RelativeDifferencePrior, SmoothedTVPrior, quadratic, rdp, tv
from .svrg import svrg_map, svrg_map_iterates

__all__ = [
    "ReconState", "em_step", "mlem", "mlem_iterates", "osem", "osem_iterates", "fbp", "ramp_filter",
    "post_filter", "bsrem", "bsrem_iterates", "map_objective", "osl_map", "osl_map_iterates", "subset_order",
    "svrg_map", "svrg_map_iterates", "Prior",
    "QuadraticPrior", "RelativeDifferencePrior", "SmoothedTVPrior", "quadratic", "rdp", "tv", "EventList", "lm_mlem",
    "lm_mlem_iterates", "lm_osem", "lm_osem_iterates",
]

"""pettk: a differentiable PET physics toolkit with learned priors.

The layers (see ``DESIGN.md``): ``kernels`` (CUDA sources) → ``backends`` (numba, CuPy, torch
reference) → :mod:`pettk.geometry` → :mod:`pettk.projector` → physics → recon → diffusion →
priors; ``sim``, ``io``, ``metrics`` and ``cli`` on the side.
"""

from ._version import __version__
from .geometry import (
    ImageGrid,
    LORList,
    ParallelBeam2D,
    RegularPolygonScanner,
    SinogramLayout,
    SinogramLayout2D,
    TOFParams,
    preset,
)
from .likelihood import poisson_deviance, poisson_nll, poisson_nll_gradient
from .physics import ForwardModel, attenuation_factors
from .projector import Projector
from .psf import GaussianPSF

__all__ = [
    "__version__",
    "ForwardModel",
    "GaussianPSF",
    "TOFParams",
    "attenuation_factors",
    "poisson_deviance",
    "poisson_nll",
    "poisson_nll_gradient",
    "ImageGrid",
    "LORList",
    "ParallelBeam2D",
    "Projector",
    "RegularPolygonScanner",
    "SinogramLayout",
    "SinogramLayout2D",
    "preset",
]

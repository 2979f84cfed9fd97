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
    preset,
)
from .projector import Projector

__all__ = [
    "__version__",
    "ImageGrid",
    "LORList",
    "ParallelBeam2D",
    "Projector",
    "RegularPolygonScanner",
    "SinogramLayout",
    "preset",
]

"""The detector's energy window and the efficiency with which it keeps a photon of energy E.

A photon that deposits energy ``E`` is measured at an energy drawn from a Gaussian centred on
``E`` whose FWHM is ``fwhm_fraction * 511 keV`` at 511 keV and grows as ``sqrt(E)`` (photon
counting statistics of the scintillation light): ``FWHM(E) = fwhm_fraction * sqrt(511 keV * E)``.
The window keeps measured energies in ``[lower_kev, upper_kev]``, so the efficiency is

    eps(E) = Phi((upper - E) / sigma(E)) - Phi((lower - E) / sigma(E)),   sigma = FWHM / 2.3548

with ``Phi`` the standard normal CDF. Photopeak absorption is taken as complete (no
detector-scatter tail); the single scatter simulation uses the ratio ``eps(E') / eps(511 keV)``.
This is the window model of the single scatter simulations of Watson (IEEE TNS 47(4), 2000)
and Tsoumpas et al. (IEEE MIC 2004).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .._validation import as_bounded_float
from .klein_nishina import ELECTRON_REST_ENERGY_KEV

__all__ = ["EnergyWindow", "WINDOW_LIMITS_KEV"]

#: The range every window must lie in (keV): PET photopeak windows. Below 350 keV multiple
#: scatter, which single scatter simulation leaves out, is no longer a small correction.
WINDOW_LIMITS_KEV = (350.0, 750.0)

_FWHM_TO_SIGMA = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))


@dataclass(frozen=True)
class EnergyWindow:
    """An energy window ``[lower_kev, upper_kev]`` and the detector's energy resolution.

    Parameters
    ----------
    lower_kev, upper_kev : float
        Window edges (keV), ``350 <= lower < 511 < upper <= 750``.
    fwhm_fraction : float
        Energy resolution, FWHM / E at 511 keV (0.15 for LSO/LYSO; 0.22 for BGO), in (0, 1).
    """

    lower_kev: float = 350.0
    upper_kev: float = 650.0
    fwhm_fraction: float = 0.15

    def __post_init__(self):
        lo, hi = WINDOW_LIMITS_KEV
        lower = as_bounded_float("lower_kev", self.lower_kev)
        upper = as_bounded_float("upper_kev", self.upper_kev)
        if not (lo <= lower < ELECTRON_REST_ENERGY_KEV < upper <= hi):
            raise ValueError(f"energy window must satisfy {lo:g} <= lower_kev < 511 < upper_kev <= {hi:g} keV, "
                             f"got [{lower:g}, {upper:g}] keV")
        frac = as_bounded_float("fwhm_fraction", self.fwhm_fraction, minimum=0.0, maximum=1.0,
                                min_inclusive=False, max_inclusive=False)
        object.__setattr__(self, "lower_kev", lower)
        object.__setattr__(self, "upper_kev", upper)
        object.__setattr__(self, "fwhm_fraction", frac)

    def sigma_kev(self, energy_kev) -> np.ndarray:
        """Standard deviation (keV) of the measured energy of a photon of ``energy_kev``."""
        e = np.asarray(energy_kev, dtype=np.float64)
        return self.fwhm_fraction * np.sqrt(ELECTRON_REST_ENERGY_KEV * e) * _FWHM_TO_SIGMA

    def efficiency(self, energy_kev) -> np.ndarray:
        """Probability that a photon depositing ``energy_kev`` is measured inside the window."""
        e = np.asarray(energy_kev, dtype=np.float64)
        if not np.all(np.isfinite(e)) or np.any(e <= 0):
            raise ValueError(f"energy_kev must be finite and > 0, got {energy_kev!r}")
        s = self.sigma_kev(e) * math.sqrt(2.0)
        hi = torch.special.erf(torch.from_numpy(np.asarray((self.upper_kev - e) / s)))
        lo = torch.special.erf(torch.from_numpy(np.asarray((self.lower_kev - e) / s)))
        return (0.5 * (hi - lo)).numpy()

    def to_dict(self) -> dict:
        return {"lower_kev": self.lower_kev, "upper_kev": self.upper_kev, "fwhm_fraction": self.fwhm_fraction}

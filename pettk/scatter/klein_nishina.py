"""Compton scattering of one photon off a free electron: the Klein–Nishina cross sections.

Energies are in keV, angles are given by ``cos_theta`` (the cosine of the scattering angle, the
angle between the photon's direction before and after the scatter). Cross sections are in units
of the classical electron radius squared, ``r_e^2`` (per steradian for the differential one): the
single scatter simulation only needs ratios, ``n_e dsigma/dOmega = mu * (dsigma/dOmega) /
sigma(511 keV)``, where ``r_e^2`` cancels.

* :func:`scattered_energy` -- Compton's formula ``E' = E / (1 + (E / m_e c^2)(1 - cos theta))``.
* :func:`kn_differential` -- ``dsigma/dOmega = r_e^2 / 2 * P^2 (P + 1/P - sin^2 theta)``,
  ``P = E'/E``.
* :func:`kn_total` -- the integral of the differential cross section over the sphere (closed
  form).
* :func:`mu_energy_scale` -- ``sigma(E) / sigma(511 keV)``: how a 511 keV attenuation coefficient
  scales to energy ``E`` when Compton scattering dominates (water, soft tissue, bone at PET
  energies), the approximation of Watson's single scatter simulation.

References
----------
O. Klein and Y. Nishina, "Über die Streuung von Strahlung durch freie Elektronen nach der neuen
relativistischen Quantendynamik von Dirac", Z. Phys. 52, 853-868 (1929).
C. C. Watson, "New, faster, image-based scatter correction for 3D PET", IEEE Trans. Nucl. Sci.
47(4), 1587-1594 (2000).
"""

from __future__ import annotations

import numpy as np

__all__ = ["ELECTRON_REST_ENERGY_KEV", "scattered_energy", "kn_differential", "kn_total", "mu_energy_scale"]

#: m_e c^2 in keV (CODATA 2018: 510.99895 keV); the annihilation photon energy.
ELECTRON_REST_ENERGY_KEV = 510.99895


def _as_energy(name: str, energy_kev) -> np.ndarray:
    e = np.asarray(energy_kev, dtype=np.float64)
    if not np.all(np.isfinite(e)) or np.any(e <= 0):
        raise ValueError(f"{name} must be finite and > 0 keV, got {energy_kev!r}")
    return e


def _as_cos(cos_theta) -> np.ndarray:
    c = np.asarray(cos_theta, dtype=np.float64)
    if not np.all(np.isfinite(c)) or np.any(np.abs(c) > 1.0 + 1e-12):
        raise ValueError(f"cos_theta must lie in [-1, 1], got values from {np.nanmin(c):.6g} to {np.nanmax(c):.6g}")
    return np.clip(c, -1.0, 1.0)


def scattered_energy(cos_theta, energy_kev=ELECTRON_REST_ENERGY_KEV) -> np.ndarray:
    """Energy (keV) of a photon of ``energy_kev`` after Compton scattering by ``acos(cos_theta)``."""
    c = _as_cos(cos_theta)
    e = _as_energy("energy_kev", energy_kev)
    return e / (1.0 + (e / ELECTRON_REST_ENERGY_KEV) * (1.0 - c))


def kn_differential(cos_theta, energy_kev=ELECTRON_REST_ENERGY_KEV) -> np.ndarray:
    """Klein–Nishina differential cross section per electron, in ``r_e^2`` per steradian."""
    c = _as_cos(cos_theta)
    e = _as_energy("energy_kev", energy_kev)
    p = 1.0 / (1.0 + (e / ELECTRON_REST_ENERGY_KEV) * (1.0 - c))
    return 0.5 * p * p * (p + 1.0 / p - (1.0 - c * c))


def kn_total(energy_kev=ELECTRON_REST_ENERGY_KEV) -> np.ndarray:
    """Klein–Nishina total cross section per electron, in ``r_e^2`` (``8 pi / 3`` at low energy)."""
    k = _as_energy("energy_kev", energy_kev) / ELECTRON_REST_ENERGY_KEV
    log = np.log1p(2.0 * k)
    return 2.0 * np.pi * ((1.0 + k) / k**2 * (2.0 * (1.0 + k) / (1.0 + 2.0 * k) - log / k)
                          + log / (2.0 * k) - (1.0 + 3.0 * k) / (1.0 + 2.0 * k) ** 2)


def mu_energy_scale(energy_kev) -> np.ndarray:
    """``kn_total(E) / kn_total(511 keV)``: the factor taking mu at 511 keV to mu at ``E``."""
    return kn_total(energy_kev) / kn_total(ELECTRON_REST_ENERGY_KEV)

"""Klein–Nishina cross sections and the energy window against analytic values, quadrature and
scipy.stats (pettk.scatter.klein_nishina, pettk.scatter.energy)."""

import numpy as np
import pytest
from scipy import integrate, stats

from pettk.scatter import EnergyWindow, kn_differential, kn_total, mu_energy_scale, scattered_energy

R_E_CM = 2.8179403262e-13  # classical electron radius (CODATA 2018)


def test_compton_energies():
    # backscatter of an annihilation photon: 511/3 keV; 90 degrees: 511/2 keV
    assert scattered_energy(-1.0) == pytest.approx(510.99895 / 3, rel=1e-12)
    assert scattered_energy(0.0) == pytest.approx(510.99895 / 2, rel=1e-12)
    assert scattered_energy(1.0) == pytest.approx(510.99895, rel=1e-12)
    assert scattered_energy(-1.0, 100.0) == pytest.approx(100.0 / (1 + 2 * 100.0 / 510.99895), rel=1e-12)


def test_kn_differential_limits():
    assert kn_differential(1.0) == pytest.approx(1.0)  # forward: r_e^2 for every energy
    assert kn_differential(0.0) == pytest.approx(0.5 * 0.25 * (0.5 + 2.0 - 1.0))  # 90 deg at 511 keV
    # Thomson limit at low energy: (1 + cos^2) / 2
    c = np.linspace(-1, 1, 7)
    np.testing.assert_allclose(kn_differential(c, 1e-4), 0.5 * (1 + c**2), rtol=1e-5)


@pytest.mark.parametrize("energy", [10.0, 100.0, 340.0, 511.0, 1000.0])
def test_kn_total_is_the_integral_of_the_differential(energy):
    quad = 2 * np.pi * integrate.quad(lambda c: kn_differential(c, energy), -1, 1, epsabs=0, epsrel=1e-12)[0]
    assert kn_total(energy) == pytest.approx(quad, rel=1e-7)


def test_kn_total_reference_values():
    assert kn_total(0.1) == pytest.approx(8 * np.pi / 3, rel=1e-3)  # Thomson limit
    # 511 keV: 0.2865 barn per electron (Evans, The Atomic Nucleus, 1955, Compton tables)
    assert kn_total(511.0) * R_E_CM**2 * 1e24 == pytest.approx(0.2865, rel=2e-3)
    # water at 511 keV: n_e sigma_KN = 0.0096 /mm (the value pettk uses; NIST XCOM total 0.0960 cm2/g)
    n_e = 1.0 * 6.02214076e23 * 10 / 18.015  # electrons per cm3
    assert n_e * kn_total(511.0) * R_E_CM**2 / 10 == pytest.approx(0.0096, rel=0.01)
    assert mu_energy_scale(510.99895) == pytest.approx(1.0, rel=1e-12)
    assert 1.0 < mu_energy_scale(400.0) < mu_energy_scale(200.0)


def test_kn_bad_input():
    with pytest.raises(ValueError, match="cos_theta"):
        kn_differential(1.5)
    with pytest.raises(ValueError, match="energy_kev"):
        kn_total(-1.0)


def test_window_efficiency_against_scipy():
    w = EnergyWindow(425.0, 650.0, 0.15)
    e = np.array([200.0, 350.0, 425.0, 511.0, 600.0])
    sigma = 0.15 * np.sqrt(510.99895 * e) / (2 * np.sqrt(2 * np.log(2)))
    ref = stats.norm.cdf(650.0, e, sigma) - stats.norm.cdf(425.0, e, sigma)
    np.testing.assert_allclose(w.efficiency(e), ref, rtol=1e-9, atol=1e-15)
    assert w.efficiency(425.0) == pytest.approx(0.5, abs=1e-4)  # window edge: half the Gaussian


@pytest.mark.parametrize("lower, upper", [(300.0, 650.0), (350.0, 800.0), (520.0, 650.0), (350.0, 500.0),
                                          (650.0, 450.0)])
def test_window_outside_limits(lower, upper):
    with pytest.raises(ValueError, match="energy window"):
        EnergyWindow(lower, upper)


def test_window_bad_resolution():
    with pytest.raises(ValueError, match="fwhm_fraction"):
        EnergyWindow(350.0, 650.0, 0.0)
    with pytest.raises(TypeError, match="lower_kev"):
        EnergyWindow("350", 650.0)

"""Component-based normalisation from a simulated uniform cylinder scan.

The reference is the simulation's own truth: random crystal efficiencies (lognormal, 10 % sd) and
a geometric (radial × plane) profile multiply the attenuated cylinder projections, then Poisson
noise. The per-ring scale of the efficiencies is not identifiable from a scan (it trades with the
plane factors), so the exact checks compare with the truth scaled to mean 1 per ring.
"""

import numpy as np
import pytest
import torch

import pettk
from pettk.corrections import (
    efficiency_sinogram,
    estimate_normalisation,
    simulate_crystal_efficiencies,
)


@pytest.fixture(scope="module")
def scan():
    pre = pettk.preset("tiny")
    layout, grid = pre.layout, pre.grid
    x, y, _ = grid.coordinates()
    cylinder = (x ** 2 + y ** 2 <= 38.0 ** 2).astype(np.float64)
    projector = pettk.Projector(grid, layout)
    eps = simulate_crystal_efficiencies(pre.scanner, 0.1, seed=0)
    r = np.arange(layout.n_radial)
    geometric = (1 + 0.15 * np.cos(np.pi * (r - 24) / 60))[None, :] * np.linspace(0.9, 1.1, layout.n_planes)[:, None]
    truth = efficiency_sinogram(eps, layout, geometric)
    expected = pettk.ForwardModel(projector, mu=0.0096 * cylinder).forward(cylinder)
    scale = 2000.0 / expected.mean()  # about 8e7 counts
    counts = np.random.default_rng(1).poisson(truth * expected * scale).astype(np.float64)
    return dict(layout=layout, eps=eps, truth=truth * scale, expected=expected, counts=counts,
                projector=projector, cylinder=cylinder)


def _per_ring_unit_mean(e):
    return e / e.mean(axis=1, keepdims=True)


def test_simulated_efficiencies_are_lognormal_with_the_asked_sd():
    scanner = pettk.RegularPolygonScanner(330.0, 50, 8, 4.0, np.arange(250) * 4.0)
    e = simulate_crystal_efficiencies(scanner, 0.1, seed=3)
    assert e.shape == (250, 400)
    assert e.mean() == pytest.approx(1.0, abs=0.002)
    assert e.std() == pytest.approx(0.1, rel=0.02)
    np.testing.assert_array_equal(e, simulate_crystal_efficiencies(scanner, 0.1, seed=3))


def test_recovers_crystal_efficiencies_from_a_cylinder_scan(scan):
    est = estimate_normalisation(scan["counts"], scan["expected"], scan["layout"])
    eps = scan["eps"]
    assert np.corrcoef(est.efficiencies.ravel(), eps.ravel())[0, 1] >= 0.99
    assert np.corrcoef(est.efficiencies.ravel(), _per_ring_unit_mean(eps).ravel())[0, 1] >= 0.999
    covered = scan["expected"] > 0
    ratio = est.normalisation[covered] / scan["truth"][covered]
    assert np.percentile(np.abs(ratio - 1), 95) < 0.01
    # the estimate is what ForwardModel takes as normalisation (a multiplicative efficiency)
    model = pettk.ForwardModel(scan["projector"], normalisation=est.normalisation, mu=0.0096 * scan["cylinder"])
    fitted = model.forward(scan["cylinder"])
    assert fitted.sum() == pytest.approx(scan["counts"].sum(), rel=1e-3)


def test_noiseless_scan_is_fitted_exactly(scan):
    noiseless = scan["truth"] * scan["expected"]
    est = estimate_normalisation(torch.from_numpy(noiseless), scan["expected"], scan["layout"], n_iter=30,
                                 n_fan_iter=50)
    np.testing.assert_allclose(est.efficiencies, _per_ring_unit_mean(scan["eps"]), rtol=1e-4)
    covered = scan["expected"] > 0
    np.testing.assert_allclose(est.normalisation[covered], scan["truth"][covered], rtol=1e-4)


def test_bad_input_raises(scan):
    layout = scan["layout"]
    with pytest.raises(ValueError, match="counts must have the layout's shape"):
        estimate_normalisation(scan["counts"][:-1], scan["expected"], layout)
    with pytest.raises(ValueError, match="expected must be >= 0"):
        estimate_normalisation(scan["counts"], -scan["expected"], layout)
    with pytest.raises(ValueError, match="counts contains non-finite"):
        estimate_normalisation(scan["counts"] * np.nan, scan["expected"], layout)
    with pytest.raises(ValueError, match="no bin with counts"):
        estimate_normalisation(np.zeros(layout.shape), scan["expected"], layout)
    short = scan["expected"].copy()
    short[3] = 0.0
    with pytest.raises(ValueError, match="plane 3"):
        estimate_normalisation(scan["counts"], short, layout)
    with pytest.raises(ValueError, match="efficiencies must have shape"):
        efficiency_sinogram(scan["eps"][:2], layout)
    with pytest.raises(ValueError, match="geometric must have shape"):
        efficiency_sinogram(scan["eps"], layout, np.ones((2, 2)))
    with pytest.raises(ValueError, match="sd"):
        simulate_crystal_efficiencies(layout.scanner, -0.1)
    with pytest.raises(TypeError, match="span 1"):
        estimate_normalisation(scan["counts"], scan["expected"], pettk.corrections.compress(layout, 3))

"""ForwardModel: composition, exact adjoint of the linear part, attenuation, subsets, errors."""

import numpy as np
import pytest
import torch
from _helpers import assert_adjoint

import pettk
from pettk.geometry import LORList, TOFParams
from pettk.physics import ForwardModel, attenuation_factors
from pettk.sim.phantoms import ellipse_phantom_2d

TOF = TOFParams(fwhm_mm=20.0, n_bins=15, bin_width_mm=9.0)


def _model(tiny, rng, tof=None, list_mode=False):
    if list_mode:
        start, end = tiny.layout.lor_endpoints()
        start, end = start.reshape(-1, 3)[::3], end.reshape(-1, 3)[::3]
        geo = LORList(start, end, tof_bin=rng.integers(0, TOF.n_bins, len(start)) if tof else None)
    else:
        geo = tiny.layout
    P = pettk.Projector(tiny.grid, geo, tof=tof)
    nontof = P.without_tof().shape_out
    mu = np.zeros(tiny.grid.shape)
    mu[6:26, 6:26, :] = 0.0096
    return ForwardModel(P, psf=(4.0, 4.0, 3.0), normalisation=rng.uniform(0.6, 1.4, nontof), mu=mu,
                        additive=rng.uniform(0.0, 0.3, P.shape_out))


@pytest.mark.parametrize("tof", [None, TOF], ids=["nontof", "tof"])
@pytest.mark.parametrize("list_mode", [False, True], ids=["sinogram", "listmode"])
def test_linear_model_adjointness(tiny, rng, tof, list_mode):
    model = _model(tiny, rng, tof, list_mode)

    class Linear:  # the linear part, for the shared adjointness helper
        forward = staticmethod(model.linear)
        adjoint = staticmethod(model.adjoint)

    assert_adjoint(Linear, rng.random(tiny.grid.shape), rng.random(model.shape_out), rtol=1e-6)


def test_forward_is_the_composition(tiny, rng):
    model = _model(tiny, rng, TOF)
    x = torch.from_numpy(rng.random(tiny.grid.shape))
    P = model.projector
    expected = model.mult.unsqueeze(-1) * P(model.psf(x)) + model.additive
    torch.testing.assert_close(model(x), expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(model.linear(x), expected - model.additive, rtol=1e-12, atol=1e-12)
    assert model.shape_out == (16, 48, 49, 15)


def test_attenuation_of_a_water_cylinder_matches_exp_mu_chord():
    grid = pettk.ImageGrid((256, 256), 0.5)
    radius = 50.0
    mu = 0.0096 * ellipse_phantom_2d(grid, [[1.0, 1.0, 1.0, 0.0, 0.0, 0.0]], radius, supersample=8)
    geo = pettk.ParallelBeam2D(36, 151, 0.77)
    factors = attenuation_factors(pettk.Projector(grid, geo), mu)
    s = geo.radial_positions_mm
    central = np.abs(s) < 0.5 * radius
    expected = np.exp(-0.0096 * 2 * np.sqrt(radius ** 2 - s[central] ** 2))
    np.testing.assert_allclose(factors[:, central], np.broadcast_to(expected, (36, central.sum())), atol=1e-3)
    assert np.all(factors <= 1.0) and np.all(factors > 0)


def test_attenuation_is_differentiable_in_mu():
    grid = pettk.ImageGrid((5, 4, 3), (3.0, 3.0, 4.0))
    rng = np.random.default_rng(5)
    start = rng.uniform(-30, 30, size=(20, 3))
    P = pettk.Projector(grid, LORList(start, -start + 1.0))
    mu = torch.from_numpy(rng.uniform(0.0, 0.02, grid.shape)).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda m: attenuation_factors(P, m), (mu,), eps=1e-7, atol=1e-7)
    x = torch.from_numpy(rng.random(grid.shape))

    def counts(m):
        return ForwardModel(P, mu=m).forward(x)

    assert torch.autograd.gradcheck(counts, (mu,), eps=1e-7, atol=1e-7)


def test_sensitivity_and_subsets(tiny, rng):
    model = _model(tiny, rng, TOF)
    sens = model.sensitivity(torch.float64)
    ones = torch.ones(model.shape_out, dtype=torch.float64)
    torch.testing.assert_close(sens, model.adjoint(ones))
    assert model.sensitivity(torch.float64) is sens  # cached
    subsets = model.subsets(4)
    torch.testing.assert_close(sum(s.sensitivity(torch.float64) for s in subsets), sens, rtol=1e-10, atol=1e-10)
    x = torch.from_numpy(rng.random(tiny.grid.shape))
    full = model(x)
    for s in subsets:
        torch.testing.assert_close(s(x), s.projector.select(full), rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="already a subset"):
        subsets[0].subsets(2)


def test_numpy_in_numpy_out_and_float32(tiny, rng):
    model = _model(tiny, rng)
    x = rng.random(tiny.grid.shape).astype(np.float32)
    y = model(x)
    assert isinstance(y, np.ndarray) and y.dtype == np.float32
    b = model.adjoint(y)
    assert isinstance(b, np.ndarray) and b.shape == tiny.grid.shape


def test_model_rejects_bad_input(tiny):
    P = pettk.Projector(tiny.grid, tiny.layout)
    good = np.ones(tiny.layout.shape)
    with pytest.raises(ValueError, match=r"normalisation must have shape \(16, 48, 49\), got \(16, 48\)"):
        ForwardModel(P, normalisation=np.ones((16, 48)))
    with pytest.raises(ValueError, match="attenuation must be >= 0 everywhere"):
        ForwardModel(P, attenuation=-good)
    with pytest.raises(ValueError, match="additive contains 1 non-finite values"):
        bad = good.copy()
        bad[0, 0, 0] = np.nan
        ForwardModel(P, additive=bad)
    with pytest.raises(ValueError, match=r"mu must be >= 0 \(1/mm\)"):
        attenuation_factors(P, -np.ones(tiny.grid.shape))
    with pytest.raises(ValueError, match="mu must be >= 0 everywhere"):
        ForwardModel(P, mu=-np.ones(tiny.grid.shape))
    with pytest.raises(ValueError, match="give either attenuation"):
        ForwardModel(P, attenuation=good, mu=np.zeros(tiny.grid.shape))
    with pytest.raises(TypeError, match="psf must be a GaussianPSF, a FWHM in mm or None"):
        ForwardModel(P, psf="wide")
    with pytest.raises(ValueError, match="psf grid"):
        ForwardModel(P, psf=pettk.GaussianPSF(tiny.grid_2d, 2.0))
    with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., 32, 32, 8\)"):
        ForwardModel(P)(np.ones((32, 32)))
    with pytest.raises(TypeError, match="normalisation must hold floating-point values"):
        ForwardModel(P, normalisation=np.ones(tiny.layout.shape, dtype=np.int64))

"""Quadratic, relative difference and smoothed-TV priors: values, gradients, curvatures."""

import numpy as np
import pytest
import torch

import pettk
from pettk.recon import quadratic, rdp, tv


@pytest.fixture(params=["2d", "3d"])
def grid(request):
    return pettk.ImageGrid((7, 6), (2.0, 3.0)) if request.param == "2d" else pettk.ImageGrid((5, 4, 3), (2.0, 2.0, 3.0))


def _priors(grid, rng):
    kappa = torch.from_numpy(rng.uniform(0.5, 1.5, grid.shape))
    return [quadratic(grid), rdp(grid, gamma=2.0, epsilon=1e-3), rdp(grid, gamma=0.5, epsilon=1e-2, kappa=kappa),
            tv(grid, delta=0.05)]


def test_rdp_value_by_hand():
    grid = pettk.ImageGrid((2, 1), 1.0)  # one pair of neighbours at distance 1
    x = torch.tensor([[3.0], [1.0]], dtype=torch.float64)
    prior = rdp(grid, gamma=2.0, epsilon=0.5)
    expected = (3 - 1) ** 2 / (3 + 1 + 2 * 2 + 0.5)
    assert float(prior.value(x)) == pytest.approx(expected, rel=1e-14)
    assert float(quadratic(grid).value(x)) == pytest.approx(0.5 * 4, rel=1e-14)
    # diagonal neighbours in 2D carry 1/sqrt(2) (inverse distance)
    grid2 = pettk.ImageGrid((2, 2), 1.0)
    x2 = torch.tensor([[1.0, 0.0], [0.0, 0.0]], dtype=torch.float64)
    assert float(quadratic(grid2).value(x2)) == pytest.approx(0.5 * (1 + 1 + 1 / np.sqrt(2)), rel=1e-14)


def test_gradient_and_hessian_diagonal_match_finite_differences(grid, rng):
    x = torch.from_numpy(rng.uniform(0.2, 2.0, grid.shape))
    for prior in _priors(grid, rng):
        g = prior.gradient(x)
        xr = x.clone().requires_grad_(True)
        prior.value(xr).backward()
        torch.testing.assert_close(g, xr.grad, rtol=1e-10, atol=1e-12)
        h = 1e-6
        direction = torch.from_numpy(rng.standard_normal(grid.shape))
        fd = (prior.value(x + h * direction) - prior.value(x - h * direction)) / (2 * h)
        assert float(fd) == pytest.approx(float((g * direction).sum()), rel=1e-6)
        # diagonal second derivatives, one voxel at a time
        hd = prior.hessian_diagonal(x)
        for idx in [tuple(rng.integers(0, n) for n in grid.shape) for _ in range(4)]:
            e = torch.zeros_like(x)
            e[idx] = 1.0
            h2 = 1e-4
            fd2 = (prior.value(x + h2 * e) - 2 * prior.value(x) + prior.value(x - h2 * e)) / h2 ** 2
            assert float(fd2) == pytest.approx(float(hd[idx]), rel=1e-4)


def test_curvature_bound_is_a_bound(grid, rng):
    x = torch.from_numpy(rng.uniform(0.0, 2.0, grid.shape))
    for prior in _priors(grid, rng):
        bound = prior.curvature_bound(x)
        for _ in range(6):
            idx = tuple(rng.integers(0, n) for n in grid.shape)
            for value in (0.0, 1e-4, 0.3, float(x[idx]), 5.0, 50.0):
                moved = x.clone()
                moved[idx] = value
                assert float(prior.hessian_diagonal(moved)[idx]) <= float(bound[idx]) * (1 + 1e-12)


def test_priors_are_zero_on_constant_images_and_batch(grid, rng):
    x = torch.full((2,) + grid.shape, 1.7, dtype=torch.float64)
    for prior in _priors(grid, rng)[:2] + _priors(grid, rng)[3:]:
        assert float(prior.value(x)) == pytest.approx(0.0, abs=1e-12)
        assert float(prior.gradient(x).abs().max()) == pytest.approx(0.0, abs=1e-12)
    b = torch.from_numpy(rng.random((3,) + grid.shape))
    p = rdp(grid)
    torch.testing.assert_close(p.gradient(b)[1], p.gradient(b[1]))


def test_priors_reject_bad_input(grid):
    with pytest.raises(ValueError, match="gamma must be a finite number >= 0"):
        rdp(grid, gamma=-1.0)
    with pytest.raises(ValueError, match="epsilon must be a finite number > 0"):
        rdp(grid, epsilon=0.0)
    with pytest.raises(ValueError, match="delta must be a finite number > 0"):
        tv(grid, delta=-1.0)
    with pytest.raises(ValueError, match="kappa must have shape"):
        rdp(grid, kappa=np.ones((2, 2)))
    with pytest.raises(ValueError, match="x must have shape"):
        rdp(grid).value(torch.ones(3, 3))
    with pytest.raises(TypeError, match="x must be a torch tensor"):
        rdp(grid).value(np.ones(grid.shape))

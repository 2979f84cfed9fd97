"""The Poisson log-likelihood, its gradient through the model, and the deviance."""

import math

import numpy as np
import pytest
import torch

import pettk
from pettk.likelihood import poisson_deviance, poisson_nll, poisson_nll_gradient
from pettk.physics import ForwardModel


def test_nll_and_deviance_against_hand_computed_values():
    y = np.array([0.0, 1.0, 3.0, 2.0])
    ybar = np.array([0.5, 2.0, 3.0, 0.0])
    eps = 1e-8
    expected_nll = (0.5 - 0) + (2.0 - math.log(2.0)) + (3.0 - 3 * math.log(3.0)) + (0.0 - 2 * math.log(eps))
    assert poisson_nll(y, ybar, eps=eps) == pytest.approx(expected_nll, rel=1e-12)
    expected_dev = 2 * ((0 - 0 + 0.5) + (math.log(0.5) - 1 + 2) + (0.0) + (2 * math.log(2 / eps) - 2))
    assert poisson_deviance(y, ybar, eps=eps) == pytest.approx(expected_dev, rel=1e-12)
    assert poisson_deviance(y[:3], y[:3]) == pytest.approx(0.0, abs=1e-12)
    t = poisson_nll(torch.tensor(y), torch.tensor(ybar))
    assert isinstance(t, torch.Tensor) and float(t) == pytest.approx(expected_nll, rel=1e-12)


def test_zero_expected_counts_are_safe():
    y = torch.tensor([0.0, 4.0])
    ybar = torch.tensor([0.0, 0.0], requires_grad=True)
    value = poisson_nll(y, ybar)
    assert torch.isfinite(value)
    value.backward()
    assert torch.isfinite(ybar.grad).all()


@pytest.mark.parametrize("y, ybar, exc, match", [
    (np.array([-1.0, 2.0]), np.ones(2), ValueError, "y holds counts and must be >= 0"),
    (np.ones(3), np.ones(2), ValueError, r"same shape, got \(3,\) and \(2,\)"),
    (np.array([np.nan, 1.0]), np.ones(2), ValueError, "y contains non-finite values"),
    (np.ones(2), np.array([1.0, np.inf]), ValueError, "ybar contains non-finite values"),
    ([1.0], np.ones(1), TypeError, "y and ybar must be numpy arrays or torch tensors"),
])
def test_likelihood_rejects_bad_input(y, ybar, exc, match):
    with pytest.raises(exc, match=match):
        poisson_nll(y, ybar)


@pytest.fixture
def model(tiny):
    rng = np.random.default_rng(3)
    P = pettk.Projector(tiny.grid, tiny.layout)
    return ForwardModel(P, psf=3.0, normalisation=rng.uniform(0.5, 1.5, tiny.layout.shape),
                        additive=np.full(tiny.layout.shape, 0.2))


def test_gradient_matches_autograd_and_finite_differences(model, tiny):
    rng = np.random.default_rng(4)
    x = torch.from_numpy(rng.uniform(0.5, 1.5, tiny.grid.shape))
    y = torch.poisson(model(x).detach(), generator=torch.Generator().manual_seed(0))
    grad = poisson_nll_gradient(model, x, y)
    xr = x.clone().requires_grad_(True)
    poisson_nll(y, model(xr)).backward()
    torch.testing.assert_close(grad, xr.grad, rtol=1e-10, atol=1e-10)
    # central finite differences along a random direction
    direction = torch.from_numpy(rng.standard_normal(tiny.grid.shape))
    h = 1e-4
    fd = (poisson_nll(y, model(x + h * direction)) - poisson_nll(y, model(x - h * direction))) / (2 * h)
    assert float(fd) == pytest.approx(float((grad * direction).sum()), rel=1e-5)
    # numpy in, numpy out
    g_np = poisson_nll_gradient(model, x.numpy(), y.numpy())
    assert isinstance(g_np, np.ndarray)
    np.testing.assert_allclose(g_np, grad.numpy(), rtol=1e-12)

"""Gradients through the projector: autograd gives P^T of the upstream gradient."""

import numpy as np
import pytest
import torch

import pettk


@pytest.fixture
def small():
    grid = pettk.ImageGrid((5, 6, 4), (2.0, 1.5, 2.5))
    rng = np.random.default_rng(7)
    start = rng.uniform(-20, 20, size=(30, 3))
    end = -start + rng.normal(size=(30, 3))
    return pettk.Projector(grid, pettk.LORList(start, end))


def test_gradcheck_forward_and_adjoint(small):
    x = torch.rand(small.shape_in, dtype=torch.float64, requires_grad=True)
    y = torch.rand(small.shape_out, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(small.forward, (x,), eps=1e-6, atol=1e-6)
    assert torch.autograd.gradcheck(small.adjoint, (y,), eps=1e-6, atol=1e-6)
    assert torch.autograd.gradgradcheck(small.forward, (x,), eps=1e-6, atol=1e-6)


def test_backward_is_the_adjoint_of_the_upstream_gradient(tiny):
    P = pettk.Projector(tiny.grid, tiny.layout)
    x = torch.rand(tiny.grid.shape, dtype=torch.float64, requires_grad=True)
    target = torch.rand(P.shape_out, dtype=torch.float64)
    loss = 0.5 * (P(x) - target).square().sum()
    loss.backward()
    with torch.no_grad():
        expected = P.adjoint(P(x) - target)
    torch.testing.assert_close(x.grad, expected, rtol=1e-12, atol=1e-12)


def test_batched_gradient(grid2d, beam2d):
    P = pettk.Projector(grid2d, beam2d)
    x = torch.rand((2, 3) + grid2d.shape, requires_grad=True)
    y = P(x)
    assert y.shape == (2, 3) + beam2d.shape
    w = torch.rand_like(y)
    (y * w).sum().backward()
    torch.testing.assert_close(x.grad, P.adjoint(w), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(x.grad[1, 2], P.adjoint(w[1, 2]), rtol=1e-5, atol=1e-4)

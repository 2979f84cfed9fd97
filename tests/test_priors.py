"""Quadratic, relative difference and smoothed-TV priors: values, gradients, curvatures; the numba
kernels against the torch loop."""

import itertools

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


# -- the numba kernels against the torch loop ------------------------------------------------------
def _both(prior, fn):
    """``fn(prior)`` on the numba path and on the torch path."""
    prior.backend = "numba"
    try:
        fast = fn(prior)
    finally:
        prior.backend = "torch"
    try:
        ref = fn(prior)
    finally:
        prior.backend = "auto"
    return fast, ref


def _all_outputs(x):
    def fn(prior):
        g, h = prior.gradient_and_hessian_diagonal(x)
        return prior.value(x), prior.gradient(x), prior.hessian_diagonal(x), g, h, prior.curvature_bound(x)
    return fn


@pytest.mark.parametrize("shape, voxel", [((7, 6), (2.0, 3.0)), ((5, 4, 3), (2.0, 2.0, 3.0)),
                                          ((9, 8, 7), (1.0, 1.5, 2.0)), ((1, 6, 5), (2.0, 2.0, 2.0)),
                                          ((6, 1, 1), (1.0, 1.0, 1.0))])
def test_numba_path_equals_torch_path(shape, voxel, rng):
    grid = pettk.ImageGrid(shape, voxel)
    kappa = torch.from_numpy(rng.uniform(0.5, 1.5, shape))
    priors = _priors(grid, rng) + [tv(grid, delta=0.05, kappa=kappa), quadratic(grid, kappa=kappa),
                                   rdp(grid, gamma=0.0, epsilon=1e-4), rdp(grid, gamma=1.0, epsilon=1e-4)]
    for batch in [(), (3,), (2, 2)]:
        # zeros included: RDP at a = b = 0 and negative values in the bound's clamp
        x = torch.from_numpy(rng.uniform(-0.1, 2.0, batch + shape)).clamp_min(0.0)
        x[..., 0] = 0.0
        for prior in priors:
            fast, ref = _both(prior, _all_outputs(x))
            for f, r in zip(fast, ref):
                assert f.dtype == r.dtype == torch.float64 and f.shape == r.shape
                scale = max(float(r.abs().max()), 1e-300)
                torch.testing.assert_close(f, r, rtol=1e-12, atol=1e-12 * scale)


def test_numba_path_in_float32_and_non_contiguous_input(rng):
    grid = pettk.ImageGrid((12, 10, 9), (2.0, 2.0, 2.5))
    x64 = torch.from_numpy(rng.uniform(0.2, 2.0, (2,) + grid.shape))
    x32 = x64.float()
    for prior in _priors(grid, rng):
        fast, ref = _both(prior, _all_outputs(x32))
        exact = _all_outputs(x64)(prior)
        for f, r, e in zip(fast, ref, exact):
            assert f.dtype == torch.float32
            scale = float(e.abs().max())
            # float64 arithmetic inside the kernel: at least as close to the exact numbers as torch
            torch.testing.assert_close(f.double(), e, rtol=1e-6, atol=1e-6 * scale)
            torch.testing.assert_close(f, r, rtol=1e-4, atol=1e-5 * scale)
        # a transposed (non-contiguous) view of the batch: same numbers
        xt = x64.transpose(0, 1).contiguous().transpose(0, 1)
        assert not xt.is_contiguous()
        torch.testing.assert_close(prior.gradient(xt), prior.gradient(x64), rtol=1e-14, atol=0)


def test_kernel_dispatch(rng):
    grid = pettk.ImageGrid((5, 4, 3), (2.0, 2.0, 3.0))
    x = torch.from_numpy(rng.uniform(0.2, 2.0, grid.shape))
    prior = rdp(grid)
    assert prior._use_kernel(x)
    assert not prior._use_kernel(x.clone().requires_grad_(True))  # autograd: the torch path
    with torch.no_grad():
        assert prior._use_kernel(x.clone().requires_grad_(True))
    assert not prior._use_kernel(x.half())
    # value() stays differentiable (torch path) and agrees with the kernel's gradient
    xr = x.clone().requires_grad_(True)
    prior.value(xr).backward()
    torch.testing.assert_close(xr.grad, prior.gradient(x), rtol=1e-12, atol=1e-14)

    # a subclass with its own phi is not silently run through the built-in kernel
    class Cubic(pettk.recon.QuadraticPrior):
        def _phi(self, a, b):
            return (a - b).abs() ** 3 / 3

    assert not Cubic(grid)._use_kernel(x)
    prior.backend = "numba"
    with pytest.raises(ValueError, match="numba prior kernels take float32/float64 CPU tensors"):
        prior.value(x.half())
    prior.backend = "fast"
    with pytest.raises(ValueError, match="backend must be one of"):
        prior.value(x)


def test_gradient_and_hessian_diagonal_in_one_call(grid, rng):
    x = torch.from_numpy(rng.uniform(0.2, 2.0, (2,) + grid.shape))
    for prior in _priors(grid, rng):
        for backend in ("auto", "torch"):
            prior.backend = backend
            g, h = prior.gradient_and_hessian_diagonal(x)
            torch.testing.assert_close(g, prior.gradient(x), rtol=0, atol=0)
            torch.testing.assert_close(h, prior.hessian_diagonal(x), rtol=0, atol=0)


def test_hessian_diagonal_matches_autograd(grid, rng):
    x = torch.from_numpy(rng.uniform(0.2, 2.0, grid.shape))
    for prior in _priors(grid, rng):
        hd = prior.hessian_diagonal(x)
        # d/dx_j of the autograd gradient, for a few voxels (rows of the Hessian)
        for idx in [tuple(int(i) for i in rng.integers(0, grid.shape)) for _ in range(4)]:
            xr = x.clone().requires_grad_(True)
            (g,) = torch.autograd.grad(prior.value(xr), xr, create_graph=True)
            (row,) = torch.autograd.grad(g[idx], xr)
            assert float(row[idx]) == pytest.approx(float(hd[idx]), rel=1e-10)


def test_kappa_weights_scale_each_pair(rng):
    # on one pair of voxels, kappa multiplies the pair's weight by kappa_0 * kappa_1
    grid = pettk.ImageGrid((2, 1, 1), 1.0)
    x = torch.tensor([[[3.0]], [[1.0]]], dtype=torch.float64)
    kappa = torch.tensor([[[0.5]], [[3.0]]], dtype=torch.float64)
    for make in (quadratic, rdp, tv):
        plain, weighted = make(grid), make(grid, kappa=kappa)
        for backend in ("numba", "torch"):
            plain.backend = weighted.backend = backend
            assert float(weighted.value(x)) == pytest.approx(1.5 * float(plain.value(x)), rel=1e-14)
            torch.testing.assert_close(weighted.gradient(x), 1.5 * plain.gradient(x), rtol=1e-14, atol=0)
            torch.testing.assert_close(weighted.hessian_diagonal(x), 1.5 * plain.hessian_diagonal(x),
                                       rtol=1e-14, atol=0)
    # kappa = 0 on a voxel removes all its pairs
    grid = pettk.ImageGrid((4, 4, 4), 2.0)
    kappa = torch.ones(grid.shape, dtype=torch.float64)
    kappa[1, 2, 3] = 0.0
    x = torch.from_numpy(rng.uniform(0.2, 2.0, grid.shape))
    for prior in (quadratic(grid, kappa=kappa), rdp(grid, kappa=kappa), tv(grid, kappa=kappa)):
        assert float(prior.gradient(x)[1, 2, 3]) == 0.0
        assert float(prior.hessian_diagonal(x)[1, 2, 3]) == 0.0
        moved = x.clone()
        moved[1, 2, 3] += 5.0
        assert float(prior.value(moved)) == pytest.approx(float(prior.value(x)), rel=1e-14)


def test_3d_weights_are_inverse_distances():
    # a single voxel raised by 1 in a zero image: the quadratic gradient there is sum_k w_jk
    vs = (2.0, 3.0, 4.0)
    grid = pettk.ImageGrid((3, 3, 3), vs)
    x = torch.zeros(grid.shape, dtype=torch.float64)
    x[1, 1, 1] = 1.0
    offsets = [off for off in itertools.product((-1, 0, 1), repeat=3) if any(off)]
    expected = sum(min(vs) / np.sqrt(sum((o * v) ** 2 for o, v in zip(off, vs))) for off in offsets)
    for backend in ("numba", "torch"):
        p = quadratic(grid)
        p.backend = backend
        assert float(p.gradient(x)[1, 1, 1]) == pytest.approx(expected, rel=1e-14)
        assert float(p.hessian_diagonal(x)[1, 1, 1]) == pytest.approx(expected, rel=1e-14)
        assert float(p.value(x)) == pytest.approx(0.5 * expected, rel=1e-14)


def test_empty_batch(grid):
    x = torch.zeros((0,) + grid.shape, dtype=torch.float64)
    p = rdp(grid)
    g, h = p.gradient_and_hessian_diagonal(x)
    assert g.shape == h.shape == x.shape
    assert float(p.value(x)) == 0.0


def test_kappa_changes_and_differentiable_kappa(rng):
    grid = pettk.ImageGrid((4, 5, 3), 2.0)
    x = torch.from_numpy(rng.uniform(0.2, 2.0, grid.shape))
    kappa = torch.from_numpy(rng.uniform(0.5, 1.5, grid.shape))
    prior = rdp(grid, kappa=kappa)
    before = prior.gradient(x)
    with torch.no_grad():
        kappa.mul_(2.0)  # in place: the cached copies follow
    torch.testing.assert_close(prior.gradient(x), 4.0 * before, rtol=1e-13, atol=0)
    prior.kappa = kappa / 2.0
    torch.testing.assert_close(prior.gradient(x), before, rtol=1e-13, atol=0)
    # kappa requiring grad: value() stays differentiable in kappa (torch path), twice
    k = kappa.clone().requires_grad_(True)
    prior = rdp(grid, kappa=k)
    for _ in range(2):
        k.grad = None
        prior.value(x.float()).backward()
        assert k.grad is not None and float(k.grad.abs().sum()) > 0

"""MLEM, OSEM, OSL-MAP, BSREM, the fused EM update, post-filter and FBP."""

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

import pettk
from pettk.backends.em_update import DEFAULT_EPS, em_ratio, em_update
from pettk.likelihood import DEFAULT_EPS as LIKELIHOOD_EPS
from pettk.metrics import nrmse
from pettk.recon import (
    bsrem,
    fbp,
    map_objective,
    mlem,
    mlem_iterates,
    osem,
    osl_map,
    post_filter,
    quadratic,
    rdp,
)
from pettk.recon._common import prepare
from pettk.sim import shepp_logan_2d


@pytest.fixture(scope="module")
def problem():
    """A small noisy 2D problem with background, attenuation-like normalisation."""
    grid = pettk.ImageGrid((24, 24), 4.0)
    geo = pettk.ParallelBeam2D(30, 37, 3.5)
    rng = np.random.default_rng(0)
    x_true = 4.0 * shepp_logan_2d(grid)
    model = pettk.ForwardModel(pettk.Projector(grid, geo), normalisation=rng.uniform(0.7, 1.0, geo.shape),
                               additive=np.full(geo.shape, 0.5))
    y = rng.poisson(model.forward(x_true)).astype(np.float64)
    return grid, geo, model, x_true, y


def test_mlem_increases_the_likelihood_every_iteration(problem):
    _, _, model, _, y = problem
    values = [float(-pettk.poisson_nll(y, model.forward(s.x.numpy()))) for s in mlem_iterates(model, y, 30)]
    assert np.all(np.diff(values) > 0)


def test_osem_one_subset_equals_mlem(problem):
    _, _, model, _, y = problem
    a = mlem(model, y, 10)
    b = osem(model, y, 10, 1)
    np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    c = osem(model, y, 2, 5)
    assert c.shape == a.shape and np.all(c >= 0)


def test_mlem_converges_to_the_truth_on_noise_free_data():
    grid = pettk.ImageGrid((16, 16), 4.0)
    geo = pettk.ParallelBeam2D(40, 31, 2.5)
    model = pettk.ForwardModel(pettk.Projector(grid, geo))
    x_true = 1.0 + 3.0 * shepp_logan_2d(grid)
    inside = x_true > 0
    y = model.forward(x_true)
    errors = [float(np.linalg.norm(s.x.numpy() - x_true)) for s in mlem_iterates(model, y, 50, mask=inside)]
    assert np.all(np.diff(errors) < 0)
    assert errors[-1] < 0.2 * errors[0]


def test_fused_update_matches_the_torch_expression(problem):
    _, _, model, _, y = problem
    a = mlem(model, y, 5, fused=True)
    b = mlem(model, y, 5, fused=False)
    np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    yt = torch.tensor([0.0, 2.0, 3.0, 0.0])
    ybar = torch.tensor([0.0, 0.0, 1.5, 2.0])
    torch.testing.assert_close(em_ratio(yt, ybar), torch.tensor([0.0, 2.0 / DEFAULT_EPS, 2.0, 0.0]))
    x = torch.tensor([1.0, 2.0, 3.0, 4.0])
    out = em_update(x, torch.tensor([2.0, 2.0, 2.0, 2.0]), torch.tensor([1.0, 0.0, 4.0, 2.0]),
                    torch.tensor([True, True, True, False]), out=x)
    assert out is x
    torch.testing.assert_close(x, torch.tensor([2.0, 0.0, 1.5, 0.0]))
    assert DEFAULT_EPS == LIKELIHOOD_EPS


def test_start_image_mask_and_callback(problem):
    grid, _, model, _, y = problem
    mask = np.zeros(grid.shape, dtype=bool)
    mask[4:20, 4:20] = True
    seen = []
    x = mlem(model, y, 7, mask=mask, callback=lambda s: seen.append(s.iteration) or s.iteration == 4)
    assert seen == [1, 2, 3, 4]
    assert np.all(x[~mask] == 0) and np.all(x[mask] > 0)
    start = prepare(model, y).x0
    net = y.sum() - 0.5 * y.size
    assert float((model.linear(start)).sum()) == pytest.approx(net, rel=1e-6)


def test_bsrem_reaches_the_map_solution(problem):
    grid, _, model, _, y = problem
    prior = rdp(grid, gamma=2.0, epsilon=1e-3)
    beta = 0.5
    yt = torch.from_numpy(y)

    def negative_objective(flat):
        x = torch.from_numpy(flat.reshape(grid.shape)).requires_grad_(True)
        value = pettk.poisson_nll(yt, model.forward(x)) + beta * prior.value(x)
        value.backward()
        return float(value.detach()), x.grad.numpy().ravel().copy()

    x_start = prepare(model, y).x0.numpy()
    ref = minimize(negative_objective, x_start.ravel(), jac=True, method="L-BFGS-B",
                   bounds=[(0, None)] * x_start.size, options=dict(maxiter=5000, ftol=1e-15, gtol=1e-12))
    optimum = -ref.fun

    def projected_gradient_norm(x):
        _, g = negative_objective(x.ravel())
        ascent = -g
        return float(np.linalg.norm(np.where(x.ravel() > 0, ascent, np.maximum(ascent, 0))))

    x = bsrem(model, y, prior, beta, 1000, 1, relaxation=0.005, delta=0.2)
    assert (optimum - map_objective(model, y, x, prior, beta)) / abs(optimum) < 1e-4
    assert projected_gradient_norm(x) < 1e-3 * projected_gradient_norm(x_start)
    # with subsets: tests/test_bsrem_convergence.py


def test_osl_map_smooths_and_keeps_likelihood_reasonable(problem):
    grid, _, model, x_true, y = problem
    x_ml = mlem(model, y, 40)
    x_map = osl_map(model, y, quadratic(grid), 0.05, 40)
    rough = lambda im: float(np.abs(np.diff(im, axis=0)).sum() + np.abs(np.diff(im, axis=1)).sum())
    assert rough(x_map) < rough(x_ml)
    assert np.all(x_map >= 0)


def test_post_filter_preserves_counts_inside():
    grid = pettk.ImageGrid((40, 40), 2.0)
    x = np.zeros(grid.shape)
    x[18:22, 18:22] = 1.0
    f = post_filter(x, grid, 6.0)
    assert f.sum() == pytest.approx(x.sum(), rel=1e-9)
    assert f.max() < x.max()
    with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., 40, 40\)"):
        post_filter(np.zeros((3, 3)), grid, 6.0)


def test_fbp_of_shepp_logan_is_within_5_percent():
    grid = pettk.ImageGrid((256, 256), 1.0)
    x = shepp_logan_2d(grid)
    geo = pettk.ParallelBeam2D(256, 735, 0.5)  # radial sampling at half the voxel size
    y = pettk.Projector(grid, geo).forward(x)
    assert nrmse(fbp(y, geo, grid), x) < 0.05
    assert nrmse(fbp(torch.from_numpy(y), geo, grid, window="hann").numpy(), x) < 0.2


def test_fbp_of_a_gaussian_is_nearly_exact():
    grid = pettk.ImageGrid((96, 96), 1.0)
    xx, yy = grid.coordinates()
    blob = np.exp(-((xx - 5) ** 2 + yy ** 2) / (2 * 10.0 ** 2))
    geo = pettk.ParallelBeam2D(120, 161, 1.0)
    rec = fbp(pettk.Projector(grid, geo).forward(blob), geo, grid)
    assert nrmse(rec, blob) < 5e-3


def test_recon_rejects_bad_input(problem, tiny):
    grid, geo, model, _, y = problem
    with pytest.raises(ValueError, match=r"y must have shape \(30, 37\)"):
        mlem(model, y[:5], 2)
    with pytest.raises(ValueError, match="y holds counts and must be >= 0"):
        mlem(model, -y, 2)
    with pytest.raises(ValueError, match="n_iter must be an integer >= 1"):
        mlem(model, y, 0)
    with pytest.raises(TypeError, match="model must be a ForwardModel"):
        mlem("model", y, 1)
    with pytest.raises(TypeError, match="mask must be a boolean image"):
        mlem(model, y, 1, mask=np.ones(grid.shape))
    with pytest.raises(ValueError, match="beta must be a finite number >= 0"):
        bsrem(model, y, rdp(grid), -1.0, 2)
    with pytest.raises(TypeError, match="prior must be a pettk.recon prior"):
        bsrem(model, y, "rdp", 1.0, 2)
    with pytest.raises(ValueError, match="window must be one of"):
        fbp(y, geo, grid, window="gauss")
    with pytest.raises(TypeError, match="fbp needs a ParallelBeam2D"):
        fbp(y, tiny.layout, grid)

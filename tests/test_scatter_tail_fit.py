"""Tail mask, tail fit and the scatter <-> reconstruction loop (pettk.scatter.tail_fit, .loop) on
2D data whose scatter is the independent brute-force single-scatter integral
(tests/_scatter_brute_force.py), with Poisson noise and randoms."""

import numpy as np
import pytest
import torch
from _scatter_brute_force import brute_force_scatter

import pettk
from pettk.scatter import fit_tail_scale, scatter_additive, scatter_loop, single_scatter, tail_mask

TRUE_SCALE = 1.3  # e.g. multiple scatter on top of single scatter
SSS = {"scatter_step_mm": 12.0, "per_side": 4, "slab_thickness_mm": 4.0}


@pytest.fixture(scope="module")
def data():
    scanner = pettk.RegularPolygonScanner(160.0, 24, 8, 5.2, [0.0])
    proj = pettk.Projector(pettk.ImageGrid((40, 40), 4.0), pettk.SinogramLayout2D(scanner, radial_trim=48))
    x, y = proj.grid.coordinates()
    body = (x / 60) ** 2 + (y / 72) ** 2 < 1
    mu = np.where(body, 0.0096, 0.0)
    act = body + 3.0 * ((x + 20) ** 2 + (y - 25) ** 2 < 15**2)
    counts_per_unit = 400.0
    activity = counts_per_unit * act
    att = np.exp(-proj.forward(mu))
    trues = att * proj.forward(activity)
    scatter = TRUE_SCALE * brute_force_scatter(activity, mu, proj.grid, proj.geometry, slab_mm=4.0)
    randoms = np.full(trues.shape, 0.1 * trues.mean())
    prompts = np.random.default_rng(5).poisson(trues + scatter + randoms).astype(np.float64)
    return proj, activity, mu, att, scatter, randoms, prompts


def test_tail_mask():
    att = np.ones((3, 12))
    att[:, 5:8] = 0.5
    mask = tail_mask(att, threshold=0.95, margin=2)
    np.testing.assert_array_equal(mask[0], [1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 1, 1])
    t = tail_mask(torch.from_numpy(att), margin=0)
    assert t.dtype == torch.bool and t.sum() == 3 * 9


@pytest.mark.parametrize("method", ["poisson", "lsq"])
def test_tail_fit_recovers_the_scale(data, method):
    proj, activity, mu, att, scatter, randoms, prompts = data
    estimate = single_scatter(proj, activity, mu, **SSS)
    mask = tail_mask(att, 0.95, 2)
    assert mask.sum() > 500
    scale = fit_tail_scale(prompts, estimate, mask, randoms, method=method)
    assert scale == pytest.approx(TRUE_SCALE, rel=0.02)


def test_poisson_fit_is_the_likelihood_maximum():
    rng = np.random.default_rng(0)
    s = rng.uniform(0.1, 2.0, 400)
    r = np.full(400, 0.5)
    y = rng.poisson(0.7 * s + r).astype(float)
    mask = np.ones(400, dtype=bool)
    a = fit_tail_scale(y, s, mask, r)

    def loglik(b):
        return float(np.sum(y * np.log(b * s + r) - (b * s + r)))
    assert loglik(a) >= max(loglik(a * 0.99), loglik(a * 1.01))
    assert loglik(a) == pytest.approx(max(loglik(b) for b in np.linspace(0.9 * a, 1.1 * a, 201)), rel=1e-9)


def test_scatter_loop_recovers_scatter(data):
    proj, activity, mu, att, scatter, randoms, prompts = data
    result = scatter_loop(proj, prompts, mu, randoms=randoms, n_rounds=3, n_iter=3, n_subsets=4, sss_options=SSS)
    assert len(result.scales) == 3
    assert result.scales[-1] == pytest.approx(TRUE_SCALE, rel=0.05)
    assert float(result.scatter.sum()) == pytest.approx(scatter.sum(), rel=0.05)
    # the estimate follows the true scatter's shape, not only its total
    inside = scatter > 0.1 * scatter.max()
    rel = np.abs(result.scatter.numpy()[inside] / scatter[inside] - 1)
    assert np.median(rel) < 0.05


def test_scatter_additive_fits_forward_model(data):
    proj, activity, mu, att, scatter, randoms, prompts = data
    add = scatter_additive(proj, torch.from_numpy(activity), torch.from_numpy(mu), scale=TRUE_SCALE, **SSS)
    model = pettk.ForwardModel(proj, attenuation=att, additive=add + torch.from_numpy(randoms))
    ybar = model.forward(torch.from_numpy(activity))
    assert float(ybar.sum()) == pytest.approx(prompts.sum(), rel=0.02)
    with pytest.raises(ValueError, match="scale"):
        scatter_additive(proj, activity, mu, scale=-1.0)
    with pytest.raises(ValueError, match="normalisation must have shape"):
        scatter_additive(proj, activity, mu, normalisation=np.ones((3, 3)))


def test_tail_fit_bad_input(data):
    proj, activity, mu, att, scatter, randoms, prompts = data
    mask = tail_mask(att)
    with pytest.raises(ValueError, match="mask selects no bins"):
        fit_tail_scale(prompts, scatter, np.zeros_like(mask), randoms)
    with pytest.raises(ValueError, match="scatter must have the shape"):
        fit_tail_scale(prompts, scatter[:-1], mask, randoms)
    with pytest.raises(TypeError, match="mask must be boolean"):
        fit_tail_scale(prompts, scatter, mask.astype(float), randoms)
    with pytest.raises(ValueError, match="prompts must be finite and >= 0"):
        fit_tail_scale(-prompts, scatter, mask, randoms)
    with pytest.raises(ValueError, match="method"):
        fit_tail_scale(prompts, scatter, mask, randoms, method="ml")
    with pytest.raises(ValueError, match="threshold"):
        tail_mask(att, threshold=1.5)
    with pytest.raises(ValueError, match="prompts must have shape"):
        scatter_loop(proj, prompts[:-1], mu)
    with pytest.raises(ValueError, match="all views"):
        scatter_additive(pettk.Projector(proj.grid, proj.geometry, views=[0, 1]), activity, mu)

"""Sensitivity images are computed once per (model, subset split, dtype, device) and shared.

Back projections are counted by wrapping :meth:`pettk.Projector.adjoint` (every back projection
of a ForwardModel, sensitivity or EM update, goes through it).
"""

import numpy as np
import pytest
import torch

import pettk
from pettk.physics import ForwardModel
from pettk.recon import bsrem, mlem, osem, rdp
from pettk.recon._common import prepare, split_subsets
from pettk.sim.scan import simulate_scan


@pytest.fixture
def count_back_projections(monkeypatch):
    """A dict whose ``'n'`` counts calls of ``Projector.adjoint`` and ``'views'`` the views they
    covered (a full back projection covers ``n_views``)."""
    counter = {"n": 0, "views": 0}
    original = pettk.Projector.adjoint

    def counted(self, y):
        counter["n"] += 1
        counter["views"] += self.shape_out[self.geometry.view_axis]
        return original(self, y)

    monkeypatch.setattr(pettk.Projector, "adjoint", counted)
    return counter


@pytest.fixture
def case():
    """A 2D model with normalisation, attenuation, background and Poisson data."""
    rng = np.random.default_rng(7)
    grid = pettk.ImageGrid((24, 24), 2.0)
    P = pettk.Projector(grid, pettk.ParallelBeam2D(24, 35, 1.5))
    model = ForwardModel(P, normalisation=rng.uniform(0.6, 1.4, P.shape_out),
                         attenuation=rng.uniform(0.3, 1.0, P.shape_out), additive=np.full(P.shape_out, 0.1))
    x = torch.zeros(grid.shape, dtype=torch.float64)
    x[6:18, 6:18] = 2.0
    y = torch.poisson(model.forward(x), generator=torch.Generator().manual_seed(0))
    return model, y


def test_repeated_calls_back_project_the_sensitivity_once(case, count_back_projections):
    model, y = case
    n_views = model.shape_out[0]
    s1 = model.sensitivity(torch.float64)
    assert count_back_projections["n"] == 1
    assert model.sensitivity(torch.float64) is s1
    assert count_back_projections["n"] == 1
    model.sensitivity(torch.float32)  # another dtype: its own entry
    assert count_back_projections["n"] == 2

    # osem: first call computes the 4 subset sensitivities; later calls only do the EM updates
    count_back_projections.update(n=0, views=0)
    first = osem(model, y, 2, 4)
    assert count_back_projections["n"] == 4 + 2 * 4
    for _ in range(3):
        count_back_projections.update(n=0, views=0)
        again = osem(model, y, 2, 4)
        assert count_back_projections["n"] == 2 * 4
        assert count_back_projections["views"] == 2 * n_views
        torch.testing.assert_close(again, first, rtol=0, atol=0)

    # bsrem reuses the same split; mlem the full image
    count_back_projections.update(n=0, views=0)
    bsrem(model, y, rdp(model.projector.grid), 0.1, 2, 4)
    assert count_back_projections["n"] == 2 * 4
    count_back_projections.update(n=0, views=0)
    mlem(model, y, 3)
    assert count_back_projections["n"] == 3


def test_repeated_subsets_share_their_sensitivities(case, count_back_projections):
    model, _ = case
    first = [m.sensitivity(torch.float64) for m in model.subsets(3)]
    assert count_back_projections["n"] == 3
    second = model.subsets(3)
    assert all(m.sensitivity(torch.float64) is s for m, s in zip(second, first))
    assert count_back_projections["n"] == 3
    # another split is another key
    other = [m.sensitivity(torch.float64) for m in model.subsets(2)]
    assert count_back_projections["n"] == 5
    # each subset sensitivity is its own A_s^T 1, and they add up to the full one
    for m, s in zip(second, first):
        fresh = ForwardModel(m.projector, normalisation=m.mult).sensitivity(torch.float64)
        torch.testing.assert_close(s, fresh, rtol=1e-14, atol=0)
    torch.testing.assert_close(sum(first), model.sensitivity(torch.float64), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(sum(other), model.sensitivity(torch.float64), rtol=1e-12, atol=1e-12)


def test_with_background_copies_scale_the_shared_sensitivity(case, count_back_projections):
    model, _ = case
    base = model.sensitivity(torch.float64)
    sub_base = [m.sensitivity(torch.float64) for m in model.subsets(4)]
    assert count_back_projections["n"] == 5
    for scale in (1.0, 0.25, 3.7e4):
        count_back_projections.update(n=0)
        copy = model.with_background(torch.rand(model.shape_out, dtype=torch.float64), scale=scale)
        s = copy.sensitivity(torch.float64)
        assert s is copy.sensitivity(torch.float64)  # the rescaled image is kept too
        assert (s is base) == (scale == 1.0)
        for m, sb in zip(copy.subsets(4), sub_base):
            torch.testing.assert_close(m.sensitivity(torch.float64), scale * sb, rtol=1e-12, atol=0)
        # a copy of a copy multiplies the scales
        twice = copy.with_background(None, scale=2.0)
        twice.sensitivity(torch.float64)
        assert count_back_projections["n"] == 0
        # against a model built from the scaled factors without any cache
        fresh = ForwardModel(model.projector, normalisation=model.mult * scale).sensitivity(torch.float64)
        torch.testing.assert_close(s, fresh, rtol=1e-12, atol=0)
        torch.testing.assert_close(twice.sensitivity(torch.float64), 2.0 * fresh, rtol=1e-12, atol=0)
    # a copy computes first: the parent reads it back at its own scale
    count_back_projections.update(n=0)
    model2 = ForwardModel(model.projector, normalisation=model.mult.clone())
    copy = model2.with_background(None, scale=0.01)
    s_copy = copy.sensitivity(torch.float64)
    assert count_back_projections["n"] == 1
    torch.testing.assert_close(model2.sensitivity(torch.float64), s_copy / 0.01, rtol=1e-12, atol=0)
    assert count_back_projections["n"] == 1
    # a model without mult: with_background(scale) builds a constant mult
    bare = ForwardModel(model.projector)
    scaled = bare.with_background(None, scale=5.0)
    torch.testing.assert_close(scaled.sensitivity(torch.float64), 5.0 * bare.sensitivity(torch.float64),
                               rtol=1e-12, atol=0)
    assert count_back_projections["n"] == 2


def test_low_dose_copies_of_a_scan_reuse_the_sensitivities(count_back_projections):
    grid = pettk.ImageGrid((20, 20), 2.0)
    P = pettk.Projector(grid, pettk.ParallelBeam2D(20, 29, 1.5))
    phantom = np.zeros(grid.shape)
    phantom[5:15, 5:15] = 1.0
    scan = simulate_scan(phantom, ForwardModel(P), 2e4, randoms_fraction=0.2, scatter_fraction=0.2, seed=0)
    count_back_projections.update(n=0)
    y, low = scan.low_dose(4.0, seed=1)
    osem(low, y.to(torch.float64), 1, 4)
    # 4 subset sensitivities (their sum is the full one) + 4 updates
    assert count_back_projections["n"] == 4 + 4
    for drf in (2.0, 4.0, 8.0, 16.0):
        y, low = scan.low_dose(drf, seed=2)
        count_back_projections.update(n=0)
        osem(low, y.to(torch.float64), 1, 4)
        assert count_back_projections["n"] == 4
        fresh = ForwardModel(P, normalisation=torch.full(P.shape_out, scan.counts_per_unit / drf,
                                                         dtype=torch.float64))
        torch.testing.assert_close(low.sensitivity(torch.float64), fresh.sensitivity(torch.float64),
                                   rtol=1e-12, atol=0)


def test_prepare_with_n_subsets_builds_the_full_sensitivity_from_the_split(case, count_back_projections):
    model, y = case
    problem = prepare(model, y, n_subsets=4)
    assert count_back_projections["n"] == 4
    parts = split_subsets(problem, 4)
    assert count_back_projections["n"] == 4
    torch.testing.assert_close(model.sensitivity(torch.float64), sum(parts.sens), rtol=0, atol=0)
    direct = ForwardModel(model.projector, normalisation=model.mult).sensitivity(torch.float64)
    torch.testing.assert_close(model.sensitivity(torch.float64), direct, rtol=1e-12, atol=1e-12)
    # once cached, the full image is kept whatever split comes next
    kept = model.sensitivity(torch.float64)
    prepare(model, y, n_subsets=3)
    assert model.sensitivity(torch.float64) is kept
    with pytest.raises(ValueError, match="n_subsets"):
        prepare(model, y, n_subsets=0)


def test_cache_is_invalidated_when_mult_changes(case, count_back_projections):
    model, _ = case
    s = model.sensitivity(torch.float64).clone()
    subs = model.subsets(2)
    [m.sensitivity(torch.float64) for m in subs]
    assert count_back_projections["n"] == 3

    # replacing mult: a different sensitivity
    other = ForwardModel(model.projector, normalisation=model.mult.clone())
    other.sensitivity(torch.float64)
    count_back_projections.update(n=0)
    other.mult = model.mult * torch.linspace(0.5, 1.5, model.shape_out[-1], dtype=torch.float64)
    s_new = other.sensitivity(torch.float64)
    assert count_back_projections["n"] == 1
    expected = ForwardModel(model.projector, normalisation=other.mult).sensitivity(torch.float64)
    torch.testing.assert_close(s_new, expected, rtol=1e-14, atol=0)
    assert not torch.allclose(s_new, s)

    # modifying mult in place: the model and its (view) subsets recompute
    count_back_projections.update(n=0)
    with torch.no_grad():
        model.mult.mul_(2.0)
    torch.testing.assert_close(model.sensitivity(torch.float64), 2.0 * s, rtol=1e-12, atol=0)
    assert count_back_projections["n"] == 1
    for m in subs:
        m.sensitivity(torch.float64)
    assert count_back_projections["n"] == 3
    torch.testing.assert_close(sum(m.sensitivity(torch.float64) for m in subs), 2.0 * s, rtol=1e-12, atol=1e-12)

    # to(): a fresh cache (here a dtype change of mult: float32 factors)
    count_back_projections.update(n=0)
    moved = model.to(dtype=torch.float32)
    moved.sensitivity(torch.float64)
    assert count_back_projections["n"] == 1


def test_sensitivity_of_a_differentiable_mult_keeps_autograd_working():
    grid = pettk.ImageGrid((16, 16), 2.0)
    P = pettk.Projector(grid, pettk.ParallelBeam2D(12, 23, 2.0))
    mu = torch.full(grid.shape, 0.01, dtype=torch.float64, requires_grad=True)
    model = ForwardModel(P, mu=mu)
    assert model.mult.requires_grad
    copy = model.with_background(None, scale=3.0)
    s = model.sensitivity(torch.float64)
    s3 = copy.sensitivity(torch.float64)
    assert not s.requires_grad and not s3.requires_grad
    torch.testing.assert_close(s3, 3.0 * s, rtol=1e-12, atol=0)
    # the autograd path through mult is untouched: d/dmu of sum(forward(x))
    x = torch.ones(grid.shape, dtype=torch.float64)
    copy.forward(x).sum().backward()
    assert mu.grad is not None and bool(torch.isfinite(mu.grad).all()) and float(mu.grad.abs().sum()) > 0
    # the gradient equals -3 * P^T(mult * P x), the derivative of exp(-P mu) factors
    expected = -3.0 * P.adjoint(model.mult.detach() * P.forward(x))
    torch.testing.assert_close(mu.grad, expected, rtol=1e-10, atol=1e-12)


def test_only_the_most_recent_splits_are_kept(case, count_back_projections):
    model, _ = case
    keep = pettk.physics._SensitivityCache.max_splits
    full = model.sensitivity(torch.float64)
    for n in range(2, 3 + keep):
        [m.sensitivity(torch.float64) for m in model.subsets(n)]
    count_back_projections.update(n=0)
    # the last `keep` splits are cached, the older ones were dropped; the full image stays
    for n in range(3 + keep - 1, 2, -1):
        [m.sensitivity(torch.float64) for m in model.subsets(n)]
    assert count_back_projections["n"] == 0
    [m.sensitivity(torch.float64) for m in model.subsets(2)]
    assert count_back_projections["n"] == 2
    assert model.sensitivity(torch.float64) is full
    n_images = len(model._sens_cache.images)
    assert n_images == 1 + sum(range(2, 2 + keep))  # full + the splits 2 .. keep + 1 (just used)

"""Scan simulation and dose reduction by binomial thinning."""

import numpy as np
import pytest
import torch

import pettk
from pettk.sim.scan import simulate_scan, thin


@pytest.fixture(scope="module")
def setup():
    p = pettk.preset("mmr-like")
    grid = pettk.ImageGrid((48, 48), 128 * 2.0863 / 48)
    x = np.zeros(grid.shape)
    xx, yy = grid.coordinates()
    x[(xx / 70) ** 2 + (yy / 85) ** 2 <= 1] = 1.0
    x[(xx / 20) ** 2 + ((yy - 20) / 20) ** 2 <= 1] = 4.0
    model = pettk.ForwardModel(pettk.Projector(grid, p.layout_2d), psf=4.5, mu=0.0096 * (x > 0))
    return grid, x, model


def test_expected_counts_and_fractions(setup):
    _, x, model = setup
    scan = simulate_scan(x, model, 2e6, randoms_fraction=0.15, scatter_fraction=0.3, seed=3)
    total = float(scan.expected.sum())
    assert total == pytest.approx(2e6, rel=1e-2)
    assert float(scan.randoms.sum()) / total == pytest.approx(0.15, rel=0.02)
    s, t = float(scan.scatter.sum()), float(scan.trues.sum())
    assert s / (s + t) == pytest.approx(0.3, rel=0.02)
    assert float(scan.prompts.sum()) == pytest.approx(2e6, rel=0.01)
    torch.testing.assert_close(scan.model.forward(torch.from_numpy(x)), scan.expected)
    assert torch.all(scan.prompts == torch.round(scan.prompts))


def test_same_seed_same_counts(setup):
    _, x, model = setup
    a = simulate_scan(x, model, 1e5, 0.1, 0.2, seed=7).prompts
    b = simulate_scan(x, model, 1e5, 0.1, 0.2, seed=7).prompts
    c = simulate_scan(x, model, 1e5, 0.1, 0.2, seed=8).prompts
    torch.testing.assert_close(a, b)
    assert not torch.equal(a, c)


def test_thinning_mean_and_nesting(rng):
    parent = rng.poisson(30.0, size=200_000).astype(np.float64)
    for drf in (4.0, 20.0):
        child = thin(parent, drf, seed=1)
        assert child.dtype == parent.dtype and child.shape == parent.shape
        assert np.all(child <= parent) and np.all(child >= 0)
        # mean of thin(y, drf) equals y / drf: z-test on the total (binomial variance)
        expected = parent.sum() / drf
        sd = np.sqrt(parent.sum() * (1 / drf) * (1 - 1 / drf))
        assert abs(child.sum() - expected) < 5 * sd
        # per-bin: a regression of child on parent has slope 1 / drf
        slope = np.cov(child, parent)[0, 1] / parent.var()
        assert slope == pytest.approx(1 / drf, rel=0.05)
    np.testing.assert_array_equal(thin(parent, 1.0), parent)
    np.testing.assert_array_equal(thin(parent, 4.0, seed=5), thin(parent, 4.0, seed=5))


def test_low_dose_model_scales(setup):
    _, x, model = setup
    scan = simulate_scan(x, model, 1e6, 0.1, 0.2, seed=0)
    y_ld, model_ld = scan.low_dose(20, seed=1)
    torch.testing.assert_close(model_ld.forward(torch.from_numpy(x)), scan.expected / 20)
    assert float(y_ld.sum()) == pytest.approx(float(scan.prompts.sum()) / 20, rel=0.03)


def test_bad_input(setup):
    _, x, model = setup
    with pytest.raises(ValueError, match="drf must be a finite number >= 1"):
        thin(np.ones(3), 0.5)
    with pytest.raises(ValueError, match="counts must be finite non-negative integers"):
        thin(np.array([1.5]), 2)
    with pytest.raises(ValueError, match="total_counts must be a finite number > 0"):
        simulate_scan(x, model, -1.0)
    with pytest.raises(ValueError, match=r"randoms_fraction must be in \[0, 1\)"):
        simulate_scan(x, model, 1e5, randoms_fraction=1.0)
    with pytest.raises(ValueError, match="the activity must have shape"):
        simulate_scan(np.ones((3, 3)), model, 1e5)
    with pytest.raises(ValueError, match="must have no additive term"):
        simulate_scan(x, model.with_background(np.ones(model.shape_out)), 1e5)
    with pytest.raises(TypeError, match="seed must be a non-negative int"):
        simulate_scan(x, model, 1e5, seed="a")


def test_3d_scan_scatter_smooth_across_planes_and_progress(tiny, capsys):
    x = np.zeros(tiny.grid.shape)
    x[8:24, 10:22, 1:7] = 1.0
    x[12:16, 12:16, 3] = 8.0  # one hot slice: the trues vary from plane to plane
    model = pettk.ForwardModel(pettk.Projector(tiny.grid, tiny.layout))
    scan = simulate_scan(x, model, 5e5, randoms_fraction=0.1, scatter_fraction=0.3, seed=2, progress=True)
    s, t = float(scan.scatter.sum()), float(scan.trues.sum())
    assert s / (s + t) == pytest.approx(0.3, rel=1e-12)
    assert float(scan.randoms.sum()) == pytest.approx(0.1 * 5e5, rel=1e-12)
    direct = [tiny.layout.plane_index(r, r) for r in range(tiny.scanner.n_rings)]
    rough = lambda v: float((v[direct][2:] - 2 * v[direct][1:-1] + v[direct][:-2]).abs().sum() / v[direct].sum())
    assert rough(scan.scatter) < 0.05 * rough(scan.trues)
    torch.testing.assert_close(scan.model.forward(torch.from_numpy(x)), scan.expected)
    assert "simulate_scan" in capsys.readouterr().err
    # the same draws with the bars off
    quiet = simulate_scan(x, model, 5e5, randoms_fraction=0.1, scatter_fraction=0.3, seed=2)
    assert torch.equal(quiet.prompts, scan.prompts)

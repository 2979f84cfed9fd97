"""Randoms and scatter background models."""

import numpy as np
import pytest
import torch

import pettk
from pettk.background import randoms_sinogram, scatter_sinogram
from pettk.geometry import TOFParams


def test_randoms_uniform_and_from_singles(tiny, rng):
    uniform = randoms_sinogram(tiny.layout, 500.0)
    assert uniform.shape == tiny.layout.shape
    assert float(uniform.sum()) == pytest.approx(500.0, rel=1e-5)
    assert float(uniform.std() / uniform.mean()) < 1e-6
    singles = rng.uniform(0.5, 2.0, (tiny.scanner.n_rings, tiny.scanner.n_crystals_per_ring))
    r = randoms_sinogram(tiny.layout, 1000.0, singles=singles, dtype=torch.float64).numpy()
    assert r.sum() == pytest.approx(1000.0, rel=1e-12)
    # R(plane, view, radial) is proportional to s[ring_start, a] * s[ring_end, b]
    p, v, k = 5, 7, 11
    rs, re = tiny.layout.plane_rings[p]
    a, b = tiny.layout.crystal_pairs[v, k]
    p2, v2, k2 = 0, 3, 20
    rs2, re2 = tiny.layout.plane_rings[p2]
    a2, b2 = tiny.layout.crystal_pairs[v2, k2]
    ratio = (singles[rs, a] * singles[re, b]) / (singles[rs2, a2] * singles[re2, b2])
    assert r[p, v, k] / r[p2, v2, k2] == pytest.approx(ratio, rel=1e-12)


def test_randoms_tof_spreads_evenly(tiny):
    tof = TOFParams(fwhm_mm=20.0, n_bins=15, bin_width_mm=9.0)
    r = randoms_sinogram(tiny.layout, 300.0, tof=tof)
    assert r.shape == tiny.layout.shape + (15,)
    assert float(r.sum()) == pytest.approx(300.0, rel=1e-5)
    torch.testing.assert_close(r[..., 0], r[..., 7])


def test_randoms_reject_bad_input(tiny, beam2d):
    with pytest.raises(ValueError, match="total_counts must be a finite number >= 0"):
        randoms_sinogram(tiny.layout, -1.0)
    with pytest.raises(ValueError, match=r"singles must have shape \(4, 96\)"):
        randoms_sinogram(tiny.layout, 1.0, singles=np.ones((4, 95)))
    with pytest.raises(ValueError, match="singles rates need a SinogramLayout"):
        randoms_sinogram(beam2d, 1.0, singles=np.ones((1, 10)))


def test_scatter_fraction_and_smoothness(tiny, rng):
    P = pettk.Projector(tiny.grid, tiny.layout)
    x = np.zeros(tiny.grid.shape)
    x[10:22, 12:20, 2:6] = 1.0
    trues = P.forward(x)
    scatter = scatter_sinogram(trues, 0.35)
    assert isinstance(scatter, np.ndarray) and scatter.shape == trues.shape
    assert scatter.sum() / (scatter.sum() + trues.sum()) == pytest.approx(0.35, rel=1e-10)
    # far smoother than the trues along the radial axis
    rough = lambda s: np.abs(np.diff(s, n=2, axis=-1)).sum() / s.sum()
    assert rough(scatter) < 0.1 * rough(trues)
    assert np.all(scatter >= 0)
    assert scatter_sinogram(trues, 0.0).sum() == 0.0


def test_scatter_rejects_bad_input():
    with pytest.raises(ValueError, match=r"scatter_fraction must be in \[0, 1\)"):
        scatter_sinogram(np.ones((4, 5)), 1.0)
    with pytest.raises(ValueError, match="trues must be finite and >= 0"):
        scatter_sinogram(-np.ones((4, 5)), 0.2)
    with pytest.raises(ValueError, match="at least 3 dimensions"):
        scatter_sinogram(np.ones((4, 5)), 0.2, tof_axis=True)


def test_scatter_2d_geometry_only_checks_the_shape():
    layout2d = pettk.preset("mmr-like").layout_2d
    trues = np.random.default_rng(0).uniform(0, 3, layout2d.shape)
    np.testing.assert_array_equal(scatter_sinogram(trues, 0.2, geometry=layout2d), scatter_sinogram(trues, 0.2))
    with pytest.raises(ValueError, match=r"trues must have the geometry's shape \(224, 129\)"):
        scatter_sinogram(trues[:, :-1], 0.2, geometry=layout2d)

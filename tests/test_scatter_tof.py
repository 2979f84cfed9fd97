"""TOF single scatter simulation (pettk.scatter.single_scatter_tof): the TOF bins sum to the non-TOF
SSS; against an independent brute-force TOF single-scatter integral
(tests/_scatter_brute_force.py: every voxel a scatter point, every activity sample on each leg an
event at its own TOF position, scipy.special.ndtr bin integrals); a point source's scatter lands
where its geometry says; bad input."""

import numpy as np
import pytest
import torch
from _scatter_brute_force import brute_force_scatter_tof

import pettk
from pettk.scatter import scatter_additive, scatter_loop, single_scatter, single_scatter_tof

TOF = pettk.TOFParams(fwhm_mm=45.0, n_bins=15, bin_width_mm=20.0)  # 300 mm of bins: every profile


@pytest.fixture(scope="module")
def case2d():
    # 96 crystals (16 sides) of radius 120 mm around a 110 x 90 mm water ellipse with a hot spot
    scanner = pettk.RegularPolygonScanner(120.0, 16, 6, 7.0, [0.0])
    layout = pettk.SinogramLayout2D(scanner, radial_trim=24)
    grid = pettk.ImageGrid((24, 24), 6.0)
    x, y = grid.coordinates()
    body = (x / 55) ** 2 + (y / 45) ** 2 < 1
    mu = np.where(body, 0.0096, 0.0)
    act = body + 4.0 * ((x + 20) ** 2 + (y - 15) ** 2 < 12**2)
    return pettk.Projector(grid, layout), act, mu


def test_tof_bins_sum_to_non_tof_sss(case2d):
    proj, act, mu = case2d
    opts = dict(scatter_step_mm=12.0, per_side=3, slab_thickness_mm=6.0)
    plain = single_scatter(proj, act, mu, **opts)
    tof = single_scatter_tof(proj, act, mu, tof=TOF, **opts)
    assert tof.shape == plain.shape + (TOF.n_bins,)
    np.testing.assert_allclose(tof.sum(-1), plain, rtol=1e-6, atol=1e-9 * plain.max())
    # bins covering 100 mm only: the mass beyond them is dropped, never added
    short = single_scatter_tof(proj, act, mu, tof=pettk.TOFParams(fwhm_mm=45.0, n_bins=5, bin_width_mm=20.0),
                               **opts)
    assert np.all(short.sum(-1) <= plain * (1 + 1e-9) + 1e-12)
    assert 0.3 < short.sum() / plain.sum() < 0.95


def test_tof_bins_sum_to_non_tof_sss_3d():
    scanner = pettk.RegularPolygonScanner(120.0, 16, 3, 10.0, np.arange(4) * 8.0 - 12.0)
    layout = pettk.SinogramLayout(scanner, radial_trim=12)
    grid = pettk.ImageGrid((14, 14, 4), (9.0, 9.0, 8.0))
    x, y, z = grid.coordinates()
    body = (x**2 + y**2 < 50**2) & (np.abs(z) < 14)
    mu = np.where(body, 0.0096, 0.0)
    act = body + 3.0 * ((x - 20) ** 2 + y**2 + z**2 < 15**2)
    proj = pettk.Projector(grid, layout, tof=TOF)
    opts = dict(scatter_step_mm=18.0, per_side=2, n_axial=2)
    plain = single_scatter(proj, act, mu, **opts)
    tof = single_scatter_tof(proj, act, mu, **opts)  # tof from the projector
    assert tof.shape == proj.shape_out
    np.testing.assert_allclose(tof.sum(-1), plain, rtol=1e-6, atol=1e-9 * plain.max())
    # a plane and its swapped ring pair hold the same LORs run backwards: mirrored TOF profiles
    rings = [tuple(r) for r in layout.plane_rings]
    p, q = rings.index((0, 3)), rings.index((3, 0))
    a, b = tof[p].reshape(-1, TOF.n_bins).sum(0), tof[q].reshape(-1, TOF.n_bins).sum(0)
    assert not np.allclose(a, a[::-1], rtol=1e-3)
    assert a.sum() == pytest.approx(b.sum(), rel=1e-6)


def test_tof_sss_matches_brute_force(case2d):
    proj, act, mu = case2d
    views = list(range(0, proj.geometry.n_views, 6))
    ref = brute_force_scatter_tof(act, mu, proj.grid, proj.geometry, TOF.bin_edges_mm, TOF.sigma_mm,
                                  slab_mm=6.0, views=views)[views]
    # every voxel a scatter point, every crystal a detector: the same integral up to the line
    # integrals' discretisation and the per-chunk Gaussian of each leg's emission
    est = single_scatter_tof(proj, act, mu, tof=TOF, scatter_step_mm=6.0, per_side=6, slab_thickness_mm=6.0)[views]
    significant = ref > 0.1 * ref.max()
    assert float(np.abs(est[significant] / ref[significant] - 1).max()) < 0.02
    # a single chunk per leg (the emission-weighted mean offset and spread) is visibly worse
    one = single_scatter_tof(proj, act, mu, tof=TOF, scatter_step_mm=6.0, per_side=6, slab_thickness_mm=6.0,
                             leg_step_mm=1000.0)[views]
    assert float(np.abs(one[significant] / ref[significant] - 1).max()) > 0.05
    # Watson's coarse detectors and scatter cells: the TOF centroid of every LOR within 1 mm
    fast = single_scatter_tof(proj, act, mu, tof=TOF, scatter_step_mm=12.0, per_side=3, slab_thickness_mm=6.0)[views]
    total = ref.sum(-1)
    keep = total > 0.1 * total.max()
    centroid = lambda s: (s * TOF.bin_centres_mm).sum(-1)[keep] / s.sum(-1)[keep]  # noqa: E731
    assert float(np.abs(centroid(fast) - centroid(ref)).max()) < 1.0


def test_point_source_scatter_centroid_follows_the_source():
    scanner = pettk.RegularPolygonScanner(120.0, 16, 6, 7.0, [0.0])
    layout = pettk.SinogramLayout2D(scanner, radial_trim=24)
    grid = pettk.ImageGrid((24, 24), 6.0)
    x, y = grid.coordinates()
    mu = np.where(x**2 + y**2 < 60**2, 0.0096, 0.0)
    proj = pettk.Projector(grid, layout)
    start, end = layout.lor_endpoints()
    direction = (end - start) / np.linalg.norm(end - start, axis=-1, keepdims=True)
    mid = 0.5 * (start + end)
    centroids = {}
    for px in (-30.0, 0.0, 30.0):
        act = ((x - px) ** 2 + y**2 < 7**2).astype(float)
        s = single_scatter_tof(proj, act, mu, tof=TOF, scatter_step_mm=6.0, per_side=3, slab_thickness_mm=6.0)
        per_view = s.sum(1)
        centroid = (per_view * TOF.bin_centres_mm).sum(-1) / per_view.sum(-1)
        # where a true coincidence from the source lands on each LOR, averaged with the scatter's weights
        offset = ((np.array([px, 0.0]) - mid) * direction).sum(-1)
        expected = (offset * s.sum(-1)).sum(1) / s.sum(-1).sum(1)
        np.testing.assert_allclose(centroid, expected, rtol=0.05, atol=0.5)
        centroids[px] = centroid
    assert np.abs(centroids[0.0]).max() < 1e-6  # centred source: every profile symmetric
    np.testing.assert_allclose(centroids[30.0], -centroids[-30.0], atol=1e-6)
    assert centroids[30.0].max() > 25.0 and np.ptp(centroids[30.0]) > 30.0  # it moves with the view


def test_tof_sss_torch_and_bad_input(case2d):
    proj, act, mu = case2d
    opts = dict(scatter_step_mm=24.0, per_side=2, slab_thickness_mm=6.0)
    out = single_scatter_tof(proj, torch.from_numpy(act.astype(np.float32)), torch.from_numpy(mu), tof=TOF, **opts)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32 and out.shape[-1] == TOF.n_bins
    with pytest.raises(ValueError, match="tof is required"):
        single_scatter_tof(proj, act, mu, **opts)
    with pytest.raises(TypeError, match="tof must be a TOFParams"):
        single_scatter_tof(proj, act, mu, tof={"fwhm_mm": 45.0}, **opts)
    with pytest.raises(ValueError, match="leg_step_mm"):
        single_scatter_tof(proj, act, mu, tof=TOF, leg_step_mm=-1.0, **opts)
    with pytest.raises(ValueError, match="mu must be >= 0"):
        single_scatter_tof(proj, act, -mu, tof=TOF, **opts)
    with pytest.raises(TypeError, match="SinogramLayout"):
        beam = pettk.ParallelBeam2D(8, 10, 4.0, half_length_mm=150.0)
        single_scatter_tof(pettk.Projector(proj.grid, beam), act, mu, tof=TOF)


def test_scatter_loop_with_tof():
    # a coarser ring and grid than case2d: the brute-force truth covers every LOR here
    scanner = pettk.RegularPolygonScanner(120.0, 16, 4, 10.0, [0.0])
    layout = pettk.SinogramLayout2D(scanner, radial_trim=16)
    grid = pettk.ImageGrid((16, 16), 8.0)
    x, y = grid.coordinates()
    body = (x / 55) ** 2 + (y / 45) ** 2 < 1
    mu = np.where(body, 0.0096, 0.0)
    activity = 300.0 * (body + 4.0 * ((x + 20) ** 2 + (y - 15) ** 2 < 12**2))
    proj = pettk.Projector(grid, layout, tof=TOF)
    trues = np.exp(-proj.without_tof().forward(mu))[..., None] * proj.forward(activity)
    scatter = 1.3 * brute_force_scatter_tof(activity, mu, grid, layout, TOF.bin_edges_mm, TOF.sigma_mm, slab_mm=6.0)
    randoms = np.full(trues.shape, 0.1 * trues.mean())
    prompts = np.random.default_rng(3).poisson(trues + scatter + randoms).astype(np.float64)
    opts = dict(scatter_step_mm=8.0, per_side=4, slab_thickness_mm=6.0)
    result = scatter_loop(proj, prompts, mu, randoms=randoms, n_rounds=2, n_iter=3, n_subsets=4, sss_options=opts)
    assert result.scatter.shape == proj.shape_out
    assert result.scales[-1] == pytest.approx(1.3, rel=0.08)
    est = result.scatter.numpy()
    inside = scatter > 0.1 * scatter.max()
    assert np.median(np.abs(est[inside] / scatter[inside] - 1)) < 0.08
    add = scatter_additive(proj, activity, mu, scale=1.3, **opts)
    assert add.shape == proj.shape_out
    assert add.sum() == pytest.approx(scatter.sum(), rel=0.03)

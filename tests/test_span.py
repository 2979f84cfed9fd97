"""Axial compression (span): plane grouping, the operator and its adjoint, projector, reconstruction.

References: the mMR's published span-11 sinogram (64 rings, maximum ring difference 60: 837
planes in 11 segments), an explicit loop over ring pairs written from the standard segment
definition, the span-1 projector (``C P`` by construction), and the span-1 reconstruction.
"""

import numpy as np
import pytest
import torch

import pettk
from pettk.corrections import SpanLayout, SpanProjector, compress
from pettk.recon import osem


def _scanner(n_rings=8):
    return pettk.RegularPolygonScanner(60.0, 12, 8, 3.9, (np.arange(n_rings) - (n_rings - 1) / 2) * 4.0)


def test_mmr_span11_has_837_planes_in_11_segments():
    # the mmr-like preset's scanner (64 rings); its preset layout keeps every ring difference (63),
    # the mMR's span-11 sinogram keeps 60
    scanner = pettk.preset("mmr-like").scanner
    assert scanner.n_rings == 64
    span = compress(pettk.SinogramLayout(scanner, radial_trim=160, max_ring_difference=60), 11)
    assert span.shape == (837, 224, 129)
    assert span.n_segments == 11
    per_segment = [int((span.segment == k).sum()) for k in range(-5, 6)]
    assert per_segment == [27, 49, 71, 93, 115, 127, 115, 93, 71, 49, 27]
    assert span.n_merged.sum() == span.base.n_planes == 64 + 2 * sum(64 - d for d in range(1, 61))


def test_grouping_matches_an_explicit_loop():
    layout = pettk.SinogramLayout(_scanner(8), radial_trim=24, max_ring_difference=6)
    for s in (1, 3, 5):
        span = SpanLayout(layout, s)
        groups = {}
        for p, (r0, r1) in enumerate(layout.plane_rings):
            d = r1 - r0
            seg = next(k for k in range(-10, 11) if k * s - (s - 1) // 2 <= d <= k * s + (s - 1) // 2)
            groups.setdefault((seg, r0 + r1), []).append(p)
        assert span.n_planes == len(groups)
        for (seg, axial), members in groups.items():
            q = span.plane_of_base[members[0]]
            assert span.segment[q] == seg and span.axial_sum[q] == axial
            assert sorted(np.flatnonzero(span.plane_of_base == q)) == members
            z = layout.scanner.ring_positions_mm[layout.plane_rings[members]].mean(axis=0)
            np.testing.assert_allclose(span.mean_axial_mm[q], z)
    assert SpanLayout(layout, 1).n_planes == layout.n_planes


def test_compression_operator_is_a_sum_with_an_exact_adjoint():
    layout = pettk.SinogramLayout(_scanner(8), radial_trim=24)
    span = compress(layout, 5)
    rng = np.random.default_rng(0)
    y = rng.random((2,) + layout.shape)
    z = rng.random((2,) + span.shape)
    cy = span.compress(y)
    ref = np.zeros((2,) + span.shape)
    for p, q in enumerate(span.plane_of_base):
        ref[:, q] += y[:, p]
    np.testing.assert_allclose(cy, ref, rtol=1e-12)
    lhs, rhs = np.vdot(cy, z), np.vdot(y, span.expand(z))
    assert abs(lhs - rhs) <= 1e-12 * abs(lhs)
    np.testing.assert_allclose(span.average(np.ones(layout.shape)), np.ones(span.shape))
    t = torch.from_numpy(y).requires_grad_()
    span.compress(t).sum().backward()
    np.testing.assert_allclose(t.grad.numpy(), 1.0)


@pytest.mark.parametrize("method", ["exact", "mean-lor"])
def test_span_projector_adjointness_and_subsets(method):
    pre = pettk.preset("tiny")
    span = compress(pre.layout, 3)
    proj = SpanProjector(pre.grid, span, method=method)
    rng = np.random.default_rng(1)
    x = rng.random(pre.grid.shape)
    y = rng.random(span.shape)
    lhs, rhs = np.vdot(proj.forward(x), y), np.vdot(x, proj.adjoint(y))
    assert abs(lhs - rhs) <= 1e-5 * abs(lhs)
    full = proj.forward(x)
    for sub in proj.subsets(3):
        np.testing.assert_allclose(sub.forward(x), sub.select(full), rtol=1e-12)
    xt = torch.from_numpy(x).requires_grad_()
    (proj.forward(xt) * torch.from_numpy(y)).sum().backward()
    np.testing.assert_allclose(xt.grad.numpy(), proj.adjoint(y), rtol=1e-10)
    if method == "exact":
        np.testing.assert_allclose(full, span.compress(pettk.Projector(pre.grid, pre.layout).forward(x)), rtol=1e-12)
    else:  # a compressed plane of one member is projected along that member's LOR
        single = np.flatnonzero(span.n_merged == 1)
        base = pettk.Projector(pre.grid, pre.layout).forward(x)
        members = [int(np.flatnonzero(span.plane_of_base == q)[0]) for q in single]
        np.testing.assert_allclose(full[single], base[members], rtol=1e-10)


def test_forward_model_attenuation_is_the_mean_of_the_span1_factors():
    pre = pettk.preset("tiny")
    span = compress(pre.layout, 3)
    x, y, _ = pre.grid.coordinates()
    mu = 0.0096 * (x ** 2 + y ** 2 < 30.0 ** 2)
    model = pettk.ForwardModel(SpanProjector(pre.grid, span), mu=mu)
    base = pettk.attenuation_factors(pettk.Projector(pre.grid, pre.layout), mu)
    np.testing.assert_allclose(model.mult.numpy(), span.average(base), rtol=1e-12)
    image = np.random.default_rng(4).random(pre.grid.shape)
    full = model.forward(image)
    for sub in model.subsets(4):
        np.testing.assert_allclose(sub.forward(image), sub.projector.select(full), rtol=1e-10)
    again = SpanLayout.from_dict(span.to_dict())
    assert again.shape == span.shape and np.array_equal(again.plane_of_base, span.plane_of_base)


def test_reconstruction_of_compressed_data_matches_span1():
    scanner = _scanner(8)
    layout = pettk.SinogramLayout(scanner, radial_trim=24)
    grid = pettk.ImageGrid((32, 32, 16), (2.5, 2.5, 2.0))
    x, y, z = grid.coordinates()
    truth = ((x ** 2 + y ** 2 < 30 ** 2) * (1.0 + 2.0 * ((x - 8) ** 2 + y ** 2 + (z - 3) ** 2 < 8 ** 2)))
    data = pettk.Projector(grid, layout).forward(truth) * 50.0  # noiseless span-1 counts
    ref = osem(pettk.ForwardModel(pettk.Projector(grid, layout)), data, 4, 4)
    span = compress(layout, 5)
    rec = osem(pettk.ForwardModel(SpanProjector(grid, span)), span.compress(data), 4, 4)
    inside = (x ** 2 + y ** 2 < 28 ** 2) & (np.abs(z) < 12)
    diff = np.linalg.norm((rec - ref)[inside]) / np.linalg.norm(ref[inside])
    assert diff < 0.02
    err_ref = np.linalg.norm((ref / 50.0 - truth)[inside]) / np.linalg.norm(truth[inside])
    err_rec = np.linalg.norm((rec / 50.0 - truth)[inside]) / np.linalg.norm(truth[inside])
    assert err_rec < err_ref + 0.01


def test_bad_span_raises():
    layout = pettk.SinogramLayout(_scanner(8), radial_trim=24, max_ring_difference=3)
    with pytest.raises(ValueError, match="odd"):
        compress(layout, 4)
    with pytest.raises(ValueError, match="odd"):
        compress(layout, 0)
    with pytest.raises(ValueError, match=r"span must be <= 2 \* max_ring_difference \+ 1 = 7"):
        compress(layout, 9)
    with pytest.raises(TypeError, match="span must be an odd integer"):
        compress(layout, 3.0)
    with pytest.raises(TypeError, match="base must be a SinogramLayout"):
        compress(pettk.preset("tiny").layout_2d, 3)
    span = compress(layout, 3)
    with pytest.raises(ValueError, match="planes on axis -3"):
        span.compress(np.zeros(span.shape))
    with pytest.raises(ValueError, match="planes on axis -3"):
        span.expand(np.zeros(layout.shape))
    with pytest.raises(ValueError, match="method"):
        SpanProjector(pettk.ImageGrid((8, 8, 8), 2.0), span, method="fast")
    with pytest.raises(TypeError, match="SpanLayout"):
        SpanProjector(pettk.ImageGrid((8, 8, 8), 2.0), layout)


def test_tof_sinograms_compress_on_the_plane_axis():
    pre = pettk.preset("tiny")
    span = compress(pre.layout, 3)
    tof = pettk.TOFParams(fwhm_mm=20.0, n_bins=9, bin_width_mm=15.0)
    proj = SpanProjector(pre.grid, span, tof=tof)
    assert proj.shape_out == span.shape + (9,)
    x = np.random.default_rng(2).random(pre.grid.shape)
    base = pettk.Projector(pre.grid, pre.layout, tof=tof).forward(x)
    np.testing.assert_allclose(proj.forward(x), span.compress(base, plane_axis=-4), rtol=1e-12)
    y = np.random.default_rng(3).random(proj.shape_out)
    lhs, rhs = np.vdot(proj.forward(x), y), np.vdot(x, proj.adjoint(y))
    assert abs(lhs - rhs) <= 1e-10 * abs(lhs)
    assert proj.without_tof().shape_out == span.shape

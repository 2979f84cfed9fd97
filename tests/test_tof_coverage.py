"""TOF bins that do not cover every LOR's path through the image (issue 26).

Real scanners' TOF windows often miss the image corners. The projector accepts such a
``TOFParams``, drops the contributions that fall outside the bins, and warns once. The reference
for the dropped part is a run with more bins of the same width (same edges) that cover everything:
the bins both runs have must agree, in forward and adjoint, on every backend.
"""

import warnings

import numpy as np
import pytest
import torch
from _helpers import assert_adjoint

import pettk
from pettk.backends._joseph_cpu import max_sample_offset_mm
from pettk.geometry import LORList, TOFParams
from pettk.projector import TOFCoverageWarning

WIDTH = 9.0
FWHM = 20.0


def _pair(reach, n_bins):
    """``n_bins`` TOF bins and ``n_bins + 2 k`` bins of the same width and edges covering ``reach`` (mm)
    plus the 3-sigma kernel and a bin: returns ``(short, full, k)``."""
    sigma = FWHM / 2.3548200450309493
    short = TOFParams(fwhm_mm=FWHM, n_bins=n_bins, bin_width_mm=WIDTH)
    k = int(np.ceil((reach + 3 * sigma + WIDTH - 0.5 * n_bins * WIDTH) / WIDTH))
    return short, TOFParams(fwhm_mm=FWHM, n_bins=n_bins + 2 * k, bin_width_mm=WIDTH), k


@pytest.fixture(scope="module")
def setting(tiny):
    reach = max_sample_offset_mm(tiny.grid, tiny.layout.lor_tables())
    n_bins = 7  # +-31.5 mm of a reach of ~54 mm
    assert 0.5 * n_bins * WIDTH < 0.7 * reach
    return _pair(reach, n_bins)


def test_bench_36ring_setting_is_accepted_with_one_warning():
    """parallelproj's benchmark setting (29 bins x 25.37 mm, 215x215x71 image) used to be rejected."""
    p = pettk.preset("bench-36ring")
    layout = pettk.SinogramLayout(p.scanner, radial_trim=65)  # a fresh geometry: nothing warned yet
    tof = TOFParams(fwhm_ps=385.0, n_bins=29, bin_width_mm=25.37)
    views = slice(0, None, 68)
    reach = max_sample_offset_mm(p.grid, layout.lor_tables(views))
    assert reach > 0.5 * 29 * 25.37  # the corners really are outside the bins
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        P = pettk.Projector(p.grid, layout, tof=tof, views=views)
        pettk.Projector(p.grid, layout, tof=tof, views=views)  # same geometry, grid and tof: silent
        P.subsets(2)  # so are its subsets
    assert P.shape_out == (1296, 4, 415, 29)
    assert len(caught) == 1 and caught[0].category is TOFCoverageWarning
    message = str(caught[0].message)
    assert f"+-{0.5 * 29 * 25.37:.4g} mm" in message
    assert f"up to {reach:.4g} mm" in message
    assert f"{reach - 0.5 * 29 * 25.37:.4g} mm beyond the last bin" in message


def test_warns_once_per_tof_and_geometry(tiny, setting):
    short, full, _ = setting
    layout = pettk.SinogramLayout(tiny.scanner, radial_trim=tiny.layout.radial_trim)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        P = pettk.Projector(tiny.grid, layout, tof=short)
        x = np.ones(tiny.grid.shape)
        P.forward(x)
        P.forward(x)
        P.adjoint(np.ones(P.shape_out))
        P.subsets(3)
        pettk.ForwardModel(pettk.Projector(tiny.grid, layout, tof=short))
        pettk.Projector(tiny.grid, layout, tof=full)  # covers everything: no warning
    assert [c.category for c in caught] == [TOFCoverageWarning]
    other = TOFParams(fwhm_mm=FWHM, n_bins=5, bin_width_mm=WIDTH)
    with pytest.warns(TOFCoverageWarning, match=r"TOF bins cover \+-22\.5 mm"):
        pettk.Projector(tiny.grid, layout, tof=other)  # another TOFParams: its own warning


@pytest.mark.parametrize("backend", ["cpu", "reference"])
def test_covered_bins_equal_the_full_coverage_result(tiny, setting, rng, backend):
    short, full, k = setting
    with pytest.warns(TOFCoverageWarning):
        P = pettk.Projector(tiny.grid, pettk.SinogramLayout(tiny.scanner, radial_trim=tiny.layout.radial_trim),
                            tof=short, backend=backend)
    F = pettk.Projector(tiny.grid, tiny.layout, tof=full, backend=backend)
    np.testing.assert_allclose(full.bin_edges_mm[k:k + short.n_bins + 1], short.bin_edges_mm)
    x = torch.from_numpy(rng.random(tiny.grid.shape))
    y_short, y_full = P.forward(x), F.forward(x)
    # the dropped part is real: the bins outside the short window hold counts
    assert float(y_full[..., :k].sum() + y_full[..., k + short.n_bins:].sum()) > 0.01 * float(y_full.sum())
    torch.testing.assert_close(y_short, y_full[..., k:k + short.n_bins], rtol=1e-12, atol=1e-12)
    y = torch.from_numpy(rng.random(P.shape_out))
    y_padded = torch.zeros(F.shape_out, dtype=y.dtype)
    y_padded[..., k:k + short.n_bins] = y
    torch.testing.assert_close(P.adjoint(y), F.adjoint(y_padded), rtol=1e-12, atol=1e-12)
    assert_adjoint(P, x.numpy(), y.numpy(), rtol=1e-5)


@pytest.mark.parametrize("backend", ["cpu", "reference"])
def test_list_mode_and_2d_partial_coverage(tiny, setting, rng, backend):
    short, full, k = setting
    start, end = tiny.layout.lor_endpoints()
    idx = rng.choice(start.reshape(-1, 3).shape[0], size=300, replace=False)
    start, end = start.reshape(-1, 3)[idx], end.reshape(-1, 3)[idx]
    bins = rng.integers(0, short.n_bins, size=300)
    with pytest.warns(TOFCoverageWarning):
        L = pettk.Projector(tiny.grid, LORList(start, end, tof_bin=bins), tof=short, backend=backend)
    F = pettk.Projector(tiny.grid, LORList(start, end, tof_bin=bins + k), tof=full, backend=backend)
    x = rng.random(tiny.grid.shape)
    np.testing.assert_allclose(L.forward(x), F.forward(x), rtol=1e-12, atol=1e-12)
    y = rng.random(300)
    np.testing.assert_allclose(L.adjoint(y), F.adjoint(y), rtol=1e-12, atol=1e-12)
    assert_adjoint(L, x, y, rtol=1e-5)
    # 2D sinograms run through the same kernels with a singleton z axis
    grid2 = tiny.grid_2d
    layout2 = tiny.layout_2d
    with pytest.warns(TOFCoverageWarning):
        P2 = pettk.Projector(grid2, layout2, tof=short, backend=backend)
    F2 = pettk.Projector(grid2, layout2, tof=full, backend=backend)
    x2 = rng.random(grid2.shape)
    np.testing.assert_allclose(P2.forward(x2), F2.forward(x2)[..., k:k + short.n_bins], rtol=1e-12, atol=1e-12)
    assert_adjoint(P2, x2, rng.random(P2.shape_out), rtol=1e-5)

"""The factorised 3D sinogram kernels (pettk.backends._joseph_sino) against the reference backend
and the generic LOR-list kernels, including sinograms whose steep planes step along z."""

import numpy as np
import pytest
import torch
from _helpers import assert_adjoint

import pettk
from pettk.backends._joseph_sino import generic_lors


@pytest.fixture(scope="module")
def steep():
    """A scanner longer than its diameter: the large ring differences step along z."""
    rings = np.arange(12) * 6.0 - 33.0
    scanner = pettk.RegularPolygonScanner(30.0, 8, 4, 5.0, rings)
    layout = pettk.SinogramLayout(scanner, radial_trim=4)
    grid = pettk.ImageGrid((16, 15, 24), (4.0, 4.2, 3.0), origin_mm=(-30.0, -29.0, -34.0))
    return grid, layout


def test_steep_layout_has_lors_for_both_kernels(steep):
    grid, layout = steep
    tables = layout.lor_tables()
    n_generic = generic_lors(tables.transaxial, tables.axial).size
    assert 0 < n_generic < tables.n_lors


@pytest.mark.parametrize("views", [None, slice(1, None, 3), [0, 5, 7]])
def test_sinogram_kernels_match_reference(steep, rng, views):
    grid, layout = steep
    cpu = pettk.Projector(grid, layout, backend="cpu", views=views)
    ref = pettk.Projector(grid, layout, backend="reference", views=views)
    x = torch.from_numpy(rng.random(grid.shape))
    y = torch.from_numpy(rng.random(cpu.shape_out))
    for a, b in ((cpu.forward(x), ref.forward(x)), (cpu.adjoint(y), ref.adjoint(y))):
        assert float(b.abs().max()) > 0
        assert float((a - b).abs().max() / b.abs().max()) < 1e-12


def test_sinogram_kernels_match_lor_list(steep, rng):
    grid, layout = steep
    views = slice(0, None, 2)
    sino = pettk.Projector(grid, layout, backend="cpu", views=views)
    start, end = layout.lor_endpoints(views)
    lors = pettk.Projector(grid, pettk.LORList(start.reshape(-1, 3), end.reshape(-1, 3)), backend="cpu")
    x = rng.random(grid.shape).astype(np.float32)
    y = rng.random(sino.shape_out).astype(np.float32)
    y[:, :, ::2] = 0.0  # zero rows: the back projection skips them
    f_sino, f_lors = sino.forward(x).reshape(-1), lors.forward(x)
    assert np.abs(f_sino - f_lors).max() <= 1e-5 * np.abs(f_lors).max()
    b_sino, b_lors = sino.adjoint(y), lors.adjoint(y.reshape(-1))
    assert np.abs(b_sino - b_lors).max() <= 1e-5 * np.abs(b_lors).max()


def test_sinogram_kernels_adjoint(steep, rng):
    grid, layout = steep
    P = pettk.Projector(grid, layout, backend="cpu")
    assert_adjoint(P, rng.random(grid.shape), rng.random(P.shape_out), rtol=1e-12)


@pytest.fixture(scope="module")
def steep_tof():
    return pettk.TOFParams(fwhm_mm=25.0, n_bins=9, bin_width_mm=14.0)


@pytest.mark.filterwarnings("ignore::pettk.projector.TOFCoverageWarning")
@pytest.mark.parametrize("views", [None, slice(0, None, 3)])
def test_tof_sinogram_kernels_match_reference(steep, steep_tof, rng, views):
    grid, layout = steep
    cpu = pettk.Projector(grid, layout, backend="cpu", tof=steep_tof, views=views)
    ref = pettk.Projector(grid, layout, backend="reference", tof=steep_tof, views=views)
    x = torch.from_numpy(rng.random(grid.shape))
    y = torch.from_numpy(rng.random(cpu.shape_out))
    y[:, :, 1::2] = 0.0  # whole TOF rows of zeros: the back projection skips them
    for a, b in ((cpu.forward(x), ref.forward(x)), (cpu.adjoint(y), ref.adjoint(y))):
        assert float(b.abs().max()) > 0
        assert float((a - b).abs().max() / b.abs().max()) < 1e-12
    assert_adjoint(cpu, x.numpy(), y.numpy(), rtol=1e-12)

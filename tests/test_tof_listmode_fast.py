"""List-mode TOF on the cpu backend: the tabulated float32 TOF weight and the trimmed plane range."""

import math

import numpy as np
import pytest
import torch
from _helpers import assert_adjoint, random_lors

import pettk
from pettk.backends import _tof_table as T
from pettk.backends._joseph_cpu import tof_vector
from pettk.geometry import LORList, TOFParams


def _exact(u, tof):
    h, k = 0.5 * tof.bin_width_mm, 1.0 / (math.sqrt(2.0) * tof.sigma_mm)
    return np.array([0.5 * (math.erf((h - v) * k) - math.erf((-h - v) * k)) for v in u])


@pytest.mark.parametrize("fwhm_ps, width, n_sigmas, rel_bound", [
    (400.0, 17.0, 3.0, 1.5e-7),   # the side-by-side benchmark's mmr-like bins
    (200.0, 3.0, 5.0, 1.5e-7),    # narrow bins: w(0) ~ width / (sigma sqrt(2 pi))
    (500.0, 150.0, 3.0, 1e-7),    # wide bins: flat top, erf edges
])
def test_weight_table_error_bound(fwhm_ps, width, n_sigmas, rel_bound):
    tof = TOFParams(fwhm_ps=fwhm_ps, n_bins=9, bin_width_mm=width, n_sigmas=n_sigmas)
    table, inv_step = T.weight_table(tof_vector(tof), True)
    u = np.random.default_rng(0).uniform(-(n_sigmas * tof.sigma_mm + 0.5 * width),
                                         n_sigmas * tof.sigma_mm + 0.5 * width, 20000)
    err = np.abs(np.array([T.lookup(table, inv_step, v) for v in u]) - _exact(u, tof))
    assert err.max() <= T.ABS_ERROR_BOUND  # 5.8e-8
    assert err.max() <= rel_bound * _exact([0.0], tof)[0]


def test_weight_table_empty_for_float64_and_too_wide_bins():
    assert T.weight_table(tof_vector(TOFParams(fwhm_mm=20.0, n_bins=5, bin_width_mm=9.0)), False)[0].size == 0
    wide = TOFParams(fwhm_mm=2.0, n_bins=5, bin_width_mm=60.0)  # 70 sigma wide: > MAX_NODES entries
    assert T.weight_table(tof_vector(wide), True)[0].size == 0


@pytest.fixture(scope="module")
def lm_case():
    rng = np.random.default_rng(5)
    grid = pettk.ImageGrid((24, 20, 10), (2.0, 2.5, 3.0))
    start, end = random_lors(rng, 1500, 3, radius=60.0, axial_half=20.0)
    tof = TOFParams(fwhm_mm=20.0, n_bins=15, bin_width_mm=9.0)
    lors = LORList(start, end, tof_bin=rng.integers(0, 15, size=1500))
    x = rng.random(grid.shape) + 0.1
    y = rng.random(1500)
    return grid, lors, tof, x, y


def _projections(grid, lors, tof, x, y, dtype, backend):
    P = pettk.Projector(grid, lors, tof=tof, backend=backend)
    xt, yt = torch.from_numpy(x).to(dtype), torch.from_numpy(y).to(dtype)
    return P.forward(xt).double(), P.adjoint(yt).double()


def test_float64_matches_reference_exactly(lm_case):
    cpu = _projections(*lm_case, torch.float64, "cpu")
    ref = _projections(*lm_case, torch.float64, "reference")
    for a, b in zip(cpu, ref):
        assert float((a - b).abs().max() / b.abs().max()) < 1e-12


def test_float32_matches_reference(lm_case):
    """The tabulated weight keeps float32 results at float32 rounding (measured 1e-7 / 6e-8)."""
    cpu = _projections(*lm_case, torch.float32, "cpu")
    ref = _projections(*lm_case, torch.float64, "reference")
    for a, b in zip(cpu, ref):
        assert float((a - b).abs().max() / b.abs().max()) < 5e-7


def test_float32_without_table_matches_reference():
    """Bins too wide for the table fall back to erf in float32 too."""
    rng = np.random.default_rng(6)
    grid = pettk.ImageGrid((24, 20, 10), (2.0, 2.5, 3.0))
    start, end = random_lors(rng, 400, 3, radius=60.0, axial_half=20.0)
    tof = TOFParams(fwhm_mm=2.0, n_bins=3, bin_width_mm=60.0)
    lors = LORList(start, end, tof_bin=rng.integers(0, 3, size=400))
    case = (grid, lors, tof, rng.random(grid.shape), rng.random(400))
    cpu = _projections(*case, torch.float32, "cpu")
    ref = _projections(*case, torch.float64, "reference")
    for a, b in zip(cpu, ref):
        assert float((a - b).abs().max() / b.abs().max()) < 5e-7


@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-12), (np.float32, 1e-5)])
def test_adjointness(lm_case, dtype, rtol):
    grid, lors, tof, x, y = lm_case
    P = pettk.Projector(grid, lors, tof=tof, backend="cpu")
    assert_adjoint(P, x.astype(dtype), y.astype(dtype), rtol=rtol)


def test_event_whose_bin_no_plane_reaches_is_zero():
    grid = pettk.ImageGrid((20, 20, 6), 2.0)
    tof = TOFParams(fwhm_mm=10.0, n_bins=31, bin_width_mm=10.0)
    start, end = np.array([[-150.0, 1.0, 0.5]] * 3), np.array([[150.0, -1.0, 0.5]] * 3)
    lors = LORList(start, end, tof_bin=[0, 15, 30])  # the image spans +-20 mm around the midpoint
    for dtype in (np.float32, np.float64):
        y = pettk.Projector(grid, lors, tof=tof).forward(np.ones(grid.shape, dtype))
        assert y[0] == 0.0 and y[2] == 0.0 and y[1] > 0.0

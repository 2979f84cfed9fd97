"""Time-of-flight projection: TOFParams, sinogram and list-mode TOF, against the reference."""

import numpy as np
import pytest
import torch
from _helpers import assert_adjoint

import pettk
from pettk.backends._joseph_cpu import max_sample_offset_mm
from pettk.geometry import LORList, TOFParams


@pytest.fixture(scope="module")
def tof_tiny():
    return TOFParams(fwhm_mm=20.0, n_bins=15, bin_width_mm=9.0)


def test_tof_params():
    tof = TOFParams(fwhm_ps=500.0, n_bins=5, bin_width_mm=10.0)
    assert tof.fwhm_mm == pytest.approx(500 * 0.299792458 / 2)
    assert tof.fwhm_ps == pytest.approx(500.0)
    assert tof.sigma_mm == pytest.approx(tof.fwhm_mm / 2.3548200450309493)
    np.testing.assert_allclose(tof.bin_edges_mm, [-25, -15, -5, 5, 15, 25])
    np.testing.assert_allclose(tof.bin_centres_mm, [-20, -10, 0, 10, 20])
    assert tof.coverage_mm == 50.0 and tof.n_sigmas == 3.0


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(n_bins=5, bin_width_mm=1.0), ValueError, "give exactly one of fwhm_ps and fwhm_mm"),
    (dict(fwhm_ps=1.0, fwhm_mm=1.0, n_bins=5, bin_width_mm=1.0), ValueError, "give exactly one"),
    (dict(fwhm_mm=-1.0, n_bins=5, bin_width_mm=1.0), ValueError, "fwhm_mm must be a finite number > 0"),
    (dict(fwhm_mm=10.0, n_bins=0, bin_width_mm=1.0), ValueError, "n_bins must be an integer >= 1"),
    (dict(fwhm_mm=10.0, n_bins=3, bin_width_mm=0.0), ValueError, "bin_width_mm must be a finite number > 0"),
    (dict(fwhm_mm=10.0, n_bins=3, bin_width_mm=1.0, n_sigmas=0), ValueError, "n_sigmas must be a finite number > 0"),
])
def test_tof_params_reject_bad_values(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        TOFParams(**kwargs)


@pytest.mark.parametrize("dtype, rtol", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
def test_tof_sinogram_matches_reference(tiny, tof_tiny, rng, dtype, rtol):
    cpu = pettk.Projector(tiny.grid, tiny.layout, tof=tof_tiny, backend="cpu")
    ref = pettk.Projector(tiny.grid, tiny.layout, tof=tof_tiny, backend="reference")
    assert cpu.shape_out == (16, 48, 49, 15)
    x = torch.from_numpy(rng.random(tiny.grid.shape)).to(dtype)
    y = torch.from_numpy(rng.random(cpu.shape_out)).to(dtype)
    for a, b in ((cpu.forward(x), ref.forward(x)), (cpu.adjoint(y), ref.adjoint(y))):
        assert a.dtype == dtype
        assert float((a - b).abs().max() / b.abs().max()) < rtol


def test_tof_adjointness_sinogram_and_list_mode(tiny, tof_tiny, rng):
    P = pettk.Projector(tiny.grid, tiny.layout, tof=tof_tiny)
    assert_adjoint(P, rng.random(tiny.grid.shape), rng.random(P.shape_out), rtol=1e-6)
    start, end = tiny.layout.lor_endpoints()
    start, end = start.reshape(-1, 3)[::5], end.reshape(-1, 3)[::5]
    lors = LORList(start, end, tof_bin=rng.integers(0, 15, size=len(start)))
    for backend in ("cpu", "reference"):
        L = pettk.Projector(tiny.grid, lors, tof=tof_tiny, backend=backend)
        assert L.shape_out == (len(start),)
        assert_adjoint(L, rng.random(tiny.grid.shape), rng.random(L.shape_out), rtol=1e-6)


def test_list_mode_tof_equals_sinogram_tof_in_the_event_bin(tiny, tof_tiny, rng):
    """An event's list-mode value is its LOR's TOF sinogram entry in the event's bin."""
    x = rng.random(tiny.grid.shape)
    sino = pettk.Projector(tiny.grid, tiny.layout, tof=tof_tiny).forward(x).reshape(-1, 15)
    start, end = tiny.layout.lor_endpoints()
    idx = rng.choice(sino.shape[0], size=400, replace=False)
    bins = rng.integers(0, 15, size=400)
    lors = LORList(start.reshape(-1, 3)[idx], end.reshape(-1, 3)[idx], tof_bin=bins)
    lm = pettk.Projector(tiny.grid, lors, tof=tof_tiny).forward(x)
    np.testing.assert_allclose(lm, sino[idx, bins], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("geometry", ["sinogram", "parallel-beam"])
def test_sum_over_tof_bins_equals_non_tof(tiny, rng, geometry):
    if geometry == "sinogram":
        grid, geo = tiny.grid, tiny.layout
    else:
        grid, geo = pettk.ImageGrid((40, 40), 2.0), pettk.ParallelBeam2D(20, 57, 1.5, half_length_mm=80.0)
    nontof = pettk.Projector(grid, geo)
    sigma = 15.0 / 2.3548
    reach = max_sample_offset_mm(grid, nontof._tables)
    width = 8.0
    n_bins = int(np.ceil(2 * (reach + 5 * sigma) / width)) + 1
    tof = TOFParams(fwhm_mm=15.0, n_bins=n_bins, bin_width_mm=width, n_sigmas=5.0)
    x = rng.random(grid.shape)
    y_tof = pettk.Projector(grid, geo, tof=tof).forward(x)
    y = nontof.forward(x)
    np.testing.assert_allclose(y_tof.sum(axis=-1), y, rtol=1e-4, atol=1e-4 * y.max())


def test_point_source_tof_profile_peaks_in_its_bin():
    grid = pettk.ImageGrid((41, 41, 11), 2.0)
    tof = TOFParams(fwhm_mm=18.0, n_bins=21, bin_width_mm=10.0)
    for pos in ([12.0, 0.0, 0.0], [-26.0, 4.0, 2.0], [30.0, -10.0, -4.0]):
        x = np.zeros(grid.shape)
        x[tuple(np.round(grid.world_to_index(np.array(pos))).astype(int))] = 1.0
        # LORs through the point in several directions, from start to end
        dirs = np.array([[1.0, 0.0, 0.0], [1.0, 0.3, 0.0], [-1.0, 0.2, 0.1], [0.2, 1.0, 0.05]])
        dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
        start = np.repeat(np.asarray(pos) - 90.0 * dirs, tof.n_bins, axis=0)
        end = np.repeat(np.asarray(pos) + 70.0 * dirs, tof.n_bins, axis=0)
        every_bin = np.tile(np.arange(tof.n_bins), len(dirs))  # each LOR once per TOF bin
        lors = LORList(start, end, tof_bin=every_bin)
        profile = pettk.Projector(grid, lors, tof=tof).forward(x).reshape(len(dirs), tof.n_bins)
        t_point = 10.0  # 90 mm from the start of a 160 mm LOR: 10 mm past the midpoint, towards the end
        expected_bin = int(np.floor((t_point - tof.first_edge_mm) / tof.bin_width_mm))
        assert np.all(profile.argmax(axis=1) == expected_bin)


def test_list_mode_tof_needs_valid_bins(tiny, tof_tiny):
    start = np.array([[-50.0, 0.0, 0.0]])
    end = np.array([[50.0, 1.0, 0.0]])
    with pytest.raises(ValueError, match="list-mode TOF needs the TOF bin of every event"):
        pettk.Projector(tiny.grid, LORList(start, end), tof=tof_tiny)
    with pytest.raises(ValueError, match="LORList.tof_bin must be < tof.n_bins = 15, got 15"):
        pettk.Projector(tiny.grid, LORList(start, end, tof_bin=[15]), tof=tof_tiny)
    with pytest.raises(ValueError, match="tof_bin must be >= 0"):
        LORList(start, end, tof_bin=[-1])
    with pytest.raises(TypeError, match="tof_bin must hold integers"):
        LORList(start, end, tof_bin=[1.5])
    with pytest.raises(TypeError, match="tof must be a TOFParams or None, got dict"):
        pettk.Projector(tiny.grid, tiny.layout, tof={"fwhm_mm": 20})


def test_tof_subsets_and_without_tof(tiny, tof_tiny, rng):
    P = pettk.Projector(tiny.grid, tiny.layout, tof=tof_tiny)
    x = rng.random(tiny.grid.shape)
    full = P.forward(x)
    sub = P.subsets(4)[3]
    assert sub.shape_out == (16, 12, 49, 15)
    np.testing.assert_allclose(sub.forward(x), sub.select(full), rtol=1e-12)
    assert sub.without_tof().shape_out == (16, 12, 49)
    assert P.without_tof().tof is None

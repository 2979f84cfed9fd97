"""The parallelproj backend: the conversion (always) and agreement with pettk (with parallelproj).

parallelproj is not on PyPI (conda only), so the tests that run its kernels skip where it is not
importable, with the import error as the reason; with ``PETTK_REQUIRE_PARALLELPROJ=1`` (set by
``.ci/run``'s parallelproj stage, which builds parallelproj 2.0 from source) they fail instead,
so that none of them can pass by skipping. The conversion tests need no parallelproj: they pin
the arrays handed to its kernels against pettk's own geometry numbers, rebuild a pettk problem
from those arrays alone to show that they describe exactly the same voxels and LORs, and check
the TOF truncation conversion against pettk's own bin window.
"""

import math
import os

import numpy as np
import pytest
import torch
from _helpers import random_lors

import pettk
from pettk.backends import _joseph_cpu
from pettk.backends import parallelproj_backend as ppb
from pettk.backends.cpu import CPUPlan

REQUIRED = os.environ.get("PETTK_REQUIRE_PARALLELPROJ", "") not in ("", "0")


@pytest.fixture
def parallelproj():
    """Skip (or, with PETTK_REQUIRE_PARALLELPROJ=1, fail) where parallelproj is not importable."""
    if not ppb.available():
        reason = f"parallelproj not importable ({ppb.unavailable_reason()})"
        if REQUIRED:
            pytest.fail(f"{reason}, but PETTK_REQUIRE_PARALLELPROJ is set")
        pytest.skip(reason)


needs_parallelproj = pytest.mark.usefixtures("parallelproj")


# -- conversion (no parallelproj needed) ---------------------------------------------------------------
def test_image_geometry_3d_is_pettk_grid(tiny):
    shape, origin, voxsize = ppb.image_geometry(tiny.grid)
    assert shape == (32, 32, 8)
    assert origin.dtype == voxsize.dtype == np.float32 and origin.shape == voxsize.shape == (3,)
    np.testing.assert_allclose(voxsize, [2.5, 2.5, 2.0])
    # img_origin is the centre of voxel [0, 0, 0], which for the centred tiny grid is -(n - 1) / 2 * voxel size
    np.testing.assert_allclose(origin, [-38.75, -38.75, -7.0])
    # and voxel (i, j, k) sits at img_origin + (i, j, k) * voxsize, as in pettk (axes not permuted)
    idx = np.array([[0, 0, 0], [31, 0, 7], [3, 17, 5]])
    np.testing.assert_allclose(origin + idx * voxsize, tiny.grid.index_to_world(idx), atol=1e-5)


def test_image_geometry_2d_gets_a_singleton_slice_at_z0(grid2d):
    shape, origin, voxsize = ppb.image_geometry(grid2d)
    assert shape == (40, 36, 1)
    np.testing.assert_allclose(origin, [-39.0, -42.0, 0.0])
    np.testing.assert_allclose(voxsize, [2.0, 2.5, 1.0])
    # a pettk 2D image reshapes to parallelproj's 3D image without copying or reordering
    img = np.arange(40 * 36, dtype=np.float32).reshape(40, 36)
    assert np.shares_memory(img.reshape(shape), img)


def test_image_geometry_rejects_non_grids():
    with pytest.raises(TypeError, match="ImageGrid"):
        ppb.image_geometry((32, 32, 8))


def test_padded_image_geometry_adds_one_zero_layer_per_side(tiny, grid2d):
    shape, origin, voxsize, interior = ppb.padded_image_geometry(tiny.grid)
    assert shape == (34, 34, 10) and origin.dtype == np.float32
    np.testing.assert_allclose(origin, [-41.25, -41.25, -9.0])  # one voxel further out on every axis
    np.testing.assert_allclose(voxsize, [2.5, 2.5, 2.0])
    assert interior == (slice(1, 33), slice(1, 33), slice(1, 9))
    # voxel (1, 1, 1) of the padded image is voxel (0, 0, 0) of the grid
    np.testing.assert_allclose(origin + voxsize, tiny.grid.origin_mm, atol=1e-5)
    # 2D: x and y padded, the singleton z slice at z = 0 kept
    shape, origin, voxsize, interior = ppb.padded_image_geometry(grid2d)
    assert shape == (42, 38, 1) and interior == (slice(1, 41), slice(1, 37), slice(0, 1))
    np.testing.assert_allclose(origin, [-41.0, -44.5, 0.0])


def test_sinogram_endpoints_follow_pettk_measurement_order(tiny):
    layout = tiny.layout
    xstart, xend = ppb.lor_endpoints(layout.lor_tables())
    assert xstart.dtype == xend.dtype == np.float32 and xstart.flags.c_contiguous
    assert xstart.shape == xend.shape == (layout.n_lors, 3)
    start, end = layout.lor_endpoints()  # (n_planes, n_views, n_radial, 3)
    np.testing.assert_allclose(xstart, start.reshape(-1, 3), atol=1e-4)
    np.testing.assert_allclose(xend, end.reshape(-1, 3), atol=1e-4)
    # spot check one bin against the scanner's numbers: plane (ring 1 -> ring 2), view 5, radial 7
    p, v, r = layout.plane_index(1, 2), 5, 7
    flat = np.ravel_multi_index((p, v, r), layout.shape)
    a, b = layout.crystal_pairs[v, r]
    xy = tiny.scanner.crystal_xy_mm
    rings = tiny.scanner.ring_positions_mm
    np.testing.assert_allclose(xstart[flat], [*xy[a], rings[1]], atol=1e-4)
    np.testing.assert_allclose(xend[flat], [*xy[b], rings[2]], atol=1e-4)


def test_subset_endpoints_are_the_selected_views(tiny):
    views = [3, 11, 40]
    xstart, _ = ppb.lor_endpoints(tiny.layout.lor_tables(views))
    full, _ = tiny.layout.lor_endpoints()
    np.testing.assert_allclose(xstart, full[:, views].reshape(-1, 3), atol=1e-4)


def test_2d_and_list_mode_endpoints(beam2d, rng):
    xstart, xend = ppb.lor_endpoints(beam2d.lor_tables())
    start, end = beam2d.lor_endpoints()
    np.testing.assert_allclose(xstart[:, :2], start.reshape(-1, 2), atol=1e-4)
    np.testing.assert_allclose(xend[:, :2], end.reshape(-1, 2), atol=1e-4)
    assert not xstart[:, 2].any() and not xend[:, 2].any()
    s, e = random_lors(rng, 50, 3)
    xstart, xend = ppb.lor_endpoints(pettk.LORList(s, e).lor_tables())
    np.testing.assert_allclose(xstart, s, atol=1e-4)
    np.testing.assert_allclose(xend, e, atol=1e-4)


def _ties(tables) -> np.ndarray:
    """LORs whose two largest |d_k| tie (to float32 precision): there pettk and parallelproj pick
    different stepping axes by design, so they are left out of the comparison."""
    xstart, xend = ppb.lor_endpoints(tables)
    d = np.sort(np.abs(xend.astype(np.float64) - xstart), axis=1)
    return d[:, -2] >= d[:, -1] * (1 - 1e-5)


@pytest.mark.parametrize("case", ["3d-sinogram", "2d-parallel-beam"])
@pytest.mark.parametrize("padded", [False, True], ids=["as-is", "zero-padded"])
def test_converted_arrays_describe_the_same_problem(case, padded, tiny, grid2d, beam2d, rng):
    """Rebuild the problem from the converted arrays alone (a 3D grid from shape/origin/voxsize, a
    LORList from xstart/xend) and project with pettk's numba backend: same numbers as the original
    projector, so the conversion loses nothing and permutes nothing; with the zero-padded image
    parallelproj 2.x is handed, too (the padding does not change pettk's operator)."""
    grid, geometry = (tiny.grid, tiny.layout) if case == "3d-sinogram" else (grid2d, beam2d)
    x = rng.random(grid.shape)
    if padded:
        shape, origin, voxsize, interior = ppb.padded_image_geometry(grid)
        x_pp = np.zeros(shape)
        x_pp[interior] = x.reshape(ppb.image_geometry(grid)[0])
    else:
        shape, origin, voxsize = ppb.image_geometry(grid)
        x_pp = x.reshape(shape)
    xstart, xend = ppb.lor_endpoints(geometry.lor_tables())
    rebuilt = pettk.Projector(pettk.ImageGrid(shape, voxsize.astype(np.float64), origin.astype(np.float64)),
                              pettk.LORList(xstart.astype(np.float64), xend.astype(np.float64)), backend="cpu")
    original = pettk.Projector(grid, geometry, backend="cpu")
    expected = original.forward(x).reshape(-1)
    got = rebuilt.forward(x_pp)
    # exactly-45-degree LORs may switch stepping axis when their endpoints are rounded to float32
    keep = ~_ties(geometry.lor_tables())
    assert 0 < keep.sum() and keep.mean() > 0.9
    assert float(np.abs(got - expected)[keep].max()) <= 1e-4 * float(np.abs(expected).max())


# -- TOF conversion (no parallelproj needed) -----------------------------------------------------------
def _pp_sino_window(t, tof, num_sigmas):
    """parallelproj 2.x's TOF bins of a sample at t (its joseph3d_tof_sino worker), clipped to the bins."""
    u = (t - tof.first_edge_mm) / tof.bin_width_mm - 0.5  # bin coordinate, bin centres at integers
    m = num_sigmas * tof.sigma_mm / tof.bin_width_mm
    return max(math.floor(u - m), 0), min(math.ceil(u + m), tof.n_bins - 1)


def _pettk_window(t, tof):
    k = np.array([tof.first_edge_mm, tof.bin_width_mm, tof.sigma_mm, tof.n_sigmas * tof.sigma_mm,
                  1.0 / tof.bin_width_mm, 1.0 / (math.sqrt(2.0) * tof.sigma_mm)])
    return _joseph_cpu._tof_window(t, k, tof.n_bins)


@pytest.mark.parametrize("fwhm_mm, width, n_sigmas", [(25.0, 12.0, 3.0), (60.0, 17.0, 3.0), (15.0, 8.0, 5.0),
                                                      (40.0, 6.0, 2.5)])
def test_tof_sinogram_truncation_selects_pettk_bins(fwhm_mm, width, n_sigmas, rng):
    """With the converted num_sigmas, parallelproj's sinogram kernel weighs exactly the bins that
    pettk's kernels weigh, for every sample position (its normalisation aside)."""
    tof = pettk.TOFParams(fwhm_mm=fwhm_mm, n_bins=15, bin_width_mm=width, n_sigmas=n_sigmas)
    num_sigmas = ppb.tof_arguments(tof, list_mode=False)["num_sigmas"]
    assert num_sigmas == pytest.approx(n_sigmas - 0.5 * width / tof.sigma_mm)
    for t in rng.uniform(-0.5 * tof.coverage_mm, 0.5 * tof.coverage_mm, size=2000):
        assert _pp_sino_window(t, tof, num_sigmas) == _pettk_window(t, tof)
    # with pettk's n_sigmas as it is, parallelproj would weigh extra bins
    differs = [_pp_sino_window(t, tof, n_sigmas) != _pettk_window(t, tof)
               for t in np.linspace(-30.0, 30.0, 301)]
    assert any(differs)


def test_tof_list_mode_truncation_covers_pettk_planes():
    """List mode truncates over planes: pettk weighs a sample at t for bin b when t lies within
    n_sigmas sigma + w / 2 of the bin's centre, parallelproj within num_sigmas sigma."""
    tof = pettk.TOFParams(fwhm_mm=25.0, n_bins=9, bin_width_mm=12.0)
    args = ppb.tof_arguments(tof, list_mode=True)
    assert args["num_sigmas"] * tof.sigma_mm == pytest.approx(tof.n_sigmas * tof.sigma_mm + 0.5 * tof.bin_width_mm)
    b = 6
    centre = tof.bin_centres_mm[b]
    for t in np.linspace(centre - 60.0, centre + 60.0, 2001):
        lo, hi = _pettk_window(t, tof)
        in_pettk = lo <= b <= hi
        in_pp = abs(t - centre) <= args["num_sigmas"] * tof.sigma_mm
        assert in_pettk == in_pp or abs(abs(t - centre) - args["num_sigmas"] * tof.sigma_mm) < 1e-9


def test_tof_arguments_convert_tofparams():
    tof = pettk.TOFParams(fwhm_ps=400.0, n_bins=25, bin_width_mm=17.0, n_sigmas=3.0)
    args = ppb.tof_arguments(tof, list_mode=False)
    assert args["tof_bin_width"] == 17.0 and args["num_tof_bins"] == 25
    assert args["tof_sigma"].dtype == np.float32 and args["tof_sigma"].shape == (1,)
    np.testing.assert_allclose(args["tof_sigma"], [tof.sigma_mm], rtol=1e-6)  # 60 mm FWHM -> 25.5 mm
    assert args["tof_center_offset"].dtype == np.float32 and args["tof_center_offset"].tolist() == [0.0]
    # bins wider than 2 n_sigmas sigma: no parallelproj window matches pettk's, the smallest is used
    wide = pettk.TOFParams(fwhm_mm=10.0, n_bins=5, bin_width_mm=40.0)
    assert 0 < ppb.tof_arguments(wide, list_mode=False)["num_sigmas"] <= 1e-3


def test_tof_arguments_reject_what_parallelproj_cannot_do():
    with pytest.raises(ValueError, match="at most 64 TOF bins"):
        ppb.tof_arguments(pettk.TOFParams(fwhm_mm=60.0, n_bins=301, bin_width_mm=1.0), list_mode=False)
    ppb.tof_arguments(pettk.TOFParams(fwhm_mm=60.0, n_bins=301, bin_width_mm=1.0), list_mode=True)  # no limit there
    with pytest.raises(ValueError, match="int16"):
        ppb.tof_arguments(pettk.TOFParams(fwhm_mm=60.0, n_bins=40000, bin_width_mm=5.0), list_mode=True)
    with pytest.raises(TypeError, match="TOFParams"):
        ppb.tof_arguments({"fwhm_mm": 60.0}, list_mode=True)


# -- the plan's calls (no parallelproj needed) -----------------------------------------------------------
def test_plan_rejects_other_devices(tiny):
    assert ppb.supports(torch.device("cpu")) and not ppb.supports(torch.device("meta"))
    with pytest.raises(ValueError, match="device"):
        ppb.ParallelprojPlan(tiny.grid, tiny.layout.lor_tables(), "meta")


def test_plan_without_parallelproj_says_how_to_install(tiny, monkeypatch):
    monkeypatch.setattr(ppb, "_kernels", lambda: "parallelproj_core: No module named 'parallelproj_core'")
    assert not ppb.available() and "parallelproj_core" in ppb.unavailable_reason()
    assert ppb.describe().startswith("unavailable")
    with pytest.raises(ImportError, match="conda.*No module named"):
        ppb.ParallelprojPlan(tiny.grid, tiny.layout.lor_tables(), "cpu")


class _CallContract:
    """Records parallelproj calls and checks them against the kernels' documented contract (the
    checks of parallelproj 2.x's bindings: float32 C-contiguous arrays, ``(n, 3)`` endpoints, a 3D
    image, ``(3,)`` origin and voxel size, one value per LOR or ``(n, n_bins)`` TOF values, int16
    bins, ``(1,)`` sigma and offset). It computes nothing: the numbers are tested against real
    parallelproj below."""

    def __init__(self, in_place):
        self.in_place = in_place
        self.calls = []

    def _check(self, xstart, xend, origin, voxsize, values=None, n_bins=None):
        for a in (xstart, xend, origin, voxsize) + (() if values is None else (values,)):
            assert isinstance(a, np.ndarray) and a.dtype == np.float32 and a.flags.c_contiguous
        assert xstart.ndim == 2 and xstart.shape[1] == 3 and xend.shape == xstart.shape
        assert origin.shape == voxsize.shape == (3,)
        expected = xstart.shape[:-1] + (() if n_bins is None else (n_bins,))
        assert values is None or values.shape == expected

    def _check_tof(self, tof_bin_width, tof_sigma, tof_center_offset, num_tof_bins, num_sigmas, tof_bin=None):
        assert isinstance(tof_bin_width, float) and isinstance(num_tof_bins, int) and isinstance(num_sigmas, float)
        for a in (tof_sigma, tof_center_offset):
            assert a.dtype == np.float32 and a.shape == (1,)
        assert tof_bin is None or (tof_bin.dtype == np.int16 and tof_bin.flags.c_contiguous)

    def joseph3d_fwd(self, xstart, xend, img, origin, voxsize, out=None):
        assert img.ndim == 3 and img.dtype == np.float32 and img.flags.c_contiguous
        self._check(xstart, xend, origin, voxsize, out)
        self.calls.append(("fwd", img.shape))
        if out is None:
            return np.full(xstart.shape[0], img.sum(), dtype=np.float32)
        out[:] = img.sum()

    def joseph3d_back(self, xstart, xend, img_or_shape, origin, voxsize, values):
        self._check(xstart, xend, origin, voxsize, values)
        if self.in_place:
            assert img_or_shape.ndim == 3 and img_or_shape.dtype == np.float32 and not img_or_shape.any()
            img_or_shape[:] = values.sum()
            self.calls.append(("back", img_or_shape.shape))
            return None
        self.calls.append(("back", tuple(img_or_shape)))
        return np.full(img_or_shape, values.sum(), dtype=np.float32)

    def joseph3d_tof_sino_fwd(self, xstart, xend, img, origin, voxsize, out, *tof):
        self._check(xstart, xend, origin, voxsize, out, n_bins=tof[3])
        self._check_tof(*tof)
        self.calls.append(("tof_sino_fwd", img.shape, tof[4]))
        out[:] = img.sum()

    def joseph3d_tof_sino_back(self, xstart, xend, img, origin, voxsize, values, *tof):
        self._check(xstart, xend, origin, voxsize, values, n_bins=tof[3])
        self._check_tof(*tof)
        self.calls.append(("tof_sino_back", img.shape, tof[4]))
        img[:] = values.sum()

    def joseph3d_tof_lm_fwd(self, xstart, xend, img, origin, voxsize, out, w, sigma, offset, tof_bin, *rest):
        self._check(xstart, xend, origin, voxsize, out)
        self._check_tof(w, sigma, offset, *rest, tof_bin=tof_bin)
        self.calls.append(("tof_lm_fwd", img.shape, rest[1]))
        out[:] = img.sum() + tof_bin

    def joseph3d_tof_lm_back(self, xstart, xend, img, origin, voxsize, values, w, sigma, offset, tof_bin, *rest):
        self._check(xstart, xend, origin, voxsize, values)
        self._check_tof(w, sigma, offset, *rest, tof_bin=tof_bin)
        self.calls.append(("tof_lm_back", img.shape, rest[1]))
        img[:] = values.sum()


def _contract(monkeypatch, in_place):
    contract = _CallContract(in_place)
    kernels = ppb._Kernels(contract, in_place, "contract")
    monkeypatch.setattr(ppb, "_kernels", lambda: kernels)
    return contract, kernels


@pytest.mark.parametrize("in_place", [True, False], ids=["parallelproj-2.x", "parallelproj-1.x"])
def test_plan_call_contract(in_place, grid2d, beam2d, monkeypatch):
    contract, kernels = _contract(monkeypatch, in_place)
    assert kernels.has_tof == in_place
    plan = ppb.make_plan(grid2d, beam2d.lor_tables(), torch.device("cpu"))
    x = torch.ones(grid2d.shape, dtype=torch.float64)
    y = plan.forward(x)
    assert y.shape == (beam2d.n_lors,) and y.dtype == torch.float64
    assert float(y[0]) == grid2d.n_voxels  # the zero padding adds nothing
    back = plan.adjoint(torch.ones(beam2d.n_lors))
    assert back.shape == grid2d.shape and back.dtype == torch.float32 and back.is_contiguous()
    assert float(back[0, 0]) == beam2d.n_lors
    # parallelproj sees the image padded by one zero layer in x and y
    assert contract.calls == [("fwd", (42, 38, 1)), ("back", (42, 38, 1))]


def test_plan_tof_call_contract(tiny, rng, monkeypatch):
    contract, _ = _contract(monkeypatch, True)
    tof = pettk.TOFParams(fwhm_mm=25.0, n_bins=9, bin_width_mm=12.0)
    plan = ppb.make_plan(tiny.grid, tiny.layout.lor_tables(), "cpu", tof)
    assert plan.n_out == tiny.layout.n_lors * 9
    x = torch.ones(tiny.grid.shape)
    assert plan.forward(x).shape == (plan.n_out,)
    assert plan.adjoint(torch.ones(plan.n_out, dtype=torch.float64)).dtype == torch.float64
    s, e = random_lors(rng, 30, 3)
    bins = rng.integers(0, 9, size=30)
    lm = ppb.make_plan(tiny.grid, pettk.LORList(s, e, tof_bin=bins).lor_tables(), "cpu", tof)
    assert lm.n_out == 30
    np.testing.assert_array_equal(lm.forward(x).numpy(), tiny.grid.n_voxels + bins)  # its bins reach the kernel
    lm.adjoint(torch.ones(30))
    sino, lmode = (ppb.tof_arguments(tof, m)["num_sigmas"] for m in (False, True))
    assert contract.calls == [("tof_sino_fwd", (34, 34, 10), sino), ("tof_sino_back", (34, 34, 10), sino),
                              ("tof_lm_fwd", (34, 34, 10), lmode), ("tof_lm_back", (34, 34, 10), lmode)]


def test_plan_tof_needs_parallelproj_2(tiny, monkeypatch):
    _contract(monkeypatch, False)
    tof = pettk.TOFParams(fwhm_mm=25.0, n_bins=9, bin_width_mm=12.0)
    with pytest.raises(ValueError, match="parallelproj 2.x"):
        ppb.ParallelprojPlan(tiny.grid, tiny.layout.lor_tables(), "cpu", tof)


# -- agreement with pettk's own kernels (parallelproj needed) -----------------------------------------
def _compare(grid, tables, rng, tof=None, dtype=torch.float32, tol=1e-4):
    """Max |parallelproj - cpu| / max |cpu| of the forward (tie-free LORs) and back projection of a
    random image and sinogram (every voxel non-zero, the outermost layer included)."""
    pp = ppb.ParallelprojPlan(grid, tables, "cpu", tof)
    ref = CPUPlan(grid, tables, tof)
    assert pp.n_out == ref.n_out
    keep = ~_ties(tables)
    if pp.n_out != tables.n_lors:  # TOF sinogram: every bin of the LOR
        keep = np.repeat(keep, tof.n_bins)
    keep = torch.from_numpy(keep)
    x = torch.from_numpy(rng.random(grid.shape) + 0.1).to(dtype)
    y = torch.from_numpy(rng.random(pp.n_out)).to(dtype) * keep
    fx, fx_ref = pp.forward(x), ref.forward(x)
    assert fx.dtype == dtype and fx.shape == fx_ref.shape
    err_fwd = float(((fx - fx_ref) * keep).abs().max()) / float(fx_ref.abs().max())
    bx, bx_ref = pp.adjoint(y), ref.adjoint(y)
    assert bx.shape == tuple(grid.shape) and bx.dtype == dtype
    err_back = float((bx - bx_ref).abs().max()) / float(bx_ref.abs().max())
    print(f"max relative difference: forward {err_fwd:.2e}, back {err_back:.2e}")
    assert err_fwd <= tol and err_back <= tol
    return fx, fx_ref, keep


@needs_parallelproj
def test_parallelproj_matches_cpu_3d_sinogram(tiny, rng):
    _compare(tiny.grid, tiny.layout.lor_tables(), rng)


@needs_parallelproj
def test_parallelproj_matches_cpu_3d_sinogram_view_subset(tiny, rng):
    _compare(tiny.grid, tiny.layout.lor_tables(slice(1, None, 5)), rng, dtype=torch.float64)


@needs_parallelproj
def test_parallelproj_matches_cpu_2d(grid2d, beam2d, rng):
    _compare(grid2d, beam2d.lor_tables(), rng)


@needs_parallelproj
def test_parallelproj_matches_cpu_2d_ring_sinogram(tiny, rng):
    _compare(tiny.grid_2d, tiny.layout_2d.lor_tables(), rng)


@needs_parallelproj
def test_parallelproj_matches_cpu_list_mode_float64(rng):
    grid = pettk.ImageGrid((24, 20, 10), (2.0, 2.5, 3.0))
    start, end = random_lors(rng, 700, 3, radius=60.0, axial_half=20.0)
    _compare(grid, pettk.LORList(start, end).lor_tables(), rng, dtype=torch.float64)


@needs_parallelproj
def test_parallelproj_sees_pettk_support_outside_the_voxels_box():
    """LORs that pass up to a voxel outside the grid's faces, where pettk's interpolant is still
    non-zero but parallelproj 2.x's box clipping alone would drop them: the padding keeps them."""
    grid = pettk.ImageGrid((12, 10, 6), (2.0, 2.5, 3.0))
    lo = np.asarray(grid.origin_mm)
    hi = lo + (np.asarray(grid.shape) - 1) * np.asarray(grid.voxel_size_mm)
    vs = np.asarray(grid.voxel_size_mm)
    starts, ends = [], []
    for frac in (0.25, 0.5, 0.75, 0.95):  # distance outside the outermost voxel centre, in voxels
        y_out, z_out = lo[1] - frac * vs[1], hi[2] + frac * vs[2]
        starts += [[-60.0, y_out, 0.3], [-60.0, 0.7, z_out], [0.4, -60.0, lo[2] - frac * vs[2]]]
        ends += [[60.0, y_out + 1.0, 0.3], [60.0, 0.9, z_out - 0.3], [0.6, 60.0, lo[2] - frac * vs[2]]]
    lors = pettk.LORList(np.asarray(starts), np.asarray(ends))
    x = np.random.default_rng(5).random(grid.shape) + 0.5
    P = pettk.Projector(grid, lors, backend="parallelproj")
    expected = pettk.Projector(grid, lors, backend="cpu").forward(x)
    assert (expected > 0).all()
    np.testing.assert_allclose(P.forward(x), expected, rtol=1e-5)
    y = np.ones(lors.n_lors)
    np.testing.assert_allclose(P.adjoint(y), pettk.Projector(grid, lors, backend="cpu").adjoint(y),
                               rtol=1e-5, atol=1e-6)


def _tof_for(grid, tables, n_sigmas, fwhm_mm=25.0, width=12.0):
    reach = _joseph_cpu.max_sample_offset_mm(grid, tables)
    return pettk.TOFParams(fwhm_mm=fwhm_mm, n_bins=int(np.ceil(2 * reach / width)) | 1, bin_width_mm=width,
                           n_sigmas=n_sigmas)


@needs_parallelproj
def test_parallelproj_matches_cpu_tof_sinogram_3d(tiny, rng):
    tables = tiny.layout.lor_tables()
    _compare(tiny.grid, tables, rng, tof=_tof_for(tiny.grid, tables, 5.0))


@needs_parallelproj
def test_parallelproj_matches_cpu_tof_sinogram_2d(grid2d, beam2d, rng):
    tables = beam2d.lor_tables()
    _compare(grid2d, tables, rng, tof=_tof_for(grid2d, tables, 5.0, fwhm_mm=18.0, width=7.0))


@needs_parallelproj
@pytest.mark.parametrize("ndim", [3, 2])
def test_parallelproj_matches_cpu_tof_list_mode(ndim, rng):
    grid = pettk.ImageGrid((24, 20, 10), (2.0, 2.5, 3.0)) if ndim == 3 else pettk.ImageGrid((30, 26), 2.5)
    start, end = random_lors(rng, 800, ndim, radius=60.0, axial_half=20.0)
    tof = _tof_for(grid, pettk.LORList(start, end).lor_tables(), 5.0)
    bins = rng.integers(0, tof.n_bins, size=800)
    _compare(grid, pettk.LORList(start, end, tof_bin=bins).lor_tables(), rng, tof=tof, dtype=torch.float64)


@needs_parallelproj
def test_parallelproj_tof_at_three_sigma_differs_only_by_its_normalisation(tiny, rng):
    """At pettk's default 3-sigma truncation the kernels weigh the same bins, but parallelproj
    divides each sample's TOF weights by their sum (the Gaussian mass inside the window, at least
    erf(3 / sqrt 2)), pettk does not: cpu <= parallelproj <= cpu / erf(3 / sqrt 2) bin by bin, and
    list mode within the same relative margin."""
    tables = tiny.layout.lor_tables()
    tof = _tof_for(tiny.grid, tables, 3.0)
    bound = 1.0 / math.erf(3.0 / math.sqrt(2.0)) - 1.0  # 2.7e-3
    fx, fx_ref, keep = _compare(tiny.grid, tables, rng, tof=tof, tol=bound)
    fx, fx_ref = fx[keep].double(), fx_ref[keep].double()
    slack = 1e-5 * float(fx_ref.max())  # float32 rounding
    assert bool((fx >= fx_ref - slack).all()) and bool((fx <= fx_ref * (1 + bound) + slack).all())
    grid = pettk.ImageGrid((24, 20, 10), (2.0, 2.5, 3.0))
    start, end = random_lors(rng, 800, 3, radius=60.0, axial_half=20.0)
    tof = _tof_for(grid, pettk.LORList(start, end).lor_tables(), 3.0)
    bins = rng.integers(0, tof.n_bins, size=800)
    _compare(grid, pettk.LORList(start, end, tof_bin=bins).lor_tables(), rng, tof=tof, tol=bound)


@needs_parallelproj
@pytest.mark.parametrize("case", ["non-TOF", "TOF sinogram", "TOF list mode"])
def test_parallelproj_adjointness(case, tiny, rng):
    tables = tiny.layout.lor_tables()
    tof = None if case == "non-TOF" else _tof_for(tiny.grid, tables, 3.0)
    if case == "TOF list mode":
        start, end = random_lors(rng, 2000, 3, radius=60.0, axial_half=6.0)
        tables = pettk.LORList(start, end, tof_bin=rng.integers(0, tof.n_bins, size=2000)).lor_tables()
    pp = ppb.ParallelprojPlan(tiny.grid, tables, "cpu", tof)
    x = torch.from_numpy(rng.random(tiny.grid.shape)).float()
    y = torch.from_numpy(rng.random(pp.n_out)).float()
    lhs = float((pp.forward(x).double() * y.double()).sum())
    rhs = float((x.double() * pp.adjoint(y).double()).sum())
    assert abs(lhs - rhs) <= 1e-4 * abs(lhs)


@needs_parallelproj
@pytest.mark.parametrize("tof", [False, True], ids=["non-TOF", "TOF"])
def test_projector_backend_parallelproj_autograd(tof, tiny, rng):
    """Projector(..., backend="parallelproj"): the forward of a float32 tensor and, through the
    autograd bridge, its gradient (the parallelproj back projection) match the cpu backend."""
    tof = _tof_for(tiny.grid, tiny.layout.lor_tables(), 5.0) if tof else None
    P = pettk.Projector(tiny.grid, tiny.layout, backend="parallelproj", tof=tof)
    Q = pettk.Projector(tiny.grid, tiny.layout, backend="cpu", tof=tof)
    keep = torch.from_numpy(~_ties(tiny.layout.lor_tables())).reshape(tiny.layout.shape)
    if tof is not None:
        keep = keep[..., None].expand(P.shape_out)
    weights = torch.from_numpy(rng.random(P.shape_out)).float() * keep
    x0 = torch.from_numpy(rng.random(tiny.grid.shape) + 0.1).float()
    grads = []
    for proj in (P, Q):
        x = x0.clone().requires_grad_()
        y = proj(x)
        assert y.shape == proj.shape_out and y.requires_grad
        (y * weights).sum().backward()  # x.grad = P^T weights, by the backend's own back projection
        grads.append((y.detach(), x.grad))
    (y_pp, g_pp), (y_cpu, g_cpu) = grads
    assert float(((y_pp - y_cpu) * keep).abs().max()) <= 1e-4 * float(y_cpu.abs().max())
    assert float((g_pp - g_cpu).abs().max()) <= 1e-4 * float(g_cpu.abs().max())


@needs_parallelproj
def test_projector_backend_parallelproj_numpy_float64_batch(grid2d, beam2d, rng):
    P = pettk.Projector(grid2d, beam2d, backend="parallelproj")
    Q = pettk.Projector(grid2d, beam2d, backend="cpu")
    x = rng.random((2,) + grid2d.shape)
    y = P.forward(x)
    assert isinstance(y, np.ndarray) and y.dtype == np.float64 and y.shape == (2,) + beam2d.shape
    np.testing.assert_allclose(y, Q.forward(x), rtol=0, atol=1e-5 * float(np.abs(y).max()))
    assert ppb.describe().split()[0] in ("parallelproj_core", "parallelproj_backend", "parallelproj")

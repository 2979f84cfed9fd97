"""The parallelproj backend: coordinate conversion (always) and agreement with pettk (with parallelproj).

parallelproj is not on PyPI (conda only), so the agreement tests skip where it is missing. The
conversion tests need no parallelproj: they pin the arrays handed to its kernels against pettk's
own geometry numbers, and rebuild a pettk problem from those arrays alone to show that they
describe exactly the same voxels and LORs.
"""

import numpy as np
import pytest
import torch
from _helpers import random_lors

import pettk
from pettk.backends import parallelproj_backend as ppb
from pettk.backends.cpu import CPUPlan

needs_parallelproj = pytest.mark.skipif(not ppb.available(), reason=f"parallelproj not importable "
                                        f"({ppb.unavailable_reason()})")


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
def test_converted_arrays_describe_the_same_problem(case, tiny, grid2d, beam2d, rng):
    """Rebuild the problem from the converted arrays alone (a 3D grid from shape/origin/voxsize, a
    LORList from xstart/xend) and project with pettk's numba backend: same numbers as the original
    projector, so the conversion loses nothing and permutes nothing."""
    grid, geometry = (tiny.grid, tiny.layout) if case == "3d-sinogram" else (grid2d, beam2d)
    shape, origin, voxsize = ppb.image_geometry(grid)
    xstart, xend = ppb.lor_endpoints(geometry.lor_tables())
    rebuilt = pettk.Projector(pettk.ImageGrid(shape, voxsize.astype(np.float64), origin.astype(np.float64)),
                              pettk.LORList(xstart.astype(np.float64), xend.astype(np.float64)), backend="cpu")
    original = pettk.Projector(grid, geometry, backend="cpu")
    x = rng.random(grid.shape)
    expected = original.forward(x).reshape(-1)
    got = rebuilt.forward(x.reshape(shape))
    # exactly-45-degree LORs may switch stepping axis when their endpoints are rounded to float32
    keep = ~_ties(geometry.lor_tables())
    assert 0 < keep.sum() and keep.mean() > 0.9
    assert float(np.abs(got - expected)[keep].max()) <= 1e-4 * float(np.abs(expected).max())


def test_plan_rejects_tof_before_anything_else(tiny):
    tof = pettk.TOFParams(fwhm_mm=30.0, n_bins=9, bin_width_mm=20.0)
    with pytest.raises(ValueError, match="non-TOF"):
        ppb.ParallelprojPlan(tiny.grid, tiny.layout.lor_tables(), "cpu", tof=tof)


def test_plan_rejects_other_devices(tiny):
    assert ppb.supports(torch.device("cpu")) and not ppb.supports(torch.device("meta"))
    with pytest.raises(ValueError, match="device"):
        ppb.ParallelprojPlan(tiny.grid, tiny.layout.lor_tables(), "meta")


@pytest.mark.skipif(ppb.available(), reason="parallelproj is installed")
def test_plan_without_parallelproj_says_how_to_install(tiny):
    with pytest.raises(ImportError, match="conda"):
        ppb.ParallelprojPlan(tiny.grid, tiny.layout.lor_tables(), "cpu")
    assert ppb.unavailable_reason()


class _CallContract:
    """Records parallelproj calls and checks them against the kernels' documented contract (the
    checks of parallelproj 2.x's bindings: float32 C-contiguous arrays, ``(n, 3)`` endpoints, a 3D
    image, ``(3,)`` origin and voxel size, one value per LOR). It computes nothing: the numbers are
    tested against real parallelproj above and below."""

    def __init__(self, in_place):
        self.in_place = in_place
        self.calls = []

    def _check(self, xstart, xend, origin, voxsize, values=None):
        for a in (xstart, xend, origin, voxsize) + (() if values is None else (values,)):
            assert isinstance(a, np.ndarray) and a.dtype == np.float32 and a.flags.c_contiguous
        assert xstart.ndim == 2 and xstart.shape[1] == 3 and xend.shape == xstart.shape
        assert origin.shape == voxsize.shape == (3,)
        assert values is None or values.shape == xstart.shape[:-1]

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


@pytest.mark.parametrize("in_place", [True, False], ids=["parallelproj-2.x", "parallelproj-1.x"])
def test_plan_call_contract(in_place, grid2d, beam2d, monkeypatch):
    contract = _CallContract(in_place)
    monkeypatch.setattr(ppb, "_kernels", lambda: ppb._Kernels(contract, in_place, "contract"))
    plan = ppb.make_plan(grid2d, beam2d.lor_tables(), torch.device("cpu"))
    x = torch.ones(grid2d.shape, dtype=torch.float64)
    y = plan.forward(x)
    assert y.shape == (beam2d.n_lors,) and y.dtype == torch.float64
    assert float(y[0]) == grid2d.n_voxels
    back = plan.adjoint(torch.ones(beam2d.n_lors))
    assert back.shape == grid2d.shape and back.dtype == torch.float32
    assert float(back[0, 0]) == beam2d.n_lors
    assert contract.calls == [("fwd", (40, 36, 1)), ("back", (40, 36, 1))]


# -- agreement with pettk's own kernels (parallelproj needed) -----------------------------------------
def _compare(grid, tables, rng, dtype=torch.float32):
    pp = ppb.ParallelprojPlan(grid, tables, "cpu")
    ref = CPUPlan(grid, tables)
    keep = torch.from_numpy(~_ties(tables))
    x = torch.from_numpy(rng.random(grid.shape)).to(dtype)
    y = torch.from_numpy(rng.random(tables.n_lors)).to(dtype) * keep
    fx, fx_ref = pp.forward(x), ref.forward(x)
    assert fx.dtype == dtype and fx.shape == fx_ref.shape
    scale = float(fx_ref.abs().max())
    assert float(((fx - fx_ref) * keep).abs().max()) <= 1e-4 * scale
    bx, bx_ref = pp.adjoint(y), ref.adjoint(y)
    assert bx.shape == tuple(grid.shape)
    assert float((bx - bx_ref).abs().max()) <= 1e-4 * float(bx_ref.abs().max())


@needs_parallelproj
def test_parallelproj_matches_cpu_3d_sinogram(tiny, rng):
    _compare(tiny.grid, tiny.layout.lor_tables(), rng)


@needs_parallelproj
def test_parallelproj_matches_cpu_2d(grid2d, beam2d, rng):
    _compare(grid2d, beam2d.lor_tables(), rng)


@needs_parallelproj
def test_parallelproj_matches_cpu_list_mode_float64(rng):
    grid = pettk.ImageGrid((24, 20, 10), (2.0, 2.5, 3.0))
    start, end = random_lors(rng, 700, 3, radius=60.0, axial_half=20.0)
    _compare(grid, pettk.LORList(start, end).lor_tables(), rng, torch.float64)


@needs_parallelproj
def test_parallelproj_adjointness(tiny, rng):
    pp = ppb.ParallelprojPlan(tiny.grid, tiny.layout.lor_tables(), "cpu")
    x = torch.from_numpy(rng.random(tiny.grid.shape)).float()
    y = torch.from_numpy(rng.random(pp.n_out)).float()
    lhs = float((pp.forward(x).double() * y.double()).sum())
    rhs = float((x.double() * pp.adjoint(y).double()).sum())
    assert abs(lhs - rhs) <= 1e-4 * abs(lhs)


@needs_parallelproj
def test_projector_backend_name(tiny, rng):
    from pettk import backends

    if "parallelproj" not in backends.BACKEND_NAMES:
        pytest.skip("backend name 'parallelproj' not registered in pettk.backends yet")
    P = pettk.Projector(tiny.grid, tiny.layout, backend="parallelproj")
    Q = pettk.Projector(tiny.grid, tiny.layout, backend="cpu")
    x = torch.from_numpy(rng.random(tiny.grid.shape)).float().requires_grad_()
    y = P.forward(x)
    keep = torch.from_numpy(~_ties(tiny.layout.lor_tables())).reshape(P.shape_out)
    assert float(((y - Q.forward(x)) * keep).abs().max()) <= 1e-4 * float(y.abs().max())
    (y * keep).sum().backward()  # the autograd bridge uses the parallelproj adjoint
    assert x.grad is not None and x.grad.shape == x.shape

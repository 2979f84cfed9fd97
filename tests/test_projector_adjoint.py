"""<P x, y> = <x, P^T y> in float64 for every geometry and backend."""

import numpy as np
import pytest
from _helpers import assert_adjoint, random_lors
from hypothesis import given, settings
from hypothesis import strategies as st

import pettk

BACKENDS = ["cpu", "reference"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_adjoint_parallel_beam_2d(backend, grid2d, beam2d, rng):
    P = pettk.Projector(grid2d, beam2d, backend=backend)
    assert_adjoint(P, rng.random(grid2d.shape), rng.random(P.shape_out), rtol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_adjoint_3d_oblique_sinogram(backend, tiny, rng):
    P = pettk.Projector(tiny.grid, tiny.layout, backend=backend)
    assert P.shape_out == (16, 48, 49)
    assert_adjoint(P, rng.random(tiny.grid.shape), rng.random(P.shape_out), rtol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("ndim", [2, 3])
def test_adjoint_lor_list(backend, ndim, rng):
    grid = pettk.ImageGrid((20, 18, 12)[:ndim], (3.0, 3.5, 2.0)[:ndim])
    start, end = random_lors(rng, 500, ndim, radius=70.0, axial_half=15.0)
    P = pettk.Projector(grid, pettk.LORList(start, end), backend=backend)
    assert_adjoint(P, rng.random(grid.shape), rng.random(P.shape_out), rtol=1e-6)


def test_adjoint_lors_stepping_along_every_axis(rng):
    """Nearly axial LORs step along z: exercise all three stepping axes in one list."""
    grid = pettk.ImageGrid((10, 12, 14), (2.0, 2.0, 2.0))
    start = np.array([[-30.0, 1.0, 0.5], [0.3, -30.0, 2.0], [1.0, -2.0, -30.0], [5.0, 5.0, -30.0]])
    end = np.array([[30.0, -2.0, 3.0], [1.0, 30.0, -1.0], [-1.5, 2.5, 30.0], [-4.0, 3.0, 29.0]])
    P = pettk.Projector(grid, pettk.LORList(start, end))
    assert_adjoint(P, rng.random(grid.shape), rng.random(4), rtol=1e-6)
    assert np.all(P.forward(np.ones(grid.shape)) > 0)


@settings(max_examples=25, deadline=None)
@given(
    shape=st.tuples(st.integers(1, 9), st.integers(1, 9), st.integers(1, 9)),
    voxel=st.tuples(*[st.floats(0.5, 4.0)] * 3),
    origin_shift=st.tuples(*[st.floats(-5.0, 5.0)] * 3),
    seed=st.integers(0, 2**31 - 1),
)
def test_adjoint_property_random_grids(shape, voxel, origin_shift, seed):
    """Anisotropic voxels, shifted origins, LORs ending inside or outside the grid."""
    rng = np.random.default_rng(seed)
    origin = tuple(-(n - 1) / 2 * v + s for n, v, s in zip(shape, voxel, origin_shift))
    grid = pettk.ImageGrid(shape, voxel, origin_mm=origin)
    start = rng.uniform(-25, 25, size=(200, 3))
    end = rng.uniform(-25, 25, size=(200, 3))
    P = pettk.Projector(grid, pettk.LORList(start, end))
    x, y = rng.random(shape), rng.random(200)
    px, pty = P.forward(x), P.adjoint(y)
    lhs, rhs = float(px @ y), float((x * pty).sum())
    assert abs(lhs - rhs) <= 1e-9 * max(abs(lhs), 1e-12)
    # the reference backend defines the same numbers
    R = pettk.Projector(grid, pettk.LORList(start, end), backend="reference")
    np.testing.assert_allclose(px, R.forward(x), rtol=1e-10, atol=1e-10)


def test_adjoint_float32_is_close(tiny, rng):
    P = pettk.Projector(tiny.grid, tiny.layout)
    x = rng.random(tiny.grid.shape).astype(np.float32)
    y = rng.random(P.shape_out).astype(np.float32)
    assert P.forward(x).dtype == np.float32 and P.adjoint(y).dtype == np.float32
    assert_adjoint(P, x, y, rtol=1e-5)


@pytest.mark.parametrize("ndim", [2, 3])
def test_nearly_axis_parallel_lors_outside_the_grid(ndim):
    """Slopes of 1e-16 outside the grid once overflowed an int conversion (a crash)."""
    grid = pettk.ImageGrid((64, 64, 8)[:ndim], 0.25)
    offsets = np.array([8.13, 9.0, 129.0, -8.13, 1e3])  # the grid spans +-8 mm: voxel centres to 7.875
    tiny = np.array([6e-17, -6e-17, 2.4e-14, 1e-300, 0.0])
    start, end = [], []
    for off, slope in zip(offsets, tiny):
        for axis in range(ndim):
            p0 = np.zeros(ndim)
            p1 = np.zeros(ndim)
            p0[axis], p1[axis] = -400.0, 400.0
            other = (axis + 1) % ndim
            p0[other], p1[other] = off - slope * 400, off + slope * 400
            start.append(p0)
            end.append(p1)
    start.append(np.full(ndim, -1e15))
    end.append(np.full(ndim, 1e15))
    lors = pettk.LORList(np.array(start), np.array(end))
    x = np.ones(grid.shape)
    for backend in ("cpu", "reference"):
        y = pettk.Projector(grid, lors, backend=backend).forward(x)
        np.testing.assert_allclose(y[:-1], 0.0)
    through_centre = pettk.Projector(grid, lors).forward(x)[-1]
    assert through_centre > 0

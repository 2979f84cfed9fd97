"""Projector API: array types, batching, subsets, and clear errors for bad input."""

import numpy as np
import pytest
import torch

import pettk
from pettk.geometry import LORList


# -- array types and batching ------------------------------------------------------------------------
def test_numpy_in_numpy_out_torch_in_torch_out(grid2d, beam2d, rng):
    P = pettk.Projector(grid2d, beam2d)
    x = rng.random(grid2d.shape).astype(np.float32)
    y_np = P.forward(x)
    assert isinstance(y_np, np.ndarray) and y_np.dtype == np.float32 and y_np.shape == (30, 61)
    y_t = P.forward(torch.from_numpy(x))
    assert isinstance(y_t, torch.Tensor) and y_t.dtype == torch.float32
    np.testing.assert_array_equal(y_np, y_t.numpy())
    b = P.adjoint(y_np.astype(np.float64))
    assert b.dtype == np.float64 and b.shape == grid2d.shape


def test_non_contiguous_input_is_handled(grid2d, beam2d, rng):
    P = pettk.Projector(grid2d, beam2d)
    big = rng.random((grid2d.shape[1], grid2d.shape[0]))
    x = big.T  # Fortran-ordered view
    np.testing.assert_allclose(P.forward(x), P.forward(np.ascontiguousarray(x)))


def test_leading_batch_dimensions_are_kept(tiny, rng):
    P = pettk.Projector(tiny.grid, tiny.layout)
    x = rng.random((2, 3) + tiny.grid.shape)
    y = P.forward(x)
    assert y.shape == (2, 3) + tiny.layout.shape
    np.testing.assert_allclose(y[1, 2], P.forward(x[1, 2]))
    b = P.adjoint(y)
    assert b.shape == x.shape
    np.testing.assert_allclose(b[0, 1], P.adjoint(y[0, 1]))
    empty = P.forward(np.zeros((0,) + tiny.grid.shape))
    assert empty.shape == (0,) + tiny.layout.shape


def test_linearity(tiny, rng):
    P = pettk.Projector(tiny.grid, tiny.layout)
    a, b = rng.random(tiny.grid.shape), rng.random(tiny.grid.shape)
    np.testing.assert_allclose(P.forward(2 * a - 3 * b), 2 * P.forward(a) - 3 * P.forward(b), rtol=1e-10, atol=1e-10)


# -- subsets -------------------------------------------------------------------------------------------
def test_subsets_partition_the_views(tiny, rng):
    P = pettk.Projector(tiny.grid, tiny.layout)
    subsets = P.subsets(5)
    assert len(subsets) == 5
    assert sum(s.shape_out[1] for s in subsets) == tiny.layout.n_views
    assert subsets[1].shape_out == (16, 10, 49)
    x = rng.random(tiny.grid.shape)
    y_full = P.forward(x)
    for s in subsets:
        np.testing.assert_allclose(s.forward(x), s.select(y_full), rtol=1e-12)
    total = sum(s.adjoint(s.select(y_full)) for s in subsets)
    np.testing.assert_allclose(total, P.adjoint(y_full), rtol=1e-10)
    # subsets of a subset keep the original view numbering
    nested = subsets[2].subsets(2)[1]
    np.testing.assert_array_equal(nested._view_indices(), np.arange(48)[2::5][1::2])
    np.testing.assert_allclose(nested.forward(x), nested.select(torch.from_numpy(y_full)).numpy(), rtol=1e-12)


def test_lor_list_subsets_split_events(rng):
    grid = pettk.ImageGrid((8, 8), 2.0)
    start = rng.uniform(-30, 30, size=(11, 2))
    lors = LORList(start, -start)
    P = pettk.Projector(grid, lors)
    x = rng.random(grid.shape)
    y = P.forward(x)
    subs = P.subsets(3)
    np.testing.assert_allclose(subs[2].forward(x), y[2::3])
    np.testing.assert_allclose(subs[0].select(y), y[0::3])


def test_subsets_reject_bad_counts(tiny):
    P = pettk.Projector(tiny.grid, tiny.layout)
    with pytest.raises(ValueError, match=r"n must be <= the number of views \(48\), got 49"):
        P.subsets(49)
    with pytest.raises(ValueError, match="n must be an integer >= 1, got 0"):
        P.subsets(0)
    with pytest.raises(ValueError, match=r"y_full must have shape \(\.\.\., 16, 48, 49\)"):
        P.subsets(2)[0].select(np.zeros((16, 24, 49)))


# -- errors --------------------------------------------------------------------------------------------
@pytest.fixture
def P2(grid2d, beam2d):
    return pettk.Projector(grid2d, beam2d)


@pytest.mark.parametrize("make, exc, match", [
    (lambda: np.zeros((40, 35)), ValueError, r"x must have shape \(\.\.\., 40, 36\), got \(40, 35\)"),
    (lambda: np.zeros((36, 40)), ValueError, r"x must have shape \(\.\.\., 40, 36\), got \(36, 40\)"),
    (lambda: np.zeros(40), ValueError, r"x must have shape \(\.\.\., 40, 36\), got \(40,\)"),
    (lambda: np.zeros((40, 36), dtype=np.int64), TypeError, "x must have dtype float32 or float64, got int64"),
    (lambda: torch.zeros((40, 36), dtype=torch.float16), TypeError, "x must have dtype torch.float32 or"),
    (lambda: torch.zeros((40, 36), dtype=torch.complex64), TypeError, "x must have dtype"),
    (lambda: np.full((40, 36), np.nan), ValueError, r"x contains 1440 non-finite values \(NaN or inf\)"),
    (lambda: [[0.0] * 36] * 40, TypeError, "x must be a numpy array or a torch tensor, got list"),
])
def test_forward_rejects_bad_images(P2, make, exc, match):
    with pytest.raises(exc, match=match):
        P2.forward(make())


def test_adjoint_rejects_bad_sinograms(P2):
    with pytest.raises(ValueError, match=r"y must have shape \(\.\.\., 30, 61\), got \(61, 30\)"):
        P2.adjoint(np.zeros((61, 30)))
    y = torch.zeros(30, 61)
    y[3, 4] = float("inf")
    with pytest.raises(ValueError, match="y contains 1 non-finite values"):
        P2.adjoint(y)


def test_device_errors(grid2d, beam2d):
    P = pettk.Projector(grid2d, beam2d, backend="cpu")
    meta = torch.zeros(grid2d.shape, device="meta")
    with pytest.raises(ValueError, match="backend 'cpu' cannot run tensors on device meta"):
        P.forward(meta)
    with pytest.raises(ValueError, match="backend 'auto' cannot run tensors on device meta"):
        pettk.Projector(grid2d, beam2d).forward(torch.zeros(grid2d.shape, device="meta"))


def test_constructor_errors(grid2d, beam2d, tiny):
    with pytest.raises(TypeError, match="grid must be an ImageGrid, got tuple"):
        pettk.Projector((40, 36), beam2d)
    expected = "geometry must be a SinogramLayout, SinogramLayout2D, ParallelBeam2D or LORList, got str"
    with pytest.raises(TypeError, match=expected):
        pettk.Projector(grid2d, "beam")
    with pytest.raises(ValueError, match="geometry SinogramLayout has 3D points but the grid is 2D"):
        pettk.Projector(grid2d, tiny.layout)
    with pytest.raises(ValueError, match="geometry ParallelBeam2D has 2D points but the grid is 3D"):
        pettk.Projector(tiny.grid, beam2d)
    with pytest.raises(ValueError, match="backend must be one of 'auto', 'cpu', 'reference', 'cuda', 'parallelproj', "
                                         "got 'gpu'"):
        pettk.Projector(grid2d, beam2d, backend="gpu")
    with pytest.raises(ValueError, match=r"half_length_mm=20 mm; pass ParallelBeam2D\(\.\.\., half_length_mm>=62\)"):
        pettk.Projector(grid2d, pettk.ParallelBeam2D(30, 61, 1.7, half_length_mm=20.0))


def test_cuda_backend_request_without_cupy(grid2d, beam2d):
    from pettk import backends

    if backends.cuda_available():
        pytest.skip("CuPy backend present")
    with pytest.raises(ValueError, match="backend='cuda' needs CuPy"):
        pettk.Projector(grid2d, beam2d, backend="cuda")


def test_check_finite_can_be_disabled(grid2d, beam2d):
    P = pettk.Projector(grid2d, beam2d, check_finite=False)
    x = np.zeros(grid2d.shape)
    x[0, 0] = np.nan
    assert np.isnan(P.forward(x)).any()

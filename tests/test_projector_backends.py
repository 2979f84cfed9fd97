"""The numba backend agrees with the plain-torch reference (1e-5 relative)."""

import numpy as np
import pytest
import torch
from _helpers import random_lors

import pettk


def _agree(grid, geometry, rng, dtype, rtol):
    cpu = pettk.Projector(grid, geometry, backend="cpu")
    ref = pettk.Projector(grid, geometry, backend="reference")
    x = torch.from_numpy(rng.random(grid.shape)).to(dtype)
    y = torch.from_numpy(rng.random(cpu.shape_out)).to(dtype)
    fx_cpu, fx_ref = cpu.forward(x), ref.forward(x)
    bx_cpu, bx_ref = cpu.adjoint(y), ref.adjoint(y)
    assert fx_cpu.dtype == fx_ref.dtype == dtype
    for a, b in ((fx_cpu, fx_ref), (bx_cpu, bx_ref)):
        scale = b.abs().max()
        assert scale > 0
        assert float((a - b).abs().max() / scale) < rtol


@pytest.mark.parametrize("dtype, rtol", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
def test_backends_agree_2d(grid2d, beam2d, rng, dtype, rtol):
    _agree(grid2d, beam2d, rng, dtype, rtol)


@pytest.mark.parametrize("dtype, rtol", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
def test_backends_agree_3d_oblique(tiny, rng, dtype, rtol):
    _agree(tiny.grid, tiny.layout, rng, dtype, rtol)


@pytest.mark.parametrize("ndim", [2, 3])
def test_backends_agree_lor_list(ndim, rng):
    grid = pettk.ImageGrid((24, 20, 10)[:ndim], (2.0, 2.5, 3.0)[:ndim])
    start, end = random_lors(rng, 700, ndim, radius=60.0, axial_half=20.0)
    _agree(grid, pettk.LORList(start, end), rng, torch.float32, 1e-5)


def test_reference_chunking_does_not_change_results(tiny, rng):
    from pettk.backends.reference import ReferencePlan

    tables = tiny.layout.lor_tables()
    x = torch.from_numpy(rng.random(tiny.grid.shape))
    y = torch.from_numpy(rng.random(tables.n_lors))
    big = ReferencePlan(tiny.grid, tables, "cpu")
    small = ReferencePlan(tiny.grid, tables, "cpu", chunk_samples=500)
    torch.testing.assert_close(big.forward(x), small.forward(x), rtol=1e-12, atol=0)
    torch.testing.assert_close(big.adjoint(y), small.adjoint(y), rtol=1e-12, atol=1e-12)


def test_cpu_adjoint_independent_of_thread_count(tiny, rng):
    """The race-free back projection gives the same image with 1 thread or all of them."""
    import numba

    P = pettk.Projector(tiny.grid, tiny.layout, backend="cpu")
    y = rng.random(P.shape_out)
    full = P.adjoint(y)
    n = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        single = P.adjoint(y)
    finally:
        numba.set_num_threads(n)
    np.testing.assert_allclose(full, single, rtol=1e-12)


def test_numba_kernels_leave_torch_thread_count_alone():
    """numba's threading layer shares torch's OpenMP runtime and, when it starts (the first
    parallel kernel of a process), sets the runtime's thread count to its own; the backend
    restores torch's. Checked in a fresh process, where that first launch happens."""
    import subprocess
    import sys

    script = (
        "import torch, pettk\n"
        "from pettk.backends.em_update import em_ratio, em_update\n"
        "torch.set_num_threads(1)\n"
        "grid = pettk.ImageGrid((24, 24), (2.0, 2.0))\n"
        "P = pettk.Projector(grid, pettk.ParallelBeam2D(12, 30, 2.0), backend='cpu')\n"
        "x = torch.rand(grid.shape)\n"
        "assert torch.get_num_threads() == 1 and float((x @ x).sum()) > 0\n"  # torch's pool is up first
        "y = P(x); a = torch.get_num_threads()\n"
        "back = P.adjoint(em_ratio(y + 1, y + 0.5)); b = torch.get_num_threads()\n"
        "em_update(x, back, torch.ones_like(x), torch.ones_like(x, dtype=torch.bool)); c = torch.get_num_threads()\n"
        "print(a, b, c)\n"
    )
    env = {k: v for k, v in __import__("os").environ.items() if k not in ("OMP_NUM_THREADS", "NUMBA_NUM_THREADS")}
    env["NUMBA_NUM_THREADS"] = "2"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1", "1", "1"]

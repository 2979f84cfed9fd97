"""Projector throughput: LOR-samples/s of the numba backend and its speed-up over the reference.

Cases
-----
(a) 2D parallel beam: 256×256 image, 256 views × 367 radial bins.
(b) ``bench-36ring`` preset: one of 34 view subsets (every 34th view), all 1296 planes, about
    4.3 million LORs, 215×215×71 image. The reference backend is timed on every 64th LOR of the
    same subset (as a LOR list, through both backends) so the ratio compares identical work.

A LOR-sample is one interpolation at one voxel plane (see
:func:`pettk.backends._joseph_cpu.count_samples`). Run with ``pytest benchmarks/``.
"""

import numpy as np
import pytest
from conftest import best_time

import pettk
from pettk.backends._joseph_cpu import count_samples


@pytest.fixture(scope="module")
def case_a():
    grid = pettk.ImageGrid((256, 256), 1.0)
    geometry = pettk.ParallelBeam2D(256, 367, 1.0)
    return grid, geometry, None


@pytest.fixture(scope="module")
def case_b():
    p = pettk.preset("bench-36ring")
    return p.grid, p.layout, slice(0, None, 34)


def _bench(benchmark, record, case, name, mode, rounds):
    grid, geometry, views = case
    P = pettk.Projector(grid, geometry, views=views, backend="cpu")
    rng = np.random.default_rng(0)
    x = rng.random(grid.shape).astype(np.float32)
    y = P.forward(x)  # compiles / loads the kernels
    fn = (lambda: P.forward(x)) if mode == "forward" else (lambda: P.adjoint(y))
    benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=1)
    samples = count_samples(grid, P._tables)
    seconds = benchmark.stats.stats.min

    # reference on identical LORs: case (a) in full, case (b) on every 64th LOR
    if isinstance(geometry, pettk.SinogramLayout):
        start, end = geometry.lor_endpoints(views)
        sample = (start.reshape(-1, 3)[::64], end.reshape(-1, 3)[::64])
        lors = pettk.LORList(*sample)
        fast = pettk.Projector(grid, lors, backend="cpu")
        ref = pettk.Projector(grid, lors, backend="reference")
    else:
        fast, ref = P, pettk.Projector(grid, geometry, views=views, backend="reference")
    ys = fast.forward(x)
    op = (lambda p: p.forward(x)) if mode == "forward" else (lambda p: p.adjoint(ys))
    t_fast = best_time(lambda: op(fast))
    t_ref = best_time(lambda: op(ref), repeats=1)
    record(f"{name} {mode}", n_lors=P.n_lors, seconds=seconds, lor_samples_per_s=samples / seconds,
           lors_per_s=P.n_lors / seconds, numba_over_reference=t_ref / t_fast)


@pytest.mark.parametrize("mode", ["forward", "adjoint"])
def test_parallel_beam_2d_256(benchmark, record, case_a, mode):
    _bench(benchmark, record, case_a, "(a) 2D 256x256, 256x367", mode, rounds=10)


@pytest.mark.parametrize("mode", ["forward", "adjoint"])
def test_bench_36ring_one_of_34_subsets(benchmark, record, case_b, mode):
    _bench(benchmark, record, case_b, "(b) bench-36ring 1/34 views", mode, rounds=3)

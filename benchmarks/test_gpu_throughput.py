"""GPU throughput of the CUDA backend (CuPy kernels) against the plain-torch reference on the same GPU.

Every case is marked ``gpu`` and skipped without a CUDA device and CuPy. Cases, float32:

(a) 2D parallel beam: 256×256 image, 256 views × 367 radial bins (the CPU benchmark's case (a)).
(b) ``bench-36ring``: one of 34 view subsets (4.3 M LORs, 215×215×71 image). The reference is
    timed on every 8th LOR of the subset, as a LOR list through both backends, so that the ratio
    compares identical work.
(c) TOF: ``mmr-like`` one of 28 view subsets (4.2 M LORs) with the CPU TOF benchmark's TOF
    parameters (400 ps, 17 mm bins covering the image, 3 sigma); the ratio is measured on view 0
    alone (all 4096 planes × 129 bins) through both backends.
(d) One OSEM epoch (all subsets, fused EM update): 2D case (a) with 8 subsets, and ``bench-36ring``
    with 34 subsets (146 M LORs per epoch). The reference (torch projector and the unfused torch EM
    expression) runs the whole 2D epoch, and one subset's update of the 3D case, with the CUDA time
    of the same subset beside it.

A LOR-sample is one interpolation at one voxel plane (:func:`pettk.backends._joseph_cpu.count_samples`);
every timing synchronises the device. Run with ``pytest benchmarks/test_gpu_throughput.py`` on a
machine with a GPU; the numbers land in the "pettk throughput" table.
"""

import numpy as np
import pytest
import torch
from conftest import best_time

import pettk
from pettk import backends
from pettk.backends._joseph_cpu import count_samples, max_sample_offset_mm
from pettk.recon import em_step
from pettk.recon._common import prepare, split_subsets

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not (torch.cuda.is_available() and backends.cuda_available()),
                       reason="needs a CUDA device and CuPy"),
]


def _synced(fn):
    def run():
        out = fn()
        torch.cuda.synchronize()
        return out

    return run


def _timed(benchmark, fn, rounds):
    benchmark.pedantic(_synced(fn), rounds=rounds, iterations=1, warmup_rounds=1)
    return benchmark.stats.stats.min


def _op(projector, mode, x, y):
    return (lambda: projector.forward(x)) if mode == "forward" else (lambda: projector.adjoint(y))


def _ratio(grid, geometry, views, mode, tof=None):
    """Reference time / CUDA time on identical LORs (both on the GPU)."""
    fast = pettk.Projector(grid, geometry, views=views, tof=tof, backend="cuda")
    ref = pettk.Projector(grid, geometry, views=views, tof=tof, backend="reference")
    x = torch.rand(grid.shape, device="cuda")
    y = fast.forward(x)
    t_fast = best_time(_synced(_op(fast, mode, x, y)), repeats=3)
    t_ref = best_time(_synced(_op(ref, mode, x, y)), repeats=1)
    return t_ref / t_fast


def _projector_case(benchmark, record, label, grid, geometry, views, mode, rounds, ratio_args, tof=None):
    P = pettk.Projector(grid, geometry, views=views, tof=tof, backend="cuda")
    x = torch.rand(grid.shape, device="cuda")
    y = P.forward(x)  # compiles the kernels
    seconds = _timed(benchmark, _op(P, mode, x, y), rounds)
    samples = count_samples(grid, P._tables)
    ratio = _ratio(*ratio_args, mode, tof=tof)
    record(f"GPU {label} {mode}", n_lors=P.n_lors, seconds=seconds, lor_samples_per_s=samples / seconds,
           lors_per_s=P.n_lors / seconds, cuda_over_reference=ratio, device=torch.cuda.get_device_name())


@pytest.mark.parametrize("mode", ["forward", "adjoint"])
def test_gpu_2d_256(benchmark, record, mode):
    grid = pettk.ImageGrid((256, 256), 1.0)
    geometry = pettk.ParallelBeam2D(256, 367, 1.0)
    _projector_case(benchmark, record, "(a) 2D 256x256, 256x367", grid, geometry, None, mode, 20,
                    (grid, geometry, None))


@pytest.mark.parametrize("mode", ["forward", "adjoint"])
def test_gpu_bench_36ring_one_of_34_subsets(benchmark, record, mode):
    p = pettk.preset("bench-36ring")
    views = slice(0, None, 34)
    start, end = p.layout.lor_endpoints(views)
    sample = pettk.LORList(start.reshape(-1, 3)[::8], end.reshape(-1, 3)[::8])
    _projector_case(benchmark, record, "(b) bench-36ring 1/34 views", p.grid, p.layout, views, mode, 5,
                    (p.grid, sample, None))


@pytest.fixture(scope="module")
def mmr_tof():
    p = pettk.preset("mmr-like")
    views = slice(0, None, 28)
    nontof = pettk.Projector(p.grid, p.layout, views=views)
    reach = max_sample_offset_mm(p.grid, nontof._tables)
    n_bins = int(np.ceil(2 * reach / 17.0)) | 1
    return p, views, pettk.TOFParams(fwhm_ps=400.0, n_bins=n_bins, bin_width_mm=17.0)


@pytest.mark.parametrize("mode", ["forward", "adjoint"])
def test_gpu_tof_mmr_like(benchmark, record, mmr_tof, mode):
    p, views, tof = mmr_tof
    _projector_case(benchmark, record, f"(c) mmr-like 1/28 views TOF({tof.n_bins} bins)", p.grid, p.layout, views,
                    mode, 3, (p.grid, p.layout, [0]), tof=tof)


def _osem_setup(grid, geometry, n_subsets):
    model = pettk.ForwardModel(pettk.Projector(grid, geometry, backend="cuda"))
    g = torch.Generator(device="cuda").manual_seed(0)
    truth = torch.rand(grid.shape, device="cuda", generator=g) + 0.5
    with torch.no_grad():
        y = torch.poisson(model.forward(truth), generator=g)
    problem = prepare(model, y)
    return problem, split_subsets(problem, n_subsets)


def _epoch(problem, parts, fused, models=None, subsets=None):
    """One pass of EM updates over ``subsets`` (default: all), with ``models`` (default: the CUDA ones)."""
    models = parts.models if models is None else models
    x = problem.x0.clone()
    for s in range(len(models)) if subsets is None else subsets:
        x = em_step(models[s], parts.data[s], x, parts.sens[s], problem.mask, fused)
    return x


@pytest.mark.parametrize("case", ["2d", "bench-36ring"])
def test_gpu_osem_epoch(benchmark, record, case):
    if case == "2d":
        grid, geometry, n_subsets = pettk.ImageGrid((256, 256), 1.0), pettk.ParallelBeam2D(256, 367, 1.0), 8
    else:
        p = pettk.preset("bench-36ring")
        grid, geometry, n_subsets = p.grid, p.layout, 34
    problem, parts = _osem_setup(grid, geometry, n_subsets)
    seconds = _timed(benchmark, lambda: _epoch(problem, parts, True), 3 if case == "2d" else 1)
    samples = 2 * sum(count_samples(grid, m.projector._tables) for m in parts.models)  # forward + adjoint

    # the reference: torch projector and unfused torch EM expression, same data and sensitivities
    reference = pettk.ForwardModel(pettk.Projector(grid, geometry, backend="reference")).subsets(n_subsets)
    if case == "2d":
        t_ref = best_time(_synced(lambda: _epoch(problem, parts, False, reference)), repeats=1)
        ratio, ratio_on = t_ref / seconds, "epoch"
    else:  # one subset: a whole reference epoch takes minutes
        t_fast = best_time(_synced(lambda: _epoch(problem, parts, True, subsets=[0])), repeats=2)
        t_ref = best_time(_synced(lambda: _epoch(problem, parts, False, reference, [0])), repeats=1)
        ratio, ratio_on = t_ref / t_fast, "subset 0"
    record(f"GPU (d) OSEM epoch {case}, {n_subsets} subsets", seconds=seconds, lor_samples_per_s=samples / seconds,
           cuda_over_reference=ratio, ratio_measured_on=ratio_on, device=torch.cuda.get_device_name())

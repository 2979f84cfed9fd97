"""Seconds per volume of the learned priors on fully 3D data (issue 23): RED, DREAM, DDIP, LegoPET, PET-DDS.

Each method reconstructs one simulated out-of-family v2 head (:func:`pettk.evaluation.volumes.simulate_volume`:
attenuation, 4.5 mm PSF, randoms and scatter, DRF 20, all ring differences) through the runner of
``pettk evaluate --3d`` (:func:`pettk.evaluation.methods.make_runner`, default
:class:`~pettk.evaluation.methods.ClassicalSettings`: RED 2 and DREAM 10 OSEM iterations x 8
subsets after the restoration), so a row is what the evaluation spends on one volume: the
network passes (every sinogram plane, every axial slice or every SSRB slice) and all the 3D
EM data consistency. The networks are each method's ``TINY`` preset with fresh (untrained)
weights sized for the case: the timing does not depend on the weights, and the projections
dominate on the CPU. PET-DDS: 25 steps x 2 EM epochs, ``axial_beta`` 0.3 (the axial coupling
adds a few element-wise operations per EM step); DDIP: MLEM-20 start, 20 steps.

Cases (``PETTK_BENCH_PRIORS_3D``, default ``cpu``):

* ``cpu`` -- the CPU-sized acceptance volume: 128 x 128 x 32 voxels from a 16-ring section of the
  ``mmr-like`` scanner (256 planes x 224 views x 129 bins, 7.4 M LORs). Measured once on 1
  thread of this project's 2 shared cores (2026-12-07): DREAM (256 planes, then 10 OSEM epochs)
  143 s, simulation 7 s. PET-DDS needs 52 EM epochs and DDIP about 60, so expect several minutes
  to a quarter of an hour each there; the whole file is a long run, not a smoke test.
* ``quick`` -- 128 x 128 x 8 from a 4-ring section (16 planes, 0.46 M LORs): the same code paths,
  the whole file in a few minutes on 1 thread (measured 2026-12-07: RED 76 s and 143 s in two
  runs under different loads, its networks dominate; DREAM 10 s, DDIP 67 s, LegoPET 19 s,
  PET-DDS 25 s).
* the whole brain, 128 x 128 x 127 on the full ``mmr-like`` scanner (64 rings, 4096 planes, 118 M
  LORs), always run, on CUDA only (skipped without a GPU). Issue 23's goal: < 60 s per volume on
  one H100.

Run with ``pytest benchmarks/test_priors_3d.py`` (``PETTK_BENCH_PRIORS_3D=quick`` for the small
case); the seconds are in the benchmark's extra_info and the summary table.
"""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
import torch

from pettk.evaluation.methods import make_runner
from pettk.evaluation.volumes import VolumeData, section_geometry, simulate_volume

METHODS = ("red", "dream", "ddip", "legopet", "pet-dds")
SIZE = os.environ.get("PETTK_BENCH_PRIORS_3D", "cpu")
SIZES = {
    "cpu": VolumeData(subjects=1),
    "quick": VolumeData(subjects=1, rings=4, shape=(128, 128, 8)),
}
WHOLE_BRAIN = VolumeData(subjects=1, rings=64, shape=(128, 128, 127), z_offset_mm=0.0)
if SIZE not in SIZES:
    raise ValueError(f"PETTK_BENCH_PRIORS_3D must be one of {sorted(SIZES)}, got {SIZE!r}")


def _models(image_shape, sinogram_shape, drf: float, device) -> dict:
    """Each method's TINY network, untrained, for this image and sinogram size."""
    from pettk.diffusion.image_model import TINY, _unet_from, build_schedule, merge_config
    from pettk.priors import PETDDS, PETDDSConfig
    from pettk.priors.ddip import DDIP, DDIPConfig
    from pettk.priors.dream import DREAM, DREAMConfig
    from pettk.priors.legopet import LegoPET, LegoPETConfig
    from pettk.priors.red import RED, REDConfig

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        red = RED(REDConfig.TINY.replace(drf=drf), sinogram_shape)
        dream = DREAM(DREAMConfig.TINY.replace(drf=drf), sinogram_shape)
        ddip_cfg = DDIPConfig.TINY.replace(net=DDIPConfig.TINY.net.replace(image_size=tuple(image_shape)))
        ddip = DDIP(ddip_cfg)
        lego_cfg = LegoPETConfig.TINY.replace(net={"image_size": tuple(image_shape)})   # the canvas
        lego = LegoPET(lego_cfg, tuple(image_shape), sinogram_shape, image_max=1.0)
        config = merge_config(TINY, {"unet": {"base_channels": 8}})
        net = _unet_from(config)
        with torch.no_grad():                 # a fresh U-Net predicts zeros: give PET-DDS something to scale
            net.out_conv.weight.normal_(0, 0.05)
        petdds = PETDDS(net.eval(), build_schedule(config["schedule"]), config,
                        PETDDSConfig(reference_mean=0.2, image_size=tuple(image_shape), axial_beta=0.3))
    return {"red": red.to(device), "dream": dream.to(device), "ddip": ddip.to(device), "legopet": lego.to(device),
            "pet-dds": petdds.to(device)}


def _case(data: VolumeData, device):
    layout, grid = section_geometry(data)
    start = time.perf_counter()
    case = simulate_volume(data, 10_000, layout, grid, device=device)
    seconds = time.perf_counter() - start
    make_runner("osem")(case)      # compiles the projection kernels outside the timed runs
    return case, layout, seconds


@pytest.fixture(scope="module")
def cpu_case():
    case, layout, seconds = _case(SIZES[SIZE], "cpu")
    models = _models(case.grid.shape[:2], layout.shape[1:], case.drf, "cpu")
    return case, layout, models, seconds


@pytest.fixture(scope="module")
def gpu_case():
    case, layout, seconds = _case(WHOLE_BRAIN, "cuda")
    models = _models(case.grid.shape[:2], layout.shape[1:], case.drf, "cuda")
    return case, layout, models, seconds


def _run(benchmark, record, method, case, layout, models, simulate_seconds, label):
    runner = make_runner(method, models[method])
    def once():
        out = runner(case)
        if case.y_low.is_cuda:
            torch.cuda.synchronize()
        return out

    image = benchmark.pedantic(once, rounds=1, iterations=1, warmup_rounds=0)
    assert tuple(image.shape) == tuple(case.grid.shape) and bool(torch.isfinite(torch.as_tensor(image)).all())
    record(f"priors 3D {label} {method}", seconds_per_volume=benchmark.stats.stats.min, threads=torch.get_num_threads(),
           planes=layout.shape[0], lors=int(np.prod(layout.shape)),
           volume="x".join(str(n) for n in case.grid.shape), simulate_seconds=simulate_seconds)


@pytest.mark.parametrize("method", METHODS)
def test_priors_3d_cpu(benchmark, record, cpu_case, method):
    case, layout, models, seconds = cpu_case
    _run(benchmark, record, method, case, layout, models, seconds, SIZE)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the whole-brain case runs on CUDA only")
@pytest.mark.parametrize("method", METHODS)
def test_priors_3d_whole_brain_cuda(benchmark, record, gpu_case, method):
    case, layout, models, seconds = gpu_case
    _run(benchmark, record, method, case, layout, models, seconds, "whole-brain")

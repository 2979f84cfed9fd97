"""TOF vs non-TOF projector throughput on the brain scanner preset (``mmr-like``).

One of 28 view subsets (8 views × 129 radial bins × 4096 planes, 4.2 million LORs) of the
``mmr-like`` preset with its 128×128×127 grid; TOF with a 400 ps FWHM (60 mm), 17 mm bins and
enough bins to cover every LOR's path through the image, 3-sigma truncation. Reported:
LOR-samples/s and the TOF/non-TOF time ratio, measured in the same run.
"""

import numpy as np
import pytest
from conftest import best_time

import pettk
from pettk.backends._joseph_cpu import count_samples, max_sample_offset_mm

VIEWS = slice(0, None, 28)


@pytest.fixture(scope="module")
def setup():
    p = pettk.preset("mmr-like")
    nontof = pettk.Projector(p.grid, p.layout, views=VIEWS)
    reach = max_sample_offset_mm(p.grid, nontof._tables)
    n_bins = int(np.ceil(2 * reach / 17.0)) | 1
    tof = pettk.TOFParams(fwhm_ps=400.0, n_bins=n_bins, bin_width_mm=17.0)
    projector = pettk.Projector(p.grid, p.layout, views=VIEWS, tof=tof)
    x = np.random.default_rng(0).random(p.grid.shape).astype(np.float32)
    return p, nontof, projector, x


@pytest.mark.parametrize("mode", ["forward", "adjoint"])
def test_tof_mmr_like(benchmark, record, setup, mode):
    p, nontof, projector, x = setup
    y = projector.forward(x)
    fn = (lambda: projector.forward(x)) if mode == "forward" else (lambda: projector.adjoint(y))
    benchmark.pedantic(fn, rounds=2, iterations=1, warmup_rounds=0)
    seconds = benchmark.stats.stats.min
    samples = count_samples(p.grid, projector._tables)
    y0 = nontof.forward(x)
    t_nontof = best_time((lambda: nontof.forward(x)) if mode == "forward" else (lambda: nontof.adjoint(y0)))
    record(f"mmr-like 1/28 views TOF({projector.tof.n_bins} bins) {mode}", n_lors=nontof.n_lors,
           seconds=seconds, lor_samples_per_s=samples / seconds, nontof_seconds=t_nontof,
           tof_over_nontof_time=seconds / t_nontof)

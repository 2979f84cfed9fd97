"""Seconds per MLEM iteration with the fused EM update vs the unfused torch expression.

(a) 2D parallel beam, 256×256 image, 256 views × 367 radial bins: one full MLEM iteration.
(b) ``mmr-like`` 3D preset (128×128×127): one EM update on one of 28 view subsets (4096 planes ×
    8 views × 129 bins = 4.2 M LORs); a full MLEM iteration is 28 such updates of projection work.

Both variants run ``pettk.recon.em_step`` on identical inputs in the same process
(``fused=True``: numba ratio and update kernels; ``fused=False``: the torch expression
``x * A^T(where(y == 0, 0, y / ybar)) / sens`` with masks).
"""

import numpy as np
import pytest
import torch
from conftest import best_time

import pettk
from pettk.recon import em_step


def _case(name):
    rng = np.random.default_rng(0)
    if name == "2d":
        grid = pettk.ImageGrid((256, 256), 1.0)
        model = pettk.ForwardModel(pettk.Projector(grid, pettk.ParallelBeam2D(256, 367, 1.0)))
    else:
        p = pettk.preset("mmr-like")
        grid = p.grid
        model = pettk.ForwardModel(pettk.Projector(grid, p.layout)).subsets(28)[0]
    x = torch.from_numpy(rng.uniform(0.5, 1.5, grid.shape).astype(np.float32))
    y = torch.poisson(model.forward(x)).to(torch.float32)
    sens = model.sensitivity(torch.float32)
    mask = sens > 0
    return model, x, y, sens, mask


@pytest.mark.parametrize("case", ["2d", "3d-subset"])
def test_em_iteration_fused_vs_unfused(benchmark, record, case):
    model, x, y, sens, mask = _case("2d" if case == "2d" else "3d")

    def fused():
        return em_step(model, y, x.clone(), sens, mask, fused=True)

    def unfused():
        return em_step(model, y, x.clone(), sens, mask, fused=False)

    torch.testing.assert_close(fused(), unfused(), rtol=1e-5, atol=1e-5)
    benchmark.pedantic(fused, rounds=3 if case == "2d" else 1, iterations=1, warmup_rounds=1)
    t_fused = benchmark.stats.stats.min
    t_unfused = best_time(unfused, repeats=3 if case == "2d" else 1)
    record(f"EM update {case}", seconds_fused=t_fused, seconds_unfused=t_unfused,
           unfused_over_fused=t_unfused / t_fused,
           seconds_per_full_iteration_fused=t_fused * (1 if case == "2d" else 28))

"""Seconds per call of the priors in 3D: numba kernels vs the torch loop, and vs one subset's projections.

Image: the ``mmr-like`` preset's 128×128×127 grid, float32, values uniform in [0.5, 1.5] (26
neighbours per voxel). For each prior (RDP with gamma 2, quadratic, smoothed TV) the default
path (numba kernels, :mod:`pettk.backends._prior_cpu`) is timed for ``value``,
``gradient_and_hessian_diagonal`` (what BSREM needs per subset update) and ``curvature_bound``;
the reference is the torch loop over the 13 half-offsets (``prior.backend = "torch"``, the
implementation before the kernels) on the same image in the same process, with the gradient and
the Hessian diagonal as two calls (as BSREM used them). ``torch_over_numba`` is the ratio.

The RDP case also times one forward + back projection of one subset of 21 (every 21st view,
all 4096 planes) of the full mmr-like scanner on the same image, and reports
``prior_over_subset_pair``: the cost of the prior's gradient and Hessian diagonal relative to
that subset's projection pair (the issue's budget is 0.25).

Run with ``pytest benchmarks/test_prior_speed.py`` (a few minutes on 2 cores, most of it the
torch reference and the subset projections).
"""

import numpy as np
import pytest
import torch
from conftest import best_time

import pettk
from pettk.recon import quadratic, rdp, tv

N_SUBSETS = 21


@pytest.fixture(scope="module")
def image():
    grid = pettk.preset("mmr-like").grid
    rng = np.random.default_rng(0)
    return grid, torch.from_numpy(rng.uniform(0.5, 1.5, grid.shape).astype(np.float32))


@pytest.fixture(scope="module")
def subset_pair_seconds(image):
    """Best wall time of one forward + back projection of subset 0 of 21 on the mmr-like scanner."""
    grid, x = image
    p = pettk.preset("mmr-like")
    model = pettk.ForwardModel(pettk.Projector(grid, p.layout)).subsets(N_SUBSETS)[0]
    y = model.forward(x)  # compiles / loads the kernels
    return best_time(lambda: model.adjoint(model.forward(x)), repeats=1), y.numel()


PRIORS = {"rdp": lambda g: rdp(g, gamma=2.0, epsilon=1e-3), "quadratic": quadratic, "tv": lambda g: tv(g, 0.05)}


@pytest.mark.parametrize("name", list(PRIORS))
def test_prior_speed(benchmark, record, image, name, request):
    grid, x = image
    prior = PRIORS[name](grid)

    # same numbers on both paths (float32: the kernel accumulates in float64)
    prior.backend = "torch"
    g_ref, h_ref = prior.gradient(x), prior.hessian_diagonal(x)
    prior.backend = "auto"
    g, h = prior.gradient_and_hessian_diagonal(x)
    torch.testing.assert_close(g, g_ref, rtol=1e-4, atol=1e-4 * float(g_ref.abs().max()))
    torch.testing.assert_close(h, h_ref, rtol=1e-4, atol=1e-4 * float(h_ref.abs().max()))

    benchmark.pedantic(lambda: prior.gradient_and_hessian_diagonal(x), rounds=3, iterations=1, warmup_rounds=1)
    t_gh = benchmark.stats.stats.min
    t_value = best_time(lambda: prior.value(x), repeats=3)
    t_bound = best_time(lambda: prior.curvature_bound(x), repeats=3)

    prior.backend = "torch"
    t_ref_value = best_time(lambda: prior.value(x), repeats=1)
    t_ref_gh = best_time(lambda: (prior.gradient(x), prior.hessian_diagonal(x)), repeats=1)
    t_ref_bound = best_time(lambda: prior.curvature_bound(x), repeats=1)

    metrics = dict(threads=torch.get_num_threads(), seconds_grad_hess=t_gh, seconds_value=t_value,
                   seconds_bound=t_bound, torch_seconds_grad_hess=t_ref_gh, torch_seconds_value=t_ref_value,
                   torch_seconds_bound=t_ref_bound, torch_over_numba_grad_hess=t_ref_gh / t_gh,
                   torch_over_numba_value=t_ref_value / t_value, torch_over_numba_bound=t_ref_bound / t_bound)
    if name == "rdp":
        t_pair, n_lors = request.getfixturevalue("subset_pair_seconds")
        metrics.update(subset_lors=n_lors, seconds_subset_pair=t_pair, prior_over_subset_pair=t_gh / t_pair,
                       torch_prior_over_subset_pair=t_ref_gh / t_pair)
    record(f"prior {name} 128x128x127 float32", **metrics)

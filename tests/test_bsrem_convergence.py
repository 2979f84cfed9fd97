"""BSREM reaches the MAP optimum with any number of subsets (issue: BSREM that converges with subsets).

The reference is an independent solve of the same objective by scipy's L-BFGS-B (bounds x >= 0)
on autograd gradients, not by any pettk solver (``tests/_map_reference.py``).
"""

import numpy as np
import pytest
from _map_reference import small_map_problem

import pettk
from pettk.recon import bsrem, bsrem_iterates, map_objective, rdp, subset_order


@pytest.fixture(scope="module", params=["2d", "3d"])
def map_problem(request):
    return small_map_problem(request.param)


#: epochs per (problem, subsets): the subset bias decays like the relaxed step, 1 / (relaxation k)
EPOCHS = {("2d", 1): 600, ("2d", 4): 2500, ("2d", 8): 2000, ("3d", 1): 600, ("3d", 4): 1500, ("3d", 8): 1500}


@pytest.mark.parametrize("n_subsets", [1, 4, 8])
def test_bsrem_reaches_the_lbfgsb_optimum(map_problem, n_subsets):
    """Default settings, uniform start: <= 1e-3 relative RMSE and <= 1e-6 relative objective gap."""
    kind, model, y, prior, beta, x_ref, phi_ref = map_problem
    epochs = EPOCHS[kind, n_subsets]
    x = bsrem(model, y, prior, beta, epochs, n_subsets)
    relative_rmse = np.linalg.norm(x - x_ref) / np.linalg.norm(x_ref)
    gap = (phi_ref - map_objective(model, y, x, prior, beta)) / abs(phi_ref)
    assert relative_rmse <= 1e-3, relative_rmse
    assert gap <= 1e-6, gap
    assert np.all(x >= 0)


def test_bsrem_objective_increases_on_average_over_epochs(map_problem):
    _, model, y, prior, beta, _, phi_ref = map_problem
    values = [map_objective(model, y, s.x, prior, beta) for s in bsrem_iterates(model, y, prior, beta, 60, 8)]
    blocks = np.asarray(values).reshape(6, 10).mean(axis=1)
    assert np.all(np.diff(blocks) > 0), blocks
    assert values[-1] <= phi_ref


def test_one_subset_preconditioner_is_shared_not_per_subset(map_problem):
    """Started at the optimum, BSREM with subsets and a small fixed step stays near it (the
    per-subset preconditioner of the old implementation drifted to a biased point)."""
    _, model, y, prior, beta, x_ref, _ = map_problem
    x = bsrem(model, y, prior, beta, 40, 8, x0=x_ref, step=0.02, relaxation=0.0)
    assert np.linalg.norm(x - x_ref) / np.linalg.norm(x_ref) < 2e-3


def test_subset_order_is_herman_meyer():
    assert subset_order(8) == [0, 4, 2, 6, 1, 5, 3, 7]
    assert subset_order(6) == [0, 3, 1, 4, 2, 5]
    for n in (1, 7, 12, 21, 28):
        assert sorted(subset_order(n)) == list(range(n))
    with pytest.raises(ValueError, match="n_subsets must be an integer >= 1"):
        subset_order(0)


def test_bsrem_step_schedule_and_bad_settings():
    grid = pettk.ImageGrid((8, 8), 4.0)
    model = pettk.ForwardModel(pettk.Projector(grid, pettk.ParallelBeam2D(8, 11, 4.0)))
    y = np.random.default_rng(0).poisson(model.forward(np.ones(grid.shape))).astype(np.float64)
    prior = rdp(grid)
    steps = [s.info["step"] for s in bsrem_iterates(model, y, prior, 1.0, 3, 4, step=0.5)]
    assert steps == pytest.approx([0.5, 0.5 / (1 + 3 * 0.0035), 0.5 / (1 + 6 * 0.0035)])
    assert [s.info["step"] for s in bsrem_iterates(model, y, prior, 1.0, 2, 1)] == [1.0, 1.0]
    for kwargs, message in [(dict(relaxation=float("inf")), "relaxation must be a finite number >= 0"),
                            (dict(relaxation=-0.1), "relaxation must be a finite number >= 0"),
                            (dict(relaxation=float("nan")), "relaxation must be a finite number >= 0"),
                            (dict(step=0.0), "step must be a finite number > 0"),
                            (dict(step=float("inf")), "step must be a finite number > 0"),
                            (dict(delta=-1.0), "delta must be a finite number > 0")]:
        with pytest.raises(ValueError, match=message):
            bsrem(model, y, prior, 1.0, 2, 2, **kwargs)
    with pytest.raises(TypeError, match="relaxation must be a number >= 0"):
        bsrem(model, y, prior, 1.0, 2, 2, relaxation="0.1")
    with pytest.raises(ValueError, match="beta must be a finite number >= 0"):
        bsrem(model, y, prior, float("nan"), 2)
    with pytest.raises(ValueError, match="beta must be a finite number >= 0"):
        map_objective(model, y, np.ones(grid.shape), prior, float("nan"))

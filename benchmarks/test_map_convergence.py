"""Time to PETRIC's quality thresholds: SVRG-MAP, BSREM and OSL on a 2D and a 3D ``mmr-like`` case.

Two cases, both a brain (:func:`pettk.sim.brain_phantom`, seed 0, two lesions) with attenuation,
a 4.5 mm PSF, 10 % randoms and 30 % scatter; RDP with gamma 2 and epsilon 1 % of the mean
activity (counts / sensitivity), beta 0.5:

* ``2d``: the ``mmr-like`` scanner's direct-plane geometry (128 × 128 pixels of 2.0863 mm,
  224 views × 129 bins), 5·10⁵ prompts (the case of the BSREM issue);
* ``3d``: a section of the ``mmr-like`` scanner, 3 of its rings with all their oblique planes
  (9 planes × 224 views × 129 bins), 64 × 64 × 4 voxels of 4.17 × 4.17 × 2.03 mm (half the
  in-plane resolution, so that the L-BFGS-B reference takes minutes on one core), 2·10⁶ prompts.

The reference is an independent L-BFGS-B solve (scipy, bounds x >= 0, autograd gradients) of
the same objective, started from the OSEM image: in 2D to machine precision; in 3D until the
largest projected-gradient component is 1e-4 of the start's (on the 2D case that stop is
4.4e-5 relative RMSE from the machine-precision optimum, far below the thresholds, at 357
instead of 523 evaluations).

PETRIC's thresholds (Thielemans et al., PET Rapid Image reconstruction Challenge, 2024), all
relative to the reference's mean over the white matter (the "background"), held for 10
consecutive epochs:

* RMSE over the head (activity > 0) <= 1 %;
* RMSE over the white matter <= 1 %;
* the mean of every volume of interest (grey matter, white matter, basal ganglia, the lesions)
  within 0.5 % of the reference's.

Every run starts from the OSEM image (1 epoch × 14 subsets), as PETRIC's do. An epoch is one
full projector-equivalent (forward and back projection of all views); an SVRG snapshot, which
computes the full gradient, counts as one. Each run records the epochs it needed (the first of
the 10 held), the solver's seconds up to that epoch (the threshold checks not counted) and its
seconds per epoch; the summary prints each solver's best against BSREM's best. The solvers run
with their defaults (``docs/map_solvers.md``), and ``SVRG-2`` is svrg_map with
``snapshot_every=2, max_step=2``, its defaults until they were chosen on both cases. Run with
``NUMBA_NUM_THREADS=1 pytest benchmarks/test_map_convergence.py`` (6 minutes on a shared 2-core machine).
"""

import time
from functools import partial

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

import pettk
from pettk.recon import bsrem_iterates, osem, osl_map_iterates, rdp, svrg_map_iterates
from pettk.sim import brain_phantom, simulate_scan

HOLD = 10
#: Epochs after which a run counts as not reaching the thresholds.
MAX_EPOCHS = {"2d": 600, "3d": 100}
#: ``SVRG-2``: svrg_map with ``snapshot_every=2, max_step=2``, the defaults chosen on the 2D case
#: alone: faster with 7-28 subsets in 2D, slower at the best subset count in 3D (``docs/map_solvers.md``).
SOLVERS = {"SVRG": svrg_map_iterates, "SVRG-2": partial(svrg_map_iterates, snapshot_every=2, max_step=2.0),
           "BSREM": bsrem_iterates, "OSL": osl_map_iterates}
#: (case, solver, subsets) of the runs: each solver over the subset counts around its best (BSREM's
#: best is 14 subsets in 2D, 112 in 3D; SVRG's 56 in 2D, 112 in 3D); OSL (not convergent with
#: subsets) once per case.
RUNS = ([("2d", "BSREM", m) for m in (1, 7, 14, 28, 56)] + [("2d", "SVRG", m) for m in (7, 14, 28, 56)]
        + [("2d", "SVRG-2", m) for m in (14, 28, 56)] + [("2d", "OSL", 1)]
        + [("3d", "BSREM", m) for m in (28, 56, 112)] + [("3d", "SVRG", m) for m in (28, 56, 112)]
        + [("3d", "SVRG-2", m) for m in (56, 112)] + [("3d", "OSL", 14)])
#: epochs reached per (case, solver, subsets), for the summary
REACHED: dict = {}


def _section_3d():
    """3 rings of the ``mmr-like`` scanner (all ring differences) and a 64 × 64 × 4 grid."""
    full = pettk.preset("mmr-like")
    s = full.scanner
    pitch = 4.0625
    scanner = pettk.RegularPolygonScanner(s.radius_mm, s.n_sides, s.n_crystals_per_side, s.crystal_spacing_mm,
                                          (np.arange(3) - 1.0) * pitch)
    layout = pettk.SinogramLayout(scanner, radial_trim=full.layout.radial_trim)
    grid = pettk.ImageGrid((64, 64, 4), (2 * full.grid.voxel_size_mm[0], 2 * full.grid.voxel_size_mm[1], pitch / 2))
    return grid, layout


def lbfgsb_reference(model, y, prior, beta, x0, relative_tolerance=None) -> np.ndarray:
    """The MAP image by L-BFGS-B from ``x0``: to machine precision, or (``relative_tolerance``)
    until the largest projected-gradient component is that fraction of the start's."""
    shape = tuple(model.shape_in)

    def negative_objective(flat):
        x = torch.from_numpy(flat.reshape(shape)).requires_grad_(True)
        value = pettk.poisson_nll(y, model.forward(x)) + beta * prior.value(x)
        value.backward()
        return float(value.detach()), x.grad.numpy().ravel().copy()

    start = x0.numpy().ravel()
    gtol = 1e-12
    if relative_tolerance is not None:
        _, g = negative_objective(start)
        gtol = relative_tolerance * float(np.abs(np.where(start > 0, g, np.minimum(g, 0))).max())
    result = minimize(negative_objective, start, jac=True, method="L-BFGS-B", bounds=[(0, None)] * start.size,
                      options=dict(maxiter=20000, ftol=1e-16, gtol=gtol, maxcor=20))
    return result.x.reshape(shape)


def build_case(kind: str) -> dict:
    """The model, data, prior, OSEM start, L-BFGS-B reference and VOIs of one case."""
    if kind == "2d":
        preset = pettk.preset("mmr-like")
        grid, layout, counts = preset.grid_2d, preset.layout_2d, 5e5
    else:
        (grid, layout), counts = _section_3d(), 2e6
    phantom = brain_phantom(grid, seed=0, lesions=2)
    base = pettk.ForwardModel(pettk.Projector(grid, layout), psf=4.5, mu=np.asarray(phantom.mu))
    scan = simulate_scan(phantom, base, counts, randoms_fraction=0.1, scatter_fraction=0.3, seed=0)
    model, y = scan.model, scan.prompts
    epsilon = 1e-2 * float(y.sum()) / float(model.sensitivity(torch.float64).sum())
    prior, beta = rdp(grid, gamma=2.0, epsilon=epsilon), 0.5
    x0 = osem(model, y, 1, 14)
    start = time.perf_counter()
    reference = lbfgsb_reference(model, y, prior, beta, x0, None if kind == "2d" else 1e-4)
    labels = phantom.labels
    vois = {name: labels == label for label, name in ((4, "grey matter"), (5, "white matter"), (6, "basal ganglia"))}
    vois["lesions"] = phantom.lesion_mask
    return dict(kind=kind, model=model, y=y, prior=prior, beta=beta, x0=x0, reference=reference,
                reference_seconds=time.perf_counter() - start, head=phantom.activity > 0, background=labels == 5,
                vois=vois)


@pytest.fixture(scope="module")
def cases():
    built = {}
    return lambda kind: built[kind] if kind in built else built.setdefault(kind, build_case(kind))


def meets_thresholds(x: np.ndarray, c: dict) -> bool:
    """PETRIC's three conditions for one image."""
    ref = c["reference"]
    scale = float(ref[c["background"]].mean())
    rmse = lambda mask: float(np.sqrt(np.mean((x[mask] - ref[mask]) ** 2)))
    if rmse(c["head"]) > 0.01 * scale or rmse(c["background"]) > 0.01 * scale:
        return False
    return all(abs(float(x[m].mean()) - float(ref[m].mean())) <= 0.005 * float(ref[m].mean())
               for m in c["vois"].values() if m.any())


def time_to_thresholds(c: dict, solver: str, n_subsets: int):
    """(epochs to the thresholds or None, solver seconds to them, seconds per epoch, epochs run)."""
    max_epochs = MAX_EPOCHS[c["kind"]]
    states = SOLVERS[solver](c["model"], c["y"], c["prior"], c["beta"], max_epochs, n_subsets, x0=c["x0"])
    held, seconds, elapsed = 0, [], 0.0
    while True:
        start = time.perf_counter()
        state = next(states, None)
        elapsed += time.perf_counter() - start
        if state is None:
            return None, None, elapsed / max_epochs, max_epochs
        seconds.append(elapsed)
        held = held + 1 if meets_thresholds(state.x.numpy(), c) else 0
        if held == HOLD:
            reached = state.iteration - HOLD + 1
            return reached, seconds[reached - 1], elapsed / state.iteration, state.iteration


@pytest.mark.parametrize("kind,solver,n_subsets", RUNS, ids=[f"{k}-{s}-{m}" for k, s, m in RUNS])
def test_epochs_to_petric_thresholds(benchmark, record, cases, kind, solver, n_subsets):
    c = cases(kind)
    reached, seconds, per_epoch, _ = benchmark.pedantic(time_to_thresholds, args=(c, solver, n_subsets), rounds=1,
                                                        iterations=1)
    REACHED[kind, solver, n_subsets] = reached
    record(f"{kind} {solver} {n_subsets} subsets to PETRIC thresholds",
           epochs=reached if reached else f">{MAX_EPOCHS[kind]}", seconds=seconds if reached else "-",
           seconds_per_epoch=per_epoch, reference_seconds=c["reference_seconds"])
    if solver != "OSL":  # OSL with subsets is not convergent: recorded, not required
        assert reached is not None, f"{kind} {solver} {n_subsets} subsets: not reached in {MAX_EPOCHS[kind]} epochs"


@pytest.mark.parametrize("kind", ["2d", "3d"])
def test_svrg_against_bsrem(record, benchmark, kind):
    """The best SVRG run (defaults, and ``SVRG-2``) against the best BSREM run of the same case (the
    issue's goal: >= 3×)."""
    best = {s: min((e for (k, name, _), e in REACHED.items() if k == kind and name == s and e), default=None)
            for s in ("SVRG", "SVRG-2", "BSREM")}
    if None in best.values():
        pytest.skip("run the whole module: the runs of this case did not all finish")
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
    record(f"{kind} best BSREM / best SVRG epochs", bsrem=best["BSREM"], svrg=best["SVRG"],
           ratio=best["BSREM"] / best["SVRG"], svrg_2=best["SVRG-2"], ratio_2=best["BSREM"] / best["SVRG-2"])

"""The measurement behind BSREM's default step schedule (``docs/bsrem.md``).

For beta over two decades and 1 to 28 subsets, runs :func:`pettk.recon.bsrem_iterates` with
``relaxation = rho * (n_subsets - 1)`` for each ``rho`` given, from the uniform start, and prints
the relative RMSE to an independent L-BFGS-B optimum and the relative objective gap at a few
epochs, and the first epoch within 1 % RMSE.

The case: a 48 × 48 brain slice (4 mm pixels, :func:`pettk.sim.brain_phantom` seed 0, two
lesions), parallel beam 60 views × 61 bins, attenuation, 4.5 mm PSF, 10 % randoms, 30 % scatter,
2·10⁵ prompts; RDP gamma 2, epsilon 1 % of the mean activity. Single thread::

    python benchmarks/bsrem_schedule_sweep.py --epochs 500 --beta 0.05 0.5 5 --subsets 1 4 8 16 28 \\
        --rho 0.0035 0.01
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from scipy.optimize import minimize

import pettk
from pettk.recon import bsrem_iterates, map_objective, rdp
from pettk.sim import brain_phantom, simulate_scan

MARKS = (50, 100, 200, 300, 500, 1000, 2000)


def make_case():
    grid = pettk.ImageGrid((48, 48), 4.0)
    phantom = brain_phantom(grid, seed=0, lesions=2)
    model = pettk.ForwardModel(pettk.Projector(grid, pettk.ParallelBeam2D(60, 61, 3.5)), psf=4.5,
                               mu=np.asarray(phantom.mu, dtype=np.float64))
    scan = simulate_scan(phantom, model, 2e5, randoms_fraction=0.1, scatter_fraction=0.3, seed=0)
    return grid, scan.model, scan.prompts


def lbfgsb(grid, model, y, prior, beta):
    def negative_objective(flat):
        x = torch.from_numpy(flat.reshape(grid.shape)).requires_grad_(True)
        value = pettk.poisson_nll(y, model.forward(x)) + beta * prior.value(x)
        value.backward()
        return float(value.detach()), x.grad.numpy().ravel().copy()

    start = np.full(grid.shape, float(y.sum()) / float(model.sensitivity(torch.float64).sum())).ravel()
    result = minimize(negative_objective, start, jac=True, method="L-BFGS-B", bounds=[(0, None)] * start.size,
                      options=dict(maxiter=20000, maxfun=40000, ftol=1e-16, gtol=1e-12, maxcor=20))
    return torch.from_numpy(result.x.reshape(grid.shape)), -result.fun


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=500)
    parser.add_argument("--beta", type=float, nargs="+", default=[0.05, 0.5, 5.0])
    parser.add_argument("--subsets", type=int, nargs="+", default=[1, 4, 8, 16, 28])
    parser.add_argument("--rho", type=float, nargs="+", default=[0.0035])
    args = parser.parse_args()
    torch.set_num_threads(1)
    grid, model, y = make_case()
    epsilon = 1e-2 * float(y.sum()) / float(model.sensitivity(torch.float64).sum())
    prior = rdp(grid, gamma=2.0, epsilon=epsilon)
    for beta in args.beta:
        x_ref, phi_ref = lbfgsb(grid, model, y, prior, beta)
        norm = float(x_ref.norm())
        for n_subsets in args.subsets:
            for rho in args.rho if n_subsets > 1 else args.rho[:1]:
                start, first, marks = time.perf_counter(), None, []
                for state in bsrem_iterates(model, y, prior, beta, args.epochs, n_subsets,
                                            relaxation=rho * (n_subsets - 1)):
                    error = float((state.x - x_ref).norm()) / norm
                    if first is None and error <= 1e-2:
                        first = state.iteration
                    if state.iteration in MARKS:
                        gap = (phi_ref - map_objective(model, y, state.x, prior, beta)) / abs(phi_ref)
                        marks.append(f"{state.iteration}: {error:.1e} / {gap:.0e}")
                print(f"beta {beta:g}, {n_subsets} subsets, rho {rho:g}: first epoch <= 1 %: {first}; "
                      f"epoch: RMSE / gap  {'; '.join(marks)}  ({time.perf_counter() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    main()

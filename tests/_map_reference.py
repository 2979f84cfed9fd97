"""Small MAP problems and their optima by an independent solver (imported as a plain module).

The reference is scipy's L-BFGS-B (bounds x >= 0) on autograd gradients of the same objective,
not any pettk solver; it is run to machine precision and checked (projected gradient).
"""

import numpy as np
import torch
from scipy.optimize import minimize

import pettk
from pettk.recon import rdp
from pettk.recon._common import prepare
from pettk.sim import shepp_logan_2d


def lbfgsb_optimum(model, y, prior, beta):
    """The MAP image and objective ``Phi`` by L-BFGS-B, converged to machine precision."""
    shape = tuple(model.shape_in)
    yt = torch.from_numpy(y)

    def negative_objective(flat):
        x = torch.from_numpy(flat.reshape(shape)).requires_grad_(True)
        value = pettk.poisson_nll(yt, model.forward(x)) + beta * prior.value(x)
        value.backward()
        return float(value.detach()), x.grad.numpy().ravel().copy()

    start = prepare(model, y).x0.numpy().ravel()
    result = minimize(negative_objective, start, jac=True, method="L-BFGS-B", bounds=[(0, None)] * start.size,
                      options=dict(maxiter=20000, maxfun=40000, ftol=1e-16, gtol=1e-13, maxcor=20))
    x = result.x.reshape(shape)
    _, g = negative_objective(result.x)
    projected = np.where(result.x > 0, g, np.minimum(g, 0))
    _, g0 = negative_objective(start)
    assert np.linalg.norm(projected) < 1e-6 * np.linalg.norm(g0), "the reference did not converge"
    return x, -result.fun


def small_map_problem(kind, beta=0.5):
    """A small noisy problem ("2d": 16² on 24 views; "3d": 12×12×4 on the tiny scanner) with
    normalisation and background; RDP prior; its L-BFGS-B optimum.

    Returns ``(kind, model, y, prior, beta, x_ref, phi_ref)``.
    """
    rng = np.random.default_rng(7)
    if kind == "2d":
        grid = pettk.ImageGrid((16, 16), 4.0)
        geometry = pettk.ParallelBeam2D(24, 25, 3.5)
        x_true = 4.0 * shepp_logan_2d(grid)
    else:
        grid = pettk.ImageGrid((12, 12, 4), (5.0, 5.0, 4.0))
        geometry = pettk.preset("tiny").layout
        taper = np.array([0.8, 1.0, 1.0, 0.8])
        x_true = 3.0 * shepp_logan_2d(pettk.ImageGrid(grid.shape[:2], 5.0))[..., None] * taper
    model = pettk.ForwardModel(pettk.Projector(grid, geometry), normalisation=rng.uniform(0.7, 1.0, geometry.shape),
                               additive=np.full(geometry.shape, 0.3))
    y = rng.poisson(model.forward(x_true)).astype(np.float64)
    prior = rdp(grid, gamma=2.0, epsilon=1e-3)
    x_ref, phi_ref = lbfgsb_optimum(model, y, prior, beta)
    return kind, model, y, prior, beta, x_ref, phi_ref

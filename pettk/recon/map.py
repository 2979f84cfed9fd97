"""MAP reconstruction: one-step-late EM and BSREM (relaxed, preconditioned, convergent).

Both maximise ``Phi(x) = L(x) - beta * R(x)`` over ``x >= 0``, with ``L`` the Poisson
log-likelihood and ``R`` a prior from :mod:`pettk.recon.priors`.

* :func:`osl_map` -- Green's one-step-late EM, ``x <- x * A^T(y/ybar) / (A^T 1 + beta grad R(x))``
  (P. J. Green, IEEE TMI 9(1), 84-93, 1990). Fast and simple, not guaranteed to converge for
  large ``beta``; the denominator is kept above ``1e-3 * A^T 1``.
* :func:`bsrem` -- block sequential regularised EM (S. Ahn and J. A. Fessler, IEEE TMI 22(5),
  613-626, 2003), the algorithm behind clinical RDP reconstructions: per subset ``m`` of ``M``,
  ``x <- P_+[x + lambda_k D_m(x) (grad L_m(x) - beta/M grad R(x))]`` with the relaxed step
  ``lambda_k = step / (1 + relaxation * k)`` over epochs ``k`` and the preconditioner
  ``D_m(x) = (x + delta) / (A_m^T 1 + beta/M (x + delta) H_R(x))`` (EM preconditioner with the
  prior's diagonal Hessian, after Tsai et al., IEEE TMI 37(4), 2018). Its first epoch without a
  prior is an OSEM epoch; the relaxation makes it converge to the MAP solution.
"""

from __future__ import annotations

import torch

from .._validation import as_positive_float
from ..backends.em_update import em_ratio, em_update
from ._common import SENSITIVITY_FLOOR, ReconState, check_iterations, prepare, run, split_subsets
from .priors import Prior

__all__ = ["osl_map", "osl_map_iterates", "bsrem", "bsrem_iterates", "map_objective"]


def _check_prior(prior, beta) -> float:
    if not isinstance(prior, Prior):
        raise TypeError(f"prior must be a pettk.recon prior (quadratic, rdp, tv), got {type(prior).__name__}")
    beta = float(beta)
    if not beta >= 0 or beta != beta or beta == float("inf"):
        raise ValueError(f"beta must be a finite number >= 0, got {beta!r}")
    return beta


def map_objective(model, y, x, prior, beta: float) -> float:
    """``Phi(x) = sum(y log ybar - ybar) - beta R(x)`` (the constant ``-log y!`` dropped)."""
    from ..likelihood import poisson_nll

    y_t = torch.as_tensor(y)
    x_t = torch.as_tensor(x)
    with torch.no_grad():
        return float(-poisson_nll(y_t.to(x_t.dtype), model.forward(x_t)) - beta * prior.value(x_t))


def osl_map_iterates(model, y, prior, beta: float, n_iter: int, n_subsets: int = 1, *, x0=None, mask=None):
    """Generate one-step-late MAP-EM iterates (one :class:`ReconState` per epoch)."""
    beta = _check_prior(prior, beta)
    n_iter, n_subsets = check_iterations(n_iter, n_subsets)
    problem = prepare(model, y, x0, mask)
    parts = split_subsets(problem, n_subsets)
    data, sens = parts.data, parts.sens
    x = problem.x0
    for it in range(1, n_iter + 1):
        for s, sub in enumerate(parts.models):
            back = sub.adjoint(em_ratio(data[s], sub.forward(x)))
            denominator = torch.maximum(sens[s] + (beta / n_subsets) * prior.gradient(x), 1e-3 * sens[s])
            x = em_update(x, back, denominator, problem.mask, SENSITIVITY_FLOOR * float(sens[s].max()), out=x)
        yield ReconState(it, x, n_subsets - 1)


def bsrem_iterates(model, y, prior, beta: float, n_iter: int, n_subsets: int = 1, *, x0=None, mask=None,
                   step: float = 1.0, relaxation: float = 0.1, delta: float | None = None):
    """Generate BSREM iterates (one :class:`ReconState` per epoch; ``info['step']`` is lambda_k).

    Parameters
    ----------
    prior, beta : the penalty ``beta * R(x)``.
    step, relaxation : float
        ``lambda_k = step / (1 + relaxation * k)`` for epoch ``k = 0, 1, ...``.
    delta : float, optional
        Keeps the preconditioner positive at ``x = 0`` so zero voxels can grow; default
        ``0.1 * mean(x0)`` over the field of view (small values slow down voxels near 0).
    """
    beta = _check_prior(prior, beta)
    n_iter, n_subsets = check_iterations(n_iter, n_subsets)
    step = as_positive_float("step", step)
    if not relaxation >= 0:
        raise ValueError(f"relaxation must be >= 0, got {relaxation!r}")
    problem = prepare(model, y, x0, mask)
    parts = split_subsets(problem, n_subsets)
    data, sens = parts.data, parts.sens
    keep = problem.mask
    x = problem.x0.clone()
    if delta is None:
        delta = 0.1 * float(x[keep].mean()) if bool(keep.any()) else 1e-6
    delta = as_positive_float("delta", delta)
    b = beta / n_subsets
    for k in range(n_iter):
        lam = step / (1.0 + relaxation * k)
        for s, sub in enumerate(parts.models):
            ybar = sub.forward(x)
            grad = sub.adjoint(em_ratio(data[s], ybar)) - sens[s]
            if b > 0:
                grad = grad - b * prior.gradient(x)
                precond = (x + delta) / (sens[s] + b * (x + delta) * prior.hessian_diagonal(x))
            else:
                precond = (x + delta) / sens[s].clamp_min(SENSITIVITY_FLOOR * float(sens[s].max()))
            x = torch.where(keep, (x + lam * precond * grad).clamp_min(0.0), torch.zeros_like(x))
        yield ReconState(k + 1, x, n_subsets - 1, {"step": lam})


def osl_map(model, y, prior, beta: float, n_iter: int, n_subsets: int = 1, *, x0=None, mask=None, callback=None,
            progress: bool = False):
    """One-step-late MAP-EM; returns the image (``y``'s array type)."""
    states = osl_map_iterates(model, y, prior, beta, n_iter, n_subsets, x0=x0, mask=mask)
    x = run(states, n_iter, callback, progress, "OSL-MAP")
    return x if isinstance(y, torch.Tensor) else x.numpy()


def bsrem(model, y, prior, beta: float, n_iter: int, n_subsets: int = 1, *, x0=None, mask=None, step: float = 1.0,
          relaxation: float = 0.1, delta: float | None = None, callback=None, progress: bool = False):
    """BSREM MAP reconstruction; returns the image (``y``'s array type). See :func:`bsrem_iterates`."""
    states = bsrem_iterates(model, y, prior, beta, n_iter, n_subsets, x0=x0, mask=mask, step=step,
                            relaxation=relaxation, delta=delta)
    x = run(states, n_iter, callback, progress, "BSREM")
    return x if isinstance(y, torch.Tensor) else x.numpy()

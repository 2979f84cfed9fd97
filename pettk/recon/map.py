"""MAP reconstruction: one-step-late EM and BSREM (relaxed, preconditioned, convergent).

Both maximise ``Phi(x) = L(x) - beta * R(x)`` over ``x >= 0``, with ``L`` the Poisson
log-likelihood and ``R`` a prior from :mod:`pettk.recon.priors`.

* :func:`osl_map` -- Green's one-step-late EM, ``x <- x * A^T(y/ybar) / (A^T 1 + beta grad R(x))``
  (P. J. Green, IEEE TMI 9(1), 84-93, 1990). Fast and simple, not guaranteed to converge for
  large ``beta``; the denominator is kept above ``1e-3 * A^T 1``.
* :func:`bsrem` -- block sequential regularised EM (S. Ahn and J. A. Fessler, IEEE TMI 22(5),
  613-626, 2003), the algorithm behind clinical RDP reconstructions: per subset ``m`` of ``M``,
  ``x <- P_+[x + lambda_k M D_k(x) (grad L_m(x) - beta/M grad R(x))]`` with the relaxed step
  ``lambda_k = step / (1 + relaxation * k)`` over epochs ``k`` and one preconditioner for all
  subsets, ``D_k(x) = (x + delta_k) / (A^T 1 + beta (x + delta_k) H_k)`` (the EM
  preconditioner with the prior's diagonal Hessian ``H_k`` at the start of the epoch, after Tsai
  et al., IEEE TMI 37(4), 2018). It converges to the MAP optimum for any number of subsets.
  ``osl_map`` with subsets does not: it is a fast approximation.
"""

from __future__ import annotations

import torch

from .._validation import as_nonnegative_float, as_positive_float, as_positive_int
from ..backends.em_update import em_ratio, em_update
from ._common import SENSITIVITY_FLOOR, ReconState, check_iterations, prepare, run, split_subsets, subset_progress
from .priors import Prior

__all__ = ["osl_map", "osl_map_iterates", "bsrem", "bsrem_iterates", "map_objective", "DEFAULT_STEP",
           "DEFAULT_RELAXATION", "DEFAULT_DELTA", "subset_order"]

#: BSREM's defaults (``lambda_0``, relaxation per extra subset, ``delta`` / mean start image), chosen by
#: measurement against L-BFGS-B optima over 1-28 subsets and beta over two decades (``docs/bsrem.md``).
DEFAULT_STEP = 1.0
DEFAULT_RELAXATION = 0.0035
DEFAULT_DELTA = 0.5


def default_delta(x: torch.Tensor, keep: torch.Tensor) -> float:
    """The preconditioner's ``delta``: :data:`DEFAULT_DELTA` times the start image's mean over ``keep``."""
    value = DEFAULT_DELTA * float(x[keep].mean()) if bool(keep.any()) else 0.0
    return max(value, 1e-12)


def _check_prior(prior, beta) -> float:
    if not isinstance(prior, Prior):
        raise TypeError(f"prior must be a pettk.recon prior (quadratic, rdp, tv), got {type(prior).__name__}")
    return as_nonnegative_float("beta", beta)


def map_objective(model, y, x, prior, beta: float) -> float:
    """``Phi(x) = sum(y log ybar - ybar) - beta R(x)`` (the constant ``-log y!`` dropped)."""
    from ..likelihood import poisson_nll

    beta = _check_prior(prior, beta)
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


def subset_order(n_subsets: int) -> list[int]:
    """The Herman-Meyer order of ``n_subsets`` interleaved view subsets.

    Mixed-radix digit reversal over the prime factors of ``n_subsets`` (G. T. Herman and L. B.
    Meyer, IEEE TMI 12(3), 600-609, 1993): consecutive subsets are far apart in angle. E.g.
    ``subset_order(8) == [0, 4, 2, 6, 1, 5, 3, 7]``.
    """
    n = as_positive_int("n_subsets", n_subsets)
    factors, m, p = [], n, 2
    while m > 1:
        while m % p == 0:
            factors.append(p)
            m //= p
        p += 1
    order = []
    for i in range(n):
        rest, place, index = i, n, 0
        for radix in factors:
            place //= radix
            index += (rest % radix) * place
            rest //= radix
        order.append(index)
    return order


def bsrem_iterates(model, y, prior, beta: float, n_iter: int, n_subsets: int = 1, *, x0=None, mask=None,
                   step: float = DEFAULT_STEP, relaxation: float | None = None, delta: float | None = None):
    """Generate BSREM iterates (one :class:`ReconState` per epoch).

    Per subset ``m`` of ``M``: ``x <- P_+[x + lambda_k M D_k(x) grad Phi_m(x)]`` with the subset
    objective ``Phi_m = L_m - (beta / M) R``, non-negativity by projection (``P_+``), and **one
    preconditioner for all subsets** (Ahn & Fessler 2003):

    ``D_k(x) = (x + delta_k) / (s + beta (x + delta_k) H_k)``,  ``delta_k = delta lambda_k / lambda_0``

    with the full sensitivity ``s = A^T 1`` (the subset gradient is about ``1/M`` of the full
    one, hence the factor ``M``) and ``H_k`` the prior's Hessian diagonal at the start of epoch
    ``k`` (Tsai et al. 2018). A preconditioner built from each subset's own sensitivity converges
    to the point where the subset-preconditioned gradients balance, not to the MAP optimum.
    ``delta_k`` lets voxels at 0 grow; it shrinks with the step, so that ``D_k`` tends to Ahn &
    Fessler's ``x / s`` and the subsets' push on voxels whose optimum is 0 (a bias of first order
    in the objective) fades with the step.

    The relaxed step ``lambda_k = step / (1 + relaxation k)`` satisfies the convergence conditions
    (``sum lambda_k = inf``, ``sum lambda_k^2 < inf``). The subsets are visited in the
    Herman-Meyer order (:func:`subset_order`), reversed every other epoch: a cyclic order leaves a
    bias of order ``lambda_k`` at the end of an epoch, the forward-backward sweep cancels its
    first-order part.

    Parameters
    ----------
    prior, beta : the penalty ``beta * R(x)``.
    n_iter, n_subsets : epochs and view subsets per epoch.
    step : float
        ``lambda_0`` (> 0). With 1, an early epoch without a prior moves about as far as an OSEM
        epoch.
    relaxation : float, optional
        ``>= 0``. Default ``DEFAULT_RELAXATION * (n_subsets - 1)``: the subset bias grows with the
        number of subsets and vanishes with one (then the default is plain preconditioned
        projected gradient ascent with a fixed step).
    delta : float, optional
        ``delta_0``: keeps the preconditioner positive at ``x = 0`` so that zero voxels can grow
        and voxels whose optimum is 0 reach it quickly; image units. Default ``DEFAULT_DELTA``
        times the mean of the start image over the field of view.

    The defaults were chosen by measurement against L-BFGS-B optima (``docs/bsrem.md``).
    ``info['step']`` of each state is ``lambda_k``.

    References
    ----------
    S. Ahn and J. A. Fessler, "Globally convergent image reconstruction for emission tomography
    using relaxed ordered subsets algorithms", IEEE TMI 22(5), 613-626 (2003).
    Y.-J. Tsai et al., IEEE TMI 37(4), 1000-1010 (2018).
    """
    beta = _check_prior(prior, beta)
    n_iter, n_subsets = check_iterations(n_iter, n_subsets)
    step = as_positive_float("step", step)
    if relaxation is None:
        relaxation = DEFAULT_RELAXATION * (n_subsets - 1)
    relaxation = as_nonnegative_float("relaxation", relaxation)
    if delta is not None:
        delta = as_positive_float("delta", delta)
    problem = prepare(model, y, x0, mask, n_subsets=n_subsets)
    parts = split_subsets(problem, n_subsets)
    keep = problem.mask
    x = problem.x0.clone()
    if delta is None:
        delta = default_delta(x, keep)
    sens = model.sensitivity(x.dtype, x.device)
    # the subset gradient is about 1/M of the full one: the shared preconditioner uses s / M
    sens_per_subset = torch.where(keep, sens, torch.ones_like(sens)) / n_subsets
    b = beta / n_subsets
    zero = torch.zeros((), dtype=x.dtype, device=x.device)
    order = subset_order(n_subsets)
    for k in range(n_iter):
        lam = step / (1.0 + relaxation * k)
        curvature = None
        delta_k = delta * lam / step
        for i, s in enumerate(subset_progress(order if k % 2 == 0 else order[::-1])):
            sub = parts.models[s]
            grad = sub.adjoint(em_ratio(parts.data[s], sub.forward(x)))
            grad -= parts.sens[s]
            shifted = x + delta_k
            if b > 0:
                if i == 0:
                    prior_grad, curvature = prior.gradient_and_hessian_diagonal(x)
                    curvature = b * curvature
                else:
                    prior_grad = prior.gradient(x)
                grad -= b * prior_grad
                precond = shifted / (sens_per_subset + shifted * curvature)
            else:
                precond = shifted / sens_per_subset
            x = torch.where(keep, (x + lam * precond * grad).clamp_min_(0.0), zero)
        yield ReconState(k + 1, x, n_subsets - 1, {"step": lam})


def osl_map(model, y, prior, beta: float, n_iter: int, n_subsets: int = 1, *, x0=None, mask=None, callback=None,
            progress: bool = False):
    """One-step-late MAP-EM; returns the image (``y``'s array type)."""
    states = osl_map_iterates(model, y, prior, beta, n_iter, n_subsets, x0=x0, mask=mask)
    x = run(states, n_iter, callback, progress, "OSL-MAP")
    return x if isinstance(y, torch.Tensor) else x.numpy()


def bsrem(model, y, prior, beta: float, n_iter: int, n_subsets: int = 1, *, x0=None, mask=None,
          step: float = DEFAULT_STEP, relaxation: float | None = None, delta: float | None = None, callback=None,
          progress: bool = False):
    """BSREM MAP reconstruction; returns the image (``y``'s array type). See :func:`bsrem_iterates`."""
    states = bsrem_iterates(model, y, prior, beta, n_iter, n_subsets, x0=x0, mask=mask, step=step,
                            relaxation=relaxation, delta=delta)
    x = run(states, n_iter, callback, progress, "BSREM")
    return x if isinstance(y, torch.Tensor) else x.numpy()

"""Fast convergent MAP: preconditioned SVRG with Barzilai-Borwein steps (the PETRIC 2024 class).

:func:`svrg_map` maximises the same ``Phi(x) = L(x) - beta R(x)`` over ``x >= 0`` as
:func:`~pettk.recon.bsrem` (Poisson log-likelihood ``L`` + a :mod:`pettk.recon.priors` prior), but
without BSREM's decaying step: stochastic variance-reduced gradients (SVRG, R. Johnson and T.
Zhang, NeurIPS 2013) over view subsets remove the subset bias, so a step that stays large still
converges to the MAP optimum. It follows the winning entry of the PET Rapid Image Reconstruction
Challenge 2024 (team MaGeZ: M. J. Ehrhardt, Z. Kereta and G. Schramm, "Fast PET reconstruction
with variance reduction and prior-aware preconditioning", Front. Nucl. Med. 5, 2025,
doi:10.3389/fnume.2025.1641215, arXiv:2506.04976), whose key findings are the three parts here:

* **a prior-aware diagonal preconditioner**, the harmonic mean of the EM preconditioner
  ``x / s`` (``s = A^T 1``) and the inverse of the prior's Hessian diagonal,
  ``D(x) = (x + delta) / (s + beta (x + delta) H)`` -- the one :func:`~pettk.recon.bsrem`
  uses (Tsai et al., IEEE TMI 37(4), 2018), evaluated **at the current iterate in every subset
  step**, with ``H = max(H(x), H(x_snap))`` (the prior's Hessian diagonal at ``x``, never below
  its value at the snapshot, or at the epoch's start in the warm-up). The prior's kernel returns
  the gradient and the Hessian diagonal in one pass, so this costs no more than the gradient;
* **SVRG**: after ``warmup`` epochs of plain preconditioned subset steps, a snapshot every
  ``snapshot_every`` epochs computes the full gradient ``G`` and keeps the ``M`` subset gradients
  ``g_m(x_snap)``; the steps in between use ``v = M (g_m(x) - g_m(x_snap)) + G`` for the
  likelihood and the exact prior gradient;
* **adaptive steps**: at each snapshot the step is the Barzilai-Borwein step of the last two
  snapshots in the preconditioner's metric (the "short" BB2 form, J. Barzilai and J. M. Borwein,
  IMA J. Numer. Anal. 8, 1988; for SVRG: C. Tan, S. Ma, Y.-H. Dai and Y. Qian, NeurIPS 2016),
  ``alpha = <s, -y> / <-y, D (-y)>`` with ``s`` the change of the snapshot image and ``y`` that of
  the full gradient, kept within ``[step / 10, max_step]``.

Safeguard: the snapshot's full forward projections give ``Phi(x_snap)`` at no extra projection
(summed in float64: near the optimum its changes are below float32's resolution of the sum).
If it fell since the previous snapshot, the step cap halves (``cap <- alpha / 2``), so a too-long
step cannot keep the iterates from the optimum; if it rose, the cap grows by ``CAP_GROWTH`` (up to
``max_step``), so that one noisy snapshot does not slow the rest of the run. A fall also shortens the
snapshot interval to ``SAFE_SNAPSHOT_EVERY`` (2) for the rest of the run: an SVRG epoch amplifies
a small deviation from the optimum when the subsets are few views each (measured on the 16² test
problem started at the L-BFGS-B optimum, 8 subsets of 3 views, step 1: 3e-8 -> 3e-7 -> 4e-6 ->
7e-5 relative distance over three SVRG epochs), so near the optimum the snapshots must come often;
far from it (the benchmark cases), longer intervals are faster. Non-negativity is by projection.

Why ``D`` follows the iterate (issue 25, ``docs/map_solvers.md``): with ``D`` frozen at the
snapshot, as in the first version, low counts with a strong RDP diverged. At a hot voxel of the
snapshot (a spike above its neighbours) RDP's Hessian diagonal is nearly 0 and ``D`` is the large
EM step ``(x_snap + delta) / s``, while RDP's gradient there is nearly constant (RDP grows
linearly with a large difference). The prior's step pushed the voxel to 0, where the same large
``D`` met the prior's opposite gradient and threw it back far above ``x_snap``: measured on a
DRF-100 slice (8 subsets), one voxel went 19 -> 0 -> 325 -> 124 -> 53 -> 0 -> 325 within one
epoch, the prior's part 95-98 % of the step's norm and the SVRG correction ``M (g_m(x) - g_m(x_snap))``
1-6 %; the next snapshot's ``D`` was larger still, so the swing grew (to 1e3 and beyond)
whatever the step. At the current iterate, ``x + delta`` shrinks with the voxel, as in BSREM's
per-subset preconditioner (S. Ahn and J. A. Fessler, IEEE TMI 22(5), 2003); keeping ``H`` at
least the snapshot's stops a voxel that jumped to where RDP is flat from taking a large step.

Cost: an epoch is one full projector-equivalent (forward and back projection of all views). The
snapshot epoch spends it on the full gradient (and takes one full-gradient step); every other
epoch takes ``M`` subset steps. Memory: ``M + 5`` images besides the data.

Defaults (``docs/map_solvers.md``): ``snapshot_every=4, max_step=1``, chosen on both cases of
``benchmarks/test_map_convergence.py`` (the 3D ``mmr-like`` section over three noise seeds, the 2D
slice): three SVRG epochs per snapshot, and a step that starts where the safeguard would take a
cap of 2 after its first overshoot. At 112 subsets in 3D they need 7 / 8 / 7 epochs (BSREM 22 /
28 / 26; the earlier defaults ``snapshot_every=2, max_step=2``: 9 / 11 / 9); in 2D the best run
stays at 7 epochs (56 subsets) but runs with 7-28 subsets need more (46 / 24 / 12 against 33 /
19 / 11). The snapshot's full-gradient step itself moves the image as little as one subset step;
skipping it changes nothing measurable.
"""

from __future__ import annotations

import torch

from .._validation import as_nonnegative_int, as_positive_float, as_positive_int
from ..backends.em_update import em_ratio
from ..likelihood import poisson_nll
from ._common import ReconState, check_iterations, prepare, run, split_subsets, subset_progress
from .map import _check_prior, default_delta, subset_order

__all__ = ["svrg_map", "svrg_map_iterates", "SVRG_DEFAULT_STEP", "SVRG_DEFAULT_MAX_STEP", "SVRG_DEFAULT_WARMUP",
           "SVRG_DEFAULT_SNAPSHOT_EVERY"]

#: Defaults, chosen on the 2D and 3D ``mmr-like`` brain cases of ``benchmarks/test_map_convergence.py``
#: (``docs/map_solvers.md``): the first step, the largest step, the plain subset epochs before the
#: first snapshot, and the epochs from one snapshot to the next.
SVRG_DEFAULT_STEP = 1.0
SVRG_DEFAULT_MAX_STEP = 1.0
SVRG_DEFAULT_WARMUP = 1
SVRG_DEFAULT_SNAPSHOT_EVERY = 4
#: Growth of the step cap at each snapshot whose objective rose (see the module docstring).
CAP_GROWTH = 1.25
#: Epochs from one snapshot to the next once a snapshot's objective has fallen (see the module docstring).
SAFE_SNAPSHOT_EVERY = 2


def _n_views(model) -> int:
    projector = model.projector
    return int(projector.shape_out[projector.geometry.view_axis])


def svrg_map_iterates(model, y, prior, beta: float, n_iter: int, n_subsets: int = 1, *, x0=None, mask=None,
                      step: float = SVRG_DEFAULT_STEP, max_step: float = SVRG_DEFAULT_MAX_STEP,
                      warmup: int = SVRG_DEFAULT_WARMUP, snapshot_every: int = SVRG_DEFAULT_SNAPSHOT_EVERY,
                      delta: float | None = None, adaptive: bool = True):
    """Generate preconditioned SVRG MAP iterates (one :class:`ReconState` per epoch).

    Parameters
    ----------
    model, y : the :class:`~pettk.ForwardModel` and the measured counts ``(..., planes, views, radial)``.
    prior, beta : the penalty ``beta * R(x)`` (``beta >= 0``).
    n_iter : int
        Epochs, each one full projector-equivalent (a snapshot epoch counts as one).
    n_subsets : int
        View subsets ``M`` (``<=`` the number of views). ``M`` subset gradients are kept in memory.
    step : float
        The step ``alpha`` (> 0) of the warm-up and up to the second snapshot; 1 moves about as far
        as an OSEM epoch per subset. The Barzilai-Borwein step is kept ``>= step / 10``.
    max_step : float
        Upper bound of the adaptive step (``>= step``).
    warmup : int
        Epochs of plain preconditioned subset steps ``x <- P_+[x + alpha D (M grad L_m - beta grad
        R)]`` before the first snapshot (>= 0). They move fast while the subsets still agree.
    snapshot_every : int
        Epochs from one snapshot to the next (>= 1; 1: every epoch is a full-gradient step), until
        a snapshot's objective falls; from then on ``min(snapshot_every, SAFE_SNAPSHOT_EVERY)``
        (see the module docstring).
    delta : float, optional
        Keeps ``D`` positive at ``x = 0`` so that zero voxels can grow; image units. Default
        ``DEFAULT_DELTA`` (0.5) times the mean of the start image over the field of view, as in
        :func:`~pettk.recon.bsrem_iterates`.
    adaptive : bool
        Barzilai-Borwein steps at the snapshots (default); ``False`` keeps ``step`` fixed.

    Each state's ``info`` holds ``step`` (the step of the epoch), ``snapshot`` (whether it computed
    the full gradient) and, at snapshots, ``objective``: ``Phi`` at the snapshot image.
    See the module docstring for the algorithm and the references.
    """
    beta = _check_prior(prior, beta)
    n_iter, n_subsets = check_iterations(n_iter, n_subsets)
    views = _n_views(model) if hasattr(model, "projector") else None
    if views is not None and n_subsets > views:
        raise ValueError(f"n_subsets must be <= the number of views ({views}), got {n_subsets}")
    step = as_positive_float("step", step)
    max_step = as_positive_float("max_step", max_step)
    if max_step < step:
        raise ValueError(f"max_step must be >= step ({step}), got {max_step}")
    warmup = as_nonnegative_int("warmup", warmup)
    snapshot_every = as_positive_int("snapshot_every", snapshot_every)
    if not isinstance(adaptive, bool):
        raise TypeError(f"adaptive must be a bool, got {type(adaptive).__name__}")
    if delta is not None:
        delta = as_positive_float("delta", delta)
    problem = prepare(model, y, x0, mask, n_subsets=n_subsets)
    parts = split_subsets(problem, n_subsets)
    keep = problem.mask
    x = problem.x0.clone()
    if delta is None:
        delta = default_delta(x, keep)
    sens = torch.where(keep, model.sensitivity(x.dtype, x.device), torch.ones_like(x))
    zero = torch.zeros((), dtype=x.dtype, device=x.device)
    order = subset_order(n_subsets)
    M = n_subsets

    def likelihood_gradient(s, image, want_value=False):
        sub = parts.models[s]
        ybar = sub.forward(image)
        grad = sub.adjoint(em_ratio(parts.data[s], ybar))
        grad -= parts.sens[s]
        if not want_value:
            return grad
        # in float64: the safeguard compares objectives whose changes near the optimum are below
        # float32's resolution of the sum
        return grad, -float(poisson_nll(parts.data[s].double(), ybar.double()))

    def preconditioner(image, floor=None):
        """``(grad R(image), D(image), H)`` with ``H = max(H(image), floor)`` (``floor``: the
        curvature of the snapshot or of the epoch's start; the prior's kernel returns the gradient
        and the Hessian diagonal in one pass, so a step's refresh costs no more than its gradient)."""
        shifted = image + delta
        if beta == 0:
            return None, shifted / sens, None
        prior_grad, curvature = prior.gradient_and_hessian_diagonal(image)
        if floor is not None:
            curvature = torch.maximum(curvature, floor)
        return prior_grad, shifted / (sens + beta * shifted * curvature), curvature

    def project(image):
        return torch.where(keep, image.clamp_min_(0.0), zero)

    alpha, cap = step, max_step
    interval, next_snapshot, snapshots = snapshot_every, warmup, 0
    stored = full_lik = precond = snap_curvature = None
    last = None  # (x_snap, full gradient, objective) of the previous snapshot
    for k in range(n_iter):
        info = {"snapshot": False}
        if k < warmup:
            start_curvature = None
            for s in subset_progress(order if k % 2 == 0 else order[::-1]):
                prior_grad, precond, curvature = preconditioner(x, start_curvature)
                if start_curvature is None:
                    start_curvature = curvature
                grad = M * likelihood_gradient(s, x)
                if beta > 0:
                    grad -= beta * prior_grad
                x = project(x + alpha * precond * grad)
        elif k == next_snapshot:
            stored, value, full_lik = [], 0.0, torch.zeros_like(x)
            for s in subset_progress(range(M)):
                g, v = likelihood_gradient(s, x, want_value=True)
                stored.append(g)
                full_lik += g
                value += v
            prior_grad, precond, snap_curvature = preconditioner(x)
            full = full_lik - beta * prior_grad if beta > 0 else full_lik.clone()
            objective = value - beta * float(prior.value(x.double())) if beta > 0 else value
            if last is not None:
                if objective < last[2]:
                    cap = max(alpha / 2, step / 10)
                    interval = min(interval, SAFE_SNAPSHOT_EVERY)
                else:
                    cap = min(cap * CAP_GROWTH, max_step)
                if adaptive:
                    ds = (x - last[0])[keep]
                    dg = (last[1] - full)[keep]  # -y: the change of the gradient of -Phi
                    curvature = float((ds * dg).sum())
                    weighted = float((dg * precond[keep] * dg).sum())
                    if curvature > 0 and weighted > 0:
                        alpha = curvature / weighted
                alpha = min(max(alpha, step / 10), cap)
            last = (x.clone(), full, objective)
            next_snapshot, snapshots = k + interval, snapshots + 1
            info.update(snapshot=True, objective=objective)
            x = project(x + alpha * precond * full)
        else:
            for s in subset_progress(order if snapshots % 2 == 1 else order[::-1]):
                v = M * (likelihood_gradient(s, x) - stored[s]) if M > 1 else likelihood_gradient(s, x) - stored[s]
                v += full_lik
                prior_grad, step_precond, _ = preconditioner(x, snap_curvature)
                if beta > 0:
                    v -= beta * prior_grad
                x = project(x + alpha * step_precond * v)
        info["step"] = alpha
        yield ReconState(k + 1, x, M - 1, info)


def svrg_map(model, y, prior, beta: float, n_iter: int, n_subsets: int = 1, *, x0=None, mask=None,
             step: float = SVRG_DEFAULT_STEP, max_step: float = SVRG_DEFAULT_MAX_STEP,
             warmup: int = SVRG_DEFAULT_WARMUP, snapshot_every: int = SVRG_DEFAULT_SNAPSHOT_EVERY,
             delta: float | None = None, adaptive: bool = True, callback=None, progress: bool = False):
    """Preconditioned SVRG MAP reconstruction; returns the image (``y``'s array type).

    ``callback(state)`` runs after every epoch (return ``True`` to stop); ``progress`` shows bars
    over the epochs and subsets. See :func:`svrg_map_iterates`.
    """
    states = svrg_map_iterates(model, y, prior, beta, n_iter, n_subsets, x0=x0, mask=mask, step=step,
                               max_step=max_step, warmup=warmup, snapshot_every=snapshot_every, delta=delta,
                               adaptive=adaptive)
    x = run(states, n_iter, callback, progress, "SVRG-MAP")
    return x if isinstance(y, torch.Tensor) else x.numpy()

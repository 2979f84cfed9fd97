"""Maximum-likelihood expectation maximisation: MLEM and OSEM.

``x <- x * A^T(y / ybar) / A^T 1`` with ``ybar = A x + additive`` (Shepp & Vardi 1982; Lange &
Carson 1984); OSEM applies the same update with the model and data of one view subset at a time
(Hudson & Larkin 1994). The element-wise steps use the fused kernels of
:mod:`pettk.backends.em_update`; ``fused=False`` runs the plain torch expression instead (same
numbers, used by the benchmarks as the reference).

``mlem``/``osem`` run to completion and return the image; ``mlem_iterates``/``osem_iterates``
are generators of :class:`~pettk.recon._common.ReconState`, one per iteration.
"""

from __future__ import annotations

import torch

from ..backends.em_update import em_ratio, em_update
from ._common import SENSITIVITY_FLOOR, ReconState, check_iterations, prepare, run, split_subsets

__all__ = ["mlem", "mlem_iterates", "osem", "osem_iterates", "em_step"]


def _check_shapes(model, y, x, sens, mask) -> None:
    """``y`` ``(..., *shape_out)`` and ``x`` ``(..., *shape_in)`` with the same batch dims; ``sens`` and
    ``mask`` ``shape_in``: a ``ValueError`` naming the expected shape before any work."""
    lead = None
    for name, t, core, batched in (("y", y, model.shape_out, True), ("x", x, model.shape_in, True),
                                   ("sens", sens, model.shape_in, False), ("mask", mask, model.shape_in, False)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch tensor, got {type(t).__name__}")
        core, got = tuple(core), tuple(t.shape)
        n = len(got) - len(core)
        if n < 0 or got[n:] != core or (not batched and n):
            expected = f"(..., {', '.join(map(str, core))})" if batched else str(core)
            raise ValueError(f"{name} must have shape {expected}, got {got}")
        if batched:
            if lead is not None and got[:n] != lead and got[:n] and lead:
                raise ValueError(f"y and x must have the same batch dims, got {lead} and {got[:n]}")
            lead = got[:n] if lead is None else lead


def em_step(model, y: torch.Tensor, x: torch.Tensor, sens: torch.Tensor, mask: torch.Tensor,
            fused: bool = True) -> torch.Tensor:
    """One EM update of ``x`` (in place when fused) for ``model`` and its data ``y``."""
    _check_shapes(model, y, x, sens, mask)
    ybar = model.forward(x)
    floor = SENSITIVITY_FLOOR * float(sens.max())
    if fused:
        back = model.adjoint(em_ratio(y, ybar))
        return em_update(x, back, sens, mask, floor, out=x)
    ratio = torch.where(y == 0, torch.zeros_like(ybar), y / ybar.clamp_min(1e-8))
    keep = mask & (sens > floor)
    return torch.where(keep, x * model.adjoint(ratio) / torch.where(keep, sens, torch.ones_like(sens)),
                       torch.zeros_like(x))


def osem_iterates(model, y, n_iter: int, n_subsets: int = 1, *, x0=None, mask=None, fused: bool = True):
    """Generate OSEM iterates (one :class:`ReconState` per epoch over all subsets).

    Parameters
    ----------
    model : ForwardModel
        The full model; it is split with ``model.subsets(n_subsets)`` (interleaved views).
    y : array or tensor, shape ``model.shape_out``
        Measured counts (>= 0).
    n_iter, n_subsets : int
        Epochs and subsets per epoch.
    x0 : array or tensor, optional
        Start image (>= 0); default uniform, scaled to the net counts.
    mask : bool array, optional
        Voxels to reconstruct; voxels outside it, and voxels no LOR sees, stay 0.

    Sensitivity: a first call on ``model`` computes the ``n_subsets`` subset sensitivities and
    their sum as the full one (one back projection of the data's size in all), cached on
    ``model`` for later calls (see :meth:`~pettk.physics.ForwardModel.sensitivity`).
    """
    n_iter, n_subsets = check_iterations(n_iter, n_subsets)
    problem = prepare(model, y, x0, mask, n_subsets=n_subsets)
    parts = split_subsets(problem, n_subsets)
    x = problem.x0
    for it in range(1, n_iter + 1):
        for s, sub in enumerate(parts.models):
            x = em_step(sub, parts.data[s], x, parts.sens[s], problem.mask, fused)
        yield ReconState(it, x, n_subsets - 1)


def mlem_iterates(model, y, n_iter: int, *, x0=None, mask=None, fused: bool = True):
    """Generate MLEM iterates (one :class:`ReconState` per iteration); see :func:`osem_iterates`."""
    n_iter, _ = check_iterations(n_iter)
    problem = prepare(model, y, x0, mask)
    sens = model.sensitivity(problem.y.dtype, problem.y.device)
    x = problem.x0
    for it in range(1, n_iter + 1):
        x = em_step(model, problem.y, x, sens, problem.mask, fused)
        yield ReconState(it, x)


def mlem(model, y, n_iter: int, *, x0=None, mask=None, callback=None, progress: bool = False, fused: bool = True):
    """MLEM: run ``n_iter`` iterations and return the image (``y``'s array type).

    ``callback(state)`` runs after every iteration (return ``True`` to stop early);
    ``progress=True`` shows a progress bar.
    """
    problem_is_numpy = not isinstance(y, torch.Tensor)
    x = run(mlem_iterates(model, y, n_iter, x0=x0, mask=mask, fused=fused), n_iter, callback, progress, "MLEM")
    return x.numpy() if problem_is_numpy else x


def osem(model, y, n_iter: int, n_subsets: int, *, x0=None, mask=None, callback=None, progress: bool = False,
         fused: bool = True):
    """OSEM with ``n_subsets`` view subsets: run ``n_iter`` epochs and return the image.

    ``progress=True`` shows a bar over the epochs, one over the subsets of the current epoch and,
    on a first call, one over the subset sensitivity back projections (see :func:`osem_iterates`).
    """
    problem_is_numpy = not isinstance(y, torch.Tensor)
    states = osem_iterates(model, y, n_iter, n_subsets, x0=x0, mask=mask, fused=fused)
    x = run(states, n_iter, callback, progress, f"OSEM({n_subsets})")
    return x.numpy() if problem_is_numpy else x

"""Shared plumbing of the iterative reconstructions: inputs, start image, mask, run loop."""

from __future__ import annotations

import contextvars
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from .._validation import as_positive_int
from ..physics import ForwardModel, _subset_sensitivities

#: Voxels whose sensitivity is below this fraction of the maximum are outside the field of view.
SENSITIVITY_FLOOR = 1e-6

#: The data's total counts may be at most this fraction of the dtype's largest value, so that the
#: sums and projections of the iterations cannot overflow.
COUNT_SUM_HEADROOM = 1e-6

#: The progress bar of the :func:`run` in progress (``None``: silent). The iterate generators run
#: inside ``run``'s loop, so :func:`prepare` and :func:`split_subsets` see it and show their steps
#: (sensitivity back projections, subsets within an epoch) without a parameter of their own.
_RUN_BAR: contextvars.ContextVar = contextvars.ContextVar("pettk_recon_run_bar", default=None)


def _progress_wanted(progress) -> bool:
    return _RUN_BAR.get() is not None if progress is None else bool(progress)


@dataclass
class ReconState:
    """One iterate of a reconstruction.

    Attributes
    ----------
    iteration : int
        Completed iterations (epochs over all subsets), starting at 1.
    x : torch.Tensor
        The current image (a tensor the algorithm keeps updating: copy it to keep it).
    subset : int
        The last subset processed (``n_subsets - 1`` at the end of an epoch).
    info : dict
        Algorithm-specific numbers (e.g. the step size of BSREM).
    """

    iteration: int
    x: torch.Tensor
    subset: int = 0
    info: dict = field(default_factory=dict)


@dataclass
class Problem:
    """Validated inputs of a reconstruction, as torch tensors on one device."""

    model: ForwardModel
    y: torch.Tensor
    x0: torch.Tensor
    mask: torch.Tensor
    numpy_out: bool


def prepare(model, y, x0=None, mask=None, dtype=None, n_subsets=None, progress=None) -> Problem:
    """Validate ``model``, ``y``, ``x0`` and ``mask`` before any work; build the start image.

    The default start image is uniform inside the mask, scaled so that its expected trues match
    the measured counts minus the additive background.

    The field of view comes from the model's (cached, see :meth:`ForwardModel.sensitivity`)
    sensitivity image. With ``n_subsets`` (the split the caller will use with
    :func:`split_subsets`), a model whose full sensitivity is not cached yet gets it as the sum
    of its ``n_subsets`` subset sensitivities, which are cached for the split: one full back
    projection instead of two on a first call.

    ``progress``: show a bar over those subset back projections; ``None`` (default) shows it when
    called inside a :func:`run` with ``progress=True``.
    """
    if not isinstance(model, ForwardModel):
        raise TypeError(f"model must be a ForwardModel, got {type(model).__name__}")
    numpy_out = isinstance(y, np.ndarray)
    if isinstance(y, np.ndarray):
        y_t = torch.from_numpy(np.ascontiguousarray(y))
    elif isinstance(y, torch.Tensor):
        y_t = y.detach()
    else:
        raise TypeError(f"y must be a numpy array or a torch tensor, got {type(y).__name__}")
    if tuple(y_t.shape) != tuple(model.shape_out):
        raise ValueError(f"y must have shape {tuple(model.shape_out)}, got {tuple(y_t.shape)}")
    if y_t.is_complex():
        raise TypeError(f"y must hold real counts, got dtype {y_t.dtype}")
    if dtype is None:
        dtype = y_t.dtype if y_t.is_floating_point() else torch.float32
    y_t = y_t.to(dtype)
    if not bool(torch.isfinite(y_t).all()):
        raise ValueError("y contains non-finite values (NaN or inf)")
    if bool((y_t < 0).any()):
        raise ValueError(f"y holds counts and must be >= 0; its minimum is {float(y_t.min()):.4g}")
    total = float(y_t.sum(dtype=torch.float64))
    limit = COUNT_SUM_HEADROOM * float(torch.finfo(dtype).max)
    if not total <= limit:
        raise ValueError(f"y's total counts ({total:.4g}) are too large for {dtype}: sums over the data must "
                         f"stay below {limit:.4g}; scale the data down or use float64")
    shape = tuple(model.shape_in)
    if n_subsets is not None:
        n_subsets = as_positive_int("n_subsets", n_subsets)
        if n_subsets > 1 and model.projector.views is None:
            model._sensitivity_from_subsets(n_subsets, dtype, y_t.device, progress=_progress_wanted(progress))
    sens = model.sensitivity(dtype, y_t.device)
    fov = sens > SENSITIVITY_FLOOR * float(sens.max())
    if mask is not None:
        if not isinstance(mask, (np.ndarray, torch.Tensor)):
            try:
                mask = np.asarray(mask)
            except (TypeError, ValueError):
                raise TypeError(f"mask must be a boolean image, got {type(mask).__name__}") from None
        m = torch.as_tensor(mask, device=y_t.device) if mask.dtype != object else None
        if m is None or m.dtype != torch.bool:
            raise TypeError(f"mask must be a boolean image, got dtype {mask.dtype}")
        if tuple(m.shape) != shape:
            raise ValueError(f"mask must have shape {shape}, got {tuple(m.shape)}")
        fov = fov & m
    if x0 is None:
        net = total - (float(model.additive.sum(dtype=torch.float64)) if model.additive is not None else 0.0)
        per_voxel = torch.zeros((), dtype=dtype, device=y_t.device)
        expected_per_unit = float((sens * fov).sum())
        if expected_per_unit > 0 and net > 0:
            per_voxel = torch.as_tensor(float(net) / expected_per_unit, dtype=dtype, device=y_t.device)
        x0_t = torch.where(fov, per_voxel.clamp_min(1e-6), torch.zeros((), dtype=dtype, device=y_t.device))
    else:
        if isinstance(x0, torch.Tensor):
            x0_t = x0.detach()
        else:
            try:
                x0_t = torch.as_tensor(np.asarray(x0, dtype=np.float64))
            except (TypeError, ValueError):
                raise TypeError(f"x0 must be a numpy array, a torch tensor or None, got {type(x0).__name__}") from None
        x0_t = x0_t.to(device=y_t.device, dtype=dtype).clone()
        if tuple(x0_t.shape) != shape:
            raise ValueError(f"x0 must have shape {shape}, got {tuple(x0_t.shape)}")
        if not bool(torch.isfinite(x0_t).all()) or bool((x0_t < 0).any()):
            raise ValueError("x0 must be finite and >= 0")
        x0_t = torch.where(fov, x0_t, torch.zeros_like(x0_t))
    return Problem(model, y_t, x0_t.contiguous(), fov, numpy_out)


@dataclass
class SubsetData:
    """A problem split over view subsets: the subset models, their data and sensitivities."""

    models: list
    data: list
    sens: list


def subset_progress(subsets):
    """Iterate over the subsets of one epoch (models or indices, in the order processed) with a
    bar over them while a :func:`run` with ``progress=True`` is in progress; silently otherwise.

    An epoch on a 3D scanner takes minutes: iterative methods that loop over subsets in their own
    order wrap that loop, ``for s in subset_progress(order): ...``.
    """
    run_bar = _RUN_BAR.get()
    if run_bar is None:
        yield from subsets
        return
    items = list(subsets)
    with tqdm(total=len(items), desc=f"{run_bar.desc} subsets", disable=len(items) < 2, leave=False) as bar:
        for item in items:
            yield item
            bar.update(1)


class _SubsetModels(list):
    """The subset models of a split; iterating over them runs through :func:`subset_progress`."""

    def __iter__(self):
        return subset_progress(super().__iter__())


def split_subsets(problem: Problem, n_subsets: int, progress=None) -> SubsetData:
    """Split ``problem.model`` into ``n_subsets`` interleaved view subsets with their data and
    sensitivity images (cached on ``problem.model`` per split, dtype and device: computed by the
    first call only).

    ``progress``: a bar over the sensitivity back projections still to do; ``None`` (default)
    shows it inside a :func:`run` with ``progress=True``, whose epochs then also show a bar over
    their subsets.
    """
    models = problem.model.subsets(n_subsets)
    dtype, device = problem.y.dtype, problem.y.device
    return SubsetData(_SubsetModels(models), [m.projector.select(problem.y) for m in models],
                      _subset_sensitivities(models, dtype, device, _progress_wanted(progress)))


def check_iterations(n_iter, n_subsets=1) -> tuple[int, int]:
    return as_positive_int("n_iter", n_iter), as_positive_int("n_subsets", n_subsets)


def run(states, n_iter: int, callback=None, progress: bool = False, desc: str = "recon"):
    """Consume a generator of :class:`ReconState`, calling ``callback(state)`` after every
    iteration (epoch); returns the last image. ``callback`` may return ``True`` to stop early.

    ``progress``: a bar over the epochs; while it runs, the generator's :func:`prepare` and
    :func:`split_subsets` show theirs (sensitivity back projections, the subsets of each epoch).
    """
    bar = tqdm(total=n_iter, desc=desc, disable=not progress, leave=False)
    token = _RUN_BAR.set(bar if progress else None)
    last = None
    try:
        for state in states:
            last = state
            bar.update(1)
            if callback is not None and callback(state):
                break
    finally:
        _RUN_BAR.reset(token)
        bar.close()
    return last.x

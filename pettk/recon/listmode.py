"""List-mode MLEM and OSEM: EM over individual events instead of sinogram bins.

Every event ``i`` is one count on its own LOR (and TOF bin). With ``A_i`` the system row of the
event (``mult_i * P_i`` after an optional PSF) and ``S = sum over all LORs the scanner can measure
of A^T 1`` (the sensitivity image, which the events alone cannot give), the update is

``x <- x / S * sum_i A_i^T (1 / ybar_i)``,  ``ybar_i = A_i x + additive_i``

(Parra & Barrett 1998; Reader et al. 2002). It equals sinogram MLEM on the histogrammed data
whenever ``S`` is the sinogram model's sensitivity. OSEM splits the events into ``n_subsets``
interleaved subsets (event ``i`` in subset ``i % n_subsets``) and uses ``S / n_subsets`` per
subset, since every subset samples all LORs.

Data
----
The functions take either

* a :class:`~pettk.physics.ForwardModel` on a :class:`~pettk.geometry.LORList` (one LOR per
  event; ``normalisation``/``attenuation`` give the per-event multiplicative factors, ``additive``
  the expected randoms + scatter in each event's bin; list-mode TOF through ``LORList.tof_bin``),
  wrapped into an :class:`EventList`; or
* any object with the :class:`ListModeData` interface (``shape_in``, ``n_events``, ``psf`` and
  ``subset_models(subset, n_subsets)`` yielding PSF-free ForwardModels on chunks of events), e.g.
  :class:`pettk.io.petsird.PETSIRDListMode`, which streams events from disk in bounded memory.

``lm_mlem``/``lm_osem`` run to completion (``callback``, ``progress`` as for
:func:`~pettk.recon.mlem`); ``lm_mlem_iterates``/``lm_osem_iterates`` yield one
:class:`~pettk.recon.ReconState` per epoch. The element-wise update is the fused
:func:`~pettk.backends.em_update.em_update`, as in the sinogram versions.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from .._validation import as_positive_int
from ..backends.em_update import em_update
from ..geometry import LORList
from ..likelihood import DEFAULT_EPS
from ..physics import ForwardModel
from ..projector import Projector
from ._common import SENSITIVITY_FLOOR, ReconState, check_iterations, run

__all__ = ["ListModeData", "EventList", "lm_mlem", "lm_mlem_iterates", "lm_osem", "lm_osem_iterates"]


@runtime_checkable
class ListModeData(Protocol):
    """What the list-mode algorithms need from a source of events.

    Attributes
    ----------
    shape_in : tuple of int
        The image shape (``grid.shape``).
    n_events : int
        Number of events.
    psf : pettk.GaussianPSF or None
        Image-space resolution model applied once per subset (the chunk models carry none).
    """

    shape_in: tuple
    n_events: int
    psf: object

    def subset_models(self, subset: int, n_subsets: int) -> Iterable[ForwardModel]:
        """PSF-free models on consecutive chunks of the events ``subset::n_subsets``; each model's
        output has one entry per event of its chunk."""
        ...


class EventList:
    """An in-memory event list: a :class:`ForwardModel` whose projector geometry is a
    :class:`~pettk.geometry.LORList`, one LOR per event, served in chunks.

    Parameters
    ----------
    model : ForwardModel
        ``mult`` (normalisation × attenuation) and ``additive``, if any, have one value per
        event, shape ``(n_events,)``. Its PSF is applied once per subset.
    chunk_events : int, optional
        Events per projector call (bounds the temporary memory); ``None`` projects a whole subset
        at once and keeps its projector between iterations.
    """

    def __init__(self, model: ForwardModel, chunk_events: int | None = None):
        if not isinstance(model, ForwardModel):
            raise TypeError(f"model must be a ForwardModel, got {type(model).__name__}")
        projector = model.projector
        if not isinstance(projector.geometry, LORList):
            raise TypeError("list-mode reconstruction needs a model on a LORList (one LOR per event), got "
                            f"geometry {type(projector.geometry).__name__}")
        if projector.views is not None:
            raise ValueError("the model must see every event (projector.views is None); it is a subset")
        self.model = model
        self.shape_in = tuple(model.shape_in)
        self.n_events = int(projector.geometry.n_lors)
        self.psf = model.psf
        self.chunk_events = None if chunk_events is None else as_positive_int("chunk_events", chunk_events)
        self._cache: dict = {}

    def subset_models(self, subset: int, n_subsets: int) -> Iterator[ForwardModel]:
        index = np.arange(subset, self.n_events, n_subsets)
        if self.chunk_events is None:
            key = (subset, n_subsets)
            if key not in self._cache:
                self._cache = {k: v for k, v in self._cache.items() if k[1] == n_subsets}
                self._cache[key] = self._chunk_model(index)
            yield self._cache[key]
            return
        for lo in range(0, index.size, self.chunk_events):
            yield self._chunk_model(index[lo:lo + self.chunk_events])

    def _chunk_model(self, index: np.ndarray) -> ForwardModel:
        p = self.model.projector
        projector = Projector(p.grid, p.geometry, p.backend, tof=p.tof, views=index, check_finite=p.check_finite)
        take = torch.as_tensor(index)

        def part(t):
            return None if t is None else t.index_select(0, take.to(t.device))
        return ForwardModel(projector, normalisation=part(self.model.mult), additive=part(self.model.additive))

    def __repr__(self) -> str:
        return f"EventList(n_events={self.n_events}, chunk_events={self.chunk_events}, model={self.model!r})"


def _as_data(events) -> ListModeData:
    if isinstance(events, ForwardModel):
        return EventList(events)
    if isinstance(events, ListModeData):
        return events
    raise TypeError("events must be a ForwardModel on a LORList or a ListModeData (shape_in, n_events, psf, "
                    f"subset_models), got {type(events).__name__}")


def _prepare(data: ListModeData, sensitivity, x0, mask, n_subsets: int):
    """Validate the inputs before any work; return ``(sens, fov, x0)`` as tensors."""
    if isinstance(sensitivity, np.ndarray):
        sens = torch.from_numpy(np.ascontiguousarray(sensitivity))
    elif isinstance(sensitivity, torch.Tensor):
        sens = sensitivity.detach()
    else:
        raise TypeError(f"sensitivity must be a numpy array or a torch tensor, got {type(sensitivity).__name__}")
    shape = tuple(data.shape_in)
    if tuple(sens.shape) != shape:
        raise ValueError(f"sensitivity must have the image shape {shape}, got {tuple(sens.shape)}")
    if not sens.is_floating_point():
        raise TypeError(f"sensitivity must hold floating-point values, got {sens.dtype}")
    if not bool(torch.isfinite(sens).all()) or bool((sens < 0).any()):
        raise ValueError("sensitivity must be finite and >= 0 everywhere")
    if float(sens.max()) <= 0:
        raise ValueError("sensitivity is 0 everywhere: no LOR of the scanner crosses the image grid")
    n_events = int(data.n_events)
    if n_events < 1:
        raise ValueError("the list holds no events")
    if n_subsets > n_events:
        raise ValueError(f"n_subsets must be <= the number of events ({n_events}), got {n_subsets}")
    sens = sens.contiguous()
    fov = sens > SENSITIVITY_FLOOR * float(sens.max())
    if mask is not None:
        m = torch.as_tensor(mask, device=sens.device)
        if m.dtype != torch.bool:
            raise TypeError(f"mask must be a boolean image, got dtype {m.dtype}")
        if tuple(m.shape) != shape:
            raise ValueError(f"mask must have shape {shape}, got {tuple(m.shape)}")
        fov = fov & m
    zero = torch.zeros((), dtype=sens.dtype, device=sens.device)
    if x0 is None:
        total = float((sens * fov).sum())
        level = n_events / total if total > 0 else 0.0
        x = torch.where(fov, torch.as_tensor(max(level, 1e-6), dtype=sens.dtype, device=sens.device), zero)
    else:
        x = torch.as_tensor(x0).to(device=sens.device, dtype=sens.dtype).clone()
        if tuple(x.shape) != shape:
            raise ValueError(f"x0 must have shape {shape}, got {tuple(x.shape)}")
        if not bool(torch.isfinite(x).all()) or bool((x < 0).any()):
            raise ValueError("x0 must be finite and >= 0")
        x = torch.where(fov, x, zero)
    return sens, fov, x.contiguous()


def _back_ratio(data: ListModeData, x: torch.Tensor, subset: int, n_subsets: int) -> torch.Tensor:
    """``psf^T sum_i P_i^T (mult_i / ybar_i)`` over the events of one subset."""
    xb = x if data.psf is None else data.psf.forward(x)
    back = torch.zeros_like(x)
    with torch.no_grad():
        for model in data.subset_models(subset, n_subsets):
            ybar = model.forward(xb)
            back += model.adjoint(torch.reciprocal(ybar.clamp_min(DEFAULT_EPS)))
    return back if data.psf is None else data.psf.adjoint(back)


def lm_osem_iterates(events, sensitivity, n_iter: int, n_subsets: int = 1, *, x0=None, mask=None):
    """Generate list-mode OSEM iterates (one :class:`ReconState` per epoch over all subsets).

    Parameters
    ----------
    events : ForwardModel on a LORList, or ListModeData
        The events and their model (see the module docstring).
    sensitivity : array or tensor, shape ``grid.shape``
        ``A^T 1`` summed over every LOR (and TOF bin) the scanner can measure, including the
        PSF and the multiplicative factors; its dtype and device are the reconstruction's.
    n_iter, n_subsets : int
        Epochs, and interleaved event subsets per epoch (``n_subsets <= n_events``).
    x0 : array or tensor, optional
        Start image (>= 0); default uniform in the field of view, scaled so that its expected
        counts ``<x0, S>`` equal the number of events.
    mask : bool array, optional
        Voxels to reconstruct; voxels outside it and voxels no LOR sees stay 0.
    """
    n_iter, n_subsets = check_iterations(n_iter, n_subsets)
    data = _as_data(events)
    sens, fov, x = _prepare(data, sensitivity, x0, mask, n_subsets)
    sub_sens = sens / n_subsets
    floor = SENSITIVITY_FLOOR * float(sub_sens.max())
    for it in range(1, n_iter + 1):
        for s in range(n_subsets):
            back = _back_ratio(data, x, s, n_subsets)
            x = em_update(x, back, sub_sens, fov, floor, out=x)
        yield ReconState(it, x, n_subsets - 1, {"n_events": int(data.n_events)})


def lm_mlem_iterates(events, sensitivity, n_iter: int, *, x0=None, mask=None):
    """Generate list-mode MLEM iterates; see :func:`lm_osem_iterates`."""
    return lm_osem_iterates(events, sensitivity, n_iter, 1, x0=x0, mask=mask)


def lm_mlem(events, sensitivity, n_iter: int, *, x0=None, mask=None, callback=None, progress: bool = False):
    """List-mode MLEM: run ``n_iter`` iterations and return the image (``sensitivity``'s array
    type). ``callback(state)`` runs after every iteration (return ``True`` to stop early);
    ``progress=True`` shows a progress bar. See :func:`lm_osem_iterates` for the arguments."""
    states = lm_mlem_iterates(events, sensitivity, n_iter, x0=x0, mask=mask)
    x = run(states, n_iter, callback, progress, "LM-MLEM")
    return x.cpu().numpy() if isinstance(sensitivity, np.ndarray) else x


def lm_osem(events, sensitivity, n_iter: int, n_subsets: int, *, x0=None, mask=None, callback=None,
            progress: bool = False):
    """List-mode OSEM with ``n_subsets`` event subsets: run ``n_iter`` epochs and return the image.
    See :func:`lm_osem_iterates` for the arguments."""
    states = lm_osem_iterates(events, sensitivity, n_iter, n_subsets, x0=x0, mask=mask)
    x = run(states, n_iter, callback, progress, f"LM-OSEM({n_subsets})")
    return x.cpu().numpy() if isinstance(sensitivity, np.ndarray) else x

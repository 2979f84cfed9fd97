"""Keep torch's intra-op thread count across numba's parallel kernels.

numba's ``omp`` threading layer and torch's CPU build share one OpenMP runtime (libgomp), and
numba sets the runtime's thread count to its own (``NUMBA_NUM_THREADS``, default: all cores)
when it starts that layer, at the first parallel kernel of the process. Without this guard, one projector call after
``torch.set_num_threads(1)`` (or ``OMP_NUM_THREADS=1``) silently brings torch back to every core,
which makes side-by-side CPU training runs oversubscribe the machine several times over.
"""

from __future__ import annotations

import functools

import torch

__all__ = ["keep_torch_threads"]


def keep_torch_threads(fn):
    """Decorator: restore ``torch.get_num_threads()`` after ``fn`` if the call changed it."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        n_threads = torch.get_num_threads()
        try:
            return fn(*args, **kwargs)
        finally:
            if torch.get_num_threads() != n_threads:
                torch.set_num_threads(n_threads)

    return wrapper

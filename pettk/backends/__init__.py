"""Array dispatch for the projector: which kernels run a given tensor.

Backends
--------
``cpu``
    numba kernels (:mod:`pettk.backends.cpu`), CPU tensors, float32/float64.
``reference``
    plain vectorised torch (:mod:`pettk.backends.reference`), any device; the test oracle and the
    fallback.
``cuda``
    CuPy kernels (:mod:`pettk.backends.cuda`, sources in ``pettk.kernels``), CUDA tensors,
    float32/float64. ``"auto"`` picks it for CUDA tensors when CuPy is importable; without CuPy,
    CUDA tensors fall back to ``reference`` with a one-time warning.

:func:`resolve` maps a requested backend name and a tensor device to the module that runs it; a
backend module exposes ``name``, ``supports(device)`` and a plan class.
"""

from __future__ import annotations

import functools
import importlib
import warnings

import torch

BACKEND_NAMES = ("auto", "cpu", "reference", "cuda", "parallelproj")
_MODULE_NAMES = {"parallelproj": "parallelproj_backend"}  # backend name -> module, where they differ

_warned_cuda_fallback = False


def _module(name: str):
    return importlib.import_module(f"{__name__}.{_MODULE_NAMES.get(name, name)}")


@functools.cache
def cuda_available() -> bool:
    """True when the CuPy CUDA backend can run: CuPy imports (the kernels ship with pettk).

    :mod:`pettk.backends.cuda` itself always imports; it loads CuPy lazily.
    """
    return _module("cuda").cupy_available()


def check_name(backend: str) -> str:
    """Validate a backend name before any work is done."""
    if not isinstance(backend, str):
        raise TypeError(f"backend must be a string, got {type(backend).__name__}")
    if backend not in BACKEND_NAMES:
        raise ValueError(f"backend must be one of {', '.join(map(repr, BACKEND_NAMES))}, got {backend!r}")
    if backend == "cuda" and not cuda_available():
        raise ValueError("backend='cuda' needs CuPy and pettk's CUDA kernels (pip install 'pettk[gpu]'); "
                         "use backend='auto' or 'reference' on machines without them")
    if backend == "parallelproj" and not _module("parallelproj").available():
        pp = _module("parallelproj")
        raise ValueError(f"{pp.INSTALL_HINT} ({pp.unavailable_reason()})")
    return backend


def resolve(backend: str, device: torch.device):
    """Return the backend module that runs tensors on ``device`` for the requested ``backend``."""
    global _warned_cuda_fallback
    if backend == "auto":
        if device.type == "cpu":
            return _module("cpu")
        if device.type == "cuda" and cuda_available():
            return _module("cuda")
        if device.type == "cuda" and not _warned_cuda_fallback:
            _warned_cuda_fallback = True
            warnings.warn("CuPy is not importable: projecting CUDA tensors with the plain torch "
                          "'reference' backend, which is much slower (pip install 'pettk[gpu]')",
                          RuntimeWarning, stacklevel=3)
        module = _module("reference")
    else:
        module = _module(backend)
    if not module.supports(device):
        raise ValueError(f"backend {backend!r} cannot run tensors on device {device}; "
                         f"move the tensor or use backend='auto'")
    return module

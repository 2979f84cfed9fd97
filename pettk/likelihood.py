"""The Poisson log-likelihood of PET data and its gradient.

For measured counts ``y`` and expected counts ``ybar`` the negative log-likelihood (dropping the
``log y!`` constant) is ``sum(ybar - y * log(ybar))`` and the Poisson deviance is
``2 * sum(y * log(y / ybar) - (y - ybar))``.

Epsilon policy
--------------
``ybar`` is clamped from below at ``eps`` **only inside the logarithm and the ratio** ``y/ybar``;
the linear ``ybar`` term is used as is. Bins with ``y = 0`` therefore contribute exactly
``ybar`` (``0 * log`` is 0, computed with ``xlogy``), and a bin with ``y > 0`` and ``ybar <= eps``
costs ``ybar - y * log(eps)``: large but finite, with gradient ``1 - y / eps``. The default
``eps = 1e-8`` counts is far below any physical expected count.
"""

from __future__ import annotations

import numpy as np
import torch

from ._validation import as_bounded_float

__all__ = ["DEFAULT_EPS", "poisson_nll", "poisson_nll_gradient", "poisson_deviance"]

DEFAULT_EPS = 1e-8

#: ``eps`` must lie in ``(0, MAX_EPS]``: 0 makes ``log(eps)`` infinite, and a floor above one count
#: would no longer be a small guard.
MAX_EPS = 1.0


def _eps(eps) -> float:
    return as_bounded_float("eps", eps, minimum=0.0, maximum=MAX_EPS, min_inclusive=False)


def _tensors(y, ybar):
    if not isinstance(y, (np.ndarray, torch.Tensor)) or not isinstance(ybar, (np.ndarray, torch.Tensor)):
        raise TypeError(f"y and ybar must be numpy arrays or torch tensors, got {type(y).__name__} "
                        f"and {type(ybar).__name__}")
    y_t = torch.as_tensor(y)
    ybar_t = torch.as_tensor(ybar)
    if tuple(y_t.shape) != tuple(ybar_t.shape):
        raise ValueError(f"y and ybar must have the same shape, got {tuple(y_t.shape)} and {tuple(ybar_t.shape)}")
    for name, t in (("y", y_t), ("ybar", ybar_t)):
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"{name} contains non-finite values (NaN or inf)")
    if bool((y_t < 0).any()):
        raise ValueError(f"y holds counts and must be >= 0; its minimum is {float(y_t.min()):.4g}")
    dtype = torch.promote_types(y_t.dtype, ybar_t.dtype)
    if not dtype.is_floating_point:
        dtype = torch.float64
    return y_t.to(dtype), ybar_t.to(dtype)


def poisson_nll(y, ybar, eps: float = DEFAULT_EPS):
    """Negative Poisson log-likelihood ``sum(ybar - y log max(ybar, eps))`` (a scalar).

    Differentiable in ``ybar`` for torch input; numpy input gives a Python float.
    """
    eps = _eps(eps)
    is_numpy = isinstance(ybar, np.ndarray)
    y_t, ybar_t = _tensors(y, ybar)
    value = (ybar_t - torch.xlogy(y_t, ybar_t.clamp_min(eps))).sum()
    return float(value) if is_numpy else value


def poisson_deviance(y, ybar, eps: float = DEFAULT_EPS):
    """Poisson deviance ``2 sum(y log(y / max(ybar, eps)) - (y - ybar))`` (a scalar, >= 0 at ybar = y)."""
    eps = _eps(eps)
    is_numpy = isinstance(ybar, np.ndarray)
    y_t, ybar_t = _tensors(y, ybar)
    value = 2.0 * (torch.xlogy(y_t, y_t) - torch.xlogy(y_t, ybar_t.clamp_min(eps)) - (y_t - ybar_t)).sum()
    return float(value) if is_numpy else value


def poisson_nll_gradient(model, x, y, eps: float = DEFAULT_EPS):
    """Gradient of ``poisson_nll(y, model(x))`` with respect to ``x``: ``A^T(1 - y / max(ybar, eps))``.

    Parameters
    ----------
    model : pettk.physics.ForwardModel
    x : array or tensor, shape ``(..., *model.shape_in)``
    y : array or tensor, shape ``(..., *model.shape_out)``, counts

    Returns the gradient in ``x``'s array type and shape.
    """
    eps = _eps(eps)
    is_numpy = isinstance(x, np.ndarray)
    x_t = torch.as_tensor(x)
    ybar = model.forward(x_t)
    y_t, ybar_t = _tensors(y, ybar)
    ratio = 1.0 - y_t / ybar_t.clamp_min(eps)
    grad = model.adjoint(ratio.to(x_t.dtype))
    return grad.numpy() if is_numpy else grad

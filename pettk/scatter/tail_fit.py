"""Scaling a scatter estimate to the measured data: tail mask and tail fit.

Outside the body a LOR sees no unscattered coincidences, so ``prompts - randoms`` there is
scatter alone: the scatter tails. SSS gives the shape of the scatter; its scale (absolute
calibration, multiple scatter, scatter from outside the field of view) is fitted to the tails
(Watson 2000; Tsoumpas et al. 2004).

* :func:`tail_mask` -- the bins whose attenuation factor is ~1 (``>= threshold``: the LOR misses
  the object), eroded by ``margin`` radial bins so that LORs grazing the body edge are left out.
* :func:`fit_tail_scale` -- the scale ``a`` of ``prompts ~ Poisson(a * scatter + randoms)`` in the
  mask, by Poisson maximum likelihood (Newton's method on a concave 1D log-likelihood) or by
  least squares on ``prompts - randoms``.
"""

from __future__ import annotations

import numpy as np
import torch

from .._validation import as_bounded_float, as_lowercase_choice, as_nonnegative_int

__all__ = ["tail_mask", "fit_tail_scale"]


def _as_tensor(name: str, value) -> torch.Tensor:
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(np.ascontiguousarray(value))
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a numpy array or a torch tensor, got {type(value).__name__}")
    return value


def tail_mask(attenuation, threshold: float = 0.95, margin: int = 2):
    """Scatter-tail bins: attenuation factor >= ``threshold``, at least ``margin`` radial bins
    (last axis) away from any bin below it.

    Parameters
    ----------
    attenuation : array or tensor, shape ``(..., n_views, n_radial)``
        Attenuation factors ``exp(-P mu)`` in (0, 1] (see :func:`pettk.physics.attenuation_factors`).
    threshold : float
        In (0, 1]: 0.95 leaves out LORs with more than ~5 mm of water.
    margin : int
        Radial bins removed next to the object (LORs that graze it, or that the mu-map misses by
        a little because of motion or resolution).

    Returns
    -------
    Boolean mask of the same shape and array type.
    """
    att = _as_tensor("attenuation", attenuation)
    threshold = as_bounded_float("threshold", threshold, minimum=0.0, maximum=1.0, min_inclusive=False)
    margin = as_nonnegative_int("margin", margin)
    if att.ndim < 1:
        raise ValueError("attenuation must have at least one (radial) axis")
    body = (att < threshold).to(torch.float32)
    if margin:
        flat = body.reshape(-1, 1, body.shape[-1])
        flat = torch.nn.functional.max_pool1d(flat, 2 * margin + 1, stride=1, padding=margin)
        body = flat.reshape(body.shape)
    mask = body == 0
    return mask.numpy() if isinstance(attenuation, np.ndarray) else mask


def fit_tail_scale(prompts, scatter, mask, randoms=None, method: str = "poisson", n_newton: int = 50) -> float:
    """The scale ``a >= 0`` of ``scatter`` that best explains ``prompts`` in ``mask``.

    Parameters
    ----------
    prompts : array or tensor (counts, >= 0)
    scatter : array or tensor, same shape: the unscaled scatter estimate (>= 0), in counts per unit
        scale (multiply it by the normalisation first if the data are not normalised).
    mask : bool array or tensor, same shape: the tail bins (see :func:`tail_mask`).
    randoms : array or tensor, same shape, optional: expected randoms (>= 0); default 0.
    method : {"poisson", "lsq"}
        ``"poisson"``: maximise ``sum_m y log(a s + r) - (a s + r)`` (unbiased at low counts);
        ``"lsq"``: ``a = sum_m s (y - r) / sum_m s^2``.
    n_newton : int
        Newton iterations for ``"poisson"`` (it stops earlier at convergence).
    """
    y = _as_tensor("prompts", prompts).double()
    s = _as_tensor("scatter", scatter).double()
    m = _as_tensor("mask", mask)
    if m.dtype != torch.bool:
        raise TypeError(f"mask must be boolean, got {m.dtype}")
    method = as_lowercase_choice("method", method, ("poisson", "lsq"))
    for name, t in (("scatter", s), ("mask", m)):
        if tuple(t.shape) != tuple(y.shape):
            raise ValueError(f"{name} must have the shape of prompts {tuple(y.shape)}, got {tuple(t.shape)}")
    r = torch.zeros_like(y) if randoms is None else _as_tensor("randoms", randoms).double()
    if tuple(r.shape) != tuple(y.shape):
        raise ValueError(f"randoms must have the shape of prompts {tuple(y.shape)}, got {tuple(r.shape)}")
    for name, t in (("prompts", y), ("scatter", s), ("randoms", r)):
        if not bool(torch.isfinite(t).all()) or bool((t < 0).any()):
            raise ValueError(f"{name} must be finite and >= 0")
    m = m.to(y.device)
    y, s, r = y[m], s[m].to(y.device), r[m].to(y.device)
    # bins with no scatter and no randoms (e.g. unmeasurable LORs, efficiency 0) say nothing about a
    informative = (s > 0) | (r > 0)
    y, s, r = y[informative], s[informative], r[informative]
    if y.numel() == 0:
        raise ValueError("mask selects no bins: no scatter tails to fit (lower threshold or margin)")
    ss = float((s * s).sum())
    if ss == 0.0:
        raise ValueError("the scatter estimate is 0 on every tail bin: nothing to scale")
    a = max(float((s * (y - r)).sum()) / ss, 0.0)
    if method == "lsq":
        return a
    # Poisson ML: L'(a) = sum s (y / (a s + r) - 1), L''(a) = -sum y s^2 / (a s + r)^2 < 0
    a = max(a, 1e-6 * float(y.sum()) / float(s.sum()))
    for _ in range(n_newton):
        ybar = a * s + r
        grad = float((s * (y / ybar - 1.0)).sum())
        curv = float((y * s * s / (ybar * ybar)).sum())
        if curv <= 0.0:
            break
        step = grad / curv
        a_new = max(a + step, 0.5 * a)  # stay in a > 0 where ybar > 0
        if abs(a_new - a) <= 1e-12 * a:
            a = a_new
            break
        a = a_new
    return float(a)

"""Classifier-free guidance: guided prediction at sampling time, condition dropout at training time.

Classifier-free guidance (Ho & Salimans 2021, "Classifier-Free Diffusion Guidance", NeurIPS
workshop) trains one network both conditionally and unconditionally by replacing the condition
``c`` with a null condition with probability ``p`` (:func:`drop_condition`) and samples with::

    eps~ = (1 + lam) eps(x_t, t, c) - lam eps(x_t, t, null)

(LegoPET's form; ``lam = 0`` is the plain conditional model). The weights sum to one, so the same
combination applied to an ``x0`` or ``v`` prediction gives the same sampler update (the
conversions between ``eps``, ``x0`` and ``v`` are affine in the prediction): the guided models
below are valid samplers' models for any ``prediction``.

* :func:`classifier_free_guidance` -- two callables ``(x_t, t) -> prediction`` combined.
* :class:`CFGModel` -- one conditional network ``net(x_t, t, cond=c)`` evaluated on the condition
  and on the null condition in a single batched call.
* :func:`drop_condition` -- training-time dropout of each sample's condition.

A condition may be a tensor with a leading batch axis, or a (nested) list, tuple or dict of such
tensors (e.g. LegoPET's sinogram plus injected feature maps); the null condition defaults to zeros
of the same structure.
"""

from __future__ import annotations

import numbers

import torch

__all__ = ["classifier_free_guidance", "CFGModel", "drop_condition", "null_like"]


def _check_lam(lam) -> float:
    if isinstance(lam, bool) or not isinstance(lam, numbers.Real):
        raise TypeError(f"lam must be a number >= 0, got {lam!r}")
    lam = float(lam)
    if not lam >= 0 or lam == float("inf"):
        raise ValueError(f"lam (guidance scale) must be a finite number >= 0, got {lam}")
    return lam


def _combine(cond_out: torch.Tensor, uncond_out: torch.Tensor, lam: float) -> torch.Tensor:
    return (1.0 + lam) * cond_out - lam * uncond_out


def classifier_free_guidance(model_cond, model_uncond, lam: float):
    """Return ``model(x_t, t) = (1 + lam) model_cond(x_t, t) - lam model_uncond(x_t, t)``.

    ``lam = 0`` returns ``model_cond``'s output unchanged (the unconditional model is not called).
    """
    lam = _check_lam(lam)
    if not callable(model_cond) or not callable(model_uncond):
        raise TypeError("model_cond and model_uncond must be callables (x_t, t) -> prediction")

    def guided(x_t, t):
        out_c = model_cond(x_t, t)
        if lam == 0.0:
            return out_c
        out_u = model_uncond(x_t, t)
        if out_c.shape != out_u.shape:
            raise ValueError(f"conditional and unconditional outputs differ in shape: {tuple(out_c.shape)} "
                             f"vs {tuple(out_u.shape)}")
        return _combine(out_c, out_u, lam)

    return guided


# -- nested conditions --------------------------------------------------------------------------------
def _map(fn, cond, *others):
    if isinstance(cond, torch.Tensor):
        return fn(cond, *others)
    if isinstance(cond, dict):
        return {k: _map(fn, v, *(o[k] for o in others)) for k, v in cond.items()}
    if isinstance(cond, (list, tuple)):
        return type(cond)(_map(fn, v, *(o[i] for o in others)) for i, v in enumerate(cond))
    raise TypeError(f"a condition must be a tensor or a list/tuple/dict of tensors, got {type(cond).__name__}")


def null_like(cond):
    """Zeros with the structure, shapes and dtypes of ``cond``."""
    return _map(torch.zeros_like, cond)


def _batch_of(cond) -> int:
    sizes = set()
    _map(lambda c: sizes.add(c.shape[0] if c.ndim else None), cond)
    if None in sizes or len(sizes) != 1:
        raise ValueError("every tensor of a condition needs the same leading batch size, "
                         f"got {sorted(map(str, sizes))}")
    return sizes.pop()


def _expand_to(cond, batch: int):
    def expand(c):
        if c.shape[0] == batch:
            return c
        if c.shape[0] == 1:
            return c.expand((batch,) + tuple(c.shape[1:]))
        raise ValueError(f"a condition has batch size {c.shape[0]}; expected {batch} (or 1, broadcast)")
    return _map(expand, cond)


class CFGModel:
    """Classifier-free guidance for one conditional network ``net(x_t, t, cond=c)``.

    Parameters
    ----------
    model : callable
        ``model(x_t, t, cond=c)`` (or ``model(x_t, t, c)`` with ``cond_kwarg=None``) returning a
        prediction of ``x_t``'s shape. ``cond=...`` is the keyword the trainer's
        :func:`~pettk.diffusion.train.diffusion_loss` uses.
    cond : tensor or nested list/tuple/dict of tensors
        The condition, batch size ``B`` or 1 (broadcast over the samples).
    null_cond : same structure, optional
        The null condition; default zeros (what :func:`drop_condition` substitutes in training).
    lam : float >= 0
        Guidance scale: ``(1 + lam) out(c) - lam out(null)``. ``lam = 0`` calls the model once,
        on ``cond`` only, and returns its output unchanged.
    batched : bool
        Evaluate the two branches in one call on a doubled batch (default) or in two calls (half
        the peak memory).
    cond_kwarg : str or None
        Name of the keyword the condition is passed as; ``None`` passes it positionally.

    The instance is a model in the samplers' sense: ``cfg(x_t, t)``.
    """

    def __init__(self, model, cond, null_cond=None, lam: float = 0.5, *, batched: bool = True,
                 cond_kwarg: str | None = "cond"):
        if not callable(model):
            raise TypeError(f"model must be callable, got {type(model).__name__}")
        self.model = model
        self.lam = _check_lam(lam)
        self.cond = cond
        _batch_of(cond)
        self.null_cond = null_like(cond) if null_cond is None else null_cond
        _map(lambda a, b: _same_shape(a, b), self.cond, self.null_cond)
        self.batched = bool(batched)
        self.cond_kwarg = cond_kwarg

    def _call(self, x, t, c):
        if self.cond_kwarg is None:
            return self.model(x, t, c)
        return self.model(x, t, **{self.cond_kwarg: c})

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        b = x_t.shape[0]
        cond = _expand_to(self.cond, b)
        if self.lam == 0.0:
            return self._call(x_t, t, cond)
        null = _expand_to(self.null_cond, b)
        if self.batched:
            both = _map(lambda c, n: torch.cat([c, n.to(c.dtype)], dim=0), cond, null)
            out = self._call(torch.cat([x_t, x_t], dim=0), torch.cat([t, t], dim=0), both)
            out_c, out_u = out[:b], out[b:]
        else:
            out_c = self._call(x_t, t, cond)
            out_u = self._call(x_t, t, null)
        return _combine(out_c, out_u, self.lam)


def _same_shape(a: torch.Tensor, b: torch.Tensor) -> None:
    if tuple(a.shape[1:]) != tuple(b.shape[1:]):
        raise ValueError(f"null_cond shapes must match cond's (batch axis aside): {tuple(a.shape)} vs {tuple(b.shape)}")


def drop_condition(cond, p: float, generator=None, null_cond=None):
    """Replace each sample's condition with the null condition with probability ``p`` (CFG training).

    Parameters
    ----------
    cond : tensor ``(B, ...)`` or nested list/tuple/dict of such tensors
    p : float in [0, 1]
        Drop probability (LegoPET: ``p_dp`` in {0, 0.1, 0.2, 0.5}).
    generator : torch.Generator, optional
        Draws the ``B`` uniform numbers (on the generator's device).
    null_cond : same structure, optional
        What a dropped condition becomes; default zeros.

    Returns
    -------
    (cond_dropped, dropped) : the new condition (same structure; every entry of one sample is
    dropped together) and a ``(B,)`` bool tensor, ``True`` where the condition was dropped.
    """
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0.0 <= float(p) <= 1.0:
        raise ValueError(f"p (drop probability) must be a number in [0, 1], got {p!r}")
    b = _batch_of(cond)
    first = []
    _map(lambda c: first.append(c), cond)
    device = first[0].device
    gen_device = generator.device if generator is not None else device
    u = torch.rand(b, generator=generator, device=gen_device).to(device)
    dropped = u < float(p)
    if null_cond is None:
        null_cond = null_like(cond)

    def apply(c, n):
        m = dropped.to(c.device).reshape((b,) + (1,) * (c.ndim - 1))
        return torch.where(m, n.to(c.dtype).expand_as(c) if n.shape[0] == 1 else n.to(c.dtype), c)

    return _map(apply, cond, null_cond), dropped

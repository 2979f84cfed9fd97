"""The PET forward model ``ybar = mult * P(psf(x)) + additive``.

This module owns the *physics* layer (see ``DESIGN.md``). The model is a composition, in the
spirit of parallelproj: an image-space :class:`~pettk.psf.GaussianPSF`, the Joseph
:class:`~pettk.projector.Projector` (non-TOF or TOF) and an element-wise multiplication by
``mult = normalisation × attenuation factors``, followed by the additive background
``additive = randoms + scatter``.

* :func:`attenuation_factors` -- ``exp(-P mu)`` for a mu-map in 1/mm, differentiable in ``mu``.
* :class:`ForwardModel` -- ``forward`` (expected counts), ``adjoint`` (exact adjoint of the linear
  part), ``linear``, ``sensitivity`` (``A^T 1``, cached), ``subsets`` and a torch autograd path
  (through the projector's autograd function, the PSF's convolutions and ``mult`` if it requires
  grad, e.g. when built from a ``mu`` that does).

The Poisson likelihood lives in :mod:`pettk.likelihood`, background models in
:mod:`pettk.background`.
"""

from __future__ import annotations

import numbers

import numpy as np
import torch

from ._validation import as_float_vector
from .projector import Projector
from .psf import GaussianPSF

__all__ = ["ForwardModel", "attenuation_factors"]


def _as_tensor(name: str, value, dtype=None) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        t = value
    elif isinstance(value, np.ndarray):
        t = torch.from_numpy(np.ascontiguousarray(value))
    else:
        raise TypeError(f"{name} must be a numpy array or a torch tensor, got {type(value).__name__}")
    if not t.is_floating_point():
        raise TypeError(f"{name} must hold floating-point values, got {t.dtype}")
    if dtype is not None:
        t = t.to(dtype)
    return t


def _check_values(name: str, t: torch.Tensor, *, nonnegative: bool = True) -> None:
    finite = torch.isfinite(t)
    if not bool(finite.all()):
        raise ValueError(f"{name} contains {int((~finite).sum())} non-finite values (NaN or inf)")
    if nonnegative and bool((t < 0).any()):
        raise ValueError(f"{name} must be >= 0 everywhere; its minimum is {float(t.min()):.4g}")


def attenuation_factors(projector: Projector, mu):
    """Attenuation factors ``exp(-P mu)`` on the projector's LORs (non-TOF shape).

    Parameters
    ----------
    projector : Projector
        Its LORs are used without TOF (attenuation does not depend on the emission point).
    mu : array or tensor, shape ``(..., *grid.shape)``
        Linear attenuation coefficients in 1/mm (water at 511 keV: 0.0096), >= 0.

    Returns
    -------
    The factors in (0, 1], shape ``(..., *projector.without_tof().shape_out)``, same array type.
    Differentiable with respect to ``mu`` for torch input.
    """
    if not isinstance(projector, Projector):
        raise TypeError(f"projector must be a Projector, got {type(projector).__name__}")
    if not isinstance(mu, (np.ndarray, torch.Tensor)):
        raise TypeError(f"mu must be a numpy array or a torch tensor, got {type(mu).__name__}")
    probe = torch.as_tensor(mu) if isinstance(mu, np.ndarray) else mu
    if probe.is_floating_point() and probe.device.type != "meta" and bool((probe < 0).any()):
        raise ValueError(f"mu must be >= 0 (1/mm); its minimum is {float(probe.min()):.4g}")
    line_integrals = projector.without_tof().forward(mu)
    if isinstance(line_integrals, np.ndarray):
        return np.exp(-line_integrals)
    return torch.exp(-line_integrals)


class ForwardModel:
    """Expected counts ``ybar = mult * P(psf(x)) + additive``.

    Parameters
    ----------
    projector : Projector
        Geometry, TOF and backend. A TOF projector gives TOF sinograms ``(..., n_tof)``.
    psf : GaussianPSF, float or sequence of float, optional
        Image-space resolution: a :class:`GaussianPSF` or its FWHM in mm (per axis). ``None`` or 0
        is no blur.
    normalisation : array or tensor, optional
        Detection efficiencies per LOR (>= 0), non-TOF shape ``P.without_tof().shape_out`` (it is
        broadcast over TOF bins) or the full output shape. ``None`` means 1.
    attenuation : array or tensor, optional
        Attenuation factors per LOR in [0, 1] (see :func:`attenuation_factors`), same shapes as
        ``normalisation``. Mutually exclusive with ``mu``.
    mu : array or tensor, optional
        A mu-map (1/mm) from which the attenuation factors are computed here. If it requires grad,
        the model is differentiable with respect to it.
    additive : array or tensor, optional
        Expected randoms + scatter counts (>= 0), shape ``shape_out``. ``None`` means 0.

    Notes
    -----
    Inputs are converted to torch tensors once; ``forward``/``adjoint`` accept numpy arrays or
    tensors and return the same kind. The stored sinograms must be on the input's device (use
    :meth:`to`); their dtype follows the input.
    """

    def __init__(self, projector: Projector, *, psf=None, normalisation=None, attenuation=None, mu=None,
                 additive=None):
        if not isinstance(projector, Projector):
            raise TypeError(f"projector must be a Projector, got {type(projector).__name__}")
        if attenuation is not None and mu is not None:
            raise ValueError("give either attenuation (factors) or mu (a mu-map), not both")
        self.projector = projector
        self.psf = self._make_psf(projector, psf)
        self._nontof_shape = tuple(projector.without_tof().shape_out)
        self.shape_in = projector.shape_in
        self.shape_out = projector.shape_out

        factors = []
        for name, value in (("normalisation", normalisation), ("attenuation", attenuation)):
            if value is None:
                continue
            t = _as_tensor(name, value)
            self._check_mult_shape(name, t)
            _check_values(name, t)
            factors.append(t)
        if mu is not None:
            mu_t = _as_tensor("mu", mu)
            if tuple(mu_t.shape) != tuple(projector.shape_in):
                raise ValueError(f"mu must have shape {tuple(projector.shape_in)}, got {tuple(mu_t.shape)}")
            _check_values("mu", mu_t)
            factors.append(attenuation_factors(projector, mu_t))
        mult = None
        for f in factors:
            mult = f if mult is None else mult * f
        self.mult = mult
        if additive is not None:
            additive = _as_tensor("additive", additive)
            if tuple(additive.shape) != tuple(self.shape_out):
                raise ValueError(f"additive must have shape {tuple(self.shape_out)}, got {tuple(additive.shape)}")
            _check_values("additive", additive)
        self.additive = additive
        self._sensitivity: dict = {}

    # -- construction helpers ----------------------------------------------------------------------
    @staticmethod
    def _make_psf(projector: Projector, psf):
        if psf is None:
            return None
        if isinstance(psf, GaussianPSF):
            if psf.grid != projector.grid:
                raise ValueError(f"psf grid {psf.grid!r} differs from the projector grid {projector.grid!r}")
            return None if psf.is_identity else psf
        if isinstance(psf, (numbers.Real, list, tuple, np.ndarray)):
            as_float_vector("psf", psf, projector.grid.ndim)
            made = GaussianPSF(projector.grid, psf)
            return None if made.is_identity else made
        raise TypeError(f"psf must be a GaussianPSF, a FWHM in mm or None, got {type(psf).__name__}")

    def _check_mult_shape(self, name: str, t: torch.Tensor) -> None:
        shape = tuple(t.shape)
        if shape not in (self._nontof_shape, tuple(self.shape_out)):
            raise ValueError(f"{name} must have shape {self._nontof_shape}"
                             + (f" or {tuple(self.shape_out)}" if self._nontof_shape != tuple(self.shape_out) else "")
                             + f", got {shape}")

    @classmethod
    def _from_parts(cls, projector, psf, mult, additive) -> ForwardModel:
        model = cls.__new__(cls)
        model.projector = projector
        model.psf = psf
        model._nontof_shape = tuple(projector.without_tof().shape_out)
        model.shape_in = projector.shape_in
        model.shape_out = projector.shape_out
        model.mult = mult
        model.additive = additive
        model._sensitivity = {}
        return model

    # -- operators ---------------------------------------------------------------------------------
    @property
    def tof(self):
        return self.projector.tof

    def _mult_for(self, like: torch.Tensor):
        if self.mult is None:
            return None
        m = self._on(self.mult, like, "mult")
        if tuple(m.shape) == self._nontof_shape and self._nontof_shape != tuple(self.shape_out):
            m = m.unsqueeze(-1)  # broadcast over TOF bins
        return m

    @staticmethod
    def _on(t: torch.Tensor, like: torch.Tensor, name: str) -> torch.Tensor:
        if t.device != like.device:
            raise ValueError(f"the model's {name} is on {t.device} but the input is on {like.device}; "
                             f"move the model with model.to({str(like.device)!r})")
        return t if t.dtype == like.dtype else t.to(like.dtype)

    def linear(self, x):
        """The linear part ``mult * P(psf(x))`` for ``x`` of shape ``(..., *shape_in)``."""
        return self._wrap(x, self._linear)

    def forward(self, x):
        """Expected counts ``mult * P(psf(x)) + additive``, shape ``(..., *shape_out)``."""
        return self._wrap(x, self._forward)

    __call__ = forward

    def adjoint(self, y):
        """Exact adjoint of the linear part: ``psf(P^T(mult * y))``, shape ``(..., *shape_in)``."""
        return self._wrap(y, self._adjoint)

    def _linear(self, x: torch.Tensor) -> torch.Tensor:
        if self.psf is not None:
            x = self.psf.forward(x)
        y = self.projector.forward(x)
        m = self._mult_for(y)
        return y if m is None else y * m

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self._linear(x)
        if self.additive is not None:
            y = y + self._on(self.additive, y, "additive")
        return y

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        m = self._mult_for(y)
        if m is not None:
            y = y * m
        x = self.projector.adjoint(y)
        return x if self.psf is None else self.psf.adjoint(x)

    @staticmethod
    def _wrap(data, fn):
        if isinstance(data, np.ndarray):
            with torch.no_grad():
                return fn(torch.from_numpy(np.ascontiguousarray(data))).numpy()
        if isinstance(data, torch.Tensor):
            return fn(data)
        raise TypeError(f"input must be a numpy array or a torch tensor, got {type(data).__name__}")

    def sensitivity(self, dtype=torch.float32, device=None) -> torch.Tensor:
        """The sensitivity image ``A^T 1`` (cached per dtype and device), shape ``shape_in``.

        ``device`` defaults to the device of the model's sinograms (``mult``/``additive``; see
        :meth:`to`), or the CPU for a model without them.
        """
        if device is None:
            held = self.mult if self.mult is not None else self.additive
            device = held.device if held is not None else torch.device("cpu")
        key = (dtype, str(torch.device(device)))
        if key not in self._sensitivity:
            with torch.no_grad():
                ones = torch.ones(self.shape_out, dtype=dtype, device=device)
                self._sensitivity[key] = self._adjoint(ones)
        return self._sensitivity[key]

    def subsets(self, n: int) -> list[ForwardModel]:
        """``n`` models on the projector's interleaved view subsets, each with its own cache."""
        if self.projector.views is not None:
            raise ValueError("subsets() splits a model over all views; this model is already a subset")
        models = []
        for sub in self.projector.subsets(n):
            nontof = sub.without_tof()
            mult = None
            if self.mult is not None:
                mult = (nontof.select(self.mult) if tuple(self.mult.shape) == self._nontof_shape
                        else sub.select(self.mult))
            additive = None if self.additive is None else sub.select(self.additive)
            models.append(ForwardModel._from_parts(sub, self.psf, mult, additive))
        return models

    def with_background(self, additive=None, scale: float = 1.0) -> ForwardModel:
        """A copy with ``mult`` multiplied by ``scale`` and ``additive`` replaced (``None``: none).

        Used to turn an activity-to-trues model into a counts model (``scale`` = counts per unit
        activity) and to attach randoms + scatter; ``scale`` applies to the linear part only.
        """
        scale = float(scale)
        if not np.isfinite(scale) or scale <= 0:
            raise ValueError(f"scale must be a finite number > 0, got {scale!r}")
        if additive is not None:
            additive = _as_tensor("additive", additive)
            if tuple(additive.shape) != tuple(self.shape_out):
                raise ValueError(f"additive must have shape {tuple(self.shape_out)}, got {tuple(additive.shape)}")
            _check_values("additive", additive)
        if self.mult is None:
            mult = None if scale == 1.0 else torch.full(self._nontof_shape, scale, dtype=torch.float64)
        else:
            mult = self.mult * scale
        return ForwardModel._from_parts(self.projector, self.psf, mult, additive)

    def to(self, device=None, dtype=None) -> ForwardModel:
        """A copy of the model with its sinograms on ``device`` (and of ``dtype``)."""
        def move(t):
            return None if t is None else t.to(device=device, dtype=dtype)
        return ForwardModel._from_parts(self.projector, self.psf, move(self.mult), move(self.additive))

    def __repr__(self) -> str:
        parts = [f"projector={self.projector!r}"]
        if self.psf is not None:
            parts.append(f"psf={self.psf!r}")
        parts.append(f"mult={'yes' if self.mult is not None else 'no'}")
        parts.append(f"additive={'yes' if self.additive is not None else 'no'}")
        return f"ForwardModel({', '.join(parts)})"

"""The PET forward model ``ybar = mult * P(psf(x)) + additive``.

This module owns the *physics* layer (see ``DESIGN.md``). The model is a composition, in the
spirit of parallelproj: an image-space :class:`~pettk.psf.GaussianPSF`, the Joseph
:class:`~pettk.projector.Projector` (non-TOF or TOF) and an element-wise multiplication by
``mult = normalisation × attenuation factors``, followed by the additive background
``additive = randoms + scatter``.

* :func:`attenuation_factors` -- ``exp(-P mu)`` for a mu-map in 1/mm, differentiable in ``mu``.
* :class:`ForwardModel` -- ``forward`` (expected counts), ``adjoint`` (exact adjoint of the linear
  part), ``linear``, ``sensitivity`` (``A^T 1``, cached and shared with the model's subsets and
  ``with_background`` copies, see :class:`_SensitivityCache`), ``subsets`` and a torch autograd path
  (through the projector's autograd function, the PSF's convolutions and ``mult`` if it requires
  grad, e.g. when built from a ``mu`` that does).

The Poisson likelihood lives in :mod:`pettk.likelihood`, background models in
:mod:`pettk.background`.
"""

from __future__ import annotations

import numbers

import numpy as np
import torch

from ._validation import as_device, as_float_vector
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


#: Elements per block of :func:`_check_values` (its boolean temporaries stay this small).
_CHECK_BLOCK = 2**20


def _check_values(name: str, t: torch.Tensor, *, nonnegative: bool = True) -> None:
    """Reject non-finite (and, with ``nonnegative``, negative) values, a block of elements at a
    time: no sinogram-sized temporaries."""
    t = t.detach()
    if t.is_contiguous() and t.numel() > _CHECK_BLOCK:
        flat = t.view(-1)
        blocks = [flat[i:i + _CHECK_BLOCK] for i in range(0, flat.numel(), _CHECK_BLOCK)]
    else:
        blocks = [t]
    if not all(bool(torch.isfinite(b).all()) for b in blocks):
        n_bad = sum(int((~torch.isfinite(b)).sum()) for b in blocks)
        raise ValueError(f"{name} contains {n_bad} non-finite values (NaN or inf)")
    if nonnegative and any(bool((b < 0).any()) for b in blocks):
        minimum = min(float(b.min()) for b in blocks)
        raise ValueError(f"{name} must be >= 0 everywhere; its minimum is {minimum:.4g}")


def attenuation_factors(projector: Projector, mu, progress: bool = False):
    """Attenuation factors ``exp(-P mu)`` on the projector's LORs (non-TOF shape).

    Parameters
    ----------
    projector : Projector
        Its LORs are used without TOF (attenuation does not depend on the emission point).
    mu : array or tensor, shape ``(..., *grid.shape)``
        Linear attenuation coefficients in 1/mm (water at 511 keV: 0.0096), >= 0.
    progress : bool
        Show a tqdm bar: the projection then runs over :data:`PROJECTION_BLOCKS` blocks of views
        (same numbers; a full 3D scanner takes minutes). Ignored, one call, when ``mu`` requires
        grad or the projector is already restricted to some views.

    Returns
    -------
    The factors in (0, 1], shape ``(..., *projector.without_tof().shape_out)``, same array type
    (and dtype) as ``mu``. Differentiable with respect to ``mu`` for torch input. Without autograd
    the exponential is taken in place: the result is the only sinogram-sized allocation.
    """
    if not isinstance(projector, Projector):
        raise TypeError(f"projector must be a Projector, got {type(projector).__name__}")
    if not isinstance(mu, (np.ndarray, torch.Tensor)):
        raise TypeError(f"mu must be a numpy array or a torch tensor, got {type(mu).__name__}")
    probe = torch.as_tensor(mu) if isinstance(mu, np.ndarray) else mu
    if probe.is_floating_point() and probe.device.type != "meta" and bool((probe < 0).any()):
        raise ValueError(f"mu must be >= 0 (1/mm); its minimum is {float(probe.min()):.4g}")
    nontof = projector.without_tof()
    own = getattr(nontof, "attenuation_factors", None)
    if own is not None:  # a projector whose bins merge LORs (pettk.corrections.SpanProjector) averages them
        return own(mu)
    needs_grad = isinstance(mu, torch.Tensor) and mu.requires_grad and torch.is_grad_enabled()
    n_views = nontof.shape_out[nontof.geometry.view_axis]
    if progress and not needs_grad and nontof.views is None and n_views > 1:
        line_integrals = _project_in_blocks(nontof, mu, min(PROJECTION_BLOCKS, n_views))
    else:
        line_integrals = nontof.forward(mu)
    if isinstance(line_integrals, np.ndarray):
        np.negative(line_integrals, out=line_integrals)
        return np.exp(line_integrals, out=line_integrals)
    if line_integrals.requires_grad:
        return torch.exp(-line_integrals)
    return line_integrals.neg_().exp_()


#: Blocks of views of a projection shown with a progress bar (:func:`attenuation_factors` and
#: ``simulate_scan`` with ``progress=True``).
PROJECTION_BLOCKS = 16


def _project_in_blocks(projector: Projector, x, n_blocks: int, desc: str = "attenuation factors"):
    """``projector.forward(x)`` (no autograd) computed over ``n_blocks`` interleaved view subsets
    into one preallocated result, with a tqdm bar (the same numbers: every LOR is projected on
    its own)."""
    from tqdm.auto import tqdm

    is_numpy = isinstance(x, np.ndarray)
    x_t = torch.from_numpy(np.ascontiguousarray(x)) if is_numpy else x.detach()
    lead = tuple(x_t.shape[:x_t.ndim - len(projector.shape_in)])
    out = torch.empty(lead + tuple(projector.shape_out), dtype=x_t.dtype, device=x_t.device)
    with torch.no_grad():
        for part in tqdm(projector.subsets(n_blocks), desc=desc, leave=False):
            part.select(out).copy_(part.forward(x_t))
    return out.numpy() if is_numpy else out


def _version_of(t):
    """The in-place modification counter of ``t`` (``None`` for ``None`` or an inference tensor)."""
    if t is None:
        return None
    try:
        return t._version
    except RuntimeError:  # inference tensors do not track versions
        return None


class _SensitivityCache:
    """Sensitivity images ``A^T 1`` shared by a family of models with the same multiplicative
    factors up to a scalar: a model, its :meth:`ForwardModel.with_background` copies (at any
    ``scale``) and the subset models of :meth:`ForwardModel.subsets`.

    Entries are keyed ``(subset, dtype, device)``: ``subset`` is ``None`` for all views or
    ``(n_subsets, index)``. Each holds ``(image, scale)``: ``image`` (shape ``shape_in``, no
    autograd history) was computed by a member whose ``mult`` is the family's reference ``mult``
    times ``scale``. A member at another scale ``s`` uses ``image * (s / scale)`` (exact up to
    rounding: the back projection is linear in ``mult``). Only images are held, never sinograms.

    A split of ``n`` subsets holds ``n`` images of the full image size, so only the
    :attr:`max_splits` most recently used splits per (dtype, device) are kept (a sweep over
    subset counts would otherwise accumulate them); the all-view images are always kept.
    """

    __slots__ = ("images", "_splits")

    #: Subset splits kept per cache (least recently used ones are dropped).
    max_splits = 3

    def __init__(self):
        self.images: dict = {}
        self._splits: dict = {}  # (n_subsets, dtype, device) -> None, in order of use

    def get(self, key):
        subset, dtype, device = key
        if subset is not None:
            split = (subset[0], dtype, device)
            if split in self._splits:
                self._splits[split] = self._splits.pop(split)  # most recently used last
        return self.images.get(key)

    def put(self, key, entry):
        subset, dtype, device = key
        if subset is not None:
            split = (subset[0], dtype, device)
            self._splits.pop(split, None)
            self._splits[split] = None
            while len(self._splits) > self.max_splits:
                n, old_dtype, old_device = next(iter(self._splits))
                del self._splits[(n, old_dtype, old_device)]
                for k in [k for k in self.images
                          if k[0] is not None and k[0][0] == n and k[1] == old_dtype and k[2] == old_device]:
                    del self.images[k]
        return self.images.setdefault(key, entry)


def _subset_sensitivities(models, dtype, device=None, progress: bool = False) -> list:
    """``[m.sensitivity(dtype, device) for m in models]``, with a tqdm bar (``progress``) over the
    models whose image is not cached yet (each of those costs one back projection of its views)."""
    from tqdm.auto import tqdm

    models = list(models)
    missing = [progress and m._sensitivity_cache().get((m._sens_subset, dtype, str(m._cache_device(device)))) is None
               for m in models]
    with tqdm(total=sum(missing), desc="sensitivity", disable=not any(missing), leave=False) as bar:
        images = []
        for m, miss in zip(models, missing):
            images.append(m.sensitivity(dtype, device))
            bar.update(int(miss))
    return images


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
        A mu-map (1/mm) from which the attenuation factors are computed here (of ``mu``'s dtype;
        a float32 mu-map halves their memory). If it requires grad, the model is differentiable
        with respect to it.
    additive : array or tensor, optional
        Expected randoms + scatter counts (>= 0), shape ``shape_out``. ``None`` means 0.
    progress : bool
        Show a progress bar over the projection of ``mu`` (see :func:`attenuation_factors`).

    Notes
    -----
    Inputs are converted to torch tensors once; ``forward``/``adjoint`` accept numpy arrays or
    tensors and return the same kind. The stored sinograms must be on the input's device (use
    :meth:`to`); their dtype follows the input.

    Sensitivity images (:meth:`sensitivity`) are computed once per (subset split, dtype, device)
    and shared with the models made by :meth:`subsets` and :meth:`with_background` (scaled by its
    ``scale``); replacing ``mult``, modifying it in place, or :meth:`to` starts a fresh cache.
    """

    def __init__(self, projector: Projector, *, psf=None, normalisation=None, attenuation=None, mu=None,
                 additive=None, progress: bool = False):
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
            factors.append(attenuation_factors(projector, mu_t, progress=progress))
        mult = None
        full = tuple(self.shape_out)
        for f in factors:
            if mult is not None and tuple(f.shape) != tuple(mult.shape):  # one TOF-shaped, one not
                mult, f = [g if tuple(g.shape) == full else g.unsqueeze(-1) for g in (mult, f)]
            mult = f if mult is None else mult * f
        self.mult = mult
        if additive is not None:
            additive = _as_tensor("additive", additive)
            if tuple(additive.shape) != tuple(self.shape_out):
                raise ValueError(f"additive must have shape {tuple(self.shape_out)}, got {tuple(additive.shape)}")
            _check_values("additive", additive)
        self.additive = additive

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
        return model

    # -- the multiplicative factors and the sensitivity cache -------------------------------------
    @property
    def mult(self):
        """The multiplicative factors per LOR (normalisation × attenuation × scale) or ``None``.

        Assigning a new value detaches the model from its shared sensitivity cache.
        """
        return self._mult

    @mult.setter
    def mult(self, value):
        self._mult = value
        self._new_sensitivity_cache()

    def _new_sensitivity_cache(self) -> None:
        """Start a private cache: this model's ``mult`` is the reference (scale 1)."""
        self._sens_cache = _SensitivityCache()
        self._sens_scale = 1.0
        self._sens_subset = None
        self._sens_version = _version_of(self._mult)
        self._sens_local: dict = {}

    def _sensitivity_cache(self) -> _SensitivityCache:
        """The shared cache, after checking that ``mult`` was not modified in place since it was
        linked (if it was, the model gets a fresh private cache)."""
        if _version_of(self._mult) != self._sens_version:
            self._new_sensitivity_cache()
        return self._sens_cache

    def _share_sensitivity(self, source: ForwardModel, scale: float = 1.0, subset=None) -> None:
        """Link this model to ``source``'s cache; its ``mult`` is ``source.mult * scale`` restricted to
        ``subset`` (``(n_subsets, index)`` or ``None`` for the views of ``source``)."""
        self._sens_cache = source._sensitivity_cache()
        self._sens_scale = source._sens_scale * float(scale)
        self._sens_subset = source._sens_subset if subset is None else subset
        self._sens_version = _version_of(self._mult)
        self._sens_local = {}

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
        return self._wrap(x, self._linear, "x", self.shape_in)

    def forward(self, x):
        """Expected counts ``mult * P(psf(x)) + additive``, shape ``(..., *shape_out)``."""
        return self._wrap(x, self._forward, "x", self.shape_in)

    __call__ = forward

    def adjoint(self, y):
        """Exact adjoint of the linear part: ``psf(P^T(mult * y))``, shape ``(..., *shape_in)``."""
        return self._wrap(y, self._adjoint, "y", self.shape_out)

    def _linear(self, x: torch.Tensor) -> torch.Tensor:
        if self.psf is not None:
            x = self.psf.forward(x)
        y = self.projector.forward(x)
        m = self._mult_for(y)
        if m is None:
            return y
        if torch.is_grad_enabled() and (y.requires_grad or m.requires_grad):
            return y * m
        return y.mul_(m)  # y is the projector's fresh output: no second sinogram

    def _linear_with_progress(self, x: torch.Tensor, desc: str = "projection") -> torch.Tensor:
        """``linear(x)`` without autograd, the projection over blocks of views with a tqdm bar
        (same numbers; for long 3D projections, e.g. in ``simulate_scan``)."""
        n_views = self.projector.shape_out[self.projector.geometry.view_axis]
        if self.projector.views is not None or n_views < 2:
            with torch.no_grad():
                return self._linear(x)
        with torch.no_grad():
            if self.psf is not None:
                x = self.psf.forward(x)
            y = _project_in_blocks(self.projector, x, min(PROJECTION_BLOCKS, n_views), desc)
            m = self._mult_for(y)
            return y if m is None else y.mul_(m)

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
    def _wrap(data, fn, name: str = "input", shape=None):
        if shape is not None and isinstance(data, (np.ndarray, torch.Tensor)):
            core = tuple(shape)
            got = tuple(data.shape)
            if len(got) < len(core) or got[len(got) - len(core):] != core:
                raise ValueError(f"{name} must have shape (..., {', '.join(map(str, core))}), got {got}")
        if isinstance(data, np.ndarray):
            with torch.no_grad():
                return fn(torch.from_numpy(np.ascontiguousarray(data))).numpy()
        if isinstance(data, torch.Tensor):
            return fn(data)
        raise TypeError(f"input must be a numpy array or a torch tensor, got {type(data).__name__}")

    def _cache_device(self, device) -> torch.device:
        """``device`` as a full torch device (default: where the sinograms are)."""
        device = as_device("device", device)
        if device is None:
            held = self.mult if self.mult is not None else self.additive
            device = held.device if held is not None else torch.device("cpu")
        device = torch.device(device)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        return device

    def sensitivity(self, dtype=torch.float32, device=None) -> torch.Tensor:
        """The sensitivity image ``A^T 1 = psf(P^T mult)``, shape ``shape_in``, of ``dtype``.

        ``device`` defaults to the device of the model's sinograms (``mult``/``additive``; see
        :meth:`to`), or the CPU for a model without them.

        Computed once per (subset split, dtype, device) and shared: repeated calls, the models
        of repeated ``subsets(n)`` calls and ``with_background`` copies (scaled by their ``scale``,
        the background does not enter) return the cached image without a back projection (the
        three most recently used subset splits are kept, see :class:`_SensitivityCache`). The
        returned tensor is shared: do not modify it in place. It carries no autograd history
        (computed under ``torch.no_grad``), also when ``mult`` requires grad.
        """
        device = self._cache_device(device)
        cache = self._sensitivity_cache()
        key = (self._sens_subset, dtype, str(device))
        entry = cache.get(key)
        if entry is None:
            with torch.no_grad():
                ones = torch.ones(self.shape_out, dtype=dtype, device=device)
                entry = cache.put(key, (self._adjoint(ones), self._sens_scale))
        image, scale = entry
        if scale == self._sens_scale:
            return image
        local = self._sens_local.get(key)
        if local is None or local[0] is not image:
            local = self._sens_local[key] = (image, image * (self._sens_scale / scale))
        return local[1]

    def _sensitivity_from_subsets(self, n: int, dtype, device, progress: bool = False) -> None:
        """Fill the cache's full-view sensitivity (if missing) with the sum of the ``n`` subset
        sensitivities, computing (and caching) those: ``A^T 1 = sum_s A_s^T 1`` up to rounding.
        ``progress``: a tqdm bar over the subsets."""
        device = self._cache_device(device)
        cache = self._sensitivity_cache()
        key = (self._sens_subset, dtype, str(device))
        if key in cache.images:
            return
        parts = _subset_sensitivities(self.subsets(n), dtype, device, progress)
        with torch.no_grad():
            total = parts[0].clone()
            for part in parts[1:]:
                total += part
        # the subset images were computed or rescaled to this model's scale
        cache.put(key, (total, self._sens_scale))

    def subsets(self, n: int) -> list[ForwardModel]:
        """``n`` models on the projector's interleaved view subsets.

        Each call returns new models (with their own selected ``mult``/``additive``), but their
        sensitivity images are cached on this model, keyed by ``(n, index)``: the models of a
        later ``subsets(n)`` call (or of a ``with_background`` copy's) reuse them.
        """
        if self.projector.views is not None:
            raise ValueError("subsets() splits a model over all views; this model is already a subset")
        models = []
        for index, sub in enumerate(self.projector.subsets(n)):
            nontof = sub.without_tof()
            mult = None
            if self.mult is not None:
                mult = (nontof.select(self.mult) if tuple(self.mult.shape) == self._nontof_shape
                        else sub.select(self.mult))
            additive = None if self.additive is None else sub.select(self.additive)
            model = ForwardModel._from_parts(sub, self.psf, mult, additive)
            model._share_sensitivity(self, subset=(int(n), index))
            models.append(model)
        return models

    def with_background(self, additive=None, scale: float = 1.0) -> ForwardModel:
        """A copy with ``mult`` multiplied by ``scale`` and ``additive`` replaced (``None``: none).

        Used to turn an activity-to-trues model into a counts model (``scale`` = counts per unit
        activity) and to attach randoms + scatter; ``scale`` applies to the linear part only.
        The copy shares this model's sensitivity cache: its sensitivity is this model's times
        ``scale``, computed by no further back projection.
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
        model = ForwardModel._from_parts(self.projector, self.psf, mult, additive)
        model._share_sensitivity(self, scale)
        return model

    def to(self, device=None, dtype=None) -> ForwardModel:
        """A copy of the model with its sinograms on ``device`` (and of ``dtype``), with a fresh
        sensitivity cache."""
        device = as_device("device", device)
        if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
            raise TypeError(f"dtype must be a floating-point torch dtype, got {dtype!r}")

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

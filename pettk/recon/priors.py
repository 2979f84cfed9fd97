"""Classical pairwise priors for MAP reconstruction: quadratic, relative difference, smoothed TV.

Every prior is a sum over unordered neighbour pairs ``{j, k}`` (8-neighbourhood in 2D,
26-neighbourhood in 3D) of ``w_jk * phi(x_j, x_k)``, with inverse-distance weights
``w_jk = min(voxel_size) / |r_j - r_k|`` (1 for the nearest neighbour along the finest axis)
times optional anatomical weights ``kappa_j * kappa_k``. Each prior offers

* ``value(x)``: ``R(x)`` (a scalar tensor per batch item summed),
* ``gradient(x)``: ``dR/dx``,
* ``hessian_diagonal(x)``: ``d^2 R / dx_j^2`` at ``x``,
* ``curvature_bound(x)``: per voxel, an upper bound of ``d^2 R / dx_j^2`` over all
  ``x_j >= 0`` with the neighbours fixed -- a separable-surrogate curvature usable as a
  preconditioner,

* ``gradient_and_hessian_diagonal(x)``: both in one pass (what BSREM needs per subset update),

all on torch tensors of shape ``(..., *grid.shape)`` (leading dims are batch dims). MAP
reconstructions maximise ``L(x) - beta * R(x)``.

Implementation
--------------
Float32/float64 CPU tensors without autograd go through the numba kernels of
:mod:`pettk.backends._prior_cpu`: one parallel pass over the image per call gathering all 26
neighbours (8 in 2D) of each voxel row in SIMD-vectorised loops, float64 arithmetic, no
image-sized temporaries beyond the outputs. Everything else (CUDA, other dtypes, ``x`` or
``kappa`` requiring grad with grad mode on, priors subclassed with their own ``phi``) takes the
torch path: a loop over the 13 half-offsets (4 in 2D) on shifted slices, which is the reference
definition; both paths agree to rounding (about 1e-15 relative in float64). On the 128×128×127
mmr-like grid (float32, 2 threads) the RDP's gradient and Hessian diagonal take about 0.1 s
instead of 2-4 s (``benchmarks/test_prior_speed.py``).
``prior.backend = "torch"`` forces the torch path.

References
----------
J. Nuyts, D. Bequé, P. Dupont, L. Mortelmans, "A concave prior penalizing relative differences
for maximum-a-posteriori reconstruction in emission tomography", IEEE TNS 49(1), 56-60 (2002).
Y.-J. Tsai et al., "Fast quasi-Newton algorithms for penalized reconstruction in emission
tomography and further improvements via preconditioning", IEEE TMI 37(4), 1000-1010 (2018).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch

from .._validation import as_bounded_float, as_positive_float, check_finite_tensor
from ..backends import _prior_cpu as K
from ..backends._threads import keep_torch_threads
from ..geometry import ImageGrid

__all__ = ["Prior", "QuadraticPrior", "RelativeDifferencePrior", "SmoothedTVPrior", "quadratic", "rdp", "tv"]


def _half_offsets(ndim: int):
    """Neighbour offsets with the first non-zero entry positive: each unordered pair once."""
    for off in itertools.product((-1, 0, 1), repeat=ndim):
        nz = [o for o in off if o != 0]
        if nz and nz[0] > 0:
            yield off


def _slices(offset, n_lead: int):
    """Index slices of the pair (j, k = j + offset) over the region where both exist."""
    a = [slice(None)] * n_lead
    b = [slice(None)] * n_lead
    for o in offset:
        if o > 0:
            a.append(slice(0, -o))
            b.append(slice(o, None))
        elif o < 0:
            a.append(slice(-o, None))
            b.append(slice(0, o))
        else:
            a.append(slice(None))
            b.append(slice(None))
    return tuple(a), tuple(b)


_BACKENDS = ("auto", "numba", "torch")

#: Bounds of the numeric knobs, which keep the priors' values, gradients and curvatures finite
#: for finite images: ``gamma`` in ``[0, MAX_GAMMA]``, ``epsilon``/``delta`` in
#: ``[MIN_SMOOTHING, MAX_SMOOTHING]``.
MAX_GAMMA = 1e6
MIN_SMOOTHING = 1e-15
MAX_SMOOTHING = 1e6
#: Image values may reach ``MAX_ABS_FRACTION * sqrt(finfo(dtype).max)`` (1.8e16 in float32): sums of
#: squared differences over the image then stay finite.
MAX_ABS_FRACTION = 1e-3


def _smoothing(name: str, value) -> float:
    return as_bounded_float(name, as_positive_float(name, value), minimum=MIN_SMOOTHING, maximum=MAX_SMOOTHING)
_KERNEL_METHODS = ("_phi", "_dphi", "_d2phi", "_d2phi_bound")


class Prior:
    """A pairwise prior ``R(x) = sum_{j<k neighbours} w_jk phi(x_j, x_k)``.

    Subclasses define ``_phi(a, b)``, ``_dphi(a, b)`` (derivative in ``a``), ``_d2phi(a, b)``
    (second derivative in ``a``) and ``_d2phi_bound(b)`` (its supremum over ``a >= 0``) on torch
    tensors; the built-in priors also name their numba kernel (``_kernel_kind``), used while
    those four methods are not overridden.

    Parameters
    ----------
    grid : ImageGrid
        Sets the dimension and the inverse-distance weights.
    kappa : tensor, shape ``grid.shape``, optional
        Anatomical (or any per-voxel) weights, ``w_jk <- w_jk * kappa_j * kappa_k``.

    Attributes
    ----------
    backend : str
        ``"auto"`` (default: numba for float32/float64 CPU tensors without autograd, torch
        otherwise), ``"torch"`` (always the torch loop) or ``"numba"`` (always the kernel; a
        ``ValueError`` for inputs it cannot take).
    """

    #: The kernel's prior code in :mod:`pettk.backends._prior_cpu` (``None``: torch only).
    _kernel_kind = None

    def __init__(self, grid: ImageGrid, kappa=None):
        if not isinstance(grid, ImageGrid):
            raise TypeError(f"grid must be an ImageGrid, got {type(grid).__name__}")
        self.grid = grid
        if grid.ndim > 3:
            raise ValueError(f"priors support 1D to 3D grids, got {grid.ndim}D")
        vs = grid.voxel_size_mm
        self._pairs = []
        for off in _half_offsets(grid.ndim):
            dist = math.sqrt(sum((o * v) ** 2 for o, v in zip(off, vs)))
            self._pairs.append((off, min(vs) / dist))
        self._weights3 = K.neighbour_weights(vs)
        self._shape3 = (1,) * (3 - grid.ndim) + tuple(int(n) for n in grid.shape)
        if kappa is not None:
            kappa = torch.as_tensor(kappa)
            if tuple(kappa.shape) != tuple(grid.shape):
                raise ValueError(f"kappa must have shape {tuple(grid.shape)}, got {tuple(kappa.shape)}")
            if not bool(torch.isfinite(kappa).all()) or bool((kappa < 0).any()):
                raise ValueError("kappa must be finite and >= 0")
        self.kappa = kappa
        self.backend = "auto"

    # -- the kappa weights, converted once per device/dtype (and after in-place changes) -------------
    @property
    def kappa(self):
        """The per-voxel weights (tensor of ``grid.shape``) or ``None``."""
        return self._kappa

    @kappa.setter
    def kappa(self, value):
        self._kappa = value
        self._kappa_as: dict = {}
        self._kappa_np = None
        self._kappa_version = None if value is None else value._version

    def _kappa_current(self) -> None:
        """Drop the converted copies if ``kappa`` was modified in place."""
        if self._kappa is not None and self._kappa._version != self._kappa_version:
            self.kappa = self._kappa

    def _kappa_like(self, x: torch.Tensor) -> torch.Tensor:
        self._kappa_current()
        if self.kappa.requires_grad:  # keep the graph to kappa fresh on every call
            return self.kappa.to(device=x.device, dtype=x.dtype)
        key = (x.device, x.dtype)
        if key not in self._kappa_as:
            self._kappa_as[key] = self.kappa.to(device=x.device, dtype=x.dtype)
        return self._kappa_as[key]

    def _kappa_kernel(self) -> np.ndarray:
        self._kappa_current()
        if self._kappa_np is None:
            k = self.kappa.detach().to(device="cpu", dtype=torch.float64).contiguous().numpy()
            self._kappa_np = np.ascontiguousarray(k.reshape(self._shape3))
        return self._kappa_np

    # -- dispatch -------------------------------------------------------------------------------------
    @classmethod
    def _has_kernel(cls) -> bool:
        """The class uses a built-in kernel and keeps the ``phi`` methods of the class naming it."""
        kind = cls._kernel_kind
        if kind is None:
            return False
        owner = next(c for c in cls.__mro__ if "_kernel_kind" in c.__dict__)
        return all(getattr(cls, m) is getattr(owner, m) for m in _KERNEL_METHODS)

    def _use_kernel(self, x: torch.Tensor) -> bool:
        backend = self.backend
        if backend not in _BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(_BACKENDS)}, got {backend!r}")
        if backend == "torch":
            return False
        ok = (self._has_kernel() and x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64))
        if backend == "numba":
            if not ok:
                raise ValueError("the numba prior kernels take float32/float64 CPU tensors of a built-in prior; "
                                 f"got {x.dtype} on {x.device} for {type(self).__name__}")
            return True
        differentiable = x.requires_grad or (self.kappa is not None and self.kappa.requires_grad)
        return ok and not (differentiable and torch.is_grad_enabled())

    def _kernel_params(self) -> tuple[float, float]:
        return 0.0, 0.0

    @keep_torch_threads
    def _run_kernel(self, x: torch.Tensor, mode: int, outputs: int):
        """Run the numba kernel in ``mode`` on ``x`` (any batch dims); returns the value (a float)
        or the ``outputs`` (1 or 2) tensors of ``x``'s shape."""
        xd = x.detach().contiguous()
        n_lead = xd.ndim - self.grid.ndim
        batch = int(np.prod(xd.shape[:n_lead])) if n_lead else 1
        x4 = xd.numpy().reshape((batch,) + self._shape3)
        use_kappa = self.kappa is not None
        kappa = self._kappa_kernel() if use_kappa else np.zeros((1, 1, 1), dtype=np.float64)
        n_rows = batch * self._shape3[0] * self._shape3[1]
        partial = np.zeros(K.n_chunks(n_rows) if n_rows else 1, dtype=np.float64)
        if mode == K.MODE_VALUE:
            g = h = np.empty((1, 1, 1, 1), dtype=x4.dtype)
        else:
            g = np.empty(x4.shape, dtype=x4.dtype)
            h = np.empty(x4.shape, dtype=x4.dtype) if mode == K.MODE_GRAD_HESS else g
        if n_rows and x4.shape[-1]:
            p0, p1 = self._kernel_params()
            K.pair_kernel(x4, kappa, use_kappa, self._weights3, self._kernel_kind, float(p0), float(p1), mode,
                          g, h, partial)
        elif mode != K.MODE_VALUE:
            g[...] = 0
            h[...] = 0
        if mode == K.MODE_VALUE:
            return float(partial.sum())
        out = [torch.from_numpy(g).reshape(x.shape)]
        if outputs == 2:
            out.append(torch.from_numpy(h).reshape(x.shape))
        return out

    # -- pair iteration ------------------------------------------------------------------------------
    def _check(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a torch tensor, got {type(x).__name__}")
        if not x.is_floating_point():
            raise TypeError(f"x must be a floating-point tensor, got dtype {x.dtype}")
        nd = self.grid.ndim
        if tuple(x.shape[x.ndim - nd:]) != tuple(self.grid.shape):
            raise ValueError(f"x must have shape (..., {', '.join(map(str, self.grid.shape))}), got {tuple(x.shape)}")
        check_finite_tensor("x", x, max_abs_fraction=MAX_ABS_FRACTION)

    def _each_pair(self, x: torch.Tensor):
        """Yield ``(slice_j, slice_k, weight)``; weight is a float or a tensor over the overlap."""
        n_lead = x.ndim - self.grid.ndim
        kap = None if self.kappa is None else self._kappa_like(x)
        for off, w in self._pairs:
            sa, sb = _slices(off, n_lead)
            if kap is not None:
                ka, kb = _slices(off, 0)
                w = w * kap[ka] * kap[kb]
            yield sa, sb, w

    # -- the torch path (reference definition) ---------------------------------------------------------
    def _torch_value(self, x: torch.Tensor) -> torch.Tensor:
        total = x.new_zeros(())
        for sa, sb, w in self._each_pair(x):
            total = total + (w * self._phi(x[sa], x[sb])).sum()
        return total

    def _torch_gradient_and_hessian(self, x: torch.Tensor, want_g: bool = True, want_h: bool = True):
        g = torch.zeros_like(x) if want_g else None
        h = torch.zeros_like(x) if want_h else None
        for sa, sb, w in self._each_pair(x):
            a, b = x[sa], x[sb]
            if want_g:
                g[sa] += w * self._dphi(a, b)
                g[sb] += w * self._dphi(b, a)
            if want_h:
                h[sa] += w * self._d2phi(a, b)
                h[sb] += w * self._d2phi(b, a)
        return g, h

    def _torch_curvature_bound(self, x: torch.Tensor) -> torch.Tensor:
        c = torch.zeros_like(x)
        for sa, sb, w in self._each_pair(x):
            a, b = x[sa], x[sb]
            c[sa] += w * self._d2phi_bound(b)
            c[sb] += w * self._d2phi_bound(a)
        return c

    # -- the public API --------------------------------------------------------------------------------
    def value(self, x: torch.Tensor) -> torch.Tensor:
        """``R(x)`` summed over the whole tensor (batch included): a 0-d tensor of ``x``'s dtype and
        device (differentiable on the torch path)."""
        self._check(x)
        if self._use_kernel(x):
            return torch.tensor(self._run_kernel(x, K.MODE_VALUE, 0), dtype=x.dtype)
        return self._torch_value(x)

    __call__ = value

    def gradient(self, x: torch.Tensor) -> torch.Tensor:
        """``dR/dx``, same shape as ``x``."""
        self._check(x)
        if self._use_kernel(x):
            return self._run_kernel(x, K.MODE_GRAD_HESS, 2)[0]
        return self._torch_gradient_and_hessian(x, want_h=False)[0]

    def hessian_diagonal(self, x: torch.Tensor) -> torch.Tensor:
        """``d^2 R / dx_j^2`` at ``x``, same shape as ``x``."""
        self._check(x)
        if self._use_kernel(x):
            return self._run_kernel(x, K.MODE_GRAD_HESS, 2)[1]
        return self._torch_gradient_and_hessian(x, want_g=False)[1]

    def gradient_and_hessian_diagonal(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(dR/dx, d^2 R / dx_j^2)`` at ``x`` in one pass (shared sub-expressions), each the shape
        of ``x``; the same numbers as :meth:`gradient` and :meth:`hessian_diagonal`."""
        self._check(x)
        if self._use_kernel(x):
            g, h = self._run_kernel(x, K.MODE_GRAD_HESS, 2)
            return g, h
        return self._torch_gradient_and_hessian(x)

    def curvature_bound(self, x: torch.Tensor) -> torch.Tensor:
        """Per voxel, ``sup over x_j >= 0`` of ``d^2 R / dx_j^2`` with the neighbours held at ``x``."""
        self._check(x)
        if self._use_kernel(x):
            return self._run_kernel(x, K.MODE_BOUND, 1)[0]
        return self._torch_curvature_bound(x)


class QuadraticPrior(Prior):
    """``phi(a, b) = (a - b)^2 / 2``: Gaussian smoothness; constant curvature."""

    _kernel_kind = K.QUADRATIC

    def _phi(self, a, b):
        return 0.5 * (a - b) ** 2

    def _dphi(self, a, b):
        return a - b

    def _d2phi(self, a, b):
        return torch.ones_like(a)

    def _d2phi_bound(self, b):
        return torch.ones_like(b)


class RelativeDifferencePrior(Prior):
    """Relative difference prior ``phi(a, b) = (a - b)^2 / (a + b + gamma |a - b| + epsilon)``.

    Parameters
    ----------
    grid : ImageGrid
    gamma : float
        Edge-preservation parameter (>= 0; 2 is common): larger values penalise large relative
        differences less.
    epsilon : float
        Small positive constant (in image units) keeping ``phi`` smooth where ``a = b = 0``.
    kappa : tensor, optional
        Per-voxel weights (e.g. anatomical), see :class:`Prior`.
    """

    _kernel_kind = K.RDP

    def __init__(self, grid: ImageGrid, gamma: float = 2.0, epsilon: float = 1e-6, kappa=None):
        super().__init__(grid, kappa)
        self.gamma = as_bounded_float("gamma", gamma, minimum=0.0, maximum=MAX_GAMMA)
        self.epsilon = _smoothing("epsilon", epsilon)

    def _kernel_params(self):
        return self.gamma, self.epsilon

    def _den(self, a, b):
        return a + b + self.gamma * (a - b).abs() + self.epsilon

    def _phi(self, a, b):
        return (a - b) ** 2 / self._den(a, b)

    def _dphi(self, a, b):
        d = a - b
        return d * (self.gamma * d.abs() + a + 3.0 * b + 2.0 * self.epsilon) / self._den(a, b) ** 2

    def _d2phi(self, a, b):
        return 2.0 * (2.0 * b + self.epsilon) ** 2 / self._den(a, b) ** 3

    def _d2phi_bound(self, b):
        # d2phi = 2 (2b + eps)^2 / D^3 with D = a + b + gamma |a - b| + eps; D is smallest at
        # a = 0 when gamma <= 1 (D = (1 + gamma) b + eps) and at a = b otherwise (D = 2b + eps).
        b = b.clamp_min(0)
        d_min = (1.0 + self.gamma) * b + self.epsilon if self.gamma <= 1.0 else 2.0 * b + self.epsilon
        return 2.0 * (2.0 * b + self.epsilon) ** 2 / d_min ** 3


class SmoothedTVPrior(Prior):
    """Smoothed total variation ``phi(a, b) = sqrt((a - b)^2 + delta^2) - delta`` (Charbonnier).

    ``delta`` (image units) sets where the penalty turns from quadratic to linear; the curvature
    is at most ``1 / delta``.
    """

    _kernel_kind = K.TV

    def __init__(self, grid: ImageGrid, delta: float = 1e-2, kappa=None):
        super().__init__(grid, kappa)
        self.delta = _smoothing("delta", delta)

    def _kernel_params(self):
        return self.delta, 0.0

    def _phi(self, a, b):
        return torch.sqrt((a - b) ** 2 + self.delta ** 2) - self.delta

    def _dphi(self, a, b):
        return (a - b) / torch.sqrt((a - b) ** 2 + self.delta ** 2)

    def _d2phi(self, a, b):
        return self.delta ** 2 / ((a - b) ** 2 + self.delta ** 2) ** 1.5

    def _d2phi_bound(self, b):
        return torch.full_like(b, 1.0 / self.delta)


def quadratic(grid: ImageGrid, kappa=None) -> QuadraticPrior:
    """The quadratic (Gaussian) smoothness prior."""
    return QuadraticPrior(grid, kappa)


def rdp(grid: ImageGrid, gamma: float = 2.0, epsilon: float = 1e-6, kappa=None) -> RelativeDifferencePrior:
    """The relative difference prior (Nuyts et al. 2002) with edge parameter ``gamma``."""
    return RelativeDifferencePrior(grid, gamma, epsilon, kappa)


def tv(grid: ImageGrid, delta: float = 1e-2, kappa=None) -> SmoothedTVPrior:
    """Smoothed (Charbonnier) total variation over the neighbourhood."""
    return SmoothedTVPrior(grid, delta, kappa)

"""DeepInverse interoperability: pettk's PET model as DeepInverse physics, pettk diffusion nets as denoisers.

`DeepInverse <https://deepinv.github.io>`_ splits an inverse problem into a physics operator,
a data fidelity, a prior/denoiser and an algorithm. This module plugs pettk into two of those
slots, so that DeepInverse's solvers (``MLEM``, ``OSEM``, ``PGD``, ``HQS``, PnP and RED priors,
...) run on pettk's forward model and its denoiser-based algorithms can use pettk's networks:

* :class:`PETPhysics` -- a :class:`~pettk.physics.ForwardModel` as a ``deepinv.physics.LinearPhysics``:
  ``A`` is the linear part ``mult * P(psf(x))``, ``A_adjoint`` its exact adjoint, ``background``
  the model's additive term ``b`` and the noise model DeepInverse's own ``PoissonNoise``, so that
  ``physics(x) ~ gain * Poisson((A x + b) / gain)`` (``gain = 1``: counts). It follows the
  conventions of ``deepinv.physics.PET`` (``A(x, add_background=True)``, the ``background``
  buffer), which DeepInverse's ``MLEM``/``OSEM``/``BSREM`` rely on; :meth:`PETPhysics.split` and
  :meth:`PETPhysics.split_measurements` give the view subsets ``OSEM``/``BSREM`` need, and
  :meth:`PETPhysics.data_fidelity` the matching ``PoissonLikelihood``.
* :class:`DiffusionDenoiser` -- a pettk diffusion network (e.g. :class:`pettk.diffusion.nets.UNet`)
  and its :class:`~pettk.diffusion.NoiseSchedule` as a ``deepinv.models.Denoiser``
  ``D(x, sigma)``: Gaussian noise of standard deviation ``sigma`` is the forward diffusion at the
  time ``t`` whose signal-to-noise ratio ``abar_t / (1 - abar_t)`` is ``1 / sigma^2``, so
  ``D(x, sigma) = x0_hat(sqrt(abar_t) x, t)`` (Tweedie's estimate from an eps, x0 or v
  prediction), with the image scaled to the network's range and back.

Shapes follow DeepInverse: images ``(B, C, *grid.shape)``, measurements ``(B, C, *shape_out)``
(pettk treats the leading dimensions as batch dimensions). Everything is torch; the model's
sinograms must be on the input's device (``PETPhysics(model.to(device))``).

Install with ``pip install 'pettk[deepinv]'`` (keep your torch: DeepInverse needs a torchvision
that matches it, e.g. the CPU build from PyTorch's own index for a CPU torch).
"""

from __future__ import annotations

import math
import numbers

import torch

try:
    import deepinv as dinv
    from deepinv.models import Denoiser as _Denoiser
    from deepinv.optim.data_fidelity import PoissonLikelihood
    from deepinv.physics import LinearPhysics, PoissonNoise, StackedLinearPhysics
    from deepinv.utils import TensorList
except Exception as err:  # ImportError, or a torchvision that cannot load its compiled ops
    raise ImportError(
        "pettk.interop.deepinv needs DeepInverse (pip install 'pettk[deepinv]'), which imports torchvision: "
        "install the torchvision build that matches your torch (for a CPU torch, from PyTorch's CPU index) "
        f"without upgrading torch. Import failed with {type(err).__name__}: {err}") from err

from ..diffusion.posterior import ImageScale
from ..diffusion.samplers import PREDICTIONS, model_predictions
from ..diffusion.schedules import NoiseSchedule
from ..physics import ForwardModel

__all__ = ["PETPhysics", "DiffusionDenoiser", "dinv"]


def _positive_float(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


class PETPhysics(LinearPhysics):
    """A pettk :class:`~pettk.physics.ForwardModel` as a DeepInverse ``LinearPhysics``.

    Parameters
    ----------
    model : ForwardModel
        ``ybar = mult * P(psf(x)) + additive``. Its linear part is :meth:`A`; ``additive`` (or 0)
        becomes :attr:`background`.
    gain : float > 0
        DeepInverse's Poisson gain ``gamma``: ``y ~ gamma * Poisson((A x + b) / gamma)``. 1 (the
        default) when ``y`` holds counts, as in pettk.
    normalize_counts : bool
        ``False`` (default, as ``deepinv.physics.PET``): measurements are the Poisson draws
        themselves; ``True``: they are multiplied by ``gain``.
    noise_model : deepinv.physics.NoiseModel, optional
        Replaces the default ``PoissonNoise(gain, normalize_counts)``; it receives ``A x + b``.
    **kwargs
        Passed to ``LinearPhysics`` (e.g. ``max_iter``, ``tol``, ``solver`` for ``A_dagger``).

    Attributes
    ----------
    model : ForwardModel
    background : torch.Tensor, shape ``(1, 1, *model.shape_out)``
        The expected randoms + scatter ``b`` (a buffer, moved by ``.to()``).
    """

    def __init__(self, model: ForwardModel, *, gain: float = 1.0, normalize_counts: bool = False,
                 noise_model=None, **kwargs):
        if not isinstance(model, ForwardModel):
            raise TypeError(f"model must be a pettk ForwardModel, got {type(model).__name__}")
        gain = _positive_float("gain", gain)
        if not isinstance(normalize_counts, bool):
            raise TypeError(f"normalize_counts must be a bool, got {normalize_counts!r}")
        if noise_model is None:
            noise_model = PoissonNoise(gain=gain, normalize=normalize_counts)
        super().__init__(noise_model=noise_model, img_size=(1,) + tuple(model.shape_in), **kwargs)
        self.model = model
        self.gain = gain
        self.normalize_counts = normalize_counts
        shape = (1, 1) + tuple(model.shape_out)
        if model.additive is None:
            background = torch.zeros(shape, dtype=torch.get_default_dtype())
        else:
            background = model.additive.detach().to(torch.get_default_dtype()).reshape(shape).clone()
        self.register_buffer("background", background)

    def A(self, x: torch.Tensor, add_background: bool = False, **kwargs) -> torch.Tensor:
        """``mult * P(psf(x))`` for images ``(B, C, *shape_in)``; ``+ background`` on request."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a torch tensor, got {type(x).__name__}")
        y = self.model.linear(x)
        return y + self.background.to(y.dtype) if add_background else y

    def A_adjoint(self, y: torch.Tensor, **kwargs) -> torch.Tensor:
        """The exact adjoint ``psf(P^T(mult * y))`` for measurements ``(B, C, *shape_out)``."""
        if not isinstance(y, torch.Tensor):
            raise TypeError(f"y must be a torch tensor, got {type(y).__name__}")
        return self.model.adjoint(y)

    def forward(self, x: torch.Tensor, **kwargs) -> torch.Tensor:
        """Simulated measurements: the noise model applied to ``A x + background``."""
        return self.sensor(self.noise(self.A(x, add_background=True), **kwargs))

    def data_fidelity(self) -> PoissonLikelihood:
        """DeepInverse's Poisson negative log-likelihood matching this physics (gain, background)."""
        return PoissonLikelihood(gain=self.gain, bkg=self.background / self.gain, denormalize=self.normalize_counts)

    def split(self, n_subsets: int) -> StackedLinearPhysics:
        """``n_subsets`` interleaved view subsets as a ``StackedLinearPhysics`` (for ``OSEM``/``BSREM``).

        Subset ``i`` holds views ``i, i + n, ...`` (:meth:`pettk.ForwardModel.subsets`); pair it
        with :meth:`split_measurements`.
        """
        parts = [PETPhysics(sub, gain=self.gain, normalize_counts=self.normalize_counts)
                 for sub in self.model.subsets(n_subsets)]
        return StackedLinearPhysics(parts)

    def split_measurements(self, y: torch.Tensor, n_subsets: int) -> TensorList:
        """The parts of measurements ``(B, C, *shape_out)`` matching :meth:`split`."""
        if not isinstance(y, torch.Tensor):
            raise TypeError(f"y must be a torch tensor, got {type(y).__name__}")
        return TensorList([sub.projector.select(y) for sub in self.model.subsets(n_subsets)])

    def __repr__(self) -> str:
        return f"PETPhysics(model={self.model!r}, gain={self.gain:g})"


class DiffusionDenoiser(_Denoiser):
    """A pettk diffusion network as a DeepInverse Gaussian denoiser ``D(x, sigma)``.

    Parameters
    ----------
    net : torch.nn.Module
        ``net(x_t, t) -> eps | x0 | v`` for ``(B, C, H, W)`` images and ``(B,)`` integer times,
        e.g. :class:`pettk.diffusion.nets.UNet` (unconditional).
    schedule : NoiseSchedule
        The schedule the network was trained with.
    prediction : {"eps", "x0", "v"}
        What the network predicts.
    scale : float or ImageScale
        How DeepInverse's image values map to the network's range (see
        :class:`pettk.diffusion.ImageScale`): a number ``s`` means ``x_net = x / s`` ([0, 1]
        models); ``ImageScale(s, "symmetric")`` means ``x_net = 2 x / s - 1``. ``sigma`` is
        converted with the same slope.
    clip : (float, float), optional
        Clamp the network-range estimate ``x0_hat`` (e.g. ``(0, 1)``).

    Notes
    -----
    For ``y = x + sigma * n`` the network sees ``x_t = sqrt(abar_t) * y_net`` at the discrete
    time ``t`` whose ``log(abar_t / (1 - abar_t))`` is closest to ``-2 log(sigma_net)``; outside
    the schedule's range ``t`` is clamped to ``0`` or ``T - 1``. ``sigma = 0`` returns ``x``.
    ``sigma`` may differ per sample (a ``(B,)`` tensor). Gradients flow through the network if
    the caller enables them.
    """

    def __init__(self, net: torch.nn.Module, schedule: NoiseSchedule, *, prediction: str = "eps", scale=1.0,
                 clip=None, device=None):
        if not isinstance(net, torch.nn.Module):
            raise TypeError(f"net must be a torch.nn.Module, got {type(net).__name__}")
        if not isinstance(schedule, NoiseSchedule):
            raise TypeError(f"schedule must be a pettk NoiseSchedule, got {type(schedule).__name__}")
        if prediction not in PREDICTIONS:
            raise ValueError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")
        if isinstance(scale, numbers.Real) and not isinstance(scale, bool):
            scale = ImageScale(_positive_float("scale", scale), "unit")
        if not isinstance(scale, ImageScale):
            raise TypeError(f"scale must be a number > 0 or an ImageScale, got {type(scale).__name__}")
        if clip is not None:
            if not (isinstance(clip, (tuple, list)) and len(clip) == 2 and float(clip[0]) < float(clip[1])):
                raise ValueError(f"clip must be None or a pair (low, high) with low < high, got {clip!r}")
            clip = (float(clip[0]), float(clip[1]))
        super().__init__(device="cpu" if device is None else device)
        self.net = net
        self.schedule = schedule
        self.prediction = prediction
        self.scale = scale
        self.clip = clip
        self._slope = (1.0 if scale.range == "unit" else 2.0) / scale.scale  # d x_net / d x
        abar = schedule.alphas_cumprod
        self._log_snr = torch.log(abar) - torch.log1p(-abar)  # float64, (T,), decreasing in t

    def sigma_to_t(self, sigma_net: torch.Tensor) -> torch.Tensor:
        """Diffusion times (long, same shape) for noise levels in the network's range (> 0)."""
        target = -2.0 * torch.log(sigma_net.detach().to(torch.float64).cpu())
        return (self._log_snr[None, :] - target.reshape(-1, 1)).abs().argmin(dim=1).reshape(sigma_net.shape)

    def forward(self, x: torch.Tensor, sigma, **kwargs) -> torch.Tensor:
        """Denoise ``x`` (``(B, C, H, W)``) at noise level ``sigma`` (float or ``(B,)`` tensor, in x's units)."""
        if not isinstance(x, torch.Tensor) or x.ndim != 4:
            raise ValueError(f"x must be a (B, C, H, W) tensor, got {getattr(x, 'shape', type(x).__name__)}")
        sig = self._handle_sigma(sigma, batch_size=x.shape[0], device=x.device, dtype=torch.float64)
        if not bool(torch.isfinite(sig).all()) or bool((sig < 0).any()):
            raise ValueError(f"sigma must be finite and >= 0, got {sigma!r}")
        sigma_net = sig * self._slope
        out = x.clone()
        noisy = sigma_net > 0
        if not bool(noisy.any()):
            return out
        t_all = self.sigma_to_t(sigma_net.clamp_min(1e-30)).to(x.device)
        param = next(self.net.parameters(), None)
        net_dtype = param.dtype if param is not None else x.dtype
        for t in torch.unique(t_all[noisy]).tolist():
            idx = torch.nonzero(noisy & (t_all == t), as_tuple=True)[0]
            x_net = self.scale.from_activity(x[idx]).to(net_dtype)
            x_t = math.sqrt(float(self.schedule.alphas_cumprod[t])) * x_net
            x0, _ = model_predictions(self.net, x_t, int(t), self.schedule, self.prediction, self.clip)
            out[idx] = self.scale.to_activity(x0).to(x.dtype)
        return out

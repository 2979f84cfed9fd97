"""The trained LegoPET prior (:class:`LegoPET`): conditioning, guided sampling, the
:class:`~pettk.priors.ImagePrior` reconstruction with optional data consistency, save and load."""

from __future__ import annotations

from pathlib import Path

import torch
from tqdm.auto import tqdm

from ...diffusion.guidance import CFGModel
from ...diffusion.nets import UNet
from ...diffusion.posterior import diffpir_sample, penalised_em_step
from ...diffusion.samplers import ddim_sample, ddpm_sample, make_generator, randn
from ...physics import ForwardModel
from .._checkpoint import load_networks, save_networks
from .._config import is_int, is_real
from ..base import ImagePrior
from .canvas import (
    _offsets,
    count_parameters,
    crop_image,
    denormalise_image,
    fit_sinogram,
    normalise_image,
    normalise_sinogram,
    pad_image,
    precorrect_sinogram,
)
from .config import SAMPLERS, LegoPETConfig
from .inputs import as_counts, precorrection_factors

__all__ = ["LegoPET"]


class LegoPET(ImagePrior):
    """A (trained) LegoPET model: frozen PnPNet + sinogram-conditioned cDPM with feature guidance.

    Parameters
    ----------
    config : LegoPETConfig
    image_shape : (nx, ny)
        The reconstruction grid it was trained on (must fit ``config.canvas``).
    sinogram_shape : (n_views, n_radial)
        The sinogram size it was trained on (inputs must match).
    image_max : float > 0
        Activity of image value 1 (the training set's maximum; ``x = 2 a / image_max - 1``).
    sinogram_scale : float > 0
        With ``config.sinogram_input = "precorrected"``: the precorrected sinogram's divisor (the
        training set's mean per-slice peak of the full-dose precorrected sinogram, activity × mm);
        unused with ``"prompts"``.
    pnpnet, cdpm : UNet, optional
        Trained networks; fresh ones from ``config.net`` when omitted (``pnpnet`` is only built
        when ``config.features`` is true).

    Attributes
    ----------
    history : dict
        Training loss curves (``pnpnet_loss``, ``cdpm_loss``).
    """

    def __init__(self, config: LegoPETConfig, image_shape, sinogram_shape, image_max: float, pnpnet: UNet | None = None,
                 cdpm: UNet | None = None, sinogram_scale: float = 1.0):
        if not isinstance(config, LegoPETConfig):
            raise TypeError(f"config must be a LegoPETConfig, got {type(config).__name__}")
        self.config = config.validate()
        self.image_shape = self._shape("image_shape", image_shape)
        self.sinogram_shape = self._shape("sinogram_shape", sinogram_shape)
        canvas = config.canvas
        if self.image_shape[0] > canvas[0] or self.image_shape[1] > canvas[1]:
            raise ValueError(f"image_shape {self.image_shape} does not fit the canvas {canvas} (net.image_size)")
        if not is_real(image_max) or float(image_max) <= 0:
            raise ValueError(f"image_max must be a finite number > 0, got {image_max!r}")
        self.image_max = float(image_max)
        if not is_real(sinogram_scale) or float(sinogram_scale) <= 0:
            raise ValueError(f"sinogram_scale must be a finite number > 0, got {sinogram_scale!r}")
        self.sinogram_scale = float(sinogram_scale)
        if pnpnet is None and config.features:
            pnpnet = config.net.build_pnpnet()
        self.pnpnet = None if pnpnet is None else self._frozen(pnpnet)
        self.cdpm = (cdpm if cdpm is not None else config.net.build_cdpm()).eval()
        self.schedule = config.schedule()
        self.history: dict = {}

    @staticmethod
    def _shape(name, value) -> tuple[int, int]:
        try:
            shape = tuple(int(s) for s in value)
        except (TypeError, ValueError):
            raise TypeError(f"{name} must be a pair of positive ints, got {value!r}") from None
        if len(shape) != 2 or min(shape) < 1:
            raise ValueError(f"{name} must be a pair of positive ints, got {value!r}")
        return shape

    @staticmethod
    def _frozen(net: UNet) -> UNet:
        net.eval()
        for p in net.parameters():
            p.requires_grad_(False)
        return net

    # -- bookkeeping --------------------------------------------------------------------------------
    @property
    def uses_features(self) -> bool:
        """``True`` for LegoPET, ``False`` for the plain cDPM."""
        return self.config.features

    @property
    def device(self) -> torch.device:
        return next(self.cdpm.parameters()).device

    def to(self, device) -> LegoPET:
        self.cdpm.to(device)
        if self.pnpnet is not None:
            self.pnpnet.to(device)
        return self

    def trainable_parameters(self) -> int:
        """Trainable parameters of the diffusion model (the cDPM; the PnPNet is frozen).

        Equal for LegoPET and the plain cDPM: the feature guidance adds none (the paper's
        35.71 M for both, full preset).
        """
        return count_parameters(self.cdpm, trainable_only=False)

    def __repr__(self) -> str:
        kind = "LegoPET" if self.uses_features else "cDPM"
        return (f"{kind}(canvas={self.config.canvas}, image={self.image_shape}, sinogram={self.sinogram_shape}, "
                f"trainable={self.trainable_parameters():,}, T={self.config.T}, sampler={self.config.sampler!r})")

    # -- canvas-space building blocks ---------------------------------------------------------------
    def sinogram_canvas(self, y: torch.Tensor, forward_model: ForwardModel | None = None, *,
                        precorrection: tuple | None = None) -> torch.Tensor:
        """Counts ``(B, n_views, n_radial)`` → the network condition ``(B, 1, H, W)`` (normalised, fitted).

        ``"prompts"`` input: each sinogram over its own maximum. ``"precorrected"``: ``(y -
        additive) / mult`` over :attr:`sinogram_scale`, with ``precorrection = (mult, additive)``
        (each ``None`` or broadcastable to ``y``: per-sample factors) when given, else those of
        ``forward_model`` (the model of ``y``'s count level; ``None``: ``y`` is precorrected already).
        """
        y = y.to(torch.float32)
        if self.config.sinogram_input == "precorrected":
            mult = additive = None
            if precorrection is not None:
                mult, additive = precorrection
            elif forward_model is not None:
                mult, additive = forward_model.mult, forward_model.additive
            s = precorrect_sinogram(y, mult, additive) / self.sinogram_scale
        else:
            s = normalise_sinogram(y)
        return fit_sinogram(s, self.config.canvas).unsqueeze(1)

    def condition(self, sino: torch.Tensor) -> dict:
        """The condition ``C`` of canvas sinograms ``(B, 1, H, W)``.

        ``{"sino": sino}`` for the plain cDPM, ``{"sino": sino, "features": {"encoder": [b_d per
        level], "middle": b_m}}`` for LegoPET (frozen PnPNet, no gradient). Its null is zeros of
        the same structure (:func:`~pettk.diffusion.guidance.null_like`).
        """
        cond = {"sino": sino}
        if self.uses_features:
            with torch.no_grad():
                cond["features"] = self.pnpnet.encoder_features(sino)
        return cond

    def eps_model(self, x_t: torch.Tensor, t, cond: dict) -> torch.Tensor:
        """The cDPM on a condition from :meth:`condition` (or its null)."""
        return self.cdpm(x_t, t, cond=cond["sino"], features=cond.get("features"))

    def guided_model(self, cond: dict, guidance_scale: float | None = None) -> CFGModel:
        """The sampler's model ``(x_t, t) -> (1 + λ) eps(x_t, t, C) - λ eps(x_t, t, ∅)``."""
        lam = self.config.guidance_scale if guidance_scale is None else guidance_scale
        return CFGModel(self.eps_model, cond, lam=lam)

    @torch.no_grad()
    def sample(self, sino: torch.Tensor, *, sampler: str | None = None, steps: int | None = None,
               guidance_scale: float | None = None, eta: float | None = None, generator=None, x_T=None,
               t_start: int | None = None, data_step=None, progress: bool = False) -> torch.Tensor:
        """Sample canvas images ``(B, 1, H, W)`` in [-1, 1] given canvas sinograms ``(B, 1, H, W)``.

        ``data_step(x0_hat, t) -> x0_dc`` (canvas space) turns on data consistency (DiffPIR-style
        sampling: the corrected estimate replaces ``x0_hat`` and the noise is re-derived from it).
        Defaults come from the configuration; DDPM is DDIM with ``eta = 1`` on every step when a
        data step is given.
        """
        cfg = self.config
        sampler = cfg.sampler if sampler is None else sampler
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
        steps = cfg.sampling_steps if steps is None else steps
        eta = cfg.eta if eta is None else eta
        model = self.guided_model(self.condition(sino), guidance_scale)
        shape = (sino.shape[0], 1) + tuple(sino.shape[2:])
        clip = 1.0 if cfg.clip_denoised else None
        start = cfg.T - 1 if t_start is None else int(t_start)
        schedule = self.schedule
        common = dict(prediction=cfg.prediction, generator=generator, x_T=x_T, t_start=t_start, clip=clip,
                      dtype=sino.dtype, device=sino.device, progress=progress)
        if data_step is not None:
            if sampler == "ddpm":
                steps, eta = start + 1, 1.0
            return diffpir_sample(model, None, None, shape, schedule, min(int(steps), start + 1), n_em=1, eta=eta,
                                  eta_form="ddim", data_step=data_step, **common)
        if sampler == "ddpm":
            return ddpm_sample(model, shape, schedule, **common)
        return ddim_sample(model, shape, schedule, min(int(steps), start + 1), eta, **common)

    # -- the ImagePrior interface --------------------------------------------------------------------
    def _check_sampling(self, sampler, steps, eta, guidance_scale) -> None:
        if sampler is not None and sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
        if steps is not None and (not is_int(steps) or not 1 <= steps <= self.config.T):
            raise ValueError(f"steps must be an int in [1, {self.config.T}], got {steps!r}")
        if eta is not None and (not is_real(eta) or not 0.0 <= float(eta) <= 1.0):
            raise ValueError(f"eta must be a number in [0, 1], got {eta!r}")
        if guidance_scale is not None and (not is_real(guidance_scale) or float(guidance_scale) < 0):
            raise ValueError(f"guidance_scale (lam) must be a finite number >= 0, got {guidance_scale!r}")

    def _check_inputs(self, forward_model, y):
        if not isinstance(forward_model, ForwardModel):
            raise TypeError(f"forward_model must be a pettk ForwardModel, got {type(forward_model).__name__}")
        if tuple(forward_model.shape_in) != self.image_shape:
            raise ValueError(f"forward_model.shape_in must be {self.image_shape} (the grid this LegoPET was "
                             f"trained on), got {tuple(forward_model.shape_in)}")
        if tuple(forward_model.shape_out) != self.sinogram_shape:
            raise ValueError(f"forward_model.shape_out must be {self.sinogram_shape} (the sinogram this LegoPET "
                             f"was trained on), got {tuple(forward_model.shape_out)}")
        t, is_numpy = as_counts("y", y)
        if t.ndim < 2 or tuple(t.shape[-2:]) != self.sinogram_shape:
            raise ValueError(f"y must have shape (..., {self.sinogram_shape[0]}, {self.sinogram_shape[1]}) "
                             f"(n_views, n_radial), got {tuple(t.shape)}")
        return t, is_numpy

    def _image_in(self, name: str, image, batch_shape, device) -> torch.Tensor:
        t, _ = as_counts(name, image)
        if tuple(t.shape) not in (self.image_shape, tuple(batch_shape) + self.image_shape):
            raise ValueError(f"{name} must have shape {self.image_shape} (or with y's batch dimensions "
                             f"{tuple(batch_shape)} in front), got {tuple(t.shape)}")
        return t.to(device=device, dtype=torch.float32)

    def _data_step(self, forward_model: ForwardModel, y: torch.Tensor, iterations: int, weight: float):
        fm = forward_model
        sens = fm.sensitivity(torch.float32, y.device)
        mean_sens = float(sens.mean())
        image_shape, canvas = self.image_shape, self.config.canvas

        def step(x0: torch.Tensor, t: int) -> torch.Tensor:
            anchor = denormalise_image(crop_image(x0[:, 0], image_shape), self.image_max)
            a = anchor.clamp_min(1e-6 * float(anchor.max()) + 1e-12)  # EM is multiplicative: let every voxel grow
            beta = weight * mean_sens / max(float(anchor.mean()), 1e-12) if weight > 0 else 0.0
            for _ in range(iterations):
                a = penalised_em_step(fm, y, a, anchor, beta, sens=sens)
            out = x0.clone()
            top, left = _offsets(image_shape[0], canvas[0])[0], _offsets(image_shape[1], canvas[1])[0]
            out[:, 0, top:top + image_shape[0], left:left + image_shape[1]] = normalise_image(a, self.image_max)
            return out

        return step

    def _prepare(self, forward_model, y, mr):
        if mr is not None:
            raise ValueError("LegoPET conditions on the sinogram only; mr must be None")
        t, is_numpy = self._check_inputs(forward_model, y)
        out_dtype = t.dtype if t.is_floating_point() else torch.float32
        if self.device != t.device:
            self.to(t.device)
        return t, is_numpy, out_dtype

    @staticmethod
    def _out(x: torch.Tensor, batch_shape, image_shape, dtype, is_numpy):
        x = x.reshape(tuple(batch_shape) + tuple(image_shape)).to(dtype)
        return x.cpu().numpy() if is_numpy else x

    def reconstruct(self, forward_model: ForwardModel, y, *, mr=None, init=None, guidance_scale: float | None = None,
                    sampler: str | None = None, steps: int | None = None, eta: float | None = None,
                    dc_iterations: int | None = None, dc_weight: float | None = None, t_start: int | None = None,
                    n_samples: int | None = None, generator=None, chunk_size: int = 16, precorrection=None,
                    progress: bool = False):
        """Sample the image of measured counts ``y`` (LegoPET or, if ``features=False``, the plain cDPM).

        Parameters
        ----------
        forward_model : ForwardModel
            The measurement's model; ``shape_in`` and ``shape_out`` must be the trained sizes. It is
            used for the optional data-consistency steps and, with ``"precorrected"`` input, to
            precorrect ``y`` (with a batch of sinograms, all samples share it).
        y : array or tensor ``(..., n_views, n_radial)``
            Counts (>= 0, finite); leading dimensions are a batch, one sample each. With
            ``"prompts"`` input any scale (the sinogram is normalised by its maximum); with
            ``"precorrected"`` input ``forward_model`` must describe ``y``'s count level (its
            ``mult`` and ``additive`` precorrect ``y``).
        mr : None
            Not used by LegoPET (must be ``None``).
        init : array or tensor ``(nx, ny)`` or ``(..., nx, ny)``, optional
            A starting image (activity): it is noised to ``t_start`` and denoised from there
            (SDEdit-style partial start) instead of starting from pure noise.
        guidance_scale, sampler, steps, eta : optional
            Override the configuration's λ, sampler, DDIM steps and DDIM η.
        dc_iterations, dc_weight : optional
            Data-consistency EM iterations per step and anchor weight (default: the configuration,
            0 = off). The EM steps use ``forward_model`` and ``y`` as counts, so the model must
            describe ``y``'s count level (e.g. ``mult / DRF`` for low-dose data).
        t_start : int, optional
            First time step (default ``T - 1``, or ``T // 5`` when ``init`` is given).
        n_samples : int, optional
            Independent samples averaged per sinogram (default ``config.n_samples``).
        generator : torch.Generator or int, optional
            Randomness of the sampler (default: seeded with ``config.seed``, so calls repeat).
        chunk_size : int
            Sinograms per network batch (doubled inside by the guidance).
        precorrection : pair ``(mult, additive)``, optional
            Per-sample precorrection factors for ``"precorrected"`` input, in place of
            ``forward_model``'s: each ``None`` (1 / 0) or an array broadcastable to ``y``'s shape
            (``mult`` >= 0, finite), e.g. the SSRB sums of a 3D model's factors for a stack of
            rebinned slices. They describe the precorrection only, so data consistency
            (``dc_iterations > 0``) is refused with them.
        progress : bool

        Returns
        -------
        Activity image(s) ``(..., nx, ny)`` (>= 0) in ``y``'s array type, device and floating dtype
        (integer counts give float32).
        """
        self._check_sampling(sampler, steps, eta, guidance_scale)
        t_y, is_numpy, out_dtype = self._prepare(forward_model, y, mr)
        cfg = self.config
        dc_iterations = cfg.dc_iterations if dc_iterations is None else dc_iterations
        dc_weight = cfg.dc_weight if dc_weight is None else dc_weight
        if not is_int(dc_iterations) or dc_iterations < 0:
            raise ValueError(f"dc_iterations must be an int >= 0, got {dc_iterations!r}")
        if not is_real(dc_weight) or float(dc_weight) < 0:
            raise ValueError(f"dc_weight must be a finite number >= 0, got {dc_weight!r}")
        if not is_int(chunk_size) or chunk_size < 1:
            raise ValueError(f"chunk_size must be an int >= 1, got {chunk_size!r}")
        n_samples = cfg.n_samples if n_samples is None else n_samples
        if not is_int(n_samples) or n_samples < 1:
            raise ValueError(f"n_samples must be an int >= 1, got {n_samples!r}")
        factors = precorrection_factors(precorrection, t_y, self.config.sinogram_input, int(dc_iterations))
        batch_shape = t_y.shape[:-2]
        flat = t_y.reshape((-1,) + self.sinogram_shape).to(torch.float32)
        if init is not None:
            init_t = self._image_in("init", init, batch_shape, t_y.device)
            init_t = init_t.expand(tuple(batch_shape) + self.image_shape).reshape((-1,) + self.image_shape)
            t_start = max(cfg.T // 5, 0) if t_start is None else t_start
        if t_start is not None and (not is_int(t_start) or not 0 <= t_start < cfg.T):
            raise ValueError(f"t_start must be an int in [0, {cfg.T - 1}], got {t_start!r}")
        g = make_generator(cfg.seed if generator is None else generator, t_y.device)
        outs = []
        starts = range(0, flat.shape[0], int(chunk_size))
        for start in tqdm(starts, desc="LegoPET", disable=not progress or len(starts) < 2, leave=False):
            y_chunk = flat[start:start + chunk_size]
            chunk_factors = None if factors is None else tuple(
                None if f is None else f[start:start + chunk_size] for f in factors)
            sino = self.sinogram_canvas(y_chunk, forward_model, precorrection=chunk_factors)
            data_step = None
            if dc_iterations > 0:
                data_step = self._data_step(forward_model, y_chunk, int(dc_iterations), float(dc_weight))
            total = None
            for _ in range(int(n_samples)):
                x_T = None
                if init is not None:
                    x0 = pad_image(normalise_image(init_t[start:start + chunk_size], self.image_max), cfg.canvas)
                    x0 = x0.unsqueeze(1).clamp(-1.0, 1.0)
                    x_T = self.schedule.q_sample(x0, int(t_start), randn(x0.shape, g, x0))
                x = self.sample(sino, sampler=sampler, steps=steps, guidance_scale=guidance_scale, eta=eta,
                                generator=g, x_T=x_T, t_start=t_start, data_step=data_step, progress=progress)
                image = denormalise_image(crop_image(x[:, 0], self.image_shape), self.image_max)
                total = image if total is None else total + image
            outs.append(total / int(n_samples))
        return self._out(torch.cat(outs), batch_shape, self.image_shape, out_dtype, is_numpy)

    @torch.no_grad()
    def pnpnet_reconstruct(self, forward_model: ForwardModel, y, *, mr=None):
        """The PnPNet's regression image of ``y`` (the deterministic baseline); same conventions as
        :meth:`reconstruct`."""
        if self.pnpnet is None:
            raise ValueError("this model has no PnPNet (a plain cDPM trained with features=False)")
        t_y, is_numpy, out_dtype = self._prepare(forward_model, y, mr)
        batch_shape = t_y.shape[:-2]
        flat = t_y.reshape((-1,) + self.sinogram_shape).to(torch.float32)
        x = self.pnpnet(self.sinogram_canvas(flat, forward_model)).clamp(-1.0, 1.0)
        image = denormalise_image(crop_image(x[:, 0], self.image_shape), self.image_max)
        return self._out(image, batch_shape, self.image_shape, out_dtype, is_numpy)

    # -- persistence -----------------------------------------------------------------------------------
    def save(self, path) -> Path:
        """Write ``path`` (``.safetensors``: ``cdpm.*`` and ``pnpnet.*`` weights) and its JSON metadata."""
        meta = {"legopet_config": self.config.to_dict(), "image_shape": list(self.image_shape),
                "sinogram_shape": list(self.sinogram_shape), "image_max": self.image_max,
                "sinogram_scale": self.sinogram_scale,
                "has_pnpnet": self.pnpnet is not None, "history": self.history}
        return save_networks(path, "LegoPET", {"cdpm": self.cdpm, "pnpnet": self.pnpnet}, meta)

    @classmethod
    def load(cls, path, device="cpu") -> LegoPET:
        """Read a model written by :meth:`save`."""
        states, meta = load_networks(path, "LegoPET", device=device)
        config = LegoPETConfig.from_dict(meta["legopet_config"])
        cdpm = config.net.build_cdpm()
        cdpm.load_state_dict(states.get("cdpm", {}))
        pnpnet = None
        if meta.get("has_pnpnet"):
            pnpnet = config.net.build_pnpnet()
            pnpnet.load_state_dict(states.get("pnpnet", {}))
        model = cls(config, meta["image_shape"], meta["sinogram_shape"], meta["image_max"], pnpnet, cdpm,
                    sinogram_scale=meta.get("sinogram_scale", 1.0))
        model.history = meta.get("history", {})
        return model.to(device)

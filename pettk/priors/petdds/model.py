"""The PET-DDS prior (:class:`PETDDS`): an image diffusion model as the regulariser of an EM
reconstruction by decomposed diffusion sampling; loading and saving."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ..._validation import as_nonnegative_int, as_positive_int
from ...diffusion.axial import axial_penalised_em_step
from ...diffusion.guidance import CFGModel, null_like
from ...diffusion.image_model import _unet_from, build_schedule, load_image_diffusion
from ...diffusion.posterior import dds_sample
from ...diffusion.samplers import randn
from ...diffusion.schedules import NoiseSchedule
from ...io.checkpoint import load_checkpoint, save_checkpoint
from ...physics import ForwardModel
from ...recon import osem
from ...recon._common import SENSITIVITY_FLOOR
from ..base import ImagePrior, check_prior_inputs
from .config import PETDDSConfig
from .reference import _UNIT_NORMALISATIONS, activity_level, reference_statistics

__all__ = ["PETDDS"]


# --------------------------------------------------------------------------------------------
# The prior
# --------------------------------------------------------------------------------------------
class PETDDS(ImagePrior):
    """PET-DDS (Singh et al. 2024) with a pretrained image diffusion model.

    Parameters
    ----------
    net : UNet
        The image model (``model(x_t, t[, cond])`` predicting ``config["prediction"]``), never modified.
    schedule : NoiseSchedule
        Its noise schedule (must equal ``diffusion_config["schedule"]``'s).
    diffusion_config : dict
        The image model's configuration as written by ``pettk train diffusion``
        (:mod:`pettk.diffusion.image_model`): ``unet``, ``schedule``, ``prediction`` and ``data``
        (``normalisation``, ``cond_field``, ``root``).
    config : PETDDSConfig, optional
        Reconstruction settings. Missing ``reference_mean``, ``image_scale`` and ``image_size``
        are measured from ``dataset`` (or the image model's training data set,
        ``diffusion_config["data"]["root"]``, when it exists) with :func:`reference_statistics`.
    dataset : path or array, optional
        The training data set folder, or the normalised training images ``(N, H, W)``.

    Attributes
    ----------
    last_info : dict
        Of the last :meth:`reconstruct`: ``init`` (the initial OSEM image), ``scale`` (activity of
        a unit normalised value), ``scale_mode``, ``level`` (the init's :func:`activity_level`),
        ``beta_abs``, ``axial_beta_abs`` (0 unless a 3D model and ``axial_beta > 0``) and ``seeds``.
    """

    def __init__(self, net, schedule: NoiseSchedule, diffusion_config: dict, config: PETDDSConfig | None = None,
                 *, dataset=None):
        if not isinstance(net, torch.nn.Module):
            raise TypeError(f"net must be a torch module (a pettk UNet), got {type(net).__name__}")
        if not isinstance(schedule, NoiseSchedule):
            raise TypeError(f"schedule must be a NoiseSchedule, got {type(schedule).__name__}")
        if not isinstance(diffusion_config, dict) or not {"unet", "schedule", "prediction"} <= set(diffusion_config):
            raise ValueError("diffusion_config must be the image model's configuration dict (with 'unet', "
                             "'schedule', 'prediction' and 'data'), as written by `pettk train diffusion`")
        config = (config or PETDDSConfig())
        if not isinstance(config, PETDDSConfig):
            raise TypeError(f"config must be a PETDDSConfig, got {type(config).__name__}")
        config = config.validate()
        data = dict(diffusion_config.get("data") or {})
        self.normalisation = data.get("normalisation", "ddip")
        if self.normalisation not in _UNIT_NORMALISATIONS:
            raise ValueError(f"PET-DDS needs an image model on an activity-proportional scale (normalisation in "
                             f"{_UNIT_NORMALISATIONS}), got {self.normalisation!r}")
        self.prediction = diffusion_config["prediction"]
        if self.prediction not in ("eps", "x0", "v"):
            raise ValueError(f"prediction must be 'eps', 'x0' or 'v', got {self.prediction!r}")
        cond_field = data.get("cond_field")
        self.conditional = int(getattr(net, "cond_channels", 0) or 0) > 0
        if self.conditional and cond_field != "mr":
            raise ValueError(f"a conditional image model must be conditioned on the MR (cond_field='mr'), got "
                             f"cond_field={cond_field!r}")
        reference = build_schedule(diffusion_config["schedule"])
        if reference.num_steps != schedule.num_steps or not torch.allclose(
                reference.alphas_cumprod.cpu().double(), schedule.alphas_cumprod.cpu().double(), rtol=1e-5, atol=1e-7):
            raise ValueError("schedule does not match diffusion_config['schedule']")
        self.net = net.eval()
        for p in self.net.parameters():
            p.requires_grad_(False)
        self.schedule = schedule
        self.diffusion_config = json.loads(json.dumps(diffusion_config))
        # the training data's reference, when the configuration lacks it
        if config.reference_mean is None or config.image_size is None or (
                config.image_scale is None and self.normalisation == "ddip"):
            source = dataset
            root = data.get("root")
            if source is None and root and (Path(root) / "manifest.json").is_file():
                source = root
            if source is not None:
                stats = reference_statistics(source, self.normalisation, config.mask_threshold,
                                             data.get("split") or "train")
                changes = {k: stats[k] for k in ("reference_mean", "image_scale", "image_size")
                           if getattr(config, k) is None and stats[k] is not None}
                config = config.replace(**changes)
        if self.normalisation == "none" and config.image_scale is None:
            config = config.replace(image_scale=1.0)
        self.config = self._check_config(config)
        self.last_info: dict = {}

    def _check_config(self, config: PETDDSConfig) -> PETDDSConfig:
        if config.scale_mode == "counts" and config.reference_mean is None:
            raise ValueError("scale_mode='counts' needs config.reference_mean: give dataset= (the training data set "
                             "folder or images) or set reference_mean (see pettk.priors.petdds.reference_statistics)")
        if config.scale_mode == "fixed" and config.image_scale is None:
            raise ValueError("scale_mode='fixed' needs config.image_scale (the training data's activity of a unit "
                             "image): give dataset= or set image_scale")
        T = self.schedule.num_steps
        start = T - 1 if config.start_t is None else config.start_t
        if not start < T:
            raise ValueError(f"start_t must be < T = {T}, got {config.start_t}")
        if config.steps > start + 1:
            raise ValueError(f"steps must be <= start_t + 1 = {start + 1}, got {config.steps}")
        return config

    # -- construction / persistence ------------------------------------------------------------------
    @classmethod
    def from_image_diffusion(cls, path, config: PETDDSConfig | None = None, *, dataset=None,
                             device="cpu") -> PETDDS:
        """PET-DDS with the image model ``model.safetensors`` written by ``pettk train diffusion``."""
        net, schedule, diffusion_config = load_image_diffusion(path, device=device)
        return cls(net, schedule, diffusion_config, config, dataset=dataset)

    @classmethod
    def from_ddip(cls, ddip, config: PETDDSConfig | None = None, *, dataset=None) -> PETDDS:
        """PET-DDS on the pretrained network of a DDIP model (e.g. the shipped ``ddip-fdg-128``).

        An MR-conditioned DDIP network pretrained with MR dropout (``mr_dropout > 0``) is an image
        diffusion model with classifier-free MR guidance: PET-DDS samples with it, guided by
        ``config.guidance`` (Singh et al.'s MR-guided PET-DDS); an unconditional one is used as is.
        The network, noise schedule and prediction target are DDIP's; the network is shared, not
        copied. DDIP normalises every training slice to a fixed head mean, so the intensity
        reference (``reference_mean``: the median :func:`activity_level` of the normalised training
        images) is measured on ``dataset`` (the DDIP's training data set folder, normalised the DDIP
        way) unless ``config`` gives it.

        Raises ``ValueError`` for a 2.5D DDIP (PET-DDS denoises single slices), for an MR-conditioned
        network pretrained without MR dropout (it never learned the null condition, so it cannot be
        guided) and when neither ``config.reference_mean`` nor ``dataset`` is given.
        """
        from .on_ddip import ddip_image_model

        return cls(*ddip_image_model(ddip, config, dataset=dataset))

    def replace(self, **changes) -> PETDDS:
        """A PET-DDS sharing this network with some settings changed (e.g. ``prior.replace(samples=4)``)."""
        other = PETDDS.__new__(PETDDS)
        other.__dict__.update(self.__dict__)
        other.config = self._check_config(self.config.replace(**changes))
        other.last_info = {}
        return other

    def save(self, path) -> Path:
        """Write ``path`` (``.safetensors``: the network) and ``.json`` (both configurations)."""
        meta = {"method": "PET-DDS", "petdds_config": self.config.to_dict(),
                "diffusion_config": self.diffusion_config}
        return save_checkpoint(path, self.net.state_dict(), meta)

    @classmethod
    def load(cls, path, device="cpu") -> PETDDS:
        """Read a model written by :meth:`save`, or an image model written by ``pettk train diffusion``
        (then the reference statistics come from its training data set, which must exist)."""
        state, meta = load_checkpoint(path, device=device)
        if meta.get("kind") == "image-diffusion":
            return cls.from_image_diffusion(path, device=device)
        if meta.get("method") != "PET-DDS":
            raise ValueError(f"{path} is neither a PET-DDS checkpoint nor an image-diffusion model "
                             f"(method={meta.get('method')!r}, kind={meta.get('kind')!r})")
        diffusion_config = meta["diffusion_config"]
        net = _unet_from(diffusion_config).to(device)
        net.load_state_dict(state)
        config = PETDDSConfig.from_dict(meta["petdds_config"])
        return cls(net, build_schedule(diffusion_config["schedule"]), diffusion_config, config)

    # -- device ------------------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def to(self, device) -> PETDDS:
        self.net.to(device)
        return self

    # -- intensity scale ------------------------------------------------------------------------------------
    def estimate_scale(self, init) -> float:
        """Activity of one normalised unit for the initial image ``init`` (see the module docstring)."""
        cfg = self.config
        if cfg.scale_mode == "fixed":
            return float(cfg.image_scale)
        level = activity_level(init, cfg.mask_threshold)
        if not level > 0:
            raise ValueError("the initial image is zero: the counts are too few to estimate the activity scale; "
                             "use scale_mode='fixed' or pass init")
        return level / float(cfg.reference_mean)

    # -- input checks -----------------------------------------------------------------------------------------
    def _check_inputs(self, forward_model, y, mr, init):
        cfg = self.config
        y_t, images = check_prior_inputs(forward_model, y, {"mr": mr, "init": init},
                                         int(getattr(self.net, "downsample_factor", 1)))
        mr_t, init_t = images["mr"], images["init"]
        shape_in = tuple(forward_model.shape_in)
        if cfg.image_size is not None and tuple(shape_in[:2]) != tuple(cfg.image_size):
            raise ValueError(f"this PET-DDS image model was trained on {cfg.image_size[0]}x{cfg.image_size[1]} "
                             f"images but the forward model's grid is {shape_in[0]}x{shape_in[1]} in-plane; "
                             "reconstruct on the training grid or train a model for this one")
        if cfg.subsets > 1 or cfg.init_subsets > 1:
            proj = forward_model.projector
            axis = getattr(proj.geometry, "view_axis", None)
            views = int(proj.shape_out[axis]) if axis is not None else None
            if views is not None and max(cfg.subsets, cfg.init_subsets) > views:
                raise ValueError(f"subsets ({cfg.subsets}) and init_subsets ({cfg.init_subsets}) must not exceed the "
                                 f"{views} views of the forward model")
        if not float(y_t.sum()) > 0:
            raise ValueError("y holds no counts")
        if self.conditional and cfg.guidance > 0:
            if mr is None:
                raise ValueError("this PET-DDS image model is MR-conditioned: pass mr (the co-registered MR image, "
                                 f"shape {shape_in}) or use guidance=0 (unconditional)")
            if not float(mr_t.max()) > 0:
                raise ValueError("mr is zero everywhere")
        if init_t is not None and not float(init_t.max()) > 0:
            raise ValueError("init is zero everywhere")
        for name, t in (("mult", forward_model.mult), ("additive", forward_model.additive)):
            if t is not None and t.device != y_t.device:
                raise ValueError(f"forward_model's {name} is on {t.device}, y on {y_t.device}; "
                                 "use forward_model.to(...)")
        return y_t, mr_t, init_t

    # -- the guided network ---------------------------------------------------------------------------------
    def _denoiser(self, cond, chunk_size: int):
        net, w = self.net, float(self.config.guidance)
        channels = int(getattr(net, "in_channels", 1))

        def head(out):
            return out[:, :channels] if out.shape[1] != channels else out

        def call(x, t, c):
            if c is None:
                return head(net(x, t))
            if w >= 1.0:
                return head(CFGModel(lambda a, tt, cond: head(net(a, tt, cond)), c, lam=w - 1.0)(x, t))
            null = null_like(c)
            if w == 0.0:
                return head(net(x, t, null))
            both = head(net(torch.cat([x, x]), torch.cat([t, t]), torch.cat([c, null])))
            out_c, out_u = both[:x.shape[0]], both[x.shape[0]:]
            return out_u + w * (out_c - out_u)

        def denoiser(x, t):
            if x.shape[0] <= chunk_size:
                return call(x, t, cond)
            return torch.cat([call(x[k:k + chunk_size], t[k:k + chunk_size],
                                   None if cond is None else cond[k:k + chunk_size])
                              for k in range(0, x.shape[0], chunk_size)])

        return denoiser

    # -- reconstruction ----------------------------------------------------------------------------------------
    def reconstruct(self, forward_model: ForwardModel, y, *, mr=None, init=None, seed: int | None = None,
                    samples: int | None = None, progress: bool = False, callback=None, chunk_size: int = 64):
        """Reconstruct an activity image with PET-DDS.

        Parameters
        ----------
        forward_model : ForwardModel
            ``ybar = mult * P(psf(x)) + additive`` of the measured counts (all of it is used by the
            EM steps); 2D (``shape_in = (nx, ny)``, the model's image size) or 3D
            (``(nx, ny, nz)``: axial slices through the 2D prior, data consistency on the volume,
            with the axial coupling of ``config.axial_beta`` when it is > 0 and ``nz >= 2``).
        y : array or tensor ``forward_model.shape_out``
            Measured counts (>= 0, finite, not all zero).
        mr : array or tensor ``forward_model.shape_in``, optional
            The co-registered MR image (any scale; each slice is divided by its maximum). Required
            by an MR-conditioned model unless ``guidance = 0``; ignored by an unconditional one.
        init : array or tensor ``forward_model.shape_in``, optional
            The initial image (activity) for the scale estimate and an SDEdit start; default OSEM
            with ``config.init_iterations`` x ``config.init_subsets``.
        seed : int, optional
            Default ``config.seed``; sample ``k`` draws all its noise from ``seed + k``: the same
            seed gives the same image.
        samples : int, optional
            Runs averaged (default ``config.samples``).
        progress : bool
            A tqdm bar over the diffusion steps (of each sample).
        callback : callable ``(i, t, x0_hat, x0_dc)``, optional
            After every step of every sample, with Tweedie's estimate and its data-consistent
            update, both activity images of ``shape_in``.
        chunk_size : int
            Slices per network call (3D).

        Returns
        -------
        The activity image (>= 0), ``forward_model.shape_in``, float32 in ``y``'s array type
        (a torch result lives on ``y``'s device).
        """
        cfg = self.config
        y_t, mr_t, init_t = self._check_inputs(forward_model, y, mr, init)
        seed = cfg.seed if seed is None else as_nonnegative_int("seed", seed)
        samples = cfg.samples if samples is None else as_positive_int("samples", samples)
        chunk_size = as_positive_int("chunk_size", chunk_size)
        if callback is not None and not callable(callback):
            raise TypeError("callback must be callable")
        is_numpy = isinstance(y, np.ndarray)
        device = y_t.device
        if self.device != device:
            self.to(device)
        model = forward_model
        shape_in = tuple(model.shape_in)
        three_d = len(shape_in) == 3
        n_z = shape_in[2] if three_d else 1
        batch_shape = (n_z, 1) + shape_in[:2]

        # 1. initial image and scale -------------------------------------------------------------
        if init_t is None:
            init_t = osem(model, y_t, cfg.init_iterations, cfg.init_subsets).to(torch.float32)
        level = activity_level(init_t, cfg.mask_threshold)
        scale = self.estimate_scale(init_t)

        def to_volume(x):                    # (nz, 1, H, W) normalised -> activity shape_in
            v = x[:, 0] * scale
            return v.permute(1, 2, 0) if three_d else v[0]

        def to_batch(v):                     # activity shape_in -> (nz, 1, H, W) normalised
            b = v.permute(2, 0, 1) if three_d else v[None]
            return (b / scale)[:, None]

        cond = None
        if self.conditional:
            if mr_t is None or cfg.guidance == 0:      # the null condition only
                cond = torch.zeros(batch_shape, device=device)
            else:
                m = mr_t.permute(2, 0, 1) if three_d else mr_t[None]
                cond = (m / m.amax(dim=(1, 2), keepdim=True).clamp_min(1e-12))[:, None]

        # 2. the data-consistency step -----------------------------------------------------------
        sens = model.sensitivity(torch.float32, device)
        fov = sens > SENSITIVITY_FLOOR * float(sens.max())
        # a dimensionless weight w becomes w * mean_FOV(s) / scale (counts/activity^2)
        fov_sens = float(sens[fov].mean()) if bool(fov.any()) else 0.0
        beta_abs = float(cfg.beta) * fov_sens / scale
        # the axial coupling (3D only), dimensionless like beta
        axial_abs = float(cfg.axial_beta) * fov_sens / scale if three_d and n_z >= 2 else 0.0
        if cfg.subsets > 1:
            subs = model.subsets(cfg.subsets)
            parts = [(m, m.projector.select(y_t), m.sensitivity(torch.float32, device)) for m in subs]
        else:
            parts = [(model, y_t, sens)]
        n_parts = len(parts)
        abar = self.schedule.alphas_cumprod
        last = {}

        def beta_at(t):
            if cfg.beta_schedule == "constant":
                return beta_abs
            a = float(abar[t])
            return beta_abs * a / max(1.0 - a, 1e-12)

        def data_step(x0, t):
            anchor = to_volume(x0).clamp_min(0.0)
            a = anchor.clamp_min(1e-6 * float(anchor.max()) + 1e-12)   # EM is multiplicative: every voxel can grow
            b = beta_at(int(t)) / n_parts
            g = axial_abs / n_parts
            for _ in range(cfg.em_iterations):
                for sub, y_sub, s_sub in parts:
                    # g = 0 (2D, or axial_beta = 0) is penalised_em_step itself, bit for bit
                    a = axial_penalised_em_step(sub, y_sub, a, anchor, b, g, sens=s_sub)
            last["x0_hat"], last["x0_dc"] = anchor, a
            return to_batch(a)

        step_callback = None
        if callback is not None:
            def step_callback(i, t, x, x0_dc):
                callback(i, t, last["x0_hat"], last["x0_dc"])

        # 3. sampling ------------------------------------------------------------------------------
        denoiser = self._denoiser(cond, chunk_size)
        clip = None if cfg.clip_max is None else (0.0, float(cfg.clip_max))
        total = None
        for k in range(samples):
            g = torch.Generator(device=device).manual_seed(seed + k)
            x_T = None
            if cfg.start_t is not None:
                start = to_batch(init_t).clamp(0.0, cfg.clip_max if cfg.clip_max is not None else float("inf"))
                x_T = self.schedule.q_sample(start, cfg.start_t, randn(start.shape, g, start))
            out = dds_sample(denoiser, None, None, batch_shape, self.schedule, cfg.steps, n_em=1, eta=cfg.eta,
                             eta_form="ddip", prediction=self.prediction, generator=g, data_step=data_step,
                             x_T=x_T, t_start=cfg.start_t, clip=clip, dtype=torch.float32, device=device,
                             progress=progress, callback=step_callback)
            image = to_volume(out).clamp_min(0.0)
            total = image if total is None else total + image
        result = (total / samples).detach().to(torch.float32)
        self.last_info = {"init": init_t, "scale": scale, "scale_mode": cfg.scale_mode, "level": level,
                          "beta_abs": beta_abs, "axial_beta_abs": axial_abs, "seeds": list(range(seed, seed + samples))}
        return result.cpu().numpy() if is_numpy else result

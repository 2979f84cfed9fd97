"""The DDIP prior (:class:`DDIP`): SDEdit from an MLEM warm start, HQS with LoRA fine-tuning of the
pretrained network at every sampling step, save and load."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ...diffusion.nets import UNet, UNetConfig
from ...diffusion.nets.layers import AttentionBlock, ResBlock
from ...diffusion.nets.lora import LoRALayer, inject_lora, mark_only_lora_and_bias_trainable, reset_lora
from ...diffusion.posterior import penalised_em_step
from ...diffusion.samplers import ddim_step, model_predictions
from ...likelihood import poisson_deviance
from ...physics import ForwardModel
from ...recon import mlem
from ...recon._common import SENSITIVITY_FLOOR
from .._checkpoint import load_prior, save_prior
from ..base import ImagePrior, check_prior_inputs
from .config import DDIPConfig, _int
from .data import slab_indices

__all__ = ["DDIP"]


class _EpsHead(nn.Module):
    """The first ``channels`` outputs of a (learned-variance) U-Net: what the diffusion loss sees."""

    def __init__(self, net: UNet, channels: int):
        super().__init__()
        self.net = net
        self.channels = channels

    def forward(self, x, t, cond=None):
        out = self.net(x, t, cond)
        return out[:, :self.channels] if out.shape[1] != self.channels else out


class DDIP(ImagePrior):
    """A pretrained, MR-conditioned image diffusion model used as a DDIP reconstruction prior.

    Parameters
    ----------
    config : DDIPConfig
    net : UNet, optional
        The pretrained score network (a fresh, untrained one from ``config.net`` when omitted).
        It is never modified: reconstructions adapt a LoRA-wrapped working copy.

    Attributes
    ----------
    history : dict
        Pretraining loss curve (filled by :func:`train_ddip`).
    last_info : dict
        Details of the last :meth:`reconstruct` call: ``init`` (the start image, activity),
        ``scale`` (activity per unit normalised value, per slice), ``beta_abs`` (the HQS weight in
        counts/activity²), ``trainable`` (number of fine-tuned parameters), ``losses`` (the
        fine-tuning loss of every step).
    """

    def __init__(self, config: DDIPConfig | None = None, net: UNet | None = None):
        self.config = (config or DDIPConfig.TINY).validate()
        if net is None:
            net = self.config.net.build()
        if not isinstance(net, UNet):
            raise TypeError(f"net must be a pettk UNet, got {type(net).__name__}")
        if any(isinstance(m, LoRALayer) for m in net.modules()):
            raise ValueError("net already holds LoRA layers; give the plain pretrained network")
        for name in ("in_channels", "out_channels", "cond_channels"):
            if getattr(net, name) != getattr(self.config.net, name):
                raise ValueError(f"net.{name}={getattr(net, name)} does not match config.net.{name}="
                                 f"{getattr(self.config.net, name)}")
        self.net = net.eval()
        for p in self.net.parameters():
            p.requires_grad_(False)
        self.schedule = self.config.build_schedule()
        self.history: dict = {}
        self.last_info: dict = {}
        self._work = None  # (key, LoRA-wrapped copy, trainable parameters)

    # -- device --------------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def to(self, device) -> DDIP:
        self.net.to(device)
        self._work = None
        return self

    @classmethod
    def from_petdds(cls, petdds, config: DDIPConfig | None = None) -> DDIP:
        """DDIP on the unconditional image diffusion model of a PET-DDS prior (e.g. the shipped
        ``pet-dds``): one pretrained image prior, two ways of using it (the "unconditional DDIP").

        The network, its noise schedule and its prediction target are the PET-DDS model's; the
        intensity convention too: DDIP shows the prior images whose mean inside the object mask
        is ``target_mean``, set here to the PET-DDS model's ``reference_mean`` (the median of the
        same statistic over its training images, with the same ``mask_threshold``), so the
        network sees images on its training scale. Every other setting comes from ``config``
        (default :data:`DDIPConfig.TINY`'s reconstruction settings).
        """
        from ..petdds import PETDDS

        if not isinstance(petdds, PETDDS):
            raise TypeError(f"petdds must be a PETDDS prior, got {type(petdds).__name__}")
        if petdds.conditional:
            raise ValueError("DDIP.from_petdds takes an unconditional image model; an MR-conditioned DDIP is "
                             "pretrained by `pettk train ddip`")
        if petdds.config.image_size is None or petdds.config.reference_mean is None:
            raise ValueError("the PET-DDS prior lacks image_size / reference_mean (build it with its training data)")
        diffusion = petdds.diffusion_config
        unet = {k: tuple(v) if isinstance(v, list) else v for k, v in diffusion["unet"].items()}
        net_config = UNetConfig(**unet, image_size=tuple(petdds.config.image_size))
        config = (config or DDIPConfig.TINY).replace(
            net=net_config, schedule=diffusion["schedule"]["kind"], T=int(diffusion["schedule"]["T"]),
            prediction=diffusion["prediction"], target_mean=float(petdds.config.reference_mean),
            mask_threshold=float(petdds.config.mask_threshold), mr_dropout=0.0, mr_mismatch=0.0).validate()
        net = net_config.build()
        net.load_state_dict(petdds.net.state_dict())
        return cls(config, net.to(petdds.device).eval())

    def replace(self, **changes) -> DDIP:
        """A DDIP sharing this pretrained network with some reconstruction settings changed
        (e.g. ``ddip.replace(steps=50, beta=0.1)``); network fields cannot change."""
        config = self.config.replace(**changes).validate()
        fixed = ("net", "schedule", "T", "prediction", "target_mean", "mask_threshold", "mr_dropout", "mr_mismatch")
        for name in fixed:
            if getattr(config, name) != getattr(self.config, name):
                raise ValueError(f"{name} is fixed by the pretrained model and cannot be replaced")
        other = DDIP(config, self.net)
        other.history = self.history
        return other

    # -- the LoRA-wrapped working copy ------------------------------------------------------------------
    def _working_copy(self, generator: torch.Generator):
        cfg = self.config
        key = (cfg.lora_rank, cfg.lora_alpha, cfg.lora_dropout, cfg.train_biases, str(self.device))
        if self._work is None or self._work[0] != key:
            import copy

            work = copy.deepcopy(self.net)
            inject_lora(work, cfg.lora_rank, cfg.lora_alpha, targets=(ResBlock, AttentionBlock),
                        dropout=cfg.lora_dropout)
            trainable = mark_only_lora_and_bias_trainable(work, bias=cfg.train_biases)
            work.eval()
            self._work = (key, work, trainable)
        _, work, trainable = self._work
        reset_lora(work, generator)
        return work, trainable

    # -- input checks -------------------------------------------------------------------------------------
    def _check_inputs(self, forward_model, y, mr, init):
        y_t, images = check_prior_inputs(forward_model, y, {"mr": mr, "init": init}, self.net.downsample_factor)
        mr_t, init_t = images["mr"], images["init"]
        shape_in = tuple(forward_model.shape_in)
        if self.config.conditional and mr_t is None:
            raise ValueError("this DDIP model is MR-conditioned: pass mr (the co-registered MR image, shape "
                             f"{shape_in})")
        if mr_t is not None and not float(mr_t.max()) > 0:
            raise ValueError("mr is zero everywhere")
        return y_t, mr_t, init_t

    # -- reconstruction -----------------------------------------------------------------------------------
    def reconstruct(self, forward_model: ForwardModel, y, *, mr=None, init=None, adapt: bool = True,
                    seed: int | None = None, progress: bool = False, callback=None, chunk_size: int = 32):
        """Reconstruct an activity image with DDIP (METHODS §4.4).

        Parameters
        ----------
        forward_model : ForwardModel
            The measurement model ``ybar = mult · P(psf(x)) + additive`` (attenuation,
            normalisation, counts scale and background are all used in the EM steps); 2D
            (``shape_in = (nx, ny)``) or 3D (``(nx, ny, nz)``, processed slice by slice with one
            shared LoRA; slab ``z`` of a 2.5D network holds slices ``z-1, z, z+1``, edges
            replicated, so a 2D model gives it the slice three times). ``nx, ny`` must be
            divisible by the network's down-sampling factor.
        y : array or tensor ``forward_model.shape_out``
            Measured counts (>= 0, finite).
        mr : array or tensor ``forward_model.shape_in``, optional
            The co-registered MR image (>= 0, any scale; each slab is divided by its maximum).
            Required for an MR-conditioned model (ignored by an unconditional one).
        init : array or tensor ``forward_model.shape_in``, optional
            The start image (activity); default MLEM with ``config.init_iterations`` iterations
            from a uniform image.
        adapt : bool
            Fine-tune the LoRA adapters at every step (DDIP). ``False`` (or ``adapt_steps = 0``)
            runs the same conditional SDEdit sampling without adaptation (no data consistency
            apart from the start image).
        seed : int, optional
            Seeds the SDEdit noise, the η noise, the LoRA initialisation and the Monte-Carlo
            slice draws (default ``config.seed``): the same seed gives the same image.
        progress : bool
            A tqdm bar over the sampling steps.
        callback : callable ``(i, t, x0_activity)``, optional
            Called after every step with the current estimate (activity, ``shape_in``).
        chunk_size : int
            Slabs per network call when no gradient is needed (3D volumes).

        Returns
        -------
        The activity image, ``forward_model.shape_in``, in ``y``'s array type (float32; a torch
        result lives on ``y``'s device).

        Notes
        -----
        ``β`` is dimensionless: the penalised-EM step uses ``β_abs = beta · mean_FOV(A^T 1) / s``
        (counts/activity²), where ``s`` is the activity of one normalised unit. In normalised
        units the anchor's curvature relative to the likelihood's at a voxel of value ``u`` and
        mean sensitivity is then about ``beta · u``, independent of the count level and units.
        """
        cfg = self.config
        y_t, mr_t, init_t = self._check_inputs(forward_model, y, mr, init)
        if not isinstance(adapt, bool):
            raise TypeError(f"adapt must be a bool, got {adapt!r}")
        seed = cfg.seed if seed is None else _int("seed", seed, 0)
        chunk_size = _int("chunk_size", chunk_size, 1)
        if callback is not None and not callable(callback):
            raise TypeError("callback must be callable")
        is_numpy = isinstance(y, np.ndarray)
        device = y_t.device
        if self.device != device:
            self.to(device)
        model = forward_model
        if model.mult is not None and model.mult.device != device or (
                model.additive is not None and model.additive.device != device):
            raise ValueError(f"forward_model's sinograms are not on y's device {device}; use forward_model.to(...)")

        shape_in = tuple(model.shape_in)
        three_d = len(shape_in) == 3
        n_z = shape_in[2] if three_d else 1

        # 1. warm start and normalisation -------------------------------------------------------
        if init_t is None:
            init_t = mlem(model, y_t, cfg.init_iterations)
        init_t = init_t.to(torch.float32)
        vol = init_t.permute(2, 0, 1) if three_d else init_t[None]          # (nz, H, W)
        mr_vol = None
        if mr_t is not None:
            mr_vol = mr_t.permute(2, 0, 1) if three_d else mr_t[None]
        mask_mr = mr_vol if cfg.conditional and not cfg.mr_fallback and cfg.mr_guidance != 0 else None
        scale = cfg.intensity_scale(vol, mask_mr)                            # (nz,)
        idx = slab_indices(n_z, cfg.slices).to(device)                    # (nz, C)
        centre = cfg.slices // 2
        cond = None
        if cfg.conditional:
            cond = mr_vol[idx]
            cond = cond / cond.amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-12)

        def slabs(volume):                       # (nz, H, W) activity → (nz, C, H, W) normalised
            return volume[idx] / scale[:, None, None, None]

        def to_image(x0):                        # (nz, C, H, W) normalised → activity shape_in
            v = x0[:, centre] * scale[:, None, None]
            return v.permute(1, 2, 0) if three_d else v[0]

        sens = model.sensitivity(torch.float32, device)
        fov = sens > SENSITIVITY_FLOOR * float(sens.max())
        s_ref = float(scale.mean())
        beta_abs = float(cfg.beta) * float(sens[fov].mean()) / s_ref if bool(fov.any()) else 0.0

        gen = torch.Generator(device=device).manual_seed(seed)
        gen_cpu = torch.Generator().manual_seed(seed + 1)
        grid = self.schedule.timesteps(cfg.steps, cfg.start_t).tolist()
        x0_init = slabs(vol).clamp(0.0, 1.0)
        noise = torch.randn(x0_init.shape, generator=gen, device=device, dtype=x0_init.dtype)
        x = self.schedule.q_sample(x0_init, grid[0], noise)

        do_adapt = adapt and cfg.adapt_steps > 0
        net, trainable = self._working_copy(gen_cpu) if do_adapt else (self.net, [])
        losses: list[float] = []
        info = {"init": init_t, "scale": scale, "beta_abs": beta_abs,
                "trainable": sum(p.numel() for p in trainable), "losses": losses}

        guidance = cfg.mr_guidance

        def predict(xs, t, conds, grad=False):
            def call(a, c):
                tt = torch.full((a.shape[0],), int(t), dtype=torch.long, device=device)
                if c is None or guidance == 1.0:
                    out = net(a, tt, c)
                elif guidance == 0.0:
                    out = net(a, tt, torch.zeros_like(c))
                else:                            # classifier-free guidance between no MR and the MR
                    free = net(a, tt, torch.zeros_like(c))
                    out = free + guidance * (net(a, tt, c) - free)
                return out[:, :cfg.slices] if out.shape[1] != cfg.slices else out
            ctx = torch.enable_grad() if grad else torch.no_grad()
            with ctx:
                if grad or xs.shape[0] <= chunk_size:
                    return model_predictions(lambda a, _t: call(a, conds), xs, t, self.schedule, cfg.prediction)
                parts = [model_predictions(lambda a, _t, c=None if conds is None else conds[k:k + chunk_size]:
                                           call(a, c), xs[k:k + chunk_size], t, self.schedule, cfg.prediction)
                         for k in range(0, xs.shape[0], chunk_size)]
                return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])

        def penalised_em(anchor, iterations):   # from and anchored at anchor (activity >= 0, shape_in)
            a = anchor.clamp_min(1e-6 * float(anchor.max()) + 1e-12)
            for _ in range(iterations):
                a = penalised_em_step(model, y_t, a, anchor, beta_abs, sens=sens)
            return a

        def pem_target(x0_all):                  # penalised EM anchored at x̂₀ (activity), → (nz, C, H, W)
            a = penalised_em(to_image(x0_all.clamp(0.0, 1.0)), cfg.em_iterations)
            a_vol = a.permute(2, 0, 1) if three_d else a[None]
            return slabs(a_vol)

        def sinogram_loss(x0_sel, sel, x0_all):
            full = x0_all.detach().clone()
            full = torch.index_put(full, (sel,), x0_sel)
            act = to_image(full.clamp_min(0.0))
            ybar = model.forward(act)
            floor = max(1e-3 * float(y_t.mean()), 1e-8)
            yb = ybar.clamp_min(floor)
            dev = (yb - y_t - torch.xlogy(y_t, yb) + torch.xlogy(y_t, y_t.clamp_min(floor))).sum()
            return dev / y_t.sum().clamp_min(1.0)

        if cfg.mr_fallback and cond is not None and guidance != 0.0:
            guided, _ = predict(x, grid[0], cond)
            guidance = 0.0
            free, _ = predict(x, grid[0], cond)
            with torch.no_grad():
                fits = [float(poisson_deviance(y_t, model.forward(to_image(x0.clamp(0.0, 1.0)))))
                        for x0 in (guided, free)]
            guidance = cfg.mr_guidance if fits[0] <= fits[1] else 0.0
        info["mr_guidance"] = guidance if cond is not None else None

        try:
            for i, t in enumerate(tqdm(grid, desc="DDIP", disable=not progress, leave=False)):
                t_next = grid[i + 1] if i + 1 < len(grid) else -1
                if do_adapt:
                    opt = torch.optim.AdamW(trainable, lr=cfg.adapt_lr, weight_decay=cfg.adapt_weight_decay)
                    _lora_dropout(net, True)
                    for _ in range(cfg.adapt_steps):
                        if cfg.mc_slices >= n_z:
                            sel = torch.arange(n_z, device=device)
                        else:
                            sel = torch.randperm(n_z, generator=gen_cpu)[:cfg.mc_slices].to(device)
                        x0_sel, _ = predict(x[sel], t, None if cond is None else cond[sel], grad=True)
                        if sel.numel() == n_z:
                            x0_all = x0_sel.detach()
                        else:
                            x0_all, _ = predict(x, t, cond)
                            x0_all[sel] = x0_sel.detach()
                        if cfg.loss == "image":
                            with torch.no_grad():
                                target = pem_target(x0_all)[sel]
                            loss = torch.mean((x0_sel - target) ** 2)
                        else:
                            with torch.enable_grad():
                                loss = sinogram_loss(x0_sel, sel, x0_all)
                        opt.zero_grad(set_to_none=True)
                        loss.backward()
                        if cfg.adapt_grad_clip is not None:
                            torch.nn.utils.clip_grad_norm_(trainable, cfg.adapt_grad_clip)
                        opt.step()
                        losses.append(float(loss.detach()))
                    _lora_dropout(net, False)
                x0, eps = predict(x, t, cond)
                x0 = x0.clamp(0.0, 1.0)
                x = ddim_step(self.schedule, t, t_next, x0, eps, cfg.eta, generator=gen, eta_form="ddip")
                if callback is not None:
                    callback(i, t, to_image(x0))
            result = to_image(x0).detach()               # x0 is clamped to [0, 1]: result >= 0
            if cfg.final_em_iterations:                  # the data decide what the last estimate lost
                result = penalised_em(result, cfg.final_em_iterations)
        finally:
            if do_adapt:
                _lora_dropout(net, False)
                reset_lora(net, gen_cpu)   # leave the working copy equal to the pretrained network
        self.last_info = info
        return result.cpu().numpy() if is_numpy else result

    # -- persistence ---------------------------------------------------------------------------------------
    def save(self, path) -> Path:
        """Write ``path`` (``.safetensors``: the pretrained network) and its JSON configuration."""
        return save_prior(path, "DDIP", self.net.state_dict(), {"ddip_config": self.config.to_dict(),
                                                                "history": self.history})

    @classmethod
    def load(cls, path, device="cpu") -> DDIP:
        """Read a model written by :meth:`save`."""
        state, meta = load_prior(path, "DDIP", device=device)
        config = DDIPConfig.from_dict(meta["ddip_config"])
        net = config.net.build()
        net.load_state_dict(state)
        model = cls(config, net.to(device))
        model.history = meta.get("history", {})
        return model


def _lora_dropout(net: nn.Module, active: bool) -> None:
    """Switch the LoRA-path dropout on during fine-tuning only (the base network stays in eval mode)."""
    for m in net.modules():
        if isinstance(m, LoRALayer):
            m.dropout.train(active)

"""The trained DREAM restorer (:class:`DREAM`): the latent prior, the restoration of low-dose
sinograms with the mask-aware average, save and load."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ...physics import ForwardModel
from .._checkpoint import load_networks, save_networks
from ..base import SinogramRestorer, check_low_dose_counts, reconstruct
from .config import DREAMConfig, _check_weights, _positive_int
from .masks import (
    _generator,
    block_masks,
    crop_plane,
    make_block,
    mask_aware_average,
    normalise_dream,
    pad_plane,
    plane_shape,
)
from .networks import _build_nets, latent_reverse, latent_schedule

__all__ = ["DREAM"]


class DREAM(SinogramRestorer):
    """A trained DREAM restorer (CPEN-S2 + latent denoiser + ``G``) for one dose-reduction factor.

    Parameters
    ----------
    config : DREAMConfig
    sinogram_shape : (n_views, n_radial)
        The sinogram size it was trained on (inputs must match); the network plane is
        ``plane_shape(sinogram_shape, config.pad_mode)``.
    nets : nn.ModuleDict, optional
        ``restorer`` and (with ``config.prior``) ``cpen_s2``, ``denoiser`` and the stage-1 teacher
        ``cpen_s1`` (kept for analysis); fresh networks when omitted.
    """

    def __init__(self, config: DREAMConfig, sinogram_shape, nets: nn.ModuleDict | None = None):
        self.config = config.validate()
        shape = tuple(int(s) for s in sinogram_shape)
        if len(shape) != 2 or min(shape) < 1:
            raise ValueError(f"sinogram_shape must be (n_views, n_radial), got {sinogram_shape!r}")
        self.sinogram_shape = shape
        self.plane = plane_shape(shape, config.pad_mode)
        self.drf = float(config.drf)
        self.schedule = latent_schedule(config.net.latent_timesteps, config.latent_beta_start,
                                        config.latent_beta_end)
        nets = nets if nets is not None else _build_nets(config)
        needed = {"restorer", "cpen_s2", "denoiser"} if config.prior else {"restorer"}
        if not isinstance(nets, nn.ModuleDict) or not needed <= set(nets.keys()):
            raise ValueError(f"nets must be an nn.ModuleDict with keys {sorted(needed)}")
        self.nets = nets.eval()
        for p in self.nets.parameters():
            p.requires_grad_(False)
        self.history: dict = {}

    # -- device ------------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.nets.parameters()).device

    def to(self, device) -> DREAM:
        self.nets.to(device)
        return self

    def parameter_counts(self) -> dict:
        """Parameters per network (``cpen_s1``, ``cpen_s2``, ``restorer``, ``denoiser`` as present)."""
        return {k: sum(p.numel() for p in m.parameters()) for k, m in self.nets.items()}

    # -- the networks on blocks ------------------------------------------------------------------------
    @torch.no_grad()
    def prior(self, block: torch.Tensor, *, generator=None, z_T: torch.Tensor | None = None) -> torch.Tensor:
        """The student prior ``ẑ (B, prior_dim)`` of a low-dose block ``(B, N, P_h, P_w)``.

        CPEN-S2 gives the condition; the 4-step deterministic latent chain starts at ``z_T``
        (default ``N(0, I)`` drawn from ``generator``).
        """
        if not self.config.prior:
            raise ValueError("this DREAM model was trained without a prior (config.prior=False)")
        if z_T is None:
            z_T = torch.randn((block.shape[0], self.config.net.prior_dim), generator=generator)
        z_T = z_T.to(block.device, block.dtype)
        return latent_reverse(self.nets["denoiser"], z_T, self.nets["cpen_s2"](block), self.schedule)

    @torch.no_grad()
    def restore_block(self, block: torch.Tensor, *, use_prior: bool = True, generator=None) -> torch.Tensor:
        """Run S2 on a normalised low-dose block ``(B, N, P_h, P_w)`` → restored block (same shape).

        ``use_prior=False`` feeds ``z = 0`` to ``G`` (the "no prior" ablation at test time).
        """
        restorer = self.nets["restorer"]
        if not self.config.prior:
            return restorer(block, None)
        if use_prior:
            z = self.prior(block, generator=generator)
        else:
            z = torch.zeros(block.shape[0], self.config.net.prior_dim, device=block.device, dtype=block.dtype)
        return restorer(block, z)

    # -- the SinogramRestorer interface ----------------------------------------------------------------
    def _check(self, y_low, drf) -> torch.Tensor:
        return check_low_dose_counts(y_low, drf, self.drf, self.sinogram_shape, "DREAM")

    @torch.no_grad()
    def restore(self, y_low, drf: float, *, n_draws: int | None = None, use_prior: bool = True,
                weights=None, rescale_counts: bool | None = None, seed: int | None = 0, generator=None,
                chunk_size: int = 16, progress: bool = False):
        """Estimate the full-dose sinogram from raw low-dose counts.

        Parameters
        ----------
        y_low : array or tensor ``(..., n_views, n_radial)``
            Raw low-dose counts (>= 0, finite), any leading batch dimensions.
        drf : float
            The dose-reduction factor of ``y_low``; must equal the model's.
        n_draws : int, optional
            ``K`` independent mask (and latent-noise) draws averaged together (default
            ``config.n_draws``, 1).
        use_prior : bool
            ``False`` feeds ``z = 0`` to ``G`` (test-time "no prior" ablation).
        weights : sequence of N numbers, optional
            Channel weights of the mask-aware average (default ``config.channel_weights``, equal).
        rescale_counts : bool, optional
            Rescale each slice to the total counts of ``DRF·y_low`` (default ``config.rescale_counts``).
        seed, generator : the masks and latent noise come from ``generator`` (a CPU
            ``torch.Generator``) or a fresh one seeded with ``seed`` (default 0: deterministic).
        chunk_size : int
            Slices per network call.
        progress : bool

        Returns
        -------
        ``y_hat`` with ``y_low``'s shape, device and array type; floating dtypes are kept
        (integers give float32). Full-dose counts scale, >= 0.
        """
        y = self._check(y_low, drf)
        k_draws = _positive_int("n_draws", self.config.n_draws if n_draws is None else n_draws)
        weights = self.config.channel_weights if weights is None else weights
        if weights is not None:
            _check_weights(weights, self.config.n_channels)
        rescale = self.config.rescale_counts if rescale_counts is None else bool(rescale_counts)
        chunk = _positive_int("chunk_size", chunk_size)
        gen = _generator(generator, seed)
        is_numpy = isinstance(y_low, np.ndarray)
        out_dtype = y.dtype if y.is_floating_point() else torch.float32
        if self.device != y.device:
            self.to(y.device)
        flat = y.reshape(-1, *self.sinogram_shape).to(torch.float32) * self.drf
        n = self.config.n_channels
        outs = []
        starts = range(0, flat.shape[0], chunk)
        for start in tqdm(starts, desc="DREAM", disable=not progress, leave=False):
            part = flat[start:start + chunk]
            s, v = normalise_dream(part)
            s = pad_plane(s, self.plane)
            restored, masks = [], []
            for _ in range(k_draws):
                m = block_masks(s.shape[0], n, self.plane, self.config.cell_size, self.config.mask_fraction,
                                generator=gen, device=s.device)
                restored.append(self.restore_block(make_block(s, m), use_prior=use_prior, generator=gen))
                masks.append(m)
            avg = mask_aware_average(torch.cat(restored, 1), torch.cat(masks, 1), weights)
            y_hat = (crop_plane(avg, self.sinogram_shape) * v).clamp_min(0)
            if rescale:
                total = y_hat.sum(dim=(-2, -1), keepdim=True)
                y_hat = torch.where(total > 0, y_hat * part.sum(dim=(-2, -1), keepdim=True) / total.clamp_min(1e-30),
                                    y_hat)
            outs.append(y_hat)
        result = (torch.cat(outs) if outs else flat).reshape(y.shape).to(out_dtype)
        return result.cpu().numpy() if is_numpy else result

    def restore_and_reconstruct(self, y_low, drf: float, model: ForwardModel, method: str = "mlem",
                                n_iter: int = 50, n_subsets: int = 8, **restore_kwargs):
        """Restore one slice, then reconstruct it with the physics ``model`` (MLEM, 50 iterations by default).

        Returns ``(y_hat, image)`` in ``y_low``'s array type; see :meth:`restore` and
        :func:`pettk.priors.reconstruct`.
        """
        y_hat = self.restore(y_low, drf, **restore_kwargs)
        return y_hat, reconstruct(model, y_hat, method, n_iter, n_subsets)

    # -- persistence -----------------------------------------------------------------------------------
    def save(self, path) -> Path:
        """Write ``path`` (``.safetensors``: ``<network>.<param>`` weights) and its JSON config."""
        meta = {"dream_config": self.config.to_dict(), "sinogram_shape": list(self.sinogram_shape),
                "networks": sorted(self.nets.keys()), "history": self.history}
        return save_networks(path, "DREAM", dict(self.nets.items()), meta)

    @classmethod
    def load(cls, path, device="cpu") -> DREAM:
        """Read a model written by :meth:`save`."""
        states, meta = load_networks(path, "DREAM", device=device)
        config = DREAMConfig.from_dict(meta["dream_config"])
        full = _build_nets(config)
        nets = nn.ModuleDict({name: full[name] for name in meta["networks"]})
        for name, net in nets.items():
            net.load_state_dict(states.get(name, {}))
        model = cls(config, meta["sinogram_shape"], nets)
        model.history = meta.get("history", {})
        return model.to(device)

"""The trained RED restorer (:class:`RED`): sampling, the restoration of low-dose sinograms, save
and load."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ...diffusion.nets import ConvNeXtUNet
from .._checkpoint import load_networks, save_networks
from ..base import SinogramRestorer, check_low_dose_counts
from .config import REDConfig
from .losses import denormalise_red, normalise_red
from .process import ResidualSchedule, apply_net, red_sample

__all__ = ["RED"]


# --------------------------------------------------------------------------------------------
# The restorer
# --------------------------------------------------------------------------------------------
class RED(SinogramRestorer):
    """A trained RED restorer (REN + DCN) for one dose-reduction factor.

    Parameters
    ----------
    config : REDConfig
    sinogram_shape : (n_views, n_radial)
        The sinogram size it was trained on (inputs must match).
    ren, dcn : ConvNeXtUNet, optional
        Trained networks (fresh ones from ``config.net`` when omitted; ``dcn=None`` with
        ``config.dcn_steps == 0`` means no drift correction).
    """

    def __init__(self, config: REDConfig, sinogram_shape, ren: ConvNeXtUNet | None = None,
                 dcn: ConvNeXtUNet | None = None):
        self.config = config.validate()
        shape = tuple(int(s) for s in sinogram_shape)
        if len(shape) != 2 or min(shape) < 1:
            raise ValueError(f"sinogram_shape must be (n_views, n_radial), got {sinogram_shape!r}")
        self.sinogram_shape = shape
        self.drf = float(config.drf)
        self.schedule = ResidualSchedule(config.T)
        self.ren = (ren if ren is not None else config.net.build()).eval()
        if dcn is None and config.dcn_steps > 0:
            dcn = config.net.build()
        self.dcn = dcn.eval() if dcn is not None else None
        self.history: dict = {}

    # -- device ------------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.ren.parameters()).device

    def to(self, device) -> RED:
        self.ren.to(device)
        if self.dcn is not None:
            self.dcn.to(device)
        return self

    # -- process in the normalised domain ------------------------------------------------------------
    def sample(self, x_T: torch.Tensor, steps: int | None = None, use_dcn: bool = True,
               progress: bool = False) -> torch.Tensor:
        """Reverse process on normalised sinograms ``x_T (B, H, W)`` (float32, model's device) → ``x_0``."""
        steps = self.config.sampling_steps if steps is None else steps
        dcn = self.dcn if use_dcn else None
        return red_sample(lambda x, k: apply_net(self.ren, x, k),
                          None if dcn is None else (lambda x, k: apply_net(dcn, x, k)),
                          x_T, self.schedule, steps, progress=progress)

    # -- the SinogramRestorer interface ----------------------------------------------------------------
    def _check(self, y_low, drf) -> torch.Tensor:
        return check_low_dose_counts(y_low, drf, self.drf, self.sinogram_shape, "RED")

    @torch.no_grad()
    def restore(self, y_low, drf: float, *, use_dcn: bool = True, steps: int | None = None,
                chunk_size: int = 16, progress: bool = False):
        """Estimate the full-dose sinogram from raw low-dose counts.

        Parameters
        ----------
        y_low : array or tensor ``(..., n_views, n_radial)``
            Raw low-dose counts (>= 0, finite), any leading batch dimensions.
        drf : float
            The dose-reduction factor of ``y_low``; must equal the model's.
        use_dcn : bool
            Apply the drift correction (default, as in the paper).
        steps : int, optional
            Reverse steps ``S`` (default ``config.sampling_steps``).
        chunk_size : int
            Slices per network call.

        Returns
        -------
        ``y_hat`` with ``y_low``'s shape, device and array type; floating dtypes are kept
        (integers give float32). Full-dose counts scale, >= 0.
        """
        y = self._check(y_low, drf)
        is_numpy = isinstance(y_low, np.ndarray)
        out_dtype = y.dtype if y.is_floating_point() else torch.float32
        if self.device != y.device:
            self.to(y.device)
        flat = y.reshape(-1, *self.sinogram_shape).to(torch.float32) * self.drf
        outs = []
        for start in range(0, flat.shape[0], max(1, int(chunk_size))):
            x_T, v = normalise_red(flat[start:start + chunk_size])
            x0 = self.sample(x_T, steps, use_dcn, progress)
            outs.append(denormalise_red(x0, v))
        result = (torch.cat(outs) if outs else flat).reshape(y.shape).to(out_dtype)
        return result.cpu().numpy() if is_numpy else result

    # -- persistence -----------------------------------------------------------------------------------
    def save(self, path) -> Path:
        """Write ``path`` (``.safetensors``: ``ren.*`` and ``dcn.*`` weights) and its JSON config."""
        meta = {"red_config": self.config.to_dict(), "sinogram_shape": list(self.sinogram_shape),
                "has_dcn": self.dcn is not None, "history": self.history}
        return save_networks(path, "RED", {"ren": self.ren, "dcn": self.dcn}, meta)

    @classmethod
    def load(cls, path, device="cpu") -> RED:
        """Read a model written by :meth:`save`."""
        states, meta = load_networks(path, "RED", device=device)
        config = REDConfig.from_dict(meta["red_config"])
        ren = config.net.build()
        ren.load_state_dict(states.get("ren", {}))
        dcn = None
        if meta.get("has_dcn"):
            dcn = config.net.build()
            dcn.load_state_dict(states.get("dcn", {}))
        model = cls(config.replace(dcn_steps=config.dcn_steps if dcn is not None else 0), meta["sinogram_shape"],
                    ren, dcn)
        model.history = meta.get("history", {})
        return model.to(device)

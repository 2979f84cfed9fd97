"""Checks of what a user hands :class:`~pettk.priors.legopet.LegoPET`: counts and per-sample
precorrection factors."""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["as_counts", "precorrection_factors"]


def as_counts(name: str, y) -> tuple[torch.Tensor, bool]:
    """``y`` (numpy or torch, real, finite, >= 0) as a tensor, and whether it came as numpy."""
    if not isinstance(y, (np.ndarray, torch.Tensor)):
        raise TypeError(f"{name} must be a numpy array or a torch tensor of counts, got {type(y).__name__}")
    t = torch.from_numpy(np.ascontiguousarray(y)) if isinstance(y, np.ndarray) else y.detach()
    if t.dtype == torch.bool or t.is_complex():
        raise TypeError(f"{name} must hold real counts, got dtype {t.dtype}")
    if t.is_floating_point() and not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains non-finite values (NaN or inf)")
    if t.numel() and bool((t < 0).any()):
        raise ValueError(f"{name} must be non-negative, got a minimum of {float(t.min()):g}")
    return t, isinstance(y, np.ndarray)


def precorrection_factors(precorrection, y: torch.Tensor, sinogram_input: str, dc_iterations: int):
    """Per-sample precorrection factors ``(mult, additive)`` (:meth:`LegoPET.reconstruct`) checked
    against the counts ``y`` ``(..., n_views, n_radial)`` and flattened like them to ``(B, n_views,
    n_radial)`` (each ``None`` kept); ``None`` when none are given."""
    if precorrection is None:
        return None
    if sinogram_input != "precorrected":
        raise ValueError("precorrection is for a prior with sinogram_input='precorrected'; this one takes "
                         f"{sinogram_input!r}")
    if not isinstance(precorrection, (tuple, list)) or len(precorrection) != 2:
        raise TypeError("precorrection must be a pair (mult, additive), got "
                        f"{type(precorrection).__name__}")
    if dc_iterations > 0:
        raise ValueError("per-sample precorrection factors describe the precorrection only; data consistency "
                         "(dc_iterations > 0) needs a forward model of each sample: pass dc_iterations=0")
    flat = []
    for name, factor in zip(("mult", "additive"), precorrection):
        if factor is None:
            flat.append(None)
            continue
        f = torch.as_tensor(factor).to(device=y.device, dtype=torch.float32)
        try:
            f = f.expand(y.shape)
        except RuntimeError:
            raise ValueError(f"precorrection {name} of shape {tuple(f.shape)} does not broadcast to y's "
                             f"shape {tuple(y.shape)}") from None
        if not bool(torch.isfinite(f).all()) or (name == "mult" and bool((f < 0).any())):
            raise ValueError(f"precorrection {name} must be finite" + (" and >= 0" if name == "mult" else ""))
        flat.append(f.reshape((-1,) + tuple(y.shape[-2:])))
    return tuple(flat)

"""DREAM's random block masks and blocks, the mask-aware average, the crop-size curriculum, and
the network plane (padding, cropping, normalisation)."""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch
import torch.nn.functional as F

from .config import DREAM_SCALE_FLOOR, PLANE_MULTIPLE, _positive_int

__all__ = ["random_block_masks", "block_masks", "make_block", "mask_aware_average", "curriculum_stage", "random_crop",
           "plane_shape", "pad_plane", "crop_plane", "normalise_dream"]


def _generator(generator, seed):
    if generator is not None:
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        return generator
    if seed is None:
        return None
    return torch.Generator().manual_seed(int(seed))


def random_block_masks(n: int, shape, cell_size: int, fraction: float = 0.1, *, generator=None, seed=None,
                       device=None, dtype=torch.float32) -> torch.Tensor:
    """Draw ``n`` independent random block masks.

    The plane ``shape = (H, W)`` is cut into a grid of ``cell_size × cell_size`` cells anchored at
    ``(0, 0)`` (the last row/column of cells is cut short when ``cell_size`` does not divide the
    plane); ``round(n_cells · fraction)`` cells are drawn uniformly *with replacement* and set to 0,
    so at most that many distinct cells (≤ ``fraction`` of the cells) are hidden.

    Parameters
    ----------
    n : int
        Number of masks.
    shape : (int, int)
    cell_size : int
        Cell side in pixels.
    fraction : float in [0, 1]
        ``1 -`` the white rate (0.1).
    generator : torch.Generator, optional
        CPU generator for the draws (else ``seed``, else torch's global one).
    device, dtype : where and how to return the masks.

    Returns
    -------
    masks : tensor ``(n, H, W)``: 1 where visible, 0 in the hidden cells.
    """
    n = _positive_int("n", n, minimum=0)
    if len(tuple(shape)) != 2:
        raise ValueError(f"shape must be (H, W), got {shape!r}")
    h, w = (_positive_int("shape entries", s) for s in shape)
    c = _positive_int("cell_size", cell_size)
    if not 0.0 <= float(fraction) <= 1.0:
        raise ValueError(f"fraction must lie in [0, 1], got {fraction!r}")
    gen = _generator(generator, seed)
    gh, gw = -(-h // c), -(-w // c)
    n_cells = gh * gw
    draws = int(math.floor(n_cells * float(fraction) + 0.5))
    grid = torch.ones(n, n_cells, dtype=dtype)
    if draws and n:
        idx = torch.randint(0, n_cells, (n, draws), generator=gen)
        grid.scatter_(1, idx, 0.0)
    masks = grid.reshape(n, gh, gw).repeat_interleave(c, 1).repeat_interleave(c, 2)[:, :h, :w]
    return masks.contiguous().to(device)


def block_masks(batch: int, n_channels: int, shape, cell_size: int, fraction: float = 0.1, *, generator=None,
                seed=None, device=None, dtype=torch.float32) -> torch.Tensor:
    """The masks of a block: ``(batch, N, H, W)``, channels ``0..N-2`` random, channel ``N-1`` all ones."""
    n = _positive_int("n_channels", n_channels)
    batch = _positive_int("batch", batch, minimum=0)
    masks = random_block_masks(batch * (n - 1), shape, cell_size, fraction, generator=generator, seed=seed,
                               dtype=dtype)
    h, w = masks.shape[-2:]
    out = torch.cat([masks.reshape(batch, n - 1, h, w), torch.ones(batch, 1, h, w, dtype=dtype)], dim=1)
    return out.to(device)


def make_block(s: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """The stacked block ``[m₁⊙s, …, m_{N-1}⊙s, s]``: ``s (B, H, W)``, ``masks (B, N, H, W)`` → ``(B, N, H, W)``.

    Use the same ``masks`` for the low- and the full-dose sinogram.
    """
    if s.ndim != 3 or masks.ndim != 4 or masks.shape[0] != s.shape[0] or masks.shape[-2:] != s.shape[-2:]:
        raise ValueError(f"s must be (B, H, W) and masks (B, N, H, W) with the same B, H, W; got "
                         f"{tuple(s.shape)} and {tuple(masks.shape)}")
    return masks.to(s.dtype) * s.unsqueeze(1)


def mask_aware_average(outputs: torch.Tensor, masks: torch.Tensor, weights=None) -> torch.Tensor:
    """Mask-aware weighted mean of restored channels (METHODS §2.6 step 4).

    ``ŝ(p) = Σ_k w_k m_k(p) ŝ_k(p) / Σ_k w_k m_k(p)``: a channel counts only where its mask let
    the pixel through (masked channels are trained to output zeros in their holes). Several mask
    draws are averaged by concatenating their channels (``K·N`` of them) with weights tiled.

    Parameters
    ----------
    outputs, masks : tensors ``(B, C, H, W)``
        Restored channels and the masks they were made with (the unmasked channel's mask is 1).
    weights : sequence of ``C`` (or of ``N`` dividing ``C``, tiled) non-negative numbers, optional
        Equal by default. Every pixel must be seen by a channel of positive weight.

    Returns
    -------
    tensor ``(B, H, W)``
    """
    if outputs.shape != masks.shape or outputs.ndim != 4:
        raise ValueError(f"outputs and masks must both be (B, C, H, W), got {tuple(outputs.shape)} and "
                         f"{tuple(masks.shape)}")
    c = outputs.shape[1]
    m = masks.to(outputs.dtype)
    if weights is not None:
        w = torch.as_tensor([float(v) for v in weights], dtype=outputs.dtype, device=outputs.device)
        if w.numel() == 0 or c % w.numel():
            raise ValueError(f"weights must have {c} entries (or a divisor of {c}, tiled), got {w.numel()}")
        if bool((w < 0).any()) or not bool(torch.isfinite(w).all()):
            raise ValueError("weights must be finite and >= 0")
        m = m * w.repeat(c // w.numel()).reshape(1, c, 1, 1)
    den = m.sum(dim=1)
    if bool((den <= 0).any()):
        raise ValueError("some pixels are hidden from every channel of positive weight")
    return (m * outputs).sum(dim=1) / den


def curriculum_stage(step: int, total: int, crop_sizes, batch_sizes, fractions) -> tuple[int, int]:
    """``(crop, batch)`` of the curriculum stage containing ``step`` (0-based) of ``total`` steps."""
    bounds = np.cumsum([float(f) for f in fractions]) * total
    for crop, batch, bound in zip(crop_sizes, batch_sizes, bounds):
        if step < bound - 1e-9:
            return int(crop), int(batch)
    return int(crop_sizes[-1]), int(batch_sizes[-1])


def random_crop(tensors, size, generator=None):
    """Crop every tensor ``(B, C, H, W)`` in ``tensors`` at the same per-sample random offsets.

    ``size`` is an int or ``(h, w)``, clamped to ``(H, W)``. Returns a list of ``(B, C, h, w)``.
    """
    first = tensors[0]
    b, _, h, w = first.shape
    ch, cw = (size, size) if isinstance(size, numbers.Integral) else size
    ch, cw = min(int(ch), h), min(int(cw), w)
    if (ch, cw) == (h, w):
        return list(tensors)
    top = torch.randint(0, h - ch + 1, (b,), generator=generator).tolist()
    left = torch.randint(0, w - cw + 1, (b,), generator=generator).tolist()
    return [torch.stack([t[i, :, y:y + ch, x:x + cw] for i, (y, x) in enumerate(zip(top, left))])
            for t in tensors]


def plane_shape(shape, pad_mode: str = "square", multiple: int = PLANE_MULTIPLE) -> tuple[int, int]:
    """The network plane for a ``(n_views, n_radial)`` sinogram.

    ``"square"``: both sides equal the longer one rounded up to ``multiple`` (the shorter axis is
    padded, as 256×192 → 256×256 in the paper). ``"multiple"``: each side rounded up on its own.
    """
    h, w = (int(s) for s in shape)
    up = lambda v: -(-v // multiple) * multiple  # noqa: E731
    if pad_mode == "square":
        side = up(max(h, w))
        return side, side
    if pad_mode == "multiple":
        return up(h), up(w)
    raise ValueError(f"pad_mode must be 'square' or 'multiple', got {pad_mode!r}")


def _pads(size: int, target: int) -> tuple[int, int]:
    extra = target - size
    return extra // 2, extra - extra // 2


def pad_plane(x: torch.Tensor, plane) -> torch.Tensor:
    """Zero-pad the last two axes of ``x`` symmetrically to ``plane = (P_h, P_w)``."""
    (t, b), (left, r) = _pads(x.shape[-2], plane[0]), _pads(x.shape[-1], plane[1])
    if min(t, b, left, r) < 0:
        raise ValueError(f"cannot pad {tuple(x.shape[-2:])} to the smaller plane {tuple(plane)}")
    return F.pad(x, (left, r, t, b))


def crop_plane(x: torch.Tensor, shape) -> torch.Tensor:
    """Inverse of :func:`pad_plane`: the centre ``shape = (H, W)`` of the last two axes."""
    t, _ = _pads(int(shape[0]), x.shape[-2])
    left, _ = _pads(int(shape[1]), x.shape[-1])
    return x[..., t:t + int(shape[0]), left:left + int(shape[1])]


def normalise_dream(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``y (B, H, W)`` (= DRF·y_low, counts) → ``(y / v, v (B, 1, 1))`` with ``v = max(y)`` (floored at 1e-12)."""
    v = y.amax(dim=(-2, -1), keepdim=True).clamp_min(DREAM_SCALE_FLOOR)
    return y / v, v

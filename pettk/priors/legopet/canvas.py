"""LegoPET's intensity normalisation and its square canvas: images padded with -1 and cropped
back, sinograms fitted axis by axis ("pad or resize"); the network's two sinogram inputs
(prompts over their own maximum, or the precorrected sinogram over a data-set constant)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..base import precorrect_sinogram

__all__ = ["normalise_image", "denormalise_image", "normalise_sinogram", "precorrect_sinogram", "fit_sinogram",
           "pad_image", "crop_image", "count_parameters"]

_SINO_FLOOR = 1e-12


def normalise_image(activity: torch.Tensor, image_max: float) -> torch.Tensor:
    """Activity → [-1, 1]: ``2 a / image_max - 1`` (SliceDataset's ``"legopet"`` images)."""
    return 2.0 * activity / float(image_max) - 1.0


def denormalise_image(x: torch.Tensor, image_max: float) -> torch.Tensor:
    """Inverse of :func:`normalise_image`, negatives clipped at 0."""
    return ((x + 1.0) * 0.5 * float(image_max)).clamp_min(0.0)


def normalise_sinogram(y: torch.Tensor) -> torch.Tensor:
    """Each sinogram ``(..., n_views, n_radial)`` divided by its own maximum (floored at 1e-12)."""
    peak = y.amax(dim=(-2, -1), keepdim=True).clamp_min(_SINO_FLOOR)
    return y / peak


def _offsets(size: int, canvas: int) -> tuple[int, int]:
    extra = canvas - size
    return extra // 2, extra - extra // 2


def _canvas(canvas) -> tuple[int, int]:
    try:
        h, w = (int(c) for c in canvas)
    except (TypeError, ValueError):
        raise TypeError(f"canvas must be a pair of positive ints (H, W), got {canvas!r}") from None
    if h < 1 or w < 1:
        raise ValueError(f"canvas must be a pair of positive ints (H, W), got {canvas!r}")
    return h, w


def fit_sinogram(s: torch.Tensor, canvas) -> torch.Tensor:
    """Fit sinograms ``(..., n_views, n_radial)`` to the canvas ``(H, W)`` ("pad or resize").

    Each axis no longer than the canvas is zero-padded symmetrically (the extra half pixel goes
    after); each longer axis is first resized to the canvas length (bilinear, antialiased, done
    on both axes at once). Returns ``(..., H, W)``. Resizing loses information, so choose a canvas
    at least as large as the sinogram where memory allows (the paper pads to 256²).
    """
    h, w = _canvas(canvas)
    if not isinstance(s, torch.Tensor) or not s.is_floating_point() or s.ndim < 2:
        raise TypeError("s must be a floating-point torch tensor (..., n_views, n_radial)")
    lead = s.shape[:-2]
    v, r = s.shape[-2:]
    z = s.reshape((-1, 1, v, r))
    nv, nr = min(v, h), min(r, w)
    if (nv, nr) != (v, r):
        z = F.interpolate(z, size=(nv, nr), mode="bilinear", align_corners=False, antialias=True)
    (top, bottom), (left, right) = _offsets(nv, h), _offsets(nr, w)
    z = F.pad(z, (left, right, top, bottom))
    return z.reshape(lead + (h, w))


def pad_image(x: torch.Tensor, canvas, value: float = -1.0) -> torch.Tensor:
    """Pad images ``(..., nx, ny)`` symmetrically to the canvas ``(H, W)`` with ``value``.

    ``value = -1`` is activity 0 in the [-1, 1] space. The image must fit: a larger image raises
    ``ValueError`` (images are never resized, the output must live on the reconstruction grid).
    """
    h, w = _canvas(canvas)
    if not isinstance(x, torch.Tensor) or x.ndim < 2:
        raise TypeError("x must be a torch tensor (..., nx, ny)")
    nx, ny = x.shape[-2:]
    if nx > h or ny > w:
        raise ValueError(f"the image grid {(nx, ny)} does not fit the canvas {(h, w)}: use a preset whose "
                         "net.image_size is at least the image size")
    (top, bottom), (left, right) = _offsets(nx, h), _offsets(ny, w)
    if (top, bottom, left, right) == (0, 0, 0, 0):
        return x
    lead = x.shape[:-2]
    z = F.pad(x.reshape((-1, nx, ny)), (left, right, top, bottom), value=float(value))
    return z.reshape(lead + (h, w))


def crop_image(x: torch.Tensor, shape) -> torch.Tensor:
    """Centre-crop canvas images ``(..., H, W)`` back to ``shape = (nx, ny)`` (inverse of :func:`pad_image`)."""
    nx, ny = _canvas(shape)
    h, w = x.shape[-2:]
    if nx > h or ny > w:
        raise ValueError(f"cannot crop {(h, w)} to the larger {(nx, ny)}")
    top, left = _offsets(nx, h)[0], _offsets(ny, w)[0]
    return x[..., top:top + nx, left:left + ny]


def count_parameters(module: torch.nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters of ``module``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)

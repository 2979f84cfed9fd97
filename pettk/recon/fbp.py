"""Filtered back projection for 2D parallel-beam sinograms.

The ramp filter is the band-limited discrete ramp of Kak & Slaney (*Principles of Computerized
Tomographic Imaging*, IEEE Press 1988, eq. 3.61), applied by FFT on the radially zero-padded
sinogram and optionally apodised by a window; the back projection is pixel-driven with linear
interpolation in the radial coordinate, ``f(x) = pi / n_views * sum_v q_v(x cos theta_v + y sin
theta_v)``. The result is in the sinogram's units per mm (line integrals in value·mm give
values).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .._validation import as_bounded_float, as_device, as_positive_float, as_positive_int
from ..geometry import ImageGrid, ParallelBeam2D

__all__ = ["fbp", "ramp_filter", "WINDOWS"]

WINDOWS = ("ramp", "shepp-logan", "cosine", "hamming", "hann")

#: Largest ``n_radial`` :func:`ramp_filter` takes (the filter has about twice as many samples).
MAX_RADIAL_BINS = 2 ** 20
#: Radial spacings :func:`ramp_filter` takes (mm): far outside any scanner, and beyond them the
#: filter's ``1 / spacing**2`` terms overflow.
MIN_SPACING_MM = 1e-6
#: Smallest window ``cutoff`` (fraction of Nyquist): below it the window keeps only the DC term.
MIN_CUTOFF = 1e-6
MAX_SPACING_MM = 1e6


def ramp_filter(n_radial: int, spacing_mm: float, window: str = "ramp", cutoff: float = 1.0,
                dtype=torch.float64, device=None) -> torch.Tensor:
    """Frequency response (length ``P``, the padded size) of the windowed discrete ramp filter.

    ``cutoff`` in [1e-6, 1] is the fraction of the Nyquist frequency where the window reaches zero
    (windows other than ``"ramp"``).
    """
    n_radial = as_positive_int("n_radial", n_radial, maximum=MAX_RADIAL_BINS)
    spacing_mm = as_bounded_float("spacing_mm", as_positive_float("spacing_mm", spacing_mm),
                                  minimum=MIN_SPACING_MM, maximum=MAX_SPACING_MM)
    if not isinstance(window, str) or window not in WINDOWS:
        raise ValueError(f"window must be one of {', '.join(WINDOWS)}, got {window!r}")
    cutoff = as_bounded_float("cutoff", cutoff, minimum=MIN_CUTOFF, maximum=1.0)
    device = as_device("device", device)
    size = max(64, 1 << int(math.ceil(math.log2(2 * n_radial))))
    n = torch.cat([torch.arange(0, size // 2 + 1), torch.arange(-(size // 2) + 1, 0)]).to(torch.float64)
    h = torch.zeros(size, dtype=torch.float64)
    h[0] = 1.0 / (4.0 * spacing_mm ** 2)
    odd = (n.abs() % 2) == 1
    h[odd] = -1.0 / (math.pi ** 2 * spacing_mm ** 2 * n[odd] ** 2)
    response = spacing_mm * torch.fft.fft(h).real  # tau * H
    freq = torch.fft.fftfreq(size).abs() / 0.5  # 0 .. 1 (Nyquist)
    rel = (freq / cutoff).clamp(max=1.0)
    if window == "shepp-logan":
        w = torch.sinc(rel / 2)
    elif window == "cosine":
        w = torch.cos(math.pi * rel / 2)
    elif window == "hamming":
        w = 0.54 + 0.46 * torch.cos(math.pi * rel)
    elif window == "hann":
        w = 0.5 + 0.5 * torch.cos(math.pi * rel)
    else:
        w = torch.ones_like(rel)
    if window != "ramp":
        w = torch.where(freq <= cutoff, w, torch.zeros_like(w))
    return (response * w).to(dtype=dtype, device=device)


def fbp(sinogram, geometry: ParallelBeam2D, grid: ImageGrid, window: str = "ramp", cutoff: float = 1.0):
    """Filtered back projection of ``sinogram`` ``(..., n_views, n_radial)`` onto a 2D ``grid``.

    Returns ``(..., *grid.shape)`` in the sinogram's array type (numpy or torch, float32/float64).
    """
    if not isinstance(geometry, ParallelBeam2D):
        raise TypeError(f"fbp needs a ParallelBeam2D geometry, got {type(geometry).__name__}")
    if not isinstance(grid, ImageGrid) or grid.ndim != 2:
        raise ValueError(f"grid must be a 2D ImageGrid, got {grid!r}")
    is_numpy = isinstance(sinogram, np.ndarray)
    if not isinstance(sinogram, (np.ndarray, torch.Tensor)):
        raise TypeError(f"sinogram must be a numpy array or a torch tensor, got {type(sinogram).__name__}")
    p = torch.from_numpy(np.ascontiguousarray(sinogram)) if is_numpy else sinogram
    if not p.is_floating_point():
        raise TypeError(f"sinogram must hold floating-point values, got {p.dtype}")
    if tuple(p.shape[-2:]) != tuple(geometry.shape):
        raise ValueError(f"sinogram must have shape (..., {geometry.n_views}, {geometry.n_radial}), "
                         f"got {tuple(p.shape)}")
    if not bool(torch.isfinite(p).all()):
        raise ValueError("sinogram contains non-finite values (NaN or inf)")
    n_views, n_radial = geometry.shape
    dtype = p.dtype
    work = p.to(torch.float64)
    response = ramp_filter(n_radial, geometry.radial_spacing_mm, window, cutoff, device=p.device)
    size = response.numel()
    padded = torch.nn.functional.pad(work, (0, size - n_radial))
    q = torch.fft.ifft(torch.fft.fft(padded, dim=-1) * response, dim=-1).real[..., :n_radial]

    # pixel-driven back projection with linear interpolation along the radial axis
    xs, ys = (torch.as_tensor(c, dtype=torch.float64, device=p.device) for c in grid.coordinates())
    theta = torch.as_tensor(geometry.view_angles_rad, dtype=torch.float64, device=p.device)
    batch = q.shape[:-2]
    q_flat = q.reshape(-1, n_views, n_radial)
    image = torch.zeros((q_flat.shape[0],) + tuple(grid.shape), dtype=torch.float64, device=p.device)
    centre = (n_radial - 1) / 2.0
    for v in range(n_views):
        s = xs * torch.cos(theta[v]) + ys * torch.sin(theta[v])
        r = s / geometry.radial_spacing_mm + centre
        r0 = torch.floor(r)
        frac = r - r0
        i0 = r0.to(torch.int64)
        valid0 = (i0 >= 0) & (i0 < n_radial)
        valid1 = (i0 + 1 >= 0) & (i0 + 1 < n_radial)
        row = q_flat[:, v, :]
        v0 = row[:, i0.clamp(0, n_radial - 1)] * valid0
        v1 = row[:, (i0 + 1).clamp(0, n_radial - 1)] * valid1
        image += (1.0 - frac) * v0 + frac * v1
    image *= math.pi / n_views
    out = image.reshape(batch + tuple(grid.shape)).to(dtype)
    return out.numpy() if is_numpy else out

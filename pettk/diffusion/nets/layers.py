"""Building blocks shared by the diffusion networks.

This module owns the small, reusable layers the U-Nets and the transformer restorer are made of
(METHODS §1.3); it knows nothing about noise schedules (a timestep is just a number to embed):

- :func:`timestep_embedding` / :class:`SinusoidalEmbedding`: sinusoidal features of a timestep;
- :class:`TimeEmbeddingMLP`: sinusoid → Linear → activation → Linear;
- :class:`ChannelLayerNorm` and :func:`group_norm`: normalisation over the channel axis of
  ``(B, C, H, W)`` maps (per pixel) and GroupNorm with a group count that always divides ``C``;
- :class:`ResBlock`: the BigGAN / guided-diffusion residual block (GroupNorm, SiLU, conv, time
  conditioning by scale–shift or addition, dropout, zero-initialised last conv, optional
  parameter-free up/down resampling inside the block);
- :class:`AttentionBlock`: multi-head self-attention over all pixels (1×1 conv q/k/v);
- :class:`Downsample` / :class:`Upsample`: factor-2 resampling, strided conv or average pooling,
  nearest-neighbour up-sampling optionally followed by a 3×3 conv;
- argument checks (:func:`check_image_batch`, :func:`check_timesteps`) that raise
  ``TypeError``/``ValueError`` naming the argument before any work.

Shapes follow torch: images are ``(B, C, H, W)``; timesteps are ``(B,)``.
"""

from __future__ import annotations

import math
import numbers

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "AttentionBlock",
    "ChannelLayerNorm",
    "Downsample",
    "ResBlock",
    "SinusoidalEmbedding",
    "TimeEmbeddingMLP",
    "Upsample",
    "check_image_batch",
    "check_timesteps",
    "group_norm",
    "norm_groups_for",
    "timestep_embedding",
    "zero_module",
]


# ----------------------------------------------------------------------------------------------
# argument checks
# ----------------------------------------------------------------------------------------------

def check_image_batch(name: str, x, channels: int | None = None, multiple: int = 1) -> torch.Tensor:
    """Check that ``x`` is a floating ``(B, C, H, W)`` tensor and return it.

    Parameters
    ----------
    name : str
        Argument name used in the error message.
    x : torch.Tensor
        The tensor to check.
    channels : int, optional
        Required channel count ``C``.
    multiple : int
        ``H`` and ``W`` must be divisible by it (the network's total down-sampling factor).

    Raises
    ------
    TypeError
        ``x`` is not a tensor or not floating point.
    ValueError
        Wrong number of dimensions, wrong channel count, empty, or indivisible spatial size.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (B, C, H, W), got {type(x).__name__}")
    if x.ndim != 4:
        raise ValueError(f"{name} must have shape (B, C, H, W) (4 dimensions), got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if x.shape[0] == 0 or x.shape[2] == 0 or x.shape[3] == 0:
        raise ValueError(f"{name} must not be empty, got shape {tuple(x.shape)}")
    if channels is not None and x.shape[1] != channels:
        raise ValueError(f"{name} must have {channels} channels (dimension 1), got {x.shape[1]} "
                         f"(shape {tuple(x.shape)})")
    if multiple > 1 and (x.shape[2] % multiple or x.shape[3] % multiple):
        raise ValueError(f"{name} spatial size {tuple(x.shape[2:])} must be divisible by {multiple} "
                         f"(the network down-samples by that factor); pad the input")
    return x


def check_timesteps(name: str, t, batch: int, device: torch.device) -> torch.Tensor:
    """Return timesteps as a float tensor of shape ``(batch,)`` on ``device``.

    ``t`` may be a ``(batch,)`` tensor (integer or floating), a 0-d tensor or a Python number;
    scalars are broadcast to the batch. Anything else raises ``TypeError``/``ValueError``.
    """
    if isinstance(t, bool):
        raise TypeError(f"{name} must be a number or a tensor of shape ({batch},), got a bool")
    if isinstance(t, numbers.Real):
        return torch.full((batch,), float(t), device=device)
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a number or a tensor of shape ({batch},), got {type(t).__name__}")
    if t.dtype == torch.bool or t.is_complex():
        raise TypeError(f"{name} must be an integer or floating tensor, got dtype {t.dtype}")
    if t.ndim == 0:
        t = t.reshape(1).expand(batch)
    if t.ndim != 1 or t.shape[0] != batch:
        raise ValueError(f"{name} must have shape ({batch},) to match the batch, got {tuple(t.shape)}")
    if t.device != device:
        raise ValueError(f"{name} is on {t.device} but the input is on {device}")
    return t.to(torch.float32)


def zero_module(module: nn.Module) -> nn.Module:
    """Set every parameter of ``module`` to zero (in place) and return it."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


# ----------------------------------------------------------------------------------------------
# time embedding
# ----------------------------------------------------------------------------------------------

def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal features of timesteps.

    Parameters
    ----------
    t : torch.Tensor
        ``(B,)`` timesteps (any real values, typically integer steps 0..T-1).
    dim : int
        Embedding size; the first ``dim // 2`` entries are ``cos(t·f_k)``, the next ``sin(t·f_k)``
        with frequencies ``f_k = max_period^(-k/(dim/2))``; an odd ``dim`` gets a zero column.
    max_period : float
        Longest period.

    Returns
    -------
    torch.Tensor
        ``(B, dim)`` float32 features.
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / max(half, 1))
    args = t.to(torch.float32)[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class SinusoidalEmbedding(nn.Module):
    """Parameter-free module form of :func:`timestep_embedding`: ``(B,)`` → ``(B, dim)``."""

    def __init__(self, dim: int, max_period: float = 10000.0):
        super().__init__()
        self.dim = int(dim)
        self.max_period = float(max_period)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return timestep_embedding(t, self.dim, self.max_period)


class TimeEmbeddingMLP(nn.Module):
    """Sinusoidal embedding followed by ``Linear(dim, hidden) → act → Linear(hidden, out)``.

    Parameters
    ----------
    dim : int
        Size of the sinusoidal features.
    hidden_dim, out_dim : int
        Widths of the two linear layers.
    activation : {"silu", "gelu"}
        Non-linearity between them (guided diffusion uses SiLU, RED GELU).

    ``forward(t)``: ``(B,)`` → ``(B, out_dim)``.
    """

    def __init__(self, dim: int, hidden_dim: int, out_dim: int, activation: str = "silu"):
        super().__init__()
        if activation not in ("silu", "gelu"):
            raise ValueError(f"activation must be 'silu' or 'gelu', got {activation!r}")
        self.embed = SinusoidalEmbedding(dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, hidden_dim),
            nn.SiLU() if activation == "silu" else nn.GELU(),
            nn.Linear(hidden_dim, out_dim),
        )

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.embed(t).to(self.mlp[0].weight.dtype))


# ----------------------------------------------------------------------------------------------
# normalisation
# ----------------------------------------------------------------------------------------------

class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channel axis of a ``(B, C, ...)`` tensor, independently per position.

    ``y = (x - mean_C) / sqrt(var_C + eps) * weight + bias`` with per-channel ``weight``
    (init 1) and ``bias`` (init 0; omitted when ``bias=False``). This is Restormer's
    "WithBias"/"BiasFree" LayerNorm and the ConvNeXt channel norm.
    """

    def __init__(self, channels: int, eps: float = 1e-5, bias: bool = True):
        super().__init__()
        self.eps = float(eps)
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=1, keepdim=True)
        var = x.var(dim=1, keepdim=True, unbiased=False)
        shape = (1, -1) + (1,) * (x.ndim - 2)
        y = (x - mean) * torch.rsqrt(var + self.eps) * self.weight.view(shape)
        if self.bias is not None:
            y = y + self.bias.view(shape)
        return y


def norm_groups_for(channels: int, max_groups: int = 32) -> int:
    """Largest group count ``<= max_groups`` that divides ``channels``."""
    for g in range(min(max_groups, channels), 0, -1):
        if channels % g == 0:
            return g
    return 1


def group_norm(channels: int, max_groups: int = 32, eps: float = 1e-5) -> nn.GroupNorm:
    """``nn.GroupNorm`` with ``norm_groups_for(channels, max_groups)`` groups (32 for usual widths)."""
    return nn.GroupNorm(norm_groups_for(channels, max_groups), channels, eps=eps)


# ----------------------------------------------------------------------------------------------
# resampling
# ----------------------------------------------------------------------------------------------

class Downsample(nn.Module):
    """Halve ``H`` and ``W``: 3×3 stride-2 conv (``use_conv``) or 2×2 average pooling.

    ``forward(x)``: ``(B, C, H, W)`` → ``(B, out_channels, H/2, W/2)``.
    """

    def __init__(self, channels: int, use_conv: bool = True, out_channels: int | None = None):
        super().__init__()
        out_channels = out_channels or channels
        if not use_conv and out_channels != channels:
            raise ValueError("out_channels must equal channels when use_conv=False")
        self.op = nn.Conv2d(channels, out_channels, 3, stride=2, padding=1) if use_conv else nn.AvgPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class Upsample(nn.Module):
    """Double ``H`` and ``W`` by nearest-neighbour interpolation, then an optional 3×3 conv.

    ``forward(x)``: ``(B, C, H, W)`` → ``(B, out_channels, 2H, 2W)``.
    """

    def __init__(self, channels: int, use_conv: bool = True, out_channels: int | None = None):
        super().__init__()
        out_channels = out_channels or channels
        if not use_conv and out_channels != channels:
            raise ValueError("out_channels must equal channels when use_conv=False")
        self.conv = nn.Conv2d(channels, out_channels, 3, padding=1) if use_conv else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        return self.conv(x) if self.conv is not None else x


# ----------------------------------------------------------------------------------------------
# residual block
# ----------------------------------------------------------------------------------------------

class ResBlock(nn.Module):
    """BigGAN / guided-diffusion residual block with time conditioning.

    ``h = conv3x3(SiLU(GN(x)))``; the time embedding ``e`` enters through
    ``Linear(SiLU(e))`` either as scale–shift ``GN(h)·(1 + s) + b`` (``use_scale_shift_norm``)
    or additively ``h + b`` before the second norm; then ``SiLU → Dropout → conv3x3`` (zero
    initialised, so a fresh block is the identity on its skip path) and the skip
    (identity, or a 1×1 / 3×3 conv when the width changes) is added.

    With ``up``/``down`` the block also resamples by 2 (BigGAN style, parameter-free nearest /
    average-pool resampling of both paths after the first norm–activation).

    Parameters
    ----------
    in_channels : int
    out_channels : int, optional
        Defaults to ``in_channels``.
    emb_dim : int, optional
        Size of the time embedding; ``None`` builds an unconditioned block (no embedding layer).
    dropout : float
        Dropout probability before the last conv.
    use_scale_shift_norm : bool
    up, down : bool
        Resample inside the block (at most one of them).
    use_conv_skip : bool
        Use a 3×3 instead of a 1×1 conv on the skip path when the width changes.
    max_norm_groups : int

    ``forward(x, emb=None)``: ``x (B, in_channels, H, W)``, ``emb (B, emb_dim)`` →
    ``(B, out_channels, H', W')``.
    """

    def __init__(self, in_channels: int, out_channels: int | None = None, emb_dim: int | None = None,
                 dropout: float = 0.0, use_scale_shift_norm: bool = True, up: bool = False, down: bool = False,
                 use_conv_skip: bool = False, max_norm_groups: int = 32):
        super().__init__()
        if up and down:
            raise ValueError("ResBlock: up and down cannot both be True")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        out_channels = out_channels or in_channels
        self.in_channels, self.out_channels = in_channels, out_channels
        self.use_scale_shift_norm = bool(use_scale_shift_norm)
        self.in_norm = group_norm(in_channels, max_norm_groups)
        self.in_conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        if up:
            self.resample = Upsample(in_channels, use_conv=False)
        elif down:
            self.resample = Downsample(in_channels, use_conv=False)
        else:
            self.resample = None
        if emb_dim is not None:
            self.emb_proj = nn.Linear(emb_dim, 2 * out_channels if use_scale_shift_norm else out_channels)
        else:
            self.emb_proj = None
        self.out_norm = group_norm(out_channels, max_norm_groups)
        self.dropout = nn.Dropout(dropout)
        self.out_conv = zero_module(nn.Conv2d(out_channels, out_channels, 3, padding=1))
        if out_channels == in_channels:
            self.skip = nn.Identity()
        else:
            self.skip = nn.Conv2d(in_channels, out_channels, 3 if use_conv_skip else 1,
                                  padding=1 if use_conv_skip else 0)

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        h = F.silu(self.in_norm(x))
        if self.resample is not None:
            h = self.resample(h)
            x = self.resample(x)
        h = self.in_conv(h)
        if self.emb_proj is not None:
            if emb is None:
                raise ValueError("ResBlock built with emb_dim needs emb (B, emb_dim)")
            e = self.emb_proj(F.silu(emb)).to(h.dtype)[:, :, None, None]
            if self.use_scale_shift_norm:
                scale, shift = e.chunk(2, dim=1)
                h = self.out_norm(h) * (1.0 + scale) + shift
            else:
                h = self.out_norm(h + e)
        else:
            h = self.out_norm(h)
        h = self.out_conv(self.dropout(F.silu(h)))
        return self.skip(x) + h


# ----------------------------------------------------------------------------------------------
# attention
# ----------------------------------------------------------------------------------------------

class AttentionBlock(nn.Module):
    """Residual multi-head self-attention over all spatial positions.

    ``x + proj(attn(qkv(GN(x))))`` with 1×1 ``Conv1d`` projections (``proj`` zero
    initialised). Heads: ``channels // num_head_channels`` when that is given, else
    ``num_heads``. Cost is ``O((H·W)²)`` per head, so use it at coarse levels.

    ``forward(x)``: ``(B, C, *spatial)`` → same shape.
    """

    def __init__(self, channels: int, num_heads: int = 1, num_head_channels: int | None = None,
                 max_norm_groups: int = 32):
        super().__init__()
        if num_head_channels is not None:
            if num_head_channels <= 0 or channels % num_head_channels:
                raise ValueError(f"num_head_channels={num_head_channels} must divide channels={channels}")
            num_heads = channels // num_head_channels
        if num_heads <= 0 or channels % num_heads:
            raise ValueError(f"num_heads={num_heads} must divide channels={channels}")
        self.channels, self.num_heads = channels, num_heads
        self.norm = group_norm(channels, max_norm_groups)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj = zero_module(nn.Conv1d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c = x.shape[:2]
        flat = x.reshape(b, c, -1)
        qkv = self.qkv(self.norm(flat))                       # (B, 3C, N)
        n = qkv.shape[-1]
        q, k, v = qkv.reshape(b, 3, self.num_heads, c // self.num_heads, n).transpose(-1, -2).unbind(1)
        out = F.scaled_dot_product_attention(q, k, v)         # (B, heads, N, d)
        out = out.transpose(-1, -2).reshape(b, c, n)
        return (flat + self.proj(out)).reshape(x.shape)

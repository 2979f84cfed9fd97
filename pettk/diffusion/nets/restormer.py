"""DREAM's networks (METHODS §2.3): compact prior encoder, Restormer-style restorer, latent MLP.

DREAM is a DiffIR-type two-stage restorer applied to 3-channel sinogram blocks:

- :class:`CPEN` (compact prior encoder): pixel-unshuffle by 4 of the low-dose block (and, in
  stage 1, of the full-dose block), conv + residual blocks + global average pooling + MLP →
  a prior vector ``z (B, prior_dim)``, ``prior_dim = 4·n_feats`` (256 in the paper).
- :class:`TransformerRestorer` ("G", a Restormer U-Net): transformer blocks made of
  :class:`MDTA` (transposed, channel-wise multi-head attention) and :class:`GDFN` (gated
  depthwise feed-forward). The prior is injected in both sub-layers: a bias-free
  ``Linear(prior_dim → 2C)`` maps ``z`` to ``(a, b)`` and the normalised features become
  ``x·a + b`` (note: no "1 +", so ``z = 0`` zeroes the sub-layer input). A global residual adds
  the input block to the output.
- :class:`LatentDenoiser`: the stage-2 MLP that predicts ``ẑ₀`` from ``[c, t/(10·T), z_t]``.

Parameter counts of the paper configuration (§2.9 "full"): CPEN-S1 1,072,832; G 25.67 M;
CPEN-S2 1,045,184; denoiser 197,376; S1 = CPEN-S1 + G = 26.74 M; S2 = CPEN-S2 + G +
denoiser = 26.91 M. The latent diffusion schedule itself lives outside this module.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .layers import ChannelLayerNorm, check_image_batch, check_timesteps

__all__ = ["CPEN", "GDFN", "MDTA", "LatentDenoiser", "RestormerBlock", "TransformerRestorer"]


def _check_prior(name: str, z, batch: int, prior_dim: int, device) -> torch.Tensor:
    if not isinstance(z, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape ({batch}, {prior_dim}), got {type(z).__name__}")
    if tuple(z.shape) != (batch, prior_dim):
        raise ValueError(f"{name} must have shape ({batch}, {prior_dim}) (batch, prior_dim), got {tuple(z.shape)}")
    if not z.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {z.dtype}")
    if z.device != device:
        raise ValueError(f"{name} is on {z.device} but the input is on {device}")
    return z


class _PriorModulation(nn.Module):
    """``x ↦ x·a + b`` with ``(a, b) = Linear(z)`` (bias-free); identity when ``prior_dim == 0``."""

    def __init__(self, channels: int, prior_dim: int):
        super().__init__()
        self.proj = nn.Linear(prior_dim, 2 * channels, bias=False) if prior_dim > 0 else None

    def forward(self, x: torch.Tensor, z: torch.Tensor | None) -> torch.Tensor:
        if self.proj is None:
            return x
        if z is None:
            raise ValueError("z (B, prior_dim) is required: this layer was built with prior_dim > 0")
        a, b = self.proj(z).to(x.dtype)[:, :, None, None].chunk(2, dim=1)
        return x * a + b


class MDTA(nn.Module):
    """Multi-Dconv-head Transposed Attention with prior modulation.

    ``q, k, v = dwconv3×3(conv1×1(x·a + b))``; per head, q and k (``C/h`` channels × ``H·W``
    positions) are L2-normalised along positions, the ``C/h × C/h`` map ``softmax(τ_h·q kᵀ)``
    (learnable temperature ``τ_h``, init 1) weights v, and a 1×1 conv projects back.

    Parameters
    ----------
    channels, num_heads : int
        ``num_heads`` must divide ``channels``.
    bias : bool
        Conv biases (False in DREAM).
    prior_dim : int
        Size of the prior vector ``z`` (0: no prior injection).

    ``forward(x, z=None)``: ``x (B, C, H, W)``, ``z (B, prior_dim)`` → ``(B, C, H, W)``.
    Cost is linear in ``H·W`` (the attention map is ``C/h × C/h``).
    """

    def __init__(self, channels: int, num_heads: int, bias: bool = False, prior_dim: int = 256):
        super().__init__()
        if num_heads < 1 or channels % num_heads:
            raise ValueError(f"num_heads={num_heads} must divide channels={channels}")
        self.num_heads = num_heads
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.modulation = _PriorModulation(channels, prior_dim)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1, bias=bias)
        self.qkv_dwconv = nn.Conv2d(3 * channels, 3 * channels, 3, padding=1, groups=3 * channels, bias=bias)
        self.project_out = nn.Conv2d(channels, channels, 1, bias=bias)

    def forward(self, x: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        b, c, h, w = x.shape
        x = self.modulation(x, z)
        q, k, v = self.qkv_dwconv(self.qkv(x)).reshape(b, 3, self.num_heads, c // self.num_heads, h * w).unbind(1)
        q = F.normalize(q, dim=-1)
        k = F.normalize(k, dim=-1)
        attn = (q @ k.transpose(-2, -1) * self.temperature).softmax(dim=-1)   # (B, heads, C/h, C/h)
        out = (attn @ v).reshape(b, c, h, w)
        return self.project_out(out)


class GDFN(nn.Module):
    """Gated-Dconv Feed-forward Network with prior modulation.

    ``u = dwconv3×3(conv1×1(x·a + b))`` with ``2·hidden`` channels, ``hidden = int(C·expansion)``;
    split into ``(u₁, u₂)``, output ``conv1×1(GELU(u₁)·u₂)`` with ``C`` channels.

    ``forward(x, z=None)``: ``x (B, C, H, W)``, ``z (B, prior_dim)`` → ``(B, C, H, W)``.
    """

    def __init__(self, channels: int, expansion: float = 2.0, bias: bool = False, prior_dim: int = 256):
        super().__init__()
        hidden = int(channels * expansion)
        self.modulation = _PriorModulation(channels, prior_dim)
        self.project_in = nn.Conv2d(channels, 2 * hidden, 1, bias=bias)
        self.dwconv = nn.Conv2d(2 * hidden, 2 * hidden, 3, padding=1, groups=2 * hidden, bias=bias)
        self.project_out = nn.Conv2d(hidden, channels, 1, bias=bias)

    def forward(self, x: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        u1, u2 = self.dwconv(self.project_in(self.modulation(x, z))).chunk(2, dim=1)
        return self.project_out(F.gelu(u1) * u2)


class RestormerBlock(nn.Module):
    """``x ← x + MDTA(LN(x), z);  x ← x + GDFN(LN(x), z)`` (channel LayerNorm with bias).

    Parameters per block: ``10·C² + (67 + 4·prior_dim)·C + num_heads`` with the DREAM settings
    (expansion 2, no conv bias).

    ``forward(x, z=None)``: ``(B, C, H, W)``, ``(B, prior_dim)`` → ``(B, C, H, W)``.
    """

    def __init__(self, channels: int, num_heads: int, expansion: float = 2.0, bias: bool = False,
                 prior_dim: int = 256, norm_bias: bool = True):
        super().__init__()
        self.norm1 = ChannelLayerNorm(channels, bias=norm_bias)
        self.attn = MDTA(channels, num_heads, bias, prior_dim)
        self.norm2 = ChannelLayerNorm(channels, bias=norm_bias)
        self.ffn = GDFN(channels, expansion, bias, prior_dim)

    def forward(self, x: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), z)
        return x + self.ffn(self.norm2(x), z)


class _Stage(nn.ModuleList):
    def forward(self, x, z):  # noqa: D401 - a sequence of blocks sharing the prior
        for block in self:
            x = block(x, z)
        return x


class TransformerRestorer(nn.Module):
    """DREAM's restorer G: a 4-level Restormer U-Net conditioned on a compact prior ``z``.

    Path (``C = dim``): conv3×3 in → C; encoder levels at C, 2C, 4C (down: conv3×3 to half the
    channels, pixel-unshuffle 2); latent at 8C (1/8 resolution); decoder: conv3×3 to twice the
    channels, pixel-shuffle 2, concatenate the skip, 1×1 reduction at levels 3 and 2 (none at
    level 1, which therefore runs at 2C, as do the refinement blocks); conv3×3 2C → out, plus the
    input (global residual).

    Parameters
    ----------
    in_channels, out_channels : int
        3 and 3 in DREAM (the masked/unmasked block); they must be equal when ``global_residual``.
    dim : int
        Width ``C`` of level 1 (48).
    num_blocks : sequence of 4 int
        Transformer blocks at levels 1–3 and the latent ((3, 5, 6, 6)); the decoder levels reuse
        the counts of their encoder level.
    num_refinement_blocks : int
        Blocks after the decoder (4).
    heads : sequence of 4 int
        Attention heads per level ((1, 2, 4, 8)).
    ffn_expansion : float
        GDFN hidden expansion (2).
    bias : bool
        Conv biases (False).
    prior_dim : int
        Size of ``z`` (256).
    global_residual : bool
        Add the input to the output.

    Shapes
    ------
    ``forward(x, z)``: ``x (B, in_channels, H, W)`` with ``H, W`` divisible by 8; ``z (B, prior_dim)``
    → ``(B, out_channels, H, W)``.
    """

    def __init__(self, in_channels: int = 3, out_channels: int = 3, dim: int = 48,
                 num_blocks: Sequence[int] = (3, 5, 6, 6), num_refinement_blocks: int = 4,
                 heads: Sequence[int] = (1, 2, 4, 8), ffn_expansion: float = 2.0, bias: bool = False,
                 prior_dim: int = 256, global_residual: bool = True):
        super().__init__()
        num_blocks, heads = tuple(num_blocks), tuple(heads)
        if len(num_blocks) != 4 or min(num_blocks) < 1:
            raise ValueError(f"num_blocks must be 4 positive ints (levels 1-3 and latent), got {num_blocks}")
        if len(heads) != 4 or min(heads) < 1:
            raise ValueError(f"heads must be 4 positive ints, got {heads}")
        if dim < 1 or dim % 2:
            raise ValueError(f"dim must be a positive even int, got {dim}")
        if global_residual and in_channels != out_channels:
            raise ValueError(f"global_residual needs in_channels == out_channels, got {in_channels} and {out_channels}")
        self.in_channels, self.out_channels, self.prior_dim = in_channels, out_channels, prior_dim
        self.global_residual = global_residual
        self.downsample_factor = 8

        def stage(ch, n, h):
            return _Stage([RestormerBlock(ch, h, ffn_expansion, bias, prior_dim) for _ in range(n)])

        def down(ch):
            return nn.Sequential(nn.Conv2d(ch, ch // 2, 3, padding=1, bias=False), nn.PixelUnshuffle(2))

        def up(ch):
            return nn.Sequential(nn.Conv2d(ch, ch * 2, 3, padding=1, bias=False), nn.PixelShuffle(2))

        c = dim
        self.patch_embed = nn.Conv2d(in_channels, c, 3, padding=1, bias=bias)
        self.encoder1 = stage(c, num_blocks[0], heads[0])
        self.down1_2 = down(c)
        self.encoder2 = stage(2 * c, num_blocks[1], heads[1])
        self.down2_3 = down(2 * c)
        self.encoder3 = stage(4 * c, num_blocks[2], heads[2])
        self.down3_4 = down(4 * c)
        self.latent = stage(8 * c, num_blocks[3], heads[3])
        self.up4_3 = up(8 * c)
        self.reduce3 = nn.Conv2d(8 * c, 4 * c, 1, bias=bias)
        self.decoder3 = stage(4 * c, num_blocks[2], heads[2])
        self.up3_2 = up(4 * c)
        self.reduce2 = nn.Conv2d(4 * c, 2 * c, 1, bias=bias)
        self.decoder2 = stage(2 * c, num_blocks[1], heads[1])
        self.up2_1 = up(2 * c)
        self.decoder1 = stage(2 * c, num_blocks[0], heads[0])
        self.refinement = stage(2 * c, num_refinement_blocks, heads[0])
        self.output = nn.Conv2d(2 * c, out_channels, 3, padding=1, bias=bias)

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Restore ``x`` given the prior ``z``; see the class docstring for shapes."""
        check_image_batch("x", x, self.in_channels, self.downsample_factor)
        if self.prior_dim > 0:
            z = _check_prior("z", z, x.shape[0], self.prior_dim, x.device)
        e1 = self.encoder1(self.patch_embed(x), z)
        e2 = self.encoder2(self.down1_2(e1), z)
        e3 = self.encoder3(self.down2_3(e2), z)
        h = self.latent(self.down3_4(e3), z)
        h = self.decoder3(self.reduce3(torch.cat([self.up4_3(h), e3], dim=1)), z)
        h = self.decoder2(self.reduce2(torch.cat([self.up3_2(h), e2], dim=1)), z)
        h = self.decoder1(torch.cat([self.up2_1(h), e1], dim=1), z)
        h = self.output(self.refinement(h, z))
        return h + x if self.global_residual else h


class _ConvResBlock(nn.Module):
    """``x + conv3×3(LReLU(conv3×3(x)))`` (EDSR-style, no normalisation)."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.LeakyReLU(0.1),
                                  nn.Conv2d(channels, channels, 3, padding=1))

    def forward(self, x):
        return x + self.body(x)


class CPEN(nn.Module):
    """Compact prior encoder: sinogram block(s) → prior vector of size ``4·n_feats``.

    Pixel-unshuffle by 4 of each input (``in_channels·16`` channels each, concatenated when
    ``with_target``), conv3×3 → ``n_feats``, LReLU(0.1), ``n_encoder_res`` residual blocks,
    convs to ``2·n_feats``, ``2·n_feats``, ``4·n_feats`` (each + LReLU), global average pooling,
    then ``Linear → LReLU → Linear → LReLU`` at ``4·n_feats``.

    Parameters
    ----------
    in_channels : int
        Channels of each block (3).
    n_feats : int
        Base width (64; the prior has ``4·n_feats = 256`` entries).
    n_encoder_res : int
        Residual blocks (5).
    with_target : bool
        Stage 1 (``True``, CPEN-S1): sees the low-dose *and* full-dose block. Stage 2
        (``False``, CPEN-S2): sees the low-dose block only.

    Shapes
    ------
    ``forward(lq, gt=None)``: ``lq (B, in_channels, H, W)`` (and ``gt`` of the same shape iff
    ``with_target``), ``H, W`` divisible by 4 → ``(B, 4·n_feats)``.
    """

    def __init__(self, in_channels: int = 3, n_feats: int = 64, n_encoder_res: int = 5, with_target: bool = True):
        super().__init__()
        if n_feats < 1 or n_encoder_res < 0 or in_channels < 1:
            raise ValueError(f"CPEN needs in_channels >= 1, n_feats >= 1, n_encoder_res >= 0; got "
                             f"{in_channels}, {n_feats}, {n_encoder_res}")
        self.in_channels, self.with_target = in_channels, bool(with_target)
        self.prior_dim = 4 * n_feats
        self.unshuffle = nn.PixelUnshuffle(4)
        c_in = in_channels * 16 * (2 if with_target else 1)
        layers: list[nn.Module] = [nn.Conv2d(c_in, n_feats, 3, padding=1), nn.LeakyReLU(0.1)]
        layers += [_ConvResBlock(n_feats) for _ in range(n_encoder_res)]
        layers += [nn.Conv2d(n_feats, 2 * n_feats, 3, padding=1), nn.LeakyReLU(0.1),
                   nn.Conv2d(2 * n_feats, 2 * n_feats, 3, padding=1), nn.LeakyReLU(0.1),
                   nn.Conv2d(2 * n_feats, 4 * n_feats, 3, padding=1), nn.LeakyReLU(0.1),
                   nn.AdaptiveAvgPool2d(1)]
        self.encoder = nn.Sequential(*layers)
        self.mlp = nn.Sequential(nn.Linear(4 * n_feats, 4 * n_feats), nn.LeakyReLU(0.1),
                                 nn.Linear(4 * n_feats, 4 * n_feats), nn.LeakyReLU(0.1))

    def forward(self, lq: torch.Tensor, gt: torch.Tensor | None = None) -> torch.Tensor:
        """Encode the low-dose block (and the full-dose block in stage 1) into ``(B, prior_dim)``."""
        check_image_batch("lq", lq, self.in_channels, 4)
        if self.with_target:
            if gt is None:
                raise ValueError("gt is required: this CPEN was built with with_target=True (stage 1)")
            check_image_batch("gt", gt, self.in_channels, 4)
            if gt.shape != lq.shape:
                raise ValueError(f"gt must have the shape of lq {tuple(lq.shape)}, got {tuple(gt.shape)}")
            h = torch.cat([self.unshuffle(lq), self.unshuffle(gt)], dim=1)
        else:
            if gt is not None:
                raise ValueError("gt must be None: this CPEN was built with with_target=False (stage 2)")
            h = self.unshuffle(lq)
        return self.mlp(self.encoder(h).flatten(1))


class LatentDenoiser(nn.Module):
    """DREAM's stage-2 latent denoiser: an MLP predicting ``ẑ₀`` (x0 parameterisation).

    Input ``[c, t/(10·T), z_t]`` (``2·prior_dim + 1`` entries; the time is a plain scaled scalar,
    no sinusoid), ``Linear → LReLU(0.1)`` to ``prior_dim``, then ``n_denoise_res`` blocks of
    ``Linear → LReLU(0.1)`` (no skip connection, as in the released code).

    Parameters
    ----------
    prior_dim : int
        Size of ``z`` and ``c`` (256).
    n_denoise_res : int
        Hidden blocks (1).
    num_timesteps : int
        ``T`` of the latent diffusion (4); only used to scale ``t``.

    Shapes
    ------
    ``forward(z_t, t, c)``: ``z_t (B, prior_dim)``, ``t (B,)`` integer steps in ``[0, T)`` (or a
    scalar), ``c (B, prior_dim)`` the CPEN-S2 condition → ``ẑ₀ (B, prior_dim)``.
    """

    def __init__(self, prior_dim: int = 256, n_denoise_res: int = 1, num_timesteps: int = 4):
        super().__init__()
        if prior_dim < 1 or n_denoise_res < 0 or num_timesteps < 1:
            raise ValueError(f"LatentDenoiser needs prior_dim >= 1, n_denoise_res >= 0, num_timesteps >= 1; "
                             f"got {prior_dim}, {n_denoise_res}, {num_timesteps}")
        self.prior_dim, self.num_timesteps = prior_dim, num_timesteps
        layers: list[nn.Module] = [nn.Linear(2 * prior_dim + 1, prior_dim), nn.LeakyReLU(0.1)]
        for _ in range(n_denoise_res):
            layers += [nn.Linear(prior_dim, prior_dim), nn.LeakyReLU(0.1)]
        self.net = nn.Sequential(*layers)

    def forward(self, z_t: torch.Tensor, t, c: torch.Tensor) -> torch.Tensor:
        """Predict ``ẑ₀`` from the noisy latent, the step and the condition; see the class docstring."""
        if not isinstance(z_t, torch.Tensor) or z_t.ndim != 2 or z_t.shape[1] != self.prior_dim:
            shape = tuple(z_t.shape) if isinstance(z_t, torch.Tensor) else type(z_t).__name__
            raise ValueError(f"z_t must be a tensor of shape (B, {self.prior_dim}), got {shape}")
        c = _check_prior("c", c, z_t.shape[0], self.prior_dim, z_t.device)
        t = check_timesteps("t", t, z_t.shape[0], z_t.device) / (10.0 * self.num_timesteps)
        return self.net(torch.cat([c, t[:, None].to(z_t.dtype), z_t], dim=1))

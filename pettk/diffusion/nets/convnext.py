"""RED's ConvNeXt U-Net with linear attention (METHODS §3.2), used for both REN and DCN.

Layout for ``channel_mults = (1, 2, 4, 8)`` and ``base_channels = 32`` (the paper, 14.47 M)::

    x → conv7×7 (→ init_channels) →
      level l (widths 32/64/128/256): ConvNeXtBlock(c_in→c_l, no norm at l=0) · ConvNeXtBlock ·
                                      Residual(PreNorm(LinearAttention)) · [conv4×4 stride 2]
      middle (256): ConvNeXtBlock · Residual(PreNorm(LinearAttention)) · ConvNeXtBlock
      decoder, levels 2, 1, 0 of widths 128/64/32: concat skip · 2 blocks · attention ·
                                      convT4×4 stride 2
      head: ConvNeXtBlock (no time) · conv1×1 → out_channels

The deepest encoder level has no down-sampling, and the decoder has one level fewer than the
encoder (the full-resolution skip is unused), so ``H`` and ``W`` must be divisible by
``2**(len(channel_mults) - 1)`` (8 for the paper: 360 → 45). Timesteps enter through a
sinusoidal embedding of the raw step (dimension ``time_dim``), ``Linear → GELU → Linear``, and a
per-block ``GELU → Linear`` channel bias.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .layers import ChannelLayerNorm, TimeEmbeddingMLP, check_image_batch, check_timesteps

__all__ = ["ConvNeXtBlock", "ConvNeXtUNet", "LinearAttention"]


class ConvNeXtBlock(nn.Module):
    """ConvNeXt-style residual block with an additive time bias.

    ``h = dwconv7×7(x) + Linear(GELU(e))``; ``h = conv3×3(GELU(conv3×3(LN(h))))`` with
    ``mult·out_channels`` hidden channels; output ``h + skip(x)`` (1×1 conv if the width changes).

    Parameters
    ----------
    in_channels, out_channels : int
    time_dim : int, optional
        Size of the time embedding; ``None`` builds a time-free block (RED's head).
    mult : int
        Hidden expansion (2 in RED).
    norm : bool
        Channel LayerNorm before the 3×3 convs (off in the very first block).

    ``forward(x, emb=None)``: ``(B, in_channels, H, W)``, ``(B, time_dim)`` → ``(B, out_channels, H, W)``.
    """

    def __init__(self, in_channels: int, out_channels: int, time_dim: int | None = None, mult: int = 2,
                 norm: bool = True):
        super().__init__()
        self.time_mlp = nn.Sequential(nn.GELU(), nn.Linear(time_dim, in_channels)) if time_dim else None
        self.dwconv = nn.Conv2d(in_channels, in_channels, 7, padding=3, groups=in_channels)
        self.net = nn.Sequential(
            ChannelLayerNorm(in_channels) if norm else nn.Identity(),
            nn.Conv2d(in_channels, out_channels * mult, 3, padding=1),
            nn.GELU(),
            nn.Conv2d(out_channels * mult, out_channels, 3, padding=1),
        )
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        h = self.dwconv(x)
        if self.time_mlp is not None:
            if emb is None:
                raise ValueError("ConvNeXtBlock built with time_dim needs emb (B, time_dim)")
            h = h + self.time_mlp(emb)[:, :, None, None]
        return self.net(h) + self.skip(x)


class LinearAttention(nn.Module):
    """Linear (softmax-kernel) attention, ``O(H·W)``, as a residual pre-norm block.

    ``q, k, v = conv1×1(LN(x))`` (no bias), ``heads × head_channels`` each; keys are softmaxed
    over positions, the context ``Σ_n k_n v_nᵀ`` (per head, ``d×d``) is applied to the scaled
    queries, and a 1×1 conv maps back to ``channels``; the input is added.

    ``forward(x)``: ``(B, C, H, W)`` → same shape.
    """

    def __init__(self, channels: int, heads: int = 4, head_channels: int = 32):
        super().__init__()
        self.heads, self.head_channels = heads, head_channels
        self.scale = head_channels ** -0.5
        hidden = heads * head_channels
        self.norm = ChannelLayerNorm(channels)
        self.to_qkv = nn.Conv2d(channels, 3 * hidden, 1, bias=False)
        self.to_out = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, hgt, wid = x.shape
        qkv = self.to_qkv(self.norm(x)).reshape(b, 3, self.heads, self.head_channels, hgt * wid)
        q, k, v = qkv.unbind(1)                          # (B, heads, d, N)
        k = k.softmax(dim=-1)
        context = torch.einsum("bhdn,bhen->bhde", k, v)  # (B, heads, d, d)
        out = torch.einsum("bhde,bhdn->bhen", context, q * self.scale)
        return x + self.to_out(out.reshape(b, -1, hgt, wid))


class ConvNeXtUNet(nn.Module):
    """RED's residual-estimation / drift-correction network (REN, DCN).

    Parameters
    ----------
    in_channels, out_channels : int
        1 and 1 for RED (a sinogram in, a residual or drift out).
    base_channels : int
        Width of level 0 (32 in RED).
    channel_mults : sequence of int
        Per-level multipliers ((1, 2, 4, 8) in RED); at least two levels.
    init_channels : int, optional
        Width of the 7×7 stem conv; default ``base_channels * 2 // 3`` (21 for 32).
    time_dim : int, optional
        Size of the sinusoidal embedding and of the time vector fed to blocks; default
        ``base_channels`` (the MLP is ``time_dim → 4·time_dim → time_dim``).
    attention_heads, attention_head_channels : int
        Linear-attention heads × channels per head (4 × 32 in RED).
    convnext_mult : int
        Hidden expansion of the ConvNeXt blocks (2).

    Shapes
    ------
    ``forward(x, t)``: ``x (B, in_channels, H, W)`` with ``H, W`` divisible by
    ``downsample_factor``; ``t (B,)`` raw integer steps (int or float tensor, or a scalar) →
    ``(B, out_channels, H, W)``.
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 1, base_channels: int = 32,
                 channel_mults: Sequence[int] = (1, 2, 4, 8), init_channels: int | None = None,
                 time_dim: int | None = None, attention_heads: int = 4, attention_head_channels: int = 32,
                 convnext_mult: int = 2):
        super().__init__()
        for name, v in [("in_channels", in_channels), ("out_channels", out_channels),
                        ("base_channels", base_channels), ("attention_heads", attention_heads),
                        ("attention_head_channels", attention_head_channels), ("convnext_mult", convnext_mult)]:
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        channel_mults = tuple(int(m) for m in channel_mults)
        if len(channel_mults) < 2 or min(channel_mults) < 1:
            raise ValueError(f"channel_mults needs at least two positive entries, got {channel_mults}")
        init_channels = init_channels or max(1, base_channels * 2 // 3)
        time_dim = time_dim or base_channels
        self.in_channels, self.out_channels = in_channels, out_channels
        self.num_levels = len(channel_mults)
        self.downsample_factor = 2 ** (self.num_levels - 1)

        def attention(c):
            return LinearAttention(c, attention_heads, attention_head_channels)

        self.init_conv = nn.Conv2d(in_channels, init_channels, 7, padding=3)
        self.time_embed = TimeEmbeddingMLP(time_dim, 4 * time_dim, time_dim, "gelu")
        dims = [init_channels] + [base_channels * m for m in channel_mults]
        pairs = list(zip(dims[:-1], dims[1:]))

        self.downs = nn.ModuleList()
        for i, (cin, cout) in enumerate(pairs):
            last = i == len(pairs) - 1
            self.downs.append(nn.ModuleList([
                ConvNeXtBlock(cin, cout, time_dim, convnext_mult, norm=i != 0),
                ConvNeXtBlock(cout, cout, time_dim, convnext_mult),
                attention(cout),
                nn.Identity() if last else nn.Conv2d(cout, cout, 4, stride=2, padding=1),
            ]))
        mid = dims[-1]
        self.mid_block1 = ConvNeXtBlock(mid, mid, time_dim, convnext_mult)
        self.mid_attn = attention(mid)
        self.mid_block2 = ConvNeXtBlock(mid, mid, time_dim, convnext_mult)

        self.ups = nn.ModuleList()
        for cin, cout in reversed(pairs[1:]):
            self.ups.append(nn.ModuleList([
                ConvNeXtBlock(2 * cout, cin, time_dim, convnext_mult),
                ConvNeXtBlock(cin, cin, time_dim, convnext_mult),
                attention(cin),
                nn.ConvTranspose2d(cin, cin, 4, stride=2, padding=1),
            ]))
        self.final_block = ConvNeXtBlock(dims[1], dims[1], None, convnext_mult)
        self.final_conv = nn.Conv2d(dims[1], out_channels, 1)

    def forward(self, x: torch.Tensor, t) -> torch.Tensor:
        """Predict the residual (REN) or drift (DCN) of ``x`` at step ``t``; see the class docstring."""
        check_image_batch("x", x, self.in_channels, self.downsample_factor)
        emb = self.time_embed(check_timesteps("t", t, x.shape[0], x.device))
        h = self.init_conv(x)
        skips = []
        for block1, block2, attn, down in self.downs:
            h = attn(block2(block1(h, emb), emb))
            skips.append(h)
            h = down(h)
        h = self.mid_block2(self.mid_attn(self.mid_block1(h, emb)), emb)
        for block1, block2, attn, up in self.ups:
            h = torch.cat([h, skips.pop()], dim=1)
            h = up(attn(block2(block1(h, emb), emb)))
        return self.final_conv(self.final_block(h))


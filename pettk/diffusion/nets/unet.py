"""The guided-diffusion-style U-Net (DDIP score network, LegoPET PnPNet and cDPM).

One class, :class:`UNet`, covers METHODS §4.2 (DDIP: BigGAN resampling blocks, scale–shift time
conditioning, middle-only attention with 64-channel heads, MR image concatenated to ``x_t``) and
§5.2 (LegoPET: PnPNet and the conditional DPM share one backbone; the frozen PnPNet's encoder
and middle feature maps are *added* to the cDPM's, without new parameters).

Layout, for ``L = len(channel_mults)`` levels of widths ``base_channels · mult``::

    [x | cond] → conv3×3 → level 0 → down → level 1 → … → level L-1 → middle → decoder → GN·SiLU·conv
                            (num_res_blocks ResBlocks each, + attention at attention_levels)

The decoder mirrors the encoder with ``num_res_blocks + 1`` blocks per level, each consuming one
skip (guided-diffusion order). "Encoder level output" means the activation after the last block
of a level (before its down-sampling), at resolution ``H / 2**l``; "middle" is the output of the
middle ResBlock–attention–ResBlock stack. Those are the points where ``features`` are added and
what :meth:`UNet.encoder_features` returns.

Networks know nothing about schedules: ``t`` is only embedded (sinusoid → MLP).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from .layers import (
    AttentionBlock,
    Downsample,
    ResBlock,
    TimeEmbeddingMLP,
    Upsample,
    check_image_batch,
    check_timesteps,
    group_norm,
    zero_module,
)

__all__ = ["UNet"]


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r} ({type(value).__name__})")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return value


class UNet(nn.Module):
    """Time-conditioned U-Net with optional image conditioning and feature injection.

    Parameters
    ----------
    in_channels : int
        Channels of ``x`` (e.g. 1 for a 2D image, 3 for DDIP's 2.5D slab).
    out_channels : int
        Output channels (``2·in_channels`` for a learned-variance model such as DDIP's).
    base_channels : int
        Width of level 0.
    channel_mults : sequence of int
        Width multiplier per level; the network down-samples ``len(channel_mults) - 1`` times,
        so ``H`` and ``W`` must be divisible by ``2**(len(channel_mults) - 1)``.
    num_res_blocks : int
        ResBlocks per encoder level (the decoder has one more per level).
    attention_levels : sequence of int
        Level indices (0 = full resolution) whose blocks are followed by self-attention.
    dropout : float
        Dropout inside every ResBlock.
    cond_channels : int
        Channels of ``cond``, concatenated to ``x`` along dimension 1 (0: unconditional).
    num_heads : int
        Attention heads (ignored when ``num_head_channels`` is given).
    time_embedding : bool
        ``False`` builds a plain (time-free) U-Net, e.g. LegoPET's PnPNet; ``t`` is then ignored.

    Keyword-only
    ------------
    num_head_channels : int, optional
        Channels per head (guided diffusion's ``num_head_channels=64``).
    mid_attention : bool
        Self-attention in the middle block (default True).
    resblock_updown : bool
        Resample with BigGAN-style ResBlocks (True, DDIP) or strided conv / nearest+conv (False).
    use_scale_shift_norm : bool
        Scale–shift (True) or additive (False, the original DDPM block) time conditioning.
    max_norm_groups : int
        GroupNorm groups (32, reduced to a divisor of narrow widths).

    Shapes
    ------
    ``forward(x, t, cond=None, features=None)``: ``x (B, in_channels, H, W)``, ``t (B,)``
    (or a scalar), ``cond (B, cond_channels, H, W)`` → ``(B, out_channels, H, W)``.

    Notes
    -----
    The last conv of every ResBlock, the attention output projections and the output conv are
    zero-initialised (guided diffusion), so a fresh network outputs zeros and only those convs get
    a non-zero gradient at the very first step.
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 1, base_channels: int = 64,
                 channel_mults: Sequence[int] = (1, 2, 2, 4), num_res_blocks: int = 2,
                 attention_levels: Sequence[int] = (2,), dropout: float = 0.0, cond_channels: int = 0,
                 num_heads: int = 4, time_embedding: bool = True, *, num_head_channels: int | None = None,
                 mid_attention: bool = True, resblock_updown: bool = False, use_scale_shift_norm: bool = True,
                 max_norm_groups: int = 32):
        super().__init__()
        in_channels = _positive_int("in_channels", in_channels)
        out_channels = _positive_int("out_channels", out_channels)
        base_channels = _positive_int("base_channels", base_channels)
        num_res_blocks = _positive_int("num_res_blocks", num_res_blocks)
        if isinstance(cond_channels, bool) or not isinstance(cond_channels, int) or cond_channels < 0:
            raise ValueError(f"cond_channels must be an int >= 0, got {cond_channels!r}")
        channel_mults = tuple(channel_mults)
        if not channel_mults:
            raise ValueError("channel_mults must have at least one entry")
        for i, m in enumerate(channel_mults):
            _positive_int(f"channel_mults[{i}]", m)
        attention_levels = tuple(sorted(set(attention_levels)))
        for a in attention_levels:
            if isinstance(a, bool) or not isinstance(a, int) or not 0 <= a < len(channel_mults):
                raise ValueError(f"attention_levels entries must be level indices in [0, {len(channel_mults) - 1}], "
                                 f"got {a!r}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")

        self.in_channels, self.out_channels, self.cond_channels = in_channels, out_channels, cond_channels
        self.base_channels, self.channel_mults = base_channels, channel_mults
        self.num_res_blocks, self.attention_levels = num_res_blocks, attention_levels
        self.time_embedding = bool(time_embedding)
        self.num_levels = len(channel_mults)
        self.downsample_factor = 2 ** (self.num_levels - 1)

        emb_dim = 4 * base_channels if self.time_embedding else None
        self.time_embed = TimeEmbeddingMLP(base_channels, emb_dim, emb_dim, "silu") if self.time_embedding else None

        def res(cin, cout, **kw):
            return ResBlock(cin, cout, emb_dim, dropout, use_scale_shift_norm, max_norm_groups=max_norm_groups, **kw)

        def attn(ch):
            return AttentionBlock(ch, num_heads, num_head_channels, max_norm_groups)

        ch = base_channels * channel_mults[0]
        self.input_conv = nn.Conv2d(in_channels + cond_channels, ch, 3, padding=1)
        skip_channels = [ch]
        self.level_channels: list[int] = []

        # encoder: per level a ModuleList of (ResBlock, attention or Identity) pairs, then a down-sampler
        self.down_blocks = nn.ModuleList()
        self.downsamplers = nn.ModuleList()
        for level, mult in enumerate(channel_mults):
            blocks = nn.ModuleList()
            width = base_channels * mult
            for _ in range(num_res_blocks):
                blocks.append(nn.ModuleList([res(ch, width),
                                             attn(width) if level in attention_levels else nn.Identity()]))
                ch = width
                skip_channels.append(ch)
            self.down_blocks.append(blocks)
            self.level_channels.append(ch)
            if level < self.num_levels - 1:
                self.downsamplers.append(res(ch, ch, down=True) if resblock_updown else Downsample(ch, use_conv=True))
                skip_channels.append(ch)
            else:
                self.downsamplers.append(nn.Identity())

        self.middle_channels = ch
        self.middle = nn.ModuleList([res(ch, ch), attn(ch) if mid_attention else nn.Identity(), res(ch, ch)])

        # decoder
        self.up_blocks = nn.ModuleList()
        self.upsamplers = nn.ModuleList()
        for level in reversed(range(self.num_levels)):
            width = base_channels * channel_mults[level]
            blocks = nn.ModuleList()
            for _ in range(num_res_blocks + 1):
                blocks.append(nn.ModuleList([res(ch + skip_channels.pop(), width),
                                             attn(width) if level in attention_levels else nn.Identity()]))
                ch = width
            self.up_blocks.append(blocks)
            if level > 0:
                self.upsamplers.append(res(ch, ch, up=True) if resblock_updown else Upsample(ch, use_conv=True))
            else:
                self.upsamplers.append(nn.Identity())

        self.out_norm = group_norm(ch, max_norm_groups)
        self.out_act = nn.SiLU()
        self.out_conv = zero_module(nn.Conv2d(ch, out_channels, 3, padding=1))

    # ------------------------------------------------------------------------------------------
    def feature_shapes(self, height: int, width: int) -> dict:
        """Per-sample shapes ``(C, H', W')`` of the maps :meth:`encoder_features` returns.

        Returns ``{"encoder": [(C_l, H/2**l, W/2**l) for each level], "middle": (C, H', W')}``.
        """
        enc = [(c, height // 2 ** lv, width // 2 ** lv) for lv, c in enumerate(self.level_channels)]
        return {"encoder": enc, "middle": (self.middle_channels,) + enc[-1][1:]}

    def _prepare(self, x, t, cond):
        check_image_batch("x", x, self.in_channels, self.downsample_factor)
        if self.cond_channels:
            if cond is None:
                raise ValueError(f"cond is required: this UNet was built with cond_channels={self.cond_channels} "
                                 "(pass zeros for a null condition)")
            check_image_batch("cond", cond, self.cond_channels)
            if cond.shape[0] != x.shape[0] or cond.shape[2:] != x.shape[2:]:
                raise ValueError(f"cond must have shape {(x.shape[0], self.cond_channels) + tuple(x.shape[2:])} "
                                 f"to match x, got {tuple(cond.shape)}")
            if cond.device != x.device:
                raise ValueError(f"cond is on {cond.device} but x is on {x.device}")
            h = torch.cat([x, cond.to(x.dtype)], dim=1)
        else:
            if cond is not None:
                raise ValueError("cond was given but this UNet was built with cond_channels=0")
            h = x
        if self.time_embedding:
            if t is None:
                raise ValueError("t is required (B,) when time_embedding=True")
            emb = self.time_embed(check_timesteps("t", t, x.shape[0], x.device))
        else:
            emb = None
        return h, emb

    def _check_features(self, features, x) -> tuple[list, torch.Tensor | None]:
        if features is None:
            return [None] * self.num_levels, None
        if not isinstance(features, Mapping):
            raise TypeError(f"features must be a dict {{'encoder': [...], 'middle': tensor}}, "
                            f"got {type(features).__name__}")
        unknown = set(features) - {"encoder", "middle"}
        if unknown:
            raise ValueError(f"features has unknown keys {sorted(unknown)}; expected 'encoder' and/or 'middle'")
        shapes = self.feature_shapes(x.shape[2], x.shape[3])
        enc = features.get("encoder")
        if enc is None:
            enc = [None] * self.num_levels
        else:
            if isinstance(enc, torch.Tensor) or not isinstance(enc, Sequence):
                raise TypeError("features['encoder'] must be a list of tensors, one per encoder level")
            enc = list(enc)
            if len(enc) != self.num_levels:
                raise ValueError(f"features['encoder'] must have {self.num_levels} maps (one per level), "
                                 f"got {len(enc)}")
        mid = features.get("middle")
        checks = [(f"features['encoder'][{i}]", f, s) for i, (f, s) in enumerate(zip(enc, shapes["encoder"]))]
        checks.append(("features['middle']", mid, shapes["middle"]))
        for name, f, shape in checks:
            if f is None:
                continue
            if not isinstance(f, torch.Tensor):
                raise TypeError(f"{name} must be a tensor, got {type(f).__name__}")
            expected = (x.shape[0],) + tuple(shape)
            if tuple(f.shape) != expected:
                raise ValueError(f"{name} must have shape {expected}, got {tuple(f.shape)}")
            if f.device != x.device:
                raise ValueError(f"{name} is on {f.device} but x is on {x.device}")
        return enc, mid

    def _encode(self, h, emb, enc_feats, mid_feat):
        h = self.input_conv(h)
        skips = [h]
        level_outputs = []
        for level, (blocks, down) in enumerate(zip(self.down_blocks, self.downsamplers)):
            for block, attn in blocks:
                h = attn(block(h, emb))
                skips.append(h)
            if enc_feats[level] is not None:
                h = h + enc_feats[level].to(h.dtype)
                skips[-1] = h
            level_outputs.append(h)
            if level < self.num_levels - 1:
                h = down(h, emb) if isinstance(down, ResBlock) else down(h)
                skips.append(h)
        block1, attn, block2 = self.middle
        h = block2(attn(block1(h, emb)), emb)
        if mid_feat is not None:
            h = h + mid_feat.to(h.dtype)
        return h, skips, level_outputs

    def encoder_features(self, x: torch.Tensor, t=None, cond: torch.Tensor | None = None) -> dict:
        """Encoder-level and middle activations, ready to pass as ``features`` to a twin network.

        Parameters
        ----------
        x, t, cond
            As in :meth:`forward` (``t`` may be omitted when ``time_embedding=False``).

        Returns
        -------
        dict
            ``{"encoder": [(B, C_l, H/2**l, W/2**l) for l in levels], "middle": (B, C_mid, H', W')}``.
            Gradients flow unless the caller wraps the call in ``torch.no_grad()``.
        """
        h, emb = self._prepare(x, t, cond)
        mid, _, level_outputs = self._encode(h, emb, [None] * self.num_levels, None)
        return {"encoder": level_outputs, "middle": mid}

    def forward(self, x: torch.Tensor, t=None, cond: torch.Tensor | None = None,
                features: Mapping | None = None) -> torch.Tensor:
        """Run the network.

        Parameters
        ----------
        x : torch.Tensor
            ``(B, in_channels, H, W)``, ``H`` and ``W`` divisible by ``downsample_factor``.
        t : torch.Tensor or number
            ``(B,)`` timesteps (int or float, or a scalar for the whole batch); ignored when
            ``time_embedding=False``.
        cond : torch.Tensor, optional
            ``(B, cond_channels, H, W)``, concatenated to ``x``; required iff ``cond_channels > 0``.
        features : dict, optional
            ``{"encoder": [map per level or None], "middle": map}`` with the shapes of
            :meth:`encoder_features`; each map is added to the matching activation. Either key
            may be omitted.

        Returns
        -------
        torch.Tensor
            ``(B, out_channels, H, W)``.
        """
        h, emb = self._prepare(x, t, cond)
        enc_feats, mid_feat = self._check_features(features, x)
        h, skips, _ = self._encode(h, emb, enc_feats, mid_feat)
        for blocks, up in zip(self.up_blocks, self.upsamplers):
            for block, attn in blocks:
                h = attn(block(torch.cat([h, skips.pop()], dim=1), emb))
            if not isinstance(up, nn.Identity):
                h = up(h, emb) if isinstance(up, ResBlock) else up(h)
        return self.out_conv(self.out_act(self.out_norm(h)))

"""Network presets: tiny (CPU tests), GPU-practical and full (paper) sizes for every method.

Each preset is a frozen dataclass holding the constructor arguments plus the network's natural
input size, with ``build()`` returning fresh, randomly initialised module(s) and
``replace(**changes)`` returning a modified copy. Parameter counts (METHODS targets in brackets):

===========  ======================  ===================  =========================================
method       tiny                    gpu                  full
===========  ======================  ===================  =========================================
RED          0.29 M, 64²  [≈0.29 M]  14.48 M, 256²        14.48 M, 360²  [14.47 M each]
DREAM S1/S2  0.236 / 0.235 M, 64²    7.41 / 7.45 M, 192²  26.742 / 26.912 M, 256² [26.74 / 26.91 M]
DDIP         0.33 M, 32²             20.29 M, 128²        126.46 M, 128²  [≈126 M]
LegoPET      0.25 M (cDPM), 32²      8.95 M, 128²         35.74 M (cDPM), 256²  [35.71 M]
===========  ======================  ===================  =========================================

(PnPNet has no time embedding, so it is smaller: 0.23 / 8.23 / 32.85 M.) Choices the METHODS
text leaves open:

- LegoPET's backbone is the original DDPM U-Net (width 128, mults (1, 2, 2, 2), 2 ResBlocks per
  level, additive time conditioning, single-head attention at one level, dropout 0.1), whose
  count (35.7 M) is the paper's; the attention sits at the 32² level of a 256² input.
- DDIP's score network is guided diffusion's super-resolution U-Net: 3 slices of ``x_t`` plus 3
  MR slices in, 6 out (ε and the learned variance; use the first 3). With LoRA r = 4 on every
  Linear/Conv inside ResBlocks and attention blocks plus the non-embedding biases, 1,550,470
  parameters train (METHODS: ≈1.55 M).
- RED's GPU preset uses 256²: 180² is not divisible by 8.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from torch import nn

from .convnext import ConvNeXtUNet
from .restormer import CPEN, LatentDenoiser, TransformerRestorer
from .unet import UNet

__all__ = [
    "ConvNeXtUNetConfig",
    "DDIP_FULL",
    "DDIP_GPU",
    "DDIP_TINY",
    "DREAMNetsConfig",
    "DREAM_FULL",
    "DREAM_GPU",
    "DREAM_TINY",
    "LEGOPET_FULL",
    "LEGOPET_GPU",
    "LEGOPET_TINY",
    "LegoPETNetsConfig",
    "PRESETS",
    "RED_FULL",
    "RED_GPU",
    "RED_TINY",
    "UNetConfig",
    "get_config",
]


class _Config:
    def replace(self, **changes):
        """A copy with some fields changed (the presets themselves are frozen)."""
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class UNetConfig(_Config):
    """Arguments of :class:`~pettk.diffusion.nets.unet.UNet` plus the natural ``image_size`` (H, W)."""

    in_channels: int = 1
    out_channels: int = 1
    base_channels: int = 64
    channel_mults: tuple[int, ...] = (1, 2, 2, 4)
    num_res_blocks: int = 2
    attention_levels: tuple[int, ...] = (2,)
    dropout: float = 0.0
    cond_channels: int = 0
    num_heads: int = 4
    time_embedding: bool = True
    num_head_channels: int | None = None
    mid_attention: bool = True
    resblock_updown: bool = False
    use_scale_shift_norm: bool = True
    image_size: tuple[int, int] = (32, 32)

    def unet_kwargs(self) -> dict:
        """Constructor arguments for :class:`UNet` (everything but ``image_size``)."""
        kw = dataclasses.asdict(self)
        kw.pop("image_size")
        return kw

    def build(self) -> UNet:
        """A fresh :class:`UNet` with these settings."""
        return UNet(**self.unet_kwargs())


@dataclass(frozen=True)
class ConvNeXtUNetConfig(_Config):
    """Arguments of :class:`~pettk.diffusion.nets.convnext.ConvNeXtUNet` plus ``image_size``."""

    in_channels: int = 1
    out_channels: int = 1
    base_channels: int = 32
    channel_mults: tuple[int, ...] = (1, 2, 4, 8)
    init_channels: int | None = None
    time_dim: int | None = None
    attention_heads: int = 4
    attention_head_channels: int = 32
    convnext_mult: int = 2
    image_size: tuple[int, int] = (360, 360)

    def build(self) -> ConvNeXtUNet:
        """A fresh REN or DCN (call twice for the pair)."""
        kw = dataclasses.asdict(self)
        kw.pop("image_size")
        return ConvNeXtUNet(**kw)


@dataclass(frozen=True)
class DREAMNetsConfig(_Config):
    """DREAM's networks (METHODS §2.3, §2.9): CPEN-S1, CPEN-S2, restorer G and latent denoiser.

    ``prior_dim = 4·n_feats`` is the size of the compact prior ``z``.
    """

    in_channels: int = 3
    dim: int = 48
    num_blocks: tuple[int, int, int, int] = (3, 5, 6, 6)
    num_refinement_blocks: int = 4
    heads: tuple[int, int, int, int] = (1, 2, 4, 8)
    ffn_expansion: float = 2.0
    bias: bool = False
    n_feats: int = 64
    n_encoder_res: int = 5
    n_denoise_res: int = 1
    latent_timesteps: int = 4
    image_size: tuple[int, int] = (256, 256)

    @property
    def prior_dim(self) -> int:
        return 4 * self.n_feats

    def build_restorer(self) -> TransformerRestorer:
        """G: ``forward(x (B, 3, H, W), z (B, prior_dim)) -> (B, 3, H, W)``."""
        return TransformerRestorer(self.in_channels, self.in_channels, self.dim, self.num_blocks,
                                   self.num_refinement_blocks, self.heads, self.ffn_expansion, self.bias,
                                   self.prior_dim)

    def build_cpen(self, stage: int) -> CPEN:
        """CPEN-S1 (``stage=1``: low- and full-dose blocks) or CPEN-S2 (``stage=2``: low-dose only)."""
        if stage not in (1, 2):
            raise ValueError(f"stage must be 1 or 2, got {stage!r}")
        return CPEN(self.in_channels, self.n_feats, self.n_encoder_res, with_target=stage == 1)

    def build_denoiser(self) -> LatentDenoiser:
        """The stage-2 latent MLP ``forward(z_t, t, c) -> ẑ₀``."""
        return LatentDenoiser(self.prior_dim, self.n_denoise_res, self.latent_timesteps)

    def build(self) -> nn.ModuleDict:
        """``ModuleDict`` with keys ``cpen_s1``, ``cpen_s2``, ``restorer``, ``denoiser``.

        Stage 1 trains ``cpen_s1 + restorer``; stage 2 trains ``cpen_s2 + denoiser`` (+ the
        restorer, initialised from stage 1, in phase B).
        """
        return nn.ModuleDict({"cpen_s1": self.build_cpen(1), "cpen_s2": self.build_cpen(2),
                              "restorer": self.build_restorer(), "denoiser": self.build_denoiser()})


@dataclass(frozen=True)
class LegoPETNetsConfig(_Config):
    """LegoPET's PnPNet and cDPM (METHODS §5.2): one U-Net backbone, two instances.

    PnPNet: sinogram (padded to ``image_size``) → image, no time embedding. cDPM: ``x_t`` with
    the sinogram concatenated (``cond_channels = sino_channels``), ε out. Both share widths and
    resolutions, so ``pnpnet.encoder_features(sino)`` can be passed as ``features`` to the cDPM.
    """

    image_channels: int = 1
    sino_channels: int = 1
    base_channels: int = 128
    channel_mults: tuple[int, ...] = (1, 2, 2, 2)
    num_res_blocks: int = 2
    attention_levels: tuple[int, ...] = (3,)
    dropout: float = 0.1
    num_heads: int = 1
    use_scale_shift_norm: bool = False
    image_size: tuple[int, int] = (256, 256)

    def _backbone(self) -> UNetConfig:
        return UNetConfig(in_channels=self.image_channels, out_channels=self.image_channels,
                          base_channels=self.base_channels, channel_mults=self.channel_mults,
                          num_res_blocks=self.num_res_blocks, attention_levels=self.attention_levels,
                          dropout=self.dropout, num_heads=self.num_heads,
                          use_scale_shift_norm=self.use_scale_shift_norm, image_size=self.image_size)

    def pnpnet_config(self) -> UNetConfig:
        return self._backbone().replace(in_channels=self.sino_channels, time_embedding=False)

    def cdpm_config(self) -> UNetConfig:
        return self._backbone().replace(cond_channels=self.sino_channels)

    def build_pnpnet(self) -> UNet:
        """``forward(sino (B, 1, H, W)) -> image (B, 1, H, W)``."""
        return self.pnpnet_config().build()

    def build_cdpm(self) -> UNet:
        """``forward(x_t, t, cond=sino, features=pnpnet.encoder_features(sino)) -> ε``."""
        return self.cdpm_config().build()

    def build(self) -> nn.ModuleDict:
        """``ModuleDict`` with keys ``pnpnet`` and ``cdpm``."""
        return nn.ModuleDict({"pnpnet": self.build_pnpnet(), "cdpm": self.build_cdpm()})


# ---------------------------------------------------------------------------------------------
# presets (METHODS §2.9, §3.8, §4.7, §5.6)
# ---------------------------------------------------------------------------------------------

RED_TINY = ConvNeXtUNetConfig(base_channels=8, channel_mults=(1, 2, 4), image_size=(64, 64))
RED_GPU = ConvNeXtUNetConfig(image_size=(256, 256))  # 180² is not divisible by 8
RED_FULL = ConvNeXtUNetConfig(image_size=(360, 360))

DREAM_TINY = DREAMNetsConfig(dim=8, num_blocks=(1, 1, 1, 1), num_refinement_blocks=1, heads=(1, 1, 2, 2),
                             n_feats=8, n_encoder_res=1, image_size=(64, 64))
DREAM_GPU = DREAMNetsConfig(dim=32, num_blocks=(2, 3, 3, 4), num_refinement_blocks=2, heads=(1, 2, 4, 8),
                            n_feats=32, n_encoder_res=3, image_size=(192, 192))
DREAM_FULL = DREAMNetsConfig()

DDIP_TINY = UNetConfig(in_channels=1, out_channels=1, cond_channels=1, base_channels=16, channel_mults=(1, 2, 2),
                       num_res_blocks=1, attention_levels=(), num_heads=1, resblock_updown=True,
                       image_size=(32, 32))
DDIP_GPU = UNetConfig(in_channels=3, out_channels=3, cond_channels=3, base_channels=64,
                      channel_mults=(1, 1, 2, 2, 4), num_res_blocks=2, attention_levels=(), dropout=0.1,
                      num_head_channels=64, resblock_updown=True, image_size=(128, 128))
DDIP_FULL = UNetConfig(in_channels=3, out_channels=6, cond_channels=3, base_channels=128,
                       channel_mults=(1, 1, 2, 2, 4, 4), num_res_blocks=2, attention_levels=(), dropout=0.1,
                       num_head_channels=64, resblock_updown=True, image_size=(128, 128))

LEGOPET_TINY = LegoPETNetsConfig(base_channels=16, channel_mults=(1, 2), attention_levels=(1,), dropout=0.0,
                                 image_size=(32, 32))
LEGOPET_GPU = LegoPETNetsConfig(base_channels=64, image_size=(128, 128))
LEGOPET_FULL = LegoPETNetsConfig()

PRESETS = {
    "red": {"tiny": RED_TINY, "gpu": RED_GPU, "full": RED_FULL},
    "dream": {"tiny": DREAM_TINY, "gpu": DREAM_GPU, "full": DREAM_FULL},
    "ddip": {"tiny": DDIP_TINY, "gpu": DDIP_GPU, "full": DDIP_FULL},
    "legopet": {"tiny": LEGOPET_TINY, "gpu": LEGOPET_GPU, "full": LEGOPET_FULL},
}


def get_config(method: str, size: str = "tiny"):
    """The preset for ``method`` in {"red", "dream", "ddip", "legopet"} and ``size`` in {"tiny", "gpu", "full"}."""
    if method not in PRESETS:
        raise ValueError(f"method must be one of {sorted(PRESETS)}, got {method!r}")
    if size not in PRESETS[method]:
        raise ValueError(f"size must be one of {sorted(PRESETS[method])}, got {size!r}")
    return PRESETS[method][size]

"""Neural networks for the diffusion priors (they know nothing about noise schedules).

- :mod:`.layers`: time embeddings, norms, the guided-diffusion ResBlock, self-attention, resampling;
- :mod:`.unet`: :class:`UNet` (DDIP score network, LegoPET PnPNet and cDPM, feature injection);
- :mod:`.convnext`: :class:`ConvNeXtUNet` (RED's REN and DCN, linear attention);
- :mod:`.restormer`: DREAM's :class:`CPEN`, :class:`TransformerRestorer` (MDTA, GDFN, prior
  injection) and :class:`LatentDenoiser`;
- :mod:`.lora`: LoRA wrappers and helpers (DDIP's test-time adaptation);
- :mod:`.configs`: tiny / GPU-practical / full presets with ``build()``.
"""

from .configs import (
    DDIP_FULL,
    DDIP_GPU,
    DDIP_TINY,
    DREAM_FULL,
    DREAM_GPU,
    DREAM_TINY,
    LEGOPET_FULL,
    LEGOPET_GPU,
    LEGOPET_TINY,
    PRESETS,
    RED_FULL,
    RED_GPU,
    RED_TINY,
    ConvNeXtUNetConfig,
    DREAMNetsConfig,
    LegoPETNetsConfig,
    UNetConfig,
    get_config,
)
from .convnext import ConvNeXtBlock, ConvNeXtUNet, LinearAttention
from .layers import (
    AttentionBlock,
    ChannelLayerNorm,
    Downsample,
    ResBlock,
    SinusoidalEmbedding,
    TimeEmbeddingMLP,
    Upsample,
    group_norm,
    timestep_embedding,
)
from .lora import (
    LoRAConv1d,
    LoRAConv2d,
    LoRALayer,
    LoRALinear,
    inject_lora,
    lora_parameters,
    mark_only_lora_and_bias_trainable,
    merge_lora,
    reset_lora,
)
from .restormer import CPEN, GDFN, MDTA, LatentDenoiser, RestormerBlock, TransformerRestorer
from .unet import UNet

__all__ = [
    "AttentionBlock", "CPEN", "ChannelLayerNorm", "ConvNeXtBlock", "ConvNeXtUNet", "ConvNeXtUNetConfig",
    "DDIP_FULL", "DDIP_GPU", "DDIP_TINY", "DREAMNetsConfig", "DREAM_FULL", "DREAM_GPU", "DREAM_TINY",
    "Downsample", "GDFN", "LEGOPET_FULL", "LEGOPET_GPU", "LEGOPET_TINY", "LatentDenoiser", "LegoPETNetsConfig",
    "LinearAttention", "LoRAConv1d", "LoRAConv2d", "LoRALayer", "LoRALinear", "MDTA", "PRESETS", "RED_FULL",
    "RED_GPU", "RED_TINY", "ResBlock", "RestormerBlock", "SinusoidalEmbedding", "TimeEmbeddingMLP",
    "TransformerRestorer", "UNet", "UNetConfig", "Upsample", "get_config", "group_norm", "inject_lora",
    "lora_parameters", "mark_only_lora_and_bias_trainable", "merge_lora", "reset_lora", "timestep_embedding",
]

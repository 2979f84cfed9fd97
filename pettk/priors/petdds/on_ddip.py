"""PET-DDS on a DDIP network (:meth:`PETDDS.from_ddip`): the pieces of an image diffusion model —
network, noise schedule, configuration dict and the intensity reference — from a pretrained DDIP."""

from __future__ import annotations

import dataclasses

from ..ddip import DDIP
from ..ddip.data import DDIPImages
from .config import PETDDSConfig
from .reference import reference_statistics

__all__ = ["ddip_image_model"]


def ddip_image_model(ddip, config: PETDDSConfig | None = None, *, dataset=None):
    """``(net, schedule, diffusion_config, config)`` for :class:`PETDDS` from a DDIP prior (see
    :meth:`PETDDS.from_ddip`, which documents the arguments and errors)."""
    if not isinstance(ddip, DDIP):
        raise TypeError(f"ddip must be a DDIP prior, got {type(ddip).__name__}")
    dcfg = ddip.config
    if dcfg.slices != 1:
        raise ValueError(f"PET-DDS denoises single slices; this DDIP network takes {dcfg.slices}-slice slabs")
    if dcfg.conditional and not dcfg.mr_dropout > 0:
        raise ValueError("this MR-conditioned DDIP was pretrained without MR dropout: it knows no null condition, "
                         "so PET-DDS cannot guide it")
    config = config or PETDDSConfig()
    if not isinstance(config, PETDDSConfig):
        raise TypeError(f"config must be a PETDDSConfig, got {type(config).__name__}")
    net_fields = dataclasses.asdict(dcfg.net)
    image_size = tuple(int(v) for v in net_fields.pop("image_size"))
    diffusion_config = {"unet": net_fields, "schedule": {"kind": dcfg.schedule, "T": int(dcfg.T)},
                        "prediction": dcfg.prediction,
                        "data": {"normalisation": "ddip", "cond_field": "mr" if dcfg.conditional else None,
                                 "source": "ddip", "target_mean": float(dcfg.target_mean)}}
    changes = {"image_size": config.image_size or image_size}
    if config.reference_mean is None:
        if dataset is None:
            raise ValueError("PET-DDS on a DDIP network needs config.reference_mean or dataset= (the DDIP's "
                             "training data set folder) to measure it")
        images = DDIPImages.from_dataset(dataset, dcfg.replace(augment=False)).x[:, 0]
        changes["reference_mean"] = reference_statistics(images, "ddip", config.mask_threshold)["reference_mean"]
    config = config.replace(**changes)
    return ddip.net, dcfg.build_schedule(), diffusion_config, config

"""Default models shipped inside the package (no download at run time).

Each model is ``<name>.safetensors`` (weights) + ``<name>.json`` (configuration, written by the
prior's ``save``) + ``<name>.md`` (model card: data, configuration, steps, hardware, training time,
held-out metrics), trained by pettk's own training commands on pettk's simulator.

>>> import pettk.models
>>> pettk.models.available()          # doctest: +SKIP
['ddip-fdg', 'ddip-fdg-128', 'dream-drf20', 'legopet', 'pet-dds', 'red-drf20']
>>> red = pettk.models.load("red-drf20")   # doctest: +SKIP

:func:`load_checkpoint_for` loads a user checkpoint of a given method the same way.
"""

from __future__ import annotations

import importlib
from pathlib import Path

__all__ = ["REGISTRY", "LOADERS", "available", "path_of", "card", "load", "load_checkpoint_for"]

_HERE = Path(__file__).resolve().parent

#: Shipped model name → the method it belongs to.
REGISTRY = {"red-drf20": "red", "dream-drf20": "dream", "ddip-fdg": "ddip", "legopet": "legopet",
            "ddip-fdg-128": "ddip", "pet-dds": "pet-dds"}

#: Method → ``(module, class)`` whose ``load(path, device)`` reads its checkpoints.
LOADERS = {"red": ("pettk.priors.red", "RED"), "dream": ("pettk.priors.dream", "DREAM"),
           "ddip": ("pettk.priors.ddip", "DDIP"), "legopet": ("pettk.priors.legopet", "LegoPET"),
           "pet-dds": ("pettk.priors.petdds", "PETDDS")}


def path_of(name: str) -> Path:
    """The weights file of the shipped model ``name``."""
    if name not in REGISTRY:
        raise ValueError(f"unknown model {name!r}; pettk ships {', '.join(sorted(REGISTRY))}")
    return _HERE / f"{name}.safetensors"


def available() -> list[str]:
    """Names of the shipped models whose weights are present in this installation."""
    return sorted(n for n in REGISTRY if path_of(n).is_file())


def card(name: str) -> str:
    """The model card (Markdown) of the shipped model ``name``."""
    path = path_of(name).with_suffix(".md")
    if not path.is_file():
        raise FileNotFoundError(f"model {name!r} has no card at {path}")
    return path.read_text()


def load_checkpoint_for(method: str, path, device="cpu"):
    """Load a checkpoint (``.safetensors`` written by the prior's ``save``) of ``method``."""
    if method not in LOADERS:
        raise ValueError(f"method must be one of {', '.join(sorted(LOADERS))}, got {method!r}")
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"a {method} checkpoint is a .safetensors file, got {str(path)!r}")
    if not path.is_file():
        raise FileNotFoundError(f"no {method} checkpoint at {path}")
    module, cls = LOADERS[method]
    return getattr(importlib.import_module(module), cls).load(path, device=device)


def load(name: str, device="cpu"):
    """Load the shipped model ``name`` (see :func:`available`) onto ``device``."""
    path = path_of(name)
    if not path.is_file():
        raise FileNotFoundError(f"model {name!r} is not in this installation ({path} is missing); "
                                f"available: {', '.join(available()) or 'none'}")
    return load_checkpoint_for(REGISTRY[name], path, device=device)

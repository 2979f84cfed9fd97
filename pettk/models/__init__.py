"""Default models shipped inside the package (no download at run time).

Each model is ``<name>.safetensors`` (weights) + ``<name>.json`` (configuration, written by the
prior's ``save``) + ``<name>.md`` (model card: data, configuration, steps, hardware, training time,
held-out metrics), trained by pettk's own training commands on pettk's simulator. A *derived*
model (:data:`DERIVED`) has no weights of its own: its ``<name>.json`` holds the settings of a
method run on another shipped model's network (e.g. ``pet-dds-mr``: PET-DDS with MR guidance on
``ddip-fdg-128-v2``'s MR-conditioned U-Net), so one network is shipped once.

A model's JSON may also hold ``"settings_by_drf"``: ``{"20": {"final_em_iterations": 8}, ...}``,
reconstruction settings of an image prior tuned (on validation data, as its card says) for data of
that dose-reduction factor; :func:`tuned_settings` reads them, ``load(name, drf=20)``, ``pettk
evaluate`` (2D, per DRF) and ``pettk recon --drf`` apply them.

>>> import pettk.models
>>> pettk.models.available()          # doctest: +SKIP
['ddip-fdg', 'ddip-fdg-128', 'ddip-fdg-128-v2', 'dream-drf100-128', 'dream-drf20', 'dream-drf20-128', 'legopet',
 'legopet-drf100-128', 'legopet-drf20-128', 'pet-dds', 'pet-dds-mr', 'red-drf100-128', 'red-drf20', 'red-drf20-128']
>>> red = pettk.models.load("red-drf20")   # doctest: +SKIP

:func:`load_checkpoint_for` loads a user checkpoint of a given method the same way.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

__all__ = ["REGISTRY", "LOADERS", "DERIVED", "available", "path_of", "config_path", "card", "load",
           "load_checkpoint_for", "with_settings", "tuned_settings", "settings_for_drf"]

_HERE = Path(__file__).resolve().parent

#: Shipped model name → the method it belongs to.
REGISTRY = {"red-drf20": "red", "dream-drf20": "dream", "ddip-fdg": "ddip", "legopet": "legopet",
            "ddip-fdg-128": "ddip", "pet-dds": "pet-dds", "pet-dds-mr": "pet-dds", "dream-drf20-128": "dream",
            "dream-drf100-128": "dream", "red-drf20-128": "red", "red-drf100-128": "red",
            "legopet-drf20-128": "legopet", "legopet-drf100-128": "legopet", "ddip-fdg-128-v2": "ddip"}

#: Derived model → the shipped model whose network it runs (PET-DDS on a DDIP network, see
#: :meth:`pettk.priors.PETDDS.from_ddip`).
DERIVED = {"pet-dds-mr": "ddip-fdg-128-v2"}

#: Method → ``(module, class)`` whose ``load(path, device)`` reads its checkpoints.
LOADERS = {"red": ("pettk.priors.red", "RED"), "dream": ("pettk.priors.dream", "DREAM"),
           "ddip": ("pettk.priors.ddip", "DDIP"), "legopet": ("pettk.priors.legopet", "LegoPET"),
           "pet-dds": ("pettk.priors.petdds", "PETDDS")}


def _known(name: str) -> str:
    if name not in REGISTRY:
        raise ValueError(f"unknown model {name!r}; pettk ships {', '.join(sorted(REGISTRY))}")
    return name


def path_of(name: str) -> Path:
    """The weights file of the shipped model ``name`` (of a derived model: its base model's)."""
    return _HERE / f"{DERIVED.get(_known(name), name)}.safetensors"


def config_path(name: str) -> Path:
    """The JSON configuration of the shipped model ``name`` (of a derived model: its own settings)."""
    return _HERE / f"{_known(name)}.json"


def available() -> list[str]:
    """Names of the shipped models whose weights (and, for a derived model, settings) are present."""
    return sorted(n for n in REGISTRY if path_of(n).is_file() and (n not in DERIVED or config_path(n).is_file()))


def card(name: str) -> str:
    """The model card (Markdown) of the shipped model ``name``."""
    path = _HERE / f"{_known(name)}.md"
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


def load(name: str, device="cpu", drf: float | None = None):
    """Load the shipped model ``name`` (see :func:`available`) onto ``device``; with ``drf``, with
    its settings tuned for that dose-reduction factor (:func:`settings_for_drf`)."""
    path = path_of(name)
    for needed in (path, config_path(name)):
        if not needed.is_file():
            raise FileNotFoundError(f"model {name!r} is not in this installation ({needed} is missing); "
                                    f"available: {', '.join(available()) or 'none'}")
    tuned = tuned_settings(name) if drf is not None else {}
    model = _load_derived(name, device) if name in DERIVED else load_checkpoint_for(REGISTRY[name], path, device=device)
    return model if drf is None else settings_for_drf(model, tuned, drf, name)


def _settings_json(source) -> Path:
    """The JSON beside a model: a shipped name's configuration, or the checkpoint's (the path
    :func:`pettk.io.checkpoint.save_checkpoint` writes it to)."""
    from ..io.checkpoint import config_json_path

    if isinstance(source, str) and source in REGISTRY:
        return config_path(source)
    return config_json_path(Path(source))


def tuned_settings(source) -> dict[float, dict]:
    """``{drf: {field: value}}``: the reconstruction settings tuned per dose-reduction factor that the
    model's JSON holds under ``"settings_by_drf"`` (a shipped name, or a checkpoint path whose
    ``.json`` holds them); ``{}`` when it holds none. The values are checked when applied
    (:func:`settings_for_drf`)."""
    path = _settings_json(source)
    if not path.is_file():
        return {}
    table = json.loads(path.read_text()).get("settings_by_drf", {})
    if not isinstance(table, dict):
        raise ValueError(f"{path}: settings_by_drf must map a DRF to {{field: value}}, got {type(table).__name__}")
    out = {}
    for key, changes in table.items():
        try:
            drf = float(key)
        except ValueError:
            drf = float("nan")
        if not drf > 0 or not isinstance(changes, dict):
            raise ValueError(f"{path}: settings_by_drf entries are \"DRF\" (> 0): {{field: value}}, got {key!r}: "
                             f"{changes!r}")
        out[drf] = dict(changes)
    return out


def settings_for_drf(model, tuned: dict, drf: float, name: str = "the model", *, strict: bool = True, **changes):
    """``model`` with its settings ``tuned[drf]`` (from :func:`tuned_settings`) and then ``changes``
    applied by :func:`with_settings`. With ``strict``, a model with tuned settings refuses a DRF it
    has none for (``ValueError`` naming the DRFs it has); otherwise, and for a model without any,
    it keeps its own settings there."""
    if strict and tuned and float(drf) not in tuned:
        raise ValueError(f"{name} has settings tuned for DRF {', '.join(f'{d:g}' for d in sorted(tuned))}, "
                         f"not {float(drf):g}")
    return with_settings(model, **{**tuned.get(float(drf), {}), **changes})


def _load_derived(name: str, device):
    """A derived model: PET-DDS with its settings (``<name>.json``) on its base DDIP's network."""
    from ..priors.petdds import PETDDS, PETDDSConfig

    meta = json.loads(config_path(name).read_text())
    if meta.get("method") != "PET-DDS" or meta.get("network_of") != DERIVED[name]:
        raise ValueError(f"{config_path(name)} is not the settings of PET-DDS on {DERIVED[name]}'s network")
    return PETDDS.from_ddip(load(DERIVED[name], device=device), PETDDSConfig.from_dict(meta["petdds_config"]))


def with_settings(model, **changes):
    """A loaded image prior (DDIP, PET-DDS) with some reconstruction settings changed, sharing its
    network: e.g. ``with_settings(ddip, final_em_iterations=8)`` for DRF-20-like counts (the
    setting the ``ddip-fdg-128`` card measured there), ``with_settings(petdds, axial_beta=0.3)``
    in 3D. Values are checked by the model's configuration; fields of the network are refused.
    Without changes the model itself is returned.
    """
    if not changes:
        return model
    if not hasattr(model, "replace"):
        raise ValueError(f"a {type(model).__name__} model takes no setting changes (only the image priors DDIP and "
                         "PET-DDS do)")
    from dataclasses import fields

    known = {f.name for f in fields(model.config)}
    unknown = sorted(set(changes) - known)
    if unknown:
        raise ValueError(f"{type(model).__name__} has no settings {unknown}; "
                         f"its settings are {', '.join(sorted(known))}")
    return model.replace(**changes)

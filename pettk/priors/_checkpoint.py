"""Checkpoint I/O shared by the learned priors: several named networks in one ``.safetensors``
file (weights ``<network>.<param>``) with the method's name and metadata in its JSON sidecar
(:func:`pettk.io.checkpoint.save_checkpoint`)."""

from __future__ import annotations

from pathlib import Path

import torch

from ..io.checkpoint import load_checkpoint, save_checkpoint

__all__ = ["save_prior", "load_prior", "save_networks", "load_networks"]


def save_prior(path, method: str, state: dict, meta: dict) -> Path:
    """Write the tensors ``state`` with ``{"method": method, **meta}`` as metadata."""
    return save_checkpoint(path, state, {"method": method, **meta})


def load_prior(path, method: str, device="cpu") -> tuple[dict, dict]:
    """Read ``(state, meta)`` of a file written by :func:`save_prior`; ``ValueError`` when its method
    is not ``method``."""
    state, meta = load_checkpoint(path, device=device)
    if meta.get("method") != method:
        raise ValueError(f"{path} is not a {method} checkpoint (method={meta.get('method')!r})")
    return state, meta


def save_networks(path, method: str, networks: dict, meta: dict) -> Path:
    """Write the ``state_dict`` of every ``networks[name]`` (``None`` entries skipped) under the
    prefix ``name.``, with ``{"method": method, **meta}`` as metadata. Returns the path written."""
    state: dict[str, torch.Tensor] = {}
    for name, net in networks.items():
        if net is not None:
            state.update({f"{name}.{k}": v for k, v in net.state_dict().items()})
    return save_prior(path, method, state, meta)


def load_networks(path, method: str, device="cpu") -> tuple[dict[str, dict], dict]:
    """Read a file written by :func:`save_networks`: ``({name: state_dict}, meta)``.

    Raises ``ValueError`` when the file's method is not ``method``.
    """
    state, meta = load_prior(path, method, device=device)
    states: dict[str, dict] = {}
    for key, value in state.items():
        name, _, param = key.partition(".")
        states.setdefault(name, {})[param] = value
    return states, meta

"""Model checkpoints: tensors in safetensors, configuration in JSON (never pickle).

``save_checkpoint(path, state_dict, config)`` writes ``path`` (``.safetensors``) and
``path.with_suffix(".json")`` atomically; ``load_checkpoint(path)`` returns ``(state_dict,
config)``. The JSON carries the pettk version and any JSON-serialisable configuration.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .._version import __version__
from .atomic import atomic_path

__all__ = ["save_checkpoint", "load_checkpoint"]


def _config_path(path: Path) -> Path:
    return path.with_suffix(".json")


def save_checkpoint(path, state_dict: dict, config: dict | None = None) -> Path:
    """Write tensors to ``path`` (must end in ``.safetensors``) and ``config`` next to it."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"path must end in .safetensors, got {str(path)!r}")
    if not isinstance(state_dict, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise TypeError("state_dict must be a dict of tensors (e.g. module.state_dict())")
    meta = {"pettk_version": __version__, "config": config or {}}
    text = json.dumps(meta, indent=2, sort_keys=True)  # fails early on non-serialisable config
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp))
    with atomic_path(_config_path(path)) as tmp:
        tmp.write_text(text)
    return path


def load_checkpoint(path, device="cpu") -> tuple[dict, dict]:
    """Read ``(state_dict, config)`` written by :func:`save_checkpoint`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    state = load_file(str(path), device=str(device))
    cfg_path = _config_path(path)
    config = json.loads(cfg_path.read_text())["config"] if cfg_path.is_file() else {}
    return state, config

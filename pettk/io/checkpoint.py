"""Model checkpoints: tensors in safetensors, configuration in JSON (never pickle).

``save_checkpoint(path, state_dict, config)`` writes ``path`` (``.safetensors``) and
``path.with_suffix(".json")`` atomically; ``load_checkpoint(path)`` returns ``(state_dict,
config)``. The JSON is ``{"pettk_version": ..., "config": {...}}``: the pettk version and any
JSON-serialisable configuration dict (tuples come back as lists).

:func:`save_checkpoint` refuses, before writing anything, what :func:`load_checkpoint` could not
read back: non-string keys, the key ``'__metadata__'`` (reserved by the safetensors header),
tensors that share memory (tied weights: save independent copies, e.g. ``v.clone()``), complex
dtypes, sparse/quantized/meta tensors, a configuration that is not a JSON-serialisable dict.
:func:`load_checkpoint` raises :class:`~pettk.io.FileFormatError` naming the file for a damaged
or foreign safetensors file or configuration.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .._version import __version__
from .atomic import atomic_path
from .errors import FileFormatError, as_path, existing_file, reading

__all__ = ["save_checkpoint", "load_checkpoint", "config_json_path"]

#: Key the safetensors header reserves for its string metadata; no tensor can have it.
_RESERVED_KEY = "__metadata__"


def config_json_path(path: Path) -> Path:
    """The JSON configuration :func:`save_checkpoint` writes beside the weights file ``path``."""
    return path.with_suffix(".json")


def _checked_tensors(state_dict) -> dict[str, torch.Tensor]:
    """The tensors to write (detached, on the CPU, contiguous), after refusing what safetensors
    cannot round-trip."""
    if not isinstance(state_dict, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise TypeError("state_dict must be a dict of tensors (e.g. module.state_dict())")
    tensors = {}
    for key, value in state_dict.items():
        if not isinstance(key, str):
            raise TypeError(f"state_dict keys must be strings, got {key!r} ({type(key).__name__})")
        if key == _RESERVED_KEY:
            raise ValueError(f"state_dict key {_RESERVED_KEY!r} is reserved by the safetensors format; rename it")
        if value.layout != torch.strided or value.is_quantized or value.device.type == "meta":
            kind = "quantized" if value.is_quantized else ("meta" if value.device.type == "meta" else str(value.layout))
            raise TypeError(f"state_dict[{key!r}] is a {kind} tensor; safetensors stores dense tensors only")
        if value.is_complex():
            raise TypeError(f"state_dict[{key!r}] has complex dtype {value.dtype}; checkpoints store real tensors "
                            "(save torch.view_as_real(t) instead)")
        tensors[key] = value.detach().to("cpu").contiguous()
    # tensors sharing memory (tied weights, views) cannot be written without duplicating them
    owners: dict[int, str] = {}
    for key, t in tensors.items():
        storage = t.untyped_storage()
        if storage.nbytes() == 0:
            continue
        first = owners.setdefault(storage.data_ptr(), key)
        if first != key:
            raise ValueError(f"state_dict[{first!r}] and state_dict[{key!r}] share memory (tied weights or views); "
                             "save independent copies (e.g. {k: v.clone() for k, v in state.items()}) or drop one")
    return tensors


def save_checkpoint(path, state_dict: dict, config: dict | None = None) -> Path:
    """Write tensors to ``path`` (must end in ``.safetensors``) and ``config`` next to it.

    Parameters
    ----------
    path : str or os.PathLike
        The weights file; the configuration goes to the same name with ``.json``.
    state_dict : dict of str to torch.Tensor
        Real (non-complex) dense tensors that do not share memory (see the module docstring).
    config : dict, optional
        JSON-serialisable configuration (``None`` means ``{}``).

    Everything is checked before anything is written; both files are written atomically.
    """
    path = as_path(path, "path")
    if path.suffix != ".safetensors":
        raise ValueError(f"path must end in .safetensors, got {str(path)!r}")
    tensors = _checked_tensors(state_dict)
    if config is not None and not isinstance(config, dict):
        raise TypeError(f"config must be a dict or None, got {type(config).__name__}")
    meta = {"pettk_version": __version__, "config": config or {}}
    text = json.dumps(meta, indent=2, sort_keys=True)  # fails early on non-serialisable config
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp))
    with atomic_path(config_json_path(path)) as tmp:
        tmp.write_text(text)
    return path


def _device(device) -> torch.device:
    if device is None:
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (TypeError, RuntimeError, ValueError) as exc:
        raise ValueError(f"device must name a torch device ('cpu', 'cuda', 'cuda:0', ...), got {device!r}") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r}: CUDA is not available on this machine")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return dev


def load_checkpoint(path, device="cpu") -> tuple[dict, dict]:
    """Read ``(state_dict, config)`` written by :func:`save_checkpoint`.

    The tensors are placed on ``device`` (``None`` means the CPU). A missing ``.json`` next to the weights gives
    ``config == {}``. Raises :class:`FileNotFoundError` when there is no file at ``path``,
    :class:`~pettk.io.FileFormatError` (a ``ValueError``) naming the file when the weights or the
    configuration cannot be read (damaged, truncated, not safetensors/JSON, configuration not of
    the form ``{"config": {...}}``), and :class:`ValueError` for a device that does not exist.
    """
    path = existing_file(path, "checkpoint")
    dev = _device(device)
    with reading(path, "checkpoint (safetensors)"):
        state = load_file(str(path), device="cpu")
    if dev.type != "cpu":
        state = {k: v.to(dev) for k, v in state.items()}
    cfg_path = config_json_path(path)
    if not cfg_path.exists():
        return state, {}
    cfg_path = existing_file(cfg_path, "checkpoint configuration")
    with reading(cfg_path, "checkpoint configuration (JSON)"):
        meta = json.loads(cfg_path.read_text(encoding="utf-8"))
    if not isinstance(meta, dict) or not isinstance(meta.get("config"), dict):
        raise FileFormatError(f"{cfg_path}: not a pettk checkpoint configuration (expected a JSON object with a "
                              "'config' object)")
    return state, meta["config"]

"""Low-rank adapters (LoRA) for ``nn.Linear``, ``nn.Conv1d`` and ``nn.Conv2d`` (DDIP, METHODS §4.3–4.4).

A wrapped layer computes ``base(x) + (alpha / r) · up(down(dropout(x)))``:

- ``base`` is the original layer, frozen (its weight and bias get ``requires_grad=False``);
- ``down`` maps the input to ``r`` channels (``Linear(in, r)``, or a conv with the base's kernel,
  stride, padding and dilation but ``groups=1``), initialised normal with std ``1/r``, no bias;
- ``up`` maps ``r`` back to the output (``Linear(r, out)`` / 1×1 conv), **zero-initialised**, so
  a freshly wrapped model computes exactly what the base did.

Trainable parameters per wrapped layer: ``r·(in + out)`` for a ``Linear`` and
``r·(in·k₁·k₂ + out)`` for a ``Conv2d`` (``r·(in·k + out)`` for ``Conv1d``).

Helpers: :func:`inject_lora` (wrap matching layers in place), :func:`lora_parameters`,
:func:`reset_lora` (fresh adapters, and the biases restored to their values when
:func:`mark_only_lora_and_bias_trainable` ran), :func:`mark_only_lora_and_bias_trainable`
(DDIP fine-tunes the adapters and the non-embedding biases), :func:`merge_lora` (fold the update
into plain layers).

Note that wrapping renames the base parameters (``conv.weight`` → ``conv.base.weight``): load
pretrained weights before :func:`inject_lora`.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable, Iterator

import torch
from torch import nn

__all__ = [
    "LoRAConv1d",
    "LoRAConv2d",
    "LoRALayer",
    "LoRALinear",
    "inject_lora",
    "lora_parameters",
    "mark_only_lora_and_bias_trainable",
    "merge_lora",
    "reset_lora",
]

_SUPPORTED = (nn.Linear, nn.Conv1d, nn.Conv2d)
_BIAS_SNAPSHOT = "_lora_bias_snapshot"


class LoRALayer(nn.Module, metaclass=abc.ABCMeta):
    """Common part of the LoRA wrappers: frozen ``base`` + ``scaling · up(down(dropout(x)))``.

    Parameters
    ----------
    base : nn.Module
        The layer to adapt; its parameters are frozen.
    rank : int
        ``r >= 1``.
    alpha : float, optional
        Scale numerator; the update is multiplied by ``alpha / r``. Default ``alpha = r`` (scale 1,
        as in DDIP).
    dropout : float
        Dropout on the LoRA path input (DDIP uses 0.1).
    """

    def __init__(self, base: nn.Module, rank: int, alpha: float | None = None, dropout: float = 0.0):
        super().__init__()
        if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
            raise ValueError(f"rank must be an int >= 1, got {rank!r}")
        if alpha is not None and (isinstance(alpha, bool) or not float(alpha) > 0):
            raise ValueError(f"alpha must be > 0, got {alpha!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.base = base
        for p in self.base.parameters():
            p.requires_grad_(False)
        self.rank = rank
        self.alpha = float(alpha) if alpha is not None else float(rank)
        self.scaling = self.alpha / rank
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.lora_down, self.lora_up = self._make_factors()
        self.reset_lora_parameters()

    @abc.abstractmethod
    def _make_factors(self) -> tuple[nn.Module, nn.Module]:
        """The ``(down, up)`` factor modules for ``self.base`` and ``self.rank``."""

    @torch.no_grad()
    def reset_lora_parameters(self, generator: torch.Generator | None = None) -> None:
        """Redraw ``down ~ N(0, σ²)`` with ``σ = 1/r`` and zero ``up``: the layer again equals its base."""
        w = self.lora_down.weight
        if generator is None:
            nn.init.normal_(w, 0.0, 1.0 / self.rank)
        elif not w.is_meta:
            draw = torch.randn(w.shape, generator=generator, device=generator.device, dtype=w.dtype)
            w.copy_(draw.to(w.device) / self.rank)
        nn.init.zeros_(self.lora_up.weight)

    @abc.abstractmethod
    def delta_weight(self) -> torch.Tensor:
        """The dense update ``scaling · up ∘ down`` in the base weight's shape."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + self.scaling * self.lora_up(self.lora_down(self.dropout(x)))

    def extra_repr(self) -> str:
        return f"rank={self.rank}, alpha={self.alpha:g}"


class LoRALinear(LoRALayer):
    """LoRA around an ``nn.Linear``: ``r·(in_features + out_features)`` trainable parameters."""

    def __init__(self, base: nn.Linear, rank: int = 4, alpha: float | None = None, dropout: float = 0.0):
        if not isinstance(base, nn.Linear):
            raise TypeError(f"base must be nn.Linear, got {type(base).__name__}")
        super().__init__(base, rank, alpha, dropout)

    def _make_factors(self):
        b = self.base
        kw = dict(device=b.weight.device, dtype=b.weight.dtype)
        down = nn.Linear(b.in_features, self.rank, bias=False, **kw)
        return down, nn.Linear(self.rank, b.out_features, bias=False, **kw)

    def delta_weight(self) -> torch.Tensor:
        return self.scaling * self.lora_up.weight @ self.lora_down.weight


class _LoRAConv(LoRALayer):
    _conv: type = nn.Conv2d

    def __init__(self, base, rank: int = 4, alpha: float | None = None, dropout: float = 0.0):
        if type(base) is not self._conv:
            raise TypeError(f"base must be {self._conv.__name__}, got {type(base).__name__}")
        if base.padding_mode != "zeros" and isinstance(base.padding, str):
            raise ValueError("LoRA conv wrappers support zero padding given as numbers only")
        super().__init__(base, rank, alpha, dropout)

    def _make_factors(self):
        b = self.base
        kw = dict(device=b.weight.device, dtype=b.weight.dtype)
        down = self._conv(b.in_channels, self.rank, b.kernel_size, stride=b.stride, padding=b.padding,
                          dilation=b.dilation, bias=False, padding_mode=b.padding_mode, **kw)
        up = self._conv(self.rank, b.out_channels, 1, bias=False, **kw)
        return down, up

    def delta_weight(self) -> torch.Tensor:
        """Dense update ``(out, in, *k)``; for a grouped base conv the caller must not merge it."""
        up = self.lora_up.weight.flatten(1)                         # (out, r)
        down = self.lora_down.weight.flatten(1)                     # (r, in·k...)
        return self.scaling * (up @ down).reshape((up.shape[0],) + tuple(self.lora_down.weight.shape[1:]))


class LoRAConv1d(_LoRAConv):
    """LoRA around an ``nn.Conv1d``: ``r·(in·k + out)`` trainable parameters."""

    _conv = nn.Conv1d


class LoRAConv2d(_LoRAConv):
    """LoRA around an ``nn.Conv2d``: ``r·(in·k₁·k₂ + out)`` trainable parameters.

    The down-projection uses the base's kernel, stride, padding and dilation with ``groups=1``, so
    the update of a grouped (e.g. depthwise) conv is a dense low-rank conv.
    """

    _conv = nn.Conv2d


_WRAPPERS = {nn.Linear: LoRALinear, nn.Conv1d: LoRAConv1d, nn.Conv2d: LoRAConv2d}


def _matcher(targets) -> Callable[[str, nn.Module, tuple[nn.Module, ...]], bool]:
    if targets is None:
        return lambda name, layer, ancestors: True
    if callable(targets) and not isinstance(targets, type):
        return lambda name, layer, ancestors: bool(targets(name, layer))
    if isinstance(targets, (str, type)):
        targets = (targets,)
    try:
        items = tuple(targets)
    except TypeError:
        raise TypeError(f"targets must be None, a callable, or a sequence of name substrings / module types, "
                        f"got {targets!r}") from None
    strings = [t for t in items if isinstance(t, str)]
    types = tuple(t for t in items if isinstance(t, type) and issubclass(t, nn.Module))
    if len(strings) + len(types) != len(items) or not items:
        raise TypeError(f"targets entries must be str (name substrings) or nn.Module subclasses, got {items!r}")

    def match(name, layer, ancestors):
        if any(s in name for s in strings):
            return True
        return bool(types) and (isinstance(layer, types) or any(isinstance(a, types) for a in ancestors))

    return match


def inject_lora(module: nn.Module, rank: int = 4, alpha: float | None = None, targets=None, *,
                dropout: float = 0.0, freeze_rest: bool = True) -> list[str]:
    """Wrap the matching ``Linear``/``Conv1d``/``Conv2d`` layers of ``module`` in place.

    Parameters
    ----------
    module : nn.Module
        The model to adapt (modified in place).
    rank : int
        LoRA rank ``r``.
    alpha : float, optional
        The update is scaled by ``alpha / r``; default ``alpha = r``.
    targets : None, callable, or sequence of str / nn.Module types
        Which layers to wrap (only ``Linear``, ``Conv1d`` and ``Conv2d`` are ever wrapped):
        ``None`` → all of them; a callable ``(qualified_name, layer) -> bool``; otherwise a layer is
        wrapped if its qualified name contains one of the strings, or it or one of its ancestors is
        an instance of one of the types (e.g. ``(ResBlock, AttentionBlock)`` for DDIP).
    dropout : float
        Dropout on the LoRA path.
    freeze_rest : bool
        Also set ``requires_grad=False`` on every other parameter of ``module`` (default), so only
        the adapters train; see :func:`mark_only_lora_and_bias_trainable` to add the biases.

    Returns
    -------
    list of str
        Qualified names of the wrapped layers (empty when nothing matched).

    Raises
    ------
    TypeError
        ``module`` is not an ``nn.Module`` or ``targets`` has the wrong type.
    ValueError
        ``module`` already contains LoRA layers (wrapping twice is refused).
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be an nn.Module, got {type(module).__name__}")
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ValueError(f"rank must be an int >= 1, got {rank!r}")
    if any(isinstance(m, LoRALayer) for m in module.modules()):
        raise ValueError("module already contains LoRA layers; call merge_lora() or rebuild it before injecting again")
    match = _matcher(targets)
    if freeze_rest:
        for p in module.parameters():
            p.requires_grad_(False)
    chosen: list[tuple[nn.Module, str, str, nn.Module]] = []

    def visit(parent: nn.Module, prefix: str, ancestors: tuple[nn.Module, ...]):
        for child_name, child in parent.named_children():
            qual = f"{prefix}.{child_name}" if prefix else child_name
            if type(child) in _WRAPPERS and match(qual, child, ancestors + (parent,)):
                chosen.append((parent, child_name, qual, child))
            else:
                visit(child, qual, ancestors + (parent,))

    visit(module, "", ())
    for parent, child_name, _, child in chosen:
        setattr(parent, child_name, _WRAPPERS[type(child)](child, rank, alpha, dropout))
    return [qual for _, _, qual, _ in chosen]


def _lora_layers(module: nn.Module) -> Iterator[LoRALayer]:
    return (m for m in module.modules() if isinstance(m, LoRALayer))


def lora_parameters(module: nn.Module) -> list[nn.Parameter]:
    """All LoRA factor parameters (``lora_down``/``lora_up`` weights) of ``module``."""
    params: list[nn.Parameter] = []
    for layer in _lora_layers(module):
        params += [layer.lora_down.weight, layer.lora_up.weight]
    return params


def _bias_names(module: nn.Module, exclude: Iterable[str]) -> list[str]:
    exclude = tuple(exclude)
    return [n for n, _ in module.named_parameters()
            if n.split(".")[-1] == "bias" and not any(e in n for e in exclude)]


def mark_only_lora_and_bias_trainable(module: nn.Module, bias: bool = True,
                                      exclude: Iterable[str] = ("time_embed", "emb_proj")) -> list[nn.Parameter]:
    """Freeze everything except the LoRA factors and (optionally) the biases.

    Parameters
    ----------
    module : nn.Module
        A model that went through :func:`inject_lora`.
    bias : bool
        Also train every parameter named ``*.bias`` (base-layer and norm biases), as DDIP does.
    exclude : iterable of str
        Biases whose qualified name contains one of these substrings stay frozen (default: the
        time-embedding MLP and the ResBlocks' embedding projections: "non-embedding biases").

    Returns
    -------
    list of nn.Parameter
        The trainable parameters, ready for an optimiser. The current bias values are
        remembered so that :func:`reset_lora` can restore them.

    Raises
    ------
    ValueError
        ``module`` has no LoRA layers.
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be an nn.Module, got {type(module).__name__}")
    if not any(True for _ in _lora_layers(module)):
        raise ValueError("module has no LoRA layers; call inject_lora() first")
    for p in module.parameters():
        p.requires_grad_(False)
    lora = lora_parameters(module)
    for p in lora:
        p.requires_grad_(True)
    trainable = list(lora)
    snapshot = {}
    if bias:
        named = dict(module.named_parameters())
        for name in _bias_names(module, exclude):
            p = named[name]
            p.requires_grad_(True)
            trainable.append(p)
            snapshot[name] = p.detach().clone()
    object.__setattr__(module, _BIAS_SNAPSHOT, snapshot)
    return trainable


@torch.no_grad()
def reset_lora(module: nn.Module, generator: torch.Generator | None = None, restore_biases: bool = True) -> None:
    """Give every LoRA layer fresh adapters (``up = 0``) and restore the trained biases.

    After this the model computes exactly what the base model did (the biases are restored to the
    values they had when :func:`mark_only_lora_and_bias_trainable` was called). Use it to start
    each reconstruction from the pretrained network. Optimiser state is the caller's business.
    """
    layers = list(_lora_layers(module))
    if not layers:
        raise ValueError("module has no LoRA layers; call inject_lora() first")
    for layer in layers:
        layer.reset_lora_parameters(generator)
    if restore_biases:
        snapshot = getattr(module, _BIAS_SNAPSHOT, {})
        named = dict(module.named_parameters())
        for name, value in snapshot.items():
            named[name].copy_(value)


@torch.no_grad()
def merge_lora(module: nn.Module) -> list[str]:
    """Replace each LoRA layer by its base layer with the update folded into the weight.

    Grouped convs cannot absorb a dense update and are left wrapped. Returns the merged names.
    """
    merged = []
    for name, layer in list(module.named_modules()):
        if not isinstance(layer, LoRALayer):
            continue
        base = layer.base
        if getattr(base, "groups", 1) != 1:
            continue
        base.weight.add_(layer.delta_weight().to(base.weight.dtype))
        parent_name, _, child = name.rpartition(".")
        parent = module.get_submodule(parent_name) if parent_name else module
        setattr(parent, child, base)
        merged.append(name)
    return merged

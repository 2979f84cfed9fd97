"""One declarative way to define, check and serialise a learned prior's configuration.

A method's configuration is a frozen dataclass that derives from :class:`PriorConfig` and
declares each field's check next to its default with :func:`checked`::

    @dataclass(frozen=True)
    class MyConfig(PriorConfig):
        _name = "My"                       # used in messages ("unknown My configuration keys ...")
        _presets = {"tiny": "TINY"}        # preset name -> class attribute, for from_dict
        T: int = checked(100, Int(1))
        sampler: str = checked("ddim", Choice(("ddim", "ddpm")))
        p_dp: float = checked(0.1, Real(0, 1))
        drf: float | None = checked(None, Real(1, optional=True))

        def _check(self):                 # optional: checks across fields, after the per-field ones
            if self.sampling_steps > self.T: raise ValueError(...)

:class:`PriorConfig` then gives :meth:`~PriorConfig.validate` (every field's spec in declaration
order, then ``_check``), :meth:`~PriorConfig.replace` (nested dataclass fields may be given as a
dict of changes), :meth:`~PriorConfig.to_dict` / :meth:`~PriorConfig.to_json` (plain JSON, tuples
become lists, written atomically) and :meth:`~PriorConfig.from_dict` / :meth:`~PriorConfig.from_json`
(presets, partial nested dicts, unknown keys rejected), :meth:`~PriorConfig.save_json`. Every
error names the field, the value received and what was expected.
"""

from __future__ import annotations

import abc
import dataclasses
import json
import math
import numbers
from pathlib import Path

__all__ = ["PriorConfig", "checked", "Int", "Real", "Choice", "Bool", "Nested", "Any", "is_int", "is_real"]


def is_int(v) -> bool:
    """An integer that is not a bool."""
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def is_real(v) -> bool:
    """A finite real number that is not a bool."""
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(float(v))


class _Spec(abc.ABC):
    """How one configuration field is checked: ``spec(name, value)`` raises naming ``name``."""

    optional = False

    def __call__(self, name: str, value) -> None:
        if value is None and self.optional:
            return
        self.check(name, value)

    @abc.abstractmethod
    def check(self, name: str, value) -> None:
        """Raise ``ValueError``/``TypeError`` naming ``name`` when ``value`` is not allowed."""


class Int(_Spec):
    """An int (not a bool) ``>= minimum`` (and ``<= maximum``); ``ValueError`` otherwise (``TypeError``
    for a value that is no int when ``type_error``)."""

    def __init__(self, minimum: int | None = None, maximum: int | None = None, *, optional: bool = False,
                 type_error: bool = False):
        self.minimum, self.maximum, self.optional, self.type_error = minimum, maximum, optional, type_error

    def check(self, name, value):
        if self.type_error and not is_int(value):
            raise TypeError(f"{name} must be an int, got {value!r} ({type(value).__name__})")
        ok = is_int(value) and (self.minimum is None or value >= self.minimum) and (
            self.maximum is None or value <= self.maximum)
        if not ok:
            if self.minimum is not None and self.maximum is not None:
                what = f"an int in [{self.minimum}, {self.maximum}]"
            elif self.minimum is not None:
                what = f"an int >= {self.minimum}"
            elif self.maximum is not None:
                what = f"an int <= {self.maximum}"
            else:
                raise TypeError(f"{name} must be an int, got {value!r}")
            raise ValueError(f"{name} must be {'None or ' if self.optional else ''}{what}, got {value!r}")


class Real(_Spec):
    """A finite number within ``[minimum, maximum]`` (an end open with ``*_open``); ``ValueError`` otherwise
    (``TypeError`` for a value that is no finite number when ``type_error``)."""

    def __init__(self, minimum: float | None = None, maximum: float | None = None, *, min_open: bool = False,
                 max_open: bool = False, optional: bool = False, none_means: str | None = None,
                 type_error: bool = False):
        self.minimum, self.maximum, self.min_open, self.max_open = minimum, maximum, min_open, max_open
        self.optional, self.none_means, self.type_error = optional, none_means, type_error

    def _describe(self) -> str:
        lo, hi = self.minimum, self.maximum
        if lo is not None and hi is not None:
            return f"a number in {'(' if self.min_open else '['}{lo:g}, {hi:g}{')' if self.max_open else ']'}"
        if lo is not None:
            return f"a finite number {'>' if self.min_open else '>='} {lo:g}"
        if hi is not None:
            return f"a finite number {'<' if self.max_open else '<='} {hi:g}"
        return "a finite number"

    def check(self, name, value):
        if self.type_error and not is_real(value):
            raise TypeError(f"{name} must be a finite number, got {value!r} ({type(value).__name__})")
        ok = is_real(value)
        if ok and self.minimum is not None:
            ok = float(value) > self.minimum if self.min_open else float(value) >= self.minimum
        if ok and self.maximum is not None:
            ok = float(value) < self.maximum if self.max_open else float(value) <= self.maximum
        if not ok:
            prefix = ""
            if self.optional:
                prefix = f"None{f' ({self.none_means})' if self.none_means else ''} or "
            raise ValueError(f"{name} must be {prefix}{self._describe()}, got {value!r}")


class Choice(_Spec):
    """One of a fixed tuple of values; ``ValueError`` otherwise."""

    def __init__(self, choices, *, optional: bool = False):
        self.choices, self.optional = tuple(choices), optional

    def check(self, name, value):
        if value not in self.choices:
            raise ValueError(f"{name} must be one of {self.choices}, got {value!r}")


class Bool(_Spec):
    """``True`` or ``False`` (not 0/1); ``TypeError`` otherwise."""

    def __init__(self, *, optional: bool = False):
        self.optional = optional

    def check(self, name, value):
        if not isinstance(value, bool):
            raise TypeError(f"{name} must be a bool, got {value!r}")


class Any(_Spec):
    """No check of its own (the field is checked elsewhere, e.g. in ``_check``)."""

    def check(self, name, value):
        return None


class Nested(_Spec):
    """An instance of the dataclass ``cls`` (``TypeError`` otherwise); ``from_dict`` and ``replace``
    accept a (partial) dict of its fields, lists becoming tuples. ``unknown`` starts the message of
    unknown keys (default ``"unknown <field> keys"``)."""

    def __init__(self, cls, *, optional: bool = False, unknown: str | None = None):
        self.cls, self.optional, self.unknown = cls, optional, unknown

    def check(self, name, value):
        if not isinstance(value, self.cls):
            raise TypeError(f"{name} must be a {self.cls.__name__}, got {type(value).__name__}")

    def merge(self, name: str, base, changes):
        """``base`` with the dict ``changes`` applied (unknown keys raise ``ValueError``)."""
        if not isinstance(changes, dict):
            raise TypeError(f"{name} must be a dict of {self.cls.__name__} fields, got {type(changes).__name__}")
        known = {f.name for f in dataclasses.fields(self.cls)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ValueError(f"{self.unknown or f'unknown {name} keys'} {unknown}; expected some of {sorted(known)}")
        fields = {k: tuple(v) if isinstance(v, list) else v for k, v in changes.items()}
        if base is None:
            return self.cls(**fields)
        return base.replace(**fields) if hasattr(base, "replace") else dataclasses.replace(base, **fields)


def checked(default, spec: _Spec, **field_kwargs):
    """A dataclass field with ``default`` whose value :meth:`PriorConfig.validate` checks with ``spec``."""
    return dataclasses.field(default=default, metadata={"check": spec}, **field_kwargs)


class PriorConfig:
    """Mixin of a frozen dataclass configuration (see the module docstring)."""

    #: The method's name in messages.
    _name = "prior"
    #: ``from_dict``'s ``{"preset": name}`` → the class attribute holding that preset.
    _presets: dict = {}
    #: The key of ``from_dict``'s preset name.
    _preset_key = "preset"
    #: A checkpoint's JSON sidecar ``{"config": {<this key>: {...}}}`` is also read by ``from_json``
    #: when set.
    _checkpoint_key: str | None = None
    #: The class attribute of the base of ``from_dict`` when neither ``base`` nor a preset is given
    #: (``None``: the dataclass defaults).
    _default_preset: str | None = None

    # -- checks --------------------------------------------------------------------------------------
    def validate(self):
        """Return ``self`` if every field is valid, else raise ``TypeError``/``ValueError`` naming it."""
        for f in dataclasses.fields(self):
            spec = f.metadata.get("check")
            if spec is not None:
                spec(f.name, getattr(self, f.name))
        self._check()
        return self

    def _check(self) -> None:
        """Checks across fields, run by :meth:`validate` after the per-field specs."""

    @classmethod
    def _nested(cls) -> dict:
        return {f.name: f.metadata["check"] for f in dataclasses.fields(cls)
                if isinstance(f.metadata.get("check"), Nested)}

    # -- conversions ---------------------------------------------------------------------------------
    def replace(self, **changes):
        """A copy with some fields changed (a nested dataclass field may be given as a dict of changes)."""
        for name, spec in self._nested().items():
            if isinstance(changes.get(name), dict):
                changes[name] = spec.merge(name, getattr(self, name), changes[name])
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """Plain JSON-compatible dict (tuples become lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def to_json(self, path=None, indent: int = 2) -> str:
        """The JSON text; also written (atomically) to ``path`` when given."""
        text = json.dumps(self.to_dict(), indent=indent)
        if path is not None:
            from ..io.atomic import atomic_path

            with atomic_path(path) as tmp:
                tmp.write_text(text + "\n")
        return text

    @classmethod
    def from_dict(cls, d: dict, base=None):
        """Build a configuration from a dict, missing keys taken from ``base`` (default: the class's
        default preset, else the dataclass defaults), validated.

        ``d`` may name a preset (``{"preset": "gpu", ...}``) when the class has presets; a nested
        dataclass field may be a partial dict of its fields. Unknown keys raise ``ValueError``.
        """
        if not isinstance(d, dict):
            raise TypeError(f"a {cls._name} configuration must be a dict, got {type(d).__name__}")
        d = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
        preset = d.pop(cls._preset_key, None) if cls._presets else None
        if preset is not None:
            if preset not in cls._presets:
                raise ValueError(f"{cls._preset_key} must be one of {sorted(cls._presets)}, got {preset!r}")
            base = getattr(cls, cls._presets[preset])
        if base is None and cls._default_preset is not None:
            base = getattr(cls, cls._default_preset)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown {cls._name} configuration keys {unknown}; expected some of {sorted(known)}")
        defaults = {f.name: f.default for f in dataclasses.fields(cls)}
        for name, spec in cls._nested().items():
            if name in d:
                start = defaults[name] if base is None else getattr(base, name)
                d[name] = spec.merge(name, None if start is dataclasses.MISSING else start, d[name])
        out = cls(**d) if base is None else dataclasses.replace(base, **d)
        return out.validate()

    @classmethod
    def from_json(cls, source):
        """Read a configuration from a JSON file path or JSON text (see :meth:`from_dict`)."""
        if isinstance(source, Path) or (isinstance(source, str) and not source.lstrip().startswith("{")):
            path = Path(source)
            if not path.is_file():
                raise FileNotFoundError(f"no {cls._name} configuration file at {path}")
            source = path.read_text()
        if not isinstance(source, str):
            raise TypeError(f"source must be a path or JSON text, got {type(source).__name__}")
        data = json.loads(source)
        key = cls._checkpoint_key
        if key and isinstance(data, dict) and isinstance(data.get("config"), dict) and key in data["config"]:
            data = data["config"][key]
        return cls.from_dict(data)

    def save_json(self, path) -> Path:
        """Write :meth:`to_json` to ``path`` (atomically); returns the path."""
        self.to_json(path)
        return Path(path)

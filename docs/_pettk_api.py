"""The API reference pages, generated from pettk's public modules (called from ``conf.py``).

Every public class and function gets one page, under its shortest public path: ``osem`` is
defined in ``pettk.recon.em`` and exported by ``pettk.recon``, so it is documented once, as
``pettk.recon.osem``. A module's public names are its ``__all__`` (else the names it defines that
do not start with ``_``); private modules (a ``_`` in the path) and the top-level ``pettk``
re-exports are left out. Modules whose optional dependency is missing are listed as such.
"""

import importlib
import inspect
import pkgutil
import sys

import pettk

HEADER = """Generated from the docstrings (numpy style, with shapes and units). Each public class and
function is documented once, under its shortest public path (``pettk.recon.osem``, not
``pettk.recon.em.osem``). The most used names are also importable from ``pettk`` itself
(``pettk.ImageGrid``, ``pettk.Projector``, ``pettk.ForwardModel``, ``pettk.TOFParams``, ...)."""


def public_modules() -> list[str]:
    names = [m.name for m in pkgutil.walk_packages(pettk.__path__, "pettk.")
             if not any(part.startswith("_") for part in m.name.split("."))]
    return sorted(names, key=lambda n: (n.count("."), n))


def _public_names(module) -> list[str]:
    names = getattr(module, "__all__", None)
    if names is None:
        names = [n for n, v in vars(module).items()
                 if not n.startswith("_") and getattr(v, "__module__", None) == module.__name__]
    return list(names)


HOMES: dict[int, str] = {}  # id(object) -> the name it is documented under
UNAVAILABLE: list[str] = []  # modules whose optional dependency is missing here
_SCALARS = (int, float, complex, str, bytes, bool, type(None))


def home_of(name: str, context: str | None = None) -> str | None:
    """The documented name of the pettk object ``name`` (any public import path), or None.

    ``context`` is the module the reference is written in: a relative name is looked up there and
    in its parent packages, as Python would see it from that module.
    """
    candidates = [name]
    if context:
        parts = context.split(".")
        candidates += [".".join(parts[:i] + [name]) for i in range(len(parts), 0, -1)]
    for candidate in candidates:
        if not candidate.startswith("pettk"):
            continue
        obj = _lookup(candidate)
        if obj is not None and id(obj) in HOMES:
            return HOMES[id(obj)]
    return None


def _lookup(dotted: str):
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        try:
            for attr in parts[i:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return None
        return obj
    return None


def write_api_pages(path) -> None:
    """Write ``api.rst``: one section per module, one autosummary stub page per object."""
    homes = HOMES
    homes.clear()
    sections = []
    for name in public_modules():
        try:
            module = importlib.import_module(name)
        except ImportError as err:  # an optional dependency (deepinv, petsird, ...) is missing
            UNAVAILABLE.append(name)
            sections.append((name, None, f"Not importable where these pages were built: {err}"))
            continue
        members, data = [], []
        for member in _public_names(module):
            obj = getattr(module, member, None)
            if inspect.ismodule(obj) or id(obj) in homes:
                continue
            if inspect.isclass(obj) or inspect.isfunction(obj):
                if not (getattr(obj, "__module__", "") or "").startswith("pettk"):
                    continue  # re-exported third-party names
                members.append(member)
            elif member.isupper():  # module constants (tables, presets, defaults)
                data.append(member)
            else:
                continue
            if not isinstance(obj, _SCALARS):  # equal scalars may share an id
                homes[id(obj)] = f"{name}.{member}"
        parent, _, last = name.rpartition(".")
        # a module shadowed by a function of the same name (pettk.recon.fbp) is not indexed twice
        shadowed = getattr(sys.modules.get(parent), last, module) is not module
        sections.append((name, (members, data, shadowed), ""))
    lines = ["API reference", "=============", "", HEADER, ""]
    for name, members, note in sections:
        lines += [name, "-" * len(name), ""]
        if members is None:
            lines += [note, ""]
            continue
        members, data, shadowed = members
        lines += [f".. automodule:: {name}", "   :no-members:"] + (["   :no-index:"] if shadowed else []) + [""]
        for constant in data:  # a target for references; their docs live in the module docstring
            lines += [f".. py:data:: {constant}", f"   :module: {name}", ""]
        if members:
            lines += [f".. currentmodule:: {name}", "", ".. autosummary::", "   :toctree: generated",
                      "   :nosignatures:", ""]
            lines += [f"   {m}" for m in members] + [""]
    path.write_text("\n".join(lines) + "\n")

"""Parsing of command-line values shared by several ``pettk`` subcommands."""

from __future__ import annotations

import json

__all__ = ["setting_value"]


def setting_value(text: str):
    """A ``--model-setting`` VALUE: parsed as JSON (``8``, ``0.3``, ``true``, ``[1, 2]``), else the string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text

"""Simulation: phantoms (and, later, scan simulation and data sets)."""

from .phantoms import ellipse_phantom_2d, shepp_logan_2d

__all__ = ["ellipse_phantom_2d", "shepp_logan_2d"]

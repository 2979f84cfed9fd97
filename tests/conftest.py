"""Shared fixtures: small deterministic geometries for the projector tests."""

import numpy as np
import pytest

import pettk


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture(scope="session")
def tiny():
    """The 'tiny' preset: 4 rings, 16 planes (oblique included), 48 views, 49 radial bins."""
    return pettk.preset("tiny")


@pytest.fixture(scope="session")
def grid2d():
    return pettk.ImageGrid((40, 36), (2.0, 2.5), origin_mm=(-39.0, -42.0))


@pytest.fixture(scope="session")
def beam2d():
    return pettk.ParallelBeam2D(n_views=30, n_radial=61, radial_spacing_mm=1.7, half_length_mm=120.0)

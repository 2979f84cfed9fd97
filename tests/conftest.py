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


def load_example(stem: str):
    """The gallery example ``examples/<stem>.py`` imported as a module (its ``main`` does not run)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "examples" / f"{stem}.py"
    spec = importlib.util.spec_from_file_location(f"_example_{stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def ddip_tiny_pretrained(tmp_path_factory):
    """The tiny FDG-pretrained DDIP (``DDIPConfig.TINY`` in batches of 8, 500 steps on 16 subjects x 5 slices), trained
    once per session by ``examples/plot_ddip.py``'s own training function and saved: test_ddip uses
    the model, test_examples hands the file to the example (``PETTK_DDIP_MODEL``), which would
    otherwise train the identical model again. Returns ``(model, path of the .safetensors)``."""
    import os

    example = load_example("plot_ddip")
    given = os.environ.pop("PETTK_DDIP_MODEL", None)  # the example must train, not load a user's model
    try:
        prior = example._prior()
    finally:
        if given is not None:
            os.environ["PETTK_DDIP_MODEL"] = given
    path = prior.save(tmp_path_factory.mktemp("ddip_tiny") / "ddip.safetensors")
    return prior, path


@pytest.fixture(scope="session")
def restorer_data(tmp_path_factory):
    """The tiny sinogram-restorer training set of test_red and test_dream, built once per session
    (read-only): 8 subjects x 3 slices of 32² parallel-beam data at DRF 20, 2e4 full-dose counts per
    slice; subjects split 5 train / 1 validation / 2 test. Returns the data set folder."""
    from pettk.sim.datasets import DatasetConfig, build_dataset

    root = tmp_path_factory.mktemp("restorer_data")
    build_dataset(root, DatasetConfig(n_subjects=8, slices_per_subject=3, image_size=32, geometry="parallel",
                                      drfs=(20.0,), counts_per_slice=2e4, reference_counts_factor=1.0,
                                      reference_iterations=1, reference_subsets=2, split=(None, 1, 2), seed=0),
                  progress=False)
    return root

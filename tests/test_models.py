"""The default models shipped in ``pettk.models``: present, documented, loadable, and working.

Every registered model must ship (weights + JSON configuration + model card), each weights file
within 25 MB and all of them within 64 MiB (the package stays a quick install), and run one
inference on a held-out simulated slice at DRF 20 (a restorer: at its own DRF) through the
same runner ``pettk demo`` uses (the 128² DDIP networks with 5 instead of 20 diffusion steps),
giving a finite image on the truth's grid that is closer to the
truth than the trivial baseline (a uniform image with the truth's mean activity).
"""

import dataclasses
import json

import numpy as np
import pytest
import torch

import pettk.models
from pettk.evaluation import EvalData
from pettk.evaluation import _cases as evaluation_cases
from pettk.evaluation.data import build_heldout
from pettk.evaluation.methods import TUNED, make_runner
from pettk.metrics import psnr

NAMES = sorted(pettk.models.REGISTRY)
CARD_SECTIONS = ("## Training data", "## Configuration", "## Training", "## Hardware", "## Held-out metrics")


def test_every_registered_model_ships_with_config_and_card():
    assert pettk.models.available() == NAMES
    files = set()
    for name in NAMES:
        weights = pettk.models.path_of(name)
        config = pettk.models.config_path(name)
        assert config.is_file(), f"{name}: no configuration {config.name}"
        assert isinstance(json.loads(config.read_text()), dict)
        card = pettk.models.card(name)
        for section in CARD_SECTIONS:
            assert section in card, f"{name}: model card lacks {section!r}"
        assert "pettk train" in card, f"{name}: the card must give the training command"
        files |= {weights, config}                 # a derived model shares its base's weights
        assert weights.stat().st_size <= 25 * 10**6, f"{name}: weights over 25 MB"
    total = sum(f.stat().st_size for f in files)
    assert total <= 64 * 2**20, f"shipped models take {total / 2**20:.1f} MiB > 64 MiB"
    for name, base in pettk.models.DERIVED.items():
        assert pettk.models.path_of(name) == pettk.models.path_of(base) and base in NAMES


def test_unknown_model_names_are_refused():
    with pytest.raises(ValueError, match="unknown model 'red-drf4'"):
        pettk.models.load("red-drf4")
    with pytest.raises(ValueError, match="unknown model"):
        pettk.models.card("nope")


#: The held-out data of each model generation: the first models (64², parallel beam, v1 anatomy)
#: and the realistic-scale ones (128² of 2.09 mm on the mmr-like scanner's direct plane, v2 anatomy).
HELDOUT = {64: EvalData(n_subjects=1, slices_per_subject=1),
           128: EvalData(n_subjects=1, slices_per_subject=1, image_size=128, geometry="mmr-like", anatomy="v2")}


def _image_size(model, heldout_cases) -> int:
    """The in-plane size of the images a shipped model reconstructs (a restorer with a fixed
    sinogram shape: the held-out geometry whose sinogram has that shape)."""
    from pettk.priors.ddip import DDIP

    if getattr(model.config, "image_size", None) is not None:   # PET-DDS
        return int(model.config.image_size[0])
    if isinstance(model, DDIP):                                   # its U-Net's natural size
        return int(model.config.net.image_size[0])
    shape = getattr(model, "sinogram_shape", None)
    for size in HELDOUT if shape is not None else ():
        if tuple(heldout_cases(size).y_low.shape) == tuple(shape):
            return size
    return 64                                                     # the other restorers and LegoPET: 64² data


@pytest.fixture(scope="module")
def heldout_cases(tmp_path_factory):
    cases = {}

    def case_for(size: int, drf: float = 20.0):
        if (size, drf) not in cases:
            data = dataclasses.replace(HELDOUT[size], drfs=(drf,))
            datasets = build_heldout(tmp_path_factory.mktemp(f"models-heldout-{size}"), data)
            ((got, _, case),) = evaluation_cases(datasets, torch.device("cpu"))
            assert got == drf
            cases[size, drf] = case
        return cases[size, drf]

    return case_for


@pytest.mark.parametrize("name", NAMES)
def test_shipped_model_loads_and_reconstructs_a_heldout_slice(name, heldout_cases):
    model = pettk.models.load(name)
    method = pettk.models.REGISTRY[name]
    drf = float(getattr(model.config, "drf", 20.0))               # a restorer is for one DRF
    heldout_case = heldout_cases(_image_size(model, heldout_cases), drf)
    assert model.config.to_dict() == type(model.config).from_dict(model.config.to_dict()).to_dict()
    if method == "ddip" and _image_size(model, heldout_cases) == 128:
        model = pettk.models.with_settings(model, steps=5)   # the suite's budget: 5 of its 20 steps
    image = make_runner(method, model, TUNED[drf])(heldout_case)
    image = np.asarray(image.detach() if isinstance(image, torch.Tensor) else image, dtype=np.float64)
    truth = heldout_case.truth.numpy().astype(np.float64)
    assert image.shape == truth.shape == heldout_case.grid.shape
    assert np.isfinite(image).all()
    uniform = np.full_like(truth, truth.mean())
    assert psnr(image, truth) > psnr(uniform, truth) + 3.0

"""Seconds per 128² slice of every method with the shipped 128² models (issue 22), CPU and CUDA.

One out-of-family held-out slice (anatomy ``v2-shifted``, 128 × 128 pixels of 2.09 mm, the
``mmr-like`` direct plane, 224 views × 129 bins, 5·10⁵ full-dose counts; attenuation, PSF,
randoms and scatter) at DRF 20 and 100, reconstructed through the runner of ``pettk evaluate``
(:func:`pettk.evaluation.methods.make_runner`) with the settings a user gets:

* OSEM + filter and BSREM-RDP with :data:`pettk.evaluation.methods.TUNED` (BSREM runs until its
  MAP objective stops changing, up to 1000 epochs, as in the evaluation);
* RED and DREAM: the shipped restorer of the DRF (``red-drf{20,100}-128``,
  ``dream-drf{20,100}-128``), then OSEM of the restored sinogram (the default iterations);
* DDIP (``ddip-fdg-128``) and PET-DDS (``pet-dds-mr``) with their settings for the DRF
  (:func:`pettk.models.load` with ``drf=``);
* LegoPET: the shipped model of the DRF (``legopet-drf{20,100}-128``).

So a row is what one slice of the README's 128² tables costs. The CUDA rows run when a GPU is
present (skipped otherwise). One round each: a method's time is dominated by its EM iterations or
its network passes, not by first-call compilation (the projection kernels are compiled by one
OSEM call before any timing).

Run with ``pytest benchmarks/test_methods_128.py`` (a few minutes on 2 cores; BSREM-RDP and
DDIP dominate); the seconds are in the benchmark's extra_info and the summary table.
"""

from __future__ import annotations

import pytest
import torch

from pettk import models
from pettk.evaluation import _cases
from pettk.evaluation.data import EvalData, build_heldout
from pettk.evaluation.methods import TUNED, make_runner

DRFS = (20.0, 100.0)
METHODS = ("osem", "bsrem-rdp", "red", "dream", "ddip", "pet-dds", "legopet")
DEVICES = ("cpu", "cuda")


def _model_name(method: str, drf: float) -> str | None:
    """The shipped 128² model of ``method`` at ``drf`` (None: a classical method)."""
    return {"red": f"red-drf{drf:g}-128", "dream": f"dream-drf{drf:g}-128", "ddip": "ddip-fdg-128",
            "pet-dds": "pet-dds-mr", "legopet": f"legopet-drf{drf:g}-128"}.get(method)


@pytest.fixture(scope="module")
def slices(tmp_path_factory):
    """``{drf: case}``: one simulated out-of-family 128² slice per DRF (the same subject and noise seed)."""
    data = EvalData(n_subjects=1, slices_per_subject=1, drfs=DRFS, image_size=128, geometry="mmr-like",
                    anatomy="v2-shifted")
    datasets = build_heldout(tmp_path_factory.mktemp("heldout128"), data)
    cases = {drf: case for drf, _, case in _cases(datasets, "cpu")}
    make_runner("osem", settings=TUNED[DRFS[0]])(cases[DRFS[0]])     # compiles the projection kernels
    return cases


def _on(case, device):
    if device == "cpu":
        return case
    from dataclasses import replace

    return replace(case, y_low=case.y_low.to(device), model=case.model.to(device), mr=case.mr.to(device))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("drf", DRFS)
@pytest.mark.parametrize("method", METHODS)
def test_seconds_per_slice(benchmark, record, slices, method, drf, device):
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    name = _model_name(method, drf)
    model = None if name is None else models.load(name, device=device, drf=drf)
    case = _on(slices[drf], device)
    runner = make_runner(method, model, TUNED[drf])

    def once():
        out = runner(case)
        if device == "cuda":
            torch.cuda.synchronize()
        return out

    image = torch.as_tensor(benchmark.pedantic(once, rounds=1, iterations=1, warmup_rounds=0))
    assert tuple(image.shape) == (128, 128) and bool(torch.isfinite(image).all()) and float(image.min()) >= 0
    record(f"128² slice {method} DRF {drf:g} {device}", seconds_per_slice=benchmark.stats.stats.min,
           model=name or "-", threads=torch.get_num_threads())

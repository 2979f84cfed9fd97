"""Held-out evaluation data: simulated subjects the shipped models never saw.

The default models are trained on :func:`pettk.sim.datasets.build_dataset` subjects with seeds
``0 .. n-1`` (see the model cards in :mod:`pettk.models`). Evaluation subjects use seeds from
:data:`HELD_OUT_SEED` up, so no anatomy, lesion or noise draw is shared with training; the
out-of-distribution option swaps the FDG-like tracer for an amyloid-like contrast.

An evaluation can instead read an existing data set built by ``pettk simulate``
(:func:`read_manifest`, :func:`open_split`): its test split is evaluated, its validation split
tunes the classical settings. :func:`validation_data` gives the validation subjects of simulated
held-out data (seeds from ``HELD_OUT_SEED // 2``).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..sim.datasets import DatasetConfig, SliceDataset, build_dataset

__all__ = ["HELD_OUT_SEED", "VALIDATION_SEED", "EvalData", "heldout_dataset_config", "build_heldout", "validation_data",
           "read_manifest", "open_split", "select_indices", "evenly_spaced", "parenchyma_labels"]

#: First subject seed of evaluation data (training data sets use seeds below it).
HELD_OUT_SEED = 100_000
#: First subject seed of the validation subjects that tune the classical settings for simulated
#: held-out data (disjoint from training, ``0 ..``, and test, ``HELD_OUT_SEED ..``).
VALIDATION_SEED = HELD_OUT_SEED // 2


@dataclass(frozen=True)
class EvalData:
    """What to simulate for an evaluation.

    Attributes
    ----------
    n_subjects, slices_per_subject : int
        Held-out subjects and axial slices per subject (slices evenly spaced over 40 mm around
        the brain's centre, where the cortex and the lesions are).
    drfs : tuple of float
        Dose-reduction factors of the low-dose sinograms.
    tracer : {"fdg", "amyloid"}
        ``"amyloid"`` is out of distribution for models trained on FDG-like brains.
    image_size, geometry, counts_per_slice, anatomy :
        Must match the training data of the models evaluated (the defaults match the shipped
        models: v1 anatomy, 64 × 64 pixels of 4.17 mm, parallel beam 64 views × 97 bins, 5·10⁵
        full-dose counts per slice). ``anatomy="v2"`` or ``"v2-shifted"`` evaluates them out of
        family (see :class:`~pettk.sim.datasets.DatasetConfig`).
    seed : int
        First subject seed (default :data:`HELD_OUT_SEED`).
    """

    n_subjects: int = 3
    slices_per_subject: int = 2
    drfs: tuple = (20.0,)
    tracer: str = "fdg"
    image_size: int = 64
    geometry: str = "parallel"
    counts_per_slice: float = 5e5
    anatomy: str = "v1"
    seed: int = HELD_OUT_SEED
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def heldout_dataset_config(data: EvalData) -> DatasetConfig:
    """The :class:`~pettk.sim.datasets.DatasetConfig` of the held-out subjects (all in the test split)."""
    if not isinstance(data, EvalData):
        raise TypeError(f"data must be an EvalData, got {type(data).__name__}")
    return DatasetConfig(n_subjects=data.n_subjects, slices_per_subject=data.slices_per_subject,
                         image_size=data.image_size, geometry=data.geometry, drfs=tuple(float(d) for d in data.drfs),
                         counts_per_slice=data.counts_per_slice, anatomy=data.anatomy, tracer=data.tracer,
                         slice_range_mm=40.0,
                         split=(0, 0, data.n_subjects), seed=data.seed, **data.extra).validate()


def build_heldout(root, data: EvalData, progress: bool = False) -> dict[float, SliceDataset]:
    """Simulate (or reuse) the held-out subjects under ``root``; one raw test split per DRF."""
    build_dataset(Path(root), heldout_dataset_config(data), progress=progress)
    return {float(d): SliceDataset(root, "test", float(d), "none") for d in data.drfs}


def validation_data(data: EvalData, n_slices: int) -> EvalData:
    """The validation subjects for tuning on simulated held-out ``data``: the same settings
    (anatomy, geometry, size, counts, tracer, DRFs, slices per subject), seeds from
    :data:`VALIDATION_SEED`, enough subjects for ``n_slices`` slices."""
    n_subjects = max(1, math.ceil(n_slices / data.slices_per_subject))
    val = dataclasses.replace(data, n_subjects=n_subjects, seed=VALIDATION_SEED)
    test_seeds = range(data.seed, data.seed + data.n_subjects)
    val_seeds = range(val.seed, val.seed + val.n_subjects)
    if max(test_seeds.start, val_seeds.start) < min(test_seeds.stop, val_seeds.stop):
        raise ValueError(f"the held-out subjects' seeds {test_seeds.start}..{test_seeds.stop - 1} overlap the "
                         f"validation seeds {val_seeds.start}..{val_seeds.stop - 1}; choose another seed")
    return val


def read_manifest(root) -> dict:
    """The manifest of the data set at ``root`` (``FileNotFoundError`` when there is none)."""
    path = Path(root) / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"no pettk data set at {root} (missing manifest.json; build one with `pettk simulate`)")
    manifest = json.loads(path.read_text())
    if manifest.get("format") != "pettk-dataset":
        raise ValueError(f"{path} is not a pettk data set manifest")
    return manifest


def manifest_drfs(manifest: dict) -> tuple[float, ...]:
    return tuple(sorted(float(k) for k in manifest["drf_keys"]))


def split_subjects(manifest: dict, split: str) -> list[dict]:
    return [s for s in manifest["subjects"] if s["split"] == split]


def open_split(root, split: str, drfs) -> dict[float, SliceDataset]:
    """One raw :class:`~pettk.sim.datasets.SliceDataset` of ``split`` per DRF."""
    return {float(d): SliceDataset(root, split, float(d), "none") for d in drfs}


def evenly_spaced(n: int, k: int | None) -> list[int]:
    """``k`` indices of ``range(n)`` spread evenly from the first to the last (all when ``k`` is
    ``None`` or >= ``n``)."""
    if k is None or k >= n:
        return list(range(n))
    if k == 1:
        return [n // 2]
    return sorted({int(round(v)) for v in np.linspace(0, n - 1, k)})


def select_indices(ds: SliceDataset, subjects: int | None = None, slices: int | None = None) -> list[int]:
    """Item indices of ``ds``: its first ``subjects`` subjects, ``slices`` evenly spaced slices of each."""
    out, start = [], 0
    for i, subject in enumerate(ds.subjects):
        n = int(subject["n_slices"])
        if subjects is None or i < subjects:
            out += [start + k for k in evenly_spaced(n, slices)]
        start += n
    return out


def parenchyma_labels(manifest: dict) -> tuple[int, ...]:
    """The tissue label codes of brain parenchyma in a data set (v1 or v2 codes, by its generator)."""
    generator = manifest.get("generator", {})
    if generator.get("version") == "v1" or manifest.get("config", {}).get("anatomy") == "v1":
        from ..sim.phantoms import BRAIN_LABELS

        return tuple(k for k, v in BRAIN_LABELS.items() if v in ("grey matter", "white matter", "basal ganglia"))
    from ..sim.anatomy import PARENCHYMA

    return tuple(int(k) for k in PARENCHYMA)

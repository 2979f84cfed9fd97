"""Held-out evaluation data: simulated subjects the shipped models never saw.

The default models are trained on :func:`pettk.sim.build_dataset` subjects with seeds
``0 .. n-1`` (see the model cards in :mod:`pettk.models`). Evaluation subjects use seeds from
:data:`HELD_OUT_SEED` up, so no anatomy, lesion or noise draw is shared with training; the
out-of-distribution option swaps the FDG-like tracer for an amyloid-like contrast.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..sim.datasets import DatasetConfig, SliceDataset, build_dataset

__all__ = ["HELD_OUT_SEED", "EvalData", "heldout_dataset_config", "build_heldout"]

#: First subject seed of evaluation data (training data sets use seeds below it).
HELD_OUT_SEED = 100_000


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

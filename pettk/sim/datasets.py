"""Paired low-/full-dose 2D-slice data sets: building them on disk and loading them lazily.

:func:`build_dataset` simulates ``n_subjects`` procedural brains (each seed a different subject)
and, for ``slices_per_subject`` axial slices each, stores

``truth``       the activity image ``(S, nx, ny)``
``mr``, ``mu``  the T1-like MR image and the mu-map (1/mm)
``full``        full-dose prompts ``y_fd ~ Poisson(ybar)`` ``(S, n_views, n_radial)``
``low_drf{D}``  thinned prompts ``y_ld ~ Binomial(y_fd, 1/D)`` for every DRF ``D`` (nested)
``mult``, ``additive``  the counts model of the slice (attenuation × counts scale; randoms +
                scatter) so that EM can reconstruct any restored sinogram
``reference``   OSEM of an independent high-count scan (the reference image of LegoPET)

The store is a folder: ``manifest.json`` (configuration, geometry, grid, subjects and their
split, seeds, image statistics, pettk version) and one folder per subject holding ``.npy``
arrays (chunked per subject, memory-mapped on read). A subject folder is written under a
temporary name and renamed when complete, so a build can be interrupted and resumed: finished
subjects are kept, the rest are rebuilt. The manifest is written atomically.

:class:`SliceDataset` is a ``torch.utils.data.Dataset`` over one split that memory-maps the
arrays and applies the normalisations of ``METHODS.md`` §1 (see :data:`NORMALISATIONS`).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .._validation import as_positive_float, as_positive_int
from .._version import __version__
from ..geometry import ImageGrid, ParallelBeam2D, preset
from ..io.atomic import atomic_path
from ..physics import ForwardModel
from ..projector import Projector
from ..recon import osem
from .scan import simulate_scan, thin

__all__ = ["DatasetConfig", "build_dataset", "SliceDataset", "NORMALISATIONS", "FIELDS"]

FIELDS = ("truth", "mr", "mu", "full", "mult", "additive", "reference")
NORMALISATIONS = ("none", "red", "dream", "legopet", "ddip")


@dataclass
class DatasetConfig:
    """What to simulate. All fields are JSON-serialisable and stored in the manifest.

    Attributes
    ----------
    n_subjects, slices_per_subject : int
    image_size : int
        The 2D grid is ``image_size × image_size`` covering the ``mmr-like`` 2D field of view
        (128 × 2.0863 mm), i.e. voxels of ``267.05 / image_size`` mm.
    geometry : {"mmr-like", "parallel"}
        The ``mmr-like`` ring sinogram (224 views × 129 radial bins) or a parallel-beam sinogram
        with ``image_size`` views and ``ceil(1.5 * image_size)`` bins at the voxel size.
    drfs : tuple of float
        Dose-reduction factors (>= 1) of the low-dose sinograms.
    counts_per_slice : float
        Expected full-dose prompts per slice.
    reference_counts_factor : float
        The reference scan has this many times the full-dose counts (an independent draw).
    reference_iterations, reference_subsets : int
        OSEM of the reference scan.
    psf_fwhm_mm, randoms_fraction, scatter_fraction : float
        Physics of the simulation (see :func:`pettk.sim.simulate_scan`).
    tracer : {"fdg", "amyloid"}
    lesions : int
        Lesions per subject.
    slice_range_mm : float
        Slices are evenly spaced over ``[-slice_range_mm / 2, +slice_range_mm / 2]`` around the
        brain's centre (2.03 mm thick).
    split : tuple of int
        Subjects in (train, validation, test), taken in subject order; ``None`` entries mean
        "the rest" (default: 2 test, 1 validation, the rest training, as in LegoPET).
    seed : int
        Subject ``i`` uses seed ``seed + i`` for its anatomy and derived seeds for its counts.
    """

    n_subjects: int = 20
    slices_per_subject: int = 8
    image_size: int = 64
    geometry: str = "mmr-like"
    drfs: tuple = (4.0, 20.0, 100.0)
    counts_per_slice: float = 5e5
    reference_counts_factor: float = 10.0
    reference_iterations: int = 4
    reference_subsets: int = 8
    psf_fwhm_mm: float = 4.5
    randoms_fraction: float = 0.1
    scatter_fraction: float = 0.3
    tracer: str = "fdg"
    lesions: int = 2
    slice_range_mm: float = 80.0
    split: tuple = field(default=(None, 1, 2))
    seed: int = 0

    def validate(self) -> DatasetConfig:
        as_positive_int("n_subjects", self.n_subjects)
        as_positive_int("slices_per_subject", self.slices_per_subject)
        as_positive_int("image_size", self.image_size, minimum=8)
        if self.geometry not in ("mmr-like", "parallel"):
            raise ValueError(f"geometry must be 'mmr-like' or 'parallel', got {self.geometry!r}")
        if not self.drfs or any(not float(d) >= 1.0 for d in self.drfs):
            raise ValueError(f"drfs must be a non-empty sequence of numbers >= 1, got {self.drfs!r}")
        as_positive_float("counts_per_slice", self.counts_per_slice)
        as_positive_float("reference_counts_factor", self.reference_counts_factor)
        as_positive_int("reference_iterations", self.reference_iterations)
        as_positive_int("reference_subsets", self.reference_subsets)
        if self.tracer not in ("fdg", "amyloid"):
            raise ValueError(f"tracer must be 'fdg' or 'amyloid', got {self.tracer!r}")
        if len(self.split) != 3:
            raise ValueError(f"split must be (train, validation, test), got {self.split!r}")
        self.subject_splits()
        return self

    def subject_splits(self) -> list[str]:
        """The split name of every subject, in subject order (train, then validation, then test)."""
        n = self.n_subjects
        fixed = [s for s in self.split if s is not None]
        if sum(fixed) > n or any(s < 0 for s in fixed):
            raise ValueError(f"split {self.split!r} does not fit {n} subjects")
        rest = n - sum(fixed)
        counts = [rest if s is None else s for s in self.split]
        if sum(counts) != n:
            raise ValueError(f"split {self.split!r} must add up to n_subjects={n} (use None for 'the rest')")
        return ["train"] * counts[0] + ["validation"] * counts[1] + ["test"] * counts[2]

    def grid(self) -> ImageGrid:
        size = self.image_size
        return ImageGrid((size, size), 128 * 2.0863 / size)

    def make_geometry(self):
        if self.geometry == "mmr-like":
            return preset("mmr-like").layout_2d
        grid = self.grid()
        n_radial = int(np.ceil(1.5 * self.image_size)) | 1
        return ParallelBeam2D(self.image_size, n_radial, grid.voxel_size_mm[0])


def _drf_key(drf: float) -> str:
    return f"low_drf{float(drf):g}"


def _subject_slices(config: DatasetConfig, grid: ImageGrid, seed: int):
    """Brain phantom slices of one subject: (activity, mu, mr) arrays ``(S, nx, ny)``."""
    from .phantoms import brain_phantom

    z_positions = np.linspace(-config.slice_range_mm / 2, config.slice_range_mm / 2, config.slices_per_subject)
    activity, mu, mr = [], [], []
    for z in z_positions:
        slab = ImageGrid(grid.shape + (1,), grid.voxel_size_mm + (2.03125,), origin_mm=grid.origin_mm + (float(z),))
        ph = brain_phantom(slab, seed=seed, tracer=config.tracer, lesions=config.lesions)
        activity.append(ph.activity[..., 0])
        mu.append(ph.mu[..., 0])
        mr.append(ph.mr[..., 0])
    return np.stack(activity), np.stack(mu), np.stack(mr)


def _simulate_subject(config: DatasetConfig, index: int, projector: Projector) -> dict[str, np.ndarray]:
    grid = projector.grid
    subject_seed = config.seed + index
    activity, mu, mr = _subject_slices(config, grid, subject_seed)
    out = {name: [] for name in FIELDS}
    out.update({_drf_key(d): [] for d in config.drfs})
    for s in range(activity.shape[0]):
        base_seed = (subject_seed * 1000 + s) * 16
        model = ForwardModel(projector, psf=config.psf_fwhm_mm, mu=mu[s])
        scan = simulate_scan(activity[s], model, config.counts_per_slice, config.randoms_fraction,
                             config.scatter_fraction, seed=base_seed)
        for k, drf in enumerate(config.drfs):
            out[_drf_key(drf)].append(thin(scan.prompts, drf, seed=base_seed + 1 + k).numpy())
        high = simulate_scan(activity[s], model, config.counts_per_slice * config.reference_counts_factor,
                             config.randoms_fraction, config.scatter_fraction, seed=base_seed + 15)
        reference = osem(high.model, high.prompts, config.reference_iterations, config.reference_subsets)
        out["truth"].append(activity[s])
        out["mr"].append(mr[s])
        out["mu"].append(mu[s])
        out["full"].append(scan.prompts.numpy())
        out["mult"].append(scan.model.mult.numpy())
        out["additive"].append(scan.model.additive.numpy())
        out["reference"].append(reference.numpy())  # on the activity scale, like the truth
    return {k: np.stack(v).astype(np.float32) for k, v in out.items()}


def _write_subject(root: Path, name: str, arrays: dict[str, np.ndarray]) -> None:
    final = root / name
    tmp = root / f".{name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    for key, arr in arrays.items():
        np.save(tmp / f"{key}.npy", arr)
    (tmp / "COMPLETE").write_text("ok\n")
    os.replace(tmp, final)


def build_dataset(root, config: DatasetConfig | None = None, progress: bool = True) -> Path:
    """Simulate (or finish simulating) a data set under ``root``; returns the manifest path.

    Re-running with the same configuration resumes: complete subjects are kept. A different
    configuration for an existing store raises ``ValueError``.
    """
    config = (config or DatasetConfig()).validate()
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    manifest_path = root / "manifest.json"
    config_dict = json.loads(json.dumps(asdict(config)))
    if manifest_path.exists():
        old = json.loads(manifest_path.read_text())
        if old.get("config") != config_dict:
            raise ValueError(f"{root} holds a data set with a different configuration; use another folder")
    grid = config.grid()
    geometry = config.make_geometry()
    projector = Projector(grid, geometry)
    splits = config.subject_splits()
    subjects = []
    for i in tqdm(range(config.n_subjects), desc="subjects", disable=not progress, leave=False):
        name = f"subject_{i:03d}"
        if not (root / name / "COMPLETE").exists():
            _write_subject(root, name, _simulate_subject(config, i, projector))
        truth = np.load(root / name / "truth.npy", mmap_mode="r")
        subjects.append({"name": name, "seed": config.seed + i, "split": splits[i],
                         "n_slices": int(truth.shape[0]), "truth_max": float(np.max(truth))})
    train_max = max([s["truth_max"] for s in subjects if s["split"] == "train"] or [1.0])
    manifest = {"format": "pettk-dataset", "version": 1, "pettk_version": __version__, "config": config_dict,
                "grid": grid.to_dict(), "geometry": geometry.to_dict(), "sinogram_shape": list(geometry.shape),
                "drf_keys": {f"{float(d):g}": _drf_key(d) for d in config.drfs}, "subjects": subjects,
                "train_image_max": train_max}
    with atomic_path(manifest_path) as tmp:
        tmp.write_text(json.dumps(manifest, indent=2))
    return manifest_path


class SliceDataset(torch.utils.data.Dataset):
    """One split of a data set built by :func:`build_dataset`, loaded lazily (memory-mapped).

    Parameters
    ----------
    root : path
        The data set folder.
    split : {"train", "validation", "test"}
    drf : float
        Which low-dose sinograms to serve.
    normalisation : one of :data:`NORMALISATIONS`
        ``"none"``: raw arrays. ``"red"``: both sinograms divided by ``v = max(DRF·y_ld, 0.1)``
        and mapped to [-1, 1]. ``"dream"``: both divided by ``max(DRF·y_ld)``. ``"legopet"``:
        images (truth, reference) mapped to [-1, 1] by the training set's maximum, the sinogram
        divided by its own maximum. ``"ddip"``: images divided by the training maximum (in
        [0, 1]), the MR by its own maximum. The factor is returned as ``item["scale"]``.

    Items are dicts of float32 tensors: ``low`` (``DRF·y_ld``, the unbiased low-dose estimate of
    ``ybar``), ``full``, ``truth``, ``reference``, ``mr``, ``mu``, ``mult``, ``additive``, and
    ``drf``, ``scale``, ``subject``, ``slice``.
    """

    def __init__(self, root, split: str = "train", drf: float = 20.0, normalisation: str = "none"):
        root = Path(root)
        manifest_path = root / "manifest.json"
        if not manifest_path.is_file():
            raise FileNotFoundError(f"no pettk data set at {root} (missing manifest.json)")
        self.manifest = json.loads(manifest_path.read_text())
        if split not in ("train", "validation", "test"):
            raise ValueError(f"split must be 'train', 'validation' or 'test', got {split!r}")
        key = f"{float(drf):g}"
        if key not in self.manifest["drf_keys"]:
            raise ValueError(f"drf {drf!r} is not in this data set; it has {sorted(self.manifest['drf_keys'])}")
        if normalisation not in NORMALISATIONS:
            raise ValueError(f"normalisation must be one of {', '.join(NORMALISATIONS)}, got {normalisation!r}")
        self.root = root
        self.split = split
        self.drf = float(drf)
        self.low_key = self.manifest["drf_keys"][key]
        self.normalisation = normalisation
        self.image_max = float(self.manifest["train_image_max"])
        self.subjects = [s for s in self.manifest["subjects"] if s["split"] == split]
        self._index = [(i, k) for i, s in enumerate(self.subjects) for k in range(s["n_slices"])]
        self._arrays: dict = {}

    def __len__(self) -> int:
        return len(self._index)

    def _array(self, subject: int, name: str) -> np.ndarray:
        key = (subject, name)
        if key not in self._arrays:
            self._arrays[key] = np.load(self.root / self.subjects[subject]["name"] / f"{name}.npy", mmap_mode="r")
        return self._arrays[key]

    def __getitem__(self, idx: int) -> dict:
        if not -len(self) <= idx < len(self):
            raise IndexError(f"index {idx} out of range for {len(self)} slices")
        subject, k = self._index[idx]
        get = lambda name: torch.from_numpy(np.array(self._array(subject, name)[k], dtype=np.float32))  # noqa: E731
        item = {name: get(name) for name in FIELDS}
        item["low"] = self.drf * get(self.low_key)
        scale = 1.0
        if self.normalisation in ("red", "dream"):
            scale = max(float(item["low"].max()), 0.1 if self.normalisation == "red" else 1e-12)
            item["low"] = item["low"] / scale
            item["full"] = item["full"] / scale
            if self.normalisation == "red":
                item["low"] = 2 * item["low"] - 1
                item["full"] = 2 * item["full"] - 1
        elif self.normalisation == "legopet":
            scale = self.image_max
            for name in ("truth", "reference"):
                item[name] = 2 * item[name] / scale - 1
            item["low"] = item["low"] / max(float(item["low"].max()), 1e-12)
        elif self.normalisation == "ddip":
            scale = self.image_max
            for name in ("truth", "reference"):
                item[name] = item[name] / scale
            item["mr"] = item["mr"] / max(float(item["mr"].max()), 1e-12)
        item.update(drf=self.drf, scale=scale, subject=self.subjects[subject]["name"], slice=k)
        return item

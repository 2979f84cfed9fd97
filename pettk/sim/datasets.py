"""Paired low-/full-dose 2D-slice data sets: building them on disk and loading them lazily.

:func:`build_dataset` simulates ``n_subjects`` brains (each seed a different subject: the v2
anatomy generator by default, the v1 generator, or the user's own tissue maps) and, for
``slices_per_subject`` axial slices each, stores

``truth``
    the activity image ``(S, nx, ny)``
``mr``, ``mu``
    the T1-like MR image and the mu-map (1/mm)
``full``
    full-dose prompts ``y_fd ~ Poisson(ybar)`` ``(S, n_views, n_radial)``
``low_drf{D}``
    thinned prompts ``y_ld ~ Binomial(y_fd, 1/D)`` for every DRF ``D`` (nested)
``mult``, ``additive``
    the counts model of the slice (attenuation × counts scale; randoms + scatter) so that EM
    can reconstruct any restored sinogram
``reference``
    OSEM of an independent high-count scan (the reference image of LegoPET)
``labels``
    tissue label per pixel (the generator's codes) and ``lesions``: lesion number per pixel
    (0 outside), for contrast recovery and per-tissue augmentation

The store is a folder: ``manifest.json`` (configuration, generator name and version, geometry,
grid, subjects and their split, seeds, tracers, image statistics, pettk version) and one folder per
subject holding ``.npy`` arrays (chunked per subject, memory-mapped on read). A subject folder is written under a
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
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .._validation import as_nonnegative_float, as_nonnegative_int, as_positive_float, as_positive_int
from .._version import __version__
from ..geometry import ImageGrid, ParallelBeam2D, preset
from ..io.atomic import atomic_path
from ..physics import ForwardModel
from ..projector import Projector
from ..recon import osem
from .scan import simulate_scan, thin

__all__ = ["DatasetConfig", "build_dataset", "SliceDataset", "NORMALISATIONS", "FIELDS", "EXTRA_FIELDS", "ANATOMIES",
           "lesion_ids", "subject_tracer", "normalise_sinogram_pair"]

FIELDS = ("truth", "mr", "mu", "full", "mult", "additive", "reference")
#: Fields of data sets built since pettk 0.3 (manifest version 2): tissue labels and lesion numbers.
EXTRA_FIELDS = ("labels", "lesions")
ANATOMIES = ("v2", "v2-shifted", "v1", "tissue-maps")
TRACERS = ("fdg", "amyloid", "amyloid-positive", "amyloid-negative")
NORMALISATIONS = ("none", "red", "dream", "legopet", "ddip")


@dataclass
class DatasetConfig:
    """What to simulate. All fields are JSON-serialisable and stored in the manifest.

    The defaults are the training set of the shipped models: 240 subjects (200 train, 20
    validation, 20 test) × 20 slices of anatomy-generator-v2 brains on the ``mmr-like`` scanner's
    2D direct-plane geometry, 128 × 128 pixels of 2.0863 mm.

    Attributes
    ----------
    n_subjects, slices_per_subject : int
    image_size : int
        The 2D grid is ``image_size × image_size`` covering the ``mmr-like`` 2D field of view
        (128 × 2.0863 mm), i.e. voxels of ``267.05 / image_size`` mm.
    geometry : {"mmr-like", "parallel"}
        The ``mmr-like`` ring sinogram (224 views × 129 radial bins) or a parallel-beam sinogram
        with ``image_size`` views and ``ceil(1.5 * image_size)`` bins at the voxel size.
    anatomy : {"v2", "v2-shifted", "v1", "tissue-maps"}
        Where subjects come from: :func:`pettk.sim.brain_phantom_v2` (``"v2"``, the default;
        ``"v2-shifted"`` its out-of-family test family), the v1 generator
        :func:`pettk.sim.brain_phantom` (kept to reproduce older data sets) or the user's tissue
        maps in ``tissue_maps`` (:func:`pettk.sim.from_tissue_maps`).
    tissue_maps : str, optional
        With ``anatomy="tissue-maps"``: a folder with one sub-folder of NIfTI tissue maps per
        subject; subject ``i`` is the ``i``-th sub-folder in name order.
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
    tracer : {"fdg", "amyloid", "amyloid-positive", "amyloid-negative"}
        ``"amyloid"`` draws amyloid-positive or -negative per subject (50/50) except with v1,
        which has one amyloid pattern and accepts only ``"fdg"`` and ``"amyloid"``.
    lesions : int
        Lesions per slice (each slice is rendered as its own 2.03 mm slab, so the lesions of a
        slice are centred in it).
    slice_range_mm : float, optional
        Slices are evenly spaced over ``[-slice_range_mm / 2, +slice_range_mm / 2]`` around the
        brain's centre (2.03 mm thick). Default: 110 mm (cerebellum to near the vertex) for v2
        and tissue maps, 80 mm for v1.
    split : tuple of int
        Subjects in (train, validation, test), taken in subject order; ``None`` entries mean
        "the rest".
    seed : int
        Subject ``i`` uses seed ``seed + i`` for its anatomy and derived seeds for its counts.
    """

    n_subjects: int = 240
    slices_per_subject: int = 20
    image_size: int = 128
    geometry: str = "mmr-like"
    anatomy: str = "v2"
    tissue_maps: str | None = None
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
    slice_range_mm: float | None = None
    split: tuple = field(default=(None, 20, 20))
    seed: int = 0

    def validate(self) -> DatasetConfig:
        as_positive_int("n_subjects", self.n_subjects)
        as_positive_int("slices_per_subject", self.slices_per_subject)
        as_positive_int("image_size", self.image_size, minimum=8)
        if self.geometry not in ("mmr-like", "parallel"):
            raise ValueError(f"geometry must be 'mmr-like' or 'parallel', got {self.geometry!r}")
        if self.anatomy not in ANATOMIES:
            raise ValueError(f"anatomy must be one of {', '.join(map(repr, ANATOMIES))}, got {self.anatomy!r}")
        if (self.anatomy == "tissue-maps") != (self.tissue_maps is not None):
            raise ValueError("tissue_maps (a folder) goes with anatomy='tissue-maps' and only with it; got "
                             f"anatomy={self.anatomy!r}, tissue_maps={self.tissue_maps!r}")
        if not self.drfs or any(not float(d) >= 1.0 for d in self.drfs):
            raise ValueError(f"drfs must be a non-empty sequence of numbers >= 1, got {self.drfs!r}")
        as_positive_float("counts_per_slice", self.counts_per_slice)
        as_positive_float("reference_counts_factor", self.reference_counts_factor)
        as_positive_int("reference_iterations", self.reference_iterations)
        as_positive_int("reference_subsets", self.reference_subsets)
        tracers = ("fdg", "amyloid") if self.anatomy == "v1" else TRACERS
        if self.tracer not in tracers:
            raise ValueError(f"tracer must be one of {', '.join(map(repr, tracers))} for anatomy "
                             f"{self.anatomy!r}, got {self.tracer!r}")
        as_nonnegative_int("lesions", self.lesions)
        if self.slice_range_mm is not None:
            as_nonnegative_float("slice_range_mm", self.slice_range_mm)
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

    def slice_positions_mm(self) -> np.ndarray:
        """Axial positions (mm) of the slices of every subject."""
        span = self.slice_range_mm if self.slice_range_mm is not None else (80.0 if self.anatomy == "v1" else 110.0)
        return np.linspace(-span / 2, span / 2, self.slices_per_subject)

    def generator(self) -> dict:
        """Name and version of the anatomy source (stored in the manifest)."""
        if self.anatomy == "v1":
            return {"name": "pettk.sim.brain_phantom", "version": "v1"}
        if self.anatomy == "tissue-maps":
            return {"name": "pettk.sim.from_tissue_maps", "version": "v2", "tissue_maps": self.tissue_maps}
        from .anatomy import GENERATOR, VERSION

        return {"name": GENERATOR, "version": VERSION,
                "family": "shifted" if self.anatomy == "v2-shifted" else "standard"}


def _drf_key(drf: float) -> str:
    return f"low_drf{float(drf):g}"


def subject_tracer(config: DatasetConfig, seed: int) -> str:
    """The tracer of the subject with ``seed``: ``"amyloid"`` becomes positive or negative (v2)."""
    if config.tracer != "amyloid" or config.anatomy == "v1":
        return config.tracer
    positive = np.random.default_rng([seed, 0xA5]).random() < 0.5
    return "amyloid-positive" if positive else "amyloid-negative"


def lesion_ids(grid: ImageGrid, lesions) -> np.ndarray:
    """Lesion number (1, 2, ...; 0 outside) of every voxel centre of ``grid``, float32.

    A voxel belongs to lesion ``k`` when its centre lies in the ``k``-th sphere (later lesions win
    where spheres touch); lesion centres have ``grid.ndim`` coordinates or 3 for a 3D grid.
    """
    out = np.zeros(grid.shape, dtype=np.float32)
    axes = np.meshgrid(*(grid.origin_mm[k] + np.arange(grid.shape[k]) * grid.voxel_size_mm[k]
                         for k in range(grid.ndim)), indexing="ij")
    for k, les in enumerate(lesions, start=1):
        d2 = sum((axes[i] - les.centre_mm[i]) ** 2 for i in range(grid.ndim))
        out[d2 <= les.radius_mm ** 2] = k
    return out


def _subject_slices(config: DatasetConfig, grid: ImageGrid, index: int) -> dict[str, np.ndarray]:
    """Phantom slices of subject ``index``: ``activity, mu, mr, labels, lesions`` arrays ``(S, nx, ny)``.

    Each slice is rendered on its own one-slice slab (2.03 mm thick) of the subject's 3D head.
    """
    seed = config.seed + index
    tracer = subject_tracer(config, seed)
    if config.anatomy == "v1":
        from .phantoms import brain_phantom

        def render(slab, n):
            return brain_phantom(slab, seed=seed, tracer=tracer, lesions=n)
    elif config.anatomy == "tissue-maps":
        from .tissue_maps import from_tissue_maps, list_subjects, load_tissue_maps

        maps = load_tissue_maps(list_subjects(config.tissue_maps)[index])

        def render(slab, n):
            return from_tissue_maps(maps, slab, seed=seed, tracer=tracer, lesions=n)
    else:
        from .anatomy import brain_phantom_v2

        family = "shifted" if config.anatomy == "v2-shifted" else "standard"

        def render(slab, n):
            return brain_phantom_v2(slab, seed=seed, tracer=tracer, lesions=n, family=family)
    out = {k: [] for k in ("activity", "mu", "mr", "labels", "lesions")}
    for z in config.slice_positions_mm():
        slab = ImageGrid(grid.shape + (1,), grid.voxel_size_mm + (2.03125,), origin_mm=grid.origin_mm + (float(z),))
        ph = _render_with_lesions(render, slab, config.lesions)
        out["activity"].append(ph.activity[..., 0])
        out["mu"].append(ph.mu[..., 0])
        out["mr"].append(ph.mr[..., 0])
        out["labels"].append(ph.labels[..., 0])
        out["lesions"].append((lesion_ids(slab, ph.lesions) * ph.lesion_mask)[..., 0])  # where the lesion acts
    return {k: np.stack(v) for k, v in out.items()}


def _render_with_lesions(render, slab: ImageGrid, lesions: int):
    """``render(slab, n)`` with ``lesions`` lesions, or as many as fit where the slab holds little
    parenchyma (slices near the vertex or below the cerebellum)."""
    from .anatomy import LesionPlacementError

    for n in range(lesions, 0, -1):
        try:
            return render(slab, n)
        except LesionPlacementError:
            continue
    return render(slab, 0)


def _simulate_subject(config: DatasetConfig, index: int, projector: Projector) -> dict[str, np.ndarray]:
    subject_seed = config.seed + index
    phantom = _subject_slices(config, projector.grid, index)
    activity, mu = phantom["activity"], phantom["mu"]
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
        out["full"].append(scan.prompts.numpy())
        out["mult"].append(scan.model.mult.numpy())
        out["additive"].append(scan.model.additive.numpy())
        out["reference"].append(reference.numpy())  # on the activity scale, like the truth
    arrays = {k: np.stack(v).astype(np.float32) for k, v in out.items() if v}
    arrays.update(truth=activity.astype(np.float32), mr=phantom["mr"].astype(np.float32),
                  mu=mu.astype(np.float32), labels=phantom["labels"].astype(np.float32),
                  lesions=phantom["lesions"].astype(np.float32))
    return arrays


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
    sources = None
    if config.anatomy == "tissue-maps":
        from .tissue_maps import list_subjects

        sources = list_subjects(config.tissue_maps)
        if len(sources) < config.n_subjects:
            raise ValueError(f"{config.tissue_maps} holds {len(sources)} subject folders, fewer than "
                             f"n_subjects={config.n_subjects}")
    subjects = []
    for i in tqdm(range(config.n_subjects), desc="subjects", disable=not progress, leave=False):
        name = f"subject_{i:03d}"
        if not (root / name / "COMPLETE").exists():
            _write_subject(root, name, _simulate_subject(config, i, projector))
        truth = np.load(root / name / "truth.npy", mmap_mode="r")
        entry = {"name": name, "seed": config.seed + i, "split": splits[i],
                 "tracer": subject_tracer(config, config.seed + i),
                 "n_slices": int(truth.shape[0]), "truth_max": float(np.max(truth))}
        if sources is not None:
            entry["source"] = sources[i].name
        subjects.append(entry)
    train_max = max([s["truth_max"] for s in subjects if s["split"] == "train"] or [1.0])
    manifest = {"format": "pettk-dataset", "version": 2, "pettk_version": __version__, "config": config_dict,
                "generator": config.generator(), "fields": list(FIELDS + EXTRA_FIELDS),
                "grid": grid.to_dict(), "geometry": geometry.to_dict(), "sinogram_shape": list(geometry.shape),
                "drf_keys": {f"{float(d):g}": _drf_key(d) for d in config.drfs}, "subjects": subjects,
                "train_image_max": train_max}
    with atomic_path(manifest_path) as tmp:
        tmp.write_text(json.dumps(manifest, indent=2))
    return manifest_path


def normalise_sinogram_pair(low: torch.Tensor, full: torch.Tensor, normalisation: str):
    """A sinogram restorer's training pair (METHODS §2.1, §3.1): ``low`` (``DRF`` × the low-dose
    counts) and ``full`` (full-dose counts) both divided by ``scale = max(low)`` (floored at 0.1 for
    RED, 1e-12 for DREAM), then mapped to ``[-1, 1]`` for ``"red"``. Returns ``(low, full, scale)``."""
    if normalisation not in ("red", "dream"):
        raise ValueError(f"normalisation must be 'red' or 'dream', got {normalisation!r}")
    scale = max(float(low.max()), 0.1 if normalisation == "red" else 1e-12)
    low, full = low / scale, full / scale
    if normalisation == "red":
        low, full = 2 * low - 1, 2 * full - 1
    return low, full, scale


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

    augment : Augmentation, optional
        Training-data augmentation (:mod:`pettk.sim.augment`) applied to every item before the
        normalisation, one random draw per item from a stream seeded by ``seed``.
    augment_domain : {"image", "sinogram", "both"}
        What the augmented item holds (see :func:`pettk.sim.augment.augment_item`): ``"image"``
        (the full augmentation of the image fields; sinogram fields are dropped, so only the
        ``"none"`` and ``"ddip"`` normalisations apply), ``"sinogram"`` (exact sinogram
        symmetries; image fields dropped) or ``"both"`` (the sinogram-exact transform of both).
    seed : int
        Seed of the augmentation stream.

    Items are dicts of float32 tensors: ``low`` (``DRF·y_ld``, the unbiased low-dose estimate of
    ``ybar``), ``full``, ``truth``, ``reference``, ``mr``, ``mu``, ``mult``, ``additive``, for
    data sets of manifest version 2 also ``labels`` (tissue codes) and ``lesions`` (lesion number
    per pixel, 0 outside), and ``drf``, ``scale``, ``subject``, ``slice``.
    """

    def __init__(self, root, split: str = "train", drf: float = 20.0, normalisation: str = "none", *,
                 augment=None, augment_domain: str = "both", seed: int = 0):
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
        if augment is not None:
            from .augment import DOMAINS, Augmentation

            if not isinstance(augment, Augmentation):
                raise TypeError(f"augment must be a pettk.sim.augment.Augmentation, got {type(augment).__name__}")
            if augment_domain not in DOMAINS:
                raise ValueError(f"augment_domain must be one of {', '.join(DOMAINS)}, got {augment_domain!r}")
            if augment_domain != "both" and normalisation in ("red", "dream", "legopet"):
                raise ValueError(f"normalisation {normalisation!r} needs images and sinograms, but "
                                 f"augment_domain={augment_domain!r} keeps only one of them; use 'both'")
        self.augment, self.augment_domain = augment, augment_domain
        self._rng = np.random.default_rng(seed)
        self.root = root
        self.split = split
        self.drf = float(drf)
        self.low_key = self.manifest["drf_keys"][key]
        self.normalisation = normalisation
        self.image_max = float(self.manifest["train_image_max"])
        self.subjects = [s for s in self.manifest["subjects"] if s["split"] == split]
        self._index = [(i, k) for i, s in enumerate(self.subjects) for k in range(s["n_slices"])]
        self.fields = tuple(self.manifest.get("fields", FIELDS))
        self._arrays: dict = {}

    def __len__(self) -> int:
        return len(self._index)

    @property
    def _voxel_size_mm(self):
        return tuple(self.manifest["grid"]["voxel_size_mm"])

    @cached_property
    def _geometry(self):
        from ..geometry import from_dict

        return from_dict(self.manifest["geometry"])

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
        item = {name: get(name) for name in self.fields}
        item["low"] = self.drf * get(self.low_key)
        if self.augment is not None:
            from .augment import augment_item

            item = augment_item(item, self.augment, self._rng, self._voxel_size_mm, self._geometry,
                                domain=self.augment_domain)
        scale = 1.0
        if self.normalisation in ("red", "dream"):
            item["low"], item["full"], scale = normalise_sinogram_pair(item["low"], item["full"], self.normalisation)
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

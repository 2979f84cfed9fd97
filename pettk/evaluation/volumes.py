"""3D evaluation (``pettk evaluate --3d``): held-out v2 heads on a section of a ring scanner.

Every method reconstructs fully 3D data (oblique planes, attenuation, PSF, randoms, scatter) of
out-of-family subjects (:func:`pettk.sim.brain_phantom_v2`, ``family="shifted"`` by default)
into a volume; the classical baselines (3D OSEM + filter, 3D BSREM-RDP) are tuned on validation
volumes of other seeds (:func:`~pettk.evaluation.tuning.tune_on_cases`), the restorers' EM after
restoration too. Metrics are taken over the brain (the parenchyma labels): PSNR and NRMSE of the
brain voxels, SSIM per axial slice of the brain's bounding box, lesion contrast recovery
(:func:`pettk.metrics.lesion_rois`, 3D), and the axial gradient error
(:func:`pettk.metrics.axial_gradient_error`) that exposes slice-by-slice artefacts.

The default case is issue 23's CPU-sized acceptance volume: 128 × 128 × 32 voxels of 2.0863 ×
2.0863 × 2.03125 mm from a 16-ring section of the ``mmr-like`` scanner with all its ring
differences (256 planes of 224 views × 129 bins), DRF 20.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .._validation import as_positive_float, as_positive_int
from ..geometry import ImageGrid, RegularPolygonScanner, SinogramLayout, preset
from ..io import atomic_path
from ..metrics import axial_gradient_error, lesion_rois, nrmse, psnr, ssim
from ..physics import ForwardModel
from ..projector import Projector
from ..sim import simulate_scan
from ..sim.anatomy import PARENCHYMA, brain_phantom_v2
from ..sim.datasets import lesion_ids
from .data import HELD_OUT_SEED, VALIDATION_SEED
from .methods import Case, ClassicalSettings, make_runner
from .report import lesion_measurement, summarise, write_lesions_csv, write_rows_csv, write_summary
from .tuning import TUNABLE, TUNE_GRID, tune_on_cases

__all__ = ["VolumeData", "section_geometry", "check_models_fit", "simulate_volume", "volume_metrics",
           "evaluate_volumes"]


@dataclass(frozen=True)
class VolumeData:
    """What to simulate for a 3D evaluation.

    Attributes
    ----------
    subjects, validation_subjects : int
        Test volumes (seeds from :data:`HELD_OUT_SEED`) and tuning volumes (from
        :data:`VALIDATION_SEED`).
    drf : float
    scanner : str
        The :func:`~pettk.geometry.preset` whose scanner is cut to ``rings`` central rings.
    rings : int
        Rings of the section (every ring difference kept).
    shape : (nx, ny, nz)
        The volume; voxels of the preset's 3D grid, centred on the section.
    family, tracer, lesions :
        Of :func:`~pettk.sim.brain_phantom_v2` (``lesions`` per subject, placed inside the volume).
    counts : float
        Full-dose prompts of a volume.
    psf_mm, randoms_fraction, scatter_fraction : the acquisition.
    voxel_size_mm : (dx, dy, dz), optional
        Default the preset's 3D grid (mmr-like: 2.0863 × 2.0863 × 2.03125 mm).
    z_offset_mm : float
        Axial position of the section's centre in the head (0: the basal-ganglia level).
    """

    subjects: int = 3
    validation_subjects: int = 2
    drf: float = 20.0
    scanner: str = "mmr-like"
    rings: int = 16
    shape: tuple = (128, 128, 32)
    family: str = "shifted"
    tracer: str = "fdg"
    lesions: int = 2
    counts: float = 3e7
    psf_mm: float = 4.5
    randoms_fraction: float = 0.1
    scatter_fraction: float = 0.3
    z_offset_mm: float = 10.0
    voxel_size_mm: tuple | None = None

    def validate(self) -> VolumeData:
        for name in ("subjects", "validation_subjects", "rings"):
            as_positive_int(name, getattr(self, name))
        for name in ("drf", "counts", "psf_mm"):
            as_positive_float(name, getattr(self, name))
        if len(self.shape) != 3:
            raise ValueError(f"shape must be (nx, ny, nz), got {self.shape!r}")
        for n in self.shape:
            as_positive_int("shape", n)
        return self


def section_geometry(data: VolumeData) -> tuple[SinogramLayout, ImageGrid]:
    """The ``rings``-ring section of ``data.scanner`` (all ring differences) and the volume's grid."""
    base = preset(data.scanner)
    scanner = base.scanner
    if data.rings > scanner.n_rings:
        raise ValueError(f"rings must be at most the {data.scanner} scanner's {scanner.n_rings}, got {data.rings}")
    first = (scanner.n_rings - data.rings) // 2
    z = np.asarray(scanner.ring_positions_mm[first:first + data.rings], dtype=np.float64)
    section = RegularPolygonScanner(scanner.radius_mm, scanner.n_sides, scanner.n_crystals_per_side,
                                    scanner.crystal_spacing_mm, z - z.mean())
    layout = SinogramLayout(section, radial_trim=base.layout.radial_trim)
    return layout, ImageGrid(tuple(data.shape), data.voxel_size_mm or base.grid.voxel_size_mm)


def check_models_fit(models: dict, layout: SinogramLayout, grid: ImageGrid) -> None:
    """Refuse a learned model that does not fit the section before any simulation (ValueError).

    * An image model (DDIP, PET-DDS, LegoPET's image canvas) must have been trained on slices of
      the volume's transaxial shape ``grid.shape[:2]`` **and** voxel size: pettk's data sets
      (:class:`pettk.sim.datasets.DatasetConfig`, its ``grid()``) cover the ``mmr-like`` field of view,
      128 × 2.0863 mm, at any image size, so a model of ``n × n`` slices saw voxels of
      ``267.05 / n`` mm (the shipped 128² models: 2.0863 mm, the 3D grid's; the 64² ones 4.17 mm).
    * A sinogram model (RED, DREAM, LegoPET) must have been trained on sinograms of the section's
      plane shape ``layout.shape[1:]`` ``(n_views, n_radial)`` (the ``mmr-like`` direct plane:
      224 × 129); checked first, so that a restorer of another geometry is refused for its
      sinograms (a parallel-beam restorer also implies an image size, see
      :func:`~pettk.evaluation.fit.model_image_size`).
    """
    from ..sim.datasets import DatasetConfig
    from .fit import model_image_size

    for method, model in models.items():
        sinogram = getattr(model, "sinogram_shape", None)
        if sinogram is not None and tuple(int(n) for n in sinogram) != tuple(layout.shape[1:]):
            raise ValueError(f"the {method} model was trained on {sinogram[0]} x {sinogram[1]} sinograms but the "
                             f"section's planes are {layout.shape[1]} x {layout.shape[2]} (n_views x n_radial); give a "
                             "model of the mmr-like direct plane (e.g. dream-drf20-128)")
        size = model_image_size(model) or getattr(model, "image_shape", None)
        if size is not None:
            size = tuple(int(n) for n in size)
            trained_mm = DatasetConfig(image_size=size[0]).grid().voxel_size_mm[0]
            voxel = tuple(float(v) for v in grid.voxel_size_mm[:2])
            if size != tuple(grid.shape[:2]) or not np.allclose(voxel, trained_mm, rtol=1e-3):
                raise ValueError(f"the {method} model was trained on {size[0]} x {size[1]} slices of "
                                 f"{trained_mm:.4g} mm but the volume's slices are {grid.shape[0]} x {grid.shape[1]} "
                                 f"of {voxel[0]:.4g} x {voxel[1]:.4g} mm; give a model of this grid (e.g. "
                                 "ddip-fdg-128 / pet-dds-mr / dream-drf20-128 for the default 128 x 128 volume) "
                                 "or a volume of the model's grid")


def simulate_volume(data: VolumeData, seed: int, layout: SinogramLayout, grid: ImageGrid, device="cpu") -> Case:
    """One held-out volume: a v2 head shifted by ``z_offset_mm``, its 3D scan at full dose, then thinned
    to ``data.drf``. ``case.info`` holds the subject seed, tissue labels and lesion map."""
    head_grid = ImageGrid(grid.shape, grid.voxel_size_mm,
                          tuple(np.asarray(grid.origin_mm) + np.array([0.0, 0.0, data.z_offset_mm])))
    phantom = brain_phantom_v2(head_grid, seed=seed, tracer=data.tracer, lesions=data.lesions, family=data.family)
    model = ForwardModel(Projector(grid, layout), psf=data.psf_mm, mu=phantom.mu)
    scan = simulate_scan(phantom.activity, model, data.counts, data.randoms_fraction, data.scatter_fraction,
                         seed=seed)
    y_low, _ = scan.low_dose(data.drf, seed=seed + 1)
    full = scan.model.to(device=device, dtype=torch.float32)
    return Case(y_low=y_low.to(device=device, dtype=torch.float32), model=full, drf=float(data.drf), grid=grid,
                mr=torch.as_tensor(phantom.mr, dtype=torch.float32, device=device),
                truth=torch.as_tensor(phantom.activity, dtype=torch.float32),
                info={"subject": f"seed{seed}", "labels": phantom.labels,
                      "lesions": lesion_ids(head_grid, phantom.lesions)})


def volume_metrics(image, case: Case) -> tuple[dict, list[dict]]:
    """PSNR / NRMSE over the brain voxels, SSIM (2D, averaged over the axial slices of the brain's
    bounding box: thin sections are shorter than SSIM's 7-voxel window), the axial gradient error
    inside the brain, and one row per lesion (contrast recovery)."""
    x = np.asarray(torch.as_tensor(image).detach().cpu(), dtype=np.float64)
    truth = case.truth.numpy().astype(np.float64)
    labels = np.asarray(case.info["labels"])
    brain = np.isin(labels, PARENCHYMA)
    if not brain.any():
        raise ValueError("the volume holds no brain parenchyma to measure")
    box = tuple(slice(int(i.min()), int(i.max()) + 1) for i in np.nonzero(brain))
    peak = float(truth[brain].max())
    metrics = {"psnr": psnr(x[brain], truth[brain], data_range=peak), "nrmse": nrmse(x[brain], truth[brain]),
               "ssim": float(np.mean([ssim(x[box][..., k], truth[box][..., k], data_range=peak)
                                      for k in range(x[box].shape[-1])])),
               "axial": axial_gradient_error(x, truth, brain)}
    lesions = [lesion_measurement(roi, x, truth) for roi in lesion_rois(case.info["lesions"], truth, labels)]
    return metrics, lesions


def evaluate_volumes(out_dir, methods=("osem", "bsrem-rdp"), data: VolumeData | None = None, *, models=None,
                     tune: bool = True, tune_grid: dict | None = None, bsrem_max_epochs: int | None = None,
                     device="cpu", progress: bool = True) -> list[dict]:
    """Run ``methods`` on 3D held-out volumes; write ``metrics.md``/``.csv``, ``volumes.csv``,
    ``lesions.csv`` and ``tuning.json`` to ``out_dir``; return the summary rows.

    ``models`` maps each learned method to its loaded model (e.g. from
    :func:`pettk.evaluation.load_method_model`); one that does not fit the volume's grid or the
    section's planes is refused before any simulation (:func:`check_models_fit`). ``tune_grid`` overrides
    :data:`~pettk.evaluation.tuning.TUNE_GRID` (smaller grids for a quick run).
    """
    data = (data or VolumeData()).validate()
    models = dict(models or {})
    learned = [m for m in methods if m not in ("osem", "bsrem-rdp", "mlem")]
    missing = [m for m in learned if m not in models]
    if missing:
        raise ValueError(f"learned methods {missing} need their models in models=")
    grid_opts = {**TUNE_GRID, **(tune_grid or {})}
    settings = ClassicalSettings()
    if bsrem_max_epochs is not None:
        settings = dataclasses.replace(settings, bsrem_iterations=as_positive_int("bsrem_max_epochs", bsrem_max_epochs))
    layout, grid = section_geometry(data)
    check_models_fit(models, layout, grid)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    record = {}
    tunable = [m for m in methods if m in TUNABLE] if tune else []
    if tunable:
        val = [(data.drf, simulate_volume(data, VALIDATION_SEED + i, layout, grid, device))
               for i in range(data.validation_subjects)]
        chosen, record = tune_on_cases(val, methods=tunable, base=settings,
                                       models={m: models[m] for m in tunable if m in models},
                                       progress=progress, **grid_opts)
        settings = chosen[float(data.drf)]
    rows, lesion_rows = [], []
    cases = (simulate_volume(data, HELD_OUT_SEED + i, layout, grid, device) for i in range(data.subjects))
    for case in tqdm(cases, total=data.subjects, desc="volumes", disable=not progress):
        for method in methods:
            run = make_runner(method, models.get(method), settings)
            start = time.perf_counter()
            image = run(case)
            seconds = time.perf_counter() - start
            metrics, lesions = volume_metrics(image, case)
            key = {"method": method, "drf": data.drf, "tracer": data.tracer, "subject": case.info["subject"],
                   "slice": "all"}
            rows.append({**key, **metrics, "seconds": seconds})
            lesion_rows += [{**key, **row} for row in lesions]
    summary = summarise(rows, lesion_rows)
    write_rows_csv(out_dir / "volumes.csv", rows)
    write_lesions_csv(out_dir / "lesions.csv", lesion_rows)
    n_planes = layout.n_planes
    preamble = (f"3D evaluation: {data.subjects} {data.family}-family v2 heads, {data.shape[0]}×{data.shape[1]}×"
                f"{data.shape[2]} voxels from a {data.rings}-ring section of the {data.scanner} scanner ({n_planes} "
                f"planes), DRF {data.drf:g}; metrics over the brain; settings tuned on {data.validation_subjects} "
                f"validation volumes: {settings}\n\n")
    from . import LABELS

    write_summary(out_dir, summary, LABELS, preamble=preamble, unit="volume")
    with atomic_path(out_dir / "tuning.json") as tmp:
        tmp.write_text(json.dumps({str(k): v for k, v in record.items()}, indent=1, default=str))
    return summary

"""Evaluate reconstruction methods on held-out data (``pettk evaluate``, ``pettk demo``).

What is evaluated
    Either simulated held-out brain subjects (:class:`EvalData`, :mod:`.data`; seeds disjoint
    from training), or the **test split of any data set built by** ``pettk simulate``
    (``evaluate(..., data_dir=DIR)``, ``pettk evaluate --data DIR``: any geometry, anatomy,
    size or tracer in its manifest, ``--tissue-maps`` data sets included; its DRFs unless
    ``drfs`` picks some; ``subjects`` / ``slices`` limit the test subjects and the slices of each).

How
    Each slice's low-dose sinogram is reconstructed with every requested method
    (:mod:`.methods`: OSEM + post-filter, BSREM-RDP, MLEM and the four learned priors with the
    shipped default models or user checkpoints) and the images are scored against the true
    activity: PSNR, SSIM, NRMSE (peak = the slice's true maximum) and, where the data set stores
    lesion maps (manifest version 2), **lesion contrast recovery**
    ``CR = (mean_img(L)/mean_img(B) - 1) / (mean_true(L)/mean_true(B) - 1)`` per lesion
    (:func:`pettk.metrics.lesion_contrast_recovery`): 1 is the lesion's true contrast, 0 none, for
    hot and cold lesions alike. ``L`` is the lesion's pixels, ``B`` a shell about two pixels thick
    around it in the parenchyma, leaving out the pixels touching any lesion
    (:func:`pettk.metrics.lesion_rois`); hot and cold are told apart by the true contrast; lesions
    under 2 pixels in a slice, or with a true contrast within 10 % of 1, are listed but not scored.

Honest classical baselines (``tune``)
    The classical settings (OSEM iterations × post-filter, BSREM-RDP β × γ), and the same
    freedom after the learned methods (EM iterations × post-filter or BSREM-RDP of RED's and
    DREAM's restored sinograms, MLEM iterations × post-filter after LegoPET's sample, a post-filter
    of DDIP's and PET-DDS's image), are tuned on the **validation split of the data being
    evaluated**, never its test split: for ``data_dir`` its ``validation`` subjects; for
    simulated held-out data, validation subjects simulated with the same settings (anatomy,
    geometry, size, counts, tracer) and seeds from :data:`~.data.VALIDATION_SEED`.
    ``tune_slices`` validation slices (default 8, evenly spread) score every grid point by mean
    PSNR (:func:`tune_on_cases`, the grid search of :func:`tune_classical`). ``tune=None`` (the
    default) tunes whenever a validation split exists; ``tune=False`` uses the fixed
    :data:`~.methods.TUNED` constants (or ``settings``), which were tuned once on v1 64 × 64
    simulated subjects and are no fair baseline for other data.

Outputs (:mod:`.report`), in ``out_dir``
    - ``metrics.md`` / ``metrics.csv``: mean ± std per method, DRF and tracer, with ``CR hot`` and
      ``CR cold`` (mean ± std over lesions, their number), the classical settings used and how they
      were chosen;
    - ``slices.csv``: every slice's metrics and time; ``lesions.csv``: every lesion's CR;
    - ``tuning.json`` (when tuned): the validation slices, every grid point's mean PSNR and the
      chosen settings per DRF;
    - ``figure.png``: reference, each method and the error maps for the first slice of each DRF;
    - ``nifti/<method>_drf<D>_<subject>.nii.gz``: every reconstructed slice, stacked along z;
      ``nifti/truth_<subject>.nii.gz`` and ``nifti/reference_<subject>.nii.gz`` beside them: the
      true activity and the full-dose reference (OSEM of the high-count scan) of the same slices,
      so that any metric can be checked in one's own viewer.

:func:`tune_classical` tunes the classical settings on simulated validation subjects alone (it
chose :data:`~.methods.TUNED`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .._validation import as_positive_int
from ..geometry import from_dict as geometry_from_dict
from ..io import atomic_path
from ..metrics import lesion_rois, nrmse, psnr, ssim
from ..models import settings_for_drf, tuned_settings, with_settings
from ..priors.base import dataset_forward_model
from .data import (
    HELD_OUT_SEED,
    VALIDATION_SEED,
    EvalData,
    build_heldout,
    evenly_spaced,
    heldout_dataset_config,
    manifest_drfs,
    open_split,
    parenchyma_labels,
    read_manifest,
    select_indices,
    split_subjects,
    validation_data,
)
from .fit import check_models_fit_data, model_image_size
from .methods import (
    CLASSICAL,
    DEFAULT_MODELS,
    LEARNED,
    METHODS,
    TUNED,
    Case,
    ClassicalSettings,
    filter_field,
    make_runner,
)
from .report import (
    comparison_lines,
    lesion_measurement,
    summarise,
    write_figure,
    write_lesions_csv,
    write_nifti_stack,
    write_rows_csv,
    write_summary,
)
from .reuse import settings_from_runs
from .tuning import TUNABLE, TUNE_GRID, _image, tune_on_cases

__all__ = ["evaluate", "tune_classical", "tune_on_cases", "load_method_model", "EvalData", "ClassicalSettings", "Case",
           "METHODS", "CLASSICAL", "LEARNED", "TUNABLE", "TUNE_GRID", "DEFAULT_MODELS", "HELD_OUT_SEED",
           "VALIDATION_SEED", "LABELS", "model_image_size", "check_models_fit_data", "apply_model_settings",
           "settings_from_runs"]

log = logging.getLogger(__name__)

LABELS = {"osem": "OSEM + filter", "bsrem-rdp": "BSREM-RDP", "mlem": "MLEM", "red": "RED", "dream": "DREAM",
          "ddip": "DDIP", "legopet": "LegoPET", "pet-dds": "PET-DDS"}

def load_method_model(method: str, source=None, device="cpu"):
    """The model of a learned ``method``: a shipped name (default :data:`DEFAULT_MODELS`) or a checkpoint path."""
    from .. import models

    if method not in LEARNED:
        raise ValueError(f"method {method!r} takes no model; learned methods are {', '.join(LEARNED)}")
    if source is None and method not in DEFAULT_MODELS:
        raise ValueError(f"{method} has no shipped model yet; give its image diffusion model with --checkpoint "
                         f"{method}=PATH (a `pettk train diffusion` model.safetensors)")
    source = source or DEFAULT_MODELS[method]
    if isinstance(source, str) and source in models.REGISTRY and models.REGISTRY[source] != method:
        raise ValueError(f"model {source!r} is a {models.REGISTRY[source]} model, not {method}")
    if isinstance(source, str) and source in models.available():
        return models.load(source, device=device)
    return models.load_checkpoint_for(method, source, device=device)


def apply_model_settings(models: dict, model_settings: dict) -> dict:
    """``{method: model}`` with each method's ``model_settings[method]`` (``{field: value}``) applied by
    :func:`pettk.models.with_settings`; ``ValueError`` for settings of a method without a model here."""
    bad = [m for m in model_settings if m not in models]
    if bad:
        raise ValueError(f"model settings given for {bad}, which are not learned methods being evaluated")
    return {m: with_settings(model, **model_settings.get(m, {})) for m, model in models.items()}


def _cases(datasets: dict, device, indices: dict | None = None) -> list[tuple[float, dict, Case]]:
    """``(drf, item, case)`` for the items of each DRF's data set (``indices[drf]``: which; default all)."""
    out = []
    for drf, ds in datasets.items():
        grid = dataset_forward_model(ds.manifest, ds[0]["mult"], ds[0]["additive"]).projector.grid
        for i in (range(len(ds)) if indices is None else indices[drf]):
            item = ds[i]
            model = dataset_forward_model(ds.manifest, item["mult"], item["additive"]).to(device)
            case = Case(y_low=(item["low"] / drf).round().to(device), model=model, drf=drf, grid=grid,
                        mr=item["mr"].to(device), truth=item["truth"],
                        info={"subject": item["subject"], "slice": int(item["slice"])})
            out.append((drf, item, case))
    return out


def _check_methods(methods) -> tuple[str, ...]:
    if isinstance(methods, str):
        methods = (methods,)
    methods = tuple(methods)
    if not methods:
        raise ValueError("methods must name at least one method")
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; choose from {', '.join(METHODS)}")
    if len(set(methods)) != len(methods):
        raise ValueError(f"methods must not repeat, got {methods}")
    return methods


def _check_grid(tune_grid: dict | None) -> dict:
    grid = dict(TUNE_GRID)
    unknown = set(tune_grid or {}) - set(grid)
    if unknown:
        raise ValueError(f"unknown tune_grid keys {sorted(unknown)}; known: {', '.join(grid)}")
    grid.update(tune_grid or {})
    for key in ("osem_iterations", "post_filter_mm", "bsrem_beta", "rdp_gamma"):
        values = tuple(grid[key])
        if not values:
            raise ValueError(f"tune_grid[{key!r}] must hold at least one value")
        for v in values:  # the same checks as the settings themselves
            dataclasses.replace(ClassicalSettings(), **{key: v}).validate()
        grid[key] = tuple(int(v) for v in values) if key == "osem_iterations" else tuple(float(v) for v in values)
    extend = grid["extend"]
    if not isinstance(extend, int) or isinstance(extend, bool) or extend < 0:
        raise ValueError(f"tune_grid['extend'] must be an integer >= 0, got {extend!r}")
    if not isinstance(grid["restorer_map"], bool):
        raise TypeError(f"tune_grid['restorer_map'] must be True or False, got {grid['restorer_map']!r}")
    return grid


def _n(count: int, word: str) -> str:
    return f"{count} {word}{'s' * (count != 1)}"


def _settings_text(per_drf: dict, methods, how: str) -> str:
    shown = [m for m in ("osem", "bsrem-rdp", "mlem", "red", "dream", "legopet", "ddip", "pet-dds") if m in methods]
    if not shown:
        return ""
    parts = []
    for drf, s in per_drf.items():
        items = []
        if "osem" in shown:
            items.append(f"OSEM {_n(s.osem_iterations, 'iteration')} × {s.osem_subsets} subsets, "
                         f"{s.post_filter_mm:g} mm post-filter")
        if "bsrem-rdp" in shown:
            items.append(f"BSREM-RDP β {s.bsrem_beta:g}, γ {s.rdp_gamma:g} (MAP, at most {s.bsrem_iterations} epochs)")
        if "mlem" in shown:
            items.append(f"MLEM {_n(s.mlem_iterations, 'iteration')}")
        for m in ("red", "dream"):
            if m in shown and getattr(s, f"{m}_reconstruction") == "bsrem-rdp":
                items.append(f"{LABELS[m]}: BSREM-RDP of the restored sinogram, β {getattr(s, f'{m}_bsrem_beta'):g}, "
                             f"γ {getattr(s, f'{m}_rdp_gamma'):g}")
            elif m in shown:
                items.append(f"{LABELS[m]}: OSEM of the restored sinogram, "
                             f"{_n(getattr(s, f'{m}_osem_iterations'), 'iteration')}, "
                             f"{getattr(s, f'{m}_post_filter_mm'):g} mm post-filter")
        if "legopet" in shown:
            items.append(f"LegoPET: its sample + {_n(s.legopet_em_iterations, 'MLEM iteration')}, "
                         f"{s.legopet_post_filter_mm:g} mm post-filter")
        for m in ("ddip", "pet-dds"):
            if m in shown:
                items.append(f"{LABELS[m]}: {getattr(s, filter_field(m)):g} mm post-filter")
        parts.append(f"DRF {drf:g}: " + "; ".join(items))
    return f"Settings, {how}: " + ". ".join(parts) + ".\n\n"


def _cr_text(has_maps: bool, counts: Counter) -> str:
    if not has_maps:
        return ("\nCR hot / CR cold: n/a; this data set stores no lesion maps (manifest version 1, built "
                "before pettk 0.3); rebuild it with `pettk simulate` for lesion contrast recovery.\n")
    skipped = {k: v for k, v in counts.items() if k not in ("hot", "cold")}
    text = (f"\nCR hot / CR cold: lesion contrast recovery (mean_img(L)/mean_img(B) − 1) / "
            f"(mean_true(L)/mean_true(B) − 1), 1 = the true contrast; mean ± std over lesions (their number in "
            f"brackets); B = the parenchyma 1.5–3.5 pixels from the lesion, away from every lesion; hot and cold "
            f"by the true contrast. Measured: {counts['hot']} hot and {counts['cold']} cold lesions (lesion × slice, "
            f"at each DRF)")
    if skipped:
        text += "; not scored: " + ", ".join(f"{v} ({k})" for k, v in skipped.items())
    return text + ". Every lesion: lesions.csv.\n"


def evaluate(out_dir, methods=METHODS, data: EvalData | None = None, *, checkpoints: dict | None = None,
             model_settings: dict | None = None, settings: ClassicalSettings | dict | None = None, device="cpu",
             data_dir=None, drfs=None,
             subjects: int | None = None, slices: int | None = None, tune: bool | None = None, tune_slices: int = 8,
             tune_grid: dict | None = None, bsrem_max_epochs: int | None = None, cache_dir=None,
             write_nifti: bool = True, progress: bool = True, title: str | None = None,
             settings_source: str | None = None) -> list[dict]:
    """Run ``methods`` on held-out data and write tables, figures and images to ``out_dir``.

    Every argument is checked before any work (simulation, tuning, reconstruction).

    Parameters
    ----------
    out_dir : path
        Output folder (created).
    methods : sequence of str
        Any of :data:`METHODS`, in the order of the table and figure.
    data : EvalData
        Simulated held-out subjects, DRFs, tracer (default: 3 FDG-like subjects × 2 slices at
        DRF 20). Not with ``data_dir``.
    checkpoints : dict, optional
        ``{method: shipped model name or checkpoint path}`` overriding :data:`DEFAULT_MODELS`.
    model_settings : dict, optional
        ``{method: {field: value}}``: reconstruction settings of an evaluated image prior (DDIP,
        PET-DDS) changed from its model's (:func:`pettk.models.with_settings`), e.g.
        ``{"ddip": {"final_em_iterations": 8}}``. A model whose JSON holds settings tuned per DRF
        (:func:`pettk.models.tuned_settings`) runs each DRF with those, these changes on top; at a
        DRF it has none for, its own settings.
    settings : ClassicalSettings or {drf: ClassicalSettings}, optional
        Classical settings (default: :data:`~pettk.evaluation.methods.TUNED` for the DRF, else
        :class:`ClassicalSettings`); with tuning, the base whose tuned fields are replaced.
    settings_source : str, optional
        Where ``settings`` came from, for the report (e.g. :func:`.reuse.settings_from_runs`'s
        description: earlier runs' ``tuning.json``).
    device : str or torch.device
    data_dir : path, optional
        A data set built by ``pettk simulate`` (:func:`pettk.sim.datasets.build_dataset`): its test
        split is evaluated, its validation split tunes.
    drfs : sequence of float, optional
        With ``data_dir``: the DRFs to evaluate (default all of the data set's).
    subjects, slices : int, optional
        With ``data_dir``: the first ``subjects`` test subjects and ``slices`` evenly spaced slices
        of each (default all).
    tune : bool, optional
        Tune the settings of ``osem`` / ``bsrem-rdp`` / ``red`` / ``dream`` (those requested; a
        restorer's OSEM + filter or BSREM-RDP of its restored data) on the validation data;
        default: whenever there is a validation split (always for simulated data).
    tune_slices : int
        Validation slices that tune (evenly spread over the validation split; default 8).
    tune_grid : dict, optional
        Overrides of :data:`TUNE_GRID` (``osem_iterations``, ``post_filter_mm``, ``bsrem_beta``,
        ``rdp_gamma``, ``extend``, ``restorer_map``: False tunes a restorer's OSEM + filter only).
    bsrem_max_epochs : int, optional
        Caps BSREM-RDP's epochs (``ClassicalSettings.bsrem_iterations``), in tuning and evaluation.
    cache_dir : path, optional
        For simulated data: where to keep the simulated test (``test/``) and validation
        (``validation/``) subjects, reused when they hold the same configuration; default a
        temporary folder.

    Returns
    -------
    list of dict
        The summary rows (method, drf, tracer, n, psnr, psnr_std, ssim, ..., cr_hot, cr_cold, ...).
    """
    methods = _check_methods(methods)
    checkpoints = dict(checkpoints or {})
    bad = [m for m in checkpoints if m not in LEARNED]
    if bad:
        raise ValueError(f"checkpoints given for {bad}, which take no model; learned methods are {', '.join(LEARNED)}")
    model_settings = dict(model_settings or {})
    for name, value in (("subjects", subjects), ("slices", slices)):
        if value is not None:
            as_positive_int(name, value)
    tune_slices = as_positive_int("tune_slices", tune_slices)
    if bsrem_max_epochs is not None:
        bsrem_max_epochs = as_positive_int("bsrem_max_epochs", bsrem_max_epochs)
    grid = _check_grid(tune_grid)

    manifest = None
    if data_dir is not None:
        if data is not None:
            raise ValueError("give data (simulated held-out subjects) or data_dir (an existing data set), not both")
        root = Path(data_dir)
        manifest = read_manifest(root)
        available = manifest_drfs(manifest)
        drfs = available if drfs is None else tuple(float(d) for d in drfs)
        unknown = [d for d in drfs if d not in available]
        if unknown:
            raise ValueError(f"DRF {', '.join(f'{d:g}' for d in unknown)} not in the data set at {root}; "
                             f"it has DRF {', '.join(f'{d:g}' for d in available)}")
        if not split_subjects(manifest, "test"):
            raise ValueError(f"the data set at {root} has no test subjects to evaluate")
        has_validation = bool(split_subjects(manifest, "validation"))
    else:
        if drfs is not None or subjects is not None or slices is not None:
            raise ValueError("drfs, subjects and slices select from data_dir; for simulated subjects set them in "
                             "EvalData")
        data = data or EvalData()
        if not isinstance(data, EvalData):
            raise TypeError(f"data must be an EvalData, got {type(data).__name__}")
        drfs = tuple(float(d) for d in data.drfs)
        has_validation = True
    if len(set(drfs)) != len(drfs) or not drfs:
        raise ValueError(f"drfs must be distinct and at least one, got {drfs}")
    if tune is None:
        tune = has_validation
    if tune and not has_validation:
        raise ValueError(f"the data set at {data_dir} has no validation split to tune the classical settings on; "
                         "build it with validation subjects (`pettk simulate --validation N`) or do not tune "
                         "(--no-tune: the fixed TUNED settings)")
    tunable = tuple(m for m in methods if m in TUNABLE) if tune else ()
    val_data = validation_data(data, tune_slices) if tunable and data is not None else None

    if settings is None:
        per_drf = {d: TUNED.get(d, ClassicalSettings()) for d in drfs}
    elif isinstance(settings, ClassicalSettings):
        per_drf = {d: settings for d in drfs}
    else:
        per_drf = {d: settings.get(d, ClassicalSettings()) for d in drfs}
    if bsrem_max_epochs is not None:
        per_drf = {d: dataclasses.replace(s, bsrem_iterations=bsrem_max_epochs) for d, s in per_drf.items()}
    per_drf = {d: s.validate() for d, s in per_drf.items()}
    device = torch.device(device)
    base_models = {m: load_method_model(m, checkpoints.get(m), device=device) for m in methods if m in LEARNED}
    models = apply_model_settings(base_models, model_settings)
    # an image prior's settings tuned per DRF (its JSON's settings_by_drf), under the given changes
    tuned = {m: tuned_settings(checkpoints.get(m) or DEFAULT_MODELS[m]) for m in base_models}
    drf_models = {(m, d): settings_for_drf(base_models[m], tuned[m], d, m, strict=False, **model_settings.get(m, {}))
                  for m in base_models for d in drfs}
    if data_dir is not None:
        size = int(manifest["config"]["image_size"])
        sinogram = manifest.get("sinogram_shape") or geometry_from_dict(manifest["geometry"]).shape
    else:
        held_out = heldout_dataset_config(data)
        size, sinogram = held_out.image_size, held_out.make_geometry().shape
    check_models_fit_data(models, size, sinogram, drfs)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in ("tuning.json", "lesions.csv"):  # of an earlier run into the same folder
        (out_dir / stale).unlink(missing_ok=True)

    with tempfile.TemporaryDirectory(prefix="pettk-eval-") as tmp:
        work = Path(cache_dir) if cache_dir else Path(tmp)
        tuning = None
        if tunable:
            if data_dir is not None:
                val_sets = open_split(root, "validation", drfs)
                source = f"the validation split of {root}"
            else:
                val_sets = build_heldout(work / "validation", val_data, progress=progress)
                last = val_data.seed + val_data.n_subjects - 1
                source = f"simulated validation subjects (seeds {val_data.seed}..{last}, the evaluated data's settings)"
            val_idx = {d: evenly_spaced(len(ds), tune_slices) for d, ds in val_sets.items()}
            val_cases = _cases(val_sets, device, val_idx)
            start = time.perf_counter()
            per_drf, record = tune_on_cases([(d, c) for d, _, c in val_cases], methods=tunable, base=per_drf,
                                            models={m: {d: drf_models[(m, d)] for d in drfs}
                                                    for m in tunable if m in models},
                                            progress=progress, **grid)
            tuning = {"criterion": "mean PSNR against the true activity over the validation slices",
                      "source": source, "methods": list(tunable), "grid": {k: list(v) if isinstance(v, tuple) else v
                                                                           for k, v in grid.items()},
                      "slices": {f"{d:g}": [{"subject": c.info["subject"], "slice": c.info["slice"]}
                                            for dd, _, c in val_cases if dd == d] for d in drfs},
                      "seconds": time.perf_counter() - start,
                      "drfs": {f"{d:g}": {"settings": dataclasses.asdict(per_drf[d]), **record[d]} for d in drfs}}
            with atomic_path(out_dir / "tuning.json") as tmp_path:
                tmp_path.write_text(json.dumps(tuning, indent=2))

        runners = {(m, d): make_runner(m, drf_models.get((m, d)), per_drf[d]) for m in methods for d in per_drf}
        if data_dir is not None:
            datasets = open_split(root, "test", drfs)
            indices = {d: select_indices(ds, subjects, slices) for d, ds in datasets.items()}
            tracers = {s["name"]: s.get("tracer", manifest["config"].get("tracer", "")) for s in manifest["subjects"]}
        else:
            datasets = build_heldout(work / "test" if cache_dir else work / "heldout", data, progress=progress)
            indices = None
            manifest = next(iter(datasets.values())).manifest
            tracers = {}
        parenchyma = parenchyma_labels(manifest)
        cases = _cases(datasets, device, indices)
        rows: list[dict] = []
        lesion_rows: list[dict] = []
        lesion_counts: Counter = Counter()
        has_maps = False
        images: dict[tuple, list[np.ndarray]] = {}
        first: dict[float, tuple] = {}
        bar = tqdm(total=len(cases) * len(methods), desc="evaluate", disable=not progress)
        for drf, item, case in cases:
            truth = case.truth.numpy()
            subject = case.info["subject"]
            if drf == drfs[0]:  # the true activity and the full-dose reference, once per slice
                images.setdefault(("truth", None, subject), []).append(truth.astype(np.float32))
                images.setdefault(("reference", None, subject), []).append(item["reference"].numpy())
            tracer = tracers.get(subject, data.tracer if data is not None else "")
            rois = []
            if "lesions" in item:
                has_maps = True
                rois = lesion_rois(item["lesions"].numpy(), truth,
                                   item["labels"].numpy() if "labels" in item else None, parenchyma=parenchyma)
                if drf == drfs[0]:  # the same lesions at every DRF: count them once
                    lesion_counts.update(r.kind if not r.skipped else r.skipped for r in rois)
            for method in methods:
                bar.set_postfix_str(f"{method} DRF {drf:g} {subject}")
                start = time.perf_counter()
                image = _image(runners[(method, drf)](case))
                seconds = time.perf_counter() - start
                row = {"method": method, "drf": drf, "tracer": tracer, "subject": subject,
                       "slice": case.info["slice"], "psnr": psnr(image, truth), "ssim": ssim(image, truth),
                       "nrmse": nrmse(image, truth), "seconds": seconds}
                rows.append(row)
                key = {k: row[k] for k in ("method", "drf", "tracer", "subject", "slice")}
                lesion_rows += [{**key, **lesion_measurement(roi, image, truth)} for roi in rois]
                images.setdefault((method, drf, subject), []).append(image)
                first.setdefault(drf, (item, {}, {}, tracer))
                if first[drf][0] is item:
                    first[drf][1][method] = image
                    first[drf][2][method] = (row["psnr"], row["ssim"])
                bar.update(1)
        bar.close()
        grid_2d = cases[0][2].grid

    summary = summarise(rows, lesion_rows)
    write_rows_csv(out_dir / "slices.csv", rows)
    if has_maps:
        write_lesions_csv(out_dir / "lesions.csv", lesion_rows)
    n_methods = len(methods)
    if data_dir is not None:
        config = manifest["config"]
        n_subjects = len({r["subject"] for r in rows})
        n_slices = len(rows) // n_methods // len(drfs)
        preamble = (f"Data set {root} (test split: {n_subjects} subject{'s' * (n_subjects != 1)}, {n_slices} "
                    f"slice{'s' * (n_slices != 1)}; "
                    f"{config.get('anatomy', 'v1')} anatomy, {config['image_size']} × {config['image_size']}, "
                    f"{config['geometry']} geometry); metrics against the true activity (peak = slice maximum).\n\n")
    else:
        preamble = (f"Held-out subjects: {data.n_subjects} × {data.slices_per_subject} slices, {data.anatomy} "
                    f"anatomy, tracer {data.tracer}, seeds from {data.seed}; metrics against the true activity "
                    "(peak = slice maximum).\n\n")
    if tuning is not None:
        how = (f"tuned on {_n(len(next(iter(tuning['slices'].values()))), 'validation slice')} "
               f"({tuning['source']}) by best mean PSNR ({', '.join(tunable)}; every score in tuning.json)")
    elif tune:
        how = "nothing to tune among the methods evaluated"
    else:
        how = (f"from {settings_source}" if settings_source else "given" if settings is not None else
               "the fixed constants pettk.evaluation.TUNED (tuned on v1 64 × 64 simulated validation subjects, "
               "not on this data" + ("; the ClassicalSettings defaults at DRFs it lacks" if set(drfs) - set(TUNED)
                                     else "") + ")")
    preamble += _settings_text(per_drf, methods, how)
    for method in base_models:
        for drf in drfs:
            if tuned[method].get(drf):
                given = ", ".join(f"{k} = {v!r}" for k, v in sorted(tuned[method][drf].items()))
                preamble += f"{method} at DRF {drf:g}: the model's settings tuned for DRF {drf:g} ({given}).\n\n"
        changes = model_settings.get(method)
        if changes:
            given = ", ".join(f"{k} = {v!r}" for k, v in sorted(changes.items()))
            preamble += f"{method}: the model's settings with {given}" + (" (over its tuned ones)" if any(
                tuned[method].get(d) for d in drfs) else "") + ".\n\n"
    comparisons = comparison_lines(summary, LABELS)
    postscript = _cr_text(has_maps, lesion_counts)
    if comparisons:
        postscript += "\n" + "\n".join(comparisons) + "\n"
    write_summary(out_dir, summary, LABELS, preamble, postscript)
    where = root.name if data_dir is not None else "held-out"
    for drf, (item, imgs, scores, tracer) in first.items():
        name = "figure.png" if len(first) == 1 else f"figure_drf{drf:g}.png"
        write_figure(out_dir / name, item["truth"].numpy(), imgs, scores,
                     title or f"DRF {drf:g}, {tracer}, {where} {item['subject']} slice {int(item['slice'])}",
                     LABELS)
    if write_nifti:
        for (method, drf, subject), stack in images.items():
            name = f"{method}_{subject}" if drf is None else f"{method}_drf{drf:g}_{subject}"
            write_nifti_stack(out_dir / "nifti" / f"{name}.nii.gz", stack, grid_2d)
    return summary


def tune_classical(data: EvalData | None = None, *, osem_iterations=(2, 4, 8),
                   post_filter_mm=(0.0, 4.0, 6.0, 8.0, 10.0),
                   bsrem_beta=(0.03, 0.1, 0.3, 1.0, 3.0), rdp_gamma=(0.5, 2.0, 5.0, 20.0),
                   base: ClassicalSettings | None = None, progress: bool = True, methods=("osem", "bsrem-rdp"),
                   extend: int = 3, device="cpu") -> dict[float, ClassicalSettings]:
    """Choose the classical settings per DRF by best mean PSNR on simulated validation subjects.

    The grid search is :func:`tune_on_cases` (OSEM iterations × post-filter; BSREM-RDP ``beta`` ×
    ``gamma``, each grid extended past a winning end up to ``extend`` times). The validation
    subjects (default 2 × 2 slices at DRF 4, 20 and 100) use seeds :data:`VALIDATION_SEED`
    (``HELD_OUT_SEED // 2``) upwards: disjoint from the training (``0 ..``) and the test
    (``HELD_OUT_SEED ..``) subjects. ``evaluate(..., tune=True)`` does the same on the validation
    split of the data it evaluates.
    """
    data = data or EvalData(n_subjects=2, slices_per_subject=2, drfs=(4.0, 20.0, 100.0), seed=VALIDATION_SEED)
    base = (base or ClassicalSettings()).validate()
    device = torch.device(device)
    with tempfile.TemporaryDirectory(prefix="pettk-tune-") as tmp:
        cases = _cases(build_heldout(Path(tmp), data, progress=progress), device)
        chosen, _ = tune_on_cases([(d, c) for d, _, c in cases], methods=methods, osem_iterations=osem_iterations,
                                  post_filter_mm=post_filter_mm, bsrem_beta=bsrem_beta, rdp_gamma=rdp_gamma,
                                  extend=extend, base=base, progress=progress)
    return chosen

"""The ``pettk`` command line.

``pettk --version``
    Print the version.
``pettk demo [--output DIR] [--device cuda] [--subjects N --slices S]``
    Simulate held-out brain subjects at DRF 20, reconstruct them with OSEM (+ post-filter),
    BSREM-RDP and the four priors with the shipped default models, and write a figure grid, NIfTI
    images and a metrics table to ``DIR`` (default ``./pettk-demo``). ``--projector`` instead
    runs the projector demo (Shepp–Logan forward and back projection).
``pettk evaluate --output DIR [--methods ...] [--checkpoint METHOD=PATH] [--drf 4 20 100] ...``
    Any subset of methods and checkpoints on N held-out subjects, or on the test split of a data set
    (``--data DIR``, built by ``pettk simulate``): mean ± std tables (PSNR, SSIM, NRMSE, lesion
    contrast recovery) and figures; the classical settings are tuned on the validation split of
    the same data (``--tune``, the default; ``--no-tune``: the fixed TUNED constants).
``pettk simulate OUT_DIR [--subjects N --slices S --size PX --anatomy v2 --drf D ...]``
    Build a paired low-/full-dose 2D-slice data set of simulated brains (resumable; default: the
    shipped models' training set, 240 v2 subjects x 20 slices, 128 x 128 on the mmr-like geometry).
    ``--tissue-maps DIR`` uses the users' own anatomy (one sub-folder of NIfTI tissue maps per subject).
``pettk train diffusion --output DIR [--preset tiny|full] [--config FILE.json|.yaml] [--data DIR]``
    Train an image diffusion model on a data set (resumable with ``--resume``).
``pettk train red|dream|ddip|legopet --data DIR --output DIR [--preset tiny|gpu|full] [--config FILE.json]``
    Train a prior (presets of METHODS.md; ``--config`` overrides, see each prior's ``from_json``).
    Every ``pettk train`` runs on ``--device`` (default: CUDA when torch sees a GPU, else the CPU), and
    in chunks: ``--max-minutes M`` stops after M minutes with the checkpoints written (exit status 75
    when training is not finished), ``--resume`` continues; SIGTERM and Ctrl-C also keep the steps done.
``pettk recon SINOGRAM.npz --output IMAGE.nii.gz [--algorithm ...]``
    Reconstruct a pettk sinogram file (:mod:`pettk.io.sinogram`) with MLEM, OSEM, OSL-MAP, BSREM
    or FBP and write a NIfTI image; ``--dicom DIR`` also writes it as a DICOM PET series.
``pettk recon --petsird FILE --output IMAGE.nii.gz [--iterations 3 --subsets 10 ...]``
    Reconstruct a PETSIRD list-mode file with list-mode OSEM (TOF when the file has it).
``pettk recon --petsird FILE --estimate-corrections [--mu MU.nii.gz] --output IMAGE.nii.gz``
    Randoms from the delayeds, attenuation, scatter (SSS ↔ OSEM, tail fit), then sinogram OSEM;
    prints the randoms and scatter fractions and writes them to ``IMAGE.corrections.json``.
``pettk recon --cohort MANIFEST.csv --output DIR [--scheduler local|ADDRESS]``
    Reconstruct every study of a cohort as independent Dask tasks (resumable, per-study failures).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

from ._version import __version__

DEMO_METHODS = ("osem", "bsrem-rdp", "red", "dream", "ddip", "legopet")
#: pettk.evaluation.METHODS, spelled out so that building the parser imports no torch.
EVALUATE_METHODS = ("osem", "bsrem-rdp", "mlem", "red", "dream", "ddip", "legopet", "pet-dds")


def _demo(args: argparse.Namespace) -> int:
    if args.projector:
        return _demo_projector(args)
    from . import models
    from .evaluation import DEFAULT_MODELS, LEARNED, EvalData

    shipped = models.available()
    methods = [m for m in DEMO_METHODS if m not in LEARNED or DEFAULT_MODELS[m] in shipped]
    missing = [m for m in DEMO_METHODS if m not in methods]
    data = EvalData(n_subjects=args.subjects, slices_per_subject=args.slices, drfs=(20.0,))
    print(f"pettk {__version__} demo: {data.n_subjects} held-out simulated brain subjects x {data.slices_per_subject} "
          f"slices at DRF 20, methods: {', '.join(methods)}")
    if missing:
        print(f"  (no shipped model for {', '.join(missing)} in this installation; skipped)")
    # the demo stays fast: the fixed TUNED settings (`pettk evaluate` tunes on validation data)
    return _run_evaluation(args.output, methods, data, {}, args.device, not args.no_progress, tune=False)


def _run_evaluation(output, methods, data, checkpoints, device, progress, prog="pettk", **options) -> int:
    from .evaluation import evaluate

    start = time.perf_counter()
    try:
        evaluate(output, methods, data, checkpoints=checkpoints, device=device, progress=progress, **options)
    except (ValueError, TypeError, FileNotFoundError) as err:
        raise SystemExit(f"{prog}: {err}") from None
    out = Path(output)
    print((out / "metrics.md").read_text())
    extra = "".join(f"{out / name}, " for name in ("lesions.csv", "tuning.json") if (out / name).exists())
    print(f"wrote {out / 'metrics.md'}, {out / 'metrics.csv'}, {out / 'slices.csv'}, {extra}figure(s) and "
          f"{out / 'nifti'}/ in {time.perf_counter() - start:.0f} s")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from .evaluation import HELD_OUT_SEED, EvalData

    checkpoints = {}
    for spec in args.checkpoint or []:
        method, sep, source = spec.partition("=")
        if not sep or not source:
            raise SystemExit(f"pettk evaluate: --checkpoint takes METHOD=PATH_OR_NAME, got {spec!r}")
        checkpoints[method] = source
    grid = {key: tuple(values) for key, values in (("osem_iterations", args.tune_osem_iterations),
                                                   ("post_filter_mm", args.tune_filter_mm),
                                                   ("bsrem_beta", args.tune_beta), ("rdp_gamma", args.tune_gamma))
            if values}
    if args.tune_extend is not None:
        grid["extend"] = args.tune_extend
    options = dict(tune=args.tune, tune_slices=args.tune_slices, tune_grid=grid or None,
                   bsrem_max_epochs=args.bsrem_max_epochs)
    if args.three_d:
        return _evaluate_3d(args, checkpoints, grid)
    run = dict(checkpoints=checkpoints, device=args.device, progress=not args.no_progress, prog="pettk evaluate")
    if args.data:
        given = [flag for flag, value in (("--tracer", args.tracer), ("--seed", args.seed), ("--anatomy", args.anatomy))
                 if value is not None]
        if given:
            raise SystemExit(f"pettk evaluate: --data evaluates a data set with its own subjects and tracer; "
                             f"drop {' and '.join(given)} (for simulated held-out subjects only)")
        return _run_evaluation(args.output, tuple(args.methods), None, data_dir=args.data, drfs=args.drf,
                               subjects=args.subjects, slices=args.slices, **run, **options)
    data = EvalData(n_subjects=args.subjects or 3, slices_per_subject=args.slices or 2,
                    drfs=tuple(args.drf or [20.0]), tracer=args.tracer or "fdg", seed=HELD_OUT_SEED + (args.seed or 0),
                    anatomy=args.anatomy or "v1")
    return _run_evaluation(args.output, tuple(args.methods), data, **run, **options)


def _evaluate_3d(args: argparse.Namespace, checkpoints: dict, grid: dict) -> int:
    """``pettk evaluate --3d``: held-out v2 volumes on a ring-scanner section (:mod:`pettk.evaluation.volumes`)."""
    from .evaluation import load_method_model
    from .evaluation.volumes import VolumeData, evaluate_volumes

    wrong = [flag for flag, value in (("--data", args.data), ("--slices", args.slices), ("--tracer", args.tracer),
                                      ("--seed", args.seed)) if value is not None]
    if wrong:
        raise SystemExit(f"pettk evaluate: --3d simulates its own FDG volumes; drop {' and '.join(wrong)}")
    if args.anatomy == "v1" or (args.drf and len(args.drf) != 1):
        raise SystemExit("pettk evaluate: --3d takes the v2 anatomy (--anatomy v2 or v2-shifted) and one --drf")
    try:
        data = VolumeData(subjects=args.subjects or 3, validation_subjects=args.validation_subjects,
                          drf=(args.drf or [20.0])[0], rings=args.rings, shape=tuple(args.volume_shape),
                          family="standard" if args.anatomy == "v2" else "shifted").validate()
        models = {m: load_method_model(m, checkpoints.get(m), device=args.device)
                  for m in args.methods if m not in ("osem", "bsrem-rdp", "mlem")}
        evaluate_volumes(args.output, tuple(args.methods), data, models=models, tune=args.tune is not False,
                         tune_grid=grid or None, bsrem_max_epochs=args.bsrem_max_epochs, device=args.device,
                         progress=not args.no_progress)
    except (TypeError, ValueError) as err:
        raise SystemExit(f"pettk evaluate: {err}") from None
    print((Path(args.output) / "metrics.md").read_text())
    return 0


def _demo_projector(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from .geometry import ImageGrid, ParallelBeam2D
    from .io import atomic_path
    from .projector import Projector
    from .sim import shepp_logan_2d

    out_dir = Path(args.output)
    grid = ImageGrid((256, 256), 1.0)
    geometry = ParallelBeam2D(n_views=256, n_radial=367, radial_spacing_mm=1.0)
    projector = Projector(grid, geometry)
    image = shepp_logan_2d(grid).astype(np.float32)

    projector.adjoint(projector.forward(image))  # first calls compile (or load) the numba kernels
    start = time.perf_counter()
    sinogram = projector.forward(image)
    t_forward = time.perf_counter() - start
    start = time.perf_counter()
    backprojection = projector.adjoint(sinogram)
    t_adjoint = time.perf_counter() - start

    fig, axes = plt.subplots(1, 3, figsize=(13, 4.4), constrained_layout=True)
    extent_img = [grid.origin_mm[0], -grid.origin_mm[0], grid.origin_mm[1], -grid.origin_mm[1]]
    panels = [
        (image.T, "Shepp–Logan phantom (256×256, 1 mm)", extent_img, "x / mm", "y / mm"),
        (sinogram, f"Joseph forward projection ({t_forward * 1e3:.0f} ms)",
         [0, geometry.n_radial, 180, 0], "radial bin", "view angle / °"),
        (backprojection.T, f"Back projection Pᵀ P x ({t_adjoint * 1e3:.0f} ms)", extent_img, "x / mm", "y / mm"),
    ]
    for ax, (data, title, extent, xlabel, ylabel) in zip(axes, panels):
        im = ax.imshow(data, cmap="gray_r" if data is sinogram else "gray", extent=extent,
                       origin="upper" if data is sinogram else "lower", aspect="auto")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        fig.colorbar(im, ax=ax, shrink=0.85)
    figure_path = out_dir / "projector.png"
    with atomic_path(figure_path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)

    print(f"pettk {__version__} demo: Joseph projector on a 256x256 Shepp-Logan phantom, "
          f"{geometry.n_views} views x {geometry.n_radial} radial bins")
    print(f"  forward  {t_forward * 1e3:7.1f} ms   adjoint {t_adjoint * 1e3:7.1f} ms")
    print(f"  <Px, Px> = {float(np.vdot(sinogram, sinogram)):.6e}   "
          f"<x, P^T P x> = {float(np.vdot(image, backprojection)):.6e}")
    print(f"  wrote {figure_path}")
    return 0


ALGORITHMS = ("osem", "mlem", "osl-map", "bsrem", "fbp")


def _recon_petsird(args: argparse.Namespace) -> int:
    from .io.petsird import reconstruct_petsird

    if args.sinogram is not None:
        raise SystemExit("pettk recon: give either a sinogram file or --petsird FILE, not both")
    if args.algorithm != "osem" or args.method:
        raise SystemExit("pettk recon: --petsird reconstructs with list-mode OSEM (--algorithm osem, no --method)")
    output = str(args.output)
    if not (output.endswith(".nii") or output.endswith(".nii.gz")):
        raise SystemExit(f"pettk recon: --output must end in .nii or .nii.gz, got {output!r}")
    _check_dicom_folder(args)
    if args.estimate_corrections:
        return _recon_petsird_corrected(args, output)
    if args.mu is not None:
        raise SystemExit("pettk recon: --mu with --petsird needs --estimate-corrections (attenuation and scatter "
                         "are applied by the corrections pipeline)")
    try:
        result = reconstruct_petsird(args.petsird, output, n_iter=args.iterations, n_subsets=args.subsets,
                                     chunk_events=args.chunk_events, progress=not args.no_progress,
                                     voxel_size_mm=args.voxel_size, energy_window_kev=args.energy_window,
                                     use_tof=not args.no_tof, psf_fwhm_mm=args.psf_mm or None,
                                     cache_dir=args.cache_dir)
    except (ValueError, TypeError, FileNotFoundError, ImportError) as err:
        raise SystemExit(f"pettk recon: {err}") from None
    print(f"pettk recon: list-mode OSEM of {result.n_events} events from {args.petsird} -> {output} "
          f"(shape {tuple(result.grid.shape)}, voxel {result.grid.voxel_size_mm} mm)")
    _write_dicom(args, result.image, result.grid, "pettk list-mode OSEM")
    return 0


def _recon_petsird_corrected(args: argparse.Namespace, output: str) -> int:
    """--petsird FILE --estimate-corrections: randoms, attenuation, scatter, then OSEM; report printed
    and written beside the image as OUTPUT-without-.nii(.gz) + ``.corrections.json``."""
    from .corrections.acquisition import estimate_corrections, report_lines, write_report
    from .io import save_nifti

    if args.psf_mm:
        raise SystemExit("pettk recon: --estimate-corrections does not take --psf-mm")
    _check_output_file(output)
    stem = output[:-len(".nii.gz")] if output.endswith(".nii.gz") else output[:-len(".nii")]
    report_path = stem + ".corrections.json"
    try:
        result = estimate_corrections(args.petsird, args.mu, voxel_size_mm=args.voxel_size,
                                      energy_window_kev=args.energy_window, n_rounds=args.scatter_rounds,
                                      n_iter=args.iterations, n_subsets=args.subsets,
                                      sss_options={"scatter_step_mm": args.scatter_step},
                                      progress=not args.no_progress)
    except (ValueError, TypeError, FileNotFoundError, ImportError) as err:
        raise SystemExit(f"pettk recon: {err}") from None
    image = result.image.detach().cpu().numpy().astype("float32")
    save_nifti(output, image, result.grid)
    write_report(report_path, result.report)
    for line in report_lines(result.report):
        print(f"pettk recon: {line}")
    print(f"pettk recon: corrected OSEM of {args.petsird} -> {output} (shape {tuple(result.grid.shape)}, voxel "
          f"{result.grid.voxel_size_mm} mm); report {report_path}")
    _write_dicom(args, image, result.grid, "pettk corrected OSEM")
    return 0


def _recon(args: argparse.Namespace) -> int:
    import numpy as np

    if getattr(args, "cohort", None):
        if args.sinogram is not None or args.petsird:
            raise SystemExit("pettk recon: --cohort takes its studies from the manifest; give no other input")
        if getattr(args, "dicom", None):
            raise SystemExit("pettk recon: --dicom writes one study's series; it does not apply to --cohort")
        from .batch import cohort_main
        return cohort_main(args)
    if args.petsird:
        return _recon_petsird(args)
    if args.estimate_corrections:
        raise SystemExit("pettk recon: --estimate-corrections needs --petsird FILE (prompts and delayeds)")
    if args.sinogram is None:
        raise SystemExit("pettk recon: give a sinogram file (.npz), --petsird FILE or --cohort MANIFEST.csv")

    from . import recon
    from .geometry import ParallelBeam2D
    from .io import load_nifti, load_sinogram, save_nifti
    from .physics import ForwardModel
    from .projector import Projector
    from .psf import GaussianPSF

    output = str(args.output)
    if not (output.endswith(".nii") or output.endswith(".nii.gz")):
        raise SystemExit(f"pettk recon: --output must end in .nii or .nii.gz, got {output!r}")
    _check_output_file(output)
    _check_numbers(args)
    _check_dicom_folder(args)
    if args.method and args.algorithm != "osem":
        raise SystemExit("pettk recon: give either --algorithm or --method (a learned method), not both")
    learned = _learned_model(args) if args.method else None
    data = load_sinogram(args.sinogram)
    grid = data.grid
    # build the filters now: a bad FWHM fails here, not after the reconstruction
    psf = GaussianPSF(grid, args.psf_mm) if args.psf_mm else None
    if args.post_filter_mm:
        GaussianPSF(grid, args.post_filter_mm)
    mu = data.mu
    if args.mu is not None:
        mu, mu_grid = load_nifti(args.mu, ndim=grid.ndim)
        if mu_grid.shape != grid.shape:
            raise SystemExit(f"pettk recon: the mu-map has shape {mu_grid.shape}, the sinogram's grid {grid.shape}")
    prompts = data.prompts.astype(np.float32)
    method = args.method or args.algorithm
    if args.algorithm == "fbp" and not args.method:
        if not isinstance(data.geometry, ParallelBeam2D) or data.tof is not None:
            raise SystemExit("pettk recon: fbp needs a non-TOF 2D parallel-beam sinogram")
        image = recon.fbp(prompts, data.geometry, grid, window=args.window)
    else:
        model = ForwardModel(Projector(grid, data.geometry, tof=data.tof), psf=psf, normalisation=data.normalisation,
                             attenuation=data.attenuation, mu=None if data.attenuation is not None else mu,
                             additive=data.additive)
        progress = not args.no_progress
        if args.method:
            image = _recon_learned(args, learned, model, prompts, grid)
        elif args.algorithm == "mlem":
            image = recon.mlem(model, prompts, args.iterations, progress=progress)
        elif args.algorithm == "osem":
            image = recon.osem(model, prompts, args.iterations, args.subsets, progress=progress)
        else:
            grid_prior = {"rdp": lambda: recon.rdp(grid, gamma=args.gamma, epsilon=args.epsilon),
                          "quadratic": lambda: recon.quadratic(grid),
                          "tv": lambda: recon.tv(grid, delta=args.epsilon)}[args.prior]()
            run = recon.osl_map if args.algorithm == "osl-map" else recon.bsrem
            image = run(model, prompts, grid_prior, args.beta, args.iterations, args.subsets, progress=progress)
    if args.post_filter_mm:
        image = recon.post_filter(image, grid, args.post_filter_mm)
    save_nifti(output, np.asarray(image, dtype=np.float32), grid)
    print(f"pettk recon: {method} -> {output} (shape {tuple(grid.shape)}, voxel {grid.voxel_size_mm} mm)")
    _write_dicom(args, np.asarray(image, dtype=np.float32), grid, f"pettk {method}")
    return 0


def _recon_learned(args: argparse.Namespace, learned, model, prompts, grid):
    """``pettk recon --method``: the loaded model on the file's 2D or 3D data (:mod:`pettk.priors.apply`)."""
    from .io import load_nifti
    from .priors.apply import reconstruct_learned

    mr = None
    if args.mr is not None:
        mr, mr_grid = load_nifti(args.mr, ndim=grid.ndim)
        if mr_grid.shape != grid.shape:
            raise SystemExit(f"pettk recon: the MR has shape {mr_grid.shape}, the sinogram's grid {grid.shape}")
    try:
        return reconstruct_learned(args.method, learned, model, prompts, drf=args.drf, mr=mr,
                                   iterations=args.iterations, subsets=args.subsets, progress=not args.no_progress)
    except (TypeError, ValueError) as err:
        raise SystemExit(f"pettk recon: --method {args.method}: {err}") from None


def _learned_model(args: argparse.Namespace):
    """``pettk recon --method``: the model named by ``--model`` (a shipped name or a checkpoint file;
    default the method's shipped model), loaded before any reconstruction work."""
    from . import models
    from .evaluation.methods import DEFAULT_MODELS

    name = args.model or DEFAULT_MODELS.get(args.method)
    if name is None:
        raise SystemExit(f"pettk recon: --method {args.method} ships no model: give --model CHECKPOINT.safetensors")
    if args.drf is not None and args.method not in ("red", "dream"):
        raise SystemExit(f"pettk recon: --drf is for the sinogram restorers (red, dream), not {args.method}")
    if args.mr is not None and args.method not in ("ddip", "pet-dds"):
        raise SystemExit(f"pettk recon: --mr is for ddip and pet-dds, not {args.method}")
    if name in models.REGISTRY:
        if models.REGISTRY[name] != args.method:
            raise SystemExit(f"pettk recon: model {name!r} is a {models.REGISTRY[name]} model, not {args.method}")
        return models.load(name)
    return models.load_checkpoint_for(args.method, name)


def _check_dicom_folder(args: argparse.Namespace) -> None:
    """``--dicom DIR``: refuse a non-empty folder or a missing pydicom before any work."""
    if not getattr(args, "dicom", None):
        return
    from .io.atomic import check_empty_folder
    from .io.dicom import DICOM_UNITS, _pydicom

    if args.dicom_units not in DICOM_UNITS:
        raise SystemExit(f"pettk recon: --dicom-units must be one of {', '.join(DICOM_UNITS)}; "
                         f"got {args.dicom_units!r}")
    try:
        check_empty_folder(Path(args.dicom))
        _pydicom()
    except (FileExistsError, ImportError) as err:
        raise SystemExit(f"pettk recon: --dicom: {err}") from None


def _write_dicom(args: argparse.Namespace, image, grid, description: str) -> None:
    """``--dicom DIR``: write ``image`` (``grid.shape``) as a DICOM PET series into DIR."""
    if not getattr(args, "dicom", None):
        return
    from .io import save_dicom

    files = save_dicom(args.dicom, image, grid, series_description=description, units=args.dicom_units)
    print(f"pettk recon: DICOM series ({len(files)} slices, units {args.dicom_units}) -> {args.dicom}")


def _check_output_file(output: str) -> None:
    """Refuse an output path that cannot be written, before any work."""
    path = Path(output)
    if path.is_dir():
        raise SystemExit(f"pettk: --output {output} is a folder; give a file name")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise SystemExit(f"pettk: --output {output} lies inside {parent}, which is a file, not a folder")
            break


def _check_numbers(args: argparse.Namespace) -> None:
    """Finite, in-range numeric options of ``pettk recon``, before any work."""
    from ._validation import as_nonnegative_float, as_positive_float

    try:
        for name in ("psf_mm", "post_filter_mm"):
            as_nonnegative_float(f"--{name.replace('_', '-')}", getattr(args, name))
        for name in ("beta", "gamma", "epsilon"):
            value = getattr(args, name)
            (as_nonnegative_float if name == "beta" else as_positive_float)(f"--{name}", value)
    except (TypeError, ValueError) as err:
        raise SystemExit(f"pettk recon: {err}") from None


def _simulate(args: argparse.Namespace) -> int:
    import time

    from .sim.datasets import DatasetConfig, build_dataset

    anatomy, n_subjects = args.anatomy or "v2", args.subjects
    try:
        if args.tissue_maps is not None:
            anatomy, n_subjects = "tissue-maps", _check_tissue_maps_dir(args)
        config = DatasetConfig(n_subjects=n_subjects or 240, slices_per_subject=args.slices, image_size=args.size,
                               geometry=args.geometry, anatomy=anatomy, drfs=tuple(args.drf),
                               counts_per_slice=args.counts, tracer=args.tracer, lesions=args.lesions,
                               slice_range_mm=args.slice_range_mm, seed=args.seed,
                               split=(None, args.validation, args.test), tissue_maps=args.tissue_maps)
        config.validate()
    except (TypeError, ValueError, OSError) as err:
        raise SystemExit(f"pettk simulate: {err}") from None
    start = time.perf_counter()
    try:
        manifest = build_dataset(args.output, config, progress=not args.no_progress)
    except ValueError as err:  # a subject's maps failed a check on their values (FileFormatError included)
        if args.tissue_maps is None:
            raise
        raise SystemExit(f"pettk simulate: {err}") from None
    print(f"pettk simulate: {config.n_subjects} subjects x {args.slices} slices ({args.size}x{args.size}, "
          f"{config.anatomy} anatomy, DRF {', '.join(f'{d:g}' for d in args.drf)}) in "
          f"{time.perf_counter() - start:.1f} s -> {manifest}")
    return 0


def _check_tissue_maps_dir(args: argparse.Namespace) -> int:
    """Check ``--tissue-maps`` before any work: every subject folder's names, tables, shapes and
    affines (not the voxel values: those are checked as each subject is read); returns the number of
    subjects (``--subjects``, or every subject folder)."""
    from .sim.tissue_maps import check_tissue_maps, list_subjects

    if args.anatomy not in (None, "tissue-maps"):
        raise ValueError(f"--anatomy {args.anatomy} and --tissue-maps exclude each other")
    subjects = list_subjects(args.tissue_maps)
    n = len(subjects) if args.subjects is None else args.subjects
    if n > len(subjects):
        raise ValueError(f"--subjects {n}: {args.tissue_maps} holds only {len(subjects)} subject folders")
    if args.validation + args.test > n:
        raise ValueError(f"--validation {args.validation} + --test {args.test} subjects do not fit the {n} subjects "
                         f"of {args.tissue_maps}; lower --validation/--test")
    for folder in subjects[:n]:
        check_tissue_maps(folder)
    return n


def _read_config_file(path) -> dict:
    """The JSON (or YAML) object in ``path``; one clean ``pettk train: ...`` line for a bad file."""
    import json

    try:
        text = Path(path).read_text()
    except OSError as err:
        raise SystemExit(f"pettk train: cannot read --config {path}: {err.strerror or err}") from None
    if str(path).endswith((".yaml", ".yml")):
        try:
            import yaml
        except ImportError:
            raise SystemExit("pettk train: YAML configurations need PyYAML (pip install pyyaml); "
                             "or write the configuration as JSON") from None
        try:
            value = yaml.safe_load(text) or {}
        except yaml.YAMLError as err:
            raise SystemExit(f"pettk train: --config {path} is not valid YAML: {err}") from None
    else:
        try:
            value = json.loads(text)
        except json.JSONDecodeError as err:
            raise SystemExit(f"pettk train: --config {path} is not valid JSON: {err}") from None
    if not isinstance(value, dict):
        raise SystemExit(f"pettk train: --config {path} must hold a JSON object of settings, got a "
                         f"{type(value).__name__}")
    return value


def _train_device(args: argparse.Namespace):
    """The torch device of ``pettk train``: ``--device``, or CUDA when torch sees a GPU, else the CPU."""
    import torch

    if args.device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(args.device)
    except (RuntimeError, ValueError):
        raise SystemExit(f"pettk train: --device must be a torch device such as cpu, cuda or cuda:1, "
                         f"got {args.device!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"pettk train: --device {args.device} asked for, but torch sees no CUDA device")
    return device


def _train_red(args: argparse.Namespace) -> int:
    import dataclasses
    import time

    from .priors.red import REDConfig, train_red

    base = {"tiny": REDConfig.TINY, "gpu": REDConfig.GPU, "full": REDConfig.FULL}[args.preset]
    override = _read_config_file(args.config) if args.config else {}
    unknown = set(override) - set(base.to_dict())
    if unknown:
        raise SystemExit(f"pettk train red: unknown configuration keys {sorted(unknown)}")
    changes = {k: v for k, v in override.items() if k != "net"}
    if "net" in override:
        net_override = override["net"]
        if not isinstance(net_override, dict):
            raise SystemExit("pettk train red: 'net' in --config must be an object of network settings")
        net_fields = {f.name for f in dataclasses.fields(base.net)}
        unknown_net = set(net_override) - net_fields
        if unknown_net:
            raise SystemExit(f"pettk train red: unknown network keys {sorted(unknown_net)}")
        net_changes = {k: tuple(v) if isinstance(v, list) else v for k, v in net_override.items()}
        try:
            changes["net"] = base.net.replace(**net_changes)
        except (TypeError, ValueError) as err:
            raise SystemExit(f"pettk train red: {err}") from None
    if args.steps:
        changes["ren_steps"] = args.steps
        changes["dcn_steps"] = max(1, args.steps // 2)
    if args.drf:
        changes["drf"] = args.drf
    try:
        config = base.replace(**changes).validate()
    except (TypeError, ValueError) as err:
        raise SystemExit(f"pettk train red: {err}") from None
    if not args.data:
        raise SystemExit("pettk train red: --data must name a data set folder (built by `pettk simulate`)")
    device = _train_device(args)
    start = time.perf_counter()
    with _chunk_of_training(args) as chunk:
        train_red(config, args.data, out_dir=args.output, progress=not args.no_progress, device=device,
                  resume=args.resume, time_limit_s=chunk.time_limit_s)
        print(f"pettk train red: DRF {config.drf:g}, {config.ren_steps} REN + {config.dcn_steps} DCN steps on {device} "
              f"in {time.perf_counter() - start:.1f} s -> {Path(args.output) / 'red.safetensors'}")
    return chunk.status


#: ``pettk train KIND``: module, configuration class, training function, checkpoint name.
PRIOR_TRAINERS = {"dream": ("pettk.priors.dream", "DREAMConfig", "train_dream", "dream.safetensors"),
                  "ddip": ("pettk.priors.ddip", "DDIPConfig", "train_ddip", "ddip.safetensors"),
                  "legopet": ("pettk.priors.legopet", "LegoPETConfig", "train_legopet", "legopet.safetensors")}


def _train_prior(args: argparse.Namespace) -> int:
    import importlib
    import time

    module_name, config_name, train_name, file_name = PRIOR_TRAINERS[args.kind]
    module = importlib.import_module(module_name)
    config_cls = getattr(module, config_name)
    if args.steps or args.drf:
        raise SystemExit(f"pettk train {args.kind}: set steps and DRF in --config (a JSON file); --steps and --drf "
                         "are for diffusion/red")
    try:
        config = config_cls.from_json(args.config) if args.config else getattr(config_cls, args.preset.upper())
        config = config.validate()
    except (TypeError, ValueError, KeyError) as err:
        raise SystemExit(f"pettk train {args.kind}: {err}") from None
    if not args.data:
        raise SystemExit(f"pettk train {args.kind}: --data must name a data set folder (built by `pettk simulate`)")
    device = _train_device(args)
    start = time.perf_counter()
    with _chunk_of_training(args) as chunk:
        model = getattr(module, train_name)(config, args.data, out_dir=args.output, progress=not args.no_progress,
                                            device=device, resume=args.resume, time_limit_s=chunk.time_limit_s)
        path = model.save(Path(args.output) / file_name)
        print(f"pettk train {args.kind}: on {device} in {time.perf_counter() - start:.1f} s -> {path}")
    return chunk.status


#: Exit status of ``pettk train`` when a ``--max-minutes`` chunk ended before training finished
#: (sysexits' EX_TEMPFAIL: run the same command with ``--resume`` to continue).
EXIT_CHUNK_ENDED = 75


class _chunk_of_training:
    """``with _chunk_of_training(args) as chunk:`` around one ``pettk train`` run: SIGTERM (a session or
    job scheduler ending the run) becomes KeyboardInterrupt, so the trainer writes its checkpoint
    before exiting; ``chunk.time_limit_s`` is ``--max-minutes`` in seconds; a
    :class:`~pettk.diffusion.TrainingIncomplete` is reported in one line and ``chunk.status`` becomes
    :data:`EXIT_CHUNK_ENDED`."""

    def __init__(self, args: argparse.Namespace):
        self.kind = args.kind
        self.time_limit_s = None if args.max_minutes is None else 60.0 * args.max_minutes
        self.status = 0

    def __enter__(self):
        import signal

        def interrupt(signum, frame):
            raise KeyboardInterrupt(f"signal {signum}")

        signal.signal(signal.SIGTERM, interrupt)
        return self

    def __exit__(self, kind, error, traceback):
        from .diffusion import TrainingIncomplete

        if isinstance(error, TrainingIncomplete):
            print(f"pettk train {self.kind}: chunk ended in stage {error.stage} at step {error.step} of {error.steps}; "
                  f"checkpoint {error.checkpoint}: run the same command with --resume to continue")
            self.status = EXIT_CHUNK_ENDED
            return True
        return False


def _train(args: argparse.Namespace) -> int:
    import time

    from .diffusion import image_model

    if args.max_minutes is not None and not (math.isfinite(args.max_minutes) and args.max_minutes > 0):
        raise SystemExit(f"pettk train: --max-minutes takes a positive number of minutes, got {args.max_minutes}")
    if args.kind == "red":
        return _train_red(args)
    if args.kind in PRIOR_TRAINERS:
        return _train_prior(args)
    if args.preset == "gpu":
        raise SystemExit("pettk train diffusion: presets are 'tiny' and 'full'")

    base = image_model.TINY if args.preset == "tiny" else image_model.FULL
    override = _read_config_file(args.config) if args.config else {}
    try:
        config = image_model.merge_config(base, override)
    except ValueError as err:
        raise SystemExit(f"pettk train: {err}") from None
    if args.data:
        config["data"]["root"] = args.data
    if args.steps:
        config["train"]["steps"] = args.steps
    device = _train_device(args)
    start = time.perf_counter()
    with _chunk_of_training(args) as chunk:
        _, _, trainer = image_model.train_image_diffusion(config, args.output, progress=not args.no_progress,
                                                          resume=args.resume, device=device,
                                                          time_limit_s=chunk.time_limit_s)
    steps = config["train"]["steps"]
    print(f"pettk train {args.kind}: step {trainer.step} of {steps} on {device} in "
          f"{time.perf_counter() - start:.1f} s -> {Path(args.output) / 'model.safetensors'}"
          + ("" if trainer.step >= steps else " (chunk ended: run the same command with --resume to continue)"))
    return chunk.status if trainer.step >= steps else EXIT_CHUNK_ENDED


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pettk", description="Differentiable PET physics toolkit.")
    parser.add_argument("--version", action="version", version=f"pettk {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = sub.add_parser("demo", help="every method on held-out simulated brains at DRF 20: figure, NIfTI, table")
    demo.add_argument("--output", default="pettk-demo", help="output folder (default: ./pettk-demo)")
    demo.add_argument("--device", default="cpu", help="torch device (default cpu; e.g. cuda)")
    demo.add_argument("--subjects", type=_positive_int, default=3, help="held-out subjects (default 3)")
    demo.add_argument("--slices", type=_positive_int, default=2, help="slices per subject (default 2)")
    demo.add_argument("--projector", action="store_true", help="only the projector demo (Shepp-Logan)")
    demo.add_argument("--no-progress", action="store_true")
    demo.set_defaults(func=_demo)

    ev = sub.add_parser("evaluate", help="compare methods on held-out simulated subjects or a data set's test split")
    ev.add_argument("--output", "-o", required=True, help="output folder")
    ev.add_argument("--methods", nargs="+", choices=EVALUATE_METHODS, default=list(DEMO_METHODS),
                    help=f"methods in table order (default: {' '.join(DEMO_METHODS)})")
    ev.add_argument("--checkpoint", action="append", metavar="METHOD=PATH",
                    help="a checkpoint (.safetensors) or shipped model name for a learned method (repeatable)")
    ev.add_argument("--data", metavar="DIR",
                    help="evaluate the test split of this data set (built by `pettk simulate`) instead of "
                         "simulated held-out subjects")
    ev.add_argument("--subjects", type=_positive_int,
                    help="held-out subjects (default 3); with --data: the first N test subjects (default all)")
    ev.add_argument("--slices", type=_positive_int,
                    help="slices per subject (default 2); with --data: N evenly spaced slices of each (default all)")
    ev.add_argument("--drf", type=float, nargs="+",
                    help="dose-reduction factors (default 20; with --data: all of the data set's)")
    ev.add_argument("--tracer", choices=("fdg", "amyloid"),
                    help="simulated subjects' tracer (default fdg; amyloid: out of distribution for the FDG-trained "
                         "models)")
    ev.add_argument("--seed", type=int, help="offset of the simulated held-out subject seeds (default 0)")
    ev.add_argument("--anatomy", choices=("v1", "v2", "v2-shifted"),
                    help="simulated subjects' anatomy (default v1, the shipped models' training family; v2 and "
                         "v2-shifted are out of family for them, v2-shifted also for models trained on v2)")
    ev.add_argument("--tune", action=argparse.BooleanOptionalAction, default=None,
                    help="tune OSEM (iterations x post-filter) and BSREM-RDP (beta x gamma) by mean PSNR on the "
                         "validation split of the evaluated data (default: on when there is one; --no-tune: the "
                         "fixed TUNED constants)")
    ev.add_argument("--tune-slices", type=_positive_int, default=8,
                    help="validation slices that tune, evenly spread (default 8)")
    ev.add_argument("--tune-osem-iterations", type=_positive_int, nargs="+", metavar="N",
                    help="OSEM iterations to try (default 2 4 8)")
    ev.add_argument("--tune-filter-mm", type=float, nargs="+", metavar="MM",
                    help="post-filter FWHMs to try (default 0 4 6 8 10)")
    ev.add_argument("--tune-beta", type=float, nargs="+", metavar="B",
                    help="BSREM-RDP betas to try (default 0.03 0.1 0.3 1 3)")
    ev.add_argument("--tune-gamma", type=float, nargs="+", metavar="G",
                    help="RDP gammas to try (default 0.5 2 5 20)")
    ev.add_argument("--tune-extend", type=int, metavar="K",
                    help="extend the beta/gamma grids past a winning end up to K times (default 3; 0: as given)")
    ev.add_argument("--bsrem-max-epochs", type=_positive_int, metavar="N",
                    help="cap BSREM-RDP's epochs (default 1000; it stops earlier when converged)")
    ev.add_argument("--3d", dest="three_d", action="store_true",
                    help="fully 3D: v2 heads on a ring section of the mmr-like scanner, 3D OSEM/BSREM tuned on "
                         "validation volumes, metrics over the brain with the axial gradient error")
    ev.add_argument("--rings", type=_positive_int, default=16, help="--3d: rings of the section (default 16)")
    ev.add_argument("--volume-shape", type=_positive_int, nargs=3, default=[128, 128, 32], metavar=("NX", "NY", "NZ"),
                    help="--3d: voxels of the volume (default 128 128 32)")
    ev.add_argument("--validation-subjects", type=_positive_int, default=2,
                    help="--3d: volumes that tune the classical settings (default 2)")
    ev.add_argument("--device", default="cpu")
    ev.add_argument("--no-progress", action="store_true")
    ev.set_defaults(func=_evaluate)

    simp = sub.add_parser("simulate", help="build a paired low-/full-dose 2D-slice data set of simulated brains")
    simp.add_argument("output", help="data set folder (resumed if it exists with the same settings)")
    simp.add_argument("--subjects", type=_positive_int, default=None,
                      help="subjects (default 240: the shipped models' training set; with --tissue-maps: every "
                           "subject folder)")
    simp.add_argument("--slices", type=_positive_int, default=20, help="axial slices per subject (default 20)")
    simp.add_argument("--size", type=_positive_int, default=128, help="image size in pixels (default 128: 2.09 mm)")
    simp.add_argument("--geometry", choices=("mmr-like", "parallel"), default="mmr-like")
    simp.add_argument("--anatomy", choices=("v2", "v2-shifted", "v1"), default=None,
                      help="anatomy generator: v2 (default), v2-shifted (out-of-family test family) or v1")
    simp.add_argument("--tissue-maps", metavar="DIR", default=None,
                      help="the users' own anatomy: one sub-folder of NIfTI tissue maps per subject "
                           "(docs/tissue_maps.md); subjects are the sub-folders in name order")
    simp.add_argument("--drf", type=float, nargs="+", default=[4.0, 20.0, 100.0], help="dose-reduction factors")
    simp.add_argument("--counts", type=float, default=5e5, help="full-dose counts per slice (default 5e5)")
    simp.add_argument("--tracer", choices=("fdg", "amyloid", "amyloid-positive", "amyloid-negative"), default="fdg",
                      help="amyloid: positive or negative per subject")
    simp.add_argument("--lesions", type=int, default=2, help="lesions per slice (default 2)")
    simp.add_argument("--slice-range-mm", type=float,
                      help="axial span of the slices around the brain centre (default 110 mm; v1: 80)")
    simp.add_argument("--validation", type=int, default=20, help="validation subjects (default 20)")
    simp.add_argument("--test", type=int, default=20, help="test subjects (default 20)")
    simp.add_argument("--seed", type=int, default=0)
    simp.add_argument("--no-progress", action="store_true")
    simp.set_defaults(func=_simulate)

    tr = sub.add_parser("train", help="train a learned model (an image diffusion model or a prior)")
    tr.add_argument("kind", choices=("diffusion", "red", "dream", "ddip", "legopet"), help="what to train")
    tr.add_argument("--output", "-o", required=True, help="output folder (checkpoints, model.safetensors)")
    tr.add_argument("--preset", choices=("tiny", "gpu", "full"), default="tiny",
                    help="base configuration (default tiny; gpu for red only)")
    tr.add_argument("--drf", type=float, help="red: the dose-reduction factor of the model (default 20)")
    tr.add_argument("--config", help="JSON (or YAML) file overriding the preset")
    tr.add_argument("--data", help="data set folder built by `pettk simulate`")
    tr.add_argument("--steps", type=_positive_int, help="override the number of steps")
    tr.add_argument("--resume", action="store_true", help="continue from the output folder's checkpoint")
    tr.add_argument("--max-minutes", type=float, metavar="M",
                    help="stop after M minutes, checkpoints written (a chunk of a long run; exit status 75 when "
                         "training is not finished: continue with --resume)")
    tr.add_argument("--device", default="auto",
                    help="torch device to train on (default auto: cuda when torch sees a GPU, else cpu)")
    tr.add_argument("--no-progress", action="store_true")
    tr.set_defaults(func=_train)

    rec = sub.add_parser("recon", help="reconstruct a pettk sinogram (.npz) or a PETSIRD list-mode file into NIfTI")
    rec.add_argument("sinogram", nargs="?", help="sinogram file written by pettk.io.save_sinogram")
    rec.add_argument("--petsird", metavar="FILE", help="PETSIRD list-mode file (binary or NDJSON): list-mode OSEM")
    rec.add_argument("--chunk-events", type=_positive_int, default=262144,
                     help="petsird: events per chunk (bounds memory; default 262144)")
    rec.add_argument("--voxel-size", type=float, help="petsird: voxel size in mm (default from the scanner)")
    rec.add_argument("--energy-window", type=float, nargs=2, metavar=("LO", "HI"), help="petsird: keV window")
    rec.add_argument("--no-tof", action="store_true", help="petsird: ignore the TOF bins")
    rec.add_argument("--cache-dir", help="petsird: folder for the temporary event cache (default: system temp)")
    rec.add_argument("--estimate-corrections", action="store_true",
                     help="petsird: randoms from the delayeds, attenuation from --mu, scatter (SSS + tail fit), "
                          "then sinogram OSEM; prints the report and writes OUTPUT.corrections.json")
    rec.add_argument("--scatter-rounds", type=_positive_int, default=3,
                     help="petsird --estimate-corrections: scatter <-> reconstruction rounds (default 3)")
    rec.add_argument("--scatter-step", type=float, default=15.0, metavar="MM",
                     help="petsird --estimate-corrections: edge of the mu-map blocks that become one scatter "
                          "point (default 15 mm; smaller for small objects)")
    from .batch import add_cohort_arguments  # standard library only at import time

    add_cohort_arguments(rec)
    rec.add_argument("--output", "-o", required=True,
                     help="output image (.nii or .nii.gz); with --cohort: the output folder")
    rec.add_argument("--algorithm", "-a", choices=ALGORITHMS, default="osem", help="default: osem")
    rec.add_argument("--iterations", "-n", type=_positive_int, default=4, help="iterations/epochs (default 4)")
    rec.add_argument("--subsets", "-s", type=_positive_int, default=8, help="view subsets (default 8; mlem: 1)")
    rec.add_argument("--psf-mm", type=float, default=0.0, help="resolution model FWHM in mm (default none)")
    rec.add_argument("--post-filter-mm", type=float, default=0.0, help="Gaussian post-filter FWHM in mm")
    rec.add_argument("--prior", choices=("rdp", "quadratic", "tv"), default="rdp", help="MAP prior (default rdp)")
    rec.add_argument("--beta", type=float, default=1.0, help="prior strength (default 1)")
    rec.add_argument("--gamma", type=float, default=2.0, help="RDP edge parameter (default 2)")
    rec.add_argument("--epsilon", type=float, default=1e-3, help="RDP epsilon / TV delta (image units)")
    rec.add_argument("--mu", help="mu-map NIfTI (1/mm) when the file has no attenuation factors")
    rec.add_argument("--method", choices=("red", "dream", "ddip", "legopet", "pet-dds"),
                     help="a learned method instead of --algorithm (2D or 3D sinograms; red/dream: then OSEM "
                          "with --iterations/--subsets)")
    rec.add_argument("--model", help="--method's model: a shipped name (pettk.models) or a .safetensors checkpoint "
                                     "(default: the method's shipped model)")
    rec.add_argument("--drf", type=float, help="red/dream: the data's dose-reduction factor (default the model's)")
    rec.add_argument("--mr", help="ddip/pet-dds: co-registered MR NIfTI on the sinogram's grid")
    rec.add_argument("--window", choices=("ramp", "shepp-logan", "cosine", "hamming", "hann"), default="hann",
                     help="FBP window (default hann)")
    rec.add_argument("--dicom", metavar="DIR", help="also write a DICOM PET series (one file per slice) into the new "
                     "or empty folder DIR (needs pydicom: pip install \"pettk[dicom]\")")
    rec.add_argument("--dicom-units", default="BQML",
                     help="DICOM Units of the image values (default BQML; e.g. CNTS, PROPCNTS)")
    rec.add_argument("--no-progress", action="store_true", help="no progress bar")
    rec.set_defaults(func=_recon)
    return parser


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


#: Errors that describe bad input or a bad file: shown as one ``pettk COMMAND: ...`` line (set
#: ``PETTK_DEBUG=1`` for the traceback). Anything else is a bug and keeps its traceback.
USER_ERRORS = (ValueError, TypeError, FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError,
               FileExistsError)


def main(argv: list[str] | None = None) -> int:
    import os

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except USER_ERRORS as err:
        if os.environ.get("PETTK_DEBUG"):
            raise
        raise SystemExit(f"pettk {args.command}: {err}") from None


if __name__ == "__main__":
    sys.exit(main())

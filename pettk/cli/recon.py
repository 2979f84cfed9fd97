"""``pettk recon``: sinogram files (classical algorithms or ``--method`` learned ones), PETSIRD list mode
(optionally with corrections estimated from the data) and the DICOM output."""

from __future__ import annotations

import argparse
from pathlib import Path

ALGORITHMS = ("osem", "mlem", "osl-map", "bsrem", "fbp")


def _recon_petsird(args: argparse.Namespace) -> int:
    from ..io.petsird import reconstruct_petsird

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
    from ..corrections.acquisition import estimate_corrections, report_lines, write_report
    from ..io import save_nifti

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
        from ..batch import cohort_main
        return cohort_main(args)
    if args.petsird:
        return _recon_petsird(args)
    if args.estimate_corrections:
        raise SystemExit("pettk recon: --estimate-corrections needs --petsird FILE (prompts and delayeds)")
    if args.sinogram is None:
        raise SystemExit("pettk recon: give a sinogram file (.npz), --petsird FILE or --cohort MANIFEST.csv")

    from .. import recon
    from ..geometry import ParallelBeam2D
    from ..io import load_nifti, load_sinogram, save_nifti
    from ..physics import ForwardModel
    from ..projector import Projector
    from ..psf import GaussianPSF

    output = str(args.output)
    if not (output.endswith(".nii") or output.endswith(".nii.gz")):
        raise SystemExit(f"pettk recon: --output must end in .nii or .nii.gz, got {output!r}")
    _check_output_file(output)
    _check_numbers(args)
    _check_dicom_folder(args)
    if args.method and args.algorithm != "osem" and not (args.method in ("red", "dream") and args.algorithm == "bsrem"):
        raise SystemExit("pettk recon: give either --algorithm or --method (a learned method), not both "
                         "(red and dream take --algorithm bsrem: BSREM of the restored data)")
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
            run = recon.osl_map if args.algorithm == "osl-map" else recon.bsrem
            image = run(model, prompts, _map_prior(args, grid), args.beta, args.iterations, args.subsets,
                        progress=progress)
    if args.post_filter_mm:
        image = recon.post_filter(image, grid, args.post_filter_mm)
    save_nifti(output, np.asarray(image, dtype=np.float32), grid)
    print(f"pettk recon: {method} -> {output} (shape {tuple(grid.shape)}, voxel {grid.voxel_size_mm} mm)")
    _write_dicom(args, np.asarray(image, dtype=np.float32), grid, f"pettk {method}")
    return 0


def _map_prior(args: argparse.Namespace, grid):
    """The ``--prior`` of ``--algorithm osl-map / bsrem`` on ``grid``."""
    from .. import recon

    return {"rdp": lambda: recon.rdp(grid, gamma=args.gamma, epsilon=args.epsilon),
            "quadratic": lambda: recon.quadratic(grid),
            "tv": lambda: recon.tv(grid, delta=args.epsilon)}[args.prior]()


def _recon_learned(args: argparse.Namespace, learned, model, prompts, grid):
    """``pettk recon --method``: the loaded model on the file's 2D or 3D data (:mod:`pettk.priors.apply`);
    red / dream with ``--algorithm bsrem``: BSREM of the restored data with ``--prior`` and ``--beta``
    (on the scale of a BSREM of the raw counts)."""
    from ..io import load_nifti
    from ..priors.apply import reconstruct_learned

    mr = None
    if args.mr is not None:
        mr, mr_grid = load_nifti(args.mr, ndim=grid.ndim)
        if mr_grid.shape != grid.shape:
            raise SystemExit(f"pettk recon: the MR has shape {mr_grid.shape}, the sinogram's grid {grid.shape}")
    drf = args.drf if args.method in ("red", "dream") else None  # an image prior's --drf chose its settings
    try:
        options = ({"map_prior": _map_prior(args, grid), "beta": args.beta} if args.algorithm == "bsrem" else {})
        if args.method == "legopet":
            options["refine_iterations"] = args.refine_iterations
        return reconstruct_learned(args.method, learned, model, prompts, drf=drf, mr=mr,
                                   iterations=args.iterations, subsets=args.subsets, progress=not args.no_progress,
                                   **options)
    except (TypeError, ValueError) as err:
        raise SystemExit(f"pettk recon: --method {args.method}: {err}") from None


def _learned_model(args: argparse.Namespace):
    """``pettk recon --method``: the model named by ``--model`` (a shipped name or a checkpoint file;
    default the method's shipped model), loaded before any reconstruction work; an image prior
    (ddip, pet-dds) with its settings tuned for ``--drf`` and the ``--model-setting`` changes."""
    from ..evaluation import load_method_model
    from ..evaluation.methods import DEFAULT_MODELS
    from ..models import settings_for_drf, tuned_settings, with_settings
    from .values import setting_value

    name = args.model or DEFAULT_MODELS.get(args.method)
    if name is None:
        raise SystemExit(f"pettk recon: --method {args.method} ships no model: give --model CHECKPOINT.safetensors")
    image_prior = args.method in ("ddip", "pet-dds")
    if args.drf is not None and args.method not in ("red", "dream") and not image_prior:
        raise SystemExit(f"pettk recon: --drf is for the sinogram restorers (red, dream: the data's DRF) and the "
                         f"image priors (ddip, pet-dds: their settings tuned for it), not {args.method}")
    if args.refine_iterations and args.method != "legopet":
        raise SystemExit(f"pettk recon: --refine-iterations is for legopet (MLEM from its sample), not {args.method}")
    if args.mr is not None and not image_prior:
        raise SystemExit(f"pettk recon: --mr is for ddip and pet-dds, not {args.method}")
    changes = {}
    for spec in args.model_setting or []:
        field, sep, text = spec.partition("=")
        if not sep or not field or not text or "." in field:
            raise SystemExit(f"pettk recon: --model-setting takes FIELD=VALUE, got {spec!r}")
        changes[field] = setting_value(text)
    if changes and not image_prior:
        raise SystemExit(f"pettk recon: --model-setting is for the image priors (ddip, pet-dds), not {args.method}")
    try:
        model = load_method_model(args.method, name)
        if image_prior and args.drf is not None:
            tuned = tuned_settings(name)
            if not tuned:
                raise ValueError(f"model {name!r} has no settings tuned per DRF (its JSON has no settings_by_drf): "
                                 "leave out --drf")
            model = settings_for_drf(model, tuned, args.drf, f"model {name!r}", **changes)
        elif changes:
            model = with_settings(model, **changes)
    except (TypeError, ValueError) as err:
        raise SystemExit(f"pettk recon: --method {args.method}: {err}") from None
    return model


def _check_dicom_folder(args: argparse.Namespace) -> None:
    """``--dicom DIR``: refuse a non-empty folder or a missing pydicom before any work."""
    if not getattr(args, "dicom", None):
        return
    from ..io.atomic import check_empty_folder
    from ..io.dicom import DICOM_UNITS, _pydicom

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
    from ..io import save_dicom

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
    from .._validation import as_nonnegative_float, as_positive_float

    try:
        for name in ("psf_mm", "post_filter_mm"):
            as_nonnegative_float(f"--{name.replace('_', '-')}", getattr(args, name))
        for name in ("beta", "gamma", "epsilon"):
            value = getattr(args, name)
            (as_nonnegative_float if name == "beta" else as_positive_float)(f"--{name}", value)
    except (TypeError, ValueError) as err:
        raise SystemExit(f"pettk recon: {err}") from None

"""``pettk demo`` and ``pettk evaluate`` (2D slices and ``--3d`` volumes)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from .._version import __version__
from .values import setting_value

DEMO_METHODS = ("osem", "bsrem-rdp", "red", "dream", "ddip", "legopet")
#: pettk.evaluation.METHODS, spelled out so that building the parser imports no torch.
EVALUATE_METHODS = ("osem", "bsrem-rdp", "mlem", "red", "dream", "ddip", "legopet", "pet-dds")


def _demo(args: argparse.Namespace) -> int:
    if args.projector:
        return _demo_projector(args)
    from .. import models
    from ..evaluation import DEFAULT_MODELS, LEARNED, EvalData

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
    from ..evaluation import evaluate

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


def _model_settings(specs) -> dict:
    """``--model-setting METHOD.FIELD=VALUE`` → ``{method: {field: value}}`` (VALUE parsed as JSON, else a string)."""
    out: dict = {}
    for spec in specs or []:
        target, sep, text = spec.partition("=")
        method, dot, field = target.partition(".")
        if not sep or not dot or not method or not field or not text:
            raise SystemExit(f"pettk evaluate: --model-setting takes METHOD.FIELD=VALUE, got {spec!r}")
        out.setdefault(method, {})[field] = setting_value(text)
    return out


def _evaluate(args: argparse.Namespace) -> int:
    from ..evaluation import HELD_OUT_SEED, EvalData

    checkpoints = {}
    for spec in args.checkpoint or []:
        method, sep, source = spec.partition("=")
        if not sep or not source:
            raise SystemExit(f"pettk evaluate: --checkpoint takes METHOD=PATH_OR_NAME, got {spec!r}")
        checkpoints[method] = source
    model_settings = _model_settings(args.model_setting)
    grid = {key: tuple(values) for key, values in (("osem_iterations", args.tune_osem_iterations),
                                                   ("post_filter_mm", args.tune_filter_mm),
                                                   ("bsrem_beta", args.tune_beta), ("rdp_gamma", args.tune_gamma))
            if values}
    if args.tune_extend is not None:
        grid["extend"] = args.tune_extend
    if not args.tune_restorer_map:
        grid["restorer_map"] = False
    options = dict(tune=args.tune, tune_slices=args.tune_slices or 8, tune_grid=grid or None,
                   bsrem_max_epochs=args.bsrem_max_epochs)
    if args.settings:
        options = _reused_settings(args, grid, options)
    if args.three_d:
        return _evaluate_3d(args, checkpoints, model_settings, grid)
    run = dict(checkpoints=checkpoints, model_settings=model_settings, device=args.device,
               progress=not args.no_progress, prog="pettk evaluate")
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


def _reused_settings(args: argparse.Namespace, grid: dict, options: dict) -> dict:
    """``--settings``: the evaluation options with an earlier run's tuned settings and no tuning;
    a tuning option beside it, or a file that does not fit, is one ``pettk evaluate`` line."""
    from ..evaluation import settings_from_runs

    if args.three_d:
        raise SystemExit("pettk evaluate: --settings reuses a 2D run's tuning; --3d tunes on its validation volumes")
    if args.tune or grid or args.tune_slices is not None:
        raise SystemExit("pettk evaluate: --settings reuses settings already tuned; give no --tune or --tune-* option")
    if not args.data:
        raise SystemExit("pettk evaluate: --settings evaluates a data set (--data DIR) with settings tuned on it or "
                         "its like; simulated held-out subjects are tuned on their own validation subjects")
    from ..evaluation.data import manifest_drfs, read_manifest

    try:
        drfs = args.drf or manifest_drfs(read_manifest(args.data))
        per_drf, source = settings_from_runs(args.settings, drfs, tuple(args.methods))
    except (OSError, TypeError, ValueError, KeyError) as err:
        raise SystemExit(f"pettk evaluate: --settings: {err}") from None
    return {**options, "tune": False, "settings": per_drf, "settings_source": source}


def _evaluate_3d(args: argparse.Namespace, checkpoints: dict, model_settings: dict, grid: dict) -> int:
    """``pettk evaluate --3d``: held-out v2 volumes on a ring-scanner section (:mod:`pettk.evaluation.volumes`)."""
    from ..evaluation import apply_model_settings, load_method_model
    from ..evaluation.volumes import VolumeData, evaluate_volumes

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
        models = apply_model_settings(models, model_settings)
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

    from ..geometry import ImageGrid, ParallelBeam2D
    from ..io import atomic_path
    from ..projector import Projector
    from ..sim import shepp_logan_2d

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

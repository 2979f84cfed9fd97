"""Evaluate reconstruction methods on held-out simulated subjects (``pettk evaluate``, ``pettk demo``).

:func:`evaluate` simulates held-out brain subjects (:mod:`.data`, seeds disjoint from training),
reconstructs each slice's low-dose sinogram with every requested method (:mod:`.methods`:
OSEM + post-filter, BSREM-RDP, MLEM and the four learned priors with the shipped default models
or user checkpoints), scores the images against the true activity (PSNR, SSIM, NRMSE; peak =
the slice's true maximum) and writes (:mod:`.report`):

- ``metrics.md`` / ``metrics.csv``: mean ± std per method, DRF and tracer;
- ``slices.csv``: every slice's metrics and time;
- ``figure.png``: reference, each method and the error maps for the first slice of each DRF;
- ``nifti/<method>_drf<D>_<subject>.nii.gz``: every reconstructed slice, stacked along z.

:func:`tune_classical` picks the classical settings (OSEM iterations × post-filter, BSREM β)
on validation subjects, so the classical baselines are as well tuned as the learned methods.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..metrics import nrmse, psnr, ssim
from ..priors.base import dataset_forward_model
from .data import HELD_OUT_SEED, EvalData, build_heldout
from .methods import CLASSICAL, DEFAULT_MODELS, LEARNED, METHODS, TUNED, Case, ClassicalSettings, make_runner
from .report import comparison_lines, summarise, write_figure, write_nifti_stack, write_rows_csv, write_summary

__all__ = ["evaluate", "tune_classical", "load_method_model", "EvalData", "ClassicalSettings", "Case", "METHODS",
           "CLASSICAL", "LEARNED", "DEFAULT_MODELS", "HELD_OUT_SEED", "LABELS"]

log = logging.getLogger(__name__)

LABELS = {"osem": "OSEM + filter", "bsrem-rdp": "BSREM-RDP", "mlem": "MLEM", "red": "RED", "dream": "DREAM",
          "ddip": "DDIP", "legopet": "LegoPET"}


def load_method_model(method: str, source=None, device="cpu"):
    """The model of a learned ``method``: a shipped name (default :data:`DEFAULT_MODELS`) or a checkpoint path."""
    from .. import models

    if method not in LEARNED:
        raise ValueError(f"method {method!r} takes no model; learned methods are {', '.join(LEARNED)}")
    source = source or DEFAULT_MODELS[method]
    if isinstance(source, str) and source in models.available():
        return models.load(source, device=device)
    return models.load_checkpoint_for(method, source, device=device)


def _cases(datasets: dict, device) -> list[tuple[float, dict, Case]]:
    out = []
    for drf, ds in datasets.items():
        grid = dataset_forward_model(ds.manifest, ds[0]["mult"], ds[0]["additive"]).projector.grid
        for i in range(len(ds)):
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


def evaluate(out_dir, methods=METHODS, data: EvalData | None = None, *, checkpoints: dict | None = None,
             settings: ClassicalSettings | dict | None = None, device="cpu", data_dir=None, write_nifti: bool = True,
             progress: bool = True, title: str | None = None) -> list[dict]:
    """Run ``methods`` on held-out subjects and write tables, figures and images to ``out_dir``.

    Parameters
    ----------
    out_dir : path
        Output folder (created).
    methods : sequence of str
        Any of :data:`METHODS`, in the order of the table and figure.
    data : EvalData
        Held-out subjects, DRFs, tracer (default: 3 FDG-like subjects × 2 slices at DRF 20).
    checkpoints : dict, optional
        ``{method: shipped model name or checkpoint path}`` overriding :data:`DEFAULT_MODELS`.
    settings : ClassicalSettings or {drf: ClassicalSettings}, optional
        Classical settings (default: :data:`~pettk.evaluation.methods.TUNED` for the DRF, else
        :class:`ClassicalSettings`).
    device : str or torch.device
    data_dir : path, optional
        Where to keep the simulated subjects (reused if it holds the same configuration);
        default a temporary folder.

    Returns
    -------
    list of dict
        The summary rows (method, drf, tracer, n, psnr, psnr_std, ssim, ...).
    """
    methods = _check_methods(methods)
    data = data or EvalData()
    if not isinstance(data, EvalData):
        raise TypeError(f"data must be an EvalData, got {type(data).__name__}")
    checkpoints = dict(checkpoints or {})
    bad = [m for m in checkpoints if m not in LEARNED]
    if bad:
        raise ValueError(f"checkpoints given for {bad}, which take no model; learned methods are {', '.join(LEARNED)}")
    if settings is None:
        per_drf = {float(d): TUNED.get(float(d), ClassicalSettings()).validate() for d in data.drfs}
    elif isinstance(settings, ClassicalSettings):
        per_drf = {float(d): settings.validate() for d in data.drfs}
    else:
        per_drf = {float(d): settings.get(float(d), ClassicalSettings()).validate() for d in data.drfs}
    device = torch.device(device)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    models = {m: load_method_model(m, checkpoints.get(m), device=device) for m in methods if m in LEARNED}
    runners = {(m, d): make_runner(m, models.get(m), per_drf[d]) for m in methods for d in per_drf}

    with tempfile.TemporaryDirectory(prefix="pettk-eval-") as tmp:
        root = Path(data_dir) if data_dir else Path(tmp) / "heldout"
        datasets = build_heldout(root, data, progress=progress)
        cases = _cases(datasets, device)
        rows: list[dict] = []
        images: dict[tuple, list[np.ndarray]] = {}
        first: dict[float, tuple] = {}
        bar = tqdm(total=len(cases) * len(methods), desc="evaluate", disable=not progress)
        for drf, item, case in cases:
            truth = case.truth.numpy()
            for method in methods:
                bar.set_postfix_str(f"{method} DRF {drf:g} {case.info['subject']}")
                start = time.perf_counter()
                image = runners[(method, drf)](case)
                seconds = time.perf_counter() - start
                image = np.asarray(image.detach().cpu() if isinstance(image, torch.Tensor) else image,
                                   dtype=np.float32)
                row = {"method": method, "drf": drf, "tracer": data.tracer, "subject": case.info["subject"],
                       "slice": case.info["slice"], "psnr": psnr(image, truth), "ssim": ssim(image, truth),
                       "nrmse": nrmse(image, truth), "seconds": seconds}
                rows.append(row)
                images.setdefault((method, drf, case.info["subject"]), []).append(image)
                first.setdefault(drf, (item, {}, {}))
                if first[drf][0] is item:
                    first[drf][1][method] = image
                    first[drf][2][method] = (row["psnr"], row["ssim"])
                bar.update(1)
        bar.close()
        grid_2d = cases[0][2].grid

    summary = summarise(rows)
    write_rows_csv(out_dir / "slices.csv", rows)
    preamble = (f"Held-out subjects: {data.n_subjects} × {data.slices_per_subject} slices, tracer {data.tracer}, "
                f"seeds from {data.seed}; metrics against the true activity (peak = slice maximum).\n\n")
    comparisons = comparison_lines(summary, LABELS)
    write_summary(out_dir, summary, LABELS, preamble, "\n" + "\n".join(comparisons) + "\n" if comparisons else "")
    for drf, (item, imgs, scores) in first.items():
        name = "figure.png" if len(first) == 1 else f"figure_drf{drf:g}.png"
        write_figure(out_dir / name, item["truth"].numpy(), imgs, scores,
                     title or f"DRF {drf:g}, {data.tracer}, held-out {item['subject']} slice {int(item['slice'])}",
                     LABELS)
    if write_nifti:
        for (method, drf, subject), slices in images.items():
            write_nifti_stack(out_dir / "nifti" / f"{method}_drf{drf:g}_{subject}.nii.gz", slices, grid_2d)
    return summary


def _best_on_grid(score, grid: list, *, extend: float, limit: int = 3):
    """The best value of ``score`` over ``grid`` (sorted, positive), extending the grid by the
    factor ``extend`` past whichever end wins, up to ``limit`` times, so that the best value is
    an interior point (or the search says where it stopped)."""
    grid = sorted(float(v) for v in grid)
    scores = {v: score(v) for v in grid}
    for _ in range(limit):
        best = max(scores, key=scores.get)
        if best == grid[0]:
            grid.insert(0, best / extend)
            scores[grid[0]] = score(grid[0])
        elif best == grid[-1]:
            grid.append(best * extend)
            scores[grid[-1]] = score(grid[-1])
        else:
            break
    best = max(scores, key=scores.get)
    return best, scores


def _tune_rdp(score, base: ClassicalSettings, betas, gammas):
    """Best ``(beta, gamma)`` of BSREM-RDP: the best beta per gamma, then the best gamma, each on
    a grid extended past a winning end (:func:`_best_on_grid`). Also returns, per gamma tried,
    its best beta and the scores of every beta."""
    per_gamma = {}

    def gamma_score(gamma):
        per_gamma[gamma] = _best_on_grid(
            lambda b: score(dataclasses.replace(base, bsrem_beta=b, rdp_gamma=gamma), "bsrem-rdp"), betas,
            extend=10 ** 0.5)
        best_beta, scores = per_gamma[gamma]
        return scores[best_beta]

    best_gamma, _ = _best_on_grid(gamma_score, gammas, extend=2.5)
    return per_gamma[best_gamma][0], best_gamma, per_gamma


def tune_classical(data: EvalData | None = None, *, osem_iterations=(2, 4, 8),
                   post_filter_mm=(0.0, 4.0, 6.0, 8.0, 10.0),
                   bsrem_beta=(0.03, 0.1, 0.3, 1.0, 3.0), rdp_gamma=(0.5, 2.0, 5.0, 20.0),
                   base: ClassicalSettings | None = None, progress: bool = True) -> dict[float, ClassicalSettings]:
    """Choose the classical settings per DRF by best mean PSNR on validation subjects.

    OSEM: iterations × post-filter over the given grid. BSREM-RDP (the converged MAP image,
    :func:`~pettk.evaluation.methods.converged_bsrem`): ``beta`` × ``gamma`` over the given
    grids; when the best ``beta`` (or ``gamma``) lies at an end of its grid, the grid is extended
    past it (× sqrt(10) for beta, × 2.5 for gamma, up to three times) so that the choice is not
    an artefact of the grid. The validation subjects use seeds ``HELD_OUT_SEED // 2`` upwards:
    disjoint from the training (``0 ..``) and the test (``HELD_OUT_SEED ..``) subjects.
    """
    data = data or EvalData(n_subjects=2, slices_per_subject=2, drfs=(4.0, 20.0, 100.0), seed=HELD_OUT_SEED // 2)
    base = (base or ClassicalSettings()).validate()
    out = {}
    with tempfile.TemporaryDirectory(prefix="pettk-tune-") as tmp:
        cases = _cases(build_heldout(Path(tmp), data, progress=progress), torch.device("cpu"))
        for drf in sorted({d for d, _, _ in cases}):
            mine = [c for d, _, c in cases if d == drf]

            def score(settings, method, mine=mine):
                run = make_runner(method, settings=settings)
                return float(np.mean([psnr(np.asarray(run(c)), c.truth.numpy()) for c in mine]))

            best_osem = max(((n, f) for n in osem_iterations for f in post_filter_mm),
                            key=lambda nf: score(dataclasses.replace(base, osem_iterations=nf[0],
                                                                     post_filter_mm=nf[1]), "osem"))

            best_beta, best_gamma, per_gamma = _tune_rdp(score, base, bsrem_beta, rdp_gamma)
            out[drf] = dataclasses.replace(base, osem_iterations=best_osem[0], post_filter_mm=best_osem[1],
                                           bsrem_beta=best_beta, rdp_gamma=best_gamma)
            log.info("DRF %g: %s; BSREM-RDP PSNR per gamma: %s", drf, out[drf],
                     {g: {b: round(v, 3) for b, v in sc.items()} for g, (_, sc) in per_gamma.items()})
    return out

"""Choosing the classical baselines' settings on validation data (grid search on mean PSNR).

:func:`tune_on_cases` searches OSEM iterations × post-filter and BSREM-RDP ``beta`` × ``gamma``
(and the same post-processing freedom of the restorers and LegoPET) over any validation cases;
every grid is extended past a winning end, so that the choice is an interior optimum (or the
record says where the search stopped). ``pettk evaluate --tune`` and
:func:`pettk.evaluation.tune_classical` use it.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import torch
from tqdm.auto import tqdm

from ..metrics import psnr
from ..priors.volume import restore_planes
from ..recon import mlem, osem
from .methods import Case, ClassicalSettings, filter_field, filtered, make_runner, refined_sample, restored_map

__all__ = ["TUNABLE", "RESTORERS", "FILTERED_PRIORS", "NEED_MODEL", "LEGOPET_EM_ITERATIONS", "TUNE_GRID",
           "tune_on_cases"]

log = logging.getLogger(__name__)

#: The methods whose settings ``tune`` chooses on validation data.
TUNABLE = ("osem", "bsrem-rdp", "red", "dream", "legopet", "ddip", "pet-dds")
#: The sinogram restorers among them: their EM iterations × post-filter after the restoration are
#: tuned like OSEM's on the raw data, and (``restorer_map``) BSREM-RDP's beta × gamma of the
#: restored data like the raw data's: the same freedom as the classical baselines.
RESTORERS = ("red", "dream")
#: The image priors whose reconstruction gets a post-filter (the filter grid of OSEM, widened past a
#: winning widest value; ``ClassicalSettings.ddip_post_filter_mm``, ``pet_dds_post_filter_mm``).
FILTERED_PRIORS = ("ddip", "pet-dds")
#: The learned methods tuned with their model (``tune_on_cases(models=...)``): the restorers,
#: LegoPET, whose sample gets MLEM iterations × post-filter (:data:`LEGOPET_EM_ITERATIONS` × the
#: OSEM filter grid), the freedom of OSEM + filter, and :data:`FILTERED_PRIORS`.
NEED_MODEL = RESTORERS + ("legopet",) + FILTERED_PRIORS
#: MLEM iterations after a LegoPET sample that tuning tries first (0: the sample itself).
LEGOPET_EM_ITERATIONS = (0, 1, 2, 4, 8)
#: The default tuning grids (those of :func:`tune_classical`); ``extend``: how many times a grid
#: is extended past a winning end (beta, gamma; 0 keeps the grids as given); ``restorer_map``:
#: whether a restorer's BSREM-RDP competes with its OSEM + filter.
TUNE_GRID = {"osem_iterations": (2, 4, 8), "post_filter_mm": (0.0, 4.0, 6.0, 8.0, 10.0),
             "bsrem_beta": (0.03, 0.1, 0.3, 1.0, 3.0), "rdp_gamma": (0.5, 2.0, 5.0, 20.0), "extend": 3,
             "restorer_map": True}


def _image(x) -> np.ndarray:
    return np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x, dtype=np.float32)



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


def _tune_rdp(score, base: ClassicalSettings, betas, gammas, limit: int = 3):
    """Best ``(beta, gamma)`` of BSREM-RDP: the best beta per gamma, then the best gamma, each on
    a grid extended past a winning end (:func:`_best_on_grid`, up to ``limit`` times). Also
    returns, per gamma tried, its best beta and the scores of every beta."""
    per_gamma = {}

    def gamma_score(gamma):
        per_gamma[gamma] = _best_on_grid(
            lambda b: score(dataclasses.replace(base, bsrem_beta=b, rdp_gamma=gamma), "bsrem-rdp"), betas,
            extend=10 ** 0.5, limit=limit)
        best_beta, scores = per_gamma[gamma]
        return scores[best_beta]

    best_gamma, _ = _best_on_grid(gamma_score, gammas, extend=2.5, limit=limit)
    return per_gamma[best_gamma][0], best_gamma, per_gamma


def _rdp_record(beta: float, gamma: float, per_gamma: dict) -> dict:
    """The tuning record of a BSREM-RDP search (:func:`_tune_rdp`): its best point and every score."""
    return {"best": {"bsrem_beta": beta, "rdp_gamma": gamma, "psnr": per_gamma[gamma][1][beta]},
            "scores": [{"rdp_gamma": g, "bsrem_beta": b, "psnr": v}
                       for g, (_, sc) in sorted(per_gamma.items()) for b, v in sorted(sc.items())]}


def _model_for(models: dict, method: str, drf: float):
    """``models[method]``, or its entry for ``drf`` when it is a dict per DRF."""
    model = models[method]
    return model[drf] if isinstance(model, dict) else model


def _mean_psnr(cases, images, fwhm_mm: float, bar) -> float:
    """Mean PSNR of ``images`` post-filtered (FWHM in mm) against their ``cases``' truths; one
    ``bar`` step per image."""
    values = []
    for c, x in zip(cases, images):
        values.append(psnr(_image(filtered(x, c.grid, fwhm_mm)), c.truth.numpy()))
        bar.update(1)
    return float(np.mean(values))


def _grow_filters(filters_mm: list, best: float) -> bool:
    """Widen the filter grid by its last step when ``best`` is its widest (non-zero) value."""
    if best == filters_mm[-1] and best > 0:
        filters_mm.append(best + (best - filters_mm[-2] if len(filters_mm) > 1 else best))
        return True
    return False


def _tune_filter(score, filters_mm, extend: int) -> dict:
    """Mean PSNR per post-filter FWHM on a grid widened past a winning widest value (up to ``extend``
    times)."""
    filters_mm = sorted(float(f) for f in filters_mm)
    scores = {f: score(f) for f in filters_mm}
    for _ in range(extend):
        if not _grow_filters(filters_mm, max(scores, key=scores.get)):
            break
        scores[filters_mm[-1]] = score(filters_mm[-1])
    return scores


def _tune_osem(score, iterations, filters_mm, extend: int) -> dict:
    """Mean PSNR of OSEM per ``(iterations, post-filter FWHM)``, on a grid extended past a winning
    end, up to ``extend`` times: iterations halved (down to 1) or doubled, the filter widened by
    the grid's last step (it cannot go below 0)."""
    iterations, filters_mm = sorted(int(n) for n in iterations), sorted(float(f) for f in filters_mm)
    scores = {(n, f): score(n, f) for n in iterations for f in filters_mm}
    for _ in range(extend):
        n, f = max(scores, key=scores.get)
        grown = False
        if n == iterations[0] and n > 1:
            iterations.insert(0, n // 2)
            grown = True
        elif n == iterations[-1]:
            iterations.append(2 * n)
            grown = True
        grown = _grow_filters(filters_mm, f) or grown
        if not grown:
            break
        scores.update({(n, f): score(n, f) for n in iterations for f in filters_mm if (n, f) not in scores})
    return scores


def tune_on_cases(cases, *, methods=TUNABLE, osem_iterations=TUNE_GRID["osem_iterations"],
                  post_filter_mm=TUNE_GRID["post_filter_mm"], bsrem_beta=TUNE_GRID["bsrem_beta"],
                  rdp_gamma=TUNE_GRID["rdp_gamma"], extend: int = 3, restorer_map: bool = TUNE_GRID["restorer_map"],
                  base: ClassicalSettings | dict | None = None, models: dict | None = None,
                  progress: bool = False) -> tuple[dict[float, ClassicalSettings], dict[float, dict]]:
    """Choose the classical settings per DRF by best mean PSNR over ``cases`` (validation data).

    ``cases`` is a sequence of ``(drf, Case)`` from any data source. OSEM (when ``"osem"`` is in
    ``methods``): iterations × post-filter over the grids, extended past a winning end (fewer or
    more iterations, a wider filter; up to ``extend`` times). BSREM-RDP (when ``"bsrem-rdp"`` is):
    the converged MAP image (:func:`~pettk.evaluation.methods.converged_bsrem`) over ``beta`` ×
    ``gamma``; when the best ``beta`` (or ``gamma``) lies at an end of its grid, the grid is
    extended past it (× sqrt(10) for beta, × 2.5 for gamma, up to ``extend`` times) so that the
    choice is not an artefact of the grid. ``base`` (a :class:`ClassicalSettings` or one per
    DRF; default :class:`ClassicalSettings`) gives every other setting. RED and DREAM (when in
    ``methods``, with their models in ``models``): the OSEM iterations × post-filter applied to
    the restored sinogram (``red_*``, ``dream_*`` settings), on the OSEM grids with the same
    extension, and with ``restorer_map`` also the converged BSREM-RDP of the restored data
    (:func:`~pettk.evaluation.methods.restored_map`) over the beta × gamma grids: the better of
    the two by mean PSNR is chosen (``*_reconstruction``: ``"osem"`` or ``"bsrem-rdp"``); each
    validation sinogram is restored once. LegoPET (when in ``methods``, its model in ``models``):
    MLEM iterations (:data:`LEGOPET_EM_ITERATIONS`, extended like OSEM's) from its sample ×
    the post-filter grid (``legopet_*`` settings, :func:`~pettk.evaluation.methods.refined_sample`);
    each validation slice is sampled once. DDIP and PET-DDS (when in ``methods``, their models in
    ``models``): a post-filter of their reconstruction over the filter grid, widened past a
    winning widest value like OSEM's (``ddip_post_filter_mm``, ``pet_dds_post_filter_mm``); each
    validation slice is reconstructed once.

    Returns the chosen settings per DRF and, per DRF, a record of every grid point's mean PSNR:
    ``{"osem": {"best": {...}, "scores": [...]}, "bsrem-rdp": {...}}``.
    """
    by_drf: dict[float, list[Case]] = {}
    for drf, case in cases:
        by_drf.setdefault(float(drf), []).append(case)
    if not by_drf:
        raise ValueError("tuning needs at least one validation case")
    unknown = [m for m in methods if m not in TUNABLE]
    if unknown:
        raise ValueError(f"only {', '.join(TUNABLE)} are tuned, got {unknown}")
    models = dict(models or {})  # method -> model, or method -> {drf: model}
    missing = [m for m in methods if m in NEED_MODEL and m not in models]
    if missing:
        raise ValueError(f"tuning {', '.join(missing)} needs the model(s) in models")
    if base is None or isinstance(base, ClassicalSettings):
        bases = {d: (base or ClassicalSettings()).validate() for d in by_drf}
    else:
        bases = {d: base.get(d, ClassicalSettings()).validate() for d in by_drf}
    chosen, record = {}, {}
    bar = tqdm(desc="tune (reconstructions)", disable=not progress, leave=False)
    for drf in sorted(by_drf):
        mine, b = by_drf[drf], bases[drf]

        def score(settings, method, mine=mine):
            run = make_runner(method, settings=settings)
            values = []
            for c in mine:
                values.append(psnr(_image(run(c)), c.truth.numpy()))
                bar.update(1)
            return float(np.mean(values))

        out, rec = b, {}
        if "osem" in methods:
            scores = _tune_osem(lambda n, f, b=b: score(dataclasses.replace(b, osem_iterations=n, post_filter_mm=f),
                                                        "osem"), osem_iterations, post_filter_mm, extend)
            (n, f) = max(scores, key=scores.get)
            out = dataclasses.replace(out, osem_iterations=n, post_filter_mm=f)
            rec["osem"] = {"best": {"osem_iterations": n, "post_filter_mm": f, "psnr": scores[(n, f)]},
                           "scores": [{"osem_iterations": k[0], "post_filter_mm": k[1], "psnr": v}
                                      for k, v in scores.items()]}
        if "bsrem-rdp" in methods:
            best_beta, best_gamma, per_gamma = _tune_rdp(score, b, bsrem_beta, rdp_gamma, limit=extend)
            out = dataclasses.replace(out, bsrem_beta=best_beta, rdp_gamma=best_gamma)
            rec["bsrem-rdp"] = _rdp_record(best_beta, best_gamma, per_gamma)
            log.info("DRF %g: BSREM-RDP PSNR per gamma: %s", drf,
                     {g: {beta: round(v, 3) for beta, v in sc.items()} for g, (_, sc) in per_gamma.items()})
        for method in (m for m in RESTORERS if m in methods):
            restored = [restore_planes(_model_for(models, method, drf), c.y_low, c.drf).clamp_min(0) for c in mine]

            reconstructed: dict[int, list] = {}  # OSEM iterations -> images, each run once for every filter

            def restored_score(n, f, restored=restored, mine=mine, subsets=b.osem_subsets, reconstructed=reconstructed):
                if n not in reconstructed:
                    reconstructed[n] = [osem(c.model, y_hat, n, subsets) for c, y_hat in zip(mine, restored)]
                return _mean_psnr(mine, reconstructed[n], f, bar)

            scores = _tune_osem(restored_score, osem_iterations, post_filter_mm, extend)
            (n, f) = max(scores, key=scores.get)
            out = dataclasses.replace(out, **{f"{method}_osem_iterations": n, f"{method}_post_filter_mm": f,
                                              f"{method}_reconstruction": "osem"})
            rec[method] = {"best": {"reconstruction": "osem", "osem_iterations": n, "post_filter_mm": f,
                                    "psnr": scores[(n, f)]},
                           "scores": [{"osem_iterations": k[0], "post_filter_mm": k[1], "psnr": v}
                                      for k, v in scores.items()]}
            if restorer_map:
                def map_score(settings, _method, restored=restored, mine=mine):
                    values = []
                    for c, y_hat in zip(mine, restored):
                        values.append(psnr(_image(restored_map(c, y_hat, settings)), c.truth.numpy()))
                        bar.update(1)
                    return float(np.mean(values))

                beta, gamma, per_gamma = _tune_rdp(map_score, b, bsrem_beta, rdp_gamma, limit=extend)
                best_map = per_gamma[gamma][1][beta]
                rec[method]["bsrem-rdp"] = _rdp_record(beta, gamma, per_gamma)
                if best_map > scores[(n, f)]:
                    out = dataclasses.replace(out, **{f"{method}_reconstruction": "bsrem-rdp",
                                                      f"{method}_bsrem_beta": beta, f"{method}_rdp_gamma": gamma})
                    rec[method]["best"] = {"reconstruction": "bsrem-rdp", "bsrem_beta": beta, "rdp_gamma": gamma,
                                           "psnr": best_map}
        if "legopet" in methods:
            sample = make_runner("legopet", _model_for(models, "legopet", drf),
                                 dataclasses.replace(b, legopet_em_iterations=0, legopet_post_filter_mm=0.0))
            # each validation slice sampled once; refined[n]: its n MLEM iterations, each count
            # continued from the largest one already run (EM from an EM iterate is the same run)
            refined = {0: [torch.as_tensor(sample(c)) for c in mine]}

            def sample_score(n, f, mine=mine, refined=refined):
                if n not in refined:
                    k = max(k for k in refined if k < n)
                    refined[n] = ([refined_sample(c, x, n, 0.0) for c, x in zip(mine, refined[0])] if k == 0 else
                                  [mlem(c.model_low, c.y_low, n - k, x0=x) for c, x in zip(mine, refined[k])])
                return _mean_psnr(mine, refined[n], f, bar)

            scores = _tune_osem(sample_score, LEGOPET_EM_ITERATIONS, post_filter_mm, extend)
            (n, f) = max(scores, key=scores.get)
            out = dataclasses.replace(out, legopet_em_iterations=n, legopet_post_filter_mm=f)
            rec["legopet"] = {"best": {"em_iterations": n, "post_filter_mm": f, "psnr": scores[(n, f)]},
                              "scores": [{"em_iterations": k[0], "post_filter_mm": k[1], "psnr": v}
                                         for k, v in scores.items()]}
        for method in (m for m in FILTERED_PRIORS if m in methods):
            run = make_runner(method, _model_for(models, method, drf),
                              dataclasses.replace(b, **{filter_field(method): 0.0}))
            images = [torch.as_tensor(run(c)) for c in mine]

            scores = _tune_filter(lambda f, mine=mine, images=images: _mean_psnr(mine, images, f, bar),
                                  post_filter_mm, extend)
            f = max(scores, key=scores.get)
            out = dataclasses.replace(out, **{filter_field(method): f})
            rec[method] = {"best": {"post_filter_mm": f, "psnr": scores[f]},
                           "scores": [{"post_filter_mm": k, "psnr": v} for k, v in sorted(scores.items())]}
        chosen[drf] = out.validate()
        record[drf] = rec
        log.info("DRF %g: %s", drf, chosen[drf])
    bar.close()
    return chosen, record

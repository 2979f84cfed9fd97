"""From a raw PETSIRD acquisition to a corrected reconstruction: randoms, attenuation, scatter, OSEM.

:func:`estimate_corrections` runs the chain every scanner's software runs (Watson 2000; STIR's
``ScatterEstimation``; Thielemans et al., Phys. Med. Biol. 57, 867-883, 2012):

1. histogram the prompts and the delayeds of the list-mode file into the scanner's span-1
   sinogram (:func:`~pettk.io.petsird.histogram_petsird`; TOF bins are summed);
2. randoms from the delayeds with Casey's fan-sum variance reduction
   (:func:`~pettk.corrections.randoms.randoms_from_delayeds`);
3. attenuation factors ``exp(-P mu)`` of the given 511 keV mu-map (none without one);
4. scatter by the OSEM ↔ single scatter simulation ↔ tail fit loop
   (:func:`~pettk.scatter.loop.scatter_loop`) in the file's energy window (needs the mu-map);
5. the final sinogram OSEM with ``ybar = n a P x + randoms + scatter``, ``n`` the header's
   detection efficiencies (times a given normalisation).

The final reconstruction uses the histogrammed non-TOF prompts: for non-TOF data it has the
list-mode likelihood exactly (same LORs, same counts), and it is the model the randoms and scatter
were estimated on. TOF information is not used (SSS here is non-TOF).

The report gives the estimated randoms and scatter as fractions of the prompts in the sinogram.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .._validation import as_nonnegative_int, as_positive_int
from ..geometry import ImageGrid, SinogramLayout
from .randoms import randoms_from_delayeds

__all__ = ["CorrectedAcquisition", "estimate_corrections", "report_lines", "write_report", "MU_MAX_PER_MM"]

log = logging.getLogger(__name__)

#: The largest plausible 511 keV attenuation coefficient (1/mm): cortical bone is ~0.017, metal
#: implants reach ~0.05; a map in 1/cm (water 0.096) is caught by this bound.
MU_MAX_PER_MM = 0.05
_GRID_TOL_MM = 1e-3


@dataclass
class CorrectedAcquisition:
    """What :func:`estimate_corrections` found (sinograms ``layout.shape``, float32 tensors).

    Attributes
    ----------
    image : torch.Tensor, ``grid.shape`` -- the corrected OSEM reconstruction
    grid : ImageGrid
    layout : SinogramLayout
    prompts, delayeds : torch.Tensor -- the histogrammed coincidences (counts)
    randoms, scatter : torch.Tensor -- the estimated expected randoms and scatter (counts)
    normalisation : torch.Tensor -- the detection efficiencies used (header × given)
    attenuation : torch.Tensor or None -- ``exp(-P mu)``
    mu : torch.Tensor or None
    report : dict -- see :func:`report_lines`
    """

    image: torch.Tensor
    grid: ImageGrid
    layout: SinogramLayout
    prompts: torch.Tensor
    delayeds: torch.Tensor
    randoms: torch.Tensor
    scatter: torch.Tensor
    normalisation: torch.Tensor
    attenuation: torch.Tensor | None
    mu: torch.Tensor | None
    report: dict


def _grid_matches(a: ImageGrid, b: ImageGrid) -> bool:
    return (a.shape == b.shape and np.allclose(a.voxel_size_mm, b.voxel_size_mm, atol=_GRID_TOL_MM)
            and np.allclose(a.origin_mm, b.origin_mm, atol=_GRID_TOL_MM))


def _load_mu(mu, grid: ImageGrid) -> torch.Tensor | None:
    """The mu-map as a float32 tensor on ``grid``; a NIfTI file must be on ``grid`` (not resampled)."""
    if mu is None:
        return None
    if isinstance(mu, (str, Path)):
        from ..io import load_nifti

        path = Path(mu)
        if not path.is_file():
            raise FileNotFoundError(f"mu-map not found: {path}")
        image, mu_grid = load_nifti(path, ndim=3)
        if not _grid_matches(mu_grid, grid):
            raise ValueError(f"mu {path} is on {mu_grid!r}, the reconstruction grid is {grid!r}; resample the "
                             "mu-map onto the reconstruction grid (or pass the grid it is on)")
        mu = image
    if isinstance(mu, np.ndarray):
        mu = torch.from_numpy(np.ascontiguousarray(mu))
    if not isinstance(mu, torch.Tensor):
        raise TypeError(f"mu must be a NIfTI path, an array or a tensor, got {type(mu).__name__}")
    if tuple(mu.shape) != tuple(grid.shape):
        raise ValueError(f"mu must have the reconstruction grid's shape {tuple(grid.shape)}, got {tuple(mu.shape)}")
    mu = mu.detach().to("cpu", torch.float32)
    if not bool(torch.isfinite(mu).all()) or bool((mu < 0).any()):
        raise ValueError("mu must be finite and >= 0 (1/mm)")
    peak = float(mu.max())
    if peak > MU_MAX_PER_MM:
        raise ValueError(f"mu reaches {peak:.4g} /mm, more than any tissue at 511 keV ({MU_MAX_PER_MM} /mm): "
                         "give the mu-map in 1/mm (water 0.0096), not 1/cm")
    if peak == 0:
        raise ValueError("mu is zero everywhere: give None for no attenuation")
    return mu


def _energy_window(scanner, fwhm_fraction):
    """The SSS window: the edges of the accepted energy bins; the resolution from the header."""
    from ..scatter import EnergyWindow

    mt = scanner.module_types[0]
    acc = mt.accepted_energy_bins
    lower, upper = float(mt.energy_bin_edges_kev[acc[0]]), float(mt.energy_bin_edges_kev[acc[-1] + 1])
    try:
        return EnergyWindow(lower, upper, fwhm_fraction)
    except ValueError as err:
        raise ValueError(f"{scanner.source}: the energy window of the kept events, [{lower:g}, {upper:g}] keV, "
                         f"cannot be used for scatter estimation: {err}") from None


def estimate_corrections(path, mu=None, *, grid: ImageGrid | None = None, voxel_size_mm: float | None = None,
                         normalisation=None, energy_window_kev=None, fwhm_fraction: float | None = None,
                         radial_trim: int = 0, max_ring_difference: int | None = None, n_rounds: int = 3,
                         scatter_iter: int = 2, n_iter: int = 4, n_subsets: int = 4, tail_threshold: float = 0.95,
                         tail_margin: int = 2, sss_options: dict | None = None, progress: bool = False
                         ) -> CorrectedAcquisition:
    """Estimate randoms and scatter from a PETSIRD list-mode file and reconstruct with them.

    Parameters
    ----------
    path : str or Path
        PETSIRD file (binary or NDJSON) with prompts and delayeds, of a regular-polygon scanner
        with one module type (:meth:`~pettk.io.petsird.PETSIRDScanner.regular_polygon`).
    mu : str, Path, array or tensor, optional
        511 keV attenuation map (1/mm) on the reconstruction grid: a NIfTI file (its affine must
        give that grid) or an array of ``grid.shape``. ``None``: no attenuation and no scatter
        estimate (single scatter needs the mu-map).
    grid : ImageGrid, optional
        Reconstruction grid; default the scanner's
        :meth:`~pettk.io.petsird.PETSIRDScanner.default_grid` (``voxel_size_mm``).
    normalisation : array or tensor of ``layout.shape``, optional
        Detection efficiencies (e.g. :func:`~pettk.corrections.estimate_normalisation`),
        multiplying the header's own efficiencies.
    energy_window_kev : (low, high), optional
        Keep the energy bins inside this window (default: all); the kept bins' edges must lie in
        350-750 keV around 511 keV (:class:`~pettk.scatter.EnergyWindow`).
    fwhm_fraction : float, optional
        Energy resolution at 511 keV (FWHM / E); default the header's ``energy_resolution_at_511``,
        else 0.15.
    radial_trim, max_ring_difference : int
        The sinogram layout (:class:`~pettk.geometry.SinogramLayout`).
    n_rounds, scatter_iter : int
        Scatter loop rounds (2-3 usual) and OSEM epochs per round.
    n_iter, n_subsets : int
        Epochs and view subsets of the final OSEM (and the subsets of the scatter loop).
    tail_threshold, tail_margin : see :func:`~pettk.scatter.tail_mask`.
    sss_options : dict, optional
        Passed to :func:`~pettk.scatter.single_scatter` (``window`` comes from the file).
    progress : bool

    Returns
    -------
    CorrectedAcquisition

    Raises
    ------
    ValueError
        Before any histogramming or reconstruction: a scanner that is not a regular polygon, a
        mu-map on another grid or of implausible values, an energy window outside 350-750 keV,
        a normalisation of the wrong shape; after the (cheap) delayed pass, a file without
        delayed coincidences.
    """
    from ..io.petsird import PETSIRDFile, histogram_petsird
    from ..physics import ForwardModel, attenuation_factors
    from ..projector import Projector
    from ..recon import osem
    from ..scatter import scatter_loop

    n_rounds = as_positive_int("n_rounds", n_rounds)
    scatter_iter = as_positive_int("scatter_iter", scatter_iter)
    n_iter = as_positive_int("n_iter", n_iter)
    n_subsets = as_positive_int("n_subsets", n_subsets)
    as_nonnegative_int("radial_trim", radial_trim)
    if grid is not None and not isinstance(grid, ImageGrid):
        raise TypeError(f"grid must be an ImageGrid, got {type(grid).__name__}")
    if grid is not None and grid.ndim != 3:
        raise ValueError(f"grid must be 3D, got {grid!r}")
    if sss_options and "window" in sss_options:
        raise ValueError("sss_options must not hold 'window': the energy window comes from the file")
    with PETSIRDFile(path, energy_window_kev=energy_window_kev, use_tof=False) as f:
        sc = f.scanner
        scanner = sc.regular_polygon()[0]
        if fwhm_fraction is None:
            header_fwhm = list(np.ravel(getattr(f.header.scanner, "energy_resolution_at_511", None) or [0.0]))
            header_fwhm = float(header_fwhm[0]) if header_fwhm else 0.0
            fwhm_fraction = header_fwhm if 0.0 < header_fwhm < 1.0 else 0.15
        window = _energy_window(sc, fwhm_fraction)
        layout = SinogramLayout(scanner, radial_trim=radial_trim, max_ring_difference=max_ring_difference)
        if n_subsets > layout.n_views:
            raise ValueError(f"n_subsets must be <= the number of views ({layout.n_views}), got {n_subsets}")
        if grid is None:
            grid = sc.default_grid(voxel_size_mm)
        mu_t = _load_mu(mu, grid)
        extra = None
        if normalisation is not None:
            extra = normalisation if isinstance(normalisation, torch.Tensor) else torch.from_numpy(
                np.ascontiguousarray(normalisation))
            if tuple(extra.shape) != layout.shape:
                raise ValueError(f"normalisation must have shape {layout.shape}, got {tuple(extra.shape)}")
            extra = extra.detach().to("cpu", torch.float32)
            if not bool(torch.isfinite(extra).all()) or bool((extra < 0).any()):
                raise ValueError("normalisation must be finite and >= 0")

        delayed, _, _, _ = histogram_petsird(f, layout, kind="delayed")  # raises without delayeds
        n_delayed_read = int(f.stats.get("events_kept", 0))
        prompts, eff, _, _ = histogram_petsird(f, layout, kind="prompt")
        n_prompt_read = int(f.stats.get("events_kept", 0))
        source = str(f.path)
    y = torch.from_numpy(prompts)
    if float(y.sum()) == 0:
        raise ValueError(f"{source} holds no prompt events on the sinogram's LORs")
    d = torch.from_numpy(delayed)
    norm = torch.from_numpy(eff)
    if extra is not None:
        norm = norm * extra
    # the fan-sum model puts randoms on every LOR of the layout; the scanner records none where the
    # efficiency is 0 (detector pairs not in coincidence): drop them there and keep the delayeds' total
    r = randoms_from_delayeds(delayed.astype(np.float64), layout) * (eff > 0)
    if r.sum() > 0:
        r *= float(delayed.sum(dtype=np.float64)) / float(r.sum())
    randoms = torch.from_numpy(r.astype(np.float32))

    projector = Projector(grid, layout)
    attenuation, scales = None, []
    scatter = torch.zeros_like(y)
    if mu_t is not None:
        attenuation = attenuation_factors(projector, mu_t)
        loop = scatter_loop(projector, y, mu_t, randoms=randoms, normalisation=norm, n_rounds=n_rounds,
                            n_iter=scatter_iter, n_subsets=n_subsets, tail_threshold=tail_threshold,
                            tail_margin=tail_margin, sss_options=dict(sss_options or {}, window=window),
                            progress=progress)
        scatter, scales = loop.scatter.to(torch.float32), [float(s) for s in loop.scales]
    else:
        log.warning("%s: no mu-map: no attenuation correction and no scatter estimate", source)
    model = ForwardModel(projector, normalisation=norm, attenuation=attenuation, additive=randoms + scatter)
    image = osem(model, y, n_iter, n_subsets, progress=progress)

    total = float(y.double().sum())
    report = {
        "file": source,
        "prompts": int(round(total)),
        "delayeds": int(round(float(d.double().sum()))),
        "prompt_events_read": n_prompt_read,
        "delayed_events_read": n_delayed_read,
        "randoms": float(randoms.double().sum()),
        "scatter": float(scatter.double().sum()) if mu_t is not None else None,
        "randoms_fraction": float(randoms.double().sum()) / total,
        "scatter_fraction": float(scatter.double().sum()) / total if mu_t is not None else None,
        "tail_scales": scales,
        "energy_window_kev": [window.lower_kev, window.upper_kev],
        "fwhm_fraction": window.fwhm_fraction,
        "attenuation": mu_t is not None,
        "normalisation": "header efficiencies" + (" x given" if extra is not None else ""),
        "sinogram_shape": list(layout.shape),
        "grid": {"shape": list(grid.shape), "voxel_size_mm": list(grid.voxel_size_mm),
                 "origin_mm": list(grid.origin_mm)},
        "scatter_rounds": n_rounds if mu_t is not None else 0,
        "n_iter": n_iter,
        "n_subsets": n_subsets,
    }
    return CorrectedAcquisition(image=image, grid=grid, layout=layout, prompts=y, delayeds=d, randoms=randoms,
                                scatter=scatter, normalisation=norm, attenuation=attenuation, mu=mu_t,
                                report=report)


def report_lines(report: dict) -> list[str]:
    """The report of :func:`estimate_corrections` as printable lines."""
    def pct(v):
        return "not estimated (no mu-map)" if v is None else f"{100 * v:.2f} % of the prompts"

    lines = [f"prompts in the sinogram: {report['prompts']}, delayeds: {report['delayeds']}",
             f"randoms (fan-sum smoothed delayeds): {report['randoms']:.6g} counts, {pct(report['randoms_fraction'])}"]
    if report["scatter"] is None:
        lines.append(f"scatter: {pct(None)}")
    else:
        scales = ", ".join(f"{s:.4g}" for s in report["tail_scales"])
        lines.append(f"scatter (SSS, {report['scatter_rounds']} rounds, tail scales {scales}): "
                     f"{report['scatter']:.6g} counts, {pct(report['scatter_fraction'])}")
    lo, hi = report["energy_window_kev"]
    lines.append(f"energy window {lo:g}-{hi:g} keV, FWHM {100 * report['fwhm_fraction']:.3g} % at 511 keV; "
                 f"attenuation {'from the mu-map' if report['attenuation'] else 'none'}; "
                 f"normalisation: {report['normalisation']}")
    lines.append(f"OSEM {report['n_iter']} x {report['n_subsets']} on the sinogram {tuple(report['sinogram_shape'])} "
                 f"-> grid {tuple(report['grid']['shape'])}")
    return lines


def write_report(path, report: dict) -> Path:
    """Write the report as JSON, atomically."""
    from ..io import atomic_path

    def clean(v):
        if isinstance(v, float) and not math.isfinite(v):
            return None
        return v

    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps({k: clean(v) for k, v in report.items()}, indent=2) + "\n")
    return Path(path)

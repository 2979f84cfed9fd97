"""A raw PETSIRD acquisition with known trues, scatter and randoms: the input of
:func:`~pettk.corrections.acquisition.estimate_corrections` in tests and examples.

Expected counts per sinogram bin (span 1, non-TOF):

* trues ``c n a P x`` (``n`` the header's detection efficiencies, ``a = exp(-P mu)``, ``c`` set so
  that they sum to ``trues``);
* scatter ``k c n S`` with ``S`` the unscaled single scatter of ``x`` (by default
  :func:`~pettk.scatter.single_scatter` with every crystal a detector and every voxel a scatter
  point, within 1 % of the brute-force integral, see ``docs/corrections.md``) and ``k`` the given
  ``scatter_scale`` (multiple scatter, in the units the tail fit estimates);
* randoms ``2 tau S_i S_j T`` from the crystals' singles rates, on the LORs whose efficiency is > 0
  (the detector pairs in coincidence).

Prompts are Poisson(trues + scatter + randoms), delayeds an independent Poisson(randoms); both are
written as PETSIRD events (one per count) of the middle TOF bin and the first accepted energy bin.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .._validation import as_nonnegative_float, as_positive_float
from ..geometry import ImageGrid, SinogramLayout
from .randoms import randoms_from_singles

__all__ = ["SimulatedAcquisition", "sinogram_efficiency", "sinogram_events", "simulate_acquisition"]


@dataclass
class SimulatedAcquisition:
    """The truth of :func:`simulate_acquisition` (float64 arrays of ``layout.shape``) and its file."""

    path: Path
    layout: SinogramLayout
    trues: np.ndarray
    scatter: np.ndarray
    randoms: np.ndarray
    prompts: np.ndarray
    delayeds: np.ndarray
    efficiency: np.ndarray
    count_scale: float  # c: trues = c n a P x, so c x is the activity in the model's units


def _detector_of(scanner) -> np.ndarray:
    polygon, ring, crystal = scanner.regular_polygon()
    det_of = np.full((polygon.n_rings, polygon.n_crystals_per_ring), -1, dtype=np.int64)
    det_of[ring, crystal] = np.arange(ring.size)
    return det_of


def sinogram_efficiency(scanner, layout: SinogramLayout) -> np.ndarray:
    """Detection efficiency of every bin of ``layout`` from a PETSIRD scanner's header (as
    :func:`~pettk.io.petsird.histogram_petsird` returns it), float64 ``layout.shape``."""
    det_of = _detector_of(scanner)
    pairs = layout.crystal_pairs.reshape(-1, 2)
    eff = np.empty((layout.n_planes, pairs.shape[0]))
    for k, (r0, r1) in enumerate(layout.plane_rings):
        start, end = det_of[r0, pairs[:, 0]], det_of[r1, pairs[:, 1]]
        eff[k] = np.where(start == end, 0.0, scanner.lor_efficiency(0, 0, start, end))
    return eff.reshape(layout.shape)


def sinogram_events(counts, layout: SinogramLayout, scanner, *, seed=None) -> dict:
    """One PETSIRD coincidence per count of an integer sinogram, ready for
    :func:`~pettk.io.petsird.write_petsird` (``{(0, 0): (detection_bins, tof_idx)}``, events in
    random order, the middle TOF bin, the first accepted energy bin)."""
    counts = np.asarray(counts)
    if counts.shape != layout.shape:
        raise ValueError(f"counts must have shape {layout.shape}, got {counts.shape}")
    if np.any(counts < 0) or np.any(counts != np.round(counts)):
        raise ValueError("counts must be integers >= 0")
    det_of = _detector_of(scanner)
    mt = scanner.module_types[0]
    p, v, r = np.nonzero(counts)
    reps = counts[p, v, r].astype(np.int64)
    start = det_of[layout.plane_rings[p, 0], layout.crystal_pairs[v, r, 0]]
    end = det_of[layout.plane_rings[p, 1], layout.crystal_pairs[v, r, 1]]
    energy = int(mt.accepted_energy_bins[0])
    bins = np.repeat(np.stack([start, end], axis=1), reps, axis=0) * mt.n_energy_bins + energy
    bins = np.sort(bins, axis=1)[:, ::-1]  # PETSIRD orders detection_bins[0] >= detection_bins[1]
    bins = bins[np.random.default_rng(seed).permutation(bins.shape[0])]
    tof = np.full(bins.shape[0], scanner.type_pairs[0].n_tof_bins // 2)
    return {(0, 0): (np.ascontiguousarray(bins), tof)}


def simulate_acquisition(path, header, activity, mu, grid: ImageGrid, *, trues: float, singles_per_s,
                         tau_s: float, duration_s: float, scatter_scale: float = 1.0, scatter=None,
                         window=None, layout: SinogramLayout | None = None, n_time_blocks: int = 1,
                         seed=0) -> SimulatedAcquisition:
    """Simulate prompts and delayeds of ``activity`` in ``mu`` and write them to a PETSIRD file.

    Parameters
    ----------
    path : str or Path -- the PETSIRD file to write (binary)
    header : petsird.Header -- a regular-polygon scanner with one module type
    activity, mu : arrays of ``grid.shape`` (any unit >= 0; 1/mm at 511 keV)
    trues : float -- expected true coincidences in the layout
    singles_per_s : array ``(n_rings, n_crystals_per_ring)`` -- singles rate of every crystal (1/s)
    tau_s, duration_s : float -- coincidence resolving time and frame duration (s)
    scatter_scale : float -- ``k`` (see the module docstring)
    scatter : array of ``layout.shape``, optional -- the unscaled single scatter ``S`` of ``activity``
        (e.g. a brute-force integral); default the all-crystal, all-voxel SSS in ``window``.
    window : EnergyWindow, optional -- for the default scatter (default: ``EnergyWindow()``).
    layout : SinogramLayout, optional -- default all LORs of the fitted scanner.
    """
    from ..io.petsird import PETSIRDScanner, write_petsird
    from ..physics import attenuation_factors
    from ..projector import Projector
    from ..scatter import single_scatter

    trues = as_positive_float("trues", trues)
    scatter_scale = as_nonnegative_float("scatter_scale", scatter_scale)
    sc = PETSIRDScanner(header)
    polygon = sc.regular_polygon()[0]
    layout = SinogramLayout(polygon) if layout is None else layout
    x = torch.as_tensor(np.asarray(activity, dtype=np.float64))
    mu_t = torch.as_tensor(np.asarray(mu, dtype=np.float64))
    if tuple(x.shape) != grid.shape or tuple(mu_t.shape) != grid.shape:
        raise ValueError(f"activity and mu must have shape {grid.shape}, got {tuple(x.shape)}, {tuple(mu_t.shape)}")
    projector = Projector(grid, layout)
    eff = sinogram_efficiency(sc, layout)
    geometric = eff * attenuation_factors(projector, mu_t).numpy() * projector.forward(x).numpy()
    c = trues / geometric.sum()
    if scatter is None:
        scatter = single_scatter(projector, x, mu_t, window=window, scatter_step_mm=min(grid.voxel_size_mm),
                                 per_side=polygon.n_crystals_per_side, n_axial=polygon.n_rings).numpy()
    scatter = np.asarray(scatter, dtype=np.float64)
    if scatter.shape != layout.shape:
        raise ValueError(f"scatter must have shape {layout.shape}, got {scatter.shape}")
    if not np.all(np.isfinite(scatter)) or np.any(scatter < 0):
        raise ValueError("scatter must be finite and >= 0")
    true_counts = c * geometric
    scatter_counts = scatter_scale * c * eff * scatter
    # coincidences are recorded only between detectors in coincidence (efficiency > 0)
    randoms = randoms_from_singles(singles_per_s, tau_s, duration_s, layout) * (eff > 0)
    rng = np.random.default_rng(seed)
    prompts = rng.poisson(true_counts + scatter_counts + randoms)
    delayeds = rng.poisson(randoms)
    write_petsird(path, header, sinogram_events(prompts, layout, sc, seed=rng),
                  delayed_events=sinogram_events(delayeds, layout, sc, seed=rng), n_time_blocks=n_time_blocks)
    return SimulatedAcquisition(Path(path), layout, true_counts, scatter_counts, randoms, prompts.astype(np.float64),
                                delayeds.astype(np.float64), eff, c)

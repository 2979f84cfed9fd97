"""A whole 3D run on the full mmr-like scanner: wall time and peak resident memory of every step.

A 128×128×127 brain (:func:`pettk.sim.brain_phantom`, FDG, seed 0, on ``preset("mmr-like").grid``)
on the full ``mmr-like`` scanner (64 rings, all ring differences: 4096 planes × 224 views × 129
radial bins = 118 M LORs), simulated with attenuation (the phantom's mu-map), a 4.5 mm PSF,
10 % randoms and 30 % scatter (:func:`pettk.sim.simulate_scan`, float64), then reconstructed in
float32 with the same model: OSEM (3 iterations × 21 subsets) and BSREM with the relative
difference prior (10 epochs × 21 subsets).

Steps (one row each; the last row is the whole run):

* ``phantom`` -- :func:`~pettk.sim.brain_phantom` (activity, mu, labels).
* ``attenuation factors`` -- ``ForwardModel(..., mu=...)``: one forward projection of the mu-map
  (float32, so the factors take a float32 sinogram).
* ``simulate_scan`` -- projection of the activity, scatter and randoms models, Poisson draw
  (float64 sinograms), then the float32 data and model for the reconstruction (the float64 scan
  is dropped).
* ``sensitivity`` -- the 21 subset sensitivity images and their sum (one back projection of all
  LORs; cached on the model, so OSEM and BSREM do not repeat it).
* ``OSEM``, ``BSREM-RDP`` -- the reconstructions, everything included.

Peak resident memory per step: the kernel's high-water mark (``VmHWM``) is reset to the current
resident size (``/proc/self/clear_refs``, "5") at the start of each step and read at its end; the
``whole run`` row is the highest of them (the process's resident size includes everything held
from earlier steps: the phantom, the model, the data). ``peak - start`` is the step's own rise,
also in units of one float32 sinogram of the scanner, which is what grows with the ring count
(sinograms grow with its square, images linearly).

beta (RDP, gamma 2, epsilon = 1e-3 × the mean OSEM activity in the head): at a uniform image
``x`` the prior's curvature per voxel is ``beta W / x`` (``W`` the sum of the 26 neighbour weights)
and the EM (separable-surrogate) curvature of the data term is ``s / x`` with ``s`` the
sensitivity. ``beta = RHO * median(s over the head) / W`` makes the prior's curvature ``RHO``
times the data's, so beta follows the count level and the geometry (``s`` carries both); ``RHO``
was chosen at 8 rings by the lowest error against the true activity (see ``RHO``).

Ring count: ``PETTK_BENCH_RINGS`` (default 64, the full scanner) takes that many central rings
of the scanner (all their ring differences) and the matching shorter image grid (``2 N - 1``
slices of 2.03125 mm over the same axial extent as the rings) with the brain cut to it; the
total counts scale with the number of planes (same counts per LOR). 8 rings (1.8 M LORs) run in
1-4 minutes on 2 cores; the full scanner should take about 45 minutes (an OSEM or BSREM epoch is
a forward and a back projection of all 118 M LORs, about 108 s + 76 s on 2 threads, plus the
per-subset image work).

Run as a script (writes the markdown table to ``PETTK_BENCH_OUT``, default
``full_scanner_3d_<N>rings.md`` in the current directory, and prints it)::

    python benchmarks/test_full_scanner_3d.py
    PETTK_BENCH_RINGS=8 python benchmarks/test_full_scanner_3d.py

or with ``pytest benchmarks/test_full_scanner_3d.py`` (same run, numbers in the benchmark's
extra_info and the summary).
"""

from __future__ import annotations

import gc
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

import pettk
from pettk.recon import bsrem, osem, rdp
from pettk.recon._common import prepare
from pettk.sim import brain_phantom
from pettk.sim.scan import simulate_scan

N_RINGS = int(os.environ.get("PETTK_BENCH_RINGS", "64"))
#: Expected prompts on the full scanner (a 10-minute FDG brain scan); scaled by planes / 4096.
TOTAL_COUNTS_FULL = 3e8
RANDOMS_FRACTION, SCATTER_FRACTION = 0.1, 0.3
PSF_FWHM_MM = 4.5
N_SUBSETS, OSEM_ITERATIONS, BSREM_EPOCHS = 21, 3, 10
#: Prior curvature / data curvature at a uniform image (see the module notes). At 8 rings the
#: 10-epoch BSREM image's NRMSE against the true activity in the head was 0.452, 0.435, 0.398,
#: 0.377, 0.372, 0.375, 0.394 for RHO = 0.001, 0.003, 0.01, 0.02, 0.03, 0.05, 0.1 (OSEM: 0.392).
RHO = 0.03
SEED = 0


# -- peak resident memory -------------------------------------------------------------------------
def _status_kb(key: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key))


def _reset_peak() -> bool:
    """Reset the resident high-water mark to the current size; False where the kernel refuses."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class Step:
    """Times a step and measures its peak resident memory (GB, 1e9 bytes)."""

    def __init__(self, name: str, rows: list):
        self.name, self.rows = name, rows

    def __enter__(self):
        gc.collect()
        self.exact = _reset_peak()
        self.start_kb = _status_kb("VmRSS:")
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        wall = time.perf_counter() - self.t0
        if exc[0] is None:
            peak_kb = _status_kb("VmHWM:")
            self.rows.append({"step": self.name, "wall_s": wall, "peak_gb": peak_kb * 1024 / 1e9,
                              "start_gb": self.start_kb * 1024 / 1e9, "rise_gb": (peak_kb - self.start_kb) * 1024 / 1e9,
                              "exact": self.exact})
        return False


# -- the scanner section ----------------------------------------------------------------------------
def scanner_section(n_rings: int):
    """``n_rings`` central rings of the mmr-like scanner (all ring differences) and the image grid
    over their axial extent (the preset's grid for 64 rings)."""
    p = pettk.preset("mmr-like")
    if n_rings == p.scanner.n_rings:
        return p.layout, p.grid
    if not 1 <= n_rings <= p.scanner.n_rings:
        raise ValueError(f"PETTK_BENCH_RINGS must be in [1, {p.scanner.n_rings}], got {n_rings}")
    s = p.scanner
    first = (s.n_rings - n_rings) // 2
    rings = np.asarray(s.ring_positions_mm)[first:first + n_rings]
    scanner = pettk.RegularPolygonScanner(s.radius_mm, s.n_sides, s.n_crystals_per_side, s.crystal_spacing_mm, rings)
    layout = pettk.SinogramLayout(scanner, radial_trim=p.layout.radial_trim)
    vs = p.grid.voxel_size_mm
    grid = pettk.ImageGrid(p.grid.shape[:2] + (2 * n_rings - 1,), vs,
                           origin_mm=(p.grid.origin_mm[0], p.grid.origin_mm[1], float(rings[0])))
    return layout, grid


def _nrmse(x: np.ndarray, truth: np.ndarray, region: np.ndarray) -> float:
    return float(np.sqrt(np.mean((x[region] - truth[region]) ** 2)) / np.sqrt(np.mean(truth[region] ** 2)))


def rdp_beta(prior, sens: torch.Tensor, head: np.ndarray, rho: float = RHO) -> float:
    """``rho * median(s over the head) / W`` (module notes); ``W`` from the prior's Hessian
    diagonal at a uniform image (``x H(x) = W`` in the interior, for epsilon << x)."""
    level = 1e3 * prior.epsilon
    ones = torch.full(tuple(sens.shape), level, dtype=torch.float64)
    w = float(prior.hessian_diagonal(ones).max()) * level
    return rho * float(torch.as_tensor(sens, dtype=torch.float64)[torch.from_numpy(head)].median()) / w


# -- the run ------------------------------------------------------------------------------------------
def run_benchmark(n_rings: int = N_RINGS, progress: bool = True) -> dict:
    """Run every step; returns ``{"rows": [...], "info": {...}, "images": {...}}``."""
    layout, grid = scanner_section(n_rings)
    n_lors = int(np.prod(layout.shape))
    counts = TOTAL_COUNTS_FULL * layout.shape[0] / 4096
    rows: list = []
    run_start = time.perf_counter()

    with Step("phantom", rows):
        brain = brain_phantom(grid, seed=SEED)
        truth = brain.activity
        head = truth > 0
        mu = brain.mu.astype(np.float32)
        del brain

    with Step("attenuation factors", rows):
        projector = pettk.Projector(grid, layout)
        model = pettk.ForwardModel(projector, psf=PSF_FWHM_MM, mu=mu, progress=progress)
        del mu

    with Step("simulate_scan", rows):
        scan = simulate_scan(truth, model, counts, RANDOMS_FRACTION, SCATTER_FRACTION, seed=SEED, progress=progress)
        # keep only what the reconstruction needs, in float32: drop the input model's mult (the
        # scan's model has its own), trues, scatter and randoms before making the float32 copies
        prompts64, model64 = scan.prompts, scan.model
        del model, scan
        prompts = float(prompts64.sum())
        y = prompts64.to(torch.float32)
        del prompts64
        recon_model = model64.to(dtype=torch.float32)
        del model64

    with Step("sensitivity", rows):
        prepare(recon_model, y, dtype=torch.float32, n_subsets=N_SUBSETS, progress=progress)
        sens = recon_model.sensitivity(torch.float32)

    with Step(f"OSEM {OSEM_ITERATIONS}×{N_SUBSETS}", rows):
        x_osem = osem(recon_model, y, OSEM_ITERATIONS, N_SUBSETS, progress=progress)

    scale = float(x_osem[torch.from_numpy(head)].mean())
    prior = rdp(grid, gamma=2.0, epsilon=1e-3 * scale)
    beta = rdp_beta(prior, sens, head)
    with Step(f"BSREM-RDP {BSREM_EPOCHS}×{N_SUBSETS}", rows):
        x_bsrem = bsrem(recon_model, y, prior, beta, BSREM_EPOCHS, N_SUBSETS, progress=progress)

    peak = max(rows, key=lambda r: r["peak_gb"])
    rows.append({"step": "whole run", "wall_s": time.perf_counter() - run_start, "peak_gb": peak["peak_gb"],
                 "start_gb": rows[0]["start_gb"], "rise_gb": peak["peak_gb"] - rows[0]["start_gb"],
                 "exact": all(r["exact"] for r in rows)})
    sino32_gb = 4 * n_lors / 1e9
    for r in rows:
        r["rise_sinograms"] = r["rise_gb"] / sino32_gb
    x_o, x_b = x_osem.numpy(), x_bsrem.numpy()
    info = dict(rings=n_rings, planes=layout.shape[0], lors=n_lors, image=grid.shape, threads=torch.get_num_threads(),
                prompts=prompts, float32_sinogram_gb=sino32_gb, beta=beta, epsilon=prior.epsilon,
                nrmse_osem=_nrmse(x_o, truth, head), nrmse_bsrem=_nrmse(x_b, truth, head),
                mean_ratio_osem=float(x_o[head].mean() / truth[head].mean()),
                mean_ratio_bsrem=float(x_b[head].mean() / truth[head].mean()))
    return {"rows": rows, "info": info, "images": {"osem": x_o, "bsrem": x_b, "truth": truth}}


def markdown(result: dict) -> str:
    info, rows = result["info"], result["rows"]
    lines = [f"Full-scanner 3D benchmark: {info['rings']} rings ({info['planes']} planes × 224 × 129 = "
             f"{info['lors'] / 1e6:.1f} M LORs), image {'×'.join(map(str, info['image']))}, "
             f"{info['prompts'] / 1e6:.3g} M prompts, {info['threads']} torch threads, "
             f"float32 sinogram {info['float32_sinogram_gb']:.3g} GB.", "",
             "| step | wall s | peak RSS GB | RSS at start GB | peak - start, float32 sinograms |",
             "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['step']} | {r['wall_s']:.1f} | {r['peak_gb']:.2f} | {r['start_gb']:.2f} | "
                     f"{r['rise_sinograms']:.2f} |")
    lines += ["", f"BSREM beta {info['beta']:.4g} (RDP gamma 2, epsilon {info['epsilon']:.3g}); NRMSE against the "
              f"true activity in the head: OSEM {info['nrmse_osem']:.3f}, BSREM {info['nrmse_bsrem']:.3f}; "
              f"mean activity / truth: OSEM {info['mean_ratio_osem']:.3f}, BSREM {info['mean_ratio_bsrem']:.3f}."]
    if not all(r["exact"] for r in rows):
        lines.append("(peak RSS could not be reset per step here: the peaks are the process's running maximum)")
    return "\n".join(lines) + "\n"


def write_table(result: dict) -> Path:
    out = Path(os.environ.get("PETTK_BENCH_OUT", f"full_scanner_3d_{result['info']['rings']}rings.md"))
    out.write_text(markdown(result))
    return out


def test_full_scanner_3d(benchmark, record):
    holder = {}
    benchmark.pedantic(lambda: holder.setdefault("result", run_benchmark(progress=False)), rounds=1, iterations=1)
    result = holder["result"]
    print("\n" + markdown(result))
    path = write_table(result)
    info = result["info"]
    metrics = {f"{r['step']} wall_s": r["wall_s"] for r in result["rows"]}
    metrics.update({f"{r['step']} peak_rss_gb": r["peak_gb"] for r in result["rows"]})
    metrics.update(nrmse_osem=info["nrmse_osem"], nrmse_bsrem=info["nrmse_bsrem"], beta=info["beta"],
                   table=str(path))
    record(f"full scanner 3D, {info['rings']} rings", **metrics)
    # the reconstructions are images of the brain, not just numbers
    assert 0.8 < info["mean_ratio_osem"] < 1.2 and 0.8 < info["mean_ratio_bsrem"] < 1.2, info
    assert info["nrmse_bsrem"] < info["nrmse_osem"], info


if __name__ == "__main__":
    result = run_benchmark()
    path = write_table(result)
    print(markdown(result))
    print(f"written to {path}", file=sys.stderr)

"""Corrections from a raw acquisition: randoms and scatter estimated from PETSIRD list mode.
=========================================================================================

A ring scanner (24 flat modules of 6 × 4 crystals, 350-650 keV window, 10 % energy resolution) is
described with petsird's generator helpers. A water ellipse holding a warm background, a hot and a
cold rod is "scanned": expected trues, scatter (1.4 × the all-crystal, all-voxel single scatter,
the 0.4 standing for multiple scatter) and randoms (``2 tau S_i S_j T`` from known singles) give
Poisson prompts, and an independent realisation of the randoms gives the delayeds; both are
written as PETSIRD events (:func:`pettk.corrections.simulate.simulate_acquisition`).

:func:`pettk.corrections.estimate_corrections` then sees only the file and the mu-map: randoms
from the delayeds by fan sums, attenuation, scatter by 3 rounds of OSEM ↔ SSS ↔ tail fit, and the
final OSEM. The figure shows the estimated scatter and randoms sinograms next to the truth (and
the raw delayeds), radial profiles, and the images with and without the corrections.

Run: ``python examples/plot_corrections.py [output.png]`` (``PETTK_FAST=1``: 4 rings, fewer counts).
"""

import math
import os
import sys
import tempfile
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import petsird
from petsird.helpers import generator

import pettk
from pettk.corrections import estimate_corrections
from pettk.corrections.acquisition import report_lines
from pettk.corrections.simulate import simulate_acquisition
from pettk.io import atomic_path
from pettk.io.petsird import PETSIRDScanner
from pettk.physics import ForwardModel
from pettk.recon import osem
from pettk.scatter import EnergyWindow

FAST = os.environ.get("PETTK_FAST") == "1"
PITCH, N_SIDES, N_CPS = 4.0, 24, 6
WINDOW = EnergyWindow(350.0, 650.0, 0.10)
SCATTER_SCALE = 1.4


def scanner_header(n_rings: int) -> petsird.Header:
    """A gap-free 24-gon of 6 crystals per side (4 mm pitch), crystals centred on the sides."""
    radius = N_CPS * PITCH / (2.0 * math.tan(math.pi / N_SIDES))
    module = generator.CylindricalBlocksInfo(
        radius=radius, crystal_length=(10.0, PITCH, PITCH), num_crystals_per_module=(1, N_CPS, n_rings),
        num_modules_along_ring=N_SIDES, num_modules_along_axis=1, arc=2 * math.pi, start_angle=0.0,
        module_spacing_along_axis=0.0, number_of_tof_bins=1, tof_resolution=1e6, LLD=WINDOW.lower_kev,
        ULD=WINDOW.upper_kev, number_of_event_energy_bins=1, energy_resolution=WINDOW.fwhm_fraction,
        material_id=1)
    scanner = generator.get_scanner_info([module])
    box = scanner.scanner_geometry.replicated_modules[0].object.detecting_elements.object.shape
    for corner in box.corners:  # the generator puts a box corner on the element's position
        corner.c = (corner.c - np.array([0.0, PITCH / 2, PITCH / 2])).astype(np.float32)
    eff = scanner.detection_efficiencies
    eff.calibration_factor = 1.0
    n_bins = len(eff.detection_bin_efficiencies[0])
    eff.detection_bin_efficiencies[0] = np.random.default_rng(0).uniform(0.9, 1.1, n_bins).tolist()
    for pair in eff.module_pair_efficiencies_vectors[0][0]:
        pair.values = [[1.0] * len(row) for row in pair.values]
    return petsird.Header(scanner=scanner)


def phantom(grid: pettk.ImageGrid):
    x, y, _ = grid.coordinates()
    body = (x / 50.0) ** 2 + (y / 38.0) ** 2 < 1.0
    mu = np.where(body, 0.0096, 0.0)
    activity = np.where((x / 46.0) ** 2 + (y / 34.0) ** 2 < 1.0, 1.0, 0.0)
    activity[(x - 18.0) ** 2 + (y - 6.0) ** 2 < 9.0 ** 2] = 4.0
    activity[(x + 20.0) ** 2 + (y + 4.0) ** 2 < 9.0 ** 2] = 0.0
    return activity, mu


def main(out: Path) -> None:
    n_rings = 4 if FAST else 8
    header = scanner_header(n_rings)
    scanner = PETSIRDScanner(header)
    grid = scanner.default_grid()
    activity, mu = phantom(grid)
    polygon = scanner.regular_polygon()[0]
    singles = np.random.default_rng(1).uniform(0.7, 1.3, (polygon.n_rings, polygon.n_crystals_per_ring))
    singles *= 5.0e3 if FAST else 8.0e3
    with tempfile.TemporaryDirectory() as folder:
        sim = simulate_acquisition(Path(folder) / "scan.petsird", header, activity, mu, grid,
                                   trues=1.5e5 if FAST else 1.2e6, singles_per_s=singles, tau_s=2e-9, duration_s=1.0,
                                   scatter_scale=SCATTER_SCALE, window=WINDOW, seed=3)
        res = estimate_corrections(sim.path, mu, n_rounds=3, n_iter=4, n_subsets=6, tail_margin=1)
    model = ForwardModel(pettk.Projector(grid, res.layout), normalisation=res.normalisation,
                         attenuation=res.attenuation)
    plain = osem(model, res.prompts, 4, 6).numpy()
    lines = report_lines(res.report)
    prompts = sim.prompts.sum()
    truth_line = (f"truth: randoms {100 * sim.randoms.sum() / prompts:.2f} %, scatter "
                  f"{100 * sim.scatter.sum() / prompts:.2f} % of the prompts (scatter scale {SCATTER_SCALE})")
    for line in lines + [truth_line]:
        print(line)

    layout = res.layout
    plane = int(np.argmin(np.abs(layout.plane_rings[:, 0] - layout.plane_rings[:, 1])
                          + np.abs(layout.plane_rings[:, 0] - n_rings // 2)))  # a central direct plane
    est_s, est_r = res.scatter.numpy(), res.randoms.numpy()
    fig, axes = plt.subplots(3, 4, figsize=(17, 12))
    vmax = max(sim.scatter[plane].max(), est_s[plane].max())
    panels = [(sim.scatter[plane], "true scatter", vmax), (est_s[plane], "estimated scatter (SSS + tail fit)", vmax),
              (sim.randoms[plane], "true randoms", None), (est_r[plane], "randoms from delayeds (fan sums)", None)]
    rmax = 1.5 * sim.randoms[plane].max()  # the raw delayeds saturate: they are 0, 1 or 2 per bin
    for ax, (img, title, top) in zip(axes[0], panels):
        ax.imshow(img, aspect="auto", cmap="magma", vmin=0, vmax=top if top is not None else rmax)
        ax.set_title(f"{title}\nplane {plane} (views × radial bins)")
        ax.set_xlabel("radial bin")
        ax.set_ylabel("view")
    axes[1, 0].imshow(sim.delayeds[plane], aspect="auto", cmap="magma", vmin=0, vmax=rmax)
    axes[1, 0].set_title("raw delayeds, same plane")
    radial = np.arange(layout.n_radial)
    ax = axes[1, 1]
    measured = sim.prompts - sim.trues - est_r  # what the scatter estimate must explain, with its noise
    ax.plot(radial, measured.sum(axis=(0, 1)), color="0.6", lw=0.8, label="prompts − true trues − est. randoms")
    ax.plot(radial, sim.scatter.sum(axis=(0, 1)), "k-", label="true scatter")
    ax.plot(radial, est_s.sum(axis=(0, 1)), "r--", label="estimated scatter")
    ax.set_title("scatter, summed over planes and views")
    ax.set_xlabel("radial bin")
    ax.legend(fontsize=8)
    ax = axes[1, 2]
    view = layout.n_views // 3
    ax.plot(radial, sim.randoms[:, view].sum(axis=0), "k-", label="true randoms")
    ax.plot(radial, est_r[:, view].sum(axis=0), "r--", label="fan-sum estimate")
    ax.plot(radial, sim.delayeds[:, view].sum(axis=0), color="0.6", lw=0.8, label="delayeds")
    ax.set_title(f"randoms at view {view}, summed over planes")
    ax.set_xlabel("radial bin")
    ax.legend(fontsize=8)
    ax = axes[1, 3]
    ax.axis("off")
    text = "\n".join(textwrap.fill(line, 60, subsequent_indent="  ") for line in lines + [truth_line])
    ax.text(0.0, 0.95, text, va="top", fontsize=8, family="monospace")
    truth = sim.count_scale * activity
    z = grid.shape[2] // 2
    body = mu > 0
    images = [(truth, "true activity"), (plain, "OSEM, attenuation only"), (res.image.numpy(), "OSEM, all corrections")]
    top = 1.3 * truth.max()
    for ax, (img, title) in zip(axes[2], images):
        err = np.linalg.norm((img - truth)[body]) / np.linalg.norm(truth[body])
        ax.imshow(img[:, :, z].T, origin="lower", cmap="gray_r", vmin=0, vmax=top)
        ratio = img[body].mean() / truth[body].mean()
        ax.set_title(title if img is truth else f"{title}\nNRMSE {err:.3f}, mean/true {ratio:.3f}")
        ax.axis("off")
    ax = axes[2, 3]
    row = grid.shape[1] // 2 + int(round(6.0 / grid.voxel_size_mm[1]))
    for img, title, style in ((truth, "truth", "k-"), (plain, "attenuation only", "b-"),
                              (res.image.numpy(), "all corrections", "r-")):
        ax.plot(grid.coordinates()[0][:, row, z], img[:, row, z], style, label=title)
    ax.set_title("profile through the hot and cold rods")
    ax.set_xlabel("x (mm)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_suffix(".png"))

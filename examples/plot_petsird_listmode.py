"""From a PETSIRD list-mode file to an image: TOF list-mode OSEM with pettk.
=========================================================================

A cylindrical scanner is described with petsird's own generator helpers (modules of crystals
replicated around the axis, TOF bins, an energy window, component-based detection efficiencies)
and the prompts of a hot-rod phantom are sampled and written through petsird's binary writer.
pettk then reads the file back (geometry, TOF bins, efficiencies, events in chunks), computes the
sensitivity image (the back projection of the efficiencies of every LOR the scanner can measure)
and reconstructs the events with list-mode OSEM, with and without TOF. The figure shows the
scanner with a few LORs of the file, the sensitivity, the truth and both reconstructions.

Run: ``python examples/plot_petsird_listmode.py [output.png]``; ``PETTK_FAST=1`` makes a
smaller scanner and fewer counts (well under a minute).
"""

import math
import os
import sys
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import petsird
from petsird.helpers import generator

import pettk
from pettk.io import atomic_path
from pettk.io.petsird import PETSIRDFile, PETSIRDListMode, PETSIRDScanner, simulate_petsird_events, write_petsird
from pettk.recon.listmode import lm_osem

FAST = os.environ.get("PETTK_FAST") == "1"


def scanner_header() -> petsird.Header:
    """A TOF ring scanner made of flat modules, described with petsird's generator helpers.

    The generator's efficiencies are placeholders (module-pair efficiency = symmetry group + 1);
    here crystals get efficiencies around 1 and module pairs 1, keeping the generator's list of
    module pairs in coincidence (none within a module)."""
    modules = generator.CylindricalBlocksInfo(
        radius=100.0 if FAST else 120.0, crystal_length=(15.0, 4.0, 4.0),
        num_crystals_per_module=(1, 6 if FAST else 8, 4 if FAST else 6), num_modules_along_ring=20 if FAST else 28,
        num_modules_along_axis=1, arc=2 * math.pi, start_angle=0.0, module_spacing_along_axis=0.0,
        number_of_tof_bins=9, tof_resolution=45.0, LLD=430.0, ULD=650.0, number_of_event_energy_bins=1,
        energy_resolution=0.11, material_id=1)
    scanner = generator.get_scanner_info([modules])
    efficiencies = scanner.detection_efficiencies
    efficiencies.calibration_factor = 1.0
    n_bins = len(efficiencies.detection_bin_efficiencies[0])
    efficiencies.detection_bin_efficiencies[0] = np.random.default_rng(0).uniform(0.85, 1.15, n_bins).tolist()
    for pair in efficiencies.module_pair_efficiencies_vectors[0][0]:
        pair.values = [[1.0] * len(row) for row in pair.values]
    return petsird.Header(scanner=scanner)


def phantom(grid: pettk.ImageGrid) -> np.ndarray:
    """A warm cylinder (radius 55 mm) with six hot rods of 3 to 8 mm radius."""
    x, y, _ = grid.coordinates()
    image = np.where(x ** 2 + y ** 2 < 55.0 ** 2, 1.0, 0.0)
    for k, radius in enumerate((3.0, 4.0, 5.0, 6.0, 7.0, 8.0)):
        cx, cy = 32.0 * math.cos(k * math.pi / 3), 32.0 * math.sin(k * math.pi / 3)
        image[(x - cx) ** 2 + (y - cy) ** 2 < radius ** 2] = 4.0
    return image


def main(out: Path) -> None:
    header = scanner_header()
    grid = pettk.ImageGrid((56, 56, 4 if FAST else 6), (2.5, 2.5, 4.0))
    truth = phantom(grid)
    counts = 8e4 if FAST else 5e5
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "hot-rods.petsird"
        events = simulate_petsird_events(PETSIRDScanner(header), truth, grid, counts, seed=1)
        write_petsird(path, header, events, n_time_blocks=10)

        images, sensitivities = {}, {}
        for use_tof in (True, False):
            name = "TOF" if use_tof else "non-TOF"
            with PETSIRDFile(path, use_tof=use_tof) as f, PETSIRDListMode(f, grid, chunk_events=1 << 16) as data:
                sensitivities[name] = data.sensitivity()
                images[name] = lm_osem(data, sensitivities[name], 3, 8).numpy()
                n_events = data.n_events
        with PETSIRDFile(path) as f:
            scanner = f.scanner
            first = next(f.events(chunk_events=40))
    sens = sensitivities["TOF"]
    pair = scanner.type_pairs[0]
    print(f"{scanner}: {n_events} events, {pair.n_tof_bins} TOF bins of {pair.tof.bin_width_mm:.1f} mm, "
          f"TOF FWHM {pair.tof.fwhm_mm:.0f} mm")

    z = grid.shape[2] // 2
    fig, axes = plt.subplots(1, 5, figsize=(25, 5.2), constrained_layout=True)
    pos = scanner.detector_positions_mm
    axes[0].scatter(pos[:, 0], pos[:, 1], s=2, c="k")
    for start, end in zip(first.start_mm, first.end_mm):
        axes[0].plot([start[0], end[0]], [start[1], end[1]], lw=0.4, alpha=0.6)
    axes[0].set_aspect("equal")
    axes[0].set_title(f"{scanner.n_detectors} crystals, 40 LORs of the file", fontsize=10)
    extent = [grid.origin_mm[0], grid.origin_mm[0] + grid.extent_mm[0]] * 2
    panels = [("sensitivity (efficiencies back-projected)", sens.numpy(), "viridis"),
              ("truth", truth, "gray_r")] + [(f"LM-OSEM 3x8, {k}", v, "gray_r") for k, v in images.items()]
    for ax, (title, image, cmap) in zip(axes[1:], panels):
        vmax = None if cmap == "viridis" else 1.1 * np.percentile(image[..., z], 99.5)
        ax.imshow(image[..., z].T, origin="lower", cmap=cmap, extent=extent, vmin=0, vmax=vmax)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("x (mm)")
    fig.suptitle(f"PETSIRD list mode: {n_events:,} prompts written with petsird, read and reconstructed by pettk")
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=70)
    plt.close(fig)
    print(f"wrote {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_suffix(".png"))

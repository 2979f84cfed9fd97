"""Procedural brain phantoms for several seeds, and sinograms + OSEM images at DRF 1/4/20/100.
===========================================================================================

Top row: FDG-like activity of four subjects (seeds 0-3) and, for seed 0, the amyloid-like
activity, the mu-map and the T1-like MR. Middle and bottom rows: for seed 0 on the mMR-like 2D
ring (224 views × 129 radial bins), the full-dose sinogram and its binomially thinned versions at
dose-reduction factors 4, 20 and 100, and the OSEM reconstruction (4 × 14, 4 mm post-filter) of
each with its PSNR/SSIM against the truth.

Run: ``python examples/plot_phantoms_and_doses.py [output.png]``
"""

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

import pettk
from pettk.io import atomic_path
from pettk.metrics import psnr, ssim
from pettk.recon import osem, post_filter
from pettk.sim.phantoms import brain_phantom
from pettk.sim.scan import simulate_scan

DRFS = (1, 4, 20, 100)
FULL_COUNTS = 1e6


def main(out: Path) -> None:
    p = pettk.preset("mmr-like")
    grid = p.grid_2d
    phantoms = [brain_phantom(grid, seed=s, lesions=2) for s in range(4)]
    amyloid = brain_phantom(grid, seed=0, tracer="amyloid", lesions=2)
    model = pettk.ForwardModel(pettk.Projector(grid, p.layout_2d), psf=4.5, mu=phantoms[0].mu)
    scan = simulate_scan(phantoms[0], model, FULL_COUNTS, randoms_fraction=0.1, scatter_fraction=0.3, seed=0)
    truth = phantoms[0].activity

    fig, axes = plt.subplots(3, 7, figsize=(24, 10), constrained_layout=True)
    top = [(ph.activity, f"FDG-like, seed {i}", "hot") for i, ph in enumerate(phantoms)]
    top += [(amyloid.activity, "amyloid-like, seed 0", "hot"), (phantoms[0].mu, "μ-map (1/mm), seed 0", "bone"),
            (phantoms[0].mr, "T1-like MR, seed 0", "gray")]
    for ax, (img, title, cmap) in zip(axes[0], top):
        ax.imshow(img.T, origin="lower", cmap=cmap)
        ax.set_title(title, fontsize=10)
    for col, drf in enumerate(DRFS):
        y, m = (scan.prompts, scan.model) if drf == 1 else scan.low_dose(drf, seed=drf)
        axes[1, col].imshow(y.numpy(), cmap="gray_r", aspect="auto")
        axes[1, col].set_title(f"DRF {drf}: {float(y.sum()):.3g} counts", fontsize=10)
        x = post_filter(osem(m, y, 4, 14).numpy(), grid, 4.0)
        axes[2, col].imshow(x.T, origin="lower", cmap="hot", vmin=0, vmax=truth.max())
        axes[2, col].set_title(f"OSEM DRF {drf}: PSNR {psnr(x, truth):.1f} dB, SSIM {ssim(x, truth):.3f}", fontsize=9)
    axes[1, 4].imshow(scan.expected.numpy(), cmap="gray_r", aspect="auto")
    axes[1, 4].set_title("expected counts (full dose)", fontsize=10)
    axes[1, 5].imshow((scan.scatter + scan.randoms).numpy(), cmap="gray_r", aspect="auto")
    axes[1, 5].set_title("scatter + randoms", fontsize=10)
    axes[2, 4].imshow(truth.T, origin="lower", cmap="hot", vmin=0, vmax=truth.max())
    axes[2, 4].set_title("truth", fontsize=10)
    axes[2, 5].imshow(phantoms[0].labels.T, origin="lower", cmap="tab10")
    axes[2, 5].set_title("labels", fontsize=10)
    for ax in (axes[1, 6], axes[2, 6]):
        ax.axis("off")
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("pettk procedural brains and dose reduction by binomial thinning (mMR-like 2D ring)")
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=70)
    plt.close(fig)
    print(f"wrote {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_suffix(".png"))

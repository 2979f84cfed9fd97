"""Scatter from the data: single scatter simulation, tail fit and the reconstruction loop.
=========================================================================================

A 2D slice of the procedural brain on the mmr-like ring, standing for a 40 mm slab. The "true"
scatter is SSS with every voxel a scatter point and every crystal a detector (no coarse sets:
within 0.3 % of a brute-force single-scatter integral, see ``tests/test_scatter_sss.py``), times
1.25 for multiple scatter. Poisson prompts are drawn from trues + scatter + randoms (2 million
counts); :func:`pettk.scatter.scatter_loop` then estimates the scatter from the prompts alone
(OSEM, SSS with the default coarse sets, tail fit; 3 rounds). The figure shows both sinograms,
the radial profiles summed over all views and the tail mask. Saved next to this script as
``plot_scatter.png`` (or to the first argument).

Run: ``python examples/plot_scatter.py [output.png]`` (``PETTK_FAST=1``: a 64×64 grid).
"""

import os
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

import pettk
import pettk.sim
from pettk.io import atomic_path
from pettk.scatter import scatter_loop, single_scatter

TOTAL_COUNTS = 2e6
EXTRA_SCATTER = 1.25  # multiple scatter on top of single scatter, which the tail fit absorbs
SLAB_MM = 40.0  # the 2D slice stands for a 40 mm slab: about the scatter of a septa-collimated 2D scan


def main(out: Path) -> None:
    fast = os.environ.get("PETTK_FAST") == "1"
    p = pettk.preset("mmr-like")
    grid = pettk.ImageGrid((64, 64), 2 * 2.0863) if fast else p.grid_2d
    phantom = pettk.sim.brain_phantom(grid, seed=0)
    activity = np.asarray(phantom.activity, dtype=np.float64)
    mu = np.asarray(phantom.mu, dtype=np.float64)
    projector = pettk.Projector(grid, p.layout_2d)

    att = pettk.attenuation_factors(projector, mu)
    trues = att * projector.forward(activity)
    voxel = min(grid.voxel_size_mm)
    scatter = EXTRA_SCATTER * single_scatter(projector, activity, mu, scatter_step_mm=voxel, per_side=8,
                                             slab_thickness_mm=SLAB_MM)
    scale = TOTAL_COUNTS / (1.1 * (trues.sum() + scatter.sum()))
    trues, scatter = trues * scale, scatter * scale
    randoms = np.full(trues.shape, 0.1 * (trues.sum() + scatter.sum()) / trues.size)
    prompts = np.random.default_rng(0).poisson(trues + scatter + randoms).astype(np.float64)

    result = scatter_loop(projector, prompts, mu, randoms=randoms, n_rounds=3, n_iter=2, n_subsets=8,
                          sss_options={"slab_thickness_mm": SLAB_MM})
    estimate = result.scatter.numpy()

    fig, axes = plt.subplots(2, 2, figsize=(11, 8.5))
    vmax = scatter.max()
    for ax, img, title in ((axes[0, 0], scatter, "true scatter (all voxels, all crystals) x 1.25"),
                           (axes[0, 1], estimate, f"estimated: SSS + tail fit (scale {result.scales[-1]:.3f})")):
        im = ax.imshow(img, aspect="auto", cmap="magma", vmin=0, vmax=vmax)
        ax.set(title=title, xlabel="radial bin", ylabel="view")
        fig.colorbar(im, ax=ax)
    ax = axes[1, 0]
    ax.plot((prompts - randoms).sum(0), color="0.6", lw=1, label="prompts - randoms")
    ax.plot((trues + scatter).sum(0), color="k", lw=1, label="trues + scatter")
    ax.plot(scatter.sum(0), color="C0", lw=2, label="true scatter")
    ax.plot(estimate.sum(0), "--", color="C1", lw=2, label="estimated scatter")
    mask_profile = result.mask.numpy().mean(0)
    ax.fill_between(np.arange(mask_profile.size), 0, mask_profile * ax.get_ylim()[1] * 0.1, color="C2", alpha=0.3,
                    label="tail mask (fraction of views)")
    ax.set(title="summed over views", xlabel="radial bin", ylabel="counts")
    ax.legend(fontsize=8)
    ax = axes[1, 1]
    rel = np.where(scatter > 0.1 * vmax, estimate / np.maximum(scatter, 1e-30) - 1, np.nan)
    im = ax.imshow(100 * rel, aspect="auto", cmap="coolwarm", vmin=-10, vmax=10)
    ax.set(title="estimated / true - 1 (%), bins > 10 % of max", xlabel="radial bin", ylabel="view")
    fig.colorbar(im, ax=ax)
    fig.suptitle(f"scatter fraction {scatter.sum() / (scatter.sum() + trues.sum()):.1%} (true), "
                 f"{estimate.sum() / (estimate.sum() + trues.sum()):.1%} (estimated)")
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_suffix(".png"))

"""The PET forward model: image, mu-map, attenuation factors, noise-free and noisy sinograms.
==========================================================================================

A 2D Shepp–Logan activity image inside a water-equivalent head with a bone ring is projected on a
parallel-beam geometry with a 4 mm PSF, attenuation, normalisation, randoms and scatter, without
and with time of flight (400 ps). Poisson noise is drawn for 2 million counts. The figure is saved
next to this script as ``plot_forward_model.png`` (or to the path given as the first argument).

Run: ``python examples/plot_forward_model.py [output.png]``
"""

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

import pettk
from pettk.background import randoms_sinogram, scatter_sinogram
from pettk.io import atomic_path
from pettk.sim.phantoms import MODIFIED_SHEPP_LOGAN_2D, ellipse_phantom_2d

TOTAL_COUNTS = 2e6


def main(out: Path) -> None:
    grid = pettk.ImageGrid((128, 128), 2.0)
    geometry = pettk.ParallelBeam2D(n_views=120, n_radial=181, radial_spacing_mm=1.6)
    half_width = 110.0
    head = ellipse_phantom_2d(grid, MODIFIED_SHEPP_LOGAN_2D[:1], half_width)  # outer ellipse, value 1
    brain_row = MODIFIED_SHEPP_LOGAN_2D[1:2].copy()
    brain_row[0, 0] = 1.0
    brain = ellipse_phantom_2d(grid, brain_row, half_width)  # inner ellipse, value 1
    skull = head - brain
    activity = ellipse_phantom_2d(grid, MODIFIED_SHEPP_LOGAN_2D, half_width) - skull  # no uptake in bone
    mu = 0.0143 * skull + 0.0096 * brain  # bone ring around soft tissue, 1/mm

    projector = pettk.Projector(grid, geometry)
    tof = pettk.TOFParams(fwhm_ps=400.0, n_bins=23, bin_width_mm=16.0)
    tof_projector = pettk.Projector(grid, geometry, tof=tof)
    rng = np.random.default_rng(0)
    normalisation = rng.uniform(0.85, 1.15, geometry.shape)
    factors = pettk.attenuation_factors(projector, mu)

    def model_for(P, tof_axis):
        trues = pettk.ForwardModel(P, psf=4.0, normalisation=normalisation, attenuation=factors).forward(activity)
        scale = 0.6 * TOTAL_COUNTS / trues.sum()  # 60 % trues, 25 % scatter, 15 % randoms
        scatter = scatter_sinogram(trues * scale, 0.25 / 0.85, tof_axis=tof_axis)
        randoms = randoms_sinogram(geometry, 0.15 * TOTAL_COUNTS, tof=P.tof, dtype=torch.float64).numpy()
        model = pettk.ForwardModel(P, psf=4.0, normalisation=normalisation * scale, attenuation=factors,
                                   additive=scatter + randoms)
        return model

    nontof_model = model_for(projector, False)
    tof_model = model_for(tof_projector, True)
    ybar = nontof_model.forward(activity)
    ybar_tof = tof_model.forward(activity)
    noisy = rng.poisson(ybar)
    noisy_tof = rng.poisson(ybar_tof)
    centre_bin = tof.n_bins // 2 + 2

    fig, axes = plt.subplots(2, 4, figsize=(16, 8), constrained_layout=True)
    panels = [
        (activity.T, "activity (a.u.)", "lower", "hot"),
        (mu.T, "μ-map (1/mm)", "lower", "bone"),
        (factors, "attenuation factors exp(−Pμ)", "upper", "viridis"),
        (ybar, f"noise-free non-TOF ({ybar.sum():.3g} counts)", "upper", "gray_r"),
        (noisy, "noisy non-TOF (Poisson)", "upper", "gray_r"),
        (ybar_tof.sum(-1), "noise-free TOF, summed over bins", "upper", "gray_r"),
        (ybar_tof[..., centre_bin], f"noise-free TOF bin {centre_bin} (+{tof.bin_centres_mm[centre_bin]:.0f} mm)",
         "upper", "gray_r"),
        (noisy_tof[..., centre_bin], f"noisy TOF bin {centre_bin}", "upper", "gray_r"),
    ]
    for ax, (data, title, origin, cmap) in zip(axes.ravel(), panels):
        im = ax.imshow(data, origin=origin, cmap=cmap, aspect="auto")
        ax.set_title(title, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
        fig.colorbar(im, ax=ax, shrink=0.8)
    fig.suptitle("pettk forward model: ybar = mult · P(psf(x)) + randoms + scatter (2D, TOF 400 ps)")
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=90)
    plt.close(fig)
    print(f"wrote {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_suffix(".png"))

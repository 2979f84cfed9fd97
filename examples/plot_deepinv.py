"""DeepInverse on pettk's PET physics: MLEM, BSREM and diffusion-RED BSREM of a simulated brain.
=============================================================================================

Wraps a pettk forward model (2D parallel beam, attenuation, PSF, randoms + scatter) as a
DeepInverse ``LinearPhysics`` (:class:`pettk.interop.deepinv.PETPhysics`) and reconstructs a
held-out procedural brain with DeepInverse's own solvers: ``MLEM``, and ``BSREM`` on pettk's view
subsets without a prior and with a RED prior whose denoiser is a tiny pettk diffusion U-Net
(:class:`pettk.interop.deepinv.DiffusionDenoiser`) trained here on other subjects' slices.
Panels: the true activity, a noisy image of it and its diffusion denoising (the denoiser alone),
MLEM, BSREM and RED-BSREM, with PSNR/SSIM against the truth. (BSREM, not MLEM, carries the
prior: DeepInverse 0.5's MLEM evaluates a prior's gradient at ``x_k * A^T(y / ybar)``, which for
PET is not an image in activity units.)

``PETTK_FAST=1`` trains 200 steps instead of the tiny configuration's 400 (under a minute on 2
CPU cores instead of about a minute and a half).

Needs the optional extra ``deepinv`` (``pip install 'pettk[deepinv]'``, with a torchvision that
matches torch); the gallery test skips this example without it (the line below tells it so).

Run: ``python examples/plot_deepinv.py [output.png]``
"""
# gallery-requires: deepinv

import os
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

from pettk.diffusion import image_model
from pettk.geometry import ImageGrid, ParallelBeam2D
from pettk.interop.deepinv import DiffusionDenoiser, PETPhysics, dinv
from pettk.io import atomic_path
from pettk.metrics import psnr, ssim
from pettk.physics import ForwardModel
from pettk.projector import Projector
from pettk.sim.phantoms import brain_phantom
from pettk.sim.scan import simulate_scan

FAST = os.environ.get("PETTK_FAST", "") not in ("", "0")
SIZE = 32                          # 32 x 32 slices of an mMR-like field of view (8.3 mm voxels)
VOXEL = 128 * 2.0863 / SIZE
STEPS = 200 if FAST else 400       # diffusion training steps (TINY configuration, x0 prediction)
ITERATIONS = 60                    # plain MLEM iterations (late, noisy iterates)
SUBSETS, EPOCHS = 4, 15            # BSREM: view subsets and epochs
COUNTS = 3e4                       # expected prompts of the slice (low dose)
PRIOR_WEIGHT = 0.1                 # prior weight lambda, relative to the mean sensitivity A^T 1
RED_SIGMA = 0.1                    # denoiser noise level, relative to the training maximum


def _slab(z_mm: float) -> ImageGrid:
    grid = ImageGrid((SIZE, SIZE), VOXEL)
    return ImageGrid((SIZE, SIZE, 1), (VOXEL, VOXEL, 2.0), origin_mm=grid.origin_mm + (z_mm,))


def _train_denoiser():
    """A tiny x0-predicting diffusion U-Net on 16 subjects x 5 slices, images scaled to [0, 1]."""
    images = [brain_phantom(_slab(float(z)), seed=s).activity[..., 0]
              for s in range(16) for z in np.linspace(-30.0, 30.0, 5)]
    top = float(max(a.max() for a in images))
    data = [{"x": torch.from_numpy(a / top).float()[None]} for a in images]
    config = image_model.merge_config(image_model.TINY, {"train": {"steps": STEPS, "checkpoint_every": 10**6}})
    torch.manual_seed(0)
    net, schedule, _ = image_model.train_image_diffusion(config, None, dataset=data, progress=False)
    return DiffusionDenoiser(net.eval(), schedule, prediction=config["prediction"], scale=top), top


def main(out: Path) -> None:
    start = time.perf_counter()
    denoiser, top = _train_denoiser()
    trained = time.perf_counter() - start

    phantom = brain_phantom(_slab(5.0), seed=1000, lesions=2)  # a held-out subject
    truth = torch.from_numpy(phantom.activity[..., 0]).float()
    projector = Projector(ImageGrid((SIZE, SIZE), VOXEL), ParallelBeam2D(SIZE, 49, VOXEL))
    scan = simulate_scan(phantom.activity[..., 0], ForwardModel(projector, psf=4.5, mu=phantom.mu[..., 0]), COUNTS,
                         randoms_fraction=0.1, scatter_fraction=0.3, seed=5)
    physics = PETPhysics(scan.model.to(dtype=torch.float32))  # y ~ Poisson(A x + b), b = randoms + scatter
    y = scan.prompts.float()[None, None]

    subsets = physics.split(SUBSETS), physics.split_measurements(y, SUBSETS)  # interleaved views
    lam = PRIOR_WEIGHT * float(physics.A_adjoint(torch.ones_like(y)).mean())  # relative to the sensitivity
    with torch.no_grad():
        mlem = dinv.optim.MLEM(max_iter=ITERATIONS)(y, physics)[0, 0]
        plain = dinv.optim.BSREM(max_iter=EPOCHS, num_subsets=SUBSETS)(subsets[1], subsets[0])[0, 0]
        red = dinv.optim.BSREM(prior=dinv.optim.RED(denoiser), lambda_reg=lam, g_param=RED_SIGMA * top,
                               max_iter=EPOCHS, num_subsets=SUBSETS)(subsets[1], subsets[0])[0, 0]
        noise = torch.randn(truth.shape, generator=torch.Generator().manual_seed(1))
        noisy = truth + 2 * RED_SIGMA * top * noise
        denoised = denoiser(noisy[None, None], 2 * RED_SIGMA * top)[0, 0]
    panels = [("true activity", truth, None),
              (f"truth + noise (sigma = {2 * RED_SIGMA:.1f} max)", noisy, truth),
              ("... denoised by the pettk diffusion net\n(DiffusionDenoiser alone)", denoised, truth),
              (f"deepinv MLEM, {ITERATIONS} it.", mlem, truth),
              (f"deepinv BSREM, no prior\n{EPOCHS} epochs x {SUBSETS} subsets", plain, truth),
              (f"deepinv BSREM + RED(pettk diffusion)\n{EPOCHS} epochs x {SUBSETS} subsets", red, truth)]
    fig, axes = plt.subplots(1, len(panels), figsize=(20, 4.4), constrained_layout=True)
    for ax, (title, image, reference) in zip(axes, panels):
        ax.imshow(image.numpy().T, origin="lower", cmap="hot", vmin=0, vmax=float(truth.max()))
        if reference is not None:
            title += f"\nPSNR {psnr(image, reference):.2f} dB, SSIM {ssim(image, reference):.3f}"
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"DeepInverse solvers on pettk's PET physics ({COUNTS:.0e} counts); diffusion denoiser: "
                 f"{STEPS} training steps, data + training {trained:.0f} s", fontsize=11)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=80)
    plt.close(fig)
    print(f"PSNR: MLEM {psnr(mlem, truth):.2f} dB, BSREM {psnr(plain, truth):.2f} dB, BSREM-RED "
          f"{psnr(red, truth):.2f} dB; "
          f"{time.perf_counter() - start:.1f} s -> {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("plot_deepinv.png"))

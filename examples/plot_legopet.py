"""LegoPET (Sun & Mawlawi, ISBI 2025): sinogram, reference, PnPNet, cDPM and LegoPET with error maps.
==================================================================================================

The layout of the paper's Figure 2 on one held-out slice: the input sinogram, the reference image,
the PnPNet regression, the plain sinogram-conditioned cDPM and LegoPET (the cDPM guided by the
frozen PnPNet's feature maps), with their absolute error maps and PSNR/SSIM against the
reference underneath; FBP and MLEM of the same sinogram are shown for scale.

It builds a small simulated data set (procedural brains, 32² images, 2D parallel beam) in a
temporary folder (3e3 counts per slice), or uses the one in ``$PETTK_LEGOPET_DATA``, and trains
``LegoPETConfig.TINY``: PnPNet, then LegoPET's cDPM and the plain cDPM (a few minutes on 2 CPU
cores; ``PETTK_FAST=1`` trains far less, in under a minute, and the images are rough). Trained
models can be given instead as ``$PETTK_LEGOPET_MODEL`` and ``$PETTK_CDPM_MODEL`` (files written by
``LegoPET.save``; the data set must then match them).

Run: ``python examples/plot_legopet.py [output.png]``
"""

import os
import sys
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

from pettk.io import atomic_path
from pettk.metrics import psnr, ssim
from pettk.priors import dataset_forward_model, reconstruct
from pettk.priors.legopet import LegoPET, LegoPETConfig, train_legopet
from pettk.sim.datasets import DatasetConfig, SliceDataset, build_dataset

FAST = os.environ.get("PETTK_FAST") == "1"
DATA = DatasetConfig(n_subjects=12 if FAST else 48, slices_per_subject=6, image_size=32, geometry="parallel",
                     drfs=(4.0,), counts_per_slice=3e3, reference_counts_factor=1.0, reference_iterations=1,
                     reference_subsets=2, split=(None, 1, 2), seed=0)
CONFIG = LegoPETConfig.TINY.replace(pnpnet_steps=40, cdpm_steps=60) if FAST else LegoPETConfig.TINY


def _models(root: Path) -> tuple[LegoPET, LegoPET]:
    lego_path, cdpm_path = os.environ.get("PETTK_LEGOPET_MODEL"), os.environ.get("PETTK_CDPM_MODEL")
    lego = LegoPET.load(lego_path) if lego_path else train_legopet(CONFIG, root)
    cdpm = LegoPET.load(cdpm_path) if cdpm_path else train_legopet(lego.config.replace(features=False), root)
    return lego, cdpm


def _figure(lego: LegoPET, cdpm: LegoPET, root: Path, out: Path) -> None:
    ds = SliceDataset(root, "test", 4.0, "none")
    item = max((ds[i] for i in range(len(ds))), key=lambda it: float(it["truth"].sum()))  # the largest slice
    y = item["full"] if lego.config.drf is None else item["low"] / lego.config.drf
    ref = item[lego.config.target].numpy()
    model = dataset_forward_model(ds.manifest, item["mult"], item["additive"])
    images = {
        "FBP": reconstruct(model, y, "fbp").clamp_min(0).numpy(),
        "MLEM-10": reconstruct(model, y, "mlem", n_iter=10).numpy(),
        "PnPNet": lego.pnpnet_reconstruct(model, y).numpy(),
        "cDPM": cdpm.reconstruct(model, y).numpy(),
        "LegoPET": lego.reconstruct(model, y).numpy(),
    }
    columns = ["sinogram", "reference"] + list(images)
    fig, axes = plt.subplots(2, len(columns), figsize=(2.6 * len(columns), 5.8), constrained_layout=True)
    vmax = float(ref.max())
    axes[0, 0].imshow(y.numpy(), cmap="gray_r", aspect="auto")
    axes[0, 0].set_title(f"sinogram\n{y.shape[0]} views × {y.shape[1]} bins", fontsize=9)
    axes[0, 1].imshow(ref.T, origin="lower", cmap="gray_r", vmin=0, vmax=vmax)
    axes[0, 1].set_title(f"reference\n({lego.config.target})", fontsize=9)
    for col, (name, x) in enumerate(images.items(), start=2):
        axes[0, col].imshow(x.T, origin="lower", cmap="gray_r", vmin=0, vmax=vmax)
        axes[0, col].set_title(f"{name}\nPSNR {psnr(x, ref):.2f} dB, SSIM {ssim(x, ref):.3f}", fontsize=9)
        axes[1, col].imshow(abs(x - ref).T, origin="lower", cmap="magma", vmin=0, vmax=0.5 * vmax)
        axes[1, col].set_title(f"|{name} − reference|", fontsize=9)
    cfg = lego.config
    about = (f"canvas {cfg.canvas[0]}×{cfg.canvas[1]}\n{lego.trainable_parameters():,} trainable\nparameters "
             f"(cDPM = LegoPET)\nT = {cfg.T}, {cfg.sampler.upper()} {cfg.sampling_steps} steps\n"
             f"λ = {cfg.guidance_scale:g}, p_dp = {cfg.p_dp:g}")
    axes[1, 0].text(0.5, 0.5, about, ha="center", va="center", fontsize=8, transform=axes[1, 0].transAxes)
    axes[1, 1].text(0.5, 0.5, "error maps:\n0 … ½ max(reference)", ha="center", va="center", fontsize=8,
                    transform=axes[1, 1].transAxes)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes[1, :2]:
        ax.axis("off")
    if os.environ.get("PETTK_LEGOPET_MODEL"):
        mode = "given models"
    else:
        mode = "PETTK_FAST: barely trained" if FAST else "LegoPETConfig.TINY"
    fig.suptitle(f"LegoPET vs its ablations on a held-out slice ({item['subject']}, slice {item['slice']}; {mode})")
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=90)
    plt.close(fig)
    print(f"wrote {out}")


def main(out: Path) -> None:
    torch.manual_seed(0)
    given = os.environ.get("PETTK_LEGOPET_DATA")
    if given:
        _figure(*_models(Path(given)), Path(given), out)
        return
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        build_dataset(root, DATA, progress=False)
        _figure(*_models(root), root, out)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_suffix(".png"))

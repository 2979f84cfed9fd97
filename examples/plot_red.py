"""RED (Ai et al., MedIA 2025) at DRF 20: low-dose, RED-restored and full-dose sinograms + OSEM.
=============================================================================================

Builds a small simulated data set (procedural brains, 2D parallel beam) in a temporary folder,
or reuses the one in ``$PETTK_RED_DATA`` (it must hold DRF 20 and a test split), trains a
reduced tiny RED (REN then DCN, a few hundred iterations; about a minute on 2 CPU cores), or
loads the model in ``$PETTK_RED_MODEL`` (written by ``RED.save``), and shows for one held-out
slice: ``DRF·y_low``, the RED restoration and the full-dose sinogram (top, with their NRMSE
against the full-dose sinogram), and their OSEM reconstructions (bottom, with PSNR/SSIM against
the true activity image).

Run: ``python examples/plot_red.py [output.png]``; ``PETTK_FAST=1`` trains a seventh of the steps
(the gallery test's mode; the restoration is rougher).
"""

import os
import sys
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

from pettk.diffusion.nets import RED_TINY
from pettk.io import atomic_path
from pettk.metrics import nrmse, psnr, ssim
from pettk.priors import RED, REDConfig, dataset_forward_model, reconstruct, train_red
from pettk.sim.datasets import DatasetConfig, SliceDataset, build_dataset

DRF = 20.0
FAST = os.environ.get("PETTK_FAST", "") not in ("", "0")
DATA = DatasetConfig(n_subjects=8, slices_per_subject=3, image_size=32, geometry="parallel", drfs=(DRF,),
                     counts_per_slice=5e4, reference_counts_factor=1.0, reference_iterations=1, reference_subsets=2,
                     split=(None, 1, 2), seed=0)
NET = RED_TINY.replace(channel_mults=(1, 2), attention_heads=2, attention_head_channels=8, image_size=(32, 48))
CONFIG = REDConfig(net=NET, T=50, sampling_steps=10, ren_steps=60 if FAST else 400, dcn_steps=30 if FAST else 200,
                   drf=DRF, seed=0)
OSEM = dict(n_iter=4, n_subsets=8)


def _model(root: Path) -> RED:
    path = os.environ.get("PETTK_RED_MODEL")
    return RED.load(path) if path else train_red(CONFIG, root)


def _figure(red: RED, root: Path, out: Path) -> None:
    ds = SliceDataset(root, "test", DRF, "none")
    item = ds[0]
    y_low = item["low"] / DRF  # raw low-dose counts
    y_hat = red.restore(y_low, DRF)
    model = dataset_forward_model(ds.manifest, item["mult"], item["additive"])
    truth = item["truth"].numpy()
    rows = [("low dose (DRF·y_low)", item["low"]), ("RED restored", y_hat), ("full dose", item["full"])]
    fig, axes = plt.subplots(2, 3, figsize=(12, 8), constrained_layout=True)
    vmax = float(item["full"].max())
    for col, (name, sino) in enumerate(rows):
        axes[0, col].imshow(sino.numpy(), cmap="gray_r", aspect="auto", vmin=0, vmax=vmax)
        axes[0, col].set_title(f"{name}\nNRMSE vs full dose {nrmse(sino, item['full']):.3f}", fontsize=10)
        x = reconstruct(model, sino, "osem", **OSEM).numpy()
        axes[1, col].imshow(x.T, origin="lower", cmap="hot", vmin=0, vmax=truth.max())
        axes[1, col].set_title(f"OSEM {OSEM['n_iter']}×{OSEM['n_subsets']} of {name}\n"
                               f"PSNR {psnr(x, truth):.2f} dB, SSIM {ssim(x, truth):.3f}", fontsize=10)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"RED at DRF {DRF:g} on a held-out slice ({item['subject']}, slice {item['slice']})")
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=80)
    plt.close(fig)
    print(f"wrote {out}")


def main(out: Path) -> None:
    torch.manual_seed(0)
    given = os.environ.get("PETTK_RED_DATA")
    if given:
        _figure(_model(Path(given)), Path(given), out)
        return
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        build_dataset(root, DATA, progress=False)
        _figure(_model(root), root, out)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_suffix(".png"))

"""DREAM (Huang et al., arXiv 2503.08339) at DRF 20: masked block, restored sinogram, MLEM images.
===============================================================================================

Builds a small simulated data set (procedural brains, 2D parallel beam) in a temporary folder,
or reuses the one in ``$PETTK_DREAM_DATA`` (it must hold DRF 20 and a test split), trains a
reduced tiny DREAM (stage 1, then stage 2 phases A and B; a few minutes on 2 CPU cores), or
loads the model in ``$PETTK_DREAM_MODEL`` (written by ``DREAM.save``), and shows for one
held-out slice:

- top: the low-dose block ``[m₁⊙s, m₂⊙s, s]`` the networks see (``s = DRF·y_low / max``, padded
  to the network plane, 8-px mask cells);
- middle: ``DRF·y_low``, the DREAM restoration (mask-aware average) and the full-dose sinogram,
  with their NRMSE against the full-dose sinogram;
- bottom: their MLEM reconstructions with the slice's physics model (PSNR/SSIM against the true
  activity image).

``PETTK_FAST=1`` shrinks the data set, the training and the MLEM iterations (< 1 minute).

Run: ``python examples/plot_dream.py [output.png]``
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
from pettk.metrics import nrmse, psnr, ssim
from pettk.priors import dataset_forward_model, reconstruct
from pettk.priors.dream import (
    DREAM,
    DREAMConfig,
    block_masks,
    make_block,
    normalise_dream,
    pad_plane,
    train_dream,
)
from pettk.sim.datasets import DatasetConfig, SliceDataset, build_dataset

DRF = 20.0
FAST = os.environ.get("PETTK_FAST", "") not in ("", "0")
DATA = DatasetConfig(n_subjects=6 if FAST else 8, slices_per_subject=2 if FAST else 3, image_size=32,
                     geometry="parallel", drfs=(DRF,), counts_per_slice=5e4, reference_counts_factor=1.0,
                     reference_iterations=1, reference_subsets=2, split=(None, 1, 1 if FAST else 2), seed=0)
# 32 views × 49 bins, padded to a 32×56 plane; curriculum crops 32 → 56 (the whole plane).
CONFIG = DREAMConfig.TINY.replace(pad_mode="multiple", crop_sizes=(32, 56), batch_sizes=(4, 4),
                                  s1_steps=100 if FAST else 400, s2a_steps=25 if FAST else 100,
                                  s2b_steps=50 if FAST else 200, lr=2e-3, drf=DRF, seed=0)
MLEM_ITERATIONS = 20 if FAST else 50


def _model(root: Path) -> DREAM:
    path = os.environ.get("PETTK_DREAM_MODEL")
    return DREAM.load(path) if path else train_dream(CONFIG, root)


def _figure(dream: DREAM, root: Path, out: Path) -> None:
    ds = SliceDataset(root, "test", DRF, "none")
    item = ds[0]
    y_low = item["low"] / DRF  # raw low-dose counts
    y_hat = dream.restore(y_low, DRF, seed=0)
    model = dataset_forward_model(ds.manifest, item["mult"], item["additive"])
    truth = item["truth"].numpy()

    # the block the networks saw (restore(seed=0) draws these masks first)
    cfg = dream.config
    s, _ = normalise_dream(item["low"][None])
    s = pad_plane(s, dream.plane)
    masks = block_masks(1, cfg.n_channels, dream.plane, cfg.cell_size, cfg.mask_fraction,
                        generator=torch.Generator().manual_seed(0))
    block = make_block(s, masks)[0]

    fig, axes = plt.subplots(3, 3, figsize=(12, 11), constrained_layout=True)
    for col in range(3):
        ax = axes[0, col]
        ax.imshow(block[col].numpy(), cmap="gray_r", aspect="auto", vmin=0, vmax=1)
        hidden = 1 - float(masks[0, col].mean())
        name = f"m{col + 1}⊙s" if col < cfg.n_channels - 1 else "s (unmasked)"
        ax.set_title(f"low-dose block, channel {col + 1}: {name}\n{hidden:.1%} of the plane hidden", fontsize=10)
    rows = [("low dose (DRF·y_low)", item["low"]), ("DREAM restored", y_hat), ("full dose", item["full"])]
    vmax = float(item["full"].max())
    for col, (name, sino) in enumerate(rows):
        axes[1, col].imshow(sino.numpy(), cmap="gray_r", aspect="auto", vmin=0, vmax=vmax)
        axes[1, col].set_title(f"{name}\nNRMSE vs full dose {nrmse(sino, item['full']):.3f}", fontsize=10)
        x = reconstruct(model, sino, "mlem", n_iter=MLEM_ITERATIONS).numpy()
        axes[2, col].imshow(x.T, origin="lower", cmap="hot", vmin=0, vmax=truth.max())
        axes[2, col].set_title(f"MLEM {MLEM_ITERATIONS} it. of {name}\n"
                               f"PSNR {psnr(x, truth):.2f} dB, SSIM {ssim(x, truth):.3f}", fontsize=10)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"DREAM at DRF {DRF:g} on a held-out slice ({item['subject']}, slice {item['slice']})")
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=80)
    plt.close(fig)
    print(f"wrote {out}")


def main(out: Path) -> None:
    torch.manual_seed(0)
    given = os.environ.get("PETTK_DREAM_DATA")
    if given:
        _figure(_model(Path(given)), Path(given), out)
        return
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        build_dataset(root, DATA, progress=False)
        _figure(_model(root), root, out)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_suffix(".png"))

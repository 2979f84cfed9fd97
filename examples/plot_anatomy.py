"""Anatomy generator v2: a gallery of procedural subjects (PET, µ-map and T1-like MR in 3D).
=========================================================================================

Four subjects of :func:`pettk.sim.brain_phantom_v2` on a 128 × 128 × 90 grid of 2 mm voxels
(supersampled 3 × 3 × 3): an FDG subject with six lesions, an amyloid-positive and an
amyloid-negative subject, and an FDG subject of the out-of-family ``"shifted"`` test family
(tighter, deeper folds, thicker cortex, lower grey/white contrast, other MR statistics). For
each, three rows (activity, attenuation, MR) and five columns: axial
slices at the centrum semiovale, the basal ganglia and the cerebellum, then a coronal and a
sagittal cut, all through the subject's own head frame (each subject has its own size, position
and pose). Cyan outlines: PET lesions (those drawn on the MR row are visible in the MR too);
yellow outlines on the MR: MR-only structures (venous sinuses, white-matter spots) that the PET
does not see. The title gives the generation time of each volume.

``PETTK_FAST=1`` renders 64 × 64 × 45 voxels of 4 mm, supersampled 2 × 2 × 2 (a few seconds).

Run: ``python examples/plot_anatomy.py [output.png]``
"""

import os
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from pettk.geometry import ImageGrid
from pettk.io import atomic_path
from pettk.sim import brain_phantom_v2

FAST = os.environ.get("PETTK_FAST", "") not in ("", "0")
GRID = ImageGrid((64, 64, 45), 4.0) if FAST else ImageGrid((128, 128, 90), 2.0)
SUPERSAMPLE = 2 if FAST else 3
SUBJECTS = ((0, "fdg", 6, "standard"), (1, "amyloid-positive", 2, "standard"), (2, "amyloid-negative", 0, "standard"),
            (3, "fdg", 2, "shifted"))
#: Head-frame points (mm; origin at the anterior commissure) the cuts go through.
AXIAL_LEVELS = (("centrum semiovale", 40.0), ("basal ganglia", 4.0), ("cerebellum", -32.0))
CORONAL_Y, SAGITTAL_X = -18.0, 10.0


def _index(ph, head_point):
    """Voxel index (i, j, k) nearest to a head-frame point of the subject."""
    world = np.asarray(ph.subject["affine"]) @ np.append(head_point, 1.0)
    idx = [(world[k] - GRID.origin_mm[k]) / GRID.voxel_size_mm[k] for k in range(3)]
    return [int(np.clip(round(v), 0, n - 1)) for v, n in zip(idx, GRID.shape)]


def _cuts(ph, volume):
    """The five 2D cuts of a volume, each oriented for ``imshow(..., origin="lower")``."""
    out = []
    for _, z in AXIAL_LEVELS:
        k = _index(ph, (0.0, -18.0, z))[2]
        out.append(volume[:, :, k].T)
    j = _index(ph, (0.0, CORONAL_Y, 10.0))[1]
    i = _index(ph, (SAGITTAL_X, -18.0, 10.0))[0]
    out += [volume[:, j, :].T, volume[i, :, :].T]
    return out


def main(out: Path) -> None:
    rows, names, times = [], [], []
    for seed, tracer, lesions, family in SUBJECTS:
        t0 = time.perf_counter()
        ph = brain_phantom_v2(GRID, seed=seed, tracer=tracer, lesions=lesions, supersample=SUPERSAMPLE, family=family)
        times.append(time.perf_counter() - t0)
        visible = np.zeros(GRID.shape, dtype=bool)
        world = np.stack(np.meshgrid(*[GRID.voxel_centres(k) for k in range(3)], indexing="ij"), axis=-1)
        for les in ph.lesions:
            if les.mr_visible:
                visible |= np.linalg.norm(world - np.asarray(les.centre_mm), axis=-1) <= les.radius_mm
        s = ph.subject
        names.append(f"seed {seed}, {tracer}" + (f" ({family} family)" if family != "standard" else "") + "\n"
                     f"size ×{s['scale']:.2f}, yaw {s['yaw_deg']:+.0f}°\n"
                     f"tilts {s['pitch_deg']:+.0f}°, {s['roll_deg']:+.0f}°\nventricles ×{s['ventricle_scale']:.2f}")
        mr_lesions, mr_only = _cuts(ph, ph.lesion_mask & visible), _cuts(ph, ph.mr_only_mask)
        rows.append((ph, [("activity", ph.activity, "hot", _cuts(ph, ph.lesion_mask), None),
                          ("µ (1/mm)", ph.mu, "bone", None, None),
                          ("T1-like MR", ph.mr, "gray", mr_lesions, mr_only)]))

    n_cols = len(AXIAL_LEVELS) + 2
    fig, axes = plt.subplots(3 * len(rows), n_cols, figsize=(3.0 * n_cols, 2.9 * 3 * len(rows)),
                             constrained_layout=True)
    titles = [f"axial, {name}" for name, _ in AXIAL_LEVELS] + ["coronal", "sagittal"]
    for r, ((ph, panels), name) in enumerate(zip(rows, names)):
        for m, (label, volume, cmap, outline, mr_only) in enumerate(panels):
            vmax = np.percentile(volume, 99.9)
            for c, cut in enumerate(_cuts(ph, volume)):
                ax = axes[3 * r + m, c]
                ax.imshow(cut, origin="lower", cmap=cmap, vmin=0.0, vmax=vmax, interpolation="nearest")
                if outline is not None and outline[c].any():
                    ax.contour(outline[c], levels=[0.5], colors="cyan", linewidths=0.8)
                if mr_only is not None and mr_only[c].any():
                    ax.contour(mr_only[c], levels=[0.5], colors="yellow", linewidths=0.6)
                ax.set_xticks([])
                ax.set_yticks([])
                if r == 0 and m == 0:
                    ax.set_title(titles[c], fontsize=10, pad=16)
            axes[3 * r + m, 0].set_ylabel(f"{name}\n\n{label}" if m == 1 else label, fontsize=9)
    shape = " × ".join(str(n) for n in GRID.shape)
    fig.suptitle(f"pettk anatomy generator v2: {shape} voxels of {GRID.voxel_size_mm[0]:g} mm, supersampled "
                 f"{SUPERSAMPLE}³, {', '.join(f'{t:.1f}' for t in times)} s per subject", fontsize=12)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=60)
    plt.close(fig)
    print(f"wrote {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_suffix(".png"))

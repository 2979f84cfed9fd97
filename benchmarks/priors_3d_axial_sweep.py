"""The measurement behind PET-DDS's axial coupling (``PETDDSConfig.axial_beta``, ``docs/priors_3d.md``).

The case of ``tests/test_priors_3d_image.py``: the tiny image model trained there (~25 s), five
held-out ellipsoid heads (seeds 20-24) of the ``tiny`` 3D scanner (16 planes with obliques,
32 x 32 x 8) at DRF 10. For each: 3D OSEM (1-4 iterations x 4 subsets, unfiltered), PET-DDS with
``axial_beta`` in {0, 0.03, 0.1, 0.3, 1} (and 0, 0.3, 1 with 4 instead of 2 EM epochs per
step), PET-DDS followed by an axial Gaussian filter (sigma 0.5 and 1 slice: the post-hoc
alternative to coupling inside the iteration; also OSEM 2 x 4 so filtered), and DDIP with the
same network. Prints a markdown table of the means and per-volume PSNR (dB, peak of
the truth) and axial gradient error (over the object). Single thread::

    NUMBA_NUM_THREADS=1 OMP_NUM_THREADS=1 python benchmarks/priors_3d_axial_sweep.py
"""

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from scipy.ndimage import gaussian_filter1d  # noqa: E402
from test_priors_3d_image import ddip_with, scan, scores, train_image_model  # noqa: E402

from pettk.priors import PETDDS, PETDDSConfig  # noqa: E402
from pettk.recon import osem  # noqa: E402

SEEDS = (20, 21, 22, 23, 24)
AXIAL_BETAS = (0.0, 0.03, 0.1, 0.3, 1.0)


def main() -> None:
    start = time.perf_counter()
    net, schedule, config, slices = train_image_model()
    print(f"<!-- image model: {time.perf_counter() - start:.0f} s -->", flush=True)
    prior = PETDDS(net, schedule, config, PETDDSConfig(), dataset=slices)
    ddip = ddip_with(prior)
    rows: dict[str, list] = {}
    seconds: dict[str, list] = {}

    def add(name, image, truth, t0=None):
        rows.setdefault(name, []).append(scores(image, truth))
        if t0 is not None:
            seconds.setdefault(name, []).append(time.perf_counter() - t0)

    for seed in SEEDS:
        truth, y, model = scan(seed)
        for it in (1, 2, 3, 4):
            t0 = time.perf_counter()
            x = osem(model, y, it, 4).numpy()
            add(f"3D OSEM {it} x 4", x, truth, t0)
            if it == 2:
                add("3D OSEM 2 x 4 + axial filter sigma 1 slice", gaussian_filter1d(x, 1.0, axis=2, mode="nearest"),
                    truth)
        for beta in AXIAL_BETAS:
            t0 = time.perf_counter()
            x = prior.replace(axial_beta=beta).reconstruct(model, y).numpy()
            add(f"PET-DDS axial_beta {beta:g}", x, truth, t0)
            if beta in (0.0, 0.3):
                for sigma in (0.5, 1.0):
                    add(f"PET-DDS axial_beta {beta:g} + axial filter sigma {sigma:g} slice",
                        gaussian_filter1d(x, sigma, axis=2, mode="nearest"), truth)
        for beta in (0.0, 0.3, 1.0):          # more EM per step: the surrogate's proximal term slows EM
            t0 = time.perf_counter()
            x = prior.replace(axial_beta=beta, em_iterations=4).reconstruct(model, y).numpy()
            add(f"PET-DDS axial_beta {beta:g}, 4 EM epochs per step", x, truth, t0)
        t0 = time.perf_counter()
        add("DDIP (same network)", ddip.reconstruct(model, y).numpy(), truth, t0)
        print(f"<!-- seed {seed} done -->", flush=True)
    print("| method | PSNR (dB) | axial grad. error | PSNR per volume | s / volume |")
    print("|---|---|---|---|---|")
    for name, values in rows.items():
        a = np.array(values)
        per = ", ".join(f"{v:.2f}" for v in a[:, 0])
        sec = f"{np.mean(seconds[name]):.2f}" if name in seconds else ""
        print(f"| {name} | {a[:, 0].mean():.2f} | {a[:, 1].mean():.2f} | {per} | {sec} |")


if __name__ == "__main__":
    main()

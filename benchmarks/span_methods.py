"""The measurement behind the span projector's default (``docs/corrections.md``).

Compares, on an mMR-like ring (448 crystals, radial trim 160: 224 views × 129 bins) with
``--rings`` rings at 4.0625 mm and a 128 × 128 × (2 rings - 1) grid, the span-1 projector with
the two :class:`pettk.corrections.SpanProjector` methods at ``--span``:

* wall time of one forward + adjoint (after a warm-up call),
* OSEM (``--epochs`` × ``--subsets``) of the same noiseless data: span-1 counts of a cylinder with
  a hot sphere, reconstructed in span 1 and, compressed, with each method; printed: the relative
  L2 difference of each to the span-1 image inside the cylinder, and the hot-sphere mean.

Single thread::

    NUMBA_NUM_THREADS=1 python benchmarks/span_methods.py --rings 16 --span 11
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import pettk
from pettk.corrections import SpanProjector, compress
from pettk.recon import osem


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rings", type=int, default=16)
    ap.add_argument("--span", type=int, default=11)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--subsets", type=int, default=7)
    args = ap.parse_args()

    pitch = 4.0625
    scanner = pettk.RegularPolygonScanner(330.0, 56, 8, 4.0, (np.arange(args.rings) - (args.rings - 1) / 2) * pitch)
    layout = pettk.SinogramLayout(scanner, radial_trim=160)
    grid = pettk.ImageGrid((128, 128, 2 * args.rings - 1), (2.0863, 2.0863, pitch / 2))
    span = compress(layout, args.span)
    x, y, z = grid.coordinates()
    body = (x ** 2 + y ** 2 < 100.0 ** 2) & (np.abs(z) < pitch * (args.rings / 2 - 1))
    sphere = (x - 40.0) ** 2 + y ** 2 + z ** 2 < 15.0 ** 2
    truth = (body * (1.0 + 3.0 * sphere)).astype(np.float32)
    print(f"{args.rings} rings, span {args.span}: {layout.n_planes} span-1 planes -> {span.n_planes} planes, "
          f"{span.n_segments} segments")

    projectors = {"span 1": pettk.Projector(grid, layout),
                  "exact (C P)": SpanProjector(grid, span, method="exact"),
                  "mean-lor": SpanProjector(grid, span, method="mean-lor")}
    data = projectors["span 1"].forward(truth) * 20.0
    images = {}
    for name, proj in projectors.items():
        proj.adjoint(proj.forward(truth))  # warm-up (compilation)
        t0 = time.perf_counter()
        proj.adjoint(proj.forward(truth))
        seconds = time.perf_counter() - t0
        y_name = data if name == "span 1" else span.compress(data)
        t0 = time.perf_counter()
        images[name] = osem(pettk.ForwardModel(proj), y_name, args.epochs, args.subsets)
        recon_s = time.perf_counter() - t0
        print(f"{name:12s} forward+adjoint {seconds:7.2f} s   OSEM {recon_s:7.1f} s")
    inside = body & (x ** 2 + y ** 2 < 95.0 ** 2)
    ref = images["span 1"]
    for name, img in images.items():
        diff = np.linalg.norm((img - ref)[inside]) / np.linalg.norm(ref[inside])
        print(f"{name:12s} rel. L2 difference to span 1: {diff:.4f}   hot sphere mean / 20: "
              f"{img[sphere].mean() / 20.0:.3f} (truth 4)")


if __name__ == "__main__":
    main()

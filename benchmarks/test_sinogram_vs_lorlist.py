"""The sinogram path against the generic LOR-list path on the same rays (pettk's CPU backend).

``bench-36ring``, one of ``PETTK_BENCH_SUBSETS`` view subsets (default 34: 4.30 M LORs,
215×215×71 image), float32: ``Projector(grid, layout, views=...)`` (the factorised kernels of
:mod:`pettk.backends._joseph_sino`) against ``Projector(grid, LORList(*layout.lor_endpoints(views)))``
(the generic per-LOR kernels), forward and back, alternated in one process ``--repeats`` times after
a warm-up call; reports median times, the median per-pair time ratio (below 1: the sinogram path is
faster) and the sinogram path's LOR-samples/s (:func:`pettk.backends._joseph_cpu.count_samples`).

Run ``NUMBA_NUM_THREADS=2 python benchmarks/test_sinogram_vs_lorlist.py [--repeats 3] [--subsets 34]``
or ``pytest benchmarks/test_sinogram_vs_lorlist.py``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

import pettk
from pettk.backends._joseph_cpu import count_samples


def compare(subsets: int, repeats: int) -> list[dict]:
    p = pettk.preset("bench-36ring")
    views = slice(0, None, subsets)
    sino = pettk.Projector(p.grid, p.layout, views=views, backend="cpu")
    start, end = p.layout.lor_endpoints(views)
    lors = pettk.Projector(p.grid, pettk.LORList(start.reshape(-1, 3), end.reshape(-1, 3)), backend="cpu")
    x = np.random.default_rng(0).random(p.grid.shape).astype(np.float32)
    y_sino, y_lors = sino.forward(x), lors.forward(x)
    difference = float(np.abs(y_sino.reshape(-1) - y_lors).max() / np.abs(y_lors).max())
    samples = count_samples(p.grid, sino._tables)
    rows = []
    for mode in ("forward", "back"):
        calls = ((lambda: sino.forward(x)), (lambda: lors.forward(x))) if mode == "forward" else \
            ((lambda: sino.adjoint(y_sino)), (lambda: lors.adjoint(y_lors)))
        for fn in calls:
            fn()
        times = ([], [])
        for _ in range(repeats):
            for fn, t in zip(calls, times):
                t0 = time.perf_counter()
                fn()
                t.append(time.perf_counter() - t0)
        t_sino, t_lors = statistics.median(times[0]), statistics.median(times[1])
        rows.append({"mode": mode, "n_lors": sino.n_lors, "sinogram_s": t_sino, "lorlist_s": t_lors,
                     "ratio": statistics.median(a / b for a, b in zip(*times)),
                     "samples_per_s": samples / t_sino, "max_rel_forward_difference": difference})
    return rows


def test_sinogram_vs_lorlist(record):
    subsets = int(os.environ.get("PETTK_BENCH_SUBSETS", "34"))
    for row in compare(subsets, int(os.environ.get("PETTK_BENCH_REPEATS", "3"))):
        assert row["max_rel_forward_difference"] < 1e-5  # the same operator
        record(f"bench-36ring 1/{subsets} sinogram vs LORList {row['mode']}", seconds=row["sinogram_s"],
               lorlist_seconds=row["lorlist_s"], sinogram_over_lorlist=row["ratio"],
               lor_samples_per_s=row["samples_per_s"])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--subsets", type=int, default=34)
    args = parser.parse_args()
    for r in compare(args.subsets, args.repeats):
        print(f"{r['mode']}: sinogram {r['sinogram_s']:.3g} s, LORList {r['lorlist_s']:.3g} s, sinogram / LORList "
              f"{r['ratio']:.2f}, {r['samples_per_s'] / 1e6:.0f} M samples/s ({r['n_lors']} LORs, max relative "
              f"forward difference {r['max_rel_forward_difference']:.1e})")

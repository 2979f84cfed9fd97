"""Side by side: pettk's CPU projector against parallelproj 2.0's OpenMP kernels, in one process.

Both run on the same LORs (parallelproj gets pettk's LOR endpoints in float32, exactly as the
``parallelproj`` backend hands them over), the same float32 image, and the same number of threads
(numba's and OpenMP's both set to ``PETTK_BENCH_THREADS``, default: the cores this process may
use), and compute the same operator: parallelproj's kernels are called directly, outputs
allocated per call as its Python users do, on the image padded once (outside the timing) by the
zero layer that makes parallelproj 2.x's operator pettk's (see
:mod:`pettk.backends.parallelproj_backend`); pettk runs through ``Projector`` (numpy in, numpy
out), the path users call. Each case alternates the two, ``--repeats`` times after one warm-up call each, and
reports the median times and the median of the per-pair time ratios pettk / parallelproj (below 1:
pettk is faster), which keeps the ratio fair when other jobs share the cores.

Cases
-----
* ``bench-36ring``, one of 34 view subsets (4.30 M LORs, 215×215×71 image), non-TOF forward and
  back projection, through pettk's ``SinogramLayout`` and through a ``LORList`` of the same rays.
* ``mmr-like`` (128×128×127 image), one of 112 view subsets (2 views × 129 radial bins × 4096
  planes, 1.06 M LORs), TOF sinogram: 400 ps FWHM, 17 mm bins, enough bins to cover every LOR's
  path through the image (19), 3-sigma truncation (parallelproj's ``num_sigmas`` converted so
  that both weigh the same bins, :func:`pettk.backends.parallelproj_backend.tof_arguments`).
* ``mmr-like`` TOF list mode: 1 M events (every 4th LOR of one of 28 view subsets) with TOF bins
  drawn uniformly from the bins whose centre lies within 150 mm of the LOR midpoint.

Run ``python benchmarks/test_parallelproj_side_by_side.py [--repeats 5] [--out FILE.md]``
(prints a markdown table), or ``pytest benchmarks/test_parallelproj_side_by_side.py``, which
skips when parallelproj is not importable. parallelproj is not on PyPI: ``docs/parallelproj.md``
says how to build it.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import platform
import statistics
import time

_THREADS = int(os.environ.get("PETTK_BENCH_THREADS", len(os.sched_getaffinity(0))))
os.environ.setdefault("OMP_NUM_THREADS", str(_THREADS))  # before parallelproj's OpenMP runtime starts

import numba  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import pettk  # noqa: E402
from pettk.backends import parallelproj_backend as ppb  # noqa: E402
from pettk.backends._joseph_cpu import max_sample_offset_mm  # noqa: E402

CASE_NAMES = ("bench-36ring sinogram", "bench-36ring LORList", "mmr-like TOF sinogram", "mmr-like TOF list mode")


def set_threads(n: int) -> int:
    """Give numba and every loaded OpenMP runtime ``n`` threads; returns OpenMP's count."""
    numba.set_num_threads(n)
    try:
        gomp = ctypes.CDLL("libgomp.so.1")  # the runtime libparallelproj links (already loaded)
    except OSError:
        return -1
    gomp.omp_set_num_threads(n)
    return int(gomp.omp_get_max_threads())


def _interleaved(fn_pp, fn_pettk, repeats: int) -> dict:
    fn_pp()
    fn_pettk()
    t_pp, t_pettk = [], []
    for _ in range(repeats):
        for fn, times in ((fn_pp, t_pp), (fn_pettk, t_pettk)):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    return {"parallelproj_s": statistics.median(t_pp), "pettk_s": statistics.median(t_pettk),
            "ratio": statistics.median(b / a for a, b in zip(t_pp, t_pettk))}


class _Raw:
    """parallelproj 2.x's kernels called directly on one grid and one LOR set."""

    def __init__(self, grid, tables, tof=None):
        k = ppb._kernels()
        if isinstance(k, str) or not k.has_tof:
            raise RuntimeError(f"needs parallelproj 2.x ({ppb.describe()})")
        self.m = k.module
        self.shape, self.origin, self.voxsize, self.interior = ppb.padded_image_geometry(grid)
        self.xstart, self.xend = ppb.lor_endpoints(tables)
        self.n = self.xstart.shape[0]
        self.tof = tof
        self.lm = tof is not None and tables.tof_bin is not None
        if tof is not None:
            self.args = ppb.tof_arguments(tof, self.lm)
            self.bins = None if not self.lm else np.ascontiguousarray(tables.tof_bin, dtype=np.int16)

    def _tof(self):
        a = self.args
        return a["tof_bin_width"], a["tof_sigma"], a["tof_center_offset"]

    def forward(self, img):
        geo = (self.xstart, self.xend, img, self.origin, self.voxsize)
        if self.tof is None:
            out = np.zeros(self.n, np.float32)
            self.m.joseph3d_fwd(*geo, out)
        elif self.lm:
            out = np.zeros(self.n, np.float32)
            self.m.joseph3d_tof_lm_fwd(*geo, out, *self._tof(), self.bins, self.args["num_tof_bins"],
                                       self.args["num_sigmas"])
        else:
            out = np.zeros((self.n, self.tof.n_bins), np.float32)
            self.m.joseph3d_tof_sino_fwd(*geo, out, *self._tof(), self.args["num_tof_bins"], self.args["num_sigmas"])
        return out

    def back(self, values):
        img = np.zeros(self.shape, np.float32)
        geo = (self.xstart, self.xend, img, self.origin, self.voxsize)
        if self.tof is None:
            self.m.joseph3d_back(*geo, values.reshape(-1))
        elif self.lm:
            self.m.joseph3d_tof_lm_back(*geo, values.reshape(-1), *self._tof(), self.bins,
                                        self.args["num_tof_bins"], self.args["num_sigmas"])
        else:
            self.m.joseph3d_tof_sino_back(*geo, values.reshape(self.n, -1), *self._tof(), self.args["num_tof_bins"],
                                          self.args["num_sigmas"])
        return img


def _problem(name: str):
    """(grid, pettk Projector, description) of one case."""
    if name.startswith("bench-36ring"):
        p = pettk.preset("bench-36ring")
        views = slice(0, None, 34)
        if name.endswith("LORList"):
            start, end = p.layout.lor_endpoints(views)
            geometry = pettk.LORList(start.reshape(-1, 3), end.reshape(-1, 3))
            return p.grid, pettk.Projector(p.grid, geometry, backend="cpu"), "same rays as a LORList"
        return p.grid, pettk.Projector(p.grid, p.layout, views=views, backend="cpu"), "1 of 34 view subsets"
    q = pettk.preset("mmr-like")
    if name == "mmr-like TOF sinogram":
        views = slice(0, None, 112)
        nontof = pettk.Projector(q.grid, q.layout, views=views)
        reach = max_sample_offset_mm(q.grid, nontof._tables)
        tof = pettk.TOFParams(fwhm_ps=400.0, n_bins=int(np.ceil(2 * reach / 17.0)) | 1, bin_width_mm=17.0)
        return q.grid, pettk.Projector(q.grid, q.layout, views=views, tof=tof, backend="cpu"), "1 of 112 view subsets"
    start, end = q.layout.lor_endpoints(slice(0, None, 28))
    start, end = start.reshape(-1, 3)[::4], end.reshape(-1, 3)[::4]
    reach = max_sample_offset_mm(q.grid, pettk.LORList(start, end).lor_tables())
    tof = pettk.TOFParams(fwhm_ps=400.0, n_bins=int(np.ceil(2 * reach / 17.0)) | 1, bin_width_mm=17.0)
    near = np.flatnonzero(np.abs(tof.bin_centres_mm) <= 150.0)
    bins = np.random.default_rng(1).choice(near, size=start.shape[0])
    lors = pettk.LORList(start, end, tof_bin=bins)
    return q.grid, pettk.Projector(q.grid, lors, tof=tof, backend="cpu"), "every 4th LOR of 1 of 28 view subsets"


def run_case(name: str, repeats: int) -> list[dict]:
    grid, P, what = _problem(name)
    raw = _Raw(grid, P._tables, P.tof)
    x = np.random.default_rng(0).random(grid.shape).astype(np.float32)
    y = P.forward(x)
    img = np.zeros(raw.shape, np.float32)
    img[raw.interior] = x.reshape(ppb.image_geometry(grid)[0])
    y_pp = raw.forward(img).reshape(y.shape)
    # a sanity check (the tests hold the agreement): LORs at exactly 45 degrees left out
    d = np.sort(np.abs(raw.xend.astype(np.float64) - raw.xstart), axis=1)
    tie = d[:, -2] >= d[:, -1] * (1 - 1e-5)
    err = np.abs(y_pp - y).reshape(tie.shape[0], -1)[~tie]  # rows: LORs (TOF sinograms: their bins)
    difference = float(err.max()) / float(np.abs(y).max())
    n_lors = P.n_lors if P.tof is None or P._tables.tof_bin is not None else P.n_lors // P.tof.n_bins
    tof = "" if P.tof is None else f", {P.tof.n_bins} TOF bins"
    rows = []
    for mode in ("forward", "back"):
        if mode == "forward":
            timing = _interleaved(lambda: raw.forward(img), lambda: P.forward(x), repeats)
        else:
            timing = _interleaved(lambda: raw.back(y_pp), lambda: P.adjoint(y), repeats)
        rows.append({"case": name, "what": f"{what} ({n_lors / 1e6:.2f} M LORs{tof})", "mode": mode,
                     "n_lors": n_lors, **timing, "max_rel_forward_difference": difference})
    return rows


def markdown(rows: list[dict], threads: int, omp: int, repeats: int) -> str:
    lines = [f"parallelproj: {ppb.describe()}; pettk {pettk.__version__}; {threads} threads each "
             f"(numba {numba.get_num_threads()}, OpenMP {omp}); median of {repeats}; "
             f"{platform.processor() or platform.machine()}",
             "",
             "| case | projection | parallelproj | pettk | pettk / parallelproj |",
             "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['case']}: {r['what']} | {r['mode']} | {r['parallelproj_s']:.3g} s | "
                     f"{r['pettk_s']:.3g} s | {r['ratio']:.2f} |")
    return "\n".join(lines)


# -- pytest entry -------------------------------------------------------------------------------------
@pytest.mark.skipif(not ppb.available(), reason=f"parallelproj not importable ({ppb.unavailable_reason()})")
@pytest.mark.parametrize("name", CASE_NAMES)
def test_side_by_side(name, record):
    set_threads(_THREADS)
    repeats = int(os.environ.get("PETTK_BENCH_REPEATS", "5"))
    for row in run_case(name, repeats):
        assert row["max_rel_forward_difference"] < 1e-2  # the same operator (ties, 3-sigma TOF aside)
        record(f"{name} {row['mode']} vs parallelproj", seconds=row["pettk_s"],
               parallelproj_seconds=row["parallelproj_s"], pettk_over_parallelproj=row["ratio"])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cases", nargs="*", default=list(CASE_NAMES), choices=CASE_NAMES)
    parser.add_argument("--out", help="also write the markdown table to this file")
    args = parser.parse_args(argv)
    if not ppb.available():
        raise SystemExit(f"parallelproj not importable ({ppb.unavailable_reason()}); see docs/parallelproj.md")
    omp = set_threads(_THREADS)
    rows = []
    for name in args.cases:
        rows += run_case(name, args.repeats)
        for r in rows[-2:]:
            print(f"{name} {r['mode']}: parallelproj {r['parallelproj_s']:.3g} s, pettk {r['pettk_s']:.3g} s, "
                  f"ratio {r['ratio']:.2f} (max relative forward difference {r['max_rel_forward_difference']:.1e})",
                  flush=True)
    table = markdown(rows, _THREADS, omp, args.repeats)
    print(table)
    if args.out:
        with open(args.out, "w") as f:
            f.write(table + "\n")


if __name__ == "__main__":
    main()

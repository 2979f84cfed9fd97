"""The ``pettk`` command line.

``pettk --version``
    Print the version.
``pettk demo [--output DIR]``
    Project a Shepp–Logan phantom with the Joseph projector, back-project the sinogram and save a
    PNG of the image, the sinogram and the back projection to ``DIR`` (default ``./pettk-demo``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ._version import __version__


def _demo(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from .geometry import ImageGrid, ParallelBeam2D
    from .io import atomic_path
    from .projector import Projector
    from .sim import shepp_logan_2d

    out_dir = Path(args.output)
    grid = ImageGrid((256, 256), 1.0)
    geometry = ParallelBeam2D(n_views=256, n_radial=367, radial_spacing_mm=1.0)
    projector = Projector(grid, geometry)
    image = shepp_logan_2d(grid).astype(np.float32)

    projector.adjoint(projector.forward(image))  # first calls compile (or load) the numba kernels
    start = time.perf_counter()
    sinogram = projector.forward(image)
    t_forward = time.perf_counter() - start
    start = time.perf_counter()
    backprojection = projector.adjoint(sinogram)
    t_adjoint = time.perf_counter() - start

    fig, axes = plt.subplots(1, 3, figsize=(13, 4.4), constrained_layout=True)
    extent_img = [grid.origin_mm[0], -grid.origin_mm[0], grid.origin_mm[1], -grid.origin_mm[1]]
    panels = [
        (image.T, "Shepp–Logan phantom (256×256, 1 mm)", extent_img, "x / mm", "y / mm"),
        (sinogram, f"Joseph forward projection ({t_forward * 1e3:.0f} ms)",
         [0, geometry.n_radial, 180, 0], "radial bin", "view angle / °"),
        (backprojection.T, f"Back projection Pᵀ P x ({t_adjoint * 1e3:.0f} ms)", extent_img, "x / mm", "y / mm"),
    ]
    for ax, (data, title, extent, xlabel, ylabel) in zip(axes, panels):
        im = ax.imshow(data, cmap="gray_r" if data is sinogram else "gray", extent=extent,
                       origin="upper" if data is sinogram else "lower", aspect="auto")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        fig.colorbar(im, ax=ax, shrink=0.85)
    figure_path = out_dir / "projector.png"
    with atomic_path(figure_path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)

    print(f"pettk {__version__} demo: Joseph projector on a 256x256 Shepp-Logan phantom, "
          f"{geometry.n_views} views x {geometry.n_radial} radial bins")
    print(f"  forward  {t_forward * 1e3:7.1f} ms   adjoint {t_adjoint * 1e3:7.1f} ms")
    print(f"  <Px, Px> = {float(np.vdot(sinogram, sinogram)):.6e}   "
          f"<x, P^T P x> = {float(np.vdot(image, backprojection)):.6e}")
    print(f"  wrote {figure_path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pettk", description="Differentiable PET physics toolkit.")
    parser.add_argument("--version", action="version", version=f"pettk {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = sub.add_parser("demo", help="project and back-project a Shepp-Logan phantom, save a PNG")
    demo.add_argument("--output", default="pettk-demo", help="output folder (default: ./pettk-demo)")
    demo.set_defaults(func=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())

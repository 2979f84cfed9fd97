"""The ``pettk`` command line.

``pettk --version``
    Print the version.
``pettk demo [--output DIR] [--device cuda] [--subjects N --slices S]``
    Simulate held-out brain subjects at DRF 20, reconstruct them with OSEM (+ post-filter),
    BSREM-RDP and the four priors with the shipped default models, and write a figure grid, NIfTI
    images and a metrics table to ``DIR`` (default ``./pettk-demo``). ``--projector`` instead
    runs the projector demo (Shepp–Logan forward and back projection).
``pettk evaluate --output DIR [--methods ...] [--checkpoint METHOD=PATH] [--drf 4 20 100] ...``
    Any subset of methods and checkpoints on N held-out subjects, or on the test split of a data set
    (``--data DIR``, built by ``pettk simulate``): mean ± std tables (PSNR, SSIM, NRMSE, lesion
    contrast recovery) and figures; the classical settings are tuned on the validation split of
    the same data (``--tune``, the default; ``--no-tune``: the fixed TUNED constants).
``pettk compare RUN [RUN ...] [--baseline bsrem-rdp] [-o FILE.md]``
    Merge the ``slices.csv`` / ``lesions.csv`` of ``pettk evaluate`` runs on the same data and print
    each method's mean ± std with its paired per-slice margin (PSNR, SSIM) against the baseline
    (:mod:`pettk.evaluation.paired`); ``-o`` also writes the Markdown table.
``pettk simulate OUT_DIR [--subjects N --slices S --size PX --anatomy v2 --drf D ...]``
    Build a paired low-/full-dose 2D-slice data set of simulated brains (resumable; default: the
    shipped models' training set, 240 v2 subjects x 20 slices, 128 x 128 on the mmr-like geometry).
    ``--tissue-maps DIR`` uses the users' own anatomy (one sub-folder of NIfTI tissue maps per subject).
``pettk train diffusion --output DIR [--preset tiny|full] [--config FILE.json|.yaml] [--data DIR]``
    Train an image diffusion model on a data set (resumable with ``--resume``).
``pettk train red|dream|ddip|legopet --data DIR --output DIR [--preset tiny|gpu|full] [--config FILE.json]``
    Train a prior (presets of METHODS.md; ``--config`` overrides, see each prior's ``from_json``).
    Every ``pettk train`` runs on ``--device`` (default: CUDA when torch sees a GPU, else the CPU), and
    in chunks: ``--max-minutes M`` stops after M minutes with the checkpoints written (exit status 75
    when training is not finished), ``--resume`` continues; SIGTERM and Ctrl-C also keep the steps done.
``pettk recon SINOGRAM.npz --output IMAGE.nii.gz [--algorithm ...]``
    Reconstruct a pettk sinogram file (:mod:`pettk.io.sinogram`) with MLEM, OSEM, OSL-MAP, BSREM
    or FBP and write a NIfTI image; ``--dicom DIR`` also writes it as a DICOM PET series.
``pettk recon --petsird FILE --output IMAGE.nii.gz [--iterations 3 --subsets 10 ...]``
    Reconstruct a PETSIRD list-mode file with list-mode OSEM (TOF when the file has it).
``pettk recon --petsird FILE --estimate-corrections [--mu MU.nii.gz] --output IMAGE.nii.gz``
    Randoms from the delayeds, attenuation, scatter (SSS ↔ OSEM, tail fit), then sinogram OSEM;
    prints the randoms and scatter fractions and writes them to ``IMAGE.corrections.json``.
``pettk recon --cohort MANIFEST.csv --output DIR [--scheduler local|ADDRESS]``
    Reconstruct every study of a cohort as independent Dask tasks (resumable, per-study failures).
"""

from __future__ import annotations

import sys

from .evaluate import DEMO_METHODS, EVALUATE_METHODS
from .parser import build_parser
from .recon import ALGORITHMS
from .train import EXIT_CHUNK_ENDED, PRIOR_TRAINERS
from .train import _train_device as _train_device  # tests choose the training device through it

__all__ = ["main", "build_parser", "USER_ERRORS", "EXIT_CHUNK_ENDED", "EVALUATE_METHODS", "DEMO_METHODS",
           "ALGORITHMS", "PRIOR_TRAINERS"]


#: Errors that describe bad input or a bad file: shown as one ``pettk COMMAND: ...`` line (set
#: ``PETTK_DEBUG=1`` for the traceback). Anything else is a bug and keeps its traceback.
USER_ERRORS = (ValueError, TypeError, FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError,
               FileExistsError)


def main(argv: list[str] | None = None) -> int:
    import os

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except USER_ERRORS as err:
        if os.environ.get("PETTK_DEBUG"):
            raise
        raise SystemExit(f"pettk {args.command}: {err}") from None


if __name__ == "__main__":
    sys.exit(main())

"""``pettk simulate``: paired low-/full-dose data sets of simulated brains or of users' tissue maps."""

from __future__ import annotations

import argparse
import time


def _simulate(args: argparse.Namespace) -> int:

    from ..sim.datasets import DatasetConfig, build_dataset

    anatomy, n_subjects = args.anatomy or "v2", args.subjects
    try:
        if args.tissue_maps is not None:
            anatomy, n_subjects = "tissue-maps", _check_tissue_maps_dir(args)
        config = DatasetConfig(n_subjects=n_subjects or 240, slices_per_subject=args.slices, image_size=args.size,
                               geometry=args.geometry, anatomy=anatomy, drfs=tuple(args.drf),
                               counts_per_slice=args.counts, tracer=args.tracer, lesions=args.lesions,
                               slice_range_mm=args.slice_range_mm, seed=args.seed,
                               split=(None, args.validation, args.test), tissue_maps=args.tissue_maps)
        config.validate()
    except (TypeError, ValueError, OSError) as err:
        raise SystemExit(f"pettk simulate: {err}") from None
    start = time.perf_counter()
    try:
        manifest = build_dataset(args.output, config, progress=not args.no_progress)
    except ValueError as err:  # a subject's maps failed a check on their values (FileFormatError included)
        if args.tissue_maps is None:
            raise
        raise SystemExit(f"pettk simulate: {err}") from None
    print(f"pettk simulate: {config.n_subjects} subjects x {args.slices} slices ({args.size}x{args.size}, "
          f"{config.anatomy} anatomy, DRF {', '.join(f'{d:g}' for d in args.drf)}) in "
          f"{time.perf_counter() - start:.1f} s -> {manifest}")
    return 0


def _check_tissue_maps_dir(args: argparse.Namespace) -> int:
    """Check ``--tissue-maps`` before any work: every subject folder's names, tables, shapes and
    affines (not the voxel values: those are checked as each subject is read); returns the number of
    subjects (``--subjects``, or every subject folder)."""
    from ..sim.tissue_maps import check_tissue_maps, list_subjects

    if args.anatomy not in (None, "tissue-maps"):
        raise ValueError(f"--anatomy {args.anatomy} and --tissue-maps exclude each other")
    subjects = list_subjects(args.tissue_maps)
    n = len(subjects) if args.subjects is None else args.subjects
    if n > len(subjects):
        raise ValueError(f"--subjects {n}: {args.tissue_maps} holds only {len(subjects)} subject folders")
    if args.validation + args.test > n:
        raise ValueError(f"--validation {args.validation} + --test {args.test} subjects do not fit the {n} subjects "
                         f"of {args.tissue_maps}; lower --validation/--test")
    for folder in subjects[:n]:
        check_tissue_maps(folder)
    return n

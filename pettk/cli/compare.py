"""``pettk compare``: paired margins of ``pettk evaluate`` runs against a baseline method."""

from __future__ import annotations

import argparse
from pathlib import Path


def _compare(args: argparse.Namespace) -> int:
    """Print the paired table of the runs (:func:`pettk.evaluation.paired.compare_runs`) and write it
    atomically to ``--output`` when given; bad input raises (one ``pettk compare: ...`` line, see
    :func:`pettk.cli.main`)."""
    from ..evaluation.paired import compare_runs, markdown_table
    from ..io import atomic_path

    if args.output and Path(args.output).is_dir():
        raise IsADirectoryError(f"--output {args.output} is a folder; give a file name such as "
                                f"{Path(args.output) / 'paired.md'}")
    table = markdown_table(compare_runs(args.runs, args.baseline))
    if args.output:
        with atomic_path(Path(args.output)) as tmp:
            tmp.write_text(table)
    print(table, end="")
    if args.output:
        print(f"wrote {args.output}")
    return 0

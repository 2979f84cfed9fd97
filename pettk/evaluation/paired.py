"""Paired comparisons of ``pettk evaluate`` runs against a baseline method (``pettk compare``).

Methods are often evaluated in separate runs on the same data (classical baselines in one output
folder, learned methods in another, with the same ``--data``: the same slices, the same noise).
:func:`compare_runs` reads the runs' ``slices.csv`` and ``lesions.csv``, merges them, pairs every
method's slices with the baseline's on (DRF, tracer, subject, slice) and returns one row per
(method, DRF, tracer): the per-method mean ± std of PSNR (dB), SSIM, seconds per slice and lesion
contrast recovery (:func:`~pettk.evaluation.report.summarise`), and the mean ± sample std of the
per-slice differences (method − baseline) of PSNR (dB) and SSIM, with the number of slices on
which the method's PSNR is higher. :func:`markdown_table` renders them as the README's tables.
"""

from __future__ import annotations

import csv
import os
from collections import defaultdict
from pathlib import Path

import numpy as np

from . import LABELS
from .report import LESION_FIELDS, ROW_FIELDS, cr_cell, plus_minus, summarise

__all__ = ["read_run", "merge_runs", "paired_summary", "compare_runs", "markdown_table"]

_NUMBERS = ("drf", "psnr", "ssim", "nrmse", "seconds")


def _slice_text(drf: float, tracer: str, subject: str, slice_: str) -> str:
    return f"DRF {drf:g}, tracer {tracer or '(none)'}, subject {subject}, slice {slice_}"


def _read_csv(path: Path, fields) -> list[tuple[int, dict]]:
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [f for f in fields if f not in (reader.fieldnames or ())]
        if missing:
            raise ValueError(f"{path} lacks the column(s) {', '.join(missing)}; is it written by `pettk evaluate`?")
        return [(line, row) for line, row in enumerate(reader, start=2)]


def _float(path: Path, line: int, row: dict, field: str) -> float:
    try:
        return float(row[field])
    except (TypeError, ValueError):
        raise ValueError(f"{path} line {line}: {field} {row[field]!r} is not a number") from None


def read_run(folder) -> tuple[list[dict], list[dict]]:
    """The per-slice rows (``slices.csv``) and per-lesion rows (``lesions.csv``, empty when the
    folder has none) of one ``pettk evaluate`` output folder.

    Slice rows have the columns :data:`~pettk.evaluation.report.ROW_FIELDS`: ``drf``, ``psnr``
    (dB), ``ssim``, ``nrmse`` and ``seconds`` (per slice) as floats, the others as text; lesion rows
    stay as read (text), as :func:`~pettk.evaluation.report.summarise` takes them.

    Raises
    ------
    FileNotFoundError
        No such folder, or no ``slices.csv`` in it.
    ValueError
        A missing column, a value that is not a number, or a ``slices.csv`` without rows.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no evaluation output folder {folder}")
    path = folder / "slices.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{folder} has no slices.csv (is it a `pettk evaluate` output folder?)")
    rows = []
    for line, raw in _read_csv(path, ROW_FIELDS):
        rows.append({f: _float(path, line, raw, f) if f in _NUMBERS else raw[f] for f in ROW_FIELDS})
    if not rows:
        raise ValueError(f"{path} has no rows")
    lesions = []
    path = folder / "lesions.csv"
    if path.is_file():
        for line, raw in _read_csv(path, LESION_FIELDS):
            _float(path, line, raw, "drf")
            if not raw["skipped"]:
                _float(path, line, raw, "cr")
            lesions.append(raw)
    return rows, lesions


def _same(a: dict, b: dict) -> bool:
    """Rows equal in every column (NaN equal to NaN)."""
    return a.keys() == b.keys() and all(a[k] == b[k] or (a[k] != a[k] and b[k] != b[k]) for k in a)


def _merge(found: dict, key: tuple, row: dict, source: Path, what: str) -> None:
    if key in found:
        first, other = found[key]
        if not _same(other, row):
            where = f"{first} and {source}" if first != source else f"{source} twice"
            raise ValueError(f"{what} is in {where} with different values; give each method's slices once")
        return
    found[key] = (source, row)


def merge_runs(folders) -> tuple[list[dict], list[dict]]:
    """The slice rows and lesion rows of several ``pettk evaluate`` output folders (:func:`read_run`),
    merged in the order given.

    The same (method, DRF, tracer, subject, slice) in two folders is kept once when the rows are
    identical (every column, ``seconds`` included) and is a :class:`ValueError` naming both
    folders otherwise; likewise for a lesion of a slice.
    """
    if isinstance(folders, (str, os.PathLike)):
        folders = [folders]
    folders = [Path(f) for f in folders]
    if not folders:
        raise ValueError("give at least one evaluation output folder")
    slices: dict[tuple, tuple[Path, dict]] = {}
    lesions: dict[tuple, tuple[Path, dict]] = {}
    for folder in folders:
        rows, lesion_rows = read_run(folder)
        for row in rows:
            key = (row["method"], row["drf"], row["tracer"], row["subject"], row["slice"])
            _merge(slices, key, row, folder / "slices.csv", f"{key[0]} at {_slice_text(*key[1:])}")
        for row in lesion_rows:
            key = (row["method"], float(row["drf"]), row["tracer"], row["subject"], row["slice"], row["lesion"])
            _merge(lesions, key, row, folder / "lesions.csv",
                   f"{key[0]} lesion {key[5]} at {_slice_text(*key[1:5])}")
    return [row for _, row in slices.values()], [row for _, row in lesions.values()]


def paired_summary(rows: list[dict], lesion_rows: list[dict] | None, baseline: str) -> list[dict]:
    """One row per (method, DRF, tracer) with paired differences to ``baseline``.

    Parameters
    ----------
    rows : list of dict
        Per-slice rows (:data:`~pettk.evaluation.report.ROW_FIELDS`; PSNR in dB, seconds per slice).
    lesion_rows : list of dict or None
        Per-lesion rows (:data:`~pettk.evaluation.report.LESION_FIELDS`) for ``CR hot`` / ``CR cold``.
    baseline : str
        The method every other method is paired with; it must have every slice (DRF, tracer,
        subject, slice) that any other method has.

    Returns
    -------
    list of dict
        Sorted by DRF, then tracer and method in the order they first appear: the fields of
        :func:`~pettk.evaluation.report.summarise` (``n``, ``psnr``, ``psnr_std``, ``ssim``,
        ``seconds``, ``cr_hot``, ``n_hot``, ...) and ``baseline``; ``d_psnr``, ``d_psnr_std`` (dB),
        ``d_ssim``, ``d_ssim_std``: mean and sample std of the per-slice differences
        (method − baseline), ``better`` / ``ssim_better``: on how many of the ``n`` slices the
        method's PSNR / SSIM is higher. All four differences and both counts are None in the
        baseline's own rows.
    """
    if not isinstance(baseline, str):
        raise TypeError(f"baseline must be a method name (str), got {type(baseline).__name__}")
    if not rows:
        raise ValueError("no slice rows to compare")
    methods = list(dict.fromkeys(r["method"] for r in rows))
    if baseline not in methods:
        raise ValueError(f"baseline {baseline!r} is not among the evaluated methods ({', '.join(methods)}); "
                         "give one of them, or add a run that evaluated it")
    reference = {(r["drf"], r["tracer"], r["subject"], r["slice"]): r for r in rows if r["method"] == baseline}
    unpaired = [r for r in rows if r["method"] != baseline
                and (r["drf"], r["tracer"], r["subject"], r["slice"]) not in reference]
    if unpaired:
        r = unpaired[0]
        others = f" (and {len(unpaired) - 1} more)" if len(unpaired) > 1 else ""
        raise ValueError(f"{r['method']} has {_slice_text(r['drf'], r['tracer'], r['subject'], r['slice'])} but the "
                         f"baseline {baseline} has not{others}; a paired comparison needs the baseline on the same "
                         "slices")
    diffs: dict[tuple, list[tuple[float, float]]] = defaultdict(list)
    for r in rows:
        b = reference[(r["drf"], r["tracer"], r["subject"], r["slice"])]
        diffs[(r["method"], r["drf"], r["tracer"])].append((r["psnr"] - b["psnr"], r["ssim"] - b["ssim"]))
    out = []
    for entry in summarise(rows, lesion_rows or None):
        entry["baseline"] = baseline
        if entry["method"] == baseline:
            entry.update(d_psnr=None, d_psnr_std=None, d_ssim=None, d_ssim_std=None, better=None, ssim_better=None)
        else:
            d = np.array(diffs[(entry["method"], entry["drf"], entry["tracer"])], dtype=np.float64)
            std = d.std(axis=0, ddof=1) if len(d) > 1 else np.zeros(2)
            entry.update(d_psnr=float(d[:, 0].mean()), d_psnr_std=float(std[0]), d_ssim=float(d[:, 1].mean()),
                         d_ssim_std=float(std[1]), better=int((d[:, 0] > 0).sum()),
                         ssim_better=int((d[:, 1] > 0).sum()))
        out.append(entry)
    tracers = list(dict.fromkeys(r["tracer"] for r in rows))
    return sorted(out, key=lambda e: (e["drf"], tracers.index(e["tracer"]), methods.index(e["method"])))


def compare_runs(folders, baseline: str = "bsrem-rdp") -> list[dict]:
    """:func:`paired_summary` of the merged runs (:func:`merge_runs`) of ``folders``."""
    rows, lesion_rows = merge_runs(folders)
    return paired_summary(rows, lesion_rows, baseline)


def markdown_table(rows: list[dict], labels: dict[str, str] | None = None) -> str:
    """The paired table of :func:`paired_summary` rows, one line per row:

    ``| method | DRF | n | PSNR (dB) | Δ PSNR vs <baseline> (paired) | SSIM | Δ SSIM (paired) | CR hot | CR cold |
    s / slice |``, with a ``tracer`` column after DRF when the rows have more than one tracer.
    PSNR and Δ PSNR with 2 decimals and the number of slices where the method is ahead
    (``+0.75 ± 1.94 (18/24 better)``), SSIM and Δ SSIM with 3, CR with 2 and the lesion count,
    seconds with 1; the baseline's Δ cells are ``—``. ``labels`` maps method names to their
    labels (default :data:`pettk.evaluation.LABELS`).
    """
    if not rows:
        raise ValueError("no rows to tabulate")
    baselines = {e["baseline"] for e in rows}
    if len(baselines) != 1:
        raise ValueError(f"rows paired with different baselines ({', '.join(sorted(baselines))}); one table each")
    labels = LABELS if labels is None else labels
    base = baselines.pop()
    with_tracer = len({e["tracer"] for e in rows}) > 1
    tracer_head, tracer_rule = (" tracer |", "---|") if with_tracer else ("", "")
    lines = [f"| method | DRF |{tracer_head} n | PSNR (dB) | Δ PSNR vs {labels.get(base, base)} (paired) | SSIM | "
             "Δ SSIM (paired) | CR hot | CR cold | s / slice |",
             f"|---|---|{tracer_rule}---|---|---|---|---|---|---|---|"]
    for e in rows:
        if e["d_psnr"] is None:
            d_psnr = d_ssim = "—"
        else:
            d_psnr = f"{plus_minus(e['d_psnr'], e['d_psnr_std'], 2, sign=True)} ({e['better']}/{e['n']} better)"
            d_ssim = plus_minus(e["d_ssim"], e["d_ssim_std"], 3, sign=True)
        tracer = f" {e['tracer']} |" if with_tracer else ""
        lines.append(f"| {labels.get(e['method'], e['method'])} | {e['drf']:g} |{tracer} {e['n']} | "
                     f"{plus_minus(e['psnr'], e['psnr_std'], 2)} | {d_psnr} | "
                     f"{plus_minus(e['ssim'], e['ssim_std'], 3)} | {d_ssim} | "
                     f"{cr_cell(e, 'hot')} | {cr_cell(e, 'cold')} | {e['seconds']:.1f} |")
    return "\n".join(lines) + "\n"

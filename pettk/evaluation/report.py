"""Evaluation outputs: per-slice metric rows, mean ± std tables (Markdown, CSV), figures, NIfTI.

Every file is written atomically (:func:`pettk.io.atomic_path`).
"""

from __future__ import annotations

import csv
import io
import math
from collections import defaultdict
from pathlib import Path

import numpy as np

from ..geometry import ImageGrid
from ..io import atomic_path, save_nifti

__all__ = ["ROW_FIELDS", "LESION_FIELDS", "CR_FIELDS", "OPTIONAL_METRICS", "lesion_measurement", "comparison_lines",
           "summarise", "markdown_table", "plus_minus", "cr_cell", "write_rows_csv", "write_lesions_csv",
           "write_summary", "write_figure", "write_nifti_stack"]

#: Columns of the per-slice CSV.
ROW_FIELDS = ("method", "drf", "tracer", "subject", "slice", "psnr", "ssim", "nrmse", "seconds")
#: Columns of the per-lesion CSV (``lesions.csv``): one row per method and lesion of a slice;
#: ``cr`` is empty and ``skipped`` says why for lesions that are not measured.
LESION_FIELDS = ("method", "drf", "tracer", "subject", "slice", "lesion", "kind", "pixels", "background_pixels",
                 "true_contrast", "image_contrast", "cr", "skipped")
#: Metrics a row may add (3D evaluation): ``axial`` is :func:`pettk.metrics.axial_gradient_error`.
OPTIONAL_METRICS = ("axial",)
#: Contrast-recovery columns of a summary row (when :func:`summarise` is given lesion rows).
CR_FIELDS = ("cr_hot", "cr_hot_std", "n_hot", "cr_cold", "cr_cold_std", "n_cold")


def lesion_measurement(roi, image: np.ndarray, truth: np.ndarray) -> dict:
    """The :data:`LESION_FIELDS` of one lesion (a :class:`~pettk.metrics.LesionROI`) in ``image``
    (empty contrast fields for a skipped lesion, NaN when the image's background is not positive)."""
    out = {"lesion": roi.lesion, "kind": roi.kind, "pixels": roi.pixels, "background_pixels": roi.background_pixels,
           "skipped": roi.skipped}
    if roi.skipped:
        return {**out, "true_contrast": "", "image_contrast": "", "cr": ""}
    bg = float(image[roi.background].mean())
    return {**out, "true_contrast": roi.true_contrast,
            "image_contrast": float(image[roi.mask].mean()) / bg if bg > 0 else math.nan,
            "cr": roi.recovery(image, truth) if bg > 0 else math.nan}


def _cr_summary(lesion_rows: list[dict], key: tuple) -> dict:
    out = {}
    for kind in ("hot", "cold"):
        values = np.array([float(r["cr"]) for r in lesion_rows
                           if (r["method"], float(r["drf"]), r["tracer"]) == key and r["kind"] == kind
                           and not r.get("skipped") and math.isfinite(float(r["cr"]))], dtype=np.float64)
        out[f"n_{kind}"] = int(values.size)
        out[f"cr_{kind}"] = float(values.mean()) if values.size else math.nan
        out[f"cr_{kind}_std"] = float(values.std(ddof=1)) if values.size > 1 else (0.0 if values.size else math.nan)
    return out


def summarise(rows: list[dict], lesion_rows: list[dict] | None = None) -> list[dict]:
    """Mean and sample standard deviation of PSNR, SSIM, NRMSE and time per (method, DRF, tracer).

    With ``lesion_rows`` (rows of :data:`LESION_FIELDS`), also the mean and sample standard
    deviation of the contrast recovery over the measured hot and cold lesions (:data:`CR_FIELDS`;
    NaN when there is none)."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    order: list[tuple] = []
    for row in rows:
        key = (row["method"], float(row["drf"]), row["tracer"])
        if key not in groups:
            order.append(key)
        groups[key].append(row)
    out = []
    for key in order:
        group = groups[key]
        entry = {"method": key[0], "drf": key[1], "tracer": key[2], "n": len(group)}
        for metric in ("psnr", "ssim", "nrmse", "seconds") + tuple(m for m in OPTIONAL_METRICS if m in group[0]):
            values = np.array([float(r[metric]) for r in group], dtype=np.float64)
            entry[metric] = float(values.mean())
            entry[f"{metric}_std"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
        if lesion_rows is not None:
            entry.update(_cr_summary(lesion_rows, key))
        out.append(entry)
    return out


def plus_minus(mean: float, std: float, digits: int, sign: bool = False) -> str:
    """``"mean ± std"`` with ``digits`` decimals (``sign``: ``+`` before a non-negative mean); ``"n/a"``
    when the mean is not finite."""
    return f"{mean:{'+' if sign else ''}.{digits}f} ± {std:.{digits}f}" if math.isfinite(mean) else "n/a"


def cr_cell(e: dict, kind: str) -> str:
    """The ``CR hot`` / ``CR cold`` cell (``kind``: ``"hot"``, ``"cold"``) of a summary row with
    :data:`CR_FIELDS`: mean ± std with 2 decimals and the lesion count in brackets, else ``"n/a"``."""
    n = e.get(f"n_{kind}", 0)
    return f"{plus_minus(e[f'cr_{kind}'], e[f'cr_{kind}_std'], 2)} ({n})" if n else "n/a"


def markdown_table(summary: list[dict], labels: dict[str, str] | None = None, unit: str = "slice") -> str:
    """A Markdown table, one row per (method, DRF, tracer): PSNR (dB), SSIM, NRMSE, s per slice,
    and ``CR hot`` / ``CR cold`` (mean ± std over lesions, their number in brackets) when the
    summary has contrast recovery, the axial gradient error when it has one; ``unit`` names what a
    row's time is per (``"slice"``, ``"volume"``)."""
    labels = labels or {}
    with_cr = any("cr_hot" in e for e in summary)
    with_axial = any("axial" in e for e in summary)
    cr_head, cr_rule = (" CR hot | CR cold |", "---|---|") if with_cr else ("", "")
    ax_head, ax_rule = (" axial grad. error |", "---|") if with_axial else ("", "")
    lines = [f"| method | DRF | tracer | n | PSNR (dB) | SSIM | NRMSE |{cr_head}{ax_head} s / {unit} |",
             f"|---|---|---|---|---|---|---|{cr_rule}{ax_rule}---|"]
    for e in summary:
        cr = f" {cr_cell(e, 'hot')} | {cr_cell(e, 'cold')} |" if with_cr else ""
        ax = f" {plus_minus(e['axial'], e['axial_std'], 3)} |" if with_axial else ""
        lines.append(f"| {labels.get(e['method'], e['method'])} | {e['drf']:g} | {e['tracer']} | {e['n']} | "
                     f"{plus_minus(e['psnr'], e['psnr_std'], 2)} | {plus_minus(e['ssim'], e['ssim_std'], 3)} | "
                     f"{plus_minus(e['nrmse'], e['nrmse_std'], 3)} |{cr}{ax} {e['seconds']:.2f} |")
    return "\n".join(lines) + "\n"


def _csv_text(rows: list[dict], fields) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(fields), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    return buf.getvalue()


def write_rows_csv(path, rows: list[dict]) -> Path:
    """Per-slice (or per-volume) metrics as CSV (:data:`ROW_FIELDS` and the optional metrics the rows have)."""
    path = Path(path)
    fields = ROW_FIELDS + tuple(m for m in OPTIONAL_METRICS if any(m in r for r in rows))
    with atomic_path(path) as tmp:
        tmp.write_text(_csv_text(rows, fields))
    return path


def write_lesions_csv(path, rows: list[dict]) -> Path:
    """Per-lesion contrast recovery as CSV (:data:`LESION_FIELDS`)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(_csv_text(rows, LESION_FIELDS))
    return path


def write_summary(out_dir, summary: list[dict], labels: dict[str, str] | None = None,
                  preamble: str = "", postscript: str = "", unit: str = "slice") -> tuple[Path, Path]:
    """``metrics.md`` (preamble + table + postscript) and ``metrics.csv`` (mean and std columns) in ``out_dir``."""
    out_dir = Path(out_dir)
    md, csv_path = out_dir / "metrics.md", out_dir / "metrics.csv"
    with atomic_path(md) as tmp:
        tmp.write_text(preamble + markdown_table(summary, labels, unit) + postscript)
    fields = ["method", "drf", "tracer", "n"] + [f"{m}{s}" for m in ("psnr", "ssim", "nrmse", "seconds")
                                                 for s in ("", "_std")]
    if any("cr_hot" in e for e in summary):
        fields += list(CR_FIELDS)
    fields += [f"{m}{s}" for m in OPTIONAL_METRICS if any(m in e for e in summary) for s in ("", "_std")]
    with atomic_path(csv_path) as tmp:
        tmp.write_text(_csv_text(summary, fields))
    return md, csv_path


def write_figure(path, truth: np.ndarray, images: dict[str, np.ndarray], scores: dict[str, tuple[float, float]],
                 title: str = "", labels: dict[str, str] | None = None) -> Path:
    """A figure grid: the reference and each method (top), their error maps (bottom).

    ``images`` maps a method to its 2D image (``nx × ny``, shown with x to the right and y up);
    ``scores`` maps a method to (PSNR dB, SSIM) for the titles.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = labels or {}
    n = len(images) + 1
    fig, axes = plt.subplots(2, n, figsize=(2.6 * n, 5.6), constrained_layout=True, squeeze=False)
    vmax = float(truth.max()) or 1.0
    err_max = 0.5 * vmax
    axes[0, 0].imshow(truth.T, origin="lower", cmap="hot", vmin=0, vmax=vmax)
    axes[0, 0].set_title("reference (true activity)", fontsize=9)
    axes[1, 0].axis("off")
    err_im = None
    for col, (method, image) in enumerate(images.items(), start=1):
        p, s = scores[method]
        axes[0, col].imshow(image.T, origin="lower", cmap="hot", vmin=0, vmax=vmax)
        axes[0, col].set_title(f"{labels.get(method, method)}\nPSNR {p:.2f} dB, SSIM {s:.3f}", fontsize=9)
        err_im = axes[1, col].imshow((image - truth).T, origin="lower", cmap="RdBu_r", vmin=-err_max, vmax=err_max)
        axes[1, col].set_title("error (method − reference)", fontsize=8)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    if err_im is not None:
        fig.colorbar(err_im, ax=axes[1, :].tolist(), shrink=0.8, label="activity error")
    if title:
        fig.suptitle(title, fontsize=11)
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
    return path


def write_nifti_stack(path, slices: list[np.ndarray], grid_2d: ImageGrid, slice_mm: float = 2.03125) -> Path:
    """Stack 2D slices ``(nx, ny)`` along z into one NIfTI volume ``(nx, ny, n_slices)``."""
    volume = np.stack([np.asarray(s, dtype=np.float32) for s in slices], axis=-1)
    grid = ImageGrid(tuple(grid_2d.shape) + (volume.shape[-1],), tuple(grid_2d.voxel_size_mm) + (slice_mm,))
    return save_nifti(path, volume, grid)


def comparison_lines(summary: list[dict], labels: dict[str, str] | None = None,
                     baselines=("osem", "bsrem-rdp"), learned=("red", "dream", "ddip", "legopet")) -> list[str]:
    """One sentence per learned method and (DRF, tracer): its mean PSNR gain over each baseline.

    States plainly when a learned method is behind a baseline.
    """
    labels = labels or {}
    by_key = {(e["method"], e["drf"], e["tracer"]): e for e in summary}
    lines = []
    for e in summary:
        if e["method"] not in learned:
            continue
        parts = []
        for base in baselines:
            b = by_key.get((base, e["drf"], e["tracer"]))
            if b is None:
                continue
            gain = e["psnr"] - b["psnr"]
            verdict = "ahead of" if gain > 0 else "behind"
            parts.append(f"{verdict} {labels.get(base, base)} by {abs(gain):.2f} dB")
        if parts:
            lines.append(f"- {labels.get(e['method'], e['method'])} (DRF {e['drf']:g}, {e['tracer']}): "
                         + "; ".join(parts) + " in mean PSNR.")
    return lines

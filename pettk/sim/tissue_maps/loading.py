"""One subject's tissue maps, read and checked: :class:`TissueMaps`, :func:`load_tissue_maps`,
:func:`list_subjects`, :func:`check_tissue_maps`.

A subject folder holds either membership maps ``NAME.nii[.gz]`` (values in [0, 1], one per tissue
name of :mod:`.names`) or one integer label map ``labels.nii[.gz]`` with a table ``labels.json``
(``{"1": "csf", "2": "gm", ...}``) or ``labels.csv`` (rows ``label,tissue``; an optional header).
Every file of a subject must have the same shape and affine; any non-singular affine works
(axis flips, permutations, oblique and sheared ones: resampling goes through the full affine).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from ...io.errors import FileFormatError, as_path, reading
from ...io.nifti import check_affine
from ..anatomy.tables import PARENCHYMA
from .names import CLASS_CODES, REQUIRED, tissue_class

#: Membership values may leave [0, 1] by this much (then they are clipped).
VALUE_TOL = 1e-3
#: Largest allowed sum of the memberships of one voxel.
MAX_SUM = 1.05
LABEL_STEM = "labels"
TABLE_NAMES = ("labels.json", "labels.csv")


def _stem(path: Path) -> str | None:
    """The name of a NIfTI file without ``.nii``/``.nii.gz`` (case-insensitive); None for other files."""
    low = path.name.lower()
    for suffix in (".nii.gz", ".nii"):
        if low.endswith(suffix) and len(low) > len(suffix):
            return path.name[:-len(suffix)]
    return None


@dataclass(frozen=True, eq=False)
class TissueMaps:
    """One subject's tissue memberships on the grid of its files (checked; build with
    :func:`load_tissue_maps` or :meth:`from_arrays`).

    Attributes
    ----------
    memberships : ndarray, float32, shape ``(n_tissues, nx, ny, nz)``
        Membership of every tissue class in every voxel of the files, in [0, 1], summing to at
        most :data:`MAX_SUM` per voxel (background is the rest). Axes are the files' own voxel axes.
    tissues : tuple of str
        The tissue class of each channel (:data:`.names.CLASS_CODES` order).
    affine : ndarray, shape ``(4, 4)``
        Voxel index -> world mm (the files' affine; any non-singular one).
    folder : Path or None
        The subject folder read.
    files : tuple of str
        The files read (names within ``folder``).
    form : {"memberships", "label map"}
        Which kind of folder it was.
    brain_centre_mm : ndarray, shape ``(3,)``
        World position (mm) of the centroid of grey + white matter.
    head_box, brain_box : ndarray of int, shape ``(2, 3)``
        Lowest and highest voxel index (per axis) holding any tissue / any parenchyma.
    """

    memberships: np.ndarray
    tissues: tuple
    affine: np.ndarray
    folder: Path | None
    files: tuple
    form: str
    brain_centre_mm: np.ndarray
    head_box: np.ndarray
    brain_box: np.ndarray

    def __repr__(self) -> str:
        voxel = tuple(round(float(v), 4) for v in self.voxel_size_mm)
        return (f"TissueMaps(folder={str(self.folder) if self.folder else None!r}, form={self.form!r}, "
                f"tissues={self.tissues}, shape={self.shape}, voxel_size_mm={voxel})")

    @property
    def shape(self) -> tuple:
        """Voxels of the files ``(nx, ny, nz)``."""
        return tuple(self.memberships.shape[1:])

    @property
    def voxel_size_mm(self) -> np.ndarray:
        """Voxel edge lengths (mm): the lengths of the affine's columns."""
        return np.linalg.norm(self.affine[:3, :3], axis=0)

    @property
    def codes(self) -> np.ndarray:
        """The v2 label code of each channel."""
        return np.array([CLASS_CODES[t] for t in self.tissues], dtype=np.intp)

    @classmethod
    def from_arrays(cls, maps, affine, name: str = "arrays") -> TissueMaps:
        """Tissue maps from in-memory arrays: ``maps`` ``{tissue name: (nx, ny, nz) array}``,
        ``affine`` 4 x 4 (voxel index -> mm); the same checks as :func:`load_tissue_maps`, with
        messages naming ``name[tissue]``."""
        if not hasattr(maps, "items"):
            raise TypeError(f"maps must be a mapping tissue name -> array, got {type(maps).__name__}")
        affine = check_affine(np.asarray(affine, dtype=np.float64), name)
        entries = []
        for key, arr in maps.items():
            if not isinstance(key, str):
                raise TypeError(f"{name}: tissue names must be strings, got {key!r}")
            where = f"{name}[{key!r}]"
            entries.append((where, tissue_class(key, where), _as_volume(np.asarray(arr), where)))
        _check_required({c for _, c, _ in entries}, name, [w for w, _, _ in entries])
        first = entries[0] if entries else None
        for where, _, arr in entries:
            if arr.shape != first[2].shape:
                raise ValueError(f"{where} has shape {arr.shape}, {first[0]} has {first[2].shape}: every map of a "
                                 "subject must have the same shape")
        return _assemble([(w, c, _checked_values(a.astype(np.float32), w)) for w, c, a in entries], affine,
                         None, (), "memberships", name)


def _as_volume(data: np.ndarray, where) -> np.ndarray:
    if data.dtype.kind not in "iufb":
        raise FileFormatError(f"{where}: holds {data.dtype} values; tissue maps are real numbers")
    shape = data.shape
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim == 2:
        data = data[:, :, None]
    if data.ndim != 3 or data.size == 0:
        raise FileFormatError(f"{where}: expected one 2D or 3D map, got shape {shape}"
                              + (" (several volumes: one file per tissue)" if data.ndim == 4 else ""))
    return data


def _header(path: Path):
    """Shape and affine of a NIfTI file from its header (the data are not read)."""
    with reading(path, "NIfTI tissue map"):
        img = nib.load(str(path))
        shape, affine = tuple(int(n) for n in img.shape), np.array(img.affine, dtype=np.float64)
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) == 2:
        shape = shape + (1,)
    if len(shape) != 3 or 0 in shape:
        raise FileFormatError(f"{path}: expected one 2D or 3D map, got shape {tuple(img.shape)}"
                              + (" (several volumes: one file per tissue)" if len(shape) == 4 else ""))
    return shape, check_affine(affine, path)


def _read(path: Path) -> np.ndarray:
    with reading(path, "NIfTI tissue map"):
        data = np.asanyarray(nib.load(str(path), mmap=False).dataobj)
    return _as_volume(np.asarray(data), path)


def _checked_values(data: np.ndarray, where) -> np.ndarray:
    """``data`` (float32) after the value checks, clipped to [0, 1]."""
    bad = ~np.isfinite(data)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"{where}: {int(bad.sum())} NaN or infinite values (first at voxel {first}); memberships "
                         "must be finite numbers in [0, 1]")
    lo, hi = float(data.min()), float(data.max())
    if lo < -VALUE_TOL or hi > 1.0 + VALUE_TOL:
        worst = int(np.argmin(data)) if -lo > hi - 1.0 else int(np.argmax(data))
        at = tuple(int(i) for i in np.unravel_index(worst, data.shape))
        hint = " (a map scaled to 0-100 or 0-255? divide it by its full scale)" if hi > 2.0 else ""
        raise ValueError(f"{where}: membership values must lie in [0, 1]; found {lo:.4g} to {hi:.4g} "
                         f"(e.g. {float(data.flat[worst]):.4g} at voxel {at}){hint}")
    return np.clip(data, 0.0, 1.0, out=data)


def _check_required(classes, where, files) -> None:
    missing = [c for c in REQUIRED if c not in classes]
    if missing:
        raise ValueError(f"{where}: no {' and no '.join(missing)} map (gm.nii[.gz] and wm.nii[.gz] are required); "
                         f"found {', '.join(map(str, files)) or 'nothing'}")


def list_subjects(root) -> list[Path]:
    """The subject sub-folders of ``root`` in name order (hidden entries ignored).

    Raises :class:`FileNotFoundError` when ``root`` does not exist, :class:`ValueError` when it is
    not a folder or holds no sub-folder.
    """
    root = as_path(root, "tissue-map folder")
    if not root.exists():
        raise FileNotFoundError(f"no tissue-map folder at {root}")
    if not root.is_dir():
        raise ValueError(f"{root}: expected a folder with one sub-folder of tissue maps per subject, found a file")
    subjects = sorted((p for p in root.iterdir() if not p.name.startswith(".") and p.is_dir()), key=lambda p: p.name)
    if not subjects:
        own = [p.name for p in root.iterdir() if _stem(p)]
        raise ValueError(f"{root} holds no subject folders (one sub-folder of NIfTI tissue maps per subject)"
                         + (f"; it holds maps itself ({', '.join(sorted(own)[:5])}): move them into a sub-folder"
                            if own else ""))
    return subjects


def check_tissue_maps(folder) -> dict:
    """Everything about a subject folder that can be checked without reading the voxels: the
    file names, tissue names, label table, shapes and affines. Returns the reading plan
    ``{"form", "files": [(path, tissue class)], "table": path or None, "shape", "affine"}``.
    """
    folder = as_path(folder, "subject folder")
    if not folder.exists():
        raise FileNotFoundError(f"no subject folder at {folder}")
    if not folder.is_dir():
        raise ValueError(f"{folder}: expected a subject folder of NIfTI tissue maps, found a file")
    niftis: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        stem = _stem(p)
        if p.name.startswith(".") or stem is None or not p.is_file():
            continue
        if stem.lower() in niftis:
            raise ValueError(f"{folder}: {niftis[stem.lower()].name} and {p.name} are the same map twice; keep one")
        niftis[stem.lower()] = p
    tables = [folder / t for t in TABLE_NAMES if (folder / t).is_file()]
    if not niftis:
        raise ValueError(f"{folder}: no NIfTI tissue maps (NAME.nii or NAME.nii.gz, e.g. gm.nii.gz and wm.nii.gz)")
    table = None
    if LABEL_STEM in niftis:
        label_path = niftis.pop(LABEL_STEM)
        if niftis:
            raise ValueError(f"{folder}: holds both a label map ({label_path.name}) and membership maps "
                             f"({', '.join(p.name for p in niftis.values())}); use one form per subject")
        if len(tables) != 1:
            raise ValueError(f"{label_path}: a label map needs exactly one label table "
                             f"({' or '.join(TABLE_NAMES)}) beside it; found {len(tables) or 'none'}")
        table = tables[0]
        files = [(label_path, None)]
        form = "label map"
    else:
        if tables:
            raise ValueError(f"{tables[0]}: a label table without a label map (labels.nii[.gz]) beside it")
        files = [(p, tissue_class(stem, p)) for stem, p in niftis.items()]
        _check_required({c for _, c in files}, folder, [p.name for p, _ in files])
        form = "memberships"
    shape = affine = None
    first = files[0][0]
    for path, _ in files:
        s, a = _header(path)
        if shape is None:
            shape, affine = s, a
            continue
        if s != shape:
            raise ValueError(f"{path} has shape {s}, {first} has {shape}: every map of a subject must have the "
                             "same shape")
        corners = np.array([[i, j, k, 1.0] for i in (0, s[0] - 1) for j in (0, s[1] - 1) for k in (0, s[2] - 1)])
        shift = np.abs(corners @ (a - affine)[:3].T).max()
        if shift > 1e-3 * float(np.linalg.norm(affine[:3, :3], axis=0).min()):
            raise ValueError(f"{path} and {first} have different affines (voxels up to {shift:.3g} mm apart): every "
                             "map of a subject must be on the same grid")
    return {"form": form, "files": files, "table": table, "shape": shape, "affine": affine}


def _read_table(path: Path) -> dict:
    """Label table ``{int label: tissue class or None}`` from JSON or CSV."""
    with reading(path, "label table"):
        text = path.read_text()
    rows = []
    if path.suffix.lower() == ".json":
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            raise FileFormatError(f"{path}: not valid JSON ({exc})") from exc
        if not isinstance(obj, dict):
            raise ValueError(f"{path}: expected a JSON object {{\"label\": \"tissue\", ...}}, got {type(obj).__name__}")
        rows = [(str(k), v) for k, v in obj.items()]
    else:
        for n, row in enumerate(csv.reader(text.splitlines()), start=1):
            cells = [c.strip() for c in row]
            if not cells or not any(cells) or cells[0].startswith("#"):
                continue
            if len(cells) != 2:
                raise ValueError(f"{path}, line {n}: expected 'label,tissue', got {row!r}")
            if not rows and n == 1 and not cells[0].lstrip("+-").isdigit():
                continue  # header
            rows.append((cells[0], cells[1]))
    table = {}
    for key, value in rows:
        try:
            label = int(key)
        except ValueError:
            raise ValueError(f"{path}: label {key!r} is not an integer") from None
        if not isinstance(value, str):
            raise ValueError(f"{path}: the tissue of label {label} must be a name, got {value!r}")
        if label in table:
            raise ValueError(f"{path}: label {label} is listed twice")
        table[label] = tissue_class(value, f"{path}: label {label}")
    if not table:
        raise ValueError(f"{path}: the label table is empty")
    return table


def _label_memberships(path: Path, table_path: Path, table: dict) -> list:
    data = _read(path)
    if data.dtype.kind == "f":
        if not np.all(np.isfinite(data)) or np.any(data != np.round(data)):
            raise ValueError(f"{path}: a label map must hold integers; it holds non-integer or non-finite values")
    elif data.dtype.kind == "b":
        data = data.astype(np.uint8)
    values, inverse = np.unique(data, return_inverse=True)
    values = [int(v) for v in values]
    table = {0: None, **table}
    missing = [v for v in values if v not in table]
    if missing:
        raise ValueError(f"{path}: labels {missing[:20]}{' ...' if len(missing) > 20 else ''} are not in "
                         f"{table_path}; list every label of the map (label 0 is background unless listed)")
    classes = [c for c in CLASS_CODES if c in {table[v] for v in values}]
    _check_required(set(classes), f"{path} with {table_path}", [])
    lut = np.array([classes.index(table[v]) if table[v] is not None else -1 for v in values], dtype=np.int16)
    channel = lut[inverse.reshape(-1)].reshape(data.shape)
    return [(f"{path} ({c})", c, (channel == k).astype(np.float32)) for k, c in enumerate(classes)]


def load_tissue_maps(folder) -> TissueMaps:
    """Read and check one subject folder (see the module docstring); returns :class:`TissueMaps`.

    Every check runs before this returns: unknown names, missing grey/white matter, shapes or
    affines that differ, unreadable files (:class:`~pettk.io.errors.FileFormatError`), NaN or
    infinite values, values outside [0, 1] (beyond 1e-3; then clipped), memberships summing above
    1.05, labels missing from the table. Messages name the file.
    """
    plan = check_tissue_maps(folder)
    folder = as_path(folder)
    if plan["form"] == "label map":
        (path, _), = plan["files"]
        entries = _label_memberships(path, plan["table"], _read_table(plan["table"]))
        names = (path.name, plan["table"].name)
    else:
        entries = [(str(p), c, _checked_values(_read(p).astype(np.float32), p)) for p, c in plan["files"]]
        names = tuple(p.name for p, _ in plan["files"])
    return _assemble(entries, plan["affine"], folder, names, plan["form"], folder)


def _assemble(entries, affine, folder, files, form, where) -> TissueMaps:
    """Sum entries of one class into channels, check the sum, compute the derived fields."""
    classes = [c for c in CLASS_CODES if any(c == e[1] for e in entries)]
    shape = entries[0][2].shape
    mem = np.zeros((len(classes),) + shape, dtype=np.float32)
    for _, c, arr in entries:
        if c is not None:
            mem[classes.index(c)] += arr
    for c in REQUIRED:
        if not mem[classes.index(c)].any():
            raise ValueError(f"{', '.join(w for w, k, _ in entries if k == c)}: the {c} map is empty (all zeros)")
    total = mem.sum(axis=0)
    peak = float(total.max())
    if peak > MAX_SUM:
        at = np.unravel_index(int(np.argmax(total)), shape)
        mm = affine[:3, :3] @ np.asarray(at, dtype=np.float64) + affine[:3, 3]
        raise ValueError(f"{where}: the memberships of {', '.join(w for w, c, _ in entries if c)} sum to {peak:.4g} at "
                         f"voxel {tuple(int(i) for i in at)} ({', '.join(f'{v:.1f}' for v in mm)} mm); they may sum to "
                         f"at most {MAX_SUM} (each voxel's tissues share it; background is the rest)")
    par = np.zeros(shape, dtype=np.float32)
    brain = np.zeros(shape, dtype=np.float32)
    for k, c in enumerate(classes):
        if CLASS_CODES[c] in PARENCHYMA:
            par += mem[k]
        if c in REQUIRED:
            brain += mem[k]
    centre_idx = np.array([brain.sum(axis=tuple(a for a in range(3) if a != k), dtype=np.float64) @ np.arange(n)
                           for k, n in enumerate(shape)]) / brain.sum(dtype=np.float64)

    def box(vol):
        return np.array([[np.flatnonzero(vol.any(axis=tuple(a for a in range(3) if a != k)))[i] for k in range(3)]
                         for i in (0, -1)])

    return TissueMaps(memberships=mem, tissues=tuple(classes), affine=affine, folder=folder, files=tuple(files),
                      form=form, brain_centre_mm=affine[:3, :3] @ centre_idx + affine[:3, 3],
                      head_box=box(total > 0), brain_box=box(par > 0))

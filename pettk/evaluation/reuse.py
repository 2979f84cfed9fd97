"""Settings tuned by earlier ``pettk evaluate`` runs, reused on other test data without re-tuning.

A run that tunes writes ``tuning.json`` (the chosen :class:`~.methods.ClassicalSettings` per DRF
and the methods it tuned). :func:`settings_from_runs` reads one or more of them, so that a larger
or different test split is evaluated with exactly the settings chosen on the validation slices
(``pettk evaluate --settings RUN/tuning.json ...``): the test numbers change, the choice does not.
Each file contributes the fields of the methods it tuned (:data:`METHOD_FIELDS`), later files over
earlier ones, so runs that tuned different methods (the classical baselines in one, LegoPET in
another) combine.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from ..io.errors import FileFormatError
from .methods import TUNED, ClassicalSettings
from .tuning import RESTORERS, TUNABLE

__all__ = ["METHOD_FIELDS", "settings_from_runs"]

#: The :class:`ClassicalSettings` fields that belong to each tuned method.
METHOD_FIELDS = {
    "osem": ("osem_iterations", "osem_subsets", "post_filter_mm"),
    "bsrem-rdp": ("bsrem_beta", "rdp_gamma", "bsrem_iterations", "bsrem_subsets", "bsrem_tolerance"),
    "red": ("red_osem_iterations", "red_post_filter_mm", "red_reconstruction", "red_bsrem_beta", "red_rdp_gamma"),
    "dream": ("dream_osem_iterations", "dream_post_filter_mm", "dream_reconstruction", "dream_bsrem_beta",
              "dream_rdp_gamma"),
    "legopet": ("legopet_em_iterations", "legopet_post_filter_mm"),
    "ddip": ("ddip_post_filter_mm",),
    "pet-dds": ("pet_dds_post_filter_mm",),
}


def _read(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"settings file {path} does not exist (give a run's tuning.json)")
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise FileFormatError(f"{path}: not a pettk evaluate tuning.json ({err})") from None
    if not (isinstance(record, dict) and isinstance(record.get("methods"), list)
            and isinstance(record.get("drfs"), dict)):
        raise FileFormatError(f"{path}: not a pettk evaluate tuning.json (no 'methods' list and 'drfs' object)")
    return record


def _restorer_fields(chosen: dict, method: str) -> dict:
    """A file written before ``*_reconstruction`` existed said BSREM-RDP by ``*_bsrem_beta`` > 0
    (0: OSEM); read it as the current fields."""
    if f"{method}_reconstruction" in chosen:
        return {}
    beta = float(chosen.get(f"{method}_bsrem_beta", 0.0))
    if beta > 0:
        return {f"{method}_reconstruction": "bsrem-rdp"}
    default_beta = getattr(ClassicalSettings, f"{method}_bsrem_beta")
    return {f"{method}_reconstruction": "osem", f"{method}_bsrem_beta": default_beta}


def settings_from_runs(paths, drfs, methods=None) -> tuple[dict[float, ClassicalSettings], str]:
    """Per-DRF settings from earlier runs' ``tuning.json`` files.

    Parameters
    ----------
    paths : sequence of paths
        ``tuning.json`` files (or the run folders holding them); each gives the fields of the
        methods it tuned (:data:`METHOD_FIELDS`), later files over earlier ones, on top of
        :data:`~.methods.TUNED` (:class:`ClassicalSettings` at a DRF it lacks).
    drfs : sequence of float
        The DRFs to evaluate: every file must hold each (its tuning chose per DRF).
    methods : sequence of str, optional
        The methods to be evaluated: each tunable one must have been tuned by some file (default:
        no such check; the report names every method the files tuned).

    Returns
    -------
    ({drf: ClassicalSettings}, str)
        The settings, and which file gave which methods' settings (for the report).
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    paths = [Path(p) / "tuning.json" if Path(p).is_dir() else Path(p) for p in paths]
    if not paths:
        raise ValueError("give at least one tuning.json")
    drfs = [float(d) for d in drfs]
    records = [_read(p) for p in paths]
    per_drf = {d: TUNED.get(d, ClassicalSettings()) for d in drfs}
    given: dict[str, Path] = {}
    for path, record in zip(paths, records):
        tuned = [m for m in record["methods"] if m in METHOD_FIELDS]
        for d in drfs:
            entry = record["drfs"].get(f"{d:g}")
            if not isinstance(entry, dict) or not isinstance(entry.get("settings"), dict):
                raise ValueError(f"{path} holds no settings tuned at DRF {d:g} (it has DRF "
                                 f"{', '.join(record['drfs']) or 'none'})")
            chosen = entry["settings"]
            changes = {}
            for m in tuned:
                changes.update({f: chosen[f] for f in METHOD_FIELDS[m] if f in chosen})
                if m in RESTORERS:
                    changes.update(_restorer_fields(chosen, m))
            try:
                per_drf[d] = dataclasses.replace(per_drf[d], **changes).validate()
            except (TypeError, ValueError) as err:
                raise ValueError(f"{path}: the settings at DRF {d:g} are not valid: {err}") from None
        given.update({m: path for m in tuned})
    methods = tuple(given) if methods is None else tuple(methods)
    missing = [m for m in methods if m in TUNABLE and m not in given]
    if missing:
        raise ValueError(f"no settings file tuned {', '.join(missing)} (they tuned {', '.join(given) or 'nothing'}); "
                         "add the tuning.json of a run that tuned it")
    by_file: dict[Path, list[str]] = {}
    for m, path in given.items():
        if m in methods:
            by_file.setdefault(path, []).append(m)
    source = "; ".join(f"{', '.join(ms)} from {path}" for path, ms in by_file.items())
    return per_drf, source

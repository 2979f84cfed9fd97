"""Cohort reconstruction on Dask: one independent task per study, resumable, failures per study.

:func:`reconstruct_cohort` reads a manifest (one row per study), submits every study that has no
finished output yet as its own task to a ``dask.distributed`` cluster (a ``LocalCluster`` by
default, any running scheduler by address, or a ``Client`` you already have), writes each image
atomically as it finishes and returns a :class:`CohortReport` (one :class:`StudyResult` per
study: ``done``, ``skipped`` or ``failed`` with the error). One failing study never stops the
others; rerunning the same call skips the finished studies, so a crashed or interrupted cohort is
resumed by running it again. pettk does no scheduling of its own: Dask places, runs and retries
the tasks (see ``DESIGN.md``, "Beyond one machine").

The manifest
------------
A CSV file with a header row and one row per study (paths relative to the manifest's folder):

===================  ==========  ===========================================================
column               required    content
===================  ==========  ===========================================================
``study``            yes         unique id: letters, digits, ``.``, ``_``, ``-`` (not first);
                                 the output is ``OUT_DIR/<study>.nii.gz``
``sinogram``         yes         a pettk sinogram file (:func:`pettk.io.save_sinogram`,
                                 ``.npz``): prompts, geometry, grid, TOF, and any of
                                 normalisation/attenuation/additive/mu
``attenuation``      no          attenuation factors in (0, 1] per LOR
``normalisation``    no          detection efficiencies per LOR
``additive``         no          expected randoms + scatter counts per LOR
``mu``               no          mu-map (1/mm) on the sinogram's grid: ``.nii``/``.nii.gz``
                                 or ``.npy``; used only when no attenuation factors are given
===================  ==========  ===========================================================

``attenuation``, ``normalisation`` and ``additive`` are ``.npy`` arrays (shapes as in
:class:`~pettk.physics.ForwardModel`) or pettk sinogram files (their array of that name is used).
A non-empty cell overrides the array stored in the sinogram file; an empty cell keeps it. Other
columns are rejected, so that a misspelt optional column cannot silently drop a correction.

Example::

    study,sinogram,attenuation,additive
    sub-01,raw/sub-01.npz,,
    sub-02,raw/sub-02.npz,acf/sub-02.npy,bkg/sub-02.npy

Outputs: ``OUT_DIR/<study>.nii.gz`` (float32, with the grid's affine) and, after every run,
``OUT_DIR/cohort_report.csv`` (one row per study; written atomically).

From the command line: ``pettk recon --cohort manifest.csv --output OUT_DIR --scheduler local``
(or ``--scheduler tcp://host:8786``); see :func:`cohort_main`.
"""

from __future__ import annotations

import contextlib
import csv
import logging
import math
import numbers
import re
import time
import traceback
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

__all__ = ["METHODS", "Study", "ReconOptions", "StudyResult", "CohortReport", "read_manifest",
           "reconstruct_study", "reconstruct_cohort", "add_cohort_arguments", "cohort_main"]

log = logging.getLogger(__name__)

#: Reconstruction methods a cohort can use.
METHODS = ("osem", "mlem", "osl-map", "bsrem")
PRIORS = ("rdp", "quadratic", "tv")
REQUIRED_COLUMNS = ("study", "sinogram")
OPTIONAL_COLUMNS = ("attenuation", "normalisation", "additive", "mu")
REPORT_NAME = "cohort_report.csv"
_STUDY_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_INSTALL_HINT = "cohort reconstruction needs dask.distributed: pip install 'pettk[dask]'"


# ------------------------------------------------------------------------------------------------
# Inputs
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Study:
    """One row of a manifest, with absolute paths (``None`` for an empty optional cell)."""

    study: str
    sinogram: Path
    attenuation: Path | None = None
    normalisation: Path | None = None
    additive: Path | None = None
    mu: Path | None = None

    def output_path(self, out_dir) -> Path:
        """Where the reconstruction of this study is written: ``out_dir/<study>.nii.gz``."""
        return Path(out_dir) / f"{self.study}.nii.gz"


@dataclass(frozen=True)
class ReconOptions:
    """The reconstruction applied to every study of a cohort (see :func:`reconstruct_cohort`)."""

    method: str = "osem"
    n_iter: int = 4
    n_subsets: int = 8
    psf_mm: float = 0.0
    post_filter_mm: float = 0.0
    prior: str = "rdp"
    beta: float = 1.0
    gamma: float = 2.0
    epsilon: float = 1e-3

    def __post_init__(self):
        if not isinstance(self.method, str) or self.method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(map(repr, METHODS))}, got {self.method!r}")
        if not isinstance(self.prior, str) or self.prior not in PRIORS:
            raise ValueError(f"prior must be one of {', '.join(map(repr, PRIORS))}, got {self.prior!r}")
        for name in ("n_iter", "n_subsets"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        for name, strict in (("psf_mm", False), ("post_filter_mm", False), ("beta", False), ("gamma", True),
                             ("epsilon", True)):
            value = getattr(self, name)
            if (isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value)
                    or value < 0 or (strict and value == 0)):
                raise ValueError(f"{name} must be a finite number {'>' if strict else '>='} 0, got {value!r}")


def _cell(row: Mapping, name: str) -> str:
    value = row.get(name)
    return "" if value is None else str(value).strip()


def read_manifest(manifest) -> list[Study]:
    """Parse and validate a cohort manifest (see the module docstring) before any work.

    Parameters
    ----------
    manifest : str, os.PathLike or iterable of mappings
        A CSV file (relative paths resolve against its folder), or rows as dicts with the same
        keys (relative paths resolve against the working directory).

    Returns
    -------
    list of Study
        In manifest order.

    Raises
    ------
    ValueError
        Missing or unknown columns, an empty file, empty required cells, invalid or duplicate
        study ids. Files are not opened here: a missing file is a failure of that study only.
    TypeError
        ``manifest`` is neither a path nor an iterable of mappings.
    """
    if isinstance(manifest, (str, Path)) or hasattr(manifest, "__fspath__"):
        path = Path(manifest)
        if not path.is_file():
            raise ValueError(f"manifest must be an existing CSV file, got {str(path)!r}")
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            header = [h.strip().lower() for h in (reader.fieldnames or [])]
            rows = [{k.strip().lower(): v for k, v in row.items() if k is not None} for row in reader]
        base, where, first_row = path.resolve().parent, str(path), 2
    elif isinstance(manifest, Iterable) and not isinstance(manifest, (bytes, Mapping)):
        rows = list(manifest)
        if not all(isinstance(r, Mapping) for r in rows):
            raise TypeError("manifest rows must be mappings (e.g. dicts with 'study' and 'sinogram' keys)")
        rows = [{str(k).strip().lower(): v for k, v in r.items()} for r in rows]
        header = sorted({k for r in rows for k in r})
        base, where, first_row = Path.cwd(), "the manifest rows", 1
    else:
        raise TypeError(f"manifest must be a CSV path or an iterable of row mappings, got {type(manifest).__name__}")
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise ValueError(f"{where} lacks the required column(s) {', '.join(missing)}; "
                         f"columns are {', '.join(REQUIRED_COLUMNS + OPTIONAL_COLUMNS)}")
    unknown = [c for c in header if c not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS]
    if unknown:
        raise ValueError(f"{where} has unknown column(s) {', '.join(map(repr, unknown))}; allowed: "
                         f"{', '.join(REQUIRED_COLUMNS + OPTIONAL_COLUMNS)}")
    if not rows:
        raise ValueError(f"{where} lists no study")

    def resolve(text: str) -> Path | None:
        return None if not text else (base / Path(text).expanduser()).resolve()

    studies, seen = [], {}
    for number, row in enumerate(rows, start=first_row):
        sid, sino = _cell(row, "study"), _cell(row, "sinogram")
        if not sid or not sino:
            raise ValueError(f"{where}, row {number}: 'study' and 'sinogram' must not be empty, got {row!r}")
        if not _STUDY_ID.match(sid):
            raise ValueError(f"{where}, row {number}: study id {sid!r} must consist of letters, digits, '.', '_' "
                             "and '-' (not first): it names the output file")
        if sid in seen:
            raise ValueError(f"{where}: study id {sid!r} appears in rows {seen[sid]} and {number}")
        seen[sid] = number
        studies.append(Study(sid, resolve(sino), *(resolve(_cell(row, c)) for c in OPTIONAL_COLUMNS)))
    return studies


# ------------------------------------------------------------------------------------------------
# One study (runs on a Dask worker)
# ------------------------------------------------------------------------------------------------
@dataclass
class StudyResult:
    """What happened to one study.

    Attributes
    ----------
    study : str
    status : {"done", "skipped", "failed"}
        ``skipped``: its output existed before the run.
    output : str
        The output path (written only when ``done``, or earlier for ``skipped``).
    seconds : float
        Wall time of the reconstruction task (0 when skipped).
    error : str
        ``"ExceptionType while <stage>: message"`` for a failed study (the stage names the file
        being read, e.g. ``"ValueError while reading /data/s3.npz: ..."``), else empty.
    traceback : str
        The formatted traceback of a failed study (not written to the CSV report).
    worker : str
        Address of the Dask worker that ran it, when known.
    """

    study: str
    status: str
    output: str
    seconds: float = 0.0
    error: str = ""
    traceback: str = field(default="", repr=False)
    worker: str = ""


def _load_array(path: Path, name: str):
    import numpy as np

    if path.suffix == ".npy":
        return np.load(path, allow_pickle=False)
    if path.suffix == ".npz":
        from .io import load_sinogram

        value = getattr(load_sinogram(path), name)
        if value is None:
            raise ValueError(f"{name}: the sinogram file {path} holds no {name!r} array")
        return value
    raise ValueError(f"{name} must be a .npy array or a pettk sinogram .npz file, got {str(path)!r}")


def _load_mu(path: Path, grid):
    import numpy as np

    from .io import load_nifti

    if path.suffix == ".npy":
        mu = np.load(path, allow_pickle=False)
    elif path.name.endswith((".nii", ".nii.gz")):
        mu, _ = load_nifti(path, ndim=grid.ndim)
    else:
        raise ValueError(f"mu must be a NIfTI (.nii, .nii.gz) or .npy file, got {str(path)!r}")
    if tuple(mu.shape) != tuple(grid.shape):
        raise ValueError(f"the mu-map {path} has shape {tuple(mu.shape)}, the sinogram's grid {tuple(grid.shape)}")
    return mu


def reconstruct_study(study: Study, output, options: ReconOptions | None = None) -> StudyResult:
    """Reconstruct one study and write ``output`` atomically; never raises for a bad study.

    This is the Dask task of :func:`reconstruct_cohort` (a plain function of picklable arguments),
    usable on its own. Any exception while loading or reconstructing is returned as a ``failed``
    :class:`StudyResult` with its message and traceback.
    """
    import numpy as np

    options = ReconOptions() if options is None else options
    start = time.perf_counter()
    worker = ""
    with contextlib.suppress(Exception):
        from distributed import get_worker

        worker = get_worker().address
    stage = "importing pettk"
    try:
        from . import recon
        from .io import load_sinogram, save_nifti
        from .physics import ForwardModel
        from .projector import Projector

        stage = f"reading {study.sinogram}"
        data = load_sinogram(study.sinogram)
        grid = data.grid
        arrays = {name: getattr(data, name) for name in ("attenuation", "normalisation", "additive")}
        for name in arrays:
            path = getattr(study, name)
            if path is not None:
                stage = f"reading {name} {path}"
                arrays[name] = _load_array(path, name)
        stage = f"reading mu {study.mu}"
        mu = _load_mu(study.mu, grid) if study.mu is not None else data.mu
        stage = "building the forward model"
        model = ForwardModel(Projector(grid, data.geometry, tof=data.tof), psf=options.psf_mm or None,
                             normalisation=arrays["normalisation"], attenuation=arrays["attenuation"],
                             mu=None if arrays["attenuation"] is not None else mu, additive=arrays["additive"])
        prompts = np.asarray(data.prompts, dtype=np.float32)
        stage = f"reconstructing ({options.method})"
        if options.method == "mlem":
            image = recon.mlem(model, prompts, options.n_iter)
        elif options.method == "osem":
            image = recon.osem(model, prompts, options.n_iter, options.n_subsets)
        else:
            prior = {"rdp": lambda: recon.rdp(grid, gamma=options.gamma, epsilon=options.epsilon),
                     "quadratic": lambda: recon.quadratic(grid),
                     "tv": lambda: recon.tv(grid, delta=options.epsilon)}[options.prior]()
            run = recon.osl_map if options.method == "osl-map" else recon.bsrem
            image = run(model, prompts, prior, options.beta, options.n_iter, options.n_subsets)
        if options.post_filter_mm:
            image = recon.post_filter(image, grid, options.post_filter_mm)
        stage = f"writing {output}"
        save_nifti(output, np.asarray(image, dtype=np.float32), grid)
    except Exception as err:  # one bad study must not stop the cohort
        return StudyResult(study.study, "failed", str(output), time.perf_counter() - start,
                           f"{type(err).__name__} while {stage}: {err}", traceback.format_exc(), worker)
    return StudyResult(study.study, "done", str(output), time.perf_counter() - start, worker=worker)


# ------------------------------------------------------------------------------------------------
# The report
# ------------------------------------------------------------------------------------------------
class CohortReport:
    """The per-study outcome of :func:`reconstruct_cohort`, in manifest order.

    Iterate over it for :class:`StudyResult` objects, index it by study id, or use
    :attr:`done`/:attr:`skipped`/:attr:`failed` (lists of study ids), :meth:`to_rows` (dicts, e.g.
    for ``pandas.DataFrame``) and :meth:`to_csv`. ``str(report)`` is a plain-text table.
    """

    COLUMNS = ("study", "status", "output", "seconds", "error", "worker")

    def __init__(self, results: Iterable[StudyResult]):
        self.results: list[StudyResult] = list(results)
        self._by_id = {r.study: r for r in self.results}

    def __len__(self) -> int:
        return len(self.results)

    def __iter__(self):
        return iter(self.results)

    def __getitem__(self, study: str) -> StudyResult:
        return self._by_id[study]

    def _with(self, status: str) -> list[str]:
        return [r.study for r in self.results if r.status == status]

    @property
    def done(self) -> list[str]:
        return self._with("done")

    @property
    def skipped(self) -> list[str]:
        return self._with("skipped")

    @property
    def failed(self) -> list[str]:
        return self._with("failed")

    @property
    def ok(self) -> bool:
        """True when no study failed."""
        return not self.failed

    def to_rows(self) -> list[dict]:
        """One dict per study with the :attr:`COLUMNS` (the traceback is left out)."""
        return [{k: v for k, v in asdict(r).items() if k in self.COLUMNS} for r in self.results]

    def to_csv(self, path) -> Path:
        """Write the report as CSV, atomically."""
        from .io import atomic_path

        with atomic_path(path, suffix=".csv") as tmp:
            with open(tmp, "w", newline="", encoding="utf-8") as fh:
                writer = csv.DictWriter(fh, fieldnames=self.COLUMNS)
                writer.writeheader()
                for row in self.to_rows():
                    writer.writerow({**row, "seconds": f"{row['seconds']:.3f}"})
        return Path(path)

    def summary(self) -> str:
        return (f"{len(self)} studies: {len(self.done)} done, {len(self.skipped)} skipped, "
                f"{len(self.failed)} failed")

    def __str__(self) -> str:
        rows = [(r.study, r.status, f"{r.seconds:.1f}", r.error.splitlines()[0][:100] if r.error else "")
                for r in self.results]
        head = ("study", "status", "s", "error")
        widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(head)]
        lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths)).rstrip()]
        lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
        return "\n".join(lines + [self.summary()])

    def __repr__(self) -> str:
        return f"CohortReport({self.summary()})"


# ------------------------------------------------------------------------------------------------
# The cohort
# ------------------------------------------------------------------------------------------------
def _check_scheduler(scheduler, n_workers, threads_per_worker):
    if scheduler is not None and not isinstance(scheduler, str):
        try:
            from distributed import Client
        except ImportError:
            Client = ()  # without distributed no Client can be passed
        if not isinstance(scheduler, Client):
            raise TypeError("scheduler must be None, 'local', a scheduler address (e.g. 'tcp://host:8786') or a "
                            f"distributed.Client, got {type(scheduler).__name__}")
    elif isinstance(scheduler, str) and not scheduler.strip():
        raise ValueError("scheduler must not be an empty string; use None or 'local' for a LocalCluster")
    for name, value in (("n_workers", n_workers), ("threads_per_worker", threads_per_worker)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1):
            raise ValueError(f"{name} must be None or an integer >= 1, got {value!r}")


@contextlib.contextmanager
def _client(scheduler, n_workers, threads_per_worker, processes):
    """A ``distributed.Client`` for ``scheduler``; closes what it opened (never a given Client)."""
    try:
        from distributed import Client, LocalCluster
    except ImportError as err:
        raise ImportError(_INSTALL_HINT) from err
    if isinstance(scheduler, Client):
        yield scheduler
        return
    if scheduler is None or scheduler == "local":
        # no dashboard: a fixed port would clash between concurrent cohorts on one machine
        with LocalCluster(n_workers=n_workers, threads_per_worker=threads_per_worker, processes=processes,
                          dashboard_address=None) as cluster, Client(cluster) as client:
            yield client
        return
    with Client(scheduler) as client:
        yield client


def reconstruct_cohort(manifest, out_dir, *, method: str = "osem", n_iter: int = 4, n_subsets: int = 8,
                       psf_mm: float = 0.0, post_filter_mm: float = 0.0, prior: str = "rdp", beta: float = 1.0,
                       gamma: float = 2.0, epsilon: float = 1e-3, scheduler=None, n_workers: int | None = None,
                       threads_per_worker: int | None = 1, processes: bool = True, overwrite: bool = False,
                       progress: bool = True, report: bool = True) -> CohortReport:
    """Reconstruct every study of a manifest as an independent Dask task.

    Parameters
    ----------
    manifest : path or iterable of mappings
        The cohort (see the module docstring and :func:`read_manifest`).
    out_dir : path
        Output folder (created): ``<study>.nii.gz`` per study and ``cohort_report.csv``.
    method : {"osem", "mlem", "osl-map", "bsrem"}
        The algorithm (:mod:`pettk.recon`), with ``n_iter`` iterations (epochs) of ``n_subsets``
        view subsets (ignored by MLEM).
    psf_mm, post_filter_mm : float
        Resolution-model FWHM and Gaussian post-filter FWHM in mm (0: none).
    prior, beta, gamma, epsilon
        The MAP prior of ``"osl-map"``/``"bsrem"`` (``"rdp"``, ``"quadratic"`` or ``"tv"``), its
        strength, the RDP edge parameter and the RDP epsilon / TV delta (image units).
    scheduler : None, "local", str or distributed.Client
        ``None``/``"local"``: start a ``LocalCluster`` for this call (closed at the end);
        an address such as ``"tcp://10.0.0.5:8786"``: connect to that scheduler (its workers need
        pettk and the input files); a ``Client``: use it as it is (left open).
    n_workers, threads_per_worker, processes
        Only for the ``LocalCluster``: worker count (``None``: Dask's default for this machine),
        threads per worker (1: one study at a time per worker; the projector kernels are
        multi-threaded themselves) and process (default) or thread workers.
    overwrite : bool
        Recompute studies whose output exists (default: skip them, which makes reruns resume).
    progress : bool
        A tqdm bar over finished studies.
    report : bool
        Also write ``out_dir/cohort_report.csv``.

    Returns
    -------
    CohortReport
        One result per manifest row: ``done``, ``skipped`` or ``failed`` (with the error).

    Raises
    ------
    ValueError, TypeError
        Invalid options or manifest, raised before any cluster is started or file is written.
    ImportError
        ``dask.distributed`` is not installed (only raised when some study needs computing).
    """
    options = ReconOptions(method, n_iter, n_subsets, psf_mm, post_filter_mm, prior, beta, gamma, epsilon)
    studies = read_manifest(manifest)
    _check_scheduler(scheduler, n_workers, threads_per_worker)
    if not isinstance(out_dir, (str, Path)) and not hasattr(out_dir, "__fspath__"):
        raise TypeError(f"out_dir must be a path, got {type(out_dir).__name__}")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"out_dir {str(out)!r} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)

    results: dict[str, StudyResult] = {}
    pending = []
    for study in studies:
        target = study.output_path(out)
        if target.exists() and not overwrite:
            results[study.study] = StudyResult(study.study, "skipped", str(target))
        else:
            pending.append(study)
    if pending:
        from tqdm.auto import tqdm

        with _client(scheduler, n_workers, threads_per_worker, processes) as client:
            from distributed import as_completed

            run_id = uuid.uuid4().hex[:8]
            futures = {client.submit(reconstruct_study, s, str(s.output_path(out)), options, pure=False,
                                     key=f"pettk-recon-{s.study}-{run_id}"): s for s in pending}
            try:
                for future in tqdm(as_completed(futures), total=len(futures), desc="cohort", unit="study",
                                   disable=not progress):
                    study = futures[future]
                    try:
                        result = future.result()
                    except Exception as err:  # the task itself died (worker lost, cancelled, ...)
                        result = StudyResult(study.study, "failed", str(study.output_path(out)),
                                             error=f"{type(err).__name__}: {err}", traceback=traceback.format_exc())
                    if result.status == "failed":
                        log.warning("study %s failed: %s", study.study, result.error)
                    results[study.study] = result
            except BaseException:
                client.cancel(list(futures))
                raise
    cohort = CohortReport(results[s.study] for s in studies)
    if report:
        cohort.to_csv(out / REPORT_NAME)
    log.info("cohort %s -> %s: %s", manifest if isinstance(manifest, (str, Path)) else "rows", out, cohort.summary())
    return cohort


# ------------------------------------------------------------------------------------------------
# Command line
# ------------------------------------------------------------------------------------------------
def add_cohort_arguments(parser) -> None:
    """Add ``--cohort``, ``--scheduler``, ``--workers`` and ``--threads-per-worker`` to an
    argparse (sub)parser, e.g. the one of ``pettk recon``."""
    parser.add_argument("--cohort", metavar="MANIFEST.csv",
                        help="reconstruct every study of a manifest on Dask (see pettk.batch); "
                             "--output is then the output folder")
    parser.add_argument("--scheduler", default="local",
                        help="with --cohort: 'local' (a LocalCluster, default) or a scheduler address "
                             "such as tcp://host:8786")
    parser.add_argument("--workers", type=int, default=None,
                        help="with --cohort and a local scheduler: number of workers (default: Dask's)")
    parser.add_argument("--threads-per-worker", type=int, default=1,
                        help="with --cohort and a local scheduler: threads per worker (default 1)")


def cohort_main(args) -> int:
    """Run ``pettk recon --cohort MANIFEST --output OUT_DIR [...]`` from parsed arguments.

    Reads the options of ``pettk recon`` (``algorithm``, ``iterations``, ``subsets``, ``psf_mm``,
    ``post_filter_mm``, ``prior``, ``beta``, ``gamma``, ``epsilon``, ``no_progress``) and those
    of :func:`add_cohort_arguments`; missing attributes take their defaults. Prints the report
    and returns 0 when no study failed, 1 otherwise.
    """
    def opt(name, default):
        value = getattr(args, name, None)
        return default if value is None else value

    if getattr(args, "sinogram", None):
        raise SystemExit("pettk recon: give either a SINOGRAM file or --cohort MANIFEST, not both")
    output = getattr(args, "output", None)
    if not output:
        raise SystemExit("pettk recon --cohort: --output must name the output folder")
    method = opt("algorithm", "osem")
    if method not in METHODS:
        raise SystemExit(f"pettk recon --cohort: --algorithm must be one of {', '.join(METHODS)}, got {method!r}")
    try:
        cohort = reconstruct_cohort(
            args.cohort, output, method=method, n_iter=opt("iterations", 4), n_subsets=opt("subsets", 8),
            psf_mm=opt("psf_mm", 0.0), post_filter_mm=opt("post_filter_mm", 0.0), prior=opt("prior", "rdp"),
            beta=opt("beta", 1.0), gamma=opt("gamma", 2.0), epsilon=opt("epsilon", 1e-3),
            scheduler=opt("scheduler", "local"), n_workers=getattr(args, "workers", None),
            threads_per_worker=opt("threads_per_worker", 1), progress=not getattr(args, "no_progress", False))
    except (TypeError, ValueError, ImportError) as err:
        raise SystemExit(f"pettk recon --cohort: {err}") from None
    print(cohort)
    print(f"pettk recon --cohort: report -> {Path(output) / REPORT_NAME}")
    return 0 if cohort.ok else 1


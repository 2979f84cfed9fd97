"""PETSIRD list-mode files: scanner geometry, events, sensitivity, histograms, reconstruction.

`PETSIRD <https://github.com/ETSInitiative/PETSIRD>`_ is the open standard for PET raw data; the
``petsird`` package (``pip install petsird``) reads and writes its yardl binary and NDJSON streams.
This module builds pettk objects on top of that package's readers:

* :class:`PETSIRDFile` -- open a stream (binary or NDJSON, detected from the first bytes), read the
  header into a :class:`PETSIRDScanner`, iterate time blocks and :class:`EventChunk` s of prompt (or
  delayed) coincidences, memory bounded by ``chunk_events`` plus one time block.
* :class:`PETSIRDScanner` -- every detecting element's centre in mm (the element box's centre moved
  by the element's and then the module's rigid transform), TOF bins and resolution per pair of
  module types as :class:`~pettk.geometry.TOFParams`, energy windows, and the component-based
  detection efficiencies (calibration factor × detection-bin efficiencies × module-pair
  efficiencies looked up by SGID); the sensitivity image (the back projection of the efficiencies
  of every LOR the scanner can measure, in chunks); the fitted
  :class:`~pettk.geometry.RegularPolygonScanner` when the geometry is one.
* :class:`PETSIRDListMode` -- the events of a file cached once as 16-byte records in a temporary
  file, served in chunks as the ``ListModeData`` of :func:`pettk.recon.listmode.lm_osem`.
* :func:`histogram_petsird` -- a sinogram (and its efficiency sinogram) for regular-polygon scanners.
* :func:`reconstruct_petsird` -- file to NIfTI in one call (list-mode OSEM, atomic write).
* :func:`write_petsird` and :func:`simulate_petsird_events` -- write events through petsird's
  writers (atomically) and sample the events of a known image, for tests and examples.

Conventions
-----------
A coincidence ``(detection_bins[0], detection_bins[1])`` becomes the LOR from the first detecting
element (start) to the second (end). PETSIRD stores TOF as ``(t1 - t2) c / 2`` in mm, negative
when the first detector fired first, which is pettk's signed position along the LOR (positive
towards the end). PETSIRD TOF bins must have equal widths on a grid centred on 0 (or offset by
half a bin); pettk's :class:`TOFParams` gets extra empty bins where needed so that its bins cover
every LOR, and ``EventChunk.tof_bin`` holds the bin in that grid. A detection bin is
``energy + (element + module * n_elements) * n_energy_bins``. Not modelled: gantry alignment and
bed or gantry motion (a warning says when a file has them), dead time and singles. Delayed
coincidences are read with ``kind="delayed"`` (``histogram_petsird(..., kind="delayed")``) and
turned into a randoms estimate by :func:`pettk.corrections.randoms_from_delayeds`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import struct
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .._validation import as_positive_float, as_positive_int
from ..geometry import ImageGrid, LORList, RegularPolygonScanner, SinogramLayout, TOFParams
from ..physics import ForwardModel
from ..projector import Projector
from ..psf import GaussianPSF
from .atomic import atomic_path
from .errors import FileFormatError
from .nifti import save_nifti

__all__ = [
    "PETSIRDFormatError", "PETSIRDScanner", "ModuleType", "TypePair", "EventChunk", "PETSIRDFile",
    "PETSIRDListMode", "PETSIRDRecon", "histogram_petsird", "reconstruct_petsird", "write_petsird",
    "simulate_petsird_events", "DEFAULT_CHUNK_EVENTS",
]

log = logging.getLogger(__name__)

#: Events per chunk unless told otherwise (about 40 MB of temporaries while projecting).
DEFAULT_CHUNK_EVENTS = 1 << 18

#: Detector positions closer than this (mm) count as equal when fitting a regular polygon.
_POSITION_TOL_MM = 2e-3

#: One cached event: detector indices (global), pettk TOF bin, type-pair code, efficiency.
_RECORD = np.dtype([("d0", "<i4"), ("d1", "<i4"), ("tof", "<i2"), ("pair", "u1"), ("pad", "u1"), ("eff", "<f4")])


class PETSIRDFormatError(FileFormatError):
    """A PETSIRD file is malformed, truncated, or uses something pettk cannot represent (a
    :class:`~pettk.io.FileFormatError`, hence a ``ValueError``)."""


def _petsird():
    try:
        import petsird
    except ImportError:
        raise ImportError("reading PETSIRD files needs the petsird package: pip install petsird") from None
    return petsird


def _fail(source, what: str) -> PETSIRDFormatError:
    return PETSIRDFormatError(f"{source}: {what}")


# --------------------------------------------------------------------------------------------
# Scanner description
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModuleType:
    """One type of detector module, replicated.

    Attributes
    ----------
    index : int
        The module type (index into ``ScannerGeometry.replicated_modules``).
    positions_mm : ndarray, shape ``(n_modules, n_elements, 3)``
        Centre of every detecting element in the gantry frame, mm.
    n_energy_bins : int
    energy_bin_edges_kev : ndarray, shape ``(n_energy_bins + 1,)``
    accepted_energy_bins : ndarray of int
        The energy bins inside the requested energy window (all of them by default).
    detection_bin_efficiencies : ndarray, shape ``(n_modules * n_elements * n_energy_bins,)``, or None
        ``None`` when the file stores none (all 1).
    offset : int
        Global index of this type's first element in :attr:`PETSIRDScanner.detector_positions_mm`.
    """

    index: int
    positions_mm: np.ndarray
    n_energy_bins: int
    energy_bin_edges_kev: np.ndarray
    accepted_energy_bins: np.ndarray
    detection_bin_efficiencies: np.ndarray | None
    offset: int

    @property
    def n_modules(self) -> int:
        return int(self.positions_mm.shape[0])

    @property
    def n_elements(self) -> int:
        """Detecting elements per module."""
        return int(self.positions_mm.shape[1])

    @property
    def n_detectors(self) -> int:
        return self.n_modules * self.n_elements

    @property
    def n_detection_bins(self) -> int:
        return self.n_detectors * self.n_energy_bins


@dataclass(frozen=True)
class TypePair:
    """Coincidences between module types ``types = (t0, t1)`` with ``t0 >= t1``.

    Attributes
    ----------
    tof_bin_edges_mm : ndarray, shape ``(n_tof_bins + 1,)``
        PETSIRD's TOF bin edges (``(t1 - t2) c / 2``, mm).
    tof_fwhm_mm : float
        The coincidence timing resolution as a FWHM along the LOR, mm.
    tof : TOFParams or None
        pettk's TOF bins (``None``: non-TOF, one PETSIRD bin or ``use_tof=False``).
    tof_offset : int
        pettk TOF bin of PETSIRD's bin 0.
    sgid : ndarray of int, shape ``(n_modules_t0, n_modules_t1)``, or None
        Symmetry group of every module pair (``-1``: not in coincidence); ``None``: all pairs
        in coincidence with module-pair efficiency 1.
    pair_efficiencies : ndarray, shape ``(n_sgid, n_elements_t0 * n_energy_t0, n_elements_t1 * n_energy_t1)``
        Module-pair efficiencies per SGID (``None`` with ``sgid``).
    """

    types: tuple[int, int]
    tof_bin_edges_mm: np.ndarray
    tof_fwhm_mm: float
    tof: TOFParams | None
    tof_offset: int
    sgid: np.ndarray | None
    pair_efficiencies: np.ndarray | None

    @property
    def n_tof_bins(self) -> int:
        """PETSIRD TOF bins (1 for non-TOF)."""
        return int(self.tof_bin_edges_mm.size - 1)


def _matrices(transforms, what: str, source) -> np.ndarray:
    if len(transforms) == 0:
        raise _fail(source, f"malformed header: {what} has no transforms")
    mats = np.asarray([np.asarray(t.matrix, dtype=np.float64) for t in transforms])
    if mats.shape[1:] != (3, 4) or not np.all(np.isfinite(mats)):
        raise _fail(source, f"malformed header: {what} transforms must be finite 3x4 matrices, got shape "
                            f"{mats.shape[1:]}")
    return mats


def _element_positions(rep_module, t: int, source) -> np.ndarray:
    """Centres of the detecting elements of every module of one type, ``(n_modules, n_elements, 3)``."""
    elements = rep_module.object.detecting_elements
    corners = np.asarray([np.asarray(c.c, dtype=np.float64) for c in elements.object.shape.corners])
    if corners.shape != (8, 3) or not np.all(np.isfinite(corners)):
        raise _fail(source, f"malformed header: the detecting element box of module type {t} must have 8 finite "
                            f"corners, got shape {corners.shape}")
    centre = corners.mean(axis=0)
    el = _matrices(elements.transforms, f"module type {t}'s detecting elements", source)
    mod = _matrices(rep_module.transforms, f"module type {t}", source)
    local = el[:, :, :3] @ centre + el[:, :, 3]                      # (n_elements, 3)
    return np.einsum("mij,ej->mei", mod[:, :, :3], local) + mod[:, None, :, 3]


def _lower(matrix, t0: int, t1: int, what: str, source):
    try:
        return matrix[t0][t1]
    except (IndexError, TypeError):
        raise _fail(source, f"malformed header: {what} has no entry [{t0}][{t1}]") from None


#: Largest distance (mm) of a detecting element from the scanner's centre that a header may give:
#: 100 m, far beyond any PET scanner; more means a damaged geometry (and absurd TOF grids).
MAX_SCANNER_REACH_MM = 1e5


def _tof_grid(edges: np.ndarray, reach_mm: float, source, types) -> tuple[int, int, float]:
    """pettk bins for PETSIRD TOF edges: ``(n_bins, offset, width)`` covering ``+-reach_mm``."""
    n = edges.size - 1
    width = float(edges[-1] - edges[0]) / n
    if width <= 0 or not np.allclose(np.diff(edges), width, rtol=1e-4, atol=1e-4 * abs(width)):
        raise _fail(source, f"TOF bins of module types {types} must be increasing and of equal width; "
                            f"got edges {edges.tolist()}")
    q = float(edges[0]) / width  # PETSIRD's first edge in bin widths
    if abs(2 * q - round(2 * q)) > 2e-3:
        raise _fail(source, f"TOF bins of module types {types} are not on a grid centred on the LOR midpoint "
                            f"(first edge {edges[0]:.6g} mm is not a multiple of half the bin width {width:.6g} mm)")
    q = round(2 * q) / 2
    parity = int(round(2 * q)) % 2  # pettk's grid -N/2 .. N/2 has a half-integer first edge for odd N
    # N/2 >= -q (PETSIRD's first bin exists), N/2 >= q + n (its last), N/2 * width >= reach
    half = max(-q, q + n, reach_mm / width - 1e-6)
    n_total = 2 * math.ceil(half - 0.5 * parity) + parity
    offset = int(round(q + n_total / 2))
    return n_total, offset, width


class PETSIRDScanner:
    """The scanner of a PETSIRD header, in pettk terms.

    Parameters
    ----------
    header : petsird.Header
    source : str, optional
        Names the file in error messages.
    energy_window_kev : (float, float), optional
        Keep only energy bins lying inside this window (keV); events in other bins are dropped
        and the sensitivity sums the efficiencies of the kept bins. Default: all bins.
    use_tof : bool
        Use the TOF bins (default); ``False`` reconstructs without TOF.

    Attributes
    ----------
    model_name : str
    module_types : list of ModuleType
    type_pairs : list of TypePair
        Every ``(t0, t1)`` with ``t0 >= t1``, in the order ``(0,0), (1,0), (1,1), ...``.
    calibration_factor : float
    detector_positions_mm : ndarray, shape ``(n_detectors, 3)``
        All detecting elements, type by type, module by module.
    """

    def __init__(self, header, source="<header>", *, energy_window_kev=None, use_tof: bool = True):
        self.source = str(source)
        self.use_tof = bool(use_tof)
        scanner = header.scanner
        self.model_name = str(scanner.model_name)
        alignment = scanner.gantry_alignment
        if alignment is not None and not np.allclose(np.asarray(alignment.matrix, dtype=np.float64), np.eye(3, 4)):
            warnings.warn(f"{self.source}: gantry_alignment is not applied; positions and images are in the PET "
                          "gantry frame", RuntimeWarning, stacklevel=3)
        reps = scanner.scanner_geometry.replicated_modules
        if len(reps) == 0:
            raise _fail(self.source, "malformed header: the scanner geometry has no detector modules")
        n_types = len(reps)
        window = None
        if energy_window_kev is not None:
            window = tuple(float(v) for v in energy_window_kev)
            if len(window) != 2 or not window[0] < window[1]:
                raise ValueError(f"energy_window_kev must be (low, high) with low < high, got {energy_window_kev!r}")
        eff = scanner.detection_efficiencies
        self.calibration_factor = float(eff.calibration_factor) if eff is not None else 0.0
        if not np.isfinite(self.calibration_factor) or self.calibration_factor < 0:
            raise _fail(self.source, f"malformed header: calibration_factor = {self.calibration_factor}")
        if self.calibration_factor == 0.0:  # never set: the default of petsird.DetectionEfficiencies()
            log.info("%s: calibration_factor is 0 (unset); using 1", self.source)
            self.calibration_factor = 1.0
        dbe_all = list(eff.detection_bin_efficiencies) if eff is not None else []
        if len(dbe_all) not in (0, n_types):
            raise _fail(self.source, f"malformed header: detection_bin_efficiencies has {len(dbe_all)} entries for "
                                     f"{n_types} module types")
        energy_edges = scanner.event_energy_bin_edges
        if len(energy_edges) < n_types:
            raise _fail(self.source, f"malformed header: event_energy_bin_edges has {len(energy_edges)} entries for "
                                     f"{n_types} module types")
        self.module_types: list[ModuleType] = []
        offset = 0
        for t, rep in enumerate(reps):
            positions = _element_positions(rep, t, self.source)
            edges = np.asarray(energy_edges[t].edges, dtype=np.float64).reshape(-1)
            if edges.size < 2:
                raise _fail(self.source, f"malformed header: module type {t} has no energy bins "
                                         f"(event_energy_bin_edges[{t}] = {edges.tolist()})")
            n_en = edges.size - 1
            if window is None:
                accepted = np.arange(n_en)
            else:
                tol = 1e-3
                accepted = np.flatnonzero((edges[:-1] >= window[0] - tol) & (edges[1:] <= window[1] + tol))
                if accepted.size == 0:
                    raise ValueError(f"energy_window_kev={window} contains none of the energy bins of module type {t} "
                                     f"in {self.source} (edges {edges.tolist()} keV)")
            n_bins = positions.shape[0] * positions.shape[1] * n_en
            dbe = None
            if dbe_all and len(dbe_all[t]) > 0:
                dbe = np.asarray(dbe_all[t], dtype=np.float64)
                if dbe.shape != (n_bins,):
                    raise _fail(self.source, f"malformed header: detection_bin_efficiencies[{t}] has {dbe.size} values "
                                             f"for {n_bins} detection bins")
                if not np.all(np.isfinite(dbe)) or np.any(dbe < 0):
                    raise _fail(self.source, f"malformed header: detection_bin_efficiencies[{t}] must be finite "
                                             "and >= 0")
            self.module_types.append(ModuleType(t, positions, n_en, edges, accepted, dbe, offset))
            offset += positions.shape[0] * positions.shape[1]
        self.detector_positions_mm = np.concatenate([m.positions_mm.reshape(-1, 3) for m in self.module_types])
        self.detector_positions_mm.setflags(write=False)
        lo, hi = self.detector_positions_mm.min(axis=0), self.detector_positions_mm.max(axis=0)
        centre = 0.5 * (lo + hi)
        # half of any LOR's length is at most the largest distance of an element from `centre`
        self._reach_mm = float(np.linalg.norm(self.detector_positions_mm - centre, axis=1).max()) + 1e-3
        if not math.isfinite(self._reach_mm) or self._reach_mm > MAX_SCANNER_REACH_MM:
            raise _fail(self.source, f"malformed header: detecting elements lie up to {self._reach_mm:.6g} mm from "
                                     f"the scanner's centre (more than {MAX_SCANNER_REACH_MM:g} mm); the geometry "
                                     "is damaged")
        self.type_pairs: list[TypePair] = []
        for t0 in range(n_types):
            for t1 in range(t0 + 1):
                self.type_pairs.append(self._type_pair(scanner, eff, t0, t1))
        self._pair_index = {p.types: i for i, p in enumerate(self.type_pairs)}

    # -- construction -------------------------------------------------------------------------
    def _type_pair(self, scanner, eff, t0: int, t1: int) -> TypePair:
        src = self.source
        edges = np.asarray(_lower(scanner.tof_bin_edges, t0, t1, "tof_bin_edges", src).edges, dtype=np.float64)
        edges = edges.reshape(-1)
        if edges.size < 2 or not np.all(np.isfinite(edges)):
            raise _fail(src, f"malformed header: tof_bin_edges[{t0}][{t1}] must hold at least 2 finite edges "
                             f"(the coincidence window), got {edges.tolist()}")
        fwhm = 0.0
        with contextlib.suppress(PETSIRDFormatError):
            fwhm = float(_lower(scanner.tof_resolution, t0, t1, "tof_resolution", src))
        tof, tof_offset = None, 0
        if edges.size > 2 and self.use_tof:
            if not np.isfinite(fwhm) or fwhm <= 0:
                raise _fail(src, f"malformed header: module types ({t0}, {t1}) have {edges.size - 1} TOF bins but "
                                 f"tof_resolution[{t0}][{t1}] = {fwhm} (must be a FWHM > 0 in mm)")
            n_total, tof_offset, width = _tof_grid(edges, self._reach_mm, src, (t0, t1))
            tof = TOFParams(fwhm_mm=fwhm, n_bins=n_total, bin_width_mm=width)
        sgid = pair_eff = None
        luts = list(eff.module_pair_sgidlut) if eff is not None else []
        if luts:
            m0, m1 = self.module_types[t0], self.module_types[t1]
            lut = _lower(eff.module_pair_sgidlut, t0, t1, "module_pair_sgidlut", src)
            sgid = np.full((m0.n_modules, m1.n_modules), -1, dtype=np.int64)
            if len(lut) != m0.n_modules:
                raise _fail(src, f"malformed header: module_pair_sgidlut[{t0}][{t1}] has {len(lut)} rows for "
                                 f"{m0.n_modules} modules")
            for i, row in enumerate(lut):
                if len(row) not in (i + 1, m1.n_modules) or len(row) > m1.n_modules:
                    raise _fail(src, f"malformed header: module_pair_sgidlut[{t0}][{t1}][{i}] has {len(row)} entries")
                sgid[i, :len(row)] = np.asarray(row, dtype=np.int64)
            vectors = _lower(eff.module_pair_efficiencies_vectors, t0, t1, "module_pair_efficiencies_vectors", src)
            n_sgid = int(sgid.max()) + 1
            if len(vectors) < n_sgid:
                raise _fail(src, f"malformed header: module_pair_efficiencies_vectors[{t0}][{t1}] has {len(vectors)} "
                                 f"entries but the SGID LUT uses {n_sgid}")
            shape = (m0.n_elements * m0.n_energy_bins, m1.n_elements * m1.n_energy_bins)
            pair_eff = np.zeros((max(n_sgid, 1),) + shape, dtype=np.float32)
            for entry in vectors[:n_sgid]:
                values = np.asarray(entry.values, dtype=np.float32)
                g = int(entry.sgid)
                if values.shape != shape or not 0 <= g < n_sgid:
                    raise _fail(src, f"malformed header: module-pair efficiencies of SGID {g} for module types "
                                     f"({t0}, {t1}) have shape {values.shape}, expected {shape}")
                pair_eff[g] = values
            if not np.all(np.isfinite(pair_eff)) or np.any(pair_eff < 0):
                raise _fail(src, f"malformed header: module-pair efficiencies of module types ({t0}, {t1}) must be "
                                 "finite and >= 0")
        return TypePair((t0, t1), edges, fwhm, tof, tof_offset, sgid, pair_eff)

    # -- properties ---------------------------------------------------------------------------
    @property
    def n_detectors(self) -> int:
        """Number of detecting elements (all module types)."""
        return int(self.detector_positions_mm.shape[0])

    def pair(self, t0: int, t1: int) -> TypePair:
        """The :class:`TypePair` of module types ``t0 >= t1``."""
        try:
            return self.type_pairs[self._pair_index[(t0, t1)]]
        except KeyError:
            raise ValueError(f"no module-type pair ({t0}, {t1}); pairs are {list(self._pair_index)}") from None

    def pair_code(self, t0: int, t1: int) -> int:
        return self._pair_index[(t0, t1)]

    # -- efficiencies -------------------------------------------------------------------------
    def _efficiency(self, pair: TypePair, el0, el1, en0, en1) -> np.ndarray:
        """Efficiency of detection bins given as (local element, energy) per side, float64."""
        mt0, mt1 = self.module_types[pair.types[0]], self.module_types[pair.types[1]]
        out = np.full(np.shape(el0), self.calibration_factor, dtype=np.float64)
        if mt0.detection_bin_efficiencies is not None:
            out *= mt0.detection_bin_efficiencies[el0 * mt0.n_energy_bins + en0]
        if mt1.detection_bin_efficiencies is not None:
            out *= mt1.detection_bin_efficiencies[el1 * mt1.n_energy_bins + en1]
        if pair.sgid is not None:
            mod0, e0 = np.divmod(el0, mt0.n_elements)
            mod1, e1 = np.divmod(el1, mt1.n_elements)
            g = pair.sgid[mod0, mod1]
            valid = g >= 0
            out *= np.where(valid, pair.pair_efficiencies[np.where(valid, g, 0), e0 * mt0.n_energy_bins + en0,
                                                          e1 * mt1.n_energy_bins + en1], 0.0)
        return out

    def event_efficiency(self, t0: int, t1: int, detection_bins) -> np.ndarray:
        """Detection efficiency of coincidences between detection bins ``(n, 2)`` of module types
        ``t0 >= t1`` (ordered as PETSIRD requires), float64 ``(n,)``, calibration factor included."""
        pair = self.pair(t0, t1)
        b = np.asarray(detection_bins, dtype=np.int64).reshape(-1, 2)
        n0, n1 = self.module_types[t0].n_energy_bins, self.module_types[t1].n_energy_bins
        return self._efficiency(pair, b[:, 0] // n0, b[:, 1] // n1, b[:, 0] % n0, b[:, 1] % n1)

    def lor_efficiency(self, t0: int, t1: int, local0, local1) -> np.ndarray:
        """Efficiency of the LORs between elements ``local0`` (type ``t0``) and ``local1`` (type
        ``t1``), summed over the accepted energy bins of both, float64. Elements are numbered
        ``module * n_elements + element`` within their type; order does not matter."""
        pair = self.pair(t0, t1)
        a = np.asarray(local0, dtype=np.int64)
        b = np.asarray(local1, dtype=np.int64)
        if t0 == t1:  # PETSIRD orders same-type coincidences by detection bin, i.e. by element
            a, b = np.maximum(a, b), np.minimum(a, b)
        total = np.zeros(np.broadcast_shapes(a.shape, b.shape), dtype=np.float64)
        for en0 in self.module_types[t0].accepted_energy_bins:
            for en1 in self.module_types[t1].accepted_energy_bins:
                total += self._efficiency(pair, a, b, en0, en1)
        return total

    # -- all LORs -----------------------------------------------------------------------------
    def iter_lors(self, chunk_lors: int = DEFAULT_CHUNK_EVENTS) -> Iterator[tuple[TypePair, np.ndarray, np.ndarray]]:
        """Every LOR the scanner can measure (efficiency > 0), in chunks.

        Yields ``(pair, detectors, efficiency)``: ``detectors`` ``(n, 2)`` global element indices
        (start, end as in an ordered coincidence), ``efficiency`` ``(n,)`` float64 summed over the
        accepted energy bins.
        """
        chunk_lors = as_positive_int("chunk_lors", chunk_lors)
        for pair in self.type_pairs:
            t0, t1 = pair.types
            m0, m1 = self.module_types[t0], self.module_types[t1]
            n0, n1 = m0.n_detectors, m1.n_detectors
            row = 1 if t0 == t1 else 0
            while row < n0:
                # rows row..stop-1 hold at most chunk_lors pairs (at least one row)
                widths = np.arange(row, n0) if t0 == t1 else np.full(n0 - row, n1)
                stop = row + max(1, int(np.searchsorted(np.cumsum(widths), chunk_lors, side="right")))
                i = np.arange(row, stop)
                counts = i if t0 == t1 else np.full(i.size, n1)
                a = np.repeat(i, counts)
                starts = np.cumsum(counts) - counts
                b = np.arange(a.size) - np.repeat(starts, counts)
                row = stop
                if a.size == 0:
                    continue
                eff = self.lor_efficiency(t0, t1, a, b)
                keep = eff > 0
                if not np.any(keep):
                    continue
                det = np.stack([a[keep] + m0.offset, b[keep] + m1.offset], axis=1)
                yield pair, det, eff[keep]

    def sensitivity(self, grid: ImageGrid, *, chunk_lors: int = DEFAULT_CHUNK_EVENTS, psf=None,
                    backend: str = "auto", dtype=torch.float32, device="cpu", progress: bool = False) -> torch.Tensor:
        """The sensitivity image: the back projection of the efficiency of every LOR the scanner can
        measure (summed over its PETSIRD TOF bins with TOF), then the PSF adjoint.

        Parameters
        ----------
        grid : ImageGrid
            3D grid in the gantry frame (mm).
        chunk_lors : int
            LORs per projector call (memory bound).
        psf : GaussianPSF or FWHM in mm, optional
        backend, dtype, device
            As for :class:`~pettk.projector.Projector`.

        Returns
        -------
        torch.Tensor of shape ``grid.shape``.
        """
        _check_grid(grid)
        psf = _make_psf(grid, psf)
        from tqdm.auto import tqdm

        sens = torch.zeros(grid.shape, dtype=dtype, device=device)
        with torch.no_grad(), tqdm(desc="sensitivity", unit=" LORs", disable=not progress, leave=False) as bar:
            for pair, det, eff in self.iter_lors(chunk_lors):
                start = self.detector_positions_mm[det[:, 0]]
                end = self.detector_positions_mm[det[:, 1]]
                weights = torch.as_tensor(eff, dtype=sens.dtype, device=device)
                if pair.tof is None:
                    sens += Projector(grid, LORList(start, end), backend).adjoint(weights)
                else:
                    for b in range(pair.n_tof_bins):
                        bins = np.full(det.shape[0], b + pair.tof_offset)
                        sens += Projector(grid, LORList(start, end, bins), backend, tof=pair.tof).adjoint(weights)
                bar.update(det.shape[0])
        return sens if psf is None else psf.adjoint(sens)

    def default_grid(self, voxel_size_mm: float | None = None) -> ImageGrid:
        """A 3D grid for this scanner: the square inscribed in the innermost detector circle,
        the detectors' axial extent, isotropic voxels of ``voxel_size_mm`` (default: the median
        distance between neighbouring detecting elements)."""
        pos = self.detector_positions_mm
        if voxel_size_mm is None:
            nearest = []
            for i in np.linspace(0, len(pos) - 1, min(len(pos), 128)).astype(int):
                d = np.linalg.norm(pos - pos[i], axis=1)
                d = d[d > 1e-6]
                if d.size:
                    nearest.append(d.min())
            voxel_size_mm = float(np.median(nearest)) if nearest else 1.0
        v = as_positive_float("voxel_size_mm", voxel_size_mm)
        r_in = float(np.hypot(pos[:, 0], pos[:, 1]).min())
        n_xy = max(1, int(math.floor(math.sqrt(2.0) * r_in / v)))
        z_lo, z_hi = float(pos[:, 2].min()), float(pos[:, 2].max())
        n_z = max(1, int(round((z_hi - z_lo) / v)) + 1)
        origin = (-(n_xy - 1) / 2 * v, -(n_xy - 1) / 2 * v, 0.5 * (z_lo + z_hi) - (n_z - 1) / 2 * v)
        return ImageGrid((n_xy, n_xy, n_z), v, origin)

    # -- regular polygon ----------------------------------------------------------------------
    def regular_polygon(self) -> tuple[RegularPolygonScanner, np.ndarray, np.ndarray]:
        """Fit a :class:`~pettk.geometry.RegularPolygonScanner` to a one-module-type geometry.

        Returns ``(scanner, ring, crystal)``: per detecting element its ring and in-ring crystal
        index, each ``(n_detectors,)``. Raises ``ValueError`` when the elements are not the crystals
        of a regular polygon in pettk's convention (side 0 facing +x, crystals centred on sides).
        """
        fit = getattr(self, "_polygon", None)
        if fit is None:
            fit = self._polygon = self._fit_polygon()
        if isinstance(fit, str):
            raise ValueError(f"{self.source}: the scanner is not a regular polygon in pettk's convention ({fit}); "
                             "use list-mode reconstruction")
        return fit

    def _fit_polygon(self):
        if len(self.module_types) != 1:
            return f"{len(self.module_types)} module types"
        pos = self.detector_positions_mm
        z = np.round(pos[:, 2] / _POSITION_TOL_MM) * _POSITION_TOL_MM
        rings, ring = np.unique(z, return_inverse=True)
        counts = np.bincount(ring)
        if np.any(counts != counts[0]):
            return f"rings hold different numbers of elements: {sorted(set(counts.tolist()))}"
        n = int(counts[0])
        if rings.size > 1 and np.any(np.diff(rings) < 10 * _POSITION_TOL_MM):
            return "rings too close together"
        ring_z = np.array([pos[ring == r, 2].mean() for r in range(rings.size)])
        phi = np.arctan2(pos[:, 1], pos[:, 0])
        for n_sides in (d for d in range(3, n + 1) if n % d == 0):
            n_cps = n // n_sides
            side = np.round(phi * n_sides / (2 * np.pi)).astype(np.int64) % n_sides
            angle = 2 * np.pi * side / n_sides
            r = pos[:, 0] * np.cos(angle) + pos[:, 1] * np.sin(angle)
            t = -pos[:, 0] * np.sin(angle) + pos[:, 1] * np.cos(angle)
            radius = float(np.median(r))
            if np.abs(r - radius).max() > _POSITION_TOL_MM or radius <= 0:
                continue
            if n_cps == 1:
                spacing = radius * math.tan(math.pi / n_sides)
                c = np.zeros(pos.shape[0], dtype=np.int64)
                if np.abs(t).max() > _POSITION_TOL_MM:
                    continue
            else:
                spacing = (t.max() - t.min()) / (n_cps - 1)
                if spacing <= 0:
                    continue
                cf = t / spacing + (n_cps - 1) / 2
                c = np.round(cf).astype(np.int64)
                if np.abs(cf - c).max() * spacing > _POSITION_TOL_MM or c.min() < 0 or c.max() >= n_cps:
                    continue
            try:
                scanner = RegularPolygonScanner(radius, n_sides, n_cps, spacing, ring_z)
            except ValueError:
                continue
            crystal = side * n_cps + c
            key = ring * n + crystal
            if np.unique(key).size != key.size:
                continue
            expected = scanner.crystal_positions_mm()[ring, crystal]
            if np.abs(expected - pos).max() <= _POSITION_TOL_MM:
                return scanner, ring.astype(np.int64), crystal
        return "no polygon with crystals centred on its sides fits the element positions"

    def __repr__(self) -> str:
        types = ", ".join(f"{m.n_modules}x{m.n_elements}" for m in self.module_types)
        return f"PETSIRDScanner(model_name={self.model_name!r}, modules={types}, n_detectors={self.n_detectors})"


def _check_grid(grid) -> None:
    if not isinstance(grid, ImageGrid):
        raise TypeError(f"grid must be an ImageGrid, got {type(grid).__name__}")
    if grid.ndim != 3:
        raise ValueError(f"PETSIRD LORs are 3D: grid must be 3D, got shape {grid.shape}")


def _make_psf(grid: ImageGrid, psf):
    if psf is None or isinstance(psf, GaussianPSF):
        return None if psf is None or psf.is_identity else psf
    made = GaussianPSF(grid, psf)
    return None if made.is_identity else made


# --------------------------------------------------------------------------------------------
# Events
# --------------------------------------------------------------------------------------------
@dataclass
class EventChunk:
    """Coincidences of one module-type pair, ready for pettk.

    Attributes
    ----------
    pair : TypePair
    detection_bins : ndarray of uint32, shape ``(n, 2)``
        As stored in the file.
    tof_idx : ndarray of uint32, shape ``(n,)``
        PETSIRD TOF bin.
    detectors : ndarray of int64, shape ``(n, 2)``
        Global element indices (rows of ``scanner.detector_positions_mm``): start, end.
    tof_bin : ndarray of int64, shape ``(n,)``, or None
        pettk TOF bin (``tof_idx + pair.tof_offset``); ``None`` without TOF.
    efficiency : ndarray of float64, shape ``(n,)``
    time_block : int
        Index of the time block holding the chunk's last event.
    """

    scanner: PETSIRDScanner = field(repr=False)
    pair: TypePair
    detection_bins: np.ndarray
    tof_idx: np.ndarray
    detectors: np.ndarray
    tof_bin: np.ndarray | None
    efficiency: np.ndarray
    time_block: int

    def __len__(self) -> int:
        return int(self.detectors.shape[0])

    @property
    def tof(self) -> TOFParams | None:
        return self.pair.tof

    @property
    def start_mm(self) -> np.ndarray:
        """LOR start points, ``(n, 3)`` mm."""
        return self.scanner.detector_positions_mm[self.detectors[:, 0]]

    @property
    def end_mm(self) -> np.ndarray:
        return self.scanner.detector_positions_mm[self.detectors[:, 1]]

    def lor_list(self) -> LORList:
        """The events as a :class:`~pettk.geometry.LORList` (with their TOF bins under TOF)."""
        return LORList(self.start_mm, self.end_mm, self.tof_bin)


def _detect_format(path: Path) -> str:
    with open(path, "rb") as f:
        head = f.read(16)
    if head.startswith(b"yardl"):
        return "binary"
    if head.lstrip()[:1] == b"{":
        return "ndjson"
    if not head:
        raise _fail(path, "empty file, not a PETSIRD stream")
    raise _fail(path, f"not a PETSIRD file (neither yardl binary nor NDJSON; it starts with {head[:8]!r})")


#: Errors petsird's readers raise on damaged input (besides EOFError).
_READ_ERRORS = (RuntimeError, ValueError, KeyError, IndexError, TypeError, struct.error, UnicodeDecodeError,
                OverflowError, MemoryError, AttributeError, BufferError)


class PETSIRDFile:
    """A PETSIRD stream on disk: its scanner and its events.

    Parameters
    ----------
    path : str or Path
        A yardl binary or NDJSON PETSIRD file (detected from its first bytes).
    energy_window_kev, use_tof
        See :class:`PETSIRDScanner`.

    The header is read on construction (errors name the file). Iterating events reads the time
    blocks once, one block at a time; a second iteration reopens the file. Use as a context
    manager, or call :meth:`close`.
    """

    def __init__(self, path, *, energy_window_kev=None, use_tof: bool = True):
        petsird = _petsird()
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"PETSIRD file not found: {self.path}")
        self.format = _detect_format(self.path)
        self._reader = None
        self._warned: set = set()
        reader, header = self._open(petsird)
        self._reader = reader
        self.header = header
        self.stats: dict = {}
        try:
            self.scanner = PETSIRDScanner(header, self.path, energy_window_kev=energy_window_kev, use_tof=use_tof)
        except BaseException:
            self.close()
            raise

    # -- low level ----------------------------------------------------------------------------
    def _open(self, petsird):
        cls = petsird.BinaryPETSIRDReader if self.format == "binary" else petsird.NDJsonPETSIRDReader
        reader = None
        # pettk opens (and always closes) the file: petsird's readers leave a file they opened
        # themselves open when their constructor fails on a damaged file
        handle = open(self.path, "rb") if self.format == "binary" else open(self.path, encoding="utf-8")
        try:
            reader = cls(handle, skip_completed_check=True)
            reader._pettk_handle = handle
            header = reader.read_header()
        except (EOFError, BufferError):  # BufferError: petsird's buffer refill when data run out
            _close_quietly(reader, handle)
            raise _fail(self.path, "truncated PETSIRD file: it ends inside the header") from None
        except _READ_ERRORS as err:
            _close_quietly(reader, handle)
            if "schema" in str(err).lower():
                what = (f"its PETSIRD schema differs from the installed petsird's ({_petsird_version()}): written "
                        "with another PETSIRD version, or a damaged header")
            else:
                what = "truncated or malformed PETSIRD header"
            raise _fail(self.path, f"{what} ({type(err).__name__}: {err})") from None
        except BaseException:
            _close_quietly(reader, handle)
            raise
        return reader, header

    def close(self) -> None:
        _close_quietly(self._reader)
        self._reader = None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(f"{self.path}: {message}", RuntimeWarning, stacklevel=4)

    def time_blocks(self) -> Iterator:
        """The file's time blocks (petsird ``TimeBlock`` union cases), one at a time.

        Raises :class:`PETSIRDFormatError` naming the file when the stream is truncated or damaged.
        """
        petsird = _petsird()
        reader = self._reader
        self._reader = None
        if reader is None:
            reader, _ = self._open(petsird)
        count = 0
        try:
            iterator = iter(reader.read_time_blocks())
            while True:
                try:
                    block = next(iterator)
                except StopIteration:
                    break
                except EOFError:
                    raise _fail(self.path, f"truncated PETSIRD file: it ends after {count} complete time blocks "
                                           "(the end-of-stream marker is missing)") from None
                except _READ_ERRORS as err:
                    raise _fail(self.path, f"malformed time block {count} ({type(err).__name__}: {err})") from None
                count += 1
                yield block
        finally:
            _close_quietly(reader)

    # -- events -------------------------------------------------------------------------------
    def events(self, chunk_events: int = DEFAULT_CHUNK_EVENTS, kind: str = "prompt") -> Iterator[EventChunk]:
        """Coincidences in chunks of at most ``chunk_events`` per module-type pair.

        Events outside the energy window, with efficiency 0 or joining an element to itself are
        dropped; :attr:`stats` counts them after the pass. ``kind`` is ``"prompt"`` or ``"delayed"``.
        """
        chunk_events = as_positive_int("chunk_events", chunk_events)
        if kind not in ("prompt", "delayed"):
            raise ValueError(f"kind must be 'prompt' or 'delayed', got {kind!r}")
        petsird = _petsird()
        sc = self.scanner
        n_types = len(sc.module_types)
        stats = {"time_blocks": 0, "event_time_blocks": 0, "events_read": 0, "events_kept": 0,
                 "dropped_energy": 0, "dropped_zero_efficiency": 0, "dropped_same_element": 0, "other_blocks": 0}
        self.stats = stats
        buffers: dict[int, list] = {i: [] for i in range(len(sc.type_pairs))}
        filled = dict.fromkeys(buffers, 0)
        motion = (petsird.TimeBlock.BedMovementTimeBlock, petsird.TimeBlock.GantryMovementTimeBlock)
        for k, block in enumerate(self.time_blocks()):
            stats["time_blocks"] += 1
            if isinstance(block, motion):
                self._warn_once("motion", f"{type(block).__name__.split('.')[-1]} found: motion is not modelled, "
                                          "events are reconstructed in the gantry frame")
            if not isinstance(block, petsird.TimeBlock.EventTimeBlock):
                stats["other_blocks"] += 1
                continue
            stats["event_time_blocks"] += 1
            lists = block.value.prompt_events if kind == "prompt" else block.value.delayed_events
            if len(lists) == 0:
                continue
            if len(lists) > n_types:
                self._warn_once("rows", f"{kind}_events has {len(lists)} rows for {n_types} module types; the extra "
                                        "rows are ignored")
            elif len(lists) < n_types:
                raise _fail(self.path, f"malformed time block {k}: {kind}_events has {len(lists)} rows for "
                                       f"{n_types} module types")
            for t0 in range(n_types):
                if len(lists[t0]) < t0 + 1:
                    raise _fail(self.path, f"malformed time block {k}: {kind}_events[{t0}] has {len(lists[t0])} lists, "
                                           f"expected {t0 + 1}")
                for t1 in range(t0 + 1):
                    events = lists[t0][t1]
                    if len(events) == 0:
                        continue
                    code = sc.pair_code(t0, t1)
                    chunk = self._convert(events, sc.type_pairs[code], k, stats)
                    if chunk is None:
                        continue
                    buffers[code].append(chunk)
                    filled[code] += len(chunk)
                    while filled[code] >= chunk_events:
                        out, rest = _split(_concat(buffers[code]), chunk_events)
                        buffers[code] = [rest] if rest is not None else []
                        filled[code] -= chunk_events
                        yield out
        for parts in buffers.values():
            if parts:
                yield _concat(parts)
        for key in ("dropped_zero_efficiency", "dropped_same_element"):
            if stats[key]:
                what = ("have detection efficiency 0" if key == "dropped_zero_efficiency"
                        else "join an element to itself")
                self._warn_once(key, f"{stats[key]} events {what} and were dropped")

    def _convert(self, events, pair: TypePair, k: int, stats: dict) -> EventChunk | None:
        sc = self.scanner
        n = len(events)
        try:
            flat = np.fromiter((v for e in events for v in (e.detection_bins[0], e.detection_bins[1], e.tof_idx)),
                               dtype=np.int64, count=3 * n).reshape(n, 3)
        except (TypeError, ValueError, IndexError, AttributeError, OverflowError) as err:
            raise _fail(self.path, f"malformed coincidence events in time block {k}: {err}") from None
        stats["events_read"] += n
        t0, t1 = pair.types
        mt0, mt1 = sc.module_types[t0], sc.module_types[t1]
        bins, tof_idx = flat[:, :2], flat[:, 2]
        for side, mt in ((0, mt0), (1, mt1)):
            bad = (bins[:, side] < 0) | (bins[:, side] >= mt.n_detection_bins)
            if np.any(bad):
                raise _fail(self.path, f"malformed event in time block {k}: detection bin {int(bins[bad, side][0])} is "
                                       f"outside the {mt.n_detection_bins} detection bins of module type {mt.index}")
        if np.any((tof_idx < 0) | (tof_idx >= pair.n_tof_bins)):
            bad = int(tof_idx[(tof_idx < 0) | (tof_idx >= pair.n_tof_bins)][0])
            raise _fail(self.path, f"malformed event in time block {k}: tof_idx {bad} is outside the "
                                   f"{pair.n_tof_bins} TOF bins of module types {pair.types}")
        if t0 == t1 and np.any(bins[:, 0] < bins[:, 1]):
            i = int(np.flatnonzero(bins[:, 0] < bins[:, 1])[0])
            raise _fail(self.path, f"malformed event in time block {k}: detection_bins {bins[i].tolist()} are not "
                                   "ordered (PETSIRD requires detection_bins[0] >= detection_bins[1] within a "
                                   "module type)")
        el0, en0 = np.divmod(bins[:, 0], mt0.n_energy_bins)
        el1, en1 = np.divmod(bins[:, 1], mt1.n_energy_bins)
        keep = np.isin(en0, mt0.accepted_energy_bins) & np.isin(en1, mt1.accepted_energy_bins)
        stats["dropped_energy"] += int(n - keep.sum())
        same = (el0 == el1) & (t0 == t1)
        stats["dropped_same_element"] += int((same & keep).sum())
        keep &= ~same
        eff = sc._efficiency(pair, el0[keep], el1[keep], en0[keep], en1[keep])
        positive = eff > 0
        stats["dropped_zero_efficiency"] += int((~positive).sum())
        idx = np.flatnonzero(keep)[positive]
        if idx.size == 0:
            return None
        stats["events_kept"] += int(idx.size)
        det = np.stack([el0[idx] + mt0.offset, el1[idx] + mt1.offset], axis=1)
        tof_bin = None if pair.tof is None else tof_idx[idx] + pair.tof_offset
        return EventChunk(sc, pair, bins[idx].astype(np.uint32), tof_idx[idx].astype(np.uint32), det, tof_bin,
                          eff[positive], k)

    def count_events(self, kind: str = "prompt") -> int:
        """Number of usable events (one pass over the file; see :meth:`events`)."""
        return sum(len(c) for c in self.events(kind=kind))

    def __repr__(self) -> str:
        return f"PETSIRDFile({str(self.path)!r}, format={self.format!r}, scanner={self.scanner!r})"


def _petsird_version() -> str:
    try:
        from importlib.metadata import version
        return version("petsird")
    except Exception:  # noqa: BLE001 - only for a message
        return "unknown version"


def _close_quietly(reader, handle=None) -> None:
    """Close a petsird reader and the file pettk opened for it (``reader._pettk_handle``)."""
    if reader is not None:
        with contextlib.suppress(Exception):
            reader.close()
        handle = getattr(reader, "_pettk_handle", handle)
    if handle is not None:
        handle.close()


def _concat(parts: list[EventChunk]) -> EventChunk:
    if len(parts) == 1:
        return parts[0]
    first = parts[0]
    tof = None if first.tof_bin is None else np.concatenate([p.tof_bin for p in parts])
    return EventChunk(first.scanner, first.pair, np.concatenate([p.detection_bins for p in parts]),
                      np.concatenate([p.tof_idx for p in parts]), np.concatenate([p.detectors for p in parts]), tof,
                      np.concatenate([p.efficiency for p in parts]), parts[-1].time_block)


def _split(chunk: EventChunk, n: int) -> tuple[EventChunk, EventChunk | None]:
    if len(chunk) <= n:
        return chunk, None

    def cut(sl):
        return EventChunk(chunk.scanner, chunk.pair, chunk.detection_bins[sl], chunk.tof_idx[sl], chunk.detectors[sl],
                          None if chunk.tof_bin is None else chunk.tof_bin[sl], chunk.efficiency[sl], chunk.time_block)
    return cut(slice(0, n)), cut(slice(n, None))


# --------------------------------------------------------------------------------------------
# List-mode data for the reconstruction
# --------------------------------------------------------------------------------------------
class PETSIRDListMode:
    """The events of a PETSIRD file as ``ListModeData`` for :func:`pettk.recon.listmode.lm_osem`.

    One pass over the file caches every usable prompt as a 16-byte record (global detector
    indices, pettk TOF bin, module-type pair, efficiency) in a temporary file; the reconstruction
    then reads interleaved subsets of it chunk by chunk, so memory stays O(image + chunk).

    Parameters
    ----------
    source : PETSIRDFile, str or Path
    grid : ImageGrid
        3D grid (mm, gantry frame).
    chunk_events : int
        Events per projector call.
    psf : GaussianPSF or FWHM in mm, optional
    backend : str
        Projector backend.
    cache_dir : str or Path, optional
        Where the temporary event cache lives (default: the system's temporary folder); it is
        removed by :meth:`close` (or at the end of a ``with`` block).
    device : torch device for the efficiencies (the image's device).
    progress : bool
        Progress bar while caching.
    """

    def __init__(self, source, grid: ImageGrid, *, chunk_events: int = DEFAULT_CHUNK_EVENTS, psf=None,
                 backend: str = "auto", cache_dir=None, device="cpu", progress: bool = False):
        _check_grid(grid)
        self.chunk_events = as_positive_int("chunk_events", chunk_events)
        owns = not isinstance(source, PETSIRDFile)
        self.file = PETSIRDFile(source) if owns else source
        self.scanner = self.file.scanner
        if len(self.scanner.type_pairs) > 255:
            raise ValueError(f"{self.file.path}: {len(self.scanner.type_pairs)} module-type pairs; the event cache "
                             "holds at most 255")
        self.grid = grid
        self.shape_in = tuple(grid.shape)
        self.psf = _make_psf(grid, psf)
        self.backend = backend
        self.device = torch.device(device)
        self._tmp = tempfile.TemporaryDirectory(prefix="pettk-petsird-", dir=cache_dir)
        self._records = None
        try:
            self.n_events = self._cache(progress)
            if self.n_events:
                self._records = np.memmap(Path(self._tmp.name) / "events.bin", dtype=_RECORD, mode="r",
                                          shape=(self.n_events,))
        except BaseException:
            self.close()
            raise
        finally:
            if owns:
                self.file.close()
        self.stats = dict(self.file.stats)

    def _cache(self, progress: bool) -> int:
        from tqdm.auto import tqdm

        n = 0
        with open(Path(self._tmp.name) / "events.bin", "wb") as f, \
                tqdm(desc="reading events", unit=" events", disable=not progress, leave=False) as bar:
            for chunk in self.file.events(self.chunk_events):
                rec = np.zeros(len(chunk), dtype=_RECORD)
                rec["d0"], rec["d1"] = chunk.detectors[:, 0], chunk.detectors[:, 1]
                rec["tof"] = 0 if chunk.tof_bin is None else chunk.tof_bin
                rec["pair"] = self.scanner.pair_code(*chunk.pair.types)
                rec["eff"] = chunk.efficiency
                f.write(rec.tobytes())
                n += len(chunk)
                bar.update(len(chunk))
        return n

    def subset_models(self, subset: int, n_subsets: int) -> Iterator[ForwardModel]:
        """PSF-free models on chunks of the events ``subset::n_subsets``."""
        if self._records is None:
            return
        view = self._records[subset::n_subsets]
        for lo in range(0, view.shape[0], self.chunk_events):
            rec = np.array(view[lo:lo + self.chunk_events])
            for code in np.unique(rec["pair"]):
                part = rec[rec["pair"] == code] if len(self.scanner.type_pairs) > 1 else rec
                yield self._model(self.scanner.type_pairs[int(code)], part)

    def _model(self, pair: TypePair, rec: np.ndarray) -> ForwardModel:
        pos = self.scanner.detector_positions_mm
        tof_bin = None if pair.tof is None else rec["tof"].astype(np.int64)
        lors = LORList(pos[rec["d0"]], pos[rec["d1"]], tof_bin)
        projector = Projector(self.grid, lors, self.backend, tof=pair.tof, check_finite=False)
        return ForwardModel(projector, normalisation=torch.as_tensor(rec["eff"].copy(), device=self.device))

    def sensitivity(self, *, chunk_lors: int = DEFAULT_CHUNK_EVENTS, dtype=torch.float32,
                    progress: bool = False) -> torch.Tensor:
        """The scanner's sensitivity image on this grid (with the PSF), on :attr:`device`."""
        return self.scanner.sensitivity(self.grid, chunk_lors=chunk_lors, psf=self.psf, backend=self.backend,
                                        dtype=dtype, device=self.device, progress=progress)

    def close(self) -> None:
        """Remove the event cache."""
        self._records = None
        if getattr(self, "_tmp", None) is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"PETSIRDListMode(n_events={self.n_events}, grid={self.grid!r}, chunk_events={self.chunk_events})"


# --------------------------------------------------------------------------------------------
# Histogramming
# --------------------------------------------------------------------------------------------
def histogram_petsird(source, layout: SinogramLayout | None = None, *, chunk_events: int = DEFAULT_CHUNK_EVENTS,
                      dtype=np.float32, kind: str = "prompt"):
    """Histogram the prompts (or the delayeds) of a regular-polygon PETSIRD scanner into a pettk sinogram.

    Parameters
    ----------
    source : PETSIRDFile, str or Path
    layout : SinogramLayout, optional
        Default: ``SinogramLayout(fitted_scanner)`` (no radial trim, every ring difference). A
        given layout must be on the fitted scanner (same crystal positions).
    kind : {"prompt", "delayed"}
        Which coincidences; ``"delayed"`` raises ``ValueError`` when the file holds none.

    Returns
    -------
    counts : ndarray
        ``layout.shape`` (plus the TOF axis, ``tof.n_bins``, when the file has TOF).
    efficiency : ndarray, shape ``layout.shape``
        Detection efficiency of every bin (summed over the accepted energy bins), the
        ``normalisation`` of a sinogram :class:`~pettk.physics.ForwardModel`.
    layout : SinogramLayout
    tof : TOFParams or None

    Notes
    -----
    An event whose crystal pair is stored the other way round in the sinogram (start and end
    swapped) goes to the mirrored TOF bin. Events on LORs the layout does not hold (trimmed,
    ring difference too large) are dropped.
    """
    owns = not isinstance(source, PETSIRDFile)
    f = PETSIRDFile(source) if owns else source
    try:
        sc = f.scanner
        scanner, ring, crystal = sc.regular_polygon()
        if layout is None:
            layout = SinogramLayout(scanner)
        elif not isinstance(layout, SinogramLayout):
            raise TypeError(f"layout must be a SinogramLayout, got {type(layout).__name__}")
        else:
            same = (layout.scanner.n_rings == scanner.n_rings
                    and layout.scanner.n_crystals_per_ring == scanner.n_crystals_per_ring
                    and np.allclose(layout.scanner.crystal_positions_mm(), scanner.crystal_positions_mm(),
                                    atol=10 * _POSITION_TOL_MM))
            if not same:
                raise ValueError(f"layout's scanner {layout.scanner!r} is not the scanner of {f.path} ({scanner!r})")
        pair = sc.type_pairs[0]
        tof = pair.tof
        n = scanner.n_crystals_per_ring
        n_bins = 1 if tof is None else tof.n_bins
        plane = np.full((scanner.n_rings, scanner.n_rings), -1, dtype=np.int64)
        plane[layout.plane_rings[:, 0], layout.plane_rings[:, 1]] = np.arange(layout.n_planes)
        pairs = layout.crystal_pairs.reshape(-1, 2)
        # in-ring crystal pair -> transaxial bin; ``swap`` where the bin's LOR runs the other way
        flat = np.full((n, n), -1, dtype=np.int64)
        swap = np.zeros((n, n), dtype=bool)
        idx = np.arange(pairs.shape[0])
        flat[pairs[:, 0], pairs[:, 1]] = idx
        rev = pairs[:, 0] != pairs[:, 1]
        flat[pairs[rev, 1], pairs[rev, 0]] = idx[rev]
        swap[pairs[rev, 1], pairs[rev, 0]] = True
        n_tv = layout.n_views * layout.n_radial
        counts = np.zeros(layout.n_lors * n_bins, dtype=np.float64)
        dropped = 0
        for chunk in f.events(chunk_events, kind):
            d0, d1 = chunk.detectors[:, 0], chunk.detectors[:, 1]
            s = swap[crystal[d0], crystal[d1]]
            r_start = np.where(s, ring[d1], ring[d0])
            r_end = np.where(s, ring[d0], ring[d1])
            p = plane[r_start, r_end]
            t = flat[crystal[d0], crystal[d1]]
            good = (p >= 0) & (t >= 0)
            dropped += int((~good).sum())
            lor = p[good] * n_tv + t[good]
            if tof is not None:
                b = chunk.tof_bin[good]
                lor = lor * n_bins + np.where(s[good], n_bins - 1 - b, b)
            counts += np.bincount(lor, minlength=counts.size)
        if kind == "delayed" and f.stats["events_read"] == 0:
            raise ValueError(f"{f.path} holds no delayed coincidences (kind='delayed' was asked for)")
        if dropped:
            log.info("%s: %d events are on LORs outside the sinogram layout", f.path, dropped)
        # efficiency of every sinogram bin, plane by plane
        det_of = np.full((scanner.n_rings, n), -1, dtype=np.int64)
        det_of[ring, crystal] = np.arange(ring.size)
        eff = np.empty((layout.n_planes, n_tv), dtype=dtype)
        for k, (r_start, r_end) in enumerate(layout.plane_rings):
            start, end = det_of[r_start, pairs[:, 0]], det_of[r_end, pairs[:, 1]]
            eff[k] = np.where(start == end, 0.0, sc.lor_efficiency(0, 0, start, end))
        shape = layout.shape + ((n_bins,) if tof is not None else ())
        return counts.reshape(shape).astype(dtype), eff.reshape(layout.shape), layout, tof
    finally:
        if owns:
            f.close()


# --------------------------------------------------------------------------------------------
# End to end
# --------------------------------------------------------------------------------------------
@dataclass
class PETSIRDRecon:
    """What :func:`reconstruct_petsird` made: the image (numpy, ``grid.shape``), its grid, the
    NIfTI file, the number of events used and the reader's counters."""

    image: np.ndarray
    grid: ImageGrid
    path: Path
    n_events: int
    stats: dict


def reconstruct_petsird(path, out_nifti, grid: ImageGrid | None = None, n_iter: int = 3, n_subsets: int = 10,
                        chunk_events: int = DEFAULT_CHUNK_EVENTS, progress: bool = False, *,
                        voxel_size_mm: float | None = None, energy_window_kev=None, use_tof: bool = True,
                        psf_fwhm_mm=None, backend: str = "auto", cache_dir=None) -> PETSIRDRecon:
    """Reconstruct a PETSIRD file with list-mode OSEM and write the image to NIfTI (atomically).

    Parameters
    ----------
    path : str or Path
        PETSIRD file (binary or NDJSON).
    out_nifti : str or Path
        Output, ``.nii`` or ``.nii.gz``; written only when everything succeeded.
    grid : ImageGrid, optional
        Default :meth:`PETSIRDScanner.default_grid` (with ``voxel_size_mm``).
    n_iter, n_subsets : int
        Epochs and event subsets.
    chunk_events : int
        Events per projector call: memory is O(image + chunk).
    progress : bool
        Progress bars (reading, sensitivity, iterations).
    energy_window_kev, use_tof
        See :class:`PETSIRDScanner`.
    psf_fwhm_mm : float or sequence, optional
        Image-space resolution model (mm).
    backend : str
        Projector backend.
    cache_dir : optional
        Folder for the temporary event cache (removed afterwards).

    Returns
    -------
    PETSIRDRecon
        The image (numpy, ``grid.shape``), its grid, the NIfTI path, the number of events and the
        reader's counters.

    Raises
    ------
    PETSIRDFormatError
        The file is malformed or truncated (found while caching, before any reconstruction);
        nothing is written.
    """
    from ..backends import check_name
    from ..recon.listmode import lm_osem

    name = str(out_nifti)
    if not (name.endswith(".nii") or name.endswith(".nii.gz")):
        raise ValueError(f"out_nifti must end in .nii or .nii.gz, got {name!r}")
    n_iter = as_positive_int("n_iter", n_iter)
    n_subsets = as_positive_int("n_subsets", n_subsets)
    chunk_events = as_positive_int("chunk_events", chunk_events)
    if grid is not None:
        _check_grid(grid)
    if voxel_size_mm is not None:
        as_positive_float("voxel_size_mm", voxel_size_mm)
    check_name(backend)
    with PETSIRDFile(path, energy_window_kev=energy_window_kev, use_tof=use_tof) as f:
        if grid is None:
            grid = f.scanner.default_grid(voxel_size_mm)
        with PETSIRDListMode(f, grid, chunk_events=chunk_events, psf=psf_fwhm_mm, backend=backend,
                             cache_dir=cache_dir, progress=progress) as data:
            if data.n_events == 0:
                raise _fail(f.path, "no usable prompt events")
            if n_subsets > data.n_events:
                raise ValueError(f"n_subsets must be <= the number of events ({data.n_events}), got {n_subsets}")
            sens = data.sensitivity(chunk_lors=chunk_events, progress=progress)
            image = lm_osem(data, sens, n_iter, n_subsets, progress=progress)
            image = image.detach().cpu().numpy()
            out = save_nifti(out_nifti, image, grid)
            return PETSIRDRecon(image, grid, Path(out), data.n_events, data.stats)


# --------------------------------------------------------------------------------------------
# Writing and simulating (tests, examples, converters)
# --------------------------------------------------------------------------------------------
def write_petsird(path, header, events: dict, *, n_time_blocks: int = 1, format: str = "binary",
                  block_ms: int = 1, delayed_events: dict | None = None) -> Path:
    """Write a PETSIRD file of prompt (and delayed) coincidences through petsird's writer, atomically.

    Parameters
    ----------
    path : str or Path
    header : petsird.Header
    events : dict
        ``{(t0, t1): (detection_bins, tof_idx)}`` with ``detection_bins`` ``(n, 2)`` and ``tof_idx``
        ``(n,)`` integer arrays (``t0 >= t1``; PETSIRD's ordering within a type).
    n_time_blocks : int
        The events of every pair are split evenly over this many time blocks of ``block_ms``.
    format : {"binary", "ndjson"}
    delayed_events : dict, optional
        Delayed coincidences, in the same form as ``events``.
    """
    petsird = _petsird()
    if format not in ("binary", "ndjson"):
        raise ValueError(f"format must be 'binary' or 'ndjson', got {format!r}")
    n_time_blocks = as_positive_int("n_time_blocks", n_time_blocks)
    n_types = len(header.scanner.scanner_geometry.replicated_modules)
    def checked(name: str, given: dict) -> dict:
        arrays = {}
        for key, (bins, tof) in given.items():
            t0, t1 = (int(k) for k in key)
            if not 0 <= t1 <= t0 < n_types:
                raise ValueError(f"{name} keys must be module-type pairs (t0, t1) with t0 >= t1 < {n_types}, "
                                 f"got {key!r}")
            bins = np.asarray(bins, dtype=np.int64).reshape(-1, 2)
            tof = np.asarray(tof, dtype=np.int64).reshape(-1)
            if tof.shape[0] != bins.shape[0]:
                raise ValueError(f"{name} {key}: {bins.shape[0]} detection-bin pairs but {tof.shape[0]} TOF indices")
            if bins.size and (bins.min() < 0 or tof.min() < 0):
                raise ValueError(f"{name} {key}: detection bins and TOF indices must be >= 0")
            arrays[(t0, t1)] = (bins, tof)
        return arrays

    arrays = checked("events", events)
    delayed = checked("delayed_events", delayed_events or {})

    def block_lists(given: dict, k: int) -> list:
        lists = [[[] for _ in range(t0 + 1)] for t0 in range(n_types)]
        for (t0, t1), (bins, tof) in given.items():
            lo, hi = (bins.shape[0] * k) // n_time_blocks, (bins.shape[0] * (k + 1)) // n_time_blocks
            lists[t0][t1] = [petsird.CoincidenceEvent(detection_bins=[int(a), int(b)], tof_idx=int(c))
                             for (a, b), c in zip(bins[lo:hi].tolist(), tof[lo:hi].tolist())]
        return lists

    def blocks():
        for k in range(n_time_blocks):
            interval = petsird.TimeInterval(start=k * block_ms, stop=(k + 1) * block_ms)
            extra = {"delayed_events": block_lists(delayed, k)} if delayed else {}
            yield petsird.TimeBlock.EventTimeBlock(petsird.EventTimeBlock(
                time_interval=interval, prompt_events=block_lists(arrays, k), **extra))

    writer_cls = petsird.BinaryPETSIRDWriter if format == "binary" else petsird.NDJsonPETSIRDWriter
    with atomic_path(path) as tmp:
        with writer_cls(str(tmp)) as writer:
            writer.write_header(header)
            writer.write_time_blocks(blocks())
    return Path(path)


def simulate_petsird_events(scanner: PETSIRDScanner, image, grid: ImageGrid, n_counts: float, *, seed=None,
                            chunk_lors: int = DEFAULT_CHUNK_EVENTS, backend: str = "auto") -> dict:
    """Sample the prompts of ``image`` as the scanner's model sees them (Poisson, no background).

    Every LOR ``(a, b)`` with energy bins ``(e0, e1)`` and PETSIRD TOF bin ``k`` gets
    ``Poisson(scale * efficiency(a e0, b e1) * [P_tof image]_k)`` events, with ``scale`` such that the
    expected total is ``n_counts``. Two passes over all LORs (the total, then the sampling).

    Returns
    -------
    dict ``{(t0, t1): (detection_bins (n, 2) uint32, tof_idx (n,) uint32)}``, events in random
    order, ready for :func:`write_petsird`.
    """
    _check_grid(grid)
    x = torch.as_tensor(np.asarray(image, dtype=np.float64))
    if tuple(x.shape) != tuple(grid.shape):
        raise ValueError(f"image must have shape {tuple(grid.shape)}, got {tuple(x.shape)}")
    if not bool(torch.isfinite(x).all()) or bool((x < 0).any()):
        raise ValueError("image must be finite and >= 0")
    n_counts = as_positive_float("n_counts", n_counts)
    rng = np.random.default_rng(seed)
    pos = scanner.detector_positions_mm

    def projections():
        for pair, det, _ in scanner.iter_lors(chunk_lors):
            start, end = pos[det[:, 0]], pos[det[:, 1]]
            if pair.tof is None:
                proj = Projector(grid, LORList(start, end), backend).forward(x)[:, None]
            else:
                proj = torch.stack([Projector(grid, LORList(start, end, np.full(det.shape[0], b + pair.tof_offset)),
                                              backend, tof=pair.tof).forward(x)
                                    for b in range(pair.n_tof_bins)], dim=1)
            yield pair, det, proj.numpy()

    def energy_pairs(pair):
        mt0, mt1 = scanner.module_types[pair.types[0]], scanner.module_types[pair.types[1]]
        for en0 in mt0.accepted_energy_bins:
            for en1 in mt1.accepted_energy_bins:
                yield mt0, mt1, en0, en1

    total = 0.0
    for pair, det, proj in projections():
        total += float((scanner.lor_efficiency(*pair.types, det[:, 0] - scanner.module_types[pair.types[0]].offset,
                                               det[:, 1] - scanner.module_types[pair.types[1]].offset)
                        * proj.sum(axis=1)).sum())
    if total <= 0:
        raise ValueError("the image is invisible to the scanner (no LOR crosses its activity)")
    scale = n_counts / total
    out: dict = {}
    for pair, det, proj in projections():
        for mt0, mt1, en0, en1 in energy_pairs(pair):
            el0, el1 = det[:, 0] - mt0.offset, det[:, 1] - mt1.offset
            eff = scanner._efficiency(pair, el0, el1, np.full(el0.shape, en0), np.full(el1.shape, en1))
            counts = rng.poisson(scale * eff[:, None] * proj)
            lor, k = np.nonzero(counts)
            c = counts[lor, k]
            b0 = np.repeat(el0[lor] * mt0.n_energy_bins + en0, c)
            b1 = np.repeat(el1[lor] * mt1.n_energy_bins + en1, c)
            out.setdefault(pair.types, []).append((np.stack([b0, b1], axis=1), np.repeat(k, c)))
    result = {}
    for key, parts in out.items():
        bins = np.concatenate([p[0] for p in parts]).astype(np.uint32)
        tof = np.concatenate([p[1] for p in parts]).astype(np.uint32)
        order = rng.permutation(bins.shape[0])
        result[key] = (bins[order], tof[order])
    return result

"""DICOM export of reconstructed images: a PET Image Storage series, one file per axial slice.

Needs pydicom (``pip install "pettk[dicom]"``; imported only when a series is written).

Frames
------
pettk's images live on an :class:`~pettk.geometry.ImageGrid` whose affine (voxel index -> mm) is
the one :func:`~pettk.io.save_nifti` writes, in NIfTI's RAS+ world (+x towards the patient's
right, +y anterior, +z superior). DICOM's patient frame is LPS+, so the RAS+ point ``(x, y, z)``
is the DICOM point ``(-x, -y, z)``.

Slice ``k`` of the image (``image[:, :, k]``) becomes one DICOM image stored in the standard
axial orientation, ``ImageOrientationPatient = [1, 0, 0, 0, 1, 0]`` for pettk's axis-aligned
grids: DICOM column ``c`` runs along image axis 0 *backwards* (``i = nx - 1 - c``) and DICOM row
``r`` along image axis 1 backwards (``j = ny - 1 - r``), so that the first pixel sent is the
patient's right-anterior corner, as clinical viewers expect. ``ImagePositionPatient`` is the LPS
position (mm) of voxel ``(nx - 1, ny - 1, k)``, ``PixelSpacing = [voxel_y, voxel_x]`` (row
spacing first), ``SliceThickness = SpacingBetweenSlices = voxel_z`` and ``SliceLocation`` is the
slice's z (mm). Every position and direction is computed from ``grid.affine``, so a viewer that
reads the NIfTI and one that reads this series place every voxel at the same point in space. A 2D
image is written as one slice at z = 0, 1 mm thick (as :func:`~pettk.io.save_nifti` does).

Values
------
DICOM PET pixels are integers with a per-image ``RescaleSlope`` (PET requires
``RescaleIntercept = 0``): the stored value ``p`` means ``p * RescaleSlope`` in ``units``.
Non-negative images are stored as uint16 with each slice's maximum at 65535, images with negative
values as int16 with each slice's largest magnitude at 32767, so every voxel is within
``RescaleSlope / 2`` of its value (at most 7.7e-6 of the slice's maximum for uint16, 1.6e-5 of
its largest magnitude for int16). Integer
images that fit in uint16/int16 are stored exactly with slope 1.
"""

from __future__ import annotations

import datetime
import re
from pathlib import Path

import numpy as np

from .._version import __version__
from ..geometry import ImageGrid
from .atomic import atomic_folder, check_empty_folder
from .errors import as_path
from .nifti import image_array

__all__ = ["save_dicom", "DICOM_UNITS"]

#: The Units (0054,1001) defined terms of the DICOM PET Series module.
DICOM_UNITS = ("CNTS", "NONE", "CM2", "CM2ML", "PCNT", "CPS", "BQML", "MGMINML", "UMOLMINML", "MLMING", "MLG",
               "1CM", "UMOLML", "PROPCNTS", "PROPCPS", "MLMINML", "MLML", "GML", "STDDEV")

#: PET Image Storage SOP class.
PET_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.128"

_LPS = np.array([-1.0, -1.0, 1.0])  # RAS+ -> DICOM LPS+
_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")


def _pydicom():
    try:
        import pydicom
    except ImportError as exc:
        raise ImportError('DICOM export needs pydicom: pip install "pettk[dicom]" (or pip install pydicom)') from exc
    if int(pydicom.__version__.split(".")[0]) < 3:
        raise ImportError(f'DICOM export needs pydicom >= 3.0, found {pydicom.__version__}: pip install "pettk[dicom]"')
    return pydicom


def _check_uid(name: str, uid):
    if uid is None:
        return None
    if not isinstance(uid, str) or len(uid) > 64 or not _UID.match(uid):
        raise ValueError(f"{name} must be a DICOM UID (digits and dots, at most 64 characters), got {uid!r}")
    return uid


def _check_text(name: str, value, max_len: int) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__}")
    if len(value) > max_len or "\\" in value or any(ord(c) < 32 for c in value):
        raise ValueError(f"{name} must be at most {max_len} printable characters without backslashes, got {value!r}")
    return value


def _pixels(data: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(pixels, slopes)``: ``data`` (nx, ny, nz) as uint16/int16 integers and one rescale slope
    per slice such that ``pixels * slope`` approximates ``data`` within ``slope / 2``."""
    nz = data.shape[2]
    if data.dtype.kind in "iu":
        lo, hi = (int(data.min()), int(data.max())) if data.size else (0, 0)
        if lo >= 0 and hi <= 65535:
            return data.astype(np.uint16), np.ones(nz)
        if lo >= -32768 and hi <= 32767:
            return data.astype(np.int16), np.ones(nz)
    values = data.astype(np.float64)
    signed = bool(np.any(values < 0))
    top, dtype = (32767, np.int16) if signed else (65535, np.uint16)
    peak = np.abs(values).max(axis=(0, 1))                             # (nz,)
    slopes = np.where(peak > 0, peak / top, 1.0)
    pixels = np.rint(values / slopes).clip(-top if signed else 0, top).astype(dtype)
    return pixels, slopes


def _ds_number(value: float) -> str:
    """A DICOM decimal string (at most 16 characters) for ``value``."""
    value = float(value) + 0.0  # no "-0"
    for digits in range(12, 3, -1):
        text = f"{value:.{digits}g}"
        if len(text) <= 16:
            return text
    raise ValueError(f"cannot write {value!r} as a DICOM decimal string")


def save_dicom(folder, image, grid: ImageGrid, *, series_description: str = "pettk reconstruction",
               units: str = "BQML", patient_name: str = "Anonymous", patient_id: str = "PETTK",
               study_instance_uid: str | None = None, frame_of_reference_uid: str | None = None,
               series_number: int = 1, decay_corrected: bool = False) -> list[Path]:
    """Write ``image`` as a DICOM PET image series into the new folder ``folder``.

    Parameters
    ----------
    folder : str or os.PathLike
        Must not exist, or be an empty folder; it receives one file per axial slice
        (``0001.dcm``, ``0002.dcm``, ... from inferior to superior).
    image : numpy.ndarray or torch.Tensor, shape ``grid.shape``
        Real values in ``units`` (e.g. Bq/mL for ``"BQML"``); finite. Stored as 16-bit integers
        with one rescale slope per slice (see the module docstring).
    grid : ImageGrid
        2D or 3D; positions, orientation, pixel spacing and slice thickness come from its affine
        (mm), consistent with :func:`~pettk.io.save_nifti` (see the module docstring).
    series_description : str
        SeriesDescription (at most 64 characters).
    units : str
        Units (0054,1001) of the values: a DICOM defined term (:data:`DICOM_UNITS`), default
        ``"BQML"`` (Bq/mL).
    patient_name, patient_id : str
        PatientName / PatientID (default an anonymous placeholder).
    study_instance_uid, frame_of_reference_uid : str, optional
        Put the series into an existing study / frame of reference (e.g. the CT's); new UIDs
        by default. The series and every image always get new UIDs.
    series_number : int
        SeriesNumber (>= 0).
    decay_corrected : bool
        DecayCorrection ``"START"`` when true, ``"NONE"`` (the default) otherwise.

    Returns
    -------
    list of pathlib.Path
        The files written, slice 0 first.

    Everything is checked before anything is written (``ValueError`` for a non-finite image, a
    wrong shape, a bad option; ``TypeError`` for a bad type; ``FileExistsError`` when ``folder`` is
    a non-empty folder or a file; ``ImportError`` without pydicom). The series is written into a
    temporary folder next to ``folder`` and renamed onto it at the end, so a failure leaves no
    partial series.
    """
    if not isinstance(grid, ImageGrid):
        raise TypeError(f"grid must be an ImageGrid, got {type(grid).__name__}")
    target = as_path(folder, "folder")
    data = image_array(image, grid)
    if data.dtype.kind not in "iuf":
        raise TypeError(f"image must hold real numbers (an integer or float type), got dtype {data.dtype}")
    if data.dtype.kind == "f" and not np.all(np.isfinite(data)):
        bad = int(data.size - np.isfinite(data).sum())
        raise ValueError(f"cannot write DICOM {target}: the image holds {bad} NaN or infinite voxel(s); DICOM "
                         "pixels are integers and cannot store them")
    if max(grid.shape[:2]) > 65535:
        raise ValueError(f"a DICOM image has at most 65535 rows and columns, got {grid.shape[:2]}")
    if not isinstance(units, str) or units not in DICOM_UNITS:
        raise ValueError(f"units must be one of the DICOM PET units {', '.join(DICOM_UNITS)}; got {units!r}")
    _check_text("series_description", series_description, 64)
    _check_text("patient_name", patient_name, 64)
    _check_text("patient_id", patient_id, 64)
    _check_uid("study_instance_uid", study_instance_uid)
    _check_uid("frame_of_reference_uid", frame_of_reference_uid)
    if isinstance(series_number, bool) or not isinstance(series_number, (int, np.integer)) or series_number < 0:
        raise ValueError(f"series_number must be an integer >= 0, got {series_number!r}")
    if not isinstance(decay_corrected, (bool, np.bool_)):
        raise TypeError(f"decay_corrected must be True or False, got {decay_corrected!r}")
    check_empty_folder(target)
    pydicom = _pydicom()

    if data.ndim == 2:
        data = data[:, :, None]
    pixels, slopes = _pixels(data)
    affine = grid.affine
    nx, ny, nz = data.shape
    # DICOM column c -> voxel i = nx-1-c, row r -> j = ny-1-r (see the module docstring)
    row_dir = _LPS * -affine[:3, 0]
    col_dir = _LPS * -affine[:3, 1]
    spacing = (float(np.linalg.norm(col_dir)), float(np.linalg.norm(row_dir)))  # (between rows, between columns)
    orientation = [float(v) for v in np.concatenate([row_dir / spacing[1], col_dir / spacing[0]])]
    thickness = float(np.linalg.norm(affine[:3, 2]))

    uid = pydicom.uid.generate_uid
    study_uid = study_instance_uid or uid()
    frame_uid = frame_of_reference_uid or uid()
    series_uid = uid()
    now = datetime.datetime.now()
    date, time = now.strftime("%Y%m%d"), now.strftime("%H%M%S")

    def dataset(k: int):
        from pydicom.dataset import Dataset, FileMetaDataset
        from pydicom.sequence import Sequence

        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = PET_IMAGE_STORAGE
        ds.file_meta.MediaStorageSOPInstanceUID = uid()
        ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.SOPClassUID, ds.SOPInstanceUID = PET_IMAGE_STORAGE, ds.file_meta.MediaStorageSOPInstanceUID
        ds.ImageType = ["DERIVED", "PRIMARY"]
        # patient, study, series, equipment
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = patient_name, patient_id, "", ""
        ds.StudyInstanceUID, ds.StudyDate, ds.StudyTime, ds.StudyID = study_uid, date, time, ""
        ds.ReferringPhysicianName, ds.AccessionNumber = "", ""
        ds.Modality, ds.SeriesInstanceUID, ds.SeriesNumber = "PT", series_uid, int(series_number)
        ds.SeriesDescription, ds.SeriesDate, ds.SeriesTime = series_description, date, time
        ds.Manufacturer, ds.SoftwareVersions = "pettk", __version__
        ds.FrameOfReferenceUID, ds.PositionReferenceIndicator = frame_uid, ""
        # PET series and isotope modules (type 1/2 attributes)
        ds.Units, ds.CountsSource, ds.SeriesType = units, "EMISSION", ["STATIC", "IMAGE"]
        ds.DecayCorrection = "START" if decay_corrected else "NONE"
        ds.CorrectedImage = ["DECY"] if decay_corrected else []
        ds.CollimatorType, ds.NumberOfSlices, ds.ReconstructionMethod = "NONE", nz, "pettk"
        ds.RadiopharmaceuticalInformationSequence = Sequence()
        ds.PatientOrientationCodeSequence, ds.PatientGantryRelationshipCodeSequence = Sequence(), Sequence()
        # image: position, orientation, values
        position = _LPS * (affine @ np.array([nx - 1.0, ny - 1.0, float(k), 1.0]))[:3]
        ds.InstanceNumber, ds.ImageIndex = k + 1, k + 1
        ds.AcquisitionDate, ds.AcquisitionTime, ds.ContentDate, ds.ContentTime = date, time, date, time
        ds.FrameReferenceTime, ds.ActualFrameDuration = 0, 0
        ds.ImagePositionPatient = [_ds_number(v) for v in position]
        ds.ImageOrientationPatient = [_ds_number(v) for v in orientation]
        ds.PixelSpacing = [_ds_number(v) for v in spacing]
        ds.SliceThickness = ds.SpacingBetweenSlices = _ds_number(thickness)
        ds.SliceLocation = _ds_number(float(position[2]))
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns = ny, nx
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
        ds.PixelRepresentation = 1 if pixels.dtype == np.int16 else 0
        ds.RescaleIntercept, ds.RescaleSlope = 0, _ds_number(float(slopes[k]))
        plane = pixels[::-1, ::-1, k].T  # (rows = ny, columns = nx), see the module docstring
        ds.PixelData = np.ascontiguousarray(plane).astype(plane.dtype.newbyteorder("<")).tobytes()
        return ds

    written = []
    with atomic_folder(target) as tmp:
        for k in range(nz):
            name = f"{k + 1:04d}.dcm"
            pydicom.dcmwrite(tmp / name, dataset(k), enforce_file_format=True)
            written.append(target / name)
    return written


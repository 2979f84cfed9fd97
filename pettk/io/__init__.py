"""Input and output. Every file is written atomically (temporary file, then rename), and every
argument is checked before anything is written.

* :func:`save_nifti` / :func:`load_nifti` -- images with the affine of their grid.
* :func:`save_sinogram` / :func:`load_sinogram` -- ``.npz`` sinograms with geometry metadata.
* :func:`save_checkpoint` / :func:`load_checkpoint` -- safetensors weights + JSON configuration.
* :func:`save_dicom` -- a reconstruction as a DICOM PET image series (one file per slice; needs
  pydicom: ``pip install "pettk[dicom]"``).
* :class:`PETSIRDFile`, :func:`reconstruct_petsird`, :func:`histogram_petsird` -- PETSIRD list-mode
  raw data (needs the ``petsird`` package: ``pip install "pettk[petsird]"``).

Loaders check what their savers check. A missing file raises :class:`FileNotFoundError`; a file
that is damaged, truncated, foreign or inconsistent with its own metadata raises
:class:`FileFormatError` (a :class:`ValueError`) naming the file -- never a raw third-party
exception. :func:`load_nifti` also reads NIfTI files whose axes are permuted or flipped (LAS, LIA,
LPS, ...) and, with ``resample=True``, oblique ones.
"""

from .atomic import atomic_path
from .checkpoint import load_checkpoint, save_checkpoint
from .dicom import save_dicom
from .errors import FileFormatError
from .nifti import load_nifti, save_nifti
from .petsird import PETSIRDFile, PETSIRDFormatError, histogram_petsird, reconstruct_petsird
from .sinogram import SinogramFile, load_sinogram, save_sinogram

__all__ = ["atomic_path", "FileFormatError", "load_checkpoint", "save_checkpoint", "load_nifti", "save_nifti",
           "save_dicom", "SinogramFile", "load_sinogram", "save_sinogram", "PETSIRDFile", "PETSIRDFormatError",
           "histogram_petsird", "reconstruct_petsird"]

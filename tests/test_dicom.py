"""DICOM export: a PET series read back with pydicom agrees with the NIfTI of the same image.

The comparison is geometric, not by convention: every DICOM pixel's patient position (from
ImagePositionPatient, ImageOrientationPatient and PixelSpacing, LPS) is mapped through the inverse
of the NIfTI file's affine (RAS) to a voxel index, which must be an integer voxel of the image;
the pixel's value (``pixel * RescaleSlope + RescaleIntercept``) must equal the NIfTI voxel's
within half a rescale step.
"""

import sys

import nibabel as nib
import numpy as np
import pytest
import torch

import pettk
from pettk.cli import main
from pettk.io import save_dicom, save_nifti

pydicom = pytest.importorskip("pydicom")

GRID = pettk.ImageGrid((9, 7, 5), (2.0, 2.5, 3.27), origin_mm=(-10.3, 20.1, 5.7))


def _read_series(folder):
    """``[dataset, ...]`` of every file in ``folder``, sorted by InstanceNumber."""
    series = [pydicom.dcmread(p) for p in sorted(folder.iterdir())]
    return sorted(series, key=lambda ds: int(ds.InstanceNumber))


def _check_against_nifti(series, nifti_path, expect_values=None):
    """Compare every pixel of ``series`` with the NIfTI at ``nifti_path``; returns the largest
    allowed error used (half the largest rescale slope)."""
    img = nib.load(str(nifti_path))
    data = np.asarray(img.dataobj, dtype=np.float64)
    data = data if data.ndim == 3 else data[:, :, None]
    to_voxel = np.linalg.inv(img.affine)
    seen = np.zeros(data.shape, bool)
    worst = 0.0
    for ds in series:
        ipp = np.array(ds.ImagePositionPatient, float)
        iop = np.array(ds.ImageOrientationPatient, float)
        row_dir, col_dir = iop[:3], iop[3:]
        assert np.isclose(np.linalg.norm(row_dir), 1) and np.isclose(np.linalg.norm(col_dir), 1)
        assert abs(row_dir @ col_dir) < 1e-9
        dr, dc = (float(v) for v in ds.PixelSpacing)  # between rows, between columns
        r, c = np.meshgrid(np.arange(ds.Rows), np.arange(ds.Columns), indexing="ij")
        lps = ipp + c[..., None] * dc * row_dir + r[..., None] * dr * col_dir
        ras = lps * np.array([-1.0, -1.0, 1.0])
        ijk = (np.concatenate([ras, np.ones(ras.shape[:2] + (1,))], axis=-1) @ to_voxel.T)[..., :3]
        idx = np.rint(ijk).astype(int)
        np.testing.assert_allclose(ijk, idx, atol=1e-4)  # every pixel sits on a voxel centre
        assert np.all((idx >= 0) & (idx < np.array(data.shape)))
        slope, intercept = float(ds.RescaleSlope), float(ds.RescaleIntercept)
        assert intercept == 0  # PET requires it
        values = ds.pixel_array.astype(np.float64) * slope + intercept
        expected = data[idx[..., 0], idx[..., 1], idx[..., 2]]
        tol = slope / 2 * (1 + 1e-6)
        np.testing.assert_array_less(np.abs(values - expected), tol + 1e-12)
        worst = max(worst, tol)
        seen[idx[..., 0], idx[..., 1], idx[..., 2]] = True
        # SliceThickness and SliceLocation agree with the affine
        assert float(ds.SliceThickness) == pytest.approx(np.linalg.norm(img.affine[:3, 2]), rel=1e-6)  # float32
        assert float(ds.SliceLocation) == pytest.approx(ipp[2])
    assert seen.all()  # every voxel is in exactly one pixel (counts: rows * columns * slices == size)
    assert sum(ds.Rows * ds.Columns for ds in series) == data.size
    return worst


def test_round_trip_agrees_with_nifti(tmp_path):
    rng = np.random.default_rng(0)
    x = 1e4 * rng.random(GRID.shape)  # Bq/mL
    x[:, :, 2] = 0.0  # an empty slice
    files = save_dicom(tmp_path / "series", x, GRID, series_description="OSEM 4x8")
    assert [p.name for p in files] == [f"{k:04d}.dcm" for k in range(1, 6)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["series"]  # no temporary folder left
    nifti = save_nifti(tmp_path / "x.nii.gz", x, GRID)
    series = _read_series(tmp_path / "series")
    _check_against_nifti(series, nifti)
    # quantisation: each slice's maximum at 65535 (the empty slice: all 0, slope 1)
    slopes = [float(ds.RescaleSlope) for ds in series]
    np.testing.assert_allclose(slopes[:2] + slopes[3:], x.max(axis=(0, 1))[[0, 1, 3, 4]] / 65535, rtol=1e-9)
    assert slopes[2] == 1.0 and not series[2].pixel_array.any()
    first = series[0]
    assert first.SOPClassUID == "1.2.840.10008.5.1.4.1.1.128" and first.Modality == "PT"
    assert first.Units == "BQML" and first.SeriesDescription == "OSEM 4x8" and first.PixelRepresentation == 0
    assert list(first.ImageOrientationPatient) == [1, 0, 0, 0, 1, 0]  # standard axial
    assert [float(v) for v in first.PixelSpacing] == [2.5, 2.0] and float(first.SliceThickness) == 3.27
    for key in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID"):
        assert len({getattr(ds, key) for ds in series}) == 1
    assert len({ds.SOPInstanceUID for ds in series}) == 5
    assert [int(ds.ImageIndex) for ds in series] == [1, 2, 3, 4, 5] and int(first.NumberOfSlices) == 5
    # slices go inferior -> superior, one voxel apart
    z = [float(ds.ImagePositionPatient[2]) for ds in series]
    np.testing.assert_allclose(np.diff(z), 3.27)
    assert z[0] == pytest.approx(5.7)
    # the first pixel is the patient's right-anterior corner: voxel (nx-1, ny-1) in RAS, negated x, y
    np.testing.assert_allclose([float(v) for v in first.ImagePositionPatient],
                               [-(-10.3 + 8 * 2.0), -(20.1 + 6 * 2.5), 5.7], atol=1e-9)
    for ds in series:  # a valid file: the file meta agrees with the dataset
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian


@pytest.mark.filterwarnings("ignore:The DICOM readers are highly experimental:UserWarning")
def test_nibabel_reads_the_same_geometry(tmp_path):
    """A second, independent reader of IPP/IOP/PixelSpacing (nibabel's DICOM wrapper, LPS)."""
    from nibabel import orientations
    from nibabel.nicom import dicomwrappers

    x = 1e3 * np.random.default_rng(2).random(GRID.shape)
    for k, path in enumerate(save_dicom(tmp_path / "s", x, GRID)):
        wrapper = dicomwrappers.wrapper_from_file(str(path))
        ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ wrapper.affine
        plane = wrapper.get_data()[:, :, None]  # rescaled values
        ornt = orientations.ornt_transform(orientations.io_orientation(ras), orientations.axcodes2ornt("RAS"))
        values = orientations.apply_orientation(plane, ornt)[:, :, 0]
        affine = ras @ orientations.inv_ornt_aff(ornt, plane.shape)
        np.testing.assert_allclose(affine[:2, :2], GRID.affine[:2, :2], atol=1e-9)
        np.testing.assert_allclose(affine[:3, 3], GRID.affine[:3, :] @ [0, 0, k, 1], atol=1e-9)
        np.testing.assert_allclose(values, x[:, :, k], atol=x[:, :, k].max() / 65535 / 2 * (1 + 1e-6))


def test_signed_integer_2d_and_torch_images(tmp_path):
    rng = np.random.default_rng(1)
    signed = rng.normal(size=GRID.shape) * 50.0  # e.g. a difference image
    save_dicom(tmp_path / "signed", torch.from_numpy(signed), GRID, units="PROPCNTS")
    series = _read_series(tmp_path / "signed")
    assert series[0].PixelRepresentation == 1 and series[0].Units == "PROPCNTS"
    _check_against_nifti(series, save_nifti(tmp_path / "s.nii", signed, GRID))
    counts = rng.integers(0, 60000, GRID.shape).astype(np.int32)
    save_dicom(tmp_path / "counts", counts, GRID, units="CNTS")
    series = _read_series(tmp_path / "counts")
    assert all(float(ds.RescaleSlope) == 1.0 for ds in series)  # stored exactly
    assert _check_against_nifti(series, save_nifti(tmp_path / "c.nii", counts, GRID)) == pytest.approx(0.5)
    grid2 = pettk.ImageGrid((6, 4), (1.5, 2.0), origin_mm=(3.0, -4.0))
    image2 = rng.random(grid2.shape).astype(np.float32)
    (tmp_path / "empty").mkdir()  # an existing empty folder is fine
    files = save_dicom(tmp_path / "empty", image2, grid2)
    assert len(files) == 1
    ds = pydicom.dcmread(files[0])
    assert float(ds.ImagePositionPatient[2]) == 0.0 and float(ds.SliceThickness) == 1.0
    _check_against_nifti([ds], save_nifti(tmp_path / "two.nii", image2, grid2))


def test_bad_input_is_refused_before_writing(tmp_path):
    good = np.ones(GRID.shape)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("x")
    (tmp_path / "file").write_text("x")
    nan, inf = good.copy(), good.copy()
    nan[1, 2, 3], inf[0, 0, 0] = np.nan, -np.inf
    cases = [
        (dict(image=nan), ValueError, r"holds 1 NaN or infinite voxel\(s\); DICOM pixels are integers"),
        (dict(image=inf), ValueError, "NaN or infinite"),
        (dict(image=np.ones((9, 7))), ValueError, r"image must have shape \(9, 7, 5\), got \(9, 7\)"),
        (dict(image=good.astype(bool)), TypeError, "real numbers"),
        (dict(grid=(9, 7, 5)), TypeError, "grid must be an ImageGrid"),
        (dict(folder=tmp_path / "full"), FileExistsError, "is a folder that is not empty"),
        (dict(folder=tmp_path / "file"), FileExistsError, "exists and is not a folder"),
        (dict(units="Bq/ml"), ValueError, "units must be one of the DICOM PET units"),
        (dict(study_instance_uid="1.2.abc"), ValueError, "study_instance_uid must be a DICOM UID"),
        (dict(series_description="x" * 65), ValueError, "series_description must be at most 64"),
        (dict(series_number=-1), ValueError, "series_number must be an integer >= 0"),
    ]
    for change, error, match in cases:
        args = dict(folder=tmp_path / "out", image=good, grid=GRID) | change
        folder, image, grid = args.pop("folder"), args.pop("image"), args.pop("grid")
        with pytest.raises(error, match=match):
            save_dicom(folder, image, grid, **args)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "full"]
    assert [p.name for p in (tmp_path / "full").iterdir()] == ["keep.txt"]


def test_a_failed_write_leaves_nothing(tmp_path, monkeypatch):
    calls = []

    def failing(path, ds, **kw):
        calls.append(path)
        if len(calls) == 3:
            raise OSError("disk full")
        return real(path, ds, **kw)

    real = pydicom.dcmwrite
    monkeypatch.setattr(pydicom, "dcmwrite", failing)
    with pytest.raises(OSError, match="disk full"):
        save_dicom(tmp_path / "out", np.ones(GRID.shape), GRID)
    assert len(calls) == 3 and list(tmp_path.iterdir()) == []


def test_without_pydicom_the_error_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pydicom", None)
    with pytest.raises(ImportError, match=r'pip install "pettk\[dicom\]"'):
        save_dicom(tmp_path / "out", np.ones(GRID.shape), GRID)
    assert list(tmp_path.iterdir()) == []


def test_recon_command_writes_dicom(tmp_path, capsys):
    from pettk.io import load_nifti, save_sinogram
    from pettk.sim import shepp_logan_2d

    grid = pettk.ImageGrid((24, 20), (4.0, 3.0), origin_mm=(-40.0, -25.0))
    geo = pettk.ParallelBeam2D(30, 41, 3.0)
    y = np.random.default_rng(0).poisson(pettk.Projector(grid, geo).forward(5.0 * shepp_logan_2d(grid)))
    save_sinogram(tmp_path / "s.npz", y.astype(np.float32), geo, grid)
    out, dicom = tmp_path / "x.nii.gz", tmp_path / "dicom"
    assert main(["recon", str(tmp_path / "s.npz"), "-o", str(out), "-n", "2", "-s", "2", "--no-progress",
                 "--dicom", str(dicom)]) == 0
    assert f"DICOM series (1 slices, units BQML) -> {dicom}" in capsys.readouterr().out
    series = _read_series(dicom)
    assert series[0].SeriesDescription == "pettk osem"
    _check_against_nifti(series, out)
    image, _ = load_nifti(out, ndim=2)
    assert float(image.max()) > 0
    # refused before any work: a non-empty folder, a unit DICOM does not define, --cohort
    out.unlink()
    for extra, match in ((["--dicom", str(dicom)], "--dicom: .* is a folder that is not empty"),
                         (["--dicom", str(tmp_path / "d2"), "--dicom-units", "kBq"], "--dicom-units must be one of")):
        with pytest.raises(SystemExit, match=match):
            main(["recon", str(tmp_path / "s.npz"), "-o", str(out), "--no-progress", *extra])
        assert not out.exists() and not (tmp_path / "d2").exists()
    with pytest.raises(SystemExit, match="does not apply to --cohort"):
        main(["recon", "--cohort", str(tmp_path / "m.csv"), "-o", str(tmp_path / "c"), "--dicom", str(dicom)])


def test_recon_petsird_writes_dicom(tmp_path):
    pytest.importorskip("petsird")
    pytest.importorskip("petsird.helpers.generator")
    from test_petsird import GRID as PET_GRID
    from test_petsird import ring_header

    from pettk.io.petsird import PETSIRDScanner, simulate_petsird_events, write_petsird

    header = ring_header()
    blob = np.zeros(PET_GRID.shape)
    blob[13:17, 8:11, 3:5] = 1.0
    events = simulate_petsird_events(PETSIRDScanner(header), blob, PET_GRID, 3000, seed=3)
    path = write_petsird(tmp_path / "blob.bin", header, events)
    out, dicom = tmp_path / "lm.nii.gz", tmp_path / "lm-dicom"
    assert main(["recon", "--petsird", str(path), "-o", str(out), "-n", "1", "-s", "2", "--voxel-size", "3",
                 "--no-progress", "--dicom", str(dicom)]) == 0
    series = _read_series(dicom)
    assert series[0].SeriesDescription == "pettk list-mode OSEM"
    _check_against_nifti(series, out)

"""Foreign and damaged files (issue 31, items 1-2).

* NIfTI files written by nibabel directly, with the orientations real tools use (RAS, LAS, LPS,
  FreeSurfer's conformed LIA, permuted axes, qform-only), load in pettk's axis-aligned convention
  with every voxel at its world position; oblique ones are refused or resampled on request.
* Every loader raises :class:`pettk.io.FileFormatError` (a ValueError) naming the file for a
  damaged or foreign file, never a raw third-party exception; a missing file is a
  FileNotFoundError naming the path.
* Savers refuse, before writing anything, what the loaders cannot read back.
"""

import gzip
import io
import itertools
import json
import zipfile

import nibabel as nib
import numpy as np
import pytest
import torch

import pettk
from pettk.io import (
    FileFormatError,
    PETSIRDFormatError,
    load_checkpoint,
    load_nifti,
    load_sinogram,
    save_checkpoint,
    save_nifti,
    save_sinogram,
)


def _affine(rows):
    a = np.eye(4)
    a[:3] = np.asarray(rows, dtype=np.float64)
    return a


# name -> (affine, shape in the file, expected loaded shape, voxel size, origin of voxel [0, 0, 0])
ORIENTATIONS = {
    "RAS": (_affine([[2, 0, 0, -5], [0, 2.5, 0, 1], [0, 0, 3, 7]]), (5, 6, 7), (5, 6, 7), (2, 2.5, 3), (-5, 1, 7)),
    # LAS, as many DICOM converters write it: x flipped; voxel 0 of the file is the rightmost column
    "LAS": (_affine([[-2, 0, 0, 90], [0, 2, 0, -126], [0, 0, 2, -72]]), (5, 6, 7), (5, 6, 7), (2, 2, 2),
            (82, -126, -72)),
    "LPS": (_affine([[-1.5, 0, 0, 30], [0, -1.5, 0, 20], [0, 0, 2, -10]]), (5, 6, 7), (5, 6, 7), (1.5, 1.5, 2),
            (24, 12.5, -10)),
    # FreeSurfer's conformed space: i -> -x, j -> -z, k -> +y
    "LIA": (_affine([[-1, 0, 0, 128], [0, 0, 1, -128], [0, -1, 0, 128]]), (4, 5, 6), (4, 6, 5), (1, 1, 1),
            (125, -128, 124)),
    # axes permuted (i -> z, j -> x, k -> y) with unequal voxel sizes
    "permuted": (_affine([[0, 2, 0, -10], [0, 0, 3, 4], [1.5, 0, 0, 6]]), (4, 5, 6), (5, 6, 4), (2, 3, 1.5),
                 (-10, 4, 6)),
}


def _world_of_every_voxel(affine, shape):
    idx = np.stack(np.meshgrid(*(np.arange(n) for n in shape), indexing="ij"), -1).reshape(-1, 3)
    return idx, idx @ affine[:3, :3].T + affine[:3, 3]


def _assert_every_voxel_in_place(data, affine, image, grid):
    """Each voxel of the file (world position from nibabel's affine @ index) holds the same value at
    the same world position in the loaded image."""
    idx, world = _world_of_every_voxel(affine, data.shape)
    loaded_idx = grid.world_to_index(world)
    np.testing.assert_allclose(loaded_idx, np.round(loaded_idx), atol=1e-6)
    loaded_idx = np.round(loaded_idx).astype(int)
    assert loaded_idx.min() >= 0 and np.all(loaded_idx.max(axis=0) < np.asarray(grid.shape))
    np.testing.assert_array_equal(image[tuple(loaded_idx.T)], data[tuple(idx.T)])


@pytest.mark.parametrize("name", sorted(ORIENTATIONS))
def test_foreign_orientations_load_with_world_coordinates_and_round_trip(tmp_path, rng, name):
    affine, shape, loaded_shape, voxel, origin = ORIENTATIONS[name]
    data = rng.random(shape).astype(np.float32)
    path = tmp_path / f"{name}.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), str(path))
    image, grid = load_nifti(path)
    assert image.dtype == np.float32 and image.shape == loaded_shape
    assert grid.shape == loaded_shape and grid.voxel_size_mm == voxel and grid.origin_mm == origin
    _assert_every_voxel_in_place(data, affine, image, grid)
    # a landmark voxel, by hand: nibabel's affine @ index is where the loaded grid puts its value
    landmark = (1, 2, 3)
    world = nib.load(str(path)).affine @ np.array([*landmark, 1.0])
    (where,) = np.argwhere(image == data[landmark])
    np.testing.assert_allclose(grid.index_to_world(where), world[:3], atol=1e-9)
    # round trip through pettk: the values and the grid come back exactly
    back_path = save_nifti(tmp_path / f"{name}-pettk.nii", image, grid)
    back, back_grid = load_nifti(back_path)
    np.testing.assert_array_equal(back, image)
    assert back_grid == grid
    _assert_every_voxel_in_place(data, affine, back, back_grid)
    np.testing.assert_array_equal(nib.load(str(back_path)).affine, grid.affine)


def test_every_signed_permutation_of_the_axes_loads(tmp_path, rng):
    """All 48 axis orders and directions, random voxel sizes and offsets: the loaded grid is
    axis-aligned with positive voxels and every voxel keeps its value and world position."""
    shape = (3, 4, 5)
    data = rng.random(shape).astype(np.float32)
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product((-1.0, 1.0), repeat=3):
            affine = np.eye(4)
            affine[:3, :3] = 0.0
            sizes = rng.choice([0.5, 1.0, 1.5, 2.0, 3.25], 3)
            for axis, (world, sign) in enumerate(zip(perm, signs)):
                affine[world, axis] = sign * sizes[axis]
            affine[:3, 3] = rng.integers(-100, 100, 3) / 4.0
            path = tmp_path / "p.nii"
            nib.save(nib.Nifti1Image(data, affine), str(path))
            image, grid = load_nifti(path)
            assert grid.shape == tuple(shape[perm.index(k)] for k in range(3))
            assert grid.voxel_size_mm == tuple(sizes[perm.index(k)] for k in range(3))
            _assert_every_voxel_in_place(data, affine, image, grid)


def test_freesurfer_mgz_in_lia_loads(tmp_path, rng):
    affine = ORIENTATIONS["LIA"][0]
    data = rng.integers(0, 255, (4, 5, 6)).astype(np.uint8)
    nib.save(nib.MGHImage(data, affine), str(tmp_path / "orig.mgz"))
    image, grid = load_nifti(tmp_path / "orig.mgz")
    assert image.dtype == np.uint8 and grid == pettk.ImageGrid((4, 6, 5), 1.0, (125.0, -128.0, 124.0))
    _assert_every_voxel_in_place(data, nib.load(str(tmp_path / "orig.mgz")).affine, image, grid)


def test_qform_only_las_file_loads(tmp_path, rng):
    affine = ORIENTATIONS["LAS"][0]
    data = rng.integers(0, 1000, (5, 6, 7)).astype(np.int16)
    img = nib.Nifti1Image(data, None)
    img.set_qform(affine, code=1)
    img.set_sform(None, code=0)
    nib.save(img, str(tmp_path / "q.nii"))
    image, grid = load_nifti(tmp_path / "q.nii")
    assert image.dtype == np.int16
    assert grid == pettk.ImageGrid((5, 6, 7), 2.0, (82.0, -126.0, -72.0))
    _assert_every_voxel_in_place(data, nib.load(str(tmp_path / "q.nii")).affine, image, grid)


def test_foreign_2d_slices(tmp_path, rng):
    data = rng.random((6, 5)).astype(np.float32)
    las = ORIENTATIONS["LAS"][0]
    # a genuinely 2D data array in an LAS file
    nib.save(nib.Nifti1Image(data, las), str(tmp_path / "flat.nii"))
    image, grid = load_nifti(tmp_path / "flat.nii")
    assert image.shape == (6, 5) and grid == pettk.ImageGrid((6, 5), 2.0, (80.0, -126.0))
    np.testing.assert_array_equal(image, data[::-1, :])
    # one slice stored as (6, 5, 1), asked for as 2D; the same slice asked for as 3D keeps its z
    nib.save(nib.Nifti1Image(data[:, :, None], las), str(tmp_path / "slice.nii"))
    image2, grid2 = load_nifti(tmp_path / "slice.nii", ndim=2)
    np.testing.assert_array_equal(image2, image)
    assert grid2 == grid
    image3, grid3 = load_nifti(tmp_path / "slice.nii", ndim=3)
    assert image3.shape == (6, 5, 1) and grid3.origin_mm == (80.0, -126.0, -72.0)
    # a 3D volume is not a 2D image
    nib.save(nib.Nifti1Image(rng.random((4, 4, 3)).astype(np.float32), las), str(tmp_path / "vol.nii"))
    with pytest.raises(FileFormatError, match=r"vol\.nii: a 2D image was asked for, but the image has shape "
                                              r"\(4, 4, 3\)"):
        load_nifti(tmp_path / "vol.nii", ndim=2)
    # one time frame in a 4D file is a 3D image
    nib.save(nib.Nifti1Image(rng.random((4, 4, 3, 1)).astype(np.float32), las), str(tmp_path / "t1.nii"))
    assert load_nifti(tmp_path / "t1.nii")[0].shape == (4, 4, 3)


def _rotated(degrees, voxel=2.0, offset=(10.0, -20.0, 5.0)):
    t = np.radians(degrees)
    a = np.eye(4)
    a[:3, :3] = np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]]) * voxel
    a[:3, 3] = offset
    return a


def test_oblique_is_refused_with_a_message(tmp_path, rng):
    path = tmp_path / "oblique.nii.gz"
    nib.save(nib.Nifti1Image(rng.random((6, 7, 5)).astype(np.float32), _rotated(20.0)), str(path))
    with pytest.raises(FileFormatError, match=r"oblique\.nii\.gz: the affine is oblique \(axes 20 degrees off"
                                              r".*load_nifti\(path, resample=True\)") as err:
        load_nifti(path)
    assert isinstance(err.value, ValueError)
    # an affine a float32 rounding away from axis-aligned is not oblique
    near = _affine([[2, 1e-7, 0, 0], [-1e-7, 2, 0, 0], [0, 0, 2, 0]])
    nib.save(nib.Nifti1Image(np.ones((4, 4, 4), np.float32), near), str(tmp_path / "near.nii"))
    assert load_nifti(tmp_path / "near.nii")[1] == pettk.ImageGrid((4, 4, 4), 2.0, (0.0, 0.0, 0.0))


@pytest.mark.parametrize("degrees", [20.0, 135.0])
def test_oblique_resampled_on_request_keeps_landmark_and_values(tmp_path, degrees):
    shape = (20, 22, 9)
    affine = _rotated(degrees)
    centre = np.array([8.0, 12.0, 4.0])  # the landmark: a Gaussian blob centred on this voxel
    idx = np.stack(np.meshgrid(*(np.arange(n) for n in shape), indexing="ij"), -1)
    blob = np.exp(-0.5 * np.sum((idx - centre) ** 2, axis=-1) / 1.5**2).astype(np.float32)
    nib.save(nib.Nifti1Image(blob, affine), str(tmp_path / "blob.nii"))
    image, grid = load_nifti(tmp_path / "blob.nii", resample=True)
    assert image.dtype == np.float32 and grid.voxel_size_mm == (2.0, 2.0, 2.0)
    assert grid.shape[2] == 9 and grid.origin_mm[2] == 5.0
    world = (affine @ np.array([*centre, 1.0]))[:3]
    coords = np.stack(grid.coordinates(), -1)
    centroid = (coords * image[..., None]).sum(axis=(0, 1, 2)) / image.sum()
    assert np.all(np.abs(centroid - world) < 0.5 * 2.0), (centroid, world)
    peak = np.unravel_index(np.argmax(image), image.shape)
    assert np.all(np.abs(grid.index_to_world(np.array(peak)) - world) <= 2.0)
    assert abs(image.max() - 1.0) < 0.25
    # a constant image stays constant inside the field of view and is 0 outside it
    nib.save(nib.Nifti1Image(np.full(shape, 7.0, np.float32), affine), str(tmp_path / "flat.nii"))
    flat, flat_grid = load_nifti(tmp_path / "flat.nii", resample=True)
    assert flat_grid == grid
    inside = flat != 0
    np.testing.assert_allclose(flat[inside], 7.0, rtol=1e-6)
    # the field of view holds the file's volume: 20 x 22 x 9 voxels of the same size
    assert abs(inside.sum() / np.prod(shape) - 1.0) < 0.15, inside.sum()
    # nearest neighbour keeps labels and their dtype (tissue-class maps)
    labels = (np.arange(np.prod(shape)).reshape(shape) % 4).astype(np.uint8)
    nib.save(nib.Nifti1Image(labels, affine), str(tmp_path / "labels.nii"))
    lab, _ = load_nifti(tmp_path / "labels.nii", resample=True, order=0)
    assert lab.dtype == np.uint8 and set(np.unique(lab)) <= {0, 1, 2, 3}


def test_resample_is_never_applied_to_axis_aligned_files(tmp_path, rng):
    affine = ORIENTATIONS["LIA"][0]
    data = rng.random((4, 5, 6)).astype(np.float32)
    nib.save(nib.Nifti1Image(data, affine), str(tmp_path / "lia.nii"))
    a, ga = load_nifti(tmp_path / "lia.nii")
    b, gb = load_nifti(tmp_path / "lia.nii", resample=True)
    np.testing.assert_array_equal(a, b)
    assert ga == gb


# --------------------------------------------------------------------------------------------
# NIfTI: damaged and foreign files
# --------------------------------------------------------------------------------------------
def _nifti_bytes(rng, gz=True):
    img = nib.Nifti1Image(rng.random((16, 16, 16)).astype(np.float32), np.eye(4))
    raw = img.to_bytes()
    return gzip.compress(raw) if gz else raw


@pytest.mark.parametrize("case, name, match", [
    ("garbage", "g.nii", r"cannot read this image file \(ImageFileError"),
    ("empty", "e.nii.gz", r"cannot read this image file \(ImageFileError"),
    ("truncated-gzip", "t.nii.gz", r"cannot read this image file \((EOFError|OSError|BadGzipFile)"),
    ("truncated-data", "t.nii", r"cannot read this image file \(OSError: Expected 16384 bytes, got"),
    ("complex", "c.nii", r"holds complex64 values; pettk reads real"),
    ("4d", "f.nii", r"expected a 2D or 3D image, got shape \(4, 4, 4, 2\)"),
    ("singular", "s.nii", r"the affine is singular"),
    ("nan-affine", "n.nii", r"the affine is not a finite 4x4 matrix"),
])
def test_load_nifti_names_the_file_for_bad_files(tmp_path, rng, case, name, match):
    path = tmp_path / name
    if case == "garbage":
        path.write_bytes(b"not a nifti file at all " * 20)
    elif case == "empty":
        path.write_bytes(b"")
    elif case == "truncated-gzip":
        raw = _nifti_bytes(rng)
        path.write_bytes(raw[: len(raw) // 2])
    elif case == "truncated-data":
        raw = _nifti_bytes(rng, gz=False)
        path.write_bytes(raw[: len(raw) - 4 * 16 * 16])
    elif case == "complex":
        nib.save(nib.Nifti1Image(np.ones((3, 3, 3), np.complex64), np.eye(4)), str(path))
    elif case == "4d":
        nib.save(nib.Nifti1Image(np.ones((4, 4, 4, 2), np.float32), np.eye(4)), str(path))
    else:  # patch the sform in the header (nibabel refuses to write such affines)
        nib.save(nib.Nifti1Image(np.ones((3, 3, 3), np.float32), np.eye(4)), str(path))
        raw = bytearray(path.read_bytes())
        if case == "singular":
            raw[312:328] = np.zeros(4, np.float32).tobytes()  # srow_z: the k axis goes nowhere
        else:
            raw[280:284] = np.float32(np.nan).tobytes()  # srow_x[0]
        path.write_bytes(bytes(raw))
    with pytest.raises(FileFormatError, match=match) as err:
        load_nifti(path)
    assert str(path) in str(err.value) and isinstance(err.value, ValueError)


def test_missing_files_are_file_not_found_naming_the_path(tmp_path):
    for loader, name in ((load_nifti, "x.nii"), (load_sinogram, "s.npz"), (load_checkpoint, "m.safetensors")):
        with pytest.raises(FileNotFoundError, match=f"at {tmp_path / name}$".replace("\\", "\\\\")):
            loader(tmp_path / name)
        with pytest.raises(FileFormatError, match="found a folder"):
            loader(tmp_path)
    with pytest.raises(TypeError, match="path must be a str or os.PathLike, got int"):
        load_nifti(3)


def test_save_nifti_dtypes(tmp_path):
    grid = pettk.ImageGrid((4, 3, 2), 1.5)
    half = (np.arange(24).reshape(grid.shape) / 7).astype(np.float16)
    back, _ = load_nifti(save_nifti(tmp_path / "h.nii", half, grid))
    assert back.dtype == np.float32
    np.testing.assert_array_equal(back, half.astype(np.float32))
    wide = np.arange(24, dtype=np.int64).reshape(grid.shape) * 10**12
    back, _ = load_nifti(save_nifti(tmp_path / "i.nii.gz", wide, grid))
    assert back.dtype == np.int64
    np.testing.assert_array_equal(back, wide)
    for bad, match in ((np.ones(grid.shape, np.longdouble), r"cannot store dtype float128 \(convert to float64"),
                       (np.ones(grid.shape, bool), "cannot store dtype bool"),
                       (np.ones(grid.shape, np.complex64), "cannot store dtype complex64")):
        if bad.dtype == np.float64:  # platforms where long double is double: nothing to refuse
            continue
        with pytest.raises(TypeError, match=match):
            save_nifti(tmp_path / "bad.nii", bad, grid)
    assert not (tmp_path / "bad.nii").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["h.nii", "i.nii.gz"]


# --------------------------------------------------------------------------------------------
# Sinograms
# --------------------------------------------------------------------------------------------
G2 = pettk.ImageGrid((16, 16), 4.0)
PB = pettk.ParallelBeam2D(12, 23, 4.0)


def _npz_bytes(**arrays):
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _meta(**changes):
    meta = {"format": "pettk-sinogram", "version": 1, "pettk_version": "x", "geometry": PB.to_dict(),
            "grid": G2.to_dict(), "tof": None}
    meta.update(changes)
    return np.array(json.dumps(meta))


def test_save_sinogram_checks_before_writing(tmp_path):
    y = np.ones(PB.shape, np.float32)
    p = tmp_path / "s.npz"
    with pytest.raises(TypeError, match=r"geometry must be one of SinogramLayout, SinogramLayout2D, "
                                        r"ParallelBeam2D, LORList, got str: 'PB'"):
        save_sinogram(p, y, "PB", G2)
    with pytest.raises(TypeError, match="grid must be an ImageGrid, got ParallelBeam2D"):
        save_sinogram(p, y, PB, PB)
    with pytest.raises(TypeError, match="tof must be a TOFParams or None, got str"):
        save_sinogram(p, y, PB, G2, "tof")
    bad = y.copy()
    bad[3, 4] = np.nan
    with pytest.raises(ValueError, match=r"prompts contains 1 non-finite values \(NaN or inf\)"):
        save_sinogram(p, bad, PB, G2)
    with pytest.raises(ValueError, match=r"normalisation must have shape \(12, 23\), got \(23, 12\)"):
        save_sinogram(p, y, PB, G2, normalisation=np.ones((23, 12)))
    with pytest.raises(ValueError, match=r"mu must have shape \(16, 16\), got \(12, 23\)"):
        save_sinogram(p, y, PB, G2, mu=np.ones(PB.shape))
    with pytest.raises(TypeError, match="prompts must hold real numbers .* got dtype complex128"):
        save_sinogram(p, y.astype(complex), PB, G2)
    assert list(tmp_path.iterdir()) == []


def test_load_sinogram_checks_what_save_checks(tmp_path):
    y = np.ones(PB.shape, np.float32)
    cases = {
        # the fuzz's wrong outputs: prompts that do not fit the stored geometry
        "shape.npz": (_npz_bytes(prompts=np.ones((12, 22)), metadata=_meta()),
                      r"prompts must have shape \(12, 23\), got \(12, 22\)"),
        "nan.npz": (_npz_bytes(prompts=np.where(np.eye(12, 23) > 0, np.nan, 1.0), metadata=_meta()),
                    r"prompts contains 12 non-finite values"),
        "factor.npz": (_npz_bytes(prompts=y, additive=np.ones(3), metadata=_meta()),
                       r"additive must have shape \(12, 23\), got \(3,\)"),
        "inf-mu.npz": (_npz_bytes(prompts=y, mu=np.full((16, 16), np.inf), metadata=_meta()),
                       "mu contains 256 non-finite values"),
        "strings.npz": (_npz_bytes(prompts=np.full(PB.shape, "a"), metadata=_meta()),
                        "prompts must hold real numbers"),
        "extra.npz": (_npz_bytes(prompts=y, scatter=y, metadata=_meta()), r"unknown arrays \['scatter'\]"),
        "nometa.npz": (_npz_bytes(prompts=y), r"is not a pettk sinogram file \(needs 'prompts' and 'metadata'"),
        "format.npz": (_npz_bytes(prompts=y, metadata=_meta(format="other")), "format 'other'"),
        "version.npz": (_npz_bytes(prompts=y, metadata=_meta(version=2)), "sinogram file version 2 is not supported"),
        "json.npz": (_npz_bytes(prompts=y, metadata=np.array("{not json")), "'metadata' is not valid JSON"),
        "list.npz": (_npz_bytes(prompts=y, metadata=np.array("[1, 2]")), r"format 'list'"),
        "metaarray.npz": (_npz_bytes(prompts=y, metadata=np.ones(3)), "'metadata' must be a JSON string"),
        "geokeys.npz": (_npz_bytes(prompts=y, metadata=_meta(geometry={"type": "ParallelBeam2D"})),
                        r"invalid geometry in the metadata \(TypeError"),
        "geotype.npz": (_npz_bytes(prompts=y, metadata=_meta(geometry={"type": "Cone"})),
                        "invalid geometry in the metadata .*unknown geometry type 'Cone'"),
        "gridkind.npz": (_npz_bytes(prompts=y, metadata=_meta(grid=PB.to_dict())),
                         "the metadata's grid is a ParallelBeam2D, expected ImageGrid"),
        "nogrid.npz": (_npz_bytes(prompts=y, metadata=np.array(json.dumps(
            {"format": "pettk-sinogram", "version": 1, "geometry": PB.to_dict(), "tof": None}))),
            "the metadata lacks 'grid'"),
        "pickled.npz": (_npz_bytes(prompts=np.array([object()], dtype=object), metadata=_meta()),
                        r"cannot read this sinogram file \(.npz\) \(ValueError: Object arrays cannot be loaded"),
        "garbage.npz": (b"this is not an npz file", r"cannot read this sinogram file \(.npz\) \(ValueError"),
        "empty.npz": (b"", r"\(EOFError"),
        "npy.npz": (b"", "holds a single array"),
        "zip.npz": (b"", r"is not a pettk sinogram file \(needs 'prompts' and 'metadata'; holds \['hello.txt'\]"),
        "truncated.npz": (b"", r"\(BadZipFile"),
        "corrupt.npz": (b"", r"cannot read this sinogram file \(.npz\) \((zlib\.error: Error -3 while decompressing"
                             r"|BadZipFile: Bad CRC-32)"),
    }
    good = save_sinogram(tmp_path / "good.npz", np.random.default_rng(0).poisson(3.0, PB.shape), PB, G2).read_bytes()
    buf = io.BytesIO()
    np.save(buf, y)
    cases["npy.npz"] = (buf.getvalue(), cases["npy.npz"][1])
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("hello.txt", "hi")
    cases["zip.npz"] = (buf.getvalue(), cases["zip.npz"][1])
    cases["truncated.npz"] = (good[: len(good) // 2], cases["truncated.npz"][1])
    corrupt = bytearray(good)
    start = corrupt.index(b"prompts.npy") + 200
    corrupt[start:start + 100] = b"\xff" * 100  # inside the compressed prompts
    cases["corrupt.npz"] = (bytes(corrupt), cases["corrupt.npz"][1])
    for name, (raw, match) in cases.items():
        path = tmp_path / name
        path.write_bytes(raw)
        with pytest.raises(FileFormatError, match=match) as err:
            load_sinogram(path)
        assert str(err.value).startswith(str(path)), (name, str(err.value))
    back = load_sinogram(tmp_path / "good.npz")
    assert back.prompts.shape == (12, 23) and back.geometry.to_dict() == PB.to_dict() and back.grid == G2


# --------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------
def test_save_checkpoint_refuses_what_load_cannot_read(tmp_path):
    p = tmp_path / "m.safetensors"
    w = torch.ones(3, 2)
    with pytest.raises(ValueError, match="state_dict key '__metadata__' is reserved by the safetensors format"):
        save_checkpoint(p, {"__metadata__": w})
    with pytest.raises(ValueError, match=r"state_dict\['a'\] and state_dict\['b'\] share memory"):
        save_checkpoint(p, {"a": w, "b": w})
    with pytest.raises(ValueError, match=r"state_dict\['a'\] and state_dict\['b'\] share memory"):
        save_checkpoint(p, {"a": w, "b": w[1:]})
    for dtype in (torch.complex64, torch.complex128):
        with pytest.raises(TypeError, match=rf"state_dict\['z'\] has complex dtype {dtype}"):
            save_checkpoint(p, {"z": torch.zeros(2, dtype=dtype)})
    with pytest.raises(TypeError, match=r"state_dict\['s'\] is a torch.sparse_coo tensor"):
        save_checkpoint(p, {"s": torch.eye(2).to_sparse()})
    with pytest.raises(TypeError, match="state_dict keys must be strings, got 1"):
        save_checkpoint(p, {1: w})
    with pytest.raises(TypeError, match="config must be a dict or None, got list"):
        save_checkpoint(p, {"a": w}, [1, 2])
    with pytest.raises(TypeError, match="path must be a str or os.PathLike"):
        save_checkpoint(None, {"a": w})
    assert list(tmp_path.iterdir()) == []
    # independent copies, empty tensors and non-contiguous views are fine
    state = {"a": w, "b": w.clone(), "e": torch.zeros(0), "f": torch.zeros(0), "t": torch.arange(6.0).view(2, 3).t()}
    back, config = load_checkpoint(save_checkpoint(p, state, {"k": (1, 2)}))
    assert config == {"k": [1, 2]} and sorted(back) == ["a", "b", "e", "f", "t"]
    torch.testing.assert_close(back["t"], state["t"])


def test_load_checkpoint_names_the_file(tmp_path):
    good = tmp_path / "good.safetensors"
    save_checkpoint(good, {"w": torch.arange(64.0)}, {"a": 1})
    raw = good.read_bytes()
    cases = {
        "garbage": (b"definitely not safetensors", r"cannot read this checkpoint \(safetensors\) \(SafetensorError"),
        "empty": (b"", r"\(SafetensorError"),
        "truncated": (raw[: len(raw) - 40], r"\(SafetensorError"),
        "huge-header": ((10**12).to_bytes(8, "little") + raw[8:], r"\(SafetensorError"),
        "bad-json-header": (len(b"{oops").to_bytes(8, "little") + b"{oops", r"\(SafetensorError"),
    }
    for name, (data, match) in cases.items():
        path = tmp_path / f"{name}.safetensors"
        path.write_bytes(data)
        with pytest.raises(FileFormatError, match=match) as err:
            load_checkpoint(path)
        assert str(err.value).startswith(str(path)), str(err.value)
    for name, text, match in (("cfg-broken", "{", r"cannot read this checkpoint configuration \(JSON\) "
                                                  r"\(JSONDecodeError"),
                              ("cfg-list", "[1]", "not a pettk checkpoint configuration"),
                              ("cfg-nokey", '{"pettk_version": "1"}', "not a pettk checkpoint configuration"),
                              ("cfg-notdict", '{"config": 3}', "not a pettk checkpoint configuration"),
                              ("cfg-bytes", b"\xff\xfe{", r"\(UnicodeDecodeError")):
        path = tmp_path / f"{name}.safetensors"
        path.write_bytes(raw)
        cfg = path.with_suffix(".json")
        cfg.write_bytes(text) if isinstance(text, bytes) else cfg.write_text(text)
        with pytest.raises(FileFormatError, match=match) as err:
            load_checkpoint(path)
        assert str(err.value).startswith(str(cfg)), str(err.value)
    state, config = load_checkpoint(good, device=None)
    assert config == {"a": 1} and torch.equal(state["w"], torch.arange(64.0))
    with pytest.raises(ValueError, match="device must name a torch device"):
        load_checkpoint(good, device="nope")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available on this machine"):
            load_checkpoint(good, device="cuda")


def test_file_errors_are_value_errors():
    assert issubclass(FileFormatError, ValueError)
    assert issubclass(PETSIRDFormatError, FileFormatError)

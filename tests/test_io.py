"""NIfTI and sinogram files: round trips, atomic writes, geometry metadata."""

import json

import nibabel as nib
import numpy as np
import pytest

import pettk
from pettk.geometry import from_dict
from pettk.io import atomic_path, load_nifti, load_sinogram, save_nifti, save_sinogram


def test_nifti_round_trip_keeps_data_and_affine(tmp_path, rng):
    grid = pettk.ImageGrid((6, 5, 4), (2.0, 2.5, 3.0), origin_mm=(-5.0, 1.0, 7.0))
    x = rng.random(grid.shape).astype(np.float32)
    path = save_nifti(tmp_path / "x.nii.gz", x, grid)
    back, g = load_nifti(path)
    np.testing.assert_array_equal(back, x)
    assert g == grid
    img = nib.load(str(path))
    assert img.header.get_zooms() == (2.0, 2.5, 3.0)
    np.testing.assert_allclose(img.affine, grid.affine)
    grid2 = pettk.ImageGrid((4, 3), 1.5)
    save_nifti(tmp_path / "y.nii", np.ones(grid2.shape), grid2)
    y, g2 = load_nifti(tmp_path / "y.nii", ndim=2)
    assert y.shape == (4, 3) and g2 == grid2


def test_nifti_rejects_bad_input(tmp_path):
    grid = pettk.ImageGrid((4, 3), 1.0)
    with pytest.raises(ValueError, match=r"image must have shape \(4, 3\)"):
        save_nifti(tmp_path / "a.nii", np.ones((3, 4)), grid)
    with pytest.raises(ValueError, match="path must end in .nii or .nii.gz"):
        save_nifti(tmp_path / "a.png", np.ones((4, 3)), grid)
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


@pytest.mark.parametrize("kind", ["beam", "layout", "lors", "tof"])
def test_sinogram_round_trip(tmp_path, tiny, rng, kind):
    grid = tiny.grid
    tof = None
    if kind == "beam":
        grid = pettk.ImageGrid((8, 8), 2.0)
        geo = pettk.ParallelBeam2D(6, 11, 2.0)
    elif kind == "lors":
        start = rng.uniform(-40, 40, size=(7, 3))
        geo = pettk.LORList(start, -start, tof_bin=np.arange(7))
    else:
        geo = tiny.layout
        if kind == "tof":
            tof = pettk.TOFParams(fwhm_mm=20.0, n_bins=15, bin_width_mm=9.0)
    shape = tuple(geo.shape) + ((tof.n_bins,) if tof else ())
    prompts = rng.poisson(3.0, shape).astype(np.float32)
    norm = rng.random(geo.shape)
    path = save_sinogram(tmp_path / "s.npz", prompts, geo, grid, tof, normalisation=norm,
                         mu=np.zeros(grid.shape))
    back = load_sinogram(path)
    np.testing.assert_array_equal(back.prompts, prompts)
    np.testing.assert_array_equal(back.normalisation, norm)
    assert back.attenuation is None and back.mu.shape == grid.shape
    assert back.grid == grid and tuple(back.geometry.shape) == tuple(geo.shape)
    assert json.dumps(back.geometry.to_dict()) == json.dumps(geo.to_dict())
    assert (back.tof is None) == (tof is None)
    if tof:
        assert back.tof == tof


def test_sinogram_rejects_bad_input(tmp_path, tiny):
    with pytest.raises(ValueError, match=r"prompts must have shape \(16, 48, 49\)"):
        save_sinogram(tmp_path / "s.npz", np.ones((16, 48)), tiny.layout, tiny.grid)
    with pytest.raises(ValueError, match="unknown arrays"):
        save_sinogram(tmp_path / "s.npz", np.ones(tiny.layout.shape), tiny.layout, tiny.grid, scatter=1)
    np.savez(tmp_path / "other.npz", a=np.ones(3))
    with pytest.raises(ValueError, match="is not a pettk sinogram file"):
        load_sinogram(tmp_path / "other.npz")
    with pytest.raises(ValueError, match="unknown geometry type 'Cone'"):
        from_dict({"type": "Cone"})


def test_checkpoint_round_trip(tmp_path):
    import torch

    from pettk.io import load_checkpoint, save_checkpoint

    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Conv2d(4, 1, 1))
    path = save_checkpoint(tmp_path / "m.safetensors", net.state_dict(), {"widths": [4], "name": "tiny"})
    state, config = load_checkpoint(path)
    assert config == {"widths": [4], "name": "tiny"}
    fresh = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Conv2d(4, 1, 1))
    fresh.load_state_dict(state)
    x = torch.rand(1, 1, 8, 8)
    torch.testing.assert_close(fresh(x), net(x))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "m.safetensors"]
    with pytest.raises(ValueError, match="path must end in .safetensors"):
        save_checkpoint(tmp_path / "m.pt", net.state_dict())
    with pytest.raises(TypeError, match="state_dict must be a dict of tensors"):
        save_checkpoint(tmp_path / "n.safetensors", {"a": 1})
    with pytest.raises(TypeError):
        save_checkpoint(tmp_path / "o.safetensors", net.state_dict(), {"bad": object()})
    assert not (tmp_path / "o.safetensors").exists()


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_save_nifti_refuses_nonfinite_unless_asked(tmp_path, bad):
    import torch

    grid = pettk.ImageGrid((4, 3, 2), (2.0, 1.5, 3.0), origin_mm=(1.0, -2.0, 5.0))
    x = np.ones(grid.shape, np.float32)
    x[1, 2, 0] = bad
    target = tmp_path / "x.nii.gz"
    target.write_bytes(b"old")  # an existing file is left as it was
    n_nan, n_inf = (1, 0) if np.isnan(bad) else (0, 1)
    for image in (x, torch.from_numpy(x), x.astype(np.float16), x.astype(np.float64)):
        with pytest.raises(ValueError, match=rf"cannot write {target}: the image holds {n_nan} NaN and {n_inf} "
                                             r"infinite voxel\(s\) of 24 \(first at index \(1, 2, 0\)\).*"
                                             "allow_nonfinite=True"):
            save_nifti(target, image, grid)
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["x.nii.gz"]
    with pytest.raises(TypeError, match="allow_nonfinite must be True or False"):
        save_nifti(target, x, grid, allow_nonfinite="yes")
    back, g = load_nifti(save_nifti(target, x, grid, allow_nonfinite=True))
    np.testing.assert_array_equal(back, x)  # NaN == NaN here, values kept exactly
    assert g == grid
    # integer images have no NaN; finite float images are written without the flag
    save_nifti(tmp_path / "i.nii", np.arange(24, dtype=np.int16).reshape(grid.shape), grid)
    save_nifti(tmp_path / "f.nii", np.zeros(grid.shape), grid)

"""Paired data sets: build, resume, manifest, lazy loading and normalisations."""

import json
import shutil

import numpy as np
import pytest
import torch

from pettk.sim.datasets import DatasetConfig, SliceDataset, build_dataset

SMALL = dict(n_subjects=3, slices_per_subject=2, image_size=32, drfs=(4.0, 20.0), counts_per_slice=1e5,
             reference_iterations=2, reference_subsets=4, split=(1, 1, 1), lesions=1, seed=11)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("ds")
    build_dataset(root, DatasetConfig(**SMALL), progress=False)
    return root


def test_manifest_and_arrays(built):
    manifest = json.loads((built / "manifest.json").read_text())
    assert manifest["format"] == "pettk-dataset"
    assert [s["split"] for s in manifest["subjects"]] == ["train", "validation", "test"]
    assert manifest["sinogram_shape"] == [224, 129]
    sub = built / "subject_000"
    full = np.load(sub / "full.npy")
    low4, low20 = np.load(sub / "low_drf4.npy"), np.load(sub / "low_drf20.npy")
    assert full.shape == (2, 224, 129) and np.load(sub / "truth.npy").shape == (2, 32, 32)
    # nested thinning: low-dose counts never exceed the full-dose counts
    assert np.all(low4 <= full) and np.all(low20 <= full)
    assert low4.sum() == pytest.approx(full.sum() / 4, rel=0.05)
    assert low20.sum() == pytest.approx(full.sum() / 20, rel=0.1)
    assert full.sum() / 2 == pytest.approx(1e5, rel=0.02)
    # the stored model reproduces the expected counts' scale
    mult, additive, truth = (np.load(sub / f"{k}.npy") for k in ("mult", "additive", "truth"))
    assert mult.shape == full.shape and np.all(additive > 0)
    ref = np.load(sub / "reference.npy")
    assert np.corrcoef(ref[0].ravel(), truth[0].ravel())[0, 1] > 0.8


def test_same_seed_same_data_and_resume(built, tmp_path):
    other = tmp_path / "again"
    build_dataset(other, DatasetConfig(**SMALL), progress=False)
    for name in ("full.npy", "low_drf20.npy", "truth.npy"):
        np.testing.assert_array_equal(np.load(built / "subject_001" / name), np.load(other / "subject_001" / name))
    # resume: remove one subject, rebuild, the others are not rewritten
    stamp = (other / "subject_000" / "full.npy").stat().st_mtime_ns
    shutil.rmtree(other / "subject_002")
    build_dataset(other, DatasetConfig(**SMALL), progress=False)
    assert (other / "subject_000" / "full.npy").stat().st_mtime_ns == stamp
    rebuilt = np.load(other / "subject_002" / "full.npy")
    np.testing.assert_array_equal(np.load(built / "subject_002" / "full.npy"), rebuilt)
    with pytest.raises(ValueError, match="different configuration"):
        build_dataset(other, DatasetConfig(**{**SMALL, "seed": 12}), progress=False)
    # different subjects differ
    a = np.load(built / "subject_000" / "truth.npy")
    b = np.load(built / "subject_001" / "truth.npy")
    assert not np.array_equal(a, b)


def test_slice_dataset_items_and_normalisations(built):
    ds = SliceDataset(built, "train", drf=20)
    assert len(ds) == 2
    item = ds[1]
    assert item["low"].shape == (224, 129) and item["truth"].shape == (32, 32)
    raw_low = np.load(built / "subject_000" / "low_drf20.npy")[1]
    torch.testing.assert_close(item["low"], torch.from_numpy(20 * raw_low))
    red = SliceDataset(built, "train", drf=20, normalisation="red")[1]
    assert float(red["low"].max()) == pytest.approx(1.0) and float(red["low"].min()) >= -1.0
    torch.testing.assert_close((red["low"] + 1) / 2 * red["scale"], item["low"], rtol=1e-5, atol=1e-3)
    dream = SliceDataset(built, "train", drf=20, normalisation="dream")[1]
    assert float(dream["low"].max()) == pytest.approx(1.0)
    lego = SliceDataset(built, "test", drf=4, normalisation="legopet")[0]
    assert float(lego["truth"].min()) >= -1.0 - 1e-6
    ddip = SliceDataset(built, "validation", drf=4, normalisation="ddip")[0]
    assert float(ddip["mr"].max()) == pytest.approx(1.0)
    loader = torch.utils.data.DataLoader(ds, batch_size=2)
    batch = next(iter(loader))
    assert batch["low"].shape == (2, 224, 129)


def test_dataset_errors(built, tmp_path):
    with pytest.raises(ValueError, match=r"drf 7.0 is not in this data set"):
        SliceDataset(built, "train", drf=7.0)
    with pytest.raises(ValueError, match="split must be"):
        SliceDataset(built, "dev")
    with pytest.raises(ValueError, match="normalisation must be one of"):
        SliceDataset(built, normalisation="zscore")
    with pytest.raises(FileNotFoundError, match="no pettk data set"):
        SliceDataset(tmp_path)
    with pytest.raises(ValueError, match="split .* does not fit 3 subjects"):
        DatasetConfig(**{**SMALL, "split": (5, 1, 1)}).validate()
    with pytest.raises(ValueError, match="drfs must be"):
        DatasetConfig(**{**SMALL, "drfs": (0.5,)}).validate()

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
    with pytest.raises(ValueError, match="anatomy must be one of"):
        DatasetConfig(**{**SMALL, "anatomy": "v3"}).validate()
    with pytest.raises(ValueError, match="tissue_maps .* goes with anatomy='tissue-maps'"):
        DatasetConfig(**{**SMALL, "tissue_maps": str(tmp_path)}).validate()
    with pytest.raises(ValueError, match="tracer must be one of 'fdg', 'amyloid' for anatomy 'v1'"):
        DatasetConfig(**{**SMALL, "anatomy": "v1", "tracer": "amyloid-positive"}).validate()


def test_defaults_are_the_shipped_training_set():
    """Issue 21 item 3: v2 anatomy, 128 x 128 at 2.0863 mm on the mmr-like direct planes, >= 200 x 20."""
    config = DatasetConfig().validate()
    assert config.anatomy == "v2" and config.geometry == "mmr-like"
    assert config.grid().shape == (128, 128) and config.grid().voxel_size_mm == pytest.approx((2.0863, 2.0863))
    assert config.make_geometry().shape == (224, 129)
    splits = config.subject_splits()
    assert splits.count("train") >= 200 and config.slices_per_subject >= 20
    assert splits.count("validation") > 0 and splits.count("test") > 0
    z = config.slice_positions_mm()
    assert z[0] == pytest.approx(-55.0) and z[-1] == pytest.approx(55.0)
    assert DatasetConfig(anatomy="v1").slice_positions_mm()[-1] == pytest.approx(40.0)


def test_v2_data_record_generator_labels_and_lesions(built):
    manifest = json.loads((built / "manifest.json").read_text())
    assert manifest["version"] == 2
    assert manifest["generator"] == {"name": "pettk.sim.brain_phantom_v2", "version": "v2", "family": "standard"}
    assert {s["tracer"] for s in manifest["subjects"]} == {"fdg"}
    items = [SliceDataset(built, split, drf=4.0)[k] for split in ("train", "validation", "test") for k in (0, 1)]
    parenchyma = (7, 8, 9, 10, 11, 12, 13, 14, 15)
    checked = 0
    for item in items:
        labels, lesions, truth = item["labels"].numpy(), item["lesions"].numpy(), item["truth"].numpy()
        assert labels.shape == lesions.shape == truth.shape
        assert set(np.unique(labels)) <= set(range(17))
        ids = np.unique(lesions[lesions > 0])
        assert set(ids) <= {1.0}
        if ids.size == 0 or (lesions == 1).sum() < 2:
            continue
        # lesion numbers mark where the activity departs from its tissue's level
        inside = lesions == 1
        tissue = np.isin(labels, parenchyma) & ~inside
        assert np.isin(labels[inside], parenchyma).mean() >= 0.5
        ratio = truth[inside].mean() / np.median(truth[tissue])
        assert ratio > 1.3 or ratio < 0.75
        checked += 1
    assert checked >= 2


def test_lesion_ids_follow_the_spheres():
    from pettk.geometry import ImageGrid
    from pettk.sim.datasets import lesion_ids
    from pettk.sim.phantoms import Lesion

    grid = ImageGrid((20, 20, 1), (1.0, 1.0, 2.0), origin_mm=(-9.5, -9.5, 3.0))
    ids = lesion_ids(grid, (Lesion((0.0, 0.0, 3.0), 3.0, 2.0), Lesion((5.5, 5.5, 4.0), 2.5, 0.5)))
    assert ids.dtype == np.float32 and ids.shape == grid.shape
    # voxel centres sit on the half-integer lattice: 32 of them within 3 mm of (0, 0); the second
    # sphere cuts the slab plane z = 3 in a circle of radius sqrt(2.5^2 - 1) = 2.29 mm around a
    # lattice point: 21 lattice points (offsets up to (2, 1))
    assert (ids == 1).sum() == 32 and (ids == 2).sum() == 21
    assert ids[9, 9, 0] == 1 and ids[15, 15, 0] == 2 and ids[0, 0, 0] == 0


def test_amyloid_data_sets_mix_positive_and_negative_subjects():
    from pettk.sim.datasets import subject_tracer

    config = DatasetConfig(tracer="amyloid")
    kinds = [subject_tracer(config, s) for s in range(200)]
    assert set(kinds) == {"amyloid-positive", "amyloid-negative"}
    assert 70 < kinds.count("amyloid-positive") < 130
    assert subject_tracer(DatasetConfig(tracer="amyloid", anatomy="v1"), 3) == "amyloid"


def test_slices_without_room_for_lesions_get_fewer(tmp_path):
    """Slices near the vertex hold little parenchyma: the lesions that do not fit are dropped."""
    config = DatasetConfig(n_subjects=1, slices_per_subject=2, image_size=32, geometry="parallel", drfs=(20.0,),
                           counts_per_slice=1e4, reference_iterations=1, reference_subsets=2, split=(1, 0, 0),
                           lesions=8, slice_range_mm=140.0)
    build_dataset(tmp_path, config, progress=False)
    lesions = SliceDataset(tmp_path, "train", drf=20.0)
    assert lesions[0]["lesions"].max() < 8 and lesions[1]["lesions"].max() < 8


def test_slice_dataset_augmentation(built):
    """Issue 21 item 4: augmentation inside the data set, one seeded draw per item, pairs aligned."""
    from pettk.sim.augment import Augmentation

    plain = SliceDataset(built, "train", drf=4.0)[0]
    a = SliceDataset(built, "train", drf=4.0, augment=Augmentation.default(), augment_domain="image", seed=3)
    b = SliceDataset(built, "train", drf=4.0, augment=Augmentation.default(), augment_domain="image", seed=3)
    ia, ib = a[0], b[0]
    assert torch.equal(ia["truth"], ib["truth"]) and torch.equal(ia["mr"], ib["mr"])
    assert not torch.allclose(ia["truth"], plain["truth"])
    assert "low" not in ia and ia["truth"].shape == plain["truth"].shape
    both = SliceDataset(built, "train", drf=4.0, augment=Augmentation(flip=1.0, rotation_deg=0.0, zoom=0.0,
                        elastic_mm=0.0, global_intensity=(1.0, 1.0), tissue_intensity=0.0), seed=0)[0]
    assert torch.equal(both["truth"], torch.flip(plain["truth"], dims=(0,)))
    assert both["low"].shape == plain["low"].shape and not torch.equal(both["low"], plain["low"])
    assert both["low"].sum() == pytest.approx(float(plain["low"].sum()), rel=1e-5)   # a permutation of bins
    with pytest.raises(ValueError, match="normalisation 'red' needs images and sinograms"):
        SliceDataset(built, "train", drf=4.0, normalisation="red", augment=Augmentation(), augment_domain="image")
    with pytest.raises(TypeError, match="augment must be"):
        SliceDataset(built, "train", drf=4.0, augment={"flip": 0.5})

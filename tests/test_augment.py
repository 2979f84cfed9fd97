"""pettk.sim.augment: paired augmentation, exact sinogram symmetries checked against the projector."""

import math

import numpy as np
import pytest
import torch

from pettk.geometry import ImageGrid, LORList, ParallelBeam2D, preset
from pettk.projector import Projector
from pettk.sim.augment import (
    MAX_TISSUE_CODE,
    Augmentation,
    augment_images,
    augment_item,
    augment_sinograms,
    exact_view_step,
    sinogram_symmetry,
    transform_sinograms,
    warp_images,
)

VS = 2.0
N = 32


def rel(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.fixture(scope="module")
def beam():
    # 30 views (not 32): no view at exactly 45 degrees, where Joseph's stepping axis is a tie
    grid = ImageGrid((N, N), VS)
    geometry = ParallelBeam2D(30, 47, VS)
    return grid, geometry, Projector(grid, geometry)


@pytest.fixture(scope="module")
def ring():
    p = preset("tiny")  # 12 sides x 8 crystals: 48 views x 49 bins, 32 x 32 at 2.5 mm
    return p.grid_2d, p.layout_2d, Projector(p.grid_2d, p.layout_2d)


def blobs(shape=(N, N)):
    """Smooth, asymmetric, non-negative, zero outside the inscribed circle."""
    i, j = np.meshgrid(*(np.arange(n) - (n - 1) / 2 for n in shape), indexing="ij")
    x = np.exp(-((i - 4) ** 2 + (j + 2) ** 2) / 20) + 0.5 * np.exp(-((i + 5) ** 2 + (j - 6) ** 2) / 8)
    return x * (i ** 2 + j ** 2 < (min(shape) / 2 - 1) ** 2)


def phantom(rng=None):
    """Piecewise-constant truth on labels 0..4 plus mr, mu, lesions and a reference."""
    i, j = np.meshgrid(np.arange(N) - 15.5, np.arange(N) - 15.5, indexing="ij")
    r = np.hypot(i, j)
    labels = np.zeros((N, N))
    labels[r < 13] = 1
    labels[r < 10] = 2
    labels[(r < 10) & (i > 2)] = 3
    labels[(i + 4) ** 2 + (j - 3) ** 2 < 9] = 4
    values = np.array([0.0, 1.0, 3.0, 7.0, 15.0])
    truth = values[labels.astype(int)]
    lesions = ((i - 5) ** 2 + (j + 5) ** 2 < 6).astype(float)
    return {"truth": truth.astype(np.float32), "reference": (0.9 * truth + 0.1).astype(np.float32),
            "mr": (labels / 4).astype(np.float32), "mu": (0.0096 * (labels > 0)).astype(np.float32),
            "labels": labels.astype(np.float32), "lesions": lesions.astype(np.float32)}, values


# --------------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, error, field", [
    ({"flip": -0.1}, ValueError, "flip"), ({"flip": 1.5}, ValueError, "flip"), ({"flip": "yes"}, TypeError, "flip"),
    ({"rotation_deg": 181}, ValueError, "rotation_deg"), ({"zoom": 0.7}, ValueError, "zoom"),
    ({"elastic_mm": -1}, ValueError, "elastic_mm"), ({"elastic_smoothness_mm": 0}, ValueError, "elastic_smoothness"),
    ({"global_intensity": (1.2, 0.9)}, ValueError, "global_intensity"),
    ({"global_intensity": (0.0, 1.0)}, ValueError, "global_intensity"),
    ({"global_intensity": 1.0}, TypeError, "global_intensity"),
    ({"tissue_intensity": float("nan")}, ValueError, "tissue_intensity"),
])
def test_bad_augmentation_fields(kwargs, error, field):
    with pytest.raises(error, match=field):
        Augmentation(**kwargs)


def test_bad_inputs_raise_before_drawing(beam):
    _, geometry, _ = beam
    images, _ = phantom()
    rng = np.random.default_rng(0)
    state = rng.bit_generator.state
    bad = dict(images, mu=np.zeros((N, N + 1), np.float32))
    with pytest.raises(ValueError, match="'mu'"):
        augment_images(bad, Augmentation(), rng, VS)
    with pytest.raises(ValueError, match="'truth'"):
        augment_images(dict(images, truth=np.full((N, N), np.nan, np.float32)), Augmentation(), rng, VS)
    with pytest.raises(TypeError, match="'mr'"):
        augment_images(dict(images, mr=np.zeros((N, N), np.int32)), Augmentation(), rng, VS)
    with pytest.raises(ValueError, match="labels"):
        augment_images(dict(images, labels=images["labels"] + 0.5), Augmentation(), rng, VS)
    with pytest.raises(ValueError, match="domain"):
        augment_item(images, Augmentation(), rng, VS, geometry, domain="sinograms")
    with pytest.raises(ValueError, match="'low'"):
        augment_item({"low": np.zeros((30, 46), np.float32)}, Augmentation(), rng, VS, geometry)
    with pytest.raises(ValueError, match="'weights'"):
        augment_item(dict(images, weights=np.ones((N, N))), Augmentation(), rng, VS, domain="image")
    with pytest.raises(TypeError, match="geometry"):
        augment_item(images, Augmentation(), rng, VS)
    with pytest.raises(ValueError, match="voxel_size_mm"):
        augment_images(images, Augmentation(), rng, -1.0)
    with pytest.raises(TypeError, match="rng"):
        augment_images(images, Augmentation(), np.random.RandomState(0), VS)
    with pytest.raises(TypeError, match="aug"):
        augment_images(images, {"flip": 0.5}, rng, VS)
    assert rng.bit_generator.state == state  # nothing was drawn


# --------------------------------------------------------------------------------------------
# image domain
# --------------------------------------------------------------------------------------------
def test_deterministic_by_seed_and_types_kept():
    images, _ = phantom()
    a = augment_images(images, Augmentation(), np.random.default_rng(7), VS)
    b = augment_images(images, Augmentation(), np.random.default_rng(7), VS)
    c = augment_images(images, Augmentation(), np.random.default_rng(8), VS)
    for k in images:
        assert a[k].dtype == np.float32 and a[k].shape == (N, N)
        np.testing.assert_array_equal(a[k], b[k])
    assert rel(c["truth"], a["truth"]) > 1e-2
    t = augment_images({k: torch.from_numpy(v) for k, v in images.items()}, Augmentation(),
                       np.random.default_rng(7), VS)
    for k in images:
        assert isinstance(t[k], torch.Tensor) and t[k].dtype == torch.float32
        np.testing.assert_array_equal(t[k].numpy(), a[k])


def test_identity_when_all_ranges_are_zero():
    images, _ = phantom()
    out = augment_images(images, Augmentation.none(), np.random.default_rng(3), VS)
    for k in images:
        np.testing.assert_array_equal(out[k], images[k])


def test_pairs_stay_aligned_and_labels_follow_the_truth():
    images, values = phantom()
    images["copy"] = images["truth"].copy()
    images["ones"] = np.ones((N, N), np.float32)  # reads off the global factor
    aug = Augmentation(rotation_deg=30, zoom=0.1, elastic_mm=3.0, tissue_intensity=0.0, global_intensity=(0.7, 1.4))
    checked = 0
    for seed in range(4):
        out = augment_images(images, aug, np.random.default_rng(seed), VS, activity_keys=("truth", "copy", "ones"))
        np.testing.assert_array_equal(out["copy"], out["truth"])
        factor = float(out["ones"].mean())
        assert np.ptp(out["ones"]) < 1e-6 and abs(factor - 1) > 1e-3
        assert set(np.unique(out["labels"])) <= set(range(5))  # nearest neighbour keeps codes
        code = out["labels"].astype(int)
        # voxels whose interpolated truth is exactly a region's value lie inside that region
        for k in range(1, 5):
            inside = np.isclose(out["truth"], factor * values[k], rtol=1e-5, atol=0)
            assert np.all(code[inside] == k), (seed, k)
            checked += int(inside.sum())
    assert checked > 0.5 * 4 * np.count_nonzero(images["labels"])  # most labelled voxels were checked


def test_flip_is_an_involution_and_a_mirror_of_axis_0():
    images, _ = phantom()
    once = warp_images(images, VS, flip=True)
    twice = warp_images(once, VS, flip=True)
    for k in images:
        np.testing.assert_array_equal(once[k], images[k][::-1])
        np.testing.assert_array_equal(twice[k], images[k])
    flip_only = Augmentation(flip=1.0, rotation_deg=0, zoom=0, elastic_mm=0, global_intensity=(1, 1),
                             tissue_intensity=0)
    out = augment_images(images, flip_only, np.random.default_rng(0), VS)
    np.testing.assert_array_equal(out["truth"], images["truth"][::-1])


def test_global_intensity_range_and_what_it_scales():
    images, _ = phantom()
    aug = Augmentation(flip=0, rotation_deg=0, zoom=0, elastic_mm=0, tissue_intensity=0, global_intensity=(0.8, 1.25))
    factors = []
    for seed in range(60):
        out = augment_images(images, aug, np.random.default_rng(seed), VS)
        mask = images["truth"] > 0
        ratio = out["truth"][mask] / images["truth"][mask]
        assert np.ptp(ratio) < 1e-6
        np.testing.assert_allclose(out["reference"], images["reference"] * ratio[0], rtol=1e-6)
        np.testing.assert_array_equal(out["mu"], images["mu"])
        np.testing.assert_array_equal(out["mr"], images["mr"])
        factors.append(ratio[0])
    assert 0.8 - 1e-6 <= min(factors) < 0.86 and 1.19 < max(factors) <= 1.25 + 1e-6


def test_tissue_scaling_changes_only_labelled_tissue():
    images, _ = phantom()
    aug = Augmentation(flip=0, rotation_deg=0, zoom=0, elastic_mm=0, global_intensity=(1, 1), tissue_intensity=0.3)
    labels = images["labels"].astype(int)
    images["truth"][labels == 0] = 0.2  # unlabelled activity must stay as it is
    out = augment_images(images, aug, np.random.default_rng(5), VS)
    assert np.array_equal(out["truth"][labels == 0], images["truth"][labels == 0])
    factors = []
    for k in range(1, 5):
        ratio = out["truth"][labels == k] / images["truth"][labels == k]
        assert np.ptp(ratio) < 1e-6
        factors.append(ratio[0])
    assert np.ptp(factors) > 0.05  # tissues got different factors
    for k in ("mu", "mr", "labels", "lesions"):
        np.testing.assert_array_equal(out[k], images[k])
    # reference: scaled where the (blurred) truth changed, unchanged far from any tissue
    far = np.hypot(*np.meshgrid(np.arange(N) - 15.5, np.arange(N) - 15.5, indexing="ij")) > 21
    np.testing.assert_allclose(out["reference"][far], images["reference"][far], rtol=1e-3)
    inner = labels == 2
    np.testing.assert_allclose(np.median(out["reference"][inner] / images["reference"][inner]), factors[1], rtol=0.1)
    # without labels the per-tissue part is skipped
    no_labels = {k: v for k, v in images.items() if k != "labels"}
    out = augment_images(no_labels, aug, np.random.default_rng(5), VS)
    np.testing.assert_array_equal(out["truth"], images["truth"])
    assert MAX_TISSUE_CODE >= 16


def test_non_negativity_kept():
    images, _ = phantom()
    aug = Augmentation(rotation_deg=40, zoom=0.2, elastic_mm=4.0, tissue_intensity=0.5)
    for seed in range(5):
        out = augment_images(images, aug, np.random.default_rng(seed), VS)
        for k in images:
            assert out[k].min() >= 0, (seed, k)


# --------------------------------------------------------------------------------------------
# sinogram domain: exact symmetries
# --------------------------------------------------------------------------------------------
def moved_lors(geometry, flip, view_shift):
    """Endpoints of g^-1(LOR) for the object motion g = R(view_shift * pi / n_views) . F."""
    a = math.pi * view_shift / geometry.n_views
    start, end = geometry.lor_endpoints()

    def inverse(p):
        x = math.cos(a) * p[..., 0] + math.sin(a) * p[..., 1]
        y = -math.sin(a) * p[..., 0] + math.cos(a) * p[..., 1]
        return np.stack([-x if flip else x, y], axis=-1).reshape(-1, 2)

    return LORList(inverse(start), inverse(end))


@pytest.mark.parametrize("flip", [False, True])
def test_parallel_beam_symmetries_are_exact(beam, flip):
    grid, geometry, projector = beam
    x = np.random.default_rng(1).random((N, N))
    y = projector.forward(x)
    for k in (0, 1, 7, -11, 15, 29, -30):
        out = transform_sinograms({"y": y}, geometry, flip=flip, view_shift=k)["y"]
        expected = Projector(grid, moved_lors(geometry, flip, k)).forward(x).reshape(y.shape)
        assert rel(out, expected) < 1e-10, k
    # rotations by whole quarter turns are exact on the pixel grid as well: image and sinogram agree
    for k in (0, 15, -15, 30):
        image = warp_images({"x": x}, VS, flip=flip, rotation_deg=180.0 * k / geometry.n_views)["x"]
        out = transform_sinograms({"y": y}, geometry, flip=flip, view_shift=k)["y"]
        assert rel(projector.forward(image), out) < 1e-10, k
    # float32 torch
    yt = torch.from_numpy(y.astype(np.float32))
    out = transform_sinograms({"y": yt}, geometry, flip=flip, view_shift=15)["y"]
    image = warp_images({"x": torch.from_numpy(x.astype(np.float32))}, VS, flip=flip, rotation_deg=90.0)["x"]
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    assert rel(projector.forward(image).numpy(), out.numpy()) < 1e-5


def test_wrong_conventions_would_fail(beam):
    """The checks above can fail: no radial flip at the wrap-around or the opposite rotation."""
    grid, geometry, projector = beam
    x = np.random.default_rng(2).random((N, N))
    y = projector.forward(x)
    expected = Projector(grid, moved_lors(geometry, False, 7)).forward(x).reshape(y.shape)
    assert rel(np.roll(y, 7, axis=0), expected) > 0.05
    assert rel(transform_sinograms({"y": y}, geometry, view_shift=-7)["y"], expected) > 0.05


def test_ring_symmetries_are_exact(ring):
    grid, layout, projector = ring
    assert exact_view_step(layout) == 8
    x = blobs()
    y = projector.forward(x)
    for flip in (False, True):
        for k in (8, -16, 48):
            out = transform_sinograms({"y": y}, layout, flip=flip, view_shift=k)["y"]
            expected = Projector(grid, moved_lors(layout, flip, k)).forward(x).reshape(y.shape)
            assert rel(out, expected) < 1e-10, (flip, k)
        image = warp_images({"x": x}, grid.voxel_size_mm, flip=flip, rotation_deg=90.0)["x"]
        out = transform_sinograms({"y": y}, layout, flip=flip, view_shift=24)["y"]
        assert rel(projector.forward(image), out) < 1e-10
    with pytest.raises(ValueError, match="not an exact symmetry"):
        sinogram_symmetry(layout, False, 1)
    mmr = preset("mmr-like").layout_2d  # 224 x 129: permutations exist for the side step and the mirror
    for flip, k in ((True, 0), (False, 8), (True, -8)):
        index = sinogram_symmetry(mmr, flip, k)
        assert np.array_equal(np.sort(index), np.arange(224 * 129))


def test_augment_sinograms_scales_counts_not_mult(beam):
    _, geometry, projector = beam
    y = projector.forward(blobs()).astype(np.float32)
    sinos = {"low": y, "full": 2 * y, "mult": np.full_like(y, 0.5), "additive": np.full_like(y, 0.1)}
    aug = Augmentation(flip=0, rotation_deg=0, global_intensity=(0.5, 2.0))
    out = augment_sinograms(sinos, aug, np.random.default_rng(4), geometry)
    c = float(out["low"].sum() / y.sum())
    assert 0.5 <= c <= 2.0 and abs(c - 1) > 1e-3
    np.testing.assert_allclose(out["full"], 2 * c * y, rtol=1e-6)
    np.testing.assert_allclose(out["additive"], 0.1 * c, rtol=1e-6)
    np.testing.assert_array_equal(out["mult"], sinos["mult"])
    assert all(v.dtype == np.float32 for v in out.values())


# --------------------------------------------------------------------------------------------
# items
# --------------------------------------------------------------------------------------------
def test_augment_item_both_keeps_images_and_sinograms_consistent(beam):
    grid, geometry, projector = beam
    truth = blobs().astype(np.float32)
    y = projector.forward(truth)
    item = {"truth": torch.from_numpy(truth), "mu": torch.from_numpy(0.01 * (truth > 0.1).astype(np.float32)),
            "full": torch.from_numpy(y), "low": torch.from_numpy(y.copy()), "drf": 4.0, "scale": 1.0,
            "subject": "subject_000", "slice": 3}
    aug = Augmentation(flip=0.5, rotation_deg=180, global_intensity=(0.8, 1.25))
    changed = 0
    for seed in range(6):
        out = augment_item(item, aug, np.random.default_rng(seed), VS, geometry, domain="both")
        assert list(out) == list(item) and out["slice"] == 3 and out["subject"] == "subject_000"
        assert out["truth"].dtype == torch.float32 and out["full"].shape == y.shape
        # projection of the augmented truth = augmented sinogram, up to the rotation's interpolation
        assert rel(projector.forward(out["truth"]).numpy(), out["full"].numpy()) < 0.04, seed
        changed += rel(out["full"].numpy(), y) > 0.1
    assert changed >= 4
    same = augment_item(item, aug, np.random.default_rng(5), VS, geometry)
    again = augment_item(item, aug, np.random.default_rng(5), VS, geometry)
    assert torch.equal(same["truth"], again["truth"]) and torch.equal(same["low"], again["low"])
    only_images = augment_item(item, Augmentation(), 1, VS, domain="image")
    assert set(only_images) == {"truth", "mu", "drf", "scale", "subject", "slice"}
    only_sinograms = augment_item(item, Augmentation(), 1, geometry=geometry, domain="sinogram")
    assert set(only_sinograms) == {"full", "low", "drf", "scale", "subject", "slice"}


def test_ring_item_rotations_are_whole_sides(ring):
    grid, layout, projector = ring
    truth = blobs().astype(np.float32)
    y = projector.forward(truth)
    aug = Augmentation(flip=0, rotation_deg=35, global_intensity=(1, 1))  # 30 degree sides: shifts -8, 0, 8
    seen = set()
    for seed in range(12):
        out = augment_item({"full": y, "truth": truth}, aug, seed, grid.voxel_size_mm, layout)
        for k in (-8, 0, 8):
            if np.array_equal(out["full"], transform_sinograms({"y": y}, layout, view_shift=k)["y"]):
                seen.add(k)
                assert rel(projector.forward(out["truth"]), out["full"]) < 0.04
    assert seen == {-8, 0, 8}

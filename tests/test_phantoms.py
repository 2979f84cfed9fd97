"""Phantoms: procedural brain, 3D Shepp–Logan, cylinders/spheres/NEMA, label maps, input errors."""

import math

import numpy as np
import pytest
from scipy import ndimage

import pettk
from pettk.sim.phantoms import (
    BRAIN_MR,
    BRAIN_MU,
    SHEPP_LOGAN_3D,
    TRACER_ACTIVITY,
    BrainPhantom,
    ContrastPhantom,
    brain_phantom,
    ellipsoid_phantom_3d,
    from_label_maps,
    hot_spheres,
    nema_iq_phantom,
    shepp_logan_2d,
    shepp_logan_3d,
    uniform_cylinder,
)

# A 1 mm transaxial slice and a coarse 3D grid, both covering a whole head around the origin.
G2 = pettk.ImageGrid((200, 236), 1.0)
G3 = pettk.ImageGrid((92, 112, 84), 2.0)


@pytest.fixture(scope="module")
def brain2d():
    return brain_phantom(G2, seed=0)


@pytest.fixture(scope="module")
def brain3d():
    return brain_phantom(G3, seed=0, lesions=4)


def _pure(labels, label):
    """Voxels whose whole 3x3(x3) neighbourhood carries ``label`` (free of partial volume)."""
    return (ndimage.minimum_filter(labels, 3) == label) & (ndimage.maximum_filter(labels, 3) == label)


def _extent(mask, axis):
    idx = np.flatnonzero(mask.any(axis=tuple(k for k in range(mask.ndim) if k != axis)))
    return idx[-1] - idx[0] + 1


# --------------------------------------------------------------------------------------------
# brain_phantom
# --------------------------------------------------------------------------------------------
def test_brain_arrays_shapes_dtypes_and_label_codes(brain2d, brain3d):
    for b, grid in ((brain2d, G2), (brain3d, G3)):
        assert isinstance(b, BrainPhantom)
        for name in ("activity", "mu", "mr"):
            arr = getattr(b, name)
            assert arr.shape == grid.shape and arr.dtype == np.float64
        assert b.labels.shape == grid.shape and b.labels.dtype == np.int16
        assert b.lesion_mask.shape == grid.shape and b.lesion_mask.dtype == bool
        assert set(np.unique(b.labels)) <= set(range(8))
        assert {0, 1, 2, 3, 4, 5, 6} <= set(np.unique(b.labels).tolist())
        assert b.mr.min() >= 0.0 and b.mr.max() <= 1.0
    np.testing.assert_array_equal(brain3d.lesion_mask, brain3d.labels == 7)
    assert not brain2d.lesion_mask.any() and brain2d.lesions == ()


def test_same_seed_gives_identical_arrays():
    grid = pettk.ImageGrid((62, 74, 56), 3.0)
    first, again = brain_phantom(grid, seed=5, lesions=2), brain_phantom(grid, seed=5, lesions=2)
    for name in ("activity", "mu", "mr", "labels", "lesion_mask"):
        np.testing.assert_array_equal(getattr(again, name), getattr(first, name))
    assert again.lesions == first.lesions and len(first.lesions) == 2
    a, b = brain_phantom(G2, seed=11, tracer="amyloid"), brain_phantom(G2, seed=11, tracer="amyloid")
    np.testing.assert_array_equal(a.activity, b.activity)
    np.testing.assert_array_equal(a.labels, b.labels)


def test_different_seeds_are_different_subjects(brain2d):
    for seed in (1, 2):
        other = brain_phantom(G2, seed=seed)
        head = (brain2d.labels > 0) | (other.labels > 0)
        changed = (brain2d.labels != other.labels) & head
        assert changed.sum() > 0.02 * head.sum()
        assert other.subject["scale"] != brain2d.subject["scale"]
    # the folding pattern alone (same size, pose) also changes the cortex between seeds
    assert 0.92 <= brain2d.subject["scale"] <= 1.08 and abs(brain2d.subject["rotation_deg"]) <= 10.0
    assert all(abs(t) <= 5.0 for t in brain2d.subject["translation_mm"])


def test_fdg_grey_to_white_ratio_and_tissue_values(brain2d):
    table = TRACER_ACTIVITY["fdg"]
    means = {label: brain2d.activity[_pure(brain2d.labels, label)].mean() for label in (1, 2, 3, 4, 5, 6)}
    assert _pure(brain2d.labels, 4).sum() > 200 and _pure(brain2d.labels, 5).sum() > 2000
    assert means[4] / means[5] == pytest.approx(4.0, rel=0.01)
    for label, value in means.items():
        assert value == pytest.approx(table[label], rel=0.01), label
    assert brain2d.activity[brain2d.labels == 0].max() < 0.3  # background (partial volume at the scalp only)


def test_amyloid_white_matter_above_grey_matter():
    b = brain_phantom(G2, seed=0, tracer="Amyloid")
    gm, wm = (b.activity[_pure(b.labels, label)].mean() for label in (4, 5))
    assert wm > gm
    assert wm / gm == pytest.approx(2.0 / 1.2, rel=0.01)
    assert b.subject["tracer"] == "amyloid"
    # same anatomy as FDG for the same seed: only the activity table changes
    np.testing.assert_array_equal(b.labels, brain_phantom(G2, seed=0).labels)


def test_mu_is_exact_on_pure_tissue_and_bone(brain2d, brain3d):
    for b in (brain2d, brain3d):
        for label in (1, 3, 4, 5, 6):
            assert np.all(b.mu[_pure(b.labels, label)] == 0.0096), label
        assert np.all(b.mu[_pure(b.labels, 2)] == 0.0143)
        assert np.all(b.mu[_pure(b.labels, 0)] == 0.0)
        assert b.mu.min() >= 0.0 and b.mu.max() <= 0.0143
        # every voxel mixing soft tissues only (scalp, CSF, brain) is exactly 0.0096: no rounding
        soft = ndimage.minimum_filter(b.labels, 3) >= 3
        assert np.all(b.mu[soft] == 0.0096)
    assert np.all(brain2d.mr[_pure(brain2d.labels, 5)] == BRAIN_MR[5])
    assert np.all(brain2d.mr[_pure(brain2d.labels, 4)] == BRAIN_MR[4])
    assert BRAIN_MU[2] == 0.0143


def _rotated_extent(semi_x, semi_y, degrees):
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    return 2 * math.hypot(semi_x * c, semi_y * s), 2 * math.hypot(semi_x * s, semi_y * c)


def test_head_size_matches_stated_ranges():
    widths, lengths = [], []
    for seed in range(6):
        b = brain_phantom(G2, seed=seed, supersample=1)
        head = b.labels > 0
        wx, wy = _extent(head, 0), _extent(head, 1)  # 1 mm voxels
        size = b.subject["head_size_mm"]
        ex, ey = _rotated_extent(size[0] / 2, size[1] / 2, b.subject["rotation_deg"])
        assert wx == pytest.approx(ex, abs=3.0) and wy == pytest.approx(ey, abs=3.0)
        # nominal 155 x 192 mm, varied by the +-8 % subject scale and +-4 % aspect
        assert 150 * 0.92 * 0.98 <= wx <= 160 * 1.08 * 1.02
        assert 185 * 0.92 * 0.98 <= wy <= 200 * 1.08 * 1.02
        widths.append(wx)
        lengths.append(wy)
    assert 150 <= np.mean(widths) <= 160 and 185 <= np.mean(lengths) <= 200


def test_3d_brain_axial_extent_and_structures(brain3d):
    brain = np.isin(brain3d.labels, (4, 5, 6, 7))
    height = _extent(brain, 2) * 2.0
    assert 0.92 * 120 <= height <= 1.08 * 140
    scale = brain3d.subject["scale"]
    assert 120 * scale - 4 <= height <= 140 * scale + 4
    # deep structures (ventricles, basal ganglia) only in the middle, not at the top or bottom
    z_deep = np.flatnonzero((brain3d.labels == 6).any(axis=(0, 1)))
    z_brain = np.flatnonzero(brain.any(axis=(0, 1)))
    assert z_deep[0] - z_brain[0] > 10 and z_brain[-1] - z_deep[-1] > 10


def test_2d_brain_is_the_central_slice_of_the_3d_brain():
    g3 = pettk.ImageGrid((90, 110, 5), 2.0)
    g2 = pettk.ImageGrid((90, 110), 2.0)
    b3, b2 = brain_phantom(g3, seed=4, supersample=1), brain_phantom(g2, seed=4, supersample=1)
    np.testing.assert_array_equal(b3.labels[:, :, 2], b2.labels)
    np.testing.assert_array_equal(b3.activity[:, :, 2], b2.activity)


def test_supersampling_gives_partial_volume_values(brain2d):
    coarse = brain_phantom(pettk.ImageGrid((100, 118), 2.0), seed=0, supersample=4)
    edges = ~np.isin(coarse.activity, list(TRACER_ACTIVITY["fdg"].values()))
    assert edges.sum() > 500  # mixed voxels at every tissue boundary
    # the mean activity per mm^2 does not depend on the voxel size (same analytic object)
    total_fine = brain2d.activity.sum() * 1.0
    total_coarse = coarse.activity.sum() * 4.0
    assert total_coarse == pytest.approx(total_fine, rel=0.01)


def test_lesions_change_activity_only(brain3d):
    clean = brain_phantom(G3, seed=0)
    lesions = brain3d.lesions
    assert len(lesions) == 4 and sum(les.hot for les in lesions) == 2
    np.testing.assert_array_equal(brain3d.mu, clean.mu)
    np.testing.assert_array_equal(brain3d.mr, clean.mr)
    assert set(np.unique(clean.labels[brain3d.lesion_mask]).tolist()) <= {4, 5, 6}
    coords = np.stack(G3.coordinates(), axis=-1)
    near = np.zeros(G3.shape, dtype=bool)  # voxels a lesion sample may fall in
    for les in lesions:
        near |= np.linalg.norm(coords - np.asarray(les.centre_mm), axis=-1) <= les.radius_mm + 2.0
    np.testing.assert_array_equal(brain3d.labels[~near], clean.labels[~near])
    np.testing.assert_array_equal(brain3d.activity[~near], clean.activity[~near])
    for les in lesions:
        assert 3.0 <= les.radius_mm <= 8.0
        assert 1.5 <= les.factor <= 3.0 if les.hot else 0.1 <= les.factor <= 0.5
        dist = np.linalg.norm(coords - np.asarray(les.centre_mm), axis=-1)
        mask = brain3d.lesion_mask & (dist <= les.radius_mm)
        assert mask.sum() >= 1
        ratio = brain3d.activity[mask].mean() / clean.activity[mask].mean()
        assert ratio > 1.2 if les.hot else ratio < 0.7
        core = dist <= les.radius_mm - 2.0  # voxels entirely inside the lesion
        if core.any():
            np.testing.assert_allclose(brain3d.activity[core], les.factor * clean.activity[core], rtol=1e-12)


def test_odd_number_of_lesions_in_2d():
    b = brain_phantom(G2, seed=3, lesions=3)
    assert len(b.lesions) == 3 and sum(les.hot for les in b.lesions) in (1, 2)
    assert all(len(les.centre_mm) == 2 for les in b.lesions)
    clean = brain_phantom(G2, seed=3)
    changed = (b.labels != clean.labels) | (b.activity != clean.activity)
    assert changed.sum() >= b.lesion_mask.sum() > 0
    assert np.all(ndimage.binary_dilation(b.lesion_mask, iterations=2)[changed])  # only around the lesions
    # the anatomy does not depend on the number of lesions (lesions are drawn after the anatomy)
    assert dict(b.subject) == dict(clean.subject)


def test_brain_errors_before_any_work():
    with pytest.raises(TypeError, match="grid must be a pettk.ImageGrid"):
        brain_phantom((64, 64))
    with pytest.raises(ValueError, match=r"tracer must be one of 'fdg', 'amyloid'; got 'pib'"):
        brain_phantom(G2, tracer="pib")
    with pytest.raises(TypeError, match="tracer must be a string"):
        brain_phantom(G2, tracer=3)
    with pytest.raises(ValueError, match="lesions must be an integer >= 0, got -1"):
        brain_phantom(G2, lesions=-1)
    with pytest.raises(TypeError, match="lesions"):
        brain_phantom(G2, lesions=1.5)
    with pytest.raises(ValueError, match="supersample must be an integer >= 1, got 0"):
        brain_phantom(G2, supersample=0)
    with pytest.raises(ValueError, match="seed must be an integer >= 0, got -2"):
        brain_phantom(G2, seed=-2)
    with pytest.raises(TypeError, match="seed"):
        brain_phantom(G2, seed="a")
    with pytest.raises(ValueError, match="could not place lesion"):
        brain_phantom(pettk.ImageGrid((8, 8), 1.0, origin_mm=(300.0, 300.0)), lesions=1)


# --------------------------------------------------------------------------------------------
# from_label_maps
# --------------------------------------------------------------------------------------------
def test_from_label_maps_maps_values():
    labels = np.array([[0, 1, 2], [3, 9, 1]], dtype=np.uint8)
    p = from_label_maps(labels, {1: 4.0, 2: 1.0, 3: 0.05}, [0.0, 0.0096, 0.0096, 0.0096],
                        grid=pettk.ImageGrid((2, 3), 2.0), mr_per_label={1: 0.5, 9: 0.9})
    np.testing.assert_array_equal(p.activity, [[0.0, 4.0, 1.0], [0.05, 0.0, 4.0]])
    np.testing.assert_array_equal(p.mu, [[0.0, 0.0096, 0.0096], [0.0096, 0.0, 0.0096]])
    np.testing.assert_array_equal(p.mr, [[0.0, 0.5, 0.0], [0.0, 0.9, 0.5]])
    assert p.labels.dtype == np.int16 and p.activity.dtype == np.float64
    assert not p.lesion_mask.any() and p.lesion_mask.shape == (2, 3)
    # round trip: a procedural brain's labels and tables give back its pure voxels
    b = brain_phantom(G3, seed=1, supersample=1)
    again = from_label_maps(b.labels, TRACER_ACTIVITY["fdg"], BRAIN_MU, mr_per_label=BRAIN_MR)
    np.testing.assert_array_equal(again.activity, b.activity)
    np.testing.assert_array_equal(again.mu, b.mu)
    assert np.all(from_label_maps(labels, {}, {}).mr == 0.0)


def test_from_label_maps_errors():
    labels = np.zeros((4, 5), dtype=int)
    with pytest.raises(TypeError, match="labels must be an integer array, got dtype float64"):
        from_label_maps(labels.astype(float), {0: 1.0}, {0: 0.0})
    with pytest.raises(ValueError, match=r"mu_per_label\[2\] must be >= 0, got -0.1"):
        from_label_maps(labels, {0: 1.0}, {2: -0.1})
    with pytest.raises(ValueError, match=r"activity_per_label\[1\] must be >= 0"):
        from_label_maps(labels, [0.0, -1.0], {})
    with pytest.raises(ValueError, match=r"labels shape \(4, 5\) does not match grid.shape \(5, 4\)"):
        from_label_maps(labels, {}, {}, grid=pettk.ImageGrid((5, 4), 1.0))
    with pytest.raises(ValueError, match="labels must be >= 0, got a minimum of -1"):
        from_label_maps(labels - 1, {}, {})
    with pytest.raises(ValueError, match="labels must be a 2D"):
        from_label_maps(np.zeros(5, dtype=int), {}, {})
    with pytest.raises(TypeError, match="activity_per_label keys must be integer labels"):
        from_label_maps(labels, {"wm": 1.0}, {})
    with pytest.raises(TypeError, match="mu_per_label must be a"):
        from_label_maps(labels, {}, 0.0096)
    with pytest.raises(ValueError, match="activity_per_label is required"):
        from_label_maps(labels, None, {})
    with pytest.raises(TypeError, match=r"mr_per_label\[0\] must be a real number"):
        from_label_maps(labels, {}, {}, mr_per_label={0: "bright"})
    with pytest.raises(ValueError, match="must be finite"):
        from_label_maps(labels, {0: float("nan")}, {})


# --------------------------------------------------------------------------------------------
# Shepp–Logan 3D
# --------------------------------------------------------------------------------------------
def test_shepp_logan_3d_central_slice_matches_2d():
    g3 = pettk.ImageGrid((64, 64, 61), 2.0)  # half-width 64 mm; the grid ends 60 mm above and below
    vol = shepp_logan_3d(g3)
    assert vol.shape == g3.shape and SHEPP_LOGAN_3D.shape == (12, 8)
    assert vol.min() >= -1e-12 and vol.max() <= 1.0 + 1e-12
    central = shepp_logan_2d(pettk.ImageGrid((64, 64), 2.0), supersample=2)
    diff = np.abs(vol[:, :, 30] - central)
    assert diff.mean() < 2e-3
    assert np.mean(diff > 0.01) < 0.02  # a few edge voxels differ (axial partial volume of thin features)
    assert vol[:, :, 0].max() == 0.0 and vol[:, :, 4].max() > 0.0  # the head ends 0.9 half-widths (57.6 mm) down
    upper = vol[22:42, 22:42, 30 + 20]  # z = +40 mm = 0.625 half-widths: Kak & Slaney's two upper ellipsoids
    assert upper.max() == pytest.approx(0.3) and upper.min() == pytest.approx(0.1)
    assert np.median(upper) == pytest.approx(0.2)


def test_ellipsoid_volume_and_errors():
    grid = pettk.ImageGrid((40, 40, 40), 1.5)
    vol = ellipsoid_phantom_3d(grid, [[2.0, 0.5, 0.3, 0.4, 0.1, 0.0, -0.1, 30.0]], 40.0, supersample=3)
    expected = 2.0 * 4.0 / 3.0 * math.pi * 20.0 * 12.0 * 16.0
    assert vol.sum() * grid.voxel_volume_mm3 == pytest.approx(expected, rel=0.01)
    with pytest.raises(ValueError, match=r"ellipsoids must have shape \(n, 8\)"):
        ellipsoid_phantom_3d(grid, [[1.0, 0.5, 0.5, 0.0, 0.0, 0.0]], 40.0)
    with pytest.raises(ValueError, match="semi-axes"):
        ellipsoid_phantom_3d(grid, [[1.0, -0.5, 0.5, 0.5, 0.0, 0.0, 0.0, 0.0]], 40.0)
    with pytest.raises(ValueError, match="half_width_mm must be a finite number > 0"):
        ellipsoid_phantom_3d(grid, SHEPP_LOGAN_3D, -1.0)
    with pytest.raises(ValueError, match="grid must be a 3D ImageGrid, got a 2D grid"):
        shepp_logan_3d(pettk.ImageGrid((8, 8), 1.0))


# --------------------------------------------------------------------------------------------
# uniform_cylinder, hot_spheres, nema_iq_phantom
# --------------------------------------------------------------------------------------------
def test_uniform_cylinder_integral():
    g2 = pettk.ImageGrid((64, 60), (1.7, 2.1))
    disk = uniform_cylinder(g2, 40.0, value=2.5, centre_mm=(3.0, -4.0))
    assert disk.sum() * g2.voxel_volume_mm3 == pytest.approx(2.5 * math.pi * 40.0 ** 2, rel=0.01)
    assert disk.max() == 2.5 and 0 < disk[disk > 0].min() < 2.5  # partial-volume edge
    g3 = pettk.ImageGrid((48, 48, 30), (2.0, 2.0, 2.5))
    cyl = uniform_cylinder(g3, 35.0, value=1.5, length_mm=51.3)
    assert cyl.sum() * g3.voxel_volume_mm3 == pytest.approx(1.5 * math.pi * 35.0 ** 2 * 51.3, rel=0.01)
    full = uniform_cylinder(g3, 35.0)
    assert full.sum() * g3.voxel_volume_mm3 == pytest.approx(math.pi * 35.0 ** 2 * g3.extent_mm[2], rel=0.01)
    np.testing.assert_array_equal(full[:, :, 0], full[:, :, -1])  # a cylinder along z


def test_uniform_cylinder_errors():
    g2 = pettk.ImageGrid((32, 32), 2.0)
    with pytest.raises(ValueError, match="radius_mm must be a finite number > 0, got -3.0"):
        uniform_cylinder(g2, -3.0)
    with pytest.raises(ValueError, match="does not fit in the grid's transaxial field of view"):
        uniform_cylinder(g2, 40.0)
    with pytest.raises(ValueError, match="length_mm applies to 3D grids only"):
        uniform_cylinder(g2, 10.0, length_mm=20.0)
    with pytest.raises(ValueError, match="centre_mm must have 2 entries"):
        uniform_cylinder(g2, 10.0, centre_mm=(0.0, 0.0, 0.0))
    with pytest.raises(TypeError, match="grid must be a pettk.ImageGrid"):
        uniform_cylinder("grid", 10.0)


@pytest.mark.parametrize("grid", [pettk.ImageGrid((110, 110), 2.0), pettk.ImageGrid((110, 110, 24), 2.0)],
                         ids=["2d", "3d"])
def test_hot_spheres_masks_and_contrast(grid):
    ph = hot_spheres(grid, 100.0, contrast=4.0, background=2.0)
    assert isinstance(ph, ContrastPhantom) and ph.image.shape == grid.shape and ph.true_contrast == 4.0
    assert len(ph.sphere_masks) == 6 and ph.sphere_centres_mm.shape == (6, grid.ndim)
    np.testing.assert_array_equal(ph.sphere_radii_mm, [5, 6.5, 8.5, 11, 14, 18.5])
    bg = ph.image[ph.background_mask].mean()
    assert bg == pytest.approx(2.0, rel=1e-12) and ph.background_mask.sum() > 1000
    ring = np.linalg.norm(ph.sphere_centres_mm[:, :2], axis=1)
    np.testing.assert_allclose(ring, 50.0)
    for mask, r in zip(ph.sphere_masks, ph.sphere_radii_mm):
        assert not (mask & ph.background_mask).any()
        size = mask.sum() * grid.voxel_volume_mm3
        true = math.pi * r ** 2 if grid.ndim == 2 else 4.0 / 3.0 * math.pi * r ** 3
        assert size == pytest.approx(true, rel=0.35)
        interior = ndimage.binary_erosion(mask)
        assert ph.image[interior].mean() / bg == pytest.approx(4.0, rel=0.02)
    # partial volume: the sphere's activity integral is its true one
    total = (ph.image - 2.0 * (ph.image > 0)).sum()  # not exact at the cylinder edge, so compare inside
    assert total > 0
    if grid.ndim == 2:
        excess = sum((ph.image * ndimage.binary_dilation(m, iterations=2)).sum() - 2.0 * ndimage.binary_dilation(
            m, iterations=2).sum() for m in ph.sphere_masks) * grid.voxel_volume_mm3
        expected = (4.0 - 1.0) * 2.0 * math.pi * np.sum(ph.sphere_radii_mm ** 2)
        assert excess == pytest.approx(expected, rel=0.01)


def test_hot_spheres_seed_ring_and_errors():
    grid = pettk.ImageGrid((80, 80), 2.0)
    a = hot_spheres(grid, 70.0, sphere_radii_mm=(6.0, 6.0, 6.0), seed=1, ring_radius_mm=30.0)
    b = hot_spheres(grid, 70.0, sphere_radii_mm=(6.0, 6.0, 6.0), seed=1, ring_radius_mm=30.0)
    c = hot_spheres(grid, 70.0, sphere_radii_mm=(6.0, 6.0, 6.0), ring_radius_mm=30.0)
    np.testing.assert_array_equal(a.image, b.image)
    assert not np.allclose(a.sphere_centres_mm, c.sphere_centres_mm)
    np.testing.assert_allclose(c.sphere_centres_mm[0], [30.0, 0.0], atol=1e-12)
    cold = hot_spheres(grid, 70.0, sphere_radii_mm=8.0, contrast=0.0)
    assert cold.image[ndimage.binary_erosion(cold.sphere_masks[0])].max() == 0.0
    with pytest.raises(ValueError, match="sphere_radii_mm must be > 0"):
        hot_spheres(grid, 70.0, sphere_radii_mm=(5.0, -1.0))
    with pytest.raises(ValueError, match="do not fit on a ring inside background_radius_mm=30.0"):
        hot_spheres(grid, 30.0)
    with pytest.raises(ValueError, match="spheres do not fit: ring_radius_mm=60.0"):
        hot_spheres(grid, 70.0, ring_radius_mm=60.0)
    with pytest.raises(ValueError, match="overlap"):
        hot_spheres(grid, 70.0, sphere_radii_mm=(10.0, 10.0, 10.0), ring_radius_mm=5.0)
    with pytest.raises(ValueError, match="background cylinder of background_radius_mm=90.0 .* does not fit"):
        hot_spheres(grid, 90.0)
    with pytest.raises(ValueError, match="contrast must be >= 0.0, got -1.0"):
        hot_spheres(grid, 70.0, contrast=-1.0)
    with pytest.raises(ValueError, match="does not fit in the grid's axial extent"):
        hot_spheres(pettk.ImageGrid((80, 80, 4), 2.0), 70.0)


@pytest.mark.parametrize("grid", [pettk.ImageGrid((160, 128), 2.0), pettk.ImageGrid((128, 100), 2.0),
                                  pettk.ImageGrid((100, 100, 60), 2.5)], ids=["2d-full-size", "2d-scaled", "3d-scaled"])
def test_nema_phantom(grid):
    ph = nema_iq_phantom(grid)
    assert len(ph.sphere_masks) == 6
    diam = 2 * ph.sphere_radii_mm
    scale = diam[0] / 10.0
    np.testing.assert_allclose(diam, scale * np.array([10, 13, 17, 22, 28, 37]))
    half = np.asarray(grid.extent_mm[:2]) / 2 - np.asarray(grid.voxel_size_mm[:2])
    assert scale == pytest.approx(min(1.0, half[0] / 147.0, half[1] / 112.0))  # body 294 x 224 mm, fitted
    assert scale == 1.0 if grid.shape == (160, 128) else scale < 0.9
    np.testing.assert_array_equal(ph.sphere_contrasts, [4, 4, 4, 4, 0, 0])
    bg = ph.image[ph.background_mask].mean()
    assert bg == pytest.approx(1.0, rel=1e-12)
    for mask, contrast in zip(ph.sphere_masks, ph.sphere_contrasts):
        interior = ndimage.binary_erosion(mask)
        values = ph.image[interior if interior.any() else mask]
        if contrast == 0:
            assert values.mean() < 0.05  # cold spheres are empty
        else:
            assert values.max() == pytest.approx(4.0, rel=0.02)
    assert ph.lung_mask is not None and ph.lung_mask.any()
    assert ph.image[ph.lung_mask].max() == 0.0
    assert not (ph.lung_mask & ph.background_mask).any()
    # the body fits inside the grid: no activity on the grid's edge
    edge = np.ones(grid.shape[:2], dtype=bool)
    edge[1:-1, 1:-1] = False
    assert ph.image[edge].max() == 0.0 if grid.ndim == 2 else ph.image[edge].max() == 0.0


def test_nema_errors():
    with pytest.raises(ValueError, match="supersample must be an integer >= 1"):
        nema_iq_phantom(pettk.ImageGrid((32, 32), 8.0), supersample=0)
    with pytest.raises(ValueError, match="37 mm sphere .* does not fit in the grid's axial extent"):
        nema_iq_phantom(pettk.ImageGrid((160, 128, 3), 2.0))
    with pytest.raises(TypeError, match="grid must be a pettk.ImageGrid"):
        nema_iq_phantom(None)

"""Anatomy generator v2: statistics of the generated subjects, determinism, PET/MR mismatch, errors.

Small grids (4 mm whole heads, 1 mm crops) keep the module fast; every check is on numbers
measured on the rendered volumes or on the drawn parameters, never on wall time.
"""

import numpy as np
import pytest
from scipy import ndimage

import pettk
from pettk.sim import AnatomyPhantom, BrainPhantom, brain_phantom, brain_phantom_v2
from pettk.sim.anatomy import PARENCHYMA, POSE_RANGES, TISSUE_LABELS, Pose
from pettk.sim.anatomy.shapes import Shapes
from pettk.sim.anatomy.tables import BONE, BRAINSTEM, CAUDATE, CB_GM, CB_WM, CSF, GM, THALAMUS, VENTRICLE, WM

G4 = pettk.ImageGrid((64, 64, 48), 4.0)          # 256 x 256 x 192 mm: every head, coarse
VOXEL_ML = 4.0 ** 3 / 1000.0
TRACERS = ("fdg", "amyloid-positive", "amyloid-negative")
N_COHORT = 9


@pytest.fixture(scope="module")
def cohort():
    return [brain_phantom_v2(G4, seed=s, tracer=TRACERS[s % 3], supersample=2) for s in range(N_COHORT)]


def _crop(seed, tracer="fdg", vs=1.0, lesions=0):
    """A 64 x 64 x 32 mm block of the upper brain (z 20-52 mm) at ``vs`` mm."""
    n = int(round(64 / vs))
    grid = pettk.ImageGrid((n, n, n // 2), vs, origin_mm=(-32 + vs / 2, -32 + vs / 2, 20 + vs / 2))
    return brain_phantom_v2(grid, seed=seed, tracer=tracer, supersample=2, lesions=lesions)


@pytest.fixture(scope="module")
def crops():
    return [_crop(s) for s in (0, 3)]


def _volumes(ph):
    c = np.bincount(ph.labels.ravel(), minlength=len(TISSUE_LABELS)) * VOXEL_ML
    par = sum(c[k] for k in PARENCHYMA)
    return c, par, par + c[CSF] + c[VENTRICLE]


def _head_coords(ph, grid):
    """Head-frame coordinates (mm) of every voxel centre, shape ``grid.shape + (3,)``."""
    world = np.stack(np.meshgrid(*[grid.voxel_centres(k) for k in range(3)], indexing="ij"), axis=-1)
    inv = np.linalg.inv(np.asarray(ph.subject["affine"]))
    return world @ inv[:3, :3].T + inv[:3, 3]


# -- what a phantom holds ------------------------------------------------------------------------
def test_phantom_is_a_brain_phantom_with_v2_metadata(cohort):
    ph = cohort[0]
    assert isinstance(ph, AnatomyPhantom) and isinstance(ph, BrainPhantom)
    for arr, dtype in ((ph.activity, np.float64), (ph.mu, np.float64), (ph.mr, np.float64), (ph.labels, np.int16),
                       (ph.lesion_mask, bool), (ph.pet_only_mask, bool), (ph.mr_only_mask, bool)):
        assert arr.shape == G4.shape and arr.dtype == dtype
    assert ph.subject["generator"] == ph.generator == "pettk.sim.brain_phantom_v2"
    assert ph.subject["version"] == ph.version == "v2"
    assert ph.label_names[GM] == "grey matter"
    present = set(np.unique(ph.labels).tolist())
    assert {1, 2, 3, 5, 6, 7, 8, 9, 10, 12, 13, 14, 15} <= present
    assert np.all(ph.activity >= 0) and np.all(ph.mr >= 0)


def test_attenuation_values(cohort):
    for ph in cohort:
        mu, lab = ph.mu, ph.labels
        assert mu[0, 0, 0] == 0.0 and mu.min() == 0.0
        assert np.median(mu[lab == WM]) == pytest.approx(0.0096)
        assert np.median(mu[lab == CSF]) == pytest.approx(0.0096)
        bone = ph.subject["mu"]["cortical bone"]
        assert 0.0155 <= bone <= 0.019
        assert mu.max() <= bone + 1e-12
        assert 0.012 < np.median(mu[lab == BONE]) <= bone   # skull voxels: bone with some diploe and soft tissue
        assert np.median(mu[lab == 4]) < 0.007              # air cavities (sinuses, mastoid cells)


def test_v1_generator_still_available():
    ph = brain_phantom(pettk.ImageGrid((40, 48), 4.0), seed=0)
    assert type(ph) is BrainPhantom and ph.activity.shape == (40, 48)


# -- determinism ---------------------------------------------------------------------------------
def test_same_seed_same_subject_different_seeds_differ(cohort):
    a = brain_phantom_v2(G4, seed=1, tracer="amyloid-positive", supersample=2)
    b = cohort[1]
    for name in ("activity", "mu", "mr", "labels", "lesion_mask", "pet_only_mask", "mr_only_mask"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    assert a.subject == b.subject
    c = brain_phantom_v2(G4, seed=np.random.default_rng(1), tracer="amyloid-positive", supersample=2)
    assert np.array_equal(c.activity, a.activity)
    for other in cohort[2:5]:
        assert not np.array_equal(other.labels, a.labels)
        assert other.subject["scale"] != a.subject["scale"]


def test_lesions_change_nothing_else():
    plain = brain_phantom_v2(G4, seed=4, supersample=2)
    with_lesions = brain_phantom_v2(G4, seed=4, supersample=2, lesions=5)
    assert np.array_equal(plain.labels, with_lesions.labels) and np.array_equal(plain.mu, with_lesions.mu)
    changed = plain.activity != with_lesions.activity
    near = np.zeros(G4.shape, dtype=bool)
    for les in with_lesions.lesions:
        near |= np.linalg.norm(_world(G4) - np.asarray(les.centre_mm), axis=-1) <= les.radius_mm + 3.5
    assert changed.any() and not np.any(changed & ~near)


def _world(grid):
    return np.stack(np.meshgrid(*[grid.voxel_centres(k) for k in range(grid.ndim)], indexing="ij"), axis=-1)


# -- anatomy statistics ----------------------------------------------------------------------------
def test_tissue_volumes_are_plausible(cohort):
    csf_fraction, atrophy = [], []
    for ph in cohort:
        c, par, icv = _volumes(ph)
        s3 = ph.subject["scale"] ** 3
        assert 1100 <= icv / s3 <= 2000, icv / s3               # intracranial volume, nominal size
        assert 900 <= par / s3 <= 1600, par / s3                 # brain parenchyma
        assert 0.4 <= c[GM] / (c[GM] + c[WM]) <= 0.72            # cerebral grey fraction (majority labels)
        assert 70 <= (c[CB_GM] + c[CB_WM]) / s3 <= 200           # cerebellum
        assert 12 <= c[BRAINSTEM] / s3 <= 45
        assert 0.4 <= c[CB_GM] / (c[CB_GM] + c[CB_WM]) <= 0.93   # cerebellar cortex and white matter
        csf_fraction.append((c[CSF] + c[VENTRICLE]) / icv)
        atrophy.append(ph.subject["atrophy"])
    assert 0.08 <= min(csf_fraction) and max(csf_fraction) <= 0.4
    assert np.corrcoef(csf_fraction, atrophy)[0, 1] > 0.6      # older-looking brains hold more CSF


def test_ventricles_vary_with_atrophy(cohort):
    vol = np.array([_volumes(ph)[0][VENTRICLE] / ph.subject["scale"] ** 3 for ph in cohort])
    vs = np.array([ph.subject["ventricle_scale"] for ph in cohort])
    assert 5 <= vol.min() and vol.max() <= 90
    assert vol.max() / vol.min() > 2.0
    assert np.corrcoef(vol, vs)[0, 1] > 0.8
    draws = np.array([Shapes(np.random.default_rng(s)).ventricle_scale for s in range(300)])
    assert draws.min() < 0.8 and draws.max() > 1.8 and np.all((draws >= 0.6) & (draws <= 2.1))


def test_structures_sit_at_the_right_heights(cohort):
    for ph in cohort[:3]:
        h = _head_coords(ph, G4)
        z = {k: h[..., 2][ph.labels == k].mean() for k in (GM, CB_GM, BRAINSTEM, THALAMUS, CAUDATE, VENTRICLE)}
        assert z[CB_GM] < -15 and z[BRAINSTEM] < -10
        assert z[CB_GM] + 25 < z[THALAMUS] < z[CAUDATE]
        cortex = h[..., 2][ph.labels == GM]                     # temporal poles to the vertex
        assert np.percentile(cortex, 5) < z[THALAMUS] - 20 and np.percentile(cortex, 95) > z[CAUDATE] + 35
        top_gm = h[..., 2][ph.labels == GM].max()
        assert top_gm > 60 and top_gm > h[..., 2][ph.labels == VENTRICLE].max() + 30
        # vertex to cerebellum fits the 180 mm axial field of view of a 128 x 128 x 90 grid at 2 mm
        zw = G4.voxel_centres(2)[np.nonzero(np.isin(ph.labels, (GM, CB_GM)).any(axis=(0, 1)))[0]]
        assert zw.min() > -90 and zw.max() < 90


def test_cortical_ribbon_is_2_to_4_mm_thick(crops):
    """Thickness = distance to the nearest non-brain voxel + distance to the nearest white-matter voxel
    (both through the grey-matter voxel, minus one voxel for the centre-to-centre offsets), 1 mm grid."""
    for ph in crops:
        lab = ph.labels
        par, wm, gm = np.isin(lab, PARENCHYMA), lab == WM, lab == GM
        d_out = ndimage.distance_transform_edt(par)
        d_wm = ndimage.distance_transform_edt(~wm)
        inner = np.zeros_like(gm)
        inner[6:-6, 6:-6, 6:-6] = True
        sel = gm & inner & (d_out < 6) & (d_wm < 6)
        thickness = d_out[sel] + d_wm[sel] - 1.0
        assert sel.sum() > 5000
        assert 2.0 <= np.median(thickness) <= 4.0
        assert 1.5 <= np.percentile(thickness, 25) and np.percentile(thickness, 75) <= 4.5
        assert abs(np.median(thickness) - ph.subject["cortical_thickness_mm"]) < 0.6
        # sulci: CSF between the gyri, away from the interhemispheric fissure
        lateral = np.abs(_world(pettk.ImageGrid(lab.shape, 1.0, origin_mm=(-31.5, -31.5, 20.5)))[..., 0]) > 10
        assert (lab[lateral] == CSF).mean() > 0.03
        assert 0.2 <= gm.sum() / (gm.sum() + wm.sum()) <= 0.75


def test_folding_differs_between_subjects(crops):
    a, b = (ph.labels == GM for ph in crops)
    assert (a != b).mean() > 0.2
    draws = [Shapes(np.random.default_rng(s)) for s in range(50)]
    waves = [d.params["fold_wavelength_mm"] for d in draws]
    depths = [d.params["sulcal_depth_mm"] for d in draws]
    assert max(waves) / min(waves) > 1.2 and max(depths) / min(depths) > 1.4


# -- pose ------------------------------------------------------------------------------------------
def test_pose_draws_cover_their_ranges():
    poses = [Pose.draw(np.random.default_rng(s)) for s in range(400)]
    for key in ("scale", "yaw_deg", "pitch_deg", "roll_deg"):
        lo, hi = POSE_RANGES[key]
        v = np.array([getattr(p, key) for p in poses])
        assert v.min() >= lo and v.max() <= hi
        assert v.min() < lo + 0.05 * (hi - lo) and v.max() > hi - 0.05 * (hi - lo)
    t = np.array([p.translation_mm for p in poses])
    assert np.all(np.abs(t) <= 10.0) and np.all(t.max(axis=0) > 9.0) and np.all(t.min(axis=0) < -9.0)
    aspect = np.array([p.aspect for p in poses])
    assert np.allclose(np.prod(aspect, axis=1), 1.0) and np.all(np.abs(aspect - 1) < 0.09)
    p = poses[0]
    h = np.array([[10.0, -20.0, 30.0], [0.0, 0.0, 0.0]])
    assert np.allclose(p.to_head(p.to_world(h)), h)
    assert np.allclose(p.to_world(h), h @ p.affine[:3, :3].T + p.affine[:3, 3])


def _long_axis_deg(points):
    """Angle (degrees, counter-clockwise from +y) of the principal axis of 2D points ``(n, 2)``."""
    xy = points - points.mean(axis=0)
    evecs = np.linalg.eigh(xy.T @ xy)[1]
    ax = evecs[:, 1] * np.sign(evecs[1, 1])
    return np.degrees(np.arctan2(-ax[0], ax[1]))


def test_pose_is_applied_to_the_volume(cohort):
    """Mapped back through the reported affine, every subject's brain sits at the same place and
    orientation of the head frame; in the scanner, the subjects are shifted and turned."""
    world_angles, centroids = [], []
    for ph in cohort:
        brain = np.isin(ph.labels, PARENCHYMA) & (ph.labels != BRAINSTEM)   # without the cord
        h = _head_coords(ph, G4)[brain]
        assert np.linalg.norm(h.mean(axis=0) - (0.0, -20.0, 11.0)) < 5.0
        assert abs(_long_axis_deg(h[:, :2])) < 6.0
        w = _world(G4)[brain]
        world_angles.append(_long_axis_deg(w[:, :2]))
        centroids.append(w.mean(axis=0))
    assert np.ptp(world_angles) > 20.0
    assert np.all(np.ptp(np.array(centroids), axis=0) > 5.0)


# -- activity ----------------------------------------------------------------------------------------
def test_fdg_activity_tables_and_contrast(crops, cohort):
    for ph in crops:
        table = ph.subject["activity"]
        ratio = ph.subject["gm_wm_ratio"]
        assert 2.5 <= ratio <= 5.0
        for name in ("caudate", "putamen", "thalamus"):
            assert 0.75 <= table[name] / table["grey matter"] <= 1.05
        assert 0.7 <= table["cerebellar cortex"] / table["grey matter"] <= 0.95
        a, lab = ph.activity, ph.labels
        measured = np.median(a[lab == GM]) / np.median(a[lab == WM])
        assert measured == pytest.approx(ratio, rel=0.15)
        wm = a[ndimage.binary_erosion(lab == WM, iterations=2)]
        assert 0.02 < wm.std() / wm.mean() < 0.15                  # smooth texture inside tissue
    ratios = {t: [ph.subject["gm_wm_ratio"] for ph in cohort if ph.subject["tracer"] == t] for t in TRACERS}
    assert all(2.5 <= r <= 5.0 for r in ratios["fdg"])
    assert all(0.45 <= r <= 0.7 for r in ratios["amyloid-negative"])
    assert all(0.85 <= r <= 1.45 for r in ratios["amyloid-positive"])
    for ph in cohort:
        f = ph.subject["region_factor"]
        if ph.subject["tracer"] == "amyloid-positive":
            assert f["precuneus"] > f["occipital"] and f["frontal"] > f["medial temporal"]


def test_amyloid_patterns_on_the_image(cohort):
    def cortex_over_wm(ph):
        return np.median(ph.activity[ph.labels == GM]) / np.median(ph.activity[ph.labels == WM])
    neg = [cortex_over_wm(ph) for ph in cohort if ph.subject["tracer"] == "amyloid-negative"]
    pos = [cortex_over_wm(ph) for ph in cohort if ph.subject["tracer"] == "amyloid-positive"]
    assert max(neg) < 0.85 and min(pos) > max(neg) + 0.1
    for ph in cohort:
        a, lab = ph.activity, ph.labels
        assert ph.subject["activity"]["csf"] < 0.1 * ph.subject["activity"]["white matter"]
        assert np.median(a[lab == VENTRICLE]) < 0.6 * np.median(a[lab == WM])     # partial volume at 4 mm
        assert np.median(a[lab == CB_GM]) < np.median(a[lab == GM]) * (1.0 if ph.subject["tracer"] == "fdg" else 1.2)


def test_lesions_sizes_kinds_and_places():
    ph = brain_phantom_v2(G4, seed=2, supersample=2, lesions=12)
    assert len(ph.lesions) == 12
    hot = [les for les in ph.lesions if les.hot]
    assert len(hot) == 6
    for les in ph.lesions:
        assert 2.0 <= les.radius_mm <= 10.0                         # 4-20 mm across
        assert (1.6 <= les.factor <= 3.0) if les.hot else (0.1 <= les.factor <= 0.5)
    centre_labels = [_label_at(les.centre_mm, les.radius_mm) for les in ph.lesions]
    assert all(lab in PARENCHYMA for lab in centre_labels)
    assert GM in centre_labels                                      # in the cortex too
    assert ph.lesion_mask.sum() > 0


def _label_at(centre, radius):
    """Label at a point, read from a 0.5 mm grid around it (seed 2)."""
    g = pettk.ImageGrid((3, 3, 3), 0.5, origin_mm=tuple(c - 0.5 for c in centre))
    return int(brain_phantom_v2(g, seed=2, supersample=1).labels[1, 1, 1])


# -- MR and the PET/MR mismatch ------------------------------------------------------------------------
def test_mr_contrast_bias_and_noise(cohort):
    for ph in cohort:
        mr, lab = ph.mr, ph.labels
        assert np.median(mr[lab == WM]) > np.median(mr[lab == GM]) > np.median(mr[lab == CSF])
        sd = ph.subject["mr"]["noise_sd"]
        background = mr[:6, :6, :]                                  # a corner far from the head
        assert np.all(lab[:6, :6, :] == 0)
        assert background.mean() == pytest.approx(sd * np.sqrt(np.pi / 2), rel=0.1)   # Rician floor
    wm_levels = [np.median(ph.mr[ph.labels == WM]) for ph in cohort]
    assert np.ptp(wm_levels) > 0.05                                 # random contrast between subjects


def test_pet_mr_mismatch():
    plain = brain_phantom_v2(G4, seed=6, supersample=2)
    ph = brain_phantom_v2(G4, seed=6, supersample=2, lesions=8)
    assert np.array_equal(plain.mr_only_mask, ph.mr_only_mask) and ph.mr_only_mask.any()
    world = _world(G4)
    kinds = set()
    for les in ph.lesions:
        inside = np.linalg.norm(world - np.asarray(les.centre_mm), axis=-1) <= les.radius_mm
        if not inside.any():
            continue
        assert not np.allclose(ph.activity[inside], plain.activity[inside])      # the PET sees every lesion
        mr_changed = not np.allclose(ph.mr[inside], plain.mr[inside])
        assert mr_changed == les.mr_visible                                      # the MR only some
        kinds.add(les.mr_visible)
        if not les.mr_visible:
            assert ph.pet_only_mask[inside].any()
    assert kinds == {True, False}
    # MR-only white-matter spots: dark in the MR, nothing in the PET (1 mm block around one)
    spot = ph.subject["mr_only_lesions"][0]
    c = np.asarray(spot["centre_mm"])
    g = pettk.ImageGrid((21, 21, 21), 1.0, origin_mm=tuple(c - 10.0))
    block = brain_phantom_v2(g, seed=6, supersample=2)
    assert block.mr_only_mask[10, 10, 10]
    ring = (np.linalg.norm(_world(g) - c, axis=-1) > spot["radius_mm"] + 2) & (block.labels == WM)
    assert block.mr[10, 10, 10] < 0.8 * np.median(block.mr[ring])
    assert block.activity[10, 10, 10] == pytest.approx(np.median(block.activity[ring]), rel=0.25)


def test_hypometabolic_defects_are_pet_only():
    for seed in range(0, 30, 3):  # FDG subjects until one has a defect
        ph = brain_phantom_v2(G4, seed=seed, supersample=1)
        if ph.subject["defects"]:
            break
    else:
        pytest.fail("no FDG subject with a hypometabolic defect among the seeds tried")
    assert ph.pet_only_mask.any() and not ph.lesions           # no lesions: the mask is the defects
    d = ph.subject["defects"][0]
    assert 12.0 <= d["radius_mm"] <= 30.0 and 0.2 <= d["depth"] <= 0.5


# -- sampling ---------------------------------------------------------------------------------------------
def test_partial_volume_from_supersampling():
    crop = pettk.ImageGrid((24, 24, 24), 2.0, origin_mm=(-23.0, 30.0, 30.0))
    hard = brain_phantom_v2(crop, seed=3, supersample=1)
    soft = brain_phantom_v2(crop, seed=3, supersample=3)
    table = np.array(list(hard.subject["mu"].values()))
    assert np.all(np.isin(hard.mu, table))
    mixed = ~np.isin(soft.mu, table)
    assert mixed.mean() > 0.05
    assert np.mean(np.abs(soft.activity - hard.activity)) < 0.25 * hard.activity.mean()


def test_slab_and_2d_grid_match_the_volume():
    vol = pettk.ImageGrid((40, 40, 6), 3.0, origin_mm=(-58.5, -58.5, 0.0))
    ph = brain_phantom_v2(vol, seed=5, supersample=2)
    slab = pettk.ImageGrid((40, 40, 1), 3.0, origin_mm=(-58.5, -58.5, 9.0))
    one = brain_phantom_v2(slab, seed=5, supersample=2)
    assert np.array_equal(one.labels[..., 0], ph.labels[..., 3])
    assert np.array_equal(one.activity[..., 0], ph.activity[..., 3])
    flat = brain_phantom_v2(pettk.ImageGrid((40, 40), 3.0), seed=5, supersample=2, lesions=1)
    assert flat.activity.shape == (40, 40) and flat.labels.shape == (40, 40)
    assert np.isin(flat.labels, PARENCHYMA).mean() > 0.2
    assert len(flat.lesions[0].centre_mm) == 2


# -- errors ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, error, words", [
    (dict(grid=(64, 64, 48)), TypeError, "grid"),
    (dict(tracer="amyloid"), ValueError, "tracer"),
    (dict(tracer=3), TypeError, "tracer"),
    (dict(seed=-1), ValueError, "seed"),
    (dict(seed="a"), TypeError, "seed"),
    (dict(seed=1.5), TypeError, "seed"),
    (dict(lesions=-1), ValueError, "lesions"),
    (dict(lesions=2.0), TypeError, "lesions"),
    (dict(lesions=65), ValueError, "lesions"),
    (dict(supersample=0), ValueError, "supersample"),
    (dict(supersample=9), ValueError, "supersample"),
    (dict(supersample=True), TypeError, "supersample"),
])
def test_bad_input_raises_clear_errors(kwargs, error, words):
    args = dict(grid=G4, seed=0, tracer="fdg", lesions=0, supersample=2)
    args.update(kwargs)
    with pytest.raises(error, match=words):
        brain_phantom_v2(**args)


def test_lesions_need_brain_in_the_grid():
    far = pettk.ImageGrid((8, 8, 8), 2.0, origin_mm=(500.0, 500.0, 500.0))
    assert brain_phantom_v2(far, seed=0).activity.max() == 0.0
    with pytest.raises(ValueError, match="could not place lesion 1"):
        brain_phantom_v2(far, seed=0, lesions=1)


# -- families ----------------------------------------------------------------------------------------
def test_shifted_family_draws_outside_the_standard_ranges():
    """The out-of-family test family: folding, thickness, contrast and MR statistics disjoint from the
    training family's; the same seed keeps the same pose."""
    from pettk.sim.anatomy import FAMILIES, family_ranges

    std, shifted = family_ranges("standard"), family_ranges("shifted")
    assert set(FAMILIES) == {"standard", "shifted"}
    for key in ("fold_wavelength_mm", "fdg_gm_wm", "texture_sd", "mr_gamma", "mr_noise_sd"):
        lo_a, hi_a = std[key]
        lo_b, hi_b = shifted[key]
        assert hi_b <= lo_a or lo_b >= hi_a, key
    grid = pettk.ImageGrid((48, 48), 4.0)
    a = brain_phantom_v2(grid, seed=4, family="standard", supersample=1)
    b = brain_phantom_v2(grid, seed=4, family="shifted", supersample=1)
    assert a.subject["yaw_deg"] == b.subject["yaw_deg"] and b.subject["family"] == "shifted"
    assert b.subject["fold_wavelength_mm"] < a.subject["fold_wavelength_mm"]
    assert b.subject["gm_wm_ratio"] <= 2.5 < a.subject["gm_wm_ratio"] or a.subject["gm_wm_ratio"] >= 2.5
    with pytest.raises(ValueError, match="family must be one of"):
        brain_phantom_v2(grid, family="other")


def test_mr_noise_differs_between_slabs_of_one_subject():
    """Slices of a data set are one-slice slabs of one subject: their MR noise must not repeat."""
    slabs = [pettk.ImageGrid((32, 32, 1), (6.0, 6.0, 2.0), origin_mm=(-93.0, -93.0, z)) for z in (0.0, 10.0)]
    pa, pb = (brain_phantom_v2(g, seed=5, supersample=1) for g in slabs)
    a, b = pa.mr[..., 0], pb.mr[..., 0]
    outside = (pa.labels[..., 0] == 0) & (pb.labels[..., 0] == 0)     # background: noise only
    assert outside.sum() > 100 and np.corrcoef(a[outside], b[outside])[0, 1] < 0.3
    again = brain_phantom_v2(slabs[0], seed=5, supersample=1).mr[..., 0]
    assert np.array_equal(a, again)

"""Users' own anatomy: pettk.sim.from_tissue_maps, load_tissue_maps and ``pettk simulate --tissue-maps``.

The tests write their own maps: nested ellipsoids (scalp, skull, CSF, grey and white matter) and a
small putamen sphere (the landmark) with soft edges, evaluated in world mm and stored with an LAS
affine (x flipped), unequal voxel sizes and an offset, or an oblique one. Checks are on numbers
measured on the rendered images against the analytic geometry and the drawn tables.
"""

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

import pettk
from pettk.cli import main
from pettk.io.errors import FileFormatError
from pettk.sim import AnatomyPhantom, TissueMaps, from_tissue_maps, load_tissue_maps
from pettk.sim.anatomy import PARENCHYMA, POSE_RANGES, LesionPlacementError, Pose
from pettk.sim.anatomy.tables import BONE, CSF, GM, PUTAMEN, SOFT, WM
from pettk.sim.tissue_maps import check_tissue_maps, list_subjects

CENTRE = np.array([6.0, -12.0, 18.0])                      # world mm of the ellipsoids' centre
SHELLS = {"head": (84, 102, 90), "skull": (74, 92, 80), "csf": (64, 82, 70), "gm": (56, 74, 62), "wm": (48, 66, 54)}
LANDMARK, LANDMARK_R = np.array([26.0, 10.0, 30.0]), 6.0   # a putamen sphere inside white matter
SHAPE, VOXEL = (92, 142, 76), (2.0, 1.5, 2.5)
NAMES = {"scalp": SOFT, "skull": BONE, "csf": CSF, "gm": GM, "wm": WM, "putamen": PUTAMEN}


def las_affine(shape=SHAPE, voxel=VOXEL, shift=(3.3, -2.1, 1.7)):
    """x runs right-to-left (negative first column), voxel [0, 0, 0] placed so the head fits, plus an offset."""
    a = np.diag([-voxel[0], voxel[1], voxel[2], 1.0])
    a[:3, 3] = CENTRE - np.diag(a)[:3] * (np.asarray(shape) - 1) / 2 + shift
    return a


def _fraction(world, axes, centre, edge):
    r = np.sqrt(np.sum(((world - centre) / np.asarray(axes, float)) ** 2, axis=-1))
    return np.clip(0.5 - (r - 1.0) * min(axes) / edge, 0.0, 1.0)


def memberships_at(world, edge=2.0):
    """Analytic memberships at world points ``(..., 3)`` (soft edges ``edge`` mm wide)."""
    f = {k: _fraction(world, ax, CENTRE, edge) for k, ax in SHELLS.items()}
    lm = _fraction(world, (LANDMARK_R,) * 3, LANDMARK, edge)
    return {"scalp": f["head"] - f["skull"], "skull": f["skull"] - f["csf"], "csf": f["csf"] - f["gm"],
            "gm": f["gm"] - f["wm"], "wm": f["wm"] - lm, "putamen": lm}


def voxel_world(shape, affine):
    idx = np.stack(np.meshgrid(*[np.arange(n, dtype=float) for n in shape], indexing="ij"), axis=-1)
    return idx @ affine[:3, :3].T + affine[:3, 3]


def write_maps(folder, shape=SHAPE, affine=None, suffix=".nii", names=tuple(NAMES)):
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    affine = las_affine(shape) if affine is None else affine
    m = memberships_at(voxel_world(shape, affine))
    for k in names:
        nib.save(nib.Nifti1Image(m[k].astype(np.float32), affine), str(folder / f"{k}{suffix}"))
    return folder


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """Two subjects: membership maps (.nii) and the same maps gzipped."""
    r = tmp_path_factory.mktemp("tissue_maps")
    write_maps(r / "sub-01")
    write_maps(r / "sub-02", suffix=".nii.gz")
    (r / ".hidden").mkdir()
    return r


@pytest.fixture(scope="module")
def maps(root):
    return load_tissue_maps(root / "sub-01")


def _centroid(mask, grid):
    idx = np.argwhere(mask).astype(float)
    return np.asarray(grid.origin_mm) + idx.mean(axis=0) * np.asarray(grid.voxel_size_mm)


def _slice_grid(n=(100, 124), vs=1.8):
    return pettk.ImageGrid(n, vs)


def _pure(ph, grid, reach=(2.5, 2.0, 2.5)):
    """Voxels of ``grid`` whose every sample interpolates maps that are pure in one tissue:
    ``{name: mask}`` from the analytic anatomy (``reach``: half voxel + one map voxel, mm)."""
    centres = np.stack(np.meshgrid(*[grid.voxel_centres(k) for k in range(grid.ndim)], indexing="ij"), axis=-1)
    if grid.ndim == 2:
        centres = np.concatenate([centres, np.zeros(centres.shape[:-1] + (1,))], axis=-1)
    inv = np.linalg.inv(np.asarray(ph.subject["affine"]))
    world = centres @ inv[:3, :3].T + inv[:3, 3]
    out = {k: np.ones(grid.shape, bool) for k in NAMES}
    for off in np.stack(np.meshgrid(*[np.linspace(-r, r, 3) for r in reach], indexing="ij"), -1).reshape(-1, 3):
        m = memberships_at(world + off)
        for k in NAMES:
            out[k] &= m[k] > 0.999
    return out


# -- reading ------------------------------------------------------------------------------------------
def test_load_reads_every_tissue_with_its_world_geometry(root, maps):
    assert isinstance(maps, TissueMaps)
    assert list_subjects(root) == [root / "sub-01", root / "sub-02"]            # hidden entries ignored
    assert maps.tissues == ("soft tissue", "cortical bone", "csf", "grey matter", "white matter", "putamen")
    assert maps.shape == SHAPE and maps.memberships.dtype == np.float32
    np.testing.assert_allclose(maps.voxel_size_mm, VOXEL)
    np.testing.assert_allclose(maps.affine, las_affine(), atol=1e-5)
    assert np.linalg.norm(maps.brain_centre_mm - CENTRE) < 0.3                   # gm + wm centroid, world mm
    gz = load_tissue_maps(root / "sub-02")
    np.testing.assert_array_equal(gz.memberships, maps.memberships)
    assert sorted(gz.files) == sorted(f"{k}.nii.gz" for k in NAMES)


# -- world coordinates -----------------------------------------------------------------------------------
@pytest.mark.parametrize("vs", [1.0, 2.0])
def test_landmark_keeps_its_world_coordinates_without_pose(maps, vs):
    n = int(round(28 / vs))
    grid = pettk.ImageGrid((n, n, n), vs, origin_mm=tuple(LANDMARK - (n - 1) / 2 * vs + (0.31, -0.17, 0.23)))
    ph = from_tissue_maps(maps, grid, seed=0, pose=False, centre=False, texture=False)
    found = _centroid(ph.labels == PUTAMEN, grid)
    assert np.max(np.abs(found - LANDMARK)) <= 0.5 * vs
    np.testing.assert_allclose(np.asarray(ph.subject["affine"]), np.eye(4), atol=1e-12)


def test_oblique_affine_is_resampled_through_the_full_affine(tmp_path):
    rz, rx = np.radians(25.0), np.radians(10.0)
    rot = (np.array([[np.cos(rz), -np.sin(rz), 0], [np.sin(rz), np.cos(rz), 0], [0, 0, 1]])
           @ np.array([[1, 0, 0], [0, np.cos(rx), -np.sin(rx)], [0, np.sin(rx), np.cos(rx)]]))
    a = np.eye(4)
    a[:3, :3] = rot @ np.diag([1.8, 1.6, 2.2])
    a[:3, 1] += 0.2 * a[:3, 0]                                                   # and a shear
    shape = (44, 44, 36)
    a[:3, 3] = LANDMARK - a[:3, :3] @ ((np.asarray(shape) - 1) / 2)
    maps = load_tissue_maps(write_maps(tmp_path / "oblique", shape, a, names=("gm", "wm", "putamen")))
    grid = pettk.ImageGrid((20, 20, 20), 1.5, origin_mm=tuple(LANDMARK - 9.5 * 1.5 + 0.4))
    ph = from_tissue_maps(maps, grid, pose=False, centre=False, texture=False)
    assert np.max(np.abs(_centroid(ph.labels == PUTAMEN, grid) - LANDMARK)) <= 0.75
    # every voxel's memberships are those of the analytic anatomy at its world position
    world = np.stack(np.meshgrid(*[grid.voxel_centres(k) for k in range(3)], indexing="ij"), axis=-1)
    truth = memberships_at(world, edge=float(np.linalg.norm(a[:3, :3], axis=0).mean()))
    pure_wm = ndimage.binary_erosion(truth["wm"] > 0.999, iterations=2)
    assert pure_wm.sum() > 1000 and np.all(ph.labels[pure_wm] == WM)


# -- tables ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("tracer", ["amyloid-negative", "amyloid-positive", "fdg"])
def test_pure_tissue_takes_the_drawn_tables(maps, tracer):
    grid = _slice_grid()
    ph = from_tissue_maps(maps, grid, seed=5, tracer=tracer, pose=False, texture=False)
    assert isinstance(ph, AnatomyPhantom) and ph.generator == "pettk.sim.from_tissue_maps"
    pure_masks = _pure(ph, grid)
    for code, key, name in ((SOFT, "scalp", "soft tissue"), (BONE, "skull", "cortical bone"), (CSF, "csf", "csf"),
                            (GM, "gm", "grey matter"), (WM, "wm", "white matter")):
        pure = pure_masks[key]
        assert pure.sum() >= 10 and np.all(ph.labels[pure] == code), (name, pure.sum())
        a = ph.activity[pure]
        expected = ph.subject["activity"][name]
        if tracer == "fdg" and code in (GM, WM):   # hypometabolic defects only lower parenchyma
            assert a.max() == pytest.approx(expected, rel=1e-9) and np.all(a <= expected * (1 + 1e-9))
        else:
            np.testing.assert_allclose(a, expected, rtol=1e-9)
        np.testing.assert_allclose(ph.mu[pure], ph.subject["mu"][name], rtol=1e-9)
    # with the texture: the same tables on average, a smooth 4-10 % variation inside parenchyma
    tex = from_tissue_maps(maps, grid, seed=5, tracer=tracer, pose=False)
    wm = pure_masks["wm"]
    ratio = tex.activity[wm] / ph.activity[wm]
    assert abs(np.mean(ratio) - 1.0) < 0.05 and 0.01 < np.std(ratio) < 0.15
    csf = pure_masks["csf"]   # no texture outside parenchyma
    np.testing.assert_array_equal(tex.activity[csf], ph.activity[csf])


def test_same_seed_same_subject_and_pose_augmentation_within_ranges(maps):
    grid = pettk.ImageGrid((48, 56, 48), 4.0)
    first = from_tissue_maps(maps, grid, seed=11, lesions=2, supersample=1)
    again = from_tissue_maps(maps, grid, seed=11, lesions=2, supersample=1)
    for k in ("activity", "mu", "mr", "labels", "lesion_mask", "pet_only_mask", "mr_only_mask"):
        np.testing.assert_array_equal(getattr(first, k), getattr(again, k))
    assert first.lesions == again.lesions
    other = from_tissue_maps(maps, grid, seed=12, lesions=2, supersample=1)
    assert not np.allclose(other.activity, first.activity)

    still = from_tissue_maps(maps, grid, seed=11, pose=False, supersample=1)
    moved = []
    for seed in range(4):
        ph = from_tissue_maps(maps, grid, seed=seed, supersample=1)
        p = ph.subject["pose"]
        assert POSE_RANGES["scale"][0] <= p["scale"] <= POSE_RANGES["scale"][1]
        for key in ("yaw_deg", "pitch_deg", "roll_deg"):
            assert POSE_RANGES[key][0] <= p[key] <= POSE_RANGES[key][1]
        assert np.all(np.abs(p["translation_mm"]) <= 10.0)
        # the brain centre lands at the pose's translation, its long (anterior) axis turns by the yaw
        brain = np.isin(ph.labels, PARENCHYMA)
        np.testing.assert_allclose(_centroid(brain, grid), p["translation_mm"], atol=1.0)
        pts = np.argwhere(brain) * 4.0
        axis = np.linalg.eigh(np.cov(pts.T))[1][:, -1]
        axis *= np.sign(axis[1])
        expected = np.asarray(ph.subject["affine"])[:3, 1]
        assert np.degrees(np.arccos(abs(axis @ expected) / np.linalg.norm(expected))) < 1.5
        yaw = np.degrees(np.arctan2(-axis[0], axis[1]))
        assert yaw == pytest.approx(p["yaw_deg"], abs=1.5)
        # the volume scales as scale**3 (aspect keeps it)
        assert brain.sum() / np.isin(still.labels, PARENCHYMA).sum() == pytest.approx(p["scale"] ** 3, rel=0.02)
        moved.append(yaw)
    assert np.ptp(moved) > 3.0                                                    # the pose differs per seed
    # an explicit Pose is used as given (the tables still come from the seed)
    pose = Pose(1.0, np.ones(3), np.array([0.0, 0.0, 0.0]), 90.0, 0.0, 0.0)
    turned = from_tissue_maps(maps, pettk.ImageGrid((8, 8, 8), 4.0), seed=11, pose=pose, supersample=1)
    np.testing.assert_allclose(np.asarray(turned.subject["affine"])[:3, :3], pose.linear, atol=1e-12)


# -- label maps ------------------------------------------------------------------------------------------------
def test_label_map_with_json_or_csv_gives_the_same_phantom_as_membership_maps(tmp_path):
    m = memberships_at(voxel_world(SHAPE, las_affine()))
    names = ["scalp", "skull", "csf", "gm", "wm", "putamen"]
    stack = np.stack([m[k] for k in names])
    codes = np.array([5, 30, 1, 2, 41, 12])
    lab = np.where(stack.sum(axis=0) >= 0.5, codes[stack.argmax(axis=0)], 0).astype(np.int16)
    table = {"5": "skin", "30": "Skull", "1": "CSF", "2": "grey-matter", "41": "white_matter", "12": "putamen"}
    for form in ("json", "csv", "maps"):
        d = tmp_path / form
        d.mkdir()
        if form == "maps":
            for c, k in zip(codes, names):
                nib.save(nib.Nifti1Image((lab == c).astype(np.float32), las_affine()), str(d / f"{k}.nii"))
            continue
        nib.save(nib.Nifti1Image(lab, las_affine()), str(d / "labels.nii.gz"))
        if form == "json":
            (d / "labels.json").write_text(json.dumps(table))
        else:
            (d / "labels.csv").write_text("label,tissue\n" + "".join(f"{k},{v}\n" for k, v in table.items()))
    grid = _slice_grid()
    out = {f: from_tissue_maps(tmp_path / f, grid, seed=3, lesions=1) for f in ("json", "csv", "maps")}
    assert out["json"].subject["form"] == "label map" and out["maps"].subject["form"] == "memberships"
    for f in ("json", "csv"):
        for k in ("activity", "mu", "mr", "labels", "lesion_mask"):
            np.testing.assert_array_equal(getattr(out[f], k), getattr(out["maps"], k))
        assert out[f].lesions == out["maps"].lesions


def test_fat_gets_the_bright_mr_fat_signal(tmp_path):
    d = write_maps(tmp_path / "fat", names=("gm", "wm", "csf", "skull"))
    m = memberships_at(voxel_world(SHAPE, las_affine()))
    nib.save(nib.Nifti1Image(m["scalp"].astype(np.float32), las_affine()), str(d / "fat.nii"))
    ph = from_tissue_maps(d, _slice_grid(), seed=2, pose=False)
    pure = _pure(ph, _slice_grid())["scalp"]
    assert np.median(ph.mr[pure]) == pytest.approx(ph.subject["mr"]["fat"], rel=0.25)
    assert np.median(ph.activity[pure]) == pytest.approx(ph.subject["activity"]["soft tissue"], rel=0.01)


# -- lesions -------------------------------------------------------------------------------------------------
def test_lesions_are_centred_in_parenchyma_inside_the_grid(maps):
    for seed in range(3):
        z = -40.0 + 35.0 * seed
        slab = pettk.ImageGrid((64, 64, 1), (4.17, 4.17, 2.03125), origin_mm=(-131.4, -131.4, z))
        ph = from_tissue_maps(maps, slab, seed=seed, lesions=4)
        assert len(ph.lesions) == 4 and ph.lesion_mask.any()
        inv = np.linalg.inv(np.asarray(ph.subject["affine"]))
        for les in ph.lesions:
            assert 2.0 <= les.radius_mm <= 10.0 and les.centre_mm[2] == pytest.approx(z + 0.0)
            world = inv[:3, :3] @ np.asarray(les.centre_mm) + inv[:3, 3]
            mem = memberships_at(world, edge=2.0)
            assert mem["gm"] + mem["wm"] + mem["putamen"] >= 0.45
        hot = [les for les in ph.lesions if les.hot]
        cold = [les for les in ph.lesions if not les.hot]
        assert len(hot) == len(cold) == 2
    far = pettk.ImageGrid((16, 16, 1), 2.0, origin_mm=(300.0, 0.0, 0.0))
    with pytest.raises(LesionPlacementError):
        from_tissue_maps(maps, far, seed=0, lesions=1)
    assert not from_tissue_maps(maps, far, seed=0).activity.any()                 # nothing of the head there


# -- bad input -------------------------------------------------------------------------------------------
def _tiny(folder, maps, affine=None, shape=(6, 6, 6)):
    folder.mkdir(parents=True, exist_ok=True)
    for name, value in maps.items():
        arr = value if isinstance(value, np.ndarray) else np.full(shape, value, dtype=np.float32)
        nib.save(nib.Nifti1Image(arr, np.diag([2.0, 2.0, 2.0, 1.0]) if affine is None else affine),
                 str(folder / name))
    return folder


def _bad_cases():
    gm = np.zeros((6, 6, 6), np.float32)
    gm[1:4, 1:4, 1:4] = 0.5
    wm = np.full((6, 6, 6), 0.3, np.float32)
    out = {}
    nan = gm.copy()
    nan[2, 2, 2] = np.nan
    out["nan"] = ({"gm.nii": nan, "wm.nii": wm}, ValueError, "gm.nii", "NaN")
    big = gm.copy()
    big[0, 0, 0] = 1.5
    out["above one"] = ({"gm.nii": big, "wm.nii": wm}, ValueError, "gm.nii", "[0, 1]")
    out["below zero"] = ({"gm.nii": gm, "wm.nii.gz": wm - 0.4}, ValueError, "wm.nii.gz", "[0, 1]")
    scaled = gm * 2 * 255
    out["0-255"] = ({"gm.nii": scaled, "wm.nii": wm}, ValueError, "gm.nii", "divide")
    out["sum"] = ({"gm.nii": gm + 0.3, "wm.nii": wm + 0.5, "csf.nii": wm}, ValueError, "sum to", "voxel (1, 1, 1)")
    out["missing gm"] = ({"wm.nii": wm, "csf.nii": gm}, ValueError, "no grey matter", "csf.nii")
    out["missing wm"] = ({"gm.nii": gm}, ValueError, "no white matter", "gm.nii")
    out["empty wm"] = ({"gm.nii": gm, "wm.nii": np.zeros_like(wm)}, ValueError, "wm.nii", "empty")
    out["unknown name"] = ({"gm.nii": gm, "wm.nii": wm, "tumour.nii": gm}, ValueError, "tumour.nii", "accepted names")
    out["shapes"] = ({"gm.nii": gm, "wm.nii": np.zeros((6, 6, 7), np.float32) + 0.2}, ValueError, "wm.nii", "shape")
    out["4D"] = ({"gm.nii": np.stack([gm, gm], -1), "wm.nii": wm}, FileFormatError, "gm.nii", "one 2D or 3D map")
    out["twice"] = ({"gm.nii": gm, "gm.nii.gz": gm, "wm.nii": wm}, ValueError, "gm.nii", "twice")
    return out


@pytest.mark.parametrize("case", list(_bad_cases()))
def test_bad_maps_raise_naming_the_file_before_any_work(tmp_path, case):
    files, exc, *words = _bad_cases()[case]
    folder = _tiny(tmp_path / "s", files)
    for call in (lambda: load_tissue_maps(folder), lambda: from_tissue_maps(folder, _slice_grid())):
        with pytest.raises(exc) as info:
            call()
        for w in words:
            assert w in str(info.value), (case, str(info.value))


def test_bad_affines_files_and_tables_raise_naming_the_file(tmp_path):
    gm = np.full((6, 6, 6), 0.5, np.float32)
    other = np.diag([2.0, 2.0, 2.0, 1.0])
    other[0, 3] = 5.0
    cases = [({"gm.nii": gm, "wm.nii": gm * 0.4}, other, "wm.nii", "affines", ValueError)]
    singular = np.diag([2.0, 2.0, 2.0, 1.0])
    singular[:3, 1] = singular[:3, 0]
    cases.append(({"gm.nii": gm, "wm.nii": gm * 0.4}, singular, "gm.nii", "singular", FileFormatError))
    for k, (files, affine, word, what, exc) in enumerate(cases):
        folder = _tiny(tmp_path / f"a{k}", {"gm.nii": files["gm.nii"]}, affine=None if what == "affines" else affine)
        _tiny(folder, {"wm.nii": files["wm.nii"]}, affine=affine)
        with pytest.raises(exc, match=what) as info:
            load_tissue_maps(folder)
        assert word in str(info.value)
    broken = _tiny(tmp_path / "broken", {"wm.nii": gm * 0.4})
    (broken / "gm.nii").write_bytes(b"not a NIfTI file at all" * 20)
    with pytest.raises(FileFormatError, match="gm.nii"):
        load_tissue_maps(broken)

    lab = np.zeros((6, 6, 6), np.int16)
    lab[1:3], lab[3:5] = 2, 3
    lab[5, 5, 5] = 7
    table = {"2": "gm", "3": "wm"}
    label_cases = [
        ({"labels.json": json.dumps(table)}, "labels.nii", "[7]"),                        # label not in the table
        ({"labels.json": json.dumps({**table, "7": "tumour"})}, "labels.json", "tumour"),   # unknown tissue
        ({"labels.json": "{not json"}, "labels.json", "JSON"),
        ({"labels.csv": "label,tissue\n2,gm\nthree,wm\n"}, "labels.csv", "not an integer"),
        ({}, "labels.nii", "label table"),                                                    # no table
        ({"labels.json": json.dumps(table), "labels.csv": "2,gm\n"}, "labels.nii", "exactly one"),
    ]
    for k, (extra, word, what) in enumerate(label_cases):
        folder = _tiny(tmp_path / f"l{k}", {"labels.nii": lab})
        for name, text in extra.items():
            (folder / name).write_text(text)
        with pytest.raises(ValueError) as info:
            load_tissue_maps(folder)
        assert word in str(info.value) and what in str(info.value), str(info.value)
    mixed = _tiny(tmp_path / "mixed", {"labels.nii": lab, "gm.nii": gm})
    (mixed / "labels.json").write_text(json.dumps(table))
    with pytest.raises(ValueError, match="one form"):
        load_tissue_maps(mixed)
    fractional = _tiny(tmp_path / "frac", {"labels.nii": lab + np.float32(0.5)})
    (fractional / "labels.json").write_text(json.dumps(table))
    with pytest.raises(ValueError, match="integers"):
        load_tissue_maps(fractional)
    lonely = _tiny(tmp_path / "lonely", {"gm.nii": gm, "wm.nii": gm * 0.4})
    (lonely / "labels.csv").write_text("2,gm\n")
    with pytest.raises(ValueError, match="without a label map"):
        load_tissue_maps(lonely)


def test_folders_and_arguments_are_checked_first(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        list_subjects(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no subject folders"):
        list_subjects(tmp_path / "empty")
    with pytest.raises(ValueError, match="no NIfTI tissue maps"):
        check_tissue_maps(tmp_path / "empty")
    missing = tmp_path / "missing"   # the arguments are refused before the folder is looked at
    grid = _slice_grid()
    for kwargs, exc in (({"grid": "grid"}, TypeError), ({"tracer": "pib"}, ValueError), ({"seed": -1}, ValueError),
                        ({"lesions": 65}, ValueError), ({"supersample": 0}, ValueError), ({"pose": "yes"}, TypeError),
                        ({"centre": 1}, TypeError)):
        with pytest.raises(exc):
            from_tissue_maps(missing, **{"grid": grid, **kwargs})
    with pytest.raises(FileNotFoundError, match="missing"):
        from_tissue_maps(missing, grid)
    with pytest.raises(TypeError):
        from_tissue_maps(42, grid)


# -- the command line -----------------------------------------------------------------------------------
def test_pettk_simulate_with_tissue_maps_end_to_end(root, tmp_path):
    out = tmp_path / "ds"
    args = ["simulate", str(out), "--tissue-maps", str(root), "--subjects", "2", "--slices", "2", "--size", "32",
            "--geometry", "parallel", "--validation", "0", "--test", "1", "--drf", "20", "--no-progress"]
    assert main(args) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["generator"]["name"] == "pettk.sim.from_tissue_maps"
    assert manifest["config"]["anatomy"] == "tissue-maps"
    assert [s["source"] for s in manifest["subjects"]] == ["sub-01", "sub-02"]
    assert [s["split"] for s in manifest["subjects"]] == ["train", "test"]
    n_brain = 0
    for s in manifest["subjects"]:
        d = out / s["name"]
        for field in ("truth", "mr", "mu", "full", "low_drf20", "reference", "labels", "lesions"):
            arr = np.load(d / f"{field}.npy")
            assert arr.shape[0] == 2 and np.all(np.isfinite(arr)), field
        truth, labels = np.load(d / "truth.npy"), np.load(d / "labels.npy")
        brain = np.isin(labels, PARENCHYMA)
        assert np.all(truth[brain] > 0)
        n_brain += brain.sum()
    assert n_brain > 100


def test_pettk_simulate_refuses_bad_tissue_maps_before_any_work(root, tmp_path, capsys):
    bad = tmp_path / "bad"
    _tiny(bad / "s1", {"gm.nii": np.full((4, 4, 4), 0.5, np.float32), "wm.nii": np.full((4, 4, 4), 0.4, np.float32)})
    _tiny(bad / "s2", {"gm.nii": np.full((4, 4, 4), 0.5, np.float32), "tumor.nii": np.zeros((4, 4, 4), np.float32)})
    out = tmp_path / "never"
    base = ["simulate", str(out), "--slices", "1", "--size", "16", "--geometry", "parallel", "--no-progress"]
    for extra, words in ((["--tissue-maps", str(bad), "--validation", "0", "--test", "0"], ("tumor.nii", "accepted")),
                         (["--tissue-maps", str(root), "--subjects", "3"], ("only 2 subject folders",)),
                         (["--tissue-maps", str(root)], ("--validation 20", "fit")),
                         (["--tissue-maps", str(tmp_path / "nope")], ("no tissue-map folder",)),
                         (["--tissue-maps", str(root), "--anatomy", "v1"], ("exclude",))):
        with pytest.raises(SystemExit) as info:
            main(base + extra)
        message = str(info.value)
        assert message.startswith("pettk simulate: ") and "\n" not in message
        assert all(w in message for w in words), message
        assert not out.exists()


def test_tissue_map_data_set_evaluated_with_tuning(root, tmp_path):
    """Issue 21: `pettk simulate OUT --tissue-maps DIR` then `pettk evaluate --data OUT --tune`, end to end."""
    out = tmp_path / "ds"
    assert main(["simulate", str(out), "--tissue-maps", str(root), "--slices", "2", "--size", "32", "--geometry",
                 "parallel", "--validation", "1", "--test", "1", "--drf", "20", "--lesions", "1",
                 "--slice-range-mm", "20", "--no-progress"]) == 0
    ev = tmp_path / "ev"
    assert main(["evaluate", "--data", str(out), "-o", str(ev), "--methods", "osem", "bsrem-rdp", "--tune",
                 "--tune-osem-iterations", "1", "3", "--tune-filter-mm", "0", "6", "--tune-beta", "0.3", "3",
                 "--tune-gamma", "2", "--tune-extend", "0", "--bsrem-max-epochs", "20", "--no-progress"]) == 0
    tuning = json.loads((ev / "tuning.json").read_text())
    assert {s["subject"] for s in tuning["slices"]["20"]} == {"subject_000"}      # the validation subject
    md = (ev / "metrics.md").read_text()
    assert "OSEM + filter" in md and "BSREM-RDP" in md and "CR hot" in md
    rows = list(csv.DictReader((ev / "slices.csv").open()))
    assert {r["subject"] for r in rows} == {"subject_001"} and all(np.isfinite(float(r["psnr"])) for r in rows)

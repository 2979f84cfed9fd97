"""Image grids, scanners, sinogram layouts, parallel beams, LOR lists and presets."""

import math

import numpy as np
import pytest

import pettk
from pettk.geometry import LORList, ParallelBeam2D, RegularPolygonScanner, SinogramLayout


# -- ImageGrid --------------------------------------------------------------------------------------
def test_grid_default_origin_centres_the_grid():
    grid = pettk.ImageGrid((4, 5, 3), (2.0, 1.0, 3.0))
    assert grid.origin_mm == (-3.0, -2.0, -3.0)
    np.testing.assert_allclose(grid.voxel_centres(0), [-3.0, -1.0, 1.0, 3.0])
    np.testing.assert_allclose(grid.voxel_centres(-1), [-3.0, 0.0, 3.0])
    assert grid.extent_mm == (8.0, 5.0, 9.0)
    assert grid.voxel_volume_mm3 == 6.0
    assert grid.n_voxels == 60


def test_grid_affine_maps_indices_to_voxel_centres():
    grid = pettk.ImageGrid((7, 6, 5), (1.5, 2.0, 2.5), origin_mm=(10.0, -4.0, 3.0))
    idx = np.array([[0, 0, 0], [6, 5, 4], [2.5, 1.0, 3.0]])
    homog = np.concatenate([idx, np.ones((3, 1))], axis=1)
    world = (grid.affine @ homog.T).T[:, :3]
    np.testing.assert_allclose(world, grid.index_to_world(idx))
    np.testing.assert_allclose(world[0], (10.0, -4.0, 3.0))
    np.testing.assert_allclose(world[1], (10.0 + 9.0, -4.0 + 10.0, 3.0 + 10.0))
    np.testing.assert_allclose(grid.world_to_index(world), idx)
    assert pettk.ImageGrid.from_affine(grid.shape, grid.affine) == grid


def test_grid_2d_affine_is_a_single_slice():
    grid = pettk.ImageGrid((8, 8), 2.0)
    aff = grid.affine
    assert aff.shape == (4, 4)
    np.testing.assert_allclose(np.diag(aff), [2.0, 2.0, 1.0, 1.0])
    np.testing.assert_allclose(aff[:2, 3], [-7.0, -7.0])


def test_grid_coordinates_match_voxel_centres():
    grid = pettk.ImageGrid((3, 4), 1.0)
    x, y = grid.coordinates()
    assert x.shape == y.shape == (3, 4)
    np.testing.assert_allclose(x[:, 0], grid.voxel_centres(0))
    np.testing.assert_allclose(y[0], grid.voxel_centres(1))


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(shape=(4,), voxel_size_mm=1.0), ValueError, "shape must have 2 or 3 entries"),
    (dict(shape=(4, 0), voxel_size_mm=1.0), ValueError, r"shape\[1\] must be an integer >= 1, got 0"),
    (dict(shape=(4, 2.5), voxel_size_mm=1.0), TypeError, r"shape\[1\] must be an integer"),
    (dict(shape=(4, 4), voxel_size_mm=0.0), ValueError, "voxel_size_mm must be > 0"),
    (dict(shape=(4, 4), voxel_size_mm=(1.0, 2.0, 3.0)), ValueError, "voxel_size_mm must have 2 entries"),
    (dict(shape=(4, 4), voxel_size_mm=1.0, origin_mm=(0.0,)), ValueError, "origin_mm must have 2 entries"),
    (dict(shape=(4, 4), voxel_size_mm=1.0, origin_mm=(0.0, np.nan)), ValueError, "origin_mm must be finite"),
    (dict(shape=5, voxel_size_mm=1.0), TypeError, "shape must be a tuple"),
])
def test_grid_rejects_bad_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        pettk.ImageGrid(**kwargs)


# -- RegularPolygonScanner ---------------------------------------------------------------------------
def test_polygon_scanner_crystal_positions():
    scanner = RegularPolygonScanner(100.0, 8, 5, 6.0, [-4.0, 0.0, 4.0])
    xy = scanner.crystal_xy_mm
    assert xy.shape == (40, 2)
    assert scanner.n_crystals == 120
    # the middle crystal of side s sits on the side's normal at the radius
    for s in range(8):
        phi = 2 * np.pi * s / 8
        np.testing.assert_allclose(xy[s * 5 + 2], [100 * np.cos(phi), 100 * np.sin(phi)], atol=1e-12)
        # neighbours along a side are crystal_spacing apart and all lie on the side's line
        side = xy[s * 5:(s + 1) * 5]
        np.testing.assert_allclose(np.linalg.norm(np.diff(side, axis=0), axis=1), 6.0)
        np.testing.assert_allclose(side @ [np.cos(phi), np.sin(phi)], 100.0)
    pos = scanner.crystal_positions_mm()
    assert pos.shape == (3, 40, 3)
    np.testing.assert_allclose(pos[:, 0, 2], [-4.0, 0.0, 4.0])


@pytest.mark.parametrize("args, exc, match", [
    ((100.0, 8, 20, 6.0, [0.0]), ValueError, "crystals do not fit on a polygon side"),
    ((100.0, 2, 5, 6.0, [0.0]), ValueError, "n_sides must be an integer >= 3"),
    ((-1.0, 8, 5, 6.0, [0.0]), ValueError, "radius_mm must be a finite number > 0"),
    ((100.0, 8, 5, 6.0, [0.0, 0.0]), ValueError, "ring_positions_mm must be strictly increasing"),
    ((100.0, 8, 5, 6.0, []), ValueError, "at least one ring"),
    ((100.0, 8.0, 5, 6.0, [0.0]), TypeError, "n_sides must be an integer"),
])
def test_polygon_scanner_rejects_impossible_geometry(args, exc, match):
    with pytest.raises(exc, match=match):
        RegularPolygonScanner(*args)


# -- SinogramLayout ----------------------------------------------------------------------------------
def test_layout_covers_every_crystal_pair_once_without_trim(rng):
    scanner = RegularPolygonScanner(50.0, 6, 4, 5.0, [0.0])
    layout = SinogramLayout(scanner)
    n = scanner.n_crystals_per_ring
    assert layout.shape == (1, n // 2, n + 1)
    pairs = layout.crystal_pairs
    # the outermost bins of every view join a crystal to itself (zero-length, project to 0)
    assert np.all(pairs[:, 0, 0] == pairs[:, 0, 1]) and np.all(pairs[:, -1, 0] == pairs[:, -1, 1])
    inner = pairs[:, 1:-1].reshape(-1, 2)
    assert np.all(inner[:, 0] != inner[:, 1])
    unordered = {tuple(sorted(p)) for p in inner.tolist()}
    assert len(unordered) == len(inner) == n * (n - 1) // 2
    y = pettk.Projector(pettk.ImageGrid((20, 20, 1), 4.0), layout).forward(rng.random((20, 20, 1)))
    assert np.all(y[:, :, [0, -1]] == 0) and np.all(y[:, :, n // 2] > 0)
    assert SinogramLayout(scanner, radial_trim=1).n_radial == n - 1


def test_layout_radial_bins_run_through_the_centre(tiny):
    layout = tiny.layout
    start, end = layout.lor_endpoints()
    assert start.shape == end.shape == layout.shape + (3,)
    # signed distance of each transaxial LOR from the scanner axis
    s2, e2 = start[0, :, :, :2], end[0, :, :, :2]
    d = e2 - s2
    signed = (s2[..., 0] * d[..., 1] - s2[..., 1] * d[..., 0]) / np.linalg.norm(d, axis=-1)
    centre = layout.n_radial // 2
    assert np.all(np.abs(signed[:, centre]) < 1.0)
    # monotonic radial ordering within every view
    assert np.all(np.diff(signed, axis=1) < 0) or np.all(np.diff(signed, axis=1) > 0)


def test_layout_plane_order_and_ring_difference(tiny):
    layout = tiny.layout
    n_rings = tiny.scanner.n_rings
    assert layout.n_planes == n_rings ** 2
    rings = layout.plane_rings
    np.testing.assert_array_equal(rings[:n_rings], np.stack([np.arange(n_rings)] * 2, axis=1))
    np.testing.assert_array_equal(rings[n_rings], [0, 1])
    np.testing.assert_array_equal(rings[2 * n_rings - 1], [1, 0])
    assert layout.plane_index(2, 0) == int(np.flatnonzero((rings[:, 0] == 2) & (rings[:, 1] == 0))[0])
    limited = SinogramLayout(tiny.scanner, radial_trim=24, max_ring_difference=1)
    assert limited.n_planes == n_rings + 2 * (n_rings - 1)
    assert np.abs(np.diff(limited.plane_rings, axis=1)).max() == 1
    start, end = limited.lor_endpoints(views=[0])
    z = tiny.scanner.ring_positions_mm
    np.testing.assert_allclose(start[:, 0, 0, 2], z[limited.plane_rings[:, 0]])
    np.testing.assert_allclose(end[:, 0, 0, 2], z[limited.plane_rings[:, 1]])
    with pytest.raises(ValueError, match="no plane joins ring 0 to ring 3"):
        limited.plane_index(0, 3)


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(radial_trim=49), ValueError, r"radial_trim must be in \[0, 48\]"),
    (dict(radial_trim=-1), ValueError, "radial_trim must be an integer >= 0"),
    (dict(max_ring_difference=4), ValueError, r"max_ring_difference must be in \[0, 3\]"),
])
def test_layout_rejects_bad_arguments(tiny, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        SinogramLayout(tiny.scanner, **kwargs)


def test_layout_rejects_odd_crystal_count_and_non_scanner():
    with pytest.raises(ValueError, match="even number of crystals per ring"):
        SinogramLayout(RegularPolygonScanner(50.0, 5, 3, 5.0, [0.0]))
    with pytest.raises(TypeError, match="scanner must be a RegularPolygonScanner"):
        SinogramLayout("scanner")


def test_layout_view_selection(tiny):
    layout = tiny.layout
    tables = layout.lor_tables(views=slice(1, None, 12))
    assert tables.transaxial.shape == (4 * layout.n_radial, 4)
    assert tables.n_lors == layout.n_planes * 4 * layout.n_radial
    full_start, _ = layout.lor_endpoints()
    sub_start, _ = layout.lor_endpoints(views=slice(1, None, 12))
    np.testing.assert_array_equal(sub_start, full_start[:, 1::12])
    with pytest.raises(ValueError, match=r"views must lie in \[0, 48\)"):
        layout.lor_tables(views=[0, 48])


# -- ParallelBeam2D ----------------------------------------------------------------------------------
def test_parallel_beam_lines():
    geo = ParallelBeam2D(n_views=4, n_radial=5, radial_spacing_mm=2.0, half_length_mm=50.0)
    start, end = geo.lor_endpoints()
    assert start.shape == (4, 5, 2)
    d = end - start
    np.testing.assert_allclose(np.linalg.norm(d, axis=-1), 100.0)
    theta = geo.view_angles_rad
    # direction is (-sin, cos), the foot point is s * (cos, sin)
    np.testing.assert_allclose(d / 100.0, np.stack([-np.sin(theta), np.cos(theta)], -1)[:, None, :].repeat(5, 1),
                               atol=1e-12)
    mid = 0.5 * (start + end)
    expected = geo.radial_positions_mm[None, :, None] * np.stack([np.cos(theta), np.sin(theta)], -1)[:, None, :]
    np.testing.assert_allclose(mid, expected, atol=1e-12)
    np.testing.assert_allclose(geo.radial_positions_mm, [-4.0, -2.0, 0.0, 2.0, 4.0])
    assert ParallelBeam2D(3, 10, 1.5).half_length_mm == 15.0


def test_parallel_beam_rejects_bad_arguments():
    with pytest.raises(ValueError, match="n_views must be an integer >= 1"):
        ParallelBeam2D(0, 5, 1.0)
    with pytest.raises(ValueError, match="radial_spacing_mm must be a finite number > 0"):
        ParallelBeam2D(3, 5, float("inf"))


# -- LORList -----------------------------------------------------------------------------------------
def test_lor_list_flattens_and_splits_tables(rng):
    start = rng.normal(size=(2, 5, 3))
    end = start + 1.0
    lors = LORList(start, end)
    assert lors.shape == (10,) and lors.ndim == 3
    tables = lors.lor_tables(views=[1, 3])
    assert not tables.outer
    s, e = tables.endpoints()
    np.testing.assert_allclose(s, start.reshape(-1, 3)[[1, 3]])
    np.testing.assert_allclose(e, end.reshape(-1, 3)[[1, 3]])


@pytest.mark.parametrize("start, end, exc, match", [
    (np.zeros((3, 3)), np.ones((2, 3)), ValueError, "same shape"),
    (np.zeros((3, 4)), np.ones((3, 4)), ValueError, r"shape \(\.\.\., 2\) or \(\.\.\., 3\)"),
    (np.zeros((2, 3)), np.array([[1.0, 0, 0], [0, 0, 0]]), ValueError, "LOR 1 has zero length"),
    (np.zeros((1, 3)), np.array([[np.nan, 0, 0]]), ValueError, "end_mm must be finite"),
    (np.zeros((0, 3)), np.zeros((0, 3)), ValueError, "at least one LOR"),
])
def test_lor_list_rejects_bad_input(start, end, exc, match):
    with pytest.raises(exc, match=match):
        LORList(start, end)


# -- presets -----------------------------------------------------------------------------------------
def test_bench_36ring_preset():
    p = pettk.preset("bench-36ring")
    assert p.layout.shape == (1296, 272, 415)
    assert p.grid.shape == (215, 215, 71) and p.grid.voxel_size_mm == (2.78,) * 3
    z = p.scanner.ring_positions_mm
    assert z.size == 36
    np.testing.assert_allclose(z.mean(), 0.0, atol=1e-12)
    gaps = np.diff(z)
    np.testing.assert_allclose(gaps[[0, 1, 7, 9, 10]], 5.31556)
    np.testing.assert_allclose(gaps[[8, 17, 26]], 5.31556 + 2.8)
    assert p.scanner.n_crystals_per_ring == 544
    # one of 34 view subsets holds about 4.3 million LORs
    n_sub = p.layout.n_planes * len(range(0, 272, 34)) * p.layout.n_radial
    assert math.isclose(n_sub, 4.3e6, rel_tol=0.01)


def test_mmr_like_and_tiny_presets():
    m = pettk.preset("mmr-like")
    assert m.grid_2d.shape == (128, 128) and m.grid_2d.voxel_size_mm == (2.0863, 2.0863)
    assert m.scanner.n_rings == 64
    np.testing.assert_allclose(np.diff(m.scanner.ring_positions_mm), 4.0625)
    assert m.layout.n_views == 224 and m.layout.n_radial == 129
    t = pettk.preset("tiny")
    assert t.layout.shape == (16, 48, 49)
    with pytest.raises(ValueError, match="unknown preset 'nope'; expected one of bench-36ring, mmr-like, tiny"):
        pettk.preset("nope")


def test_sinogram_layout_2d_matches_one_ring_of_the_3d_layout(rng):
    p = pettk.preset("mmr-like")
    layout2d = p.layout_2d
    assert layout2d.shape == (224, 129)
    start2, end2 = layout2d.lor_endpoints()
    start3, end3 = p.layout.lor_endpoints(views=[0, 100])
    np.testing.assert_allclose(start2[[0, 100]], start3[0, :, :, :2])
    np.testing.assert_allclose(end2[[0, 100]], end3[0, :, :, :2])
    grid = p.grid_2d
    x = rng.random(grid.shape)
    y = pettk.Projector(grid, layout2d).forward(x)
    assert y.shape == (224, 129)
    again = from_dict_roundtrip(layout2d)
    assert again.shape == layout2d.shape


def from_dict_roundtrip(geometry):
    from pettk.geometry import from_dict

    return from_dict(geometry.to_dict())

"""Line integrals of uniform objects equal value × analytic chord length (within 1%).

The objects are voxelised with supersampling (partial-volume edges), and only LORs that cross
the object well away from its edges are compared.
"""

import numpy as np
import pytest

import pettk
from pettk.geometry import RegularPolygonScanner, SinogramLayout
from pettk.sim.phantoms import ellipse_phantom_2d

VALUE = 2.5


def cylinder_image(grid, radius, half_height, supersample=4):
    """Uniform cylinder (axis z) with partial-volume voxels, value VALUE."""
    offsets = ((np.arange(supersample) + 0.5) / supersample - 0.5)
    x, y, z = grid.coordinates()
    vs = grid.voxel_size_mm
    acc = np.zeros(grid.shape)
    for ox in offsets:
        for oy in offsets:
            inside_xy = (x + ox * vs[0]) ** 2 + (y + oy * vs[1]) ** 2 <= radius ** 2
            for oz in offsets:
                acc += inside_xy & (np.abs(z + oz * vs[2]) <= half_height)
    return VALUE * acc / supersample ** 3


def cylinder_chords(start, end, radius, half_height):
    """Analytic chord lengths of LORs through a finite cylinder, and where they cross its wall."""
    d = end - start
    a = d[:, 0] ** 2 + d[:, 1] ** 2
    b = 2 * (start[:, 0] * d[:, 0] + start[:, 1] * d[:, 1])
    c = start[:, 0] ** 2 + start[:, 1] ** 2 - radius ** 2
    disc = np.clip(b * b - 4 * a * c, 0, None)
    t_in = (-b - np.sqrt(disc)) / (2 * a)
    t_out = (-b + np.sqrt(disc)) / (2 * a)
    with np.errstate(divide="ignore", invalid="ignore"):
        tz0 = (-half_height - start[:, 2]) / d[:, 2]
        tz1 = (half_height - start[:, 2]) / d[:, 2]
    tz_lo = np.where(d[:, 2] == 0, -np.inf, np.minimum(tz0, tz1))
    tz_hi = np.where(d[:, 2] == 0, np.inf, np.maximum(tz0, tz1))
    lo, hi = np.maximum(t_in, tz_lo), np.minimum(t_out, tz_hi)
    chord = np.clip(hi - lo, 0, None) * np.linalg.norm(d, axis=1)
    distance = np.abs(start[:, 0] * d[:, 1] - start[:, 1] * d[:, 0]) / np.sqrt(a)
    z_wall = np.stack([start[:, 2] + t_in * d[:, 2], start[:, 2] + t_out * d[:, 2]], axis=1)
    return chord, distance, z_wall


@pytest.mark.parametrize("backend", ["cpu", "reference"])
def test_disk_line_integrals_2d(backend):
    grid = pettk.ImageGrid((128, 128), 1.0)
    radius = 50.0
    disk = VALUE * ellipse_phantom_2d(grid, [[1.0, 1.0, 1.0, 0.0, 0.0, 0.0]], radius, supersample=8)
    geo = pettk.ParallelBeam2D(n_views=60, n_radial=151, radial_spacing_mm=0.77)
    y = pettk.Projector(grid, geo, backend=backend).forward(disk)
    s = geo.radial_positions_mm
    interior = np.abs(s) < 0.8 * radius
    chord = 2 * np.sqrt(radius ** 2 - s[interior] ** 2)
    np.testing.assert_allclose(y[:, interior], VALUE * np.broadcast_to(chord, (60, chord.size)), rtol=0.01)
    # outside the disk the line integral vanishes
    assert np.abs(y[:, np.abs(s) > radius + 2.0]).max() < 1e-9


@pytest.fixture(scope="module")
def cylinder():
    grid = pettk.ImageGrid((96, 96, 48), 1.0)
    return grid, cylinder_image(grid, 40.0, 20.0), 40.0, 20.0


def _check_chords(y, start, end, radius, half_height):
    chord, distance, z_wall = cylinder_chords(start, end, radius, half_height)
    good = (distance < 0.8 * radius) & np.all(np.abs(z_wall) < half_height - 4.0, axis=1)
    assert good.sum() > 100
    np.testing.assert_allclose(y[good], VALUE * chord[good], rtol=0.01)
    return good


def test_cylinder_line_integrals_oblique_lor_list(cylinder, rng):
    grid, image, radius, half_height = cylinder
    phi = rng.uniform(0, 2 * np.pi, size=(2, 3000))
    z = rng.uniform(-24.0, 24.0, size=(2, 3000))
    start = np.stack([70 * np.cos(phi[0]), 70 * np.sin(phi[0]), z[0]], axis=-1)
    end = np.stack([70 * np.cos(phi[1]), 70 * np.sin(phi[1]), z[1]], axis=-1)
    y = pettk.Projector(grid, pettk.LORList(start, end)).forward(image)
    good = _check_chords(y, start, end, radius, half_height)
    # plenty of them are clearly oblique
    assert np.sum(good & (np.abs(end[:, 2] - start[:, 2]) > 20.0)) > 50


def test_cylinder_line_integrals_sinogram_layout(cylinder):
    grid, image, radius, half_height = cylinder
    scanner = RegularPolygonScanner(70.0, 16, 6, 4.2, np.arange(-20.0, 20.1, 4.0))
    layout = SinogramLayout(scanner, radial_trim=20, max_ring_difference=6)
    y = pettk.Projector(grid, layout).forward(image)
    start, end = layout.lor_endpoints()
    _check_chords(y.reshape(-1), start.reshape(-1, 3), end.reshape(-1, 3), radius, half_height)


def test_axial_lor_through_cylinder_steps_along_z(cylinder):
    """A LOR along the scanner axis integrates the cylinder's full height."""
    grid, image, _, half_height = cylinder
    start = np.array([[0.3, -0.2, -30.0], [5.0, 3.0, 30.0]])
    end = np.array([[0.3, -0.2, 30.0], [8.0, 1.0, -30.0]])
    y = pettk.Projector(grid, pettk.LORList(start, end)).forward(image)
    lengths = 2 * half_height * np.linalg.norm(end - start, axis=1) / 60.0
    np.testing.assert_allclose(y, VALUE * lengths, rtol=0.01)

"""Helpers shared by the test modules (imported as a plain module; tests/ is on sys.path)."""

import numpy as np
import torch


def random_lors(rng, n, ndim, radius=80.0, axial_half=25.0):
    """Random LORs joining two points on a cylinder (3D) or circle (2D) around the origin."""
    phi = rng.uniform(0, 2 * np.pi, size=(2, n))
    pts = [np.stack([radius * np.cos(p), radius * np.sin(p)], axis=-1) for p in phi]
    if ndim == 3:
        z = rng.uniform(-axial_half, axial_half, size=(2, n))
        pts = [np.concatenate([p, zz[:, None]], axis=-1) for p, zz in zip(pts, z)]
    return pts[0], pts[1]


def assert_adjoint(projector, x, y, rtol):
    """<P x, y> == <x, P^T y> to rtol (relative to the product of norms)."""
    px = projector.forward(x)
    pty = projector.adjoint(y)
    lhs = float((np.asarray(px, dtype=np.float64) * np.asarray(y, dtype=np.float64)).sum())
    rhs = float((np.asarray(x, dtype=np.float64) * np.asarray(pty, dtype=np.float64)).sum())
    assert lhs != 0.0
    assert abs(lhs - rhs) <= rtol * abs(lhs), (lhs, rhs, abs(lhs - rhs) / abs(lhs))


def as_numpy(t):
    return t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)


def ellipsoid_head(grid, seed: int) -> np.ndarray:
    """A head-like cylinder with four random hot/cold ellipsoids on a 3D ``grid`` (the tiny
    scanner's 60 mm radius holds no brain): non-negative activity, float64, ``grid.shape``."""
    from pettk.sim.phantoms import ellipsoid_phantom_3d

    rng = np.random.default_rng(seed)
    rows = [(1.0, 0.8 + 0.1 * rng.random(), 0.7 + 0.1 * rng.random(), 3.0, 0, 0, 0, 30 * rng.random())]
    for _ in range(4):
        r = 0.08 + 0.15 * rng.random()
        c = (0.5 * rng.random(2) - 0.25)
        rows.append((rng.choice([-0.6, 1.5, 2.5]), r, r * (0.7 + 0.6 * rng.random()), 0.3 + 0.5 * rng.random(),
                     c[0], c[1], rng.random() - 0.5, 0.0))
    return np.clip(ellipsoid_phantom_3d(grid, rows, 36.0), 0, None)

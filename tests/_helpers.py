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

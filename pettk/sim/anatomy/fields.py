"""Implicit-function building blocks of the v2 anatomy: signed-distance-like shapes and smooth noise.

Every function here maps points ``(n, 3)`` (mm, float32) to values ``(n,)`` in mm: negative
inside a shape, positive outside, about the distance to its surface near the surface (the
Lipschitz constant stays close to 1, which the renderer relies on when it extrapolates a field
linearly across a voxel).

* :func:`ellipsoid` -- first-order distance to an ellipsoid (optionally rotated), and
  :func:`capsule` -- exact distance to a rounded segment;
* :func:`smin` / :func:`smax` -- smooth union / intersection (polynomial blend of width ``k`` mm);
* :class:`RandomField` -- a smooth, unit-variance random field (a sum of random plane waves) with
  an analytic gradient, the source of every per-subject variation in shape, folding, thickness
  and activity texture; its value at a point depends only on the point and the field's seed;
* :func:`value_and_gradient` -- values and forward-difference gradients of a field function.
"""

from __future__ import annotations

import math

import numpy as np

#: Value given to a field far from its shape (outside, with zero gradient): "certainly outside".
FAR = 1.0e3
#: Floating-point type of every field evaluation (float32: SIMD transcendentals, half the memory).
DTYPE = np.float32
#: Step (mm) of the forward differences in :func:`value_and_gradient` (float32-safe).
FD_STEP = 0.05
#: Rows per block in :class:`RandomField` (keeps the ``(rows, modes)`` temporaries in cache).
_BLOCK = 4096


def smin(a, b, k: float):
    """Smooth minimum (union of two shapes) with a blend of width ``k`` mm; exact min beyond it."""
    h = np.maximum(k - np.abs(a - b), 0.0) / k
    return np.minimum(a, b) - 0.25 * k * h * h


def smax(a, b, k: float):
    """Smooth maximum (intersection, or ``smax(a, -b)``: ``a`` minus ``b``) with a blend of ``k`` mm."""
    h = np.maximum(k - np.abs(a - b), 0.0) / k
    return np.maximum(a, b) + 0.25 * k * h * h


def rotation(yaw_deg: float = 0.0, pitch_deg: float = 0.0, roll_deg: float = 0.0) -> np.ndarray:
    """``Rz(yaw) @ Rx(pitch) @ Ry(roll)`` (3, 3): yaw about z (in-plane), pitch about x, roll about y."""
    c, s = math.cos(math.radians(yaw_deg)), math.sin(math.radians(yaw_deg))
    rz = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    c, s = math.cos(math.radians(pitch_deg)), math.sin(math.radians(pitch_deg))
    rx = np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])
    c, s = math.cos(math.radians(roll_deg)), math.sin(math.radians(roll_deg))
    ry = np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])
    return rz @ rx @ ry


def ellipsoid(p: np.ndarray, centre, axes, rot: np.ndarray | None = None) -> np.ndarray:
    """Approximate signed distance (mm) of points ``p`` ``(3, n)`` to an ellipsoid.

    ``centre`` (3,) and semi-``axes`` (3,) in mm; ``rot`` (3, 3) maps the ellipsoid's own axes to
    the frame of ``p`` (None: axis-aligned). Uses ``k0 (k0 - 1) / k1`` with ``k0 = |q / axes|`` and
    ``k1 = |q / axes**2|``: exact on the surface, within a few percent of the distance near it.
    """
    c = [float(v) for v in centre]
    inv = [1.0 / float(v) for v in axes]
    q0, q1, q2 = p[0] - c[0], p[1] - c[1], p[2] - c[2]
    if rot is not None:
        r = [[float(v) for v in row] for row in rot]
        q0, q1, q2 = (r[0][0] * q0 + r[1][0] * q1 + r[2][0] * q2, r[0][1] * q0 + r[1][1] * q1 + r[2][1] * q2,
                      r[0][2] * q0 + r[1][2] * q1 + r[2][2] * q2)
    q0 *= inv[0]
    q1 *= inv[1]
    q2 *= inv[2]
    k0 = np.sqrt(q0 * q0 + q1 * q1 + q2 * q2)
    q0 *= inv[0]
    q1 *= inv[1]
    q2 *= inv[2]
    k1 = np.sqrt(q0 * q0 + q1 * q1 + q2 * q2)
    np.maximum(k1, 1e-12, out=k1)
    k1 = (k0 - 1.0) / k1
    k1 *= k0
    return k1


def capsule(p: np.ndarray, a, b, radius: float) -> np.ndarray:
    """Signed distance (mm) of points ``p`` ``(3, n)`` to the segment from ``a`` to ``b`` (3,)
    thickened by ``radius`` mm."""
    a = [float(v) for v in a]
    ab = [float(v) - w for v, w in zip(b, a)]
    q0, q1, q2 = p[0] - a[0], p[1] - a[1], p[2] - a[2]
    t = np.clip((q0 * ab[0] + q1 * ab[1] + q2 * ab[2]) / (ab[0] ** 2 + ab[1] ** 2 + ab[2] ** 2), 0.0, 1.0)
    q0 -= t * ab[0]
    q1 -= t * ab[1]
    q2 -= t * ab[2]
    return np.sqrt(q0 * q0 + q1 * q1 + q2 * q2) - radius


def mirror_x(p: np.ndarray) -> np.ndarray:
    """``p`` ``(3, n)`` with ``x -> |x|``: one evaluation draws a structure and its mirror image."""
    q = p.copy()
    np.abs(q[0], out=q[0])
    return q


class RandomField:
    """A smooth random field of unit variance: ``sqrt(2 / m) * sum_j cos(k_j·p + phi_j)``.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of the ``m`` wave vectors and phases (drawn at construction).
    wavelength_mm : float
        Mean wavelength ``2 pi / |k|`` (mm): the field's correlation length is about a third of it.
    n_modes : int
        Number of plane waves ``m``; more waves give a more Gaussian, more isotropic field.
    spread : float
        Relative spread of ``|k|`` (uniform in ``[1 - spread, 1 + spread] * 2 pi / wavelength``).

    Notes
    -----
    Directions are isotropic in 3D. The value at a point depends only on the point and the draws,
    never on a grid, so any slab of a volume reproduces the volume's values.
    """

    def __init__(self, rng: np.random.Generator, wavelength_mm: float, n_modes: int = 24, spread: float = 0.2):
        d = rng.normal(size=(n_modes, 3))
        d /= np.linalg.norm(d, axis=1, keepdims=True)
        k = 2.0 * math.pi / wavelength_mm * rng.uniform(1.0 - spread, 1.0 + spread, n_modes)
        self.k = (d * k[:, None]).astype(DTYPE)              # (m, 3) wave vectors (rad/mm)
        self._kt = np.ascontiguousarray(self.k.T)
        self.phase = rng.uniform(0.0, 2.0 * math.pi, n_modes).astype(DTYPE)
        self.weight = math.sqrt(2.0 / n_modes)

    def __call__(self, p: np.ndarray) -> np.ndarray:
        """Values at points ``p`` ``(n, 3)`` (mm), shape ``(n,)``, float32."""
        p = np.asarray(p, dtype=DTYPE)
        out = np.empty(p.shape[0], dtype=DTYPE)
        for i in range(0, p.shape[0], _BLOCK):
            arg = p[i:i + _BLOCK] @ self._kt
            arg += self.phase
            out[i:i + _BLOCK] = np.cos(arg, out=arg).sum(axis=1)
        out *= self.weight
        return out

    def soa(self, p: np.ndarray) -> np.ndarray:
        """Values at points given as rows ``p`` ``(3, n)`` (mm), shape ``(n,)``, float32."""
        out = np.empty(p.shape[1], dtype=DTYPE)
        for i in range(0, p.shape[1], _BLOCK):
            arg = self.k @ p[:, i:i + _BLOCK]
            arg += self.phase[:, None]
            out[i:i + _BLOCK] = np.cos(arg, out=arg).sum(axis=0)
        out *= self.weight
        return out

    def value_and_gradient(self, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Values ``(n,)`` and gradients ``(n, 3)`` (1/mm) at points ``p`` ``(n, 3)``, float32."""
        p = np.asarray(p, dtype=DTYPE)
        value = np.empty(p.shape[0], dtype=DTYPE)
        grad = np.empty((p.shape[0], 3), dtype=DTYPE)
        for i in range(0, p.shape[0], _BLOCK):
            arg = p[i:i + _BLOCK] @ self._kt
            arg += self.phase
            grad[i:i + _BLOCK] = np.sin(arg) @ self.k
            value[i:i + _BLOCK] = np.cos(arg, out=arg).sum(axis=1)
        value *= self.weight
        grad *= -self.weight
        return value, grad


def value_and_gradient(fn, p: np.ndarray, eps: float = FD_STEP) -> tuple[dict, dict]:
    """Values and forward-difference gradients of a field function at points ``p`` ``(n, 3)``.

    ``fn`` maps ``(4 n, 3)`` points to a dict ``name -> (4 n,)`` array; returns two dicts with
    ``name -> (n,)`` values and ``name -> (n, 3)`` gradients (per mm). A field that is :data:`FAR`
    at all four points of a voxel gets a zero gradient.
    """
    p = np.asarray(p, dtype=DTYPE)
    n = p.shape[0]
    step = np.eye(3, dtype=DTYPE) * eps
    pts = np.concatenate([p, p + step[0], p + step[1], p + step[2]])
    values, grads = {}, {}
    for name, f in fn(pts).items():
        f = f.reshape(4, n)
        values[name] = f[0]
        grads[name] = ((f[1:] - f[0]) * (1.0 / eps)).T
    return values, grads


def hash01(n: np.ndarray, salt: float) -> np.ndarray:
    """A deterministic pseudo-random number in [0, 1) per integer-valued ``n`` (any shape)."""
    x = np.sin(n * 12.9898 + salt * 78.233) * 43758.5453
    return x - np.floor(x)


def sigmoid(x):
    """Logistic function ``1 / (1 + exp(-x))``, elementwise."""
    return 0.5 * (1.0 + np.tanh(0.5 * x))

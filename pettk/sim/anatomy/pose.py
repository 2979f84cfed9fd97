"""Pose of a v2 subject: size, aspect, position and orientation as one affine map.

The anatomy is built in the *head frame* (mm, nominal adult size): x left-right, y posterior to
anterior, z inferior to superior, origin at the anterior commissure (AC). The scanner (world)
frame is pettk's image frame (mm; z the scanner axis). A :class:`Pose` maps one to the other::

    world = t + R @ diag(scale * aspect) @ (head - HEAD_CENTRE)

with ``R = Rz(yaw) @ Rx(pitch) @ Ry(roll)``. ``HEAD_CENTRE`` is the middle of the span from the
vertex to the bottom of the cerebellum, so an unshifted head is centred on the scanner origin
along z and slices from the vertex to the cerebellum fit a 180 mm axial field of view.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .fields import rotation

#: Head-frame point (mm) placed at the world position ``translation_mm`` (the head's centre).
HEAD_CENTRE = np.array([0.0, -16.0, 8.0])

#: Ranges of the per-subject pose draws (uniform): relative size, per-axis aspect, translation
#: (mm per axis), in-plane rotation about z, tilt about x (pitch) and about y (roll), in degrees.
POSE_RANGES = {
    "scale": (0.88, 1.12),
    "aspect": (0.95, 1.05),
    "translation_mm": (-10.0, 10.0),
    "yaw_deg": (-15.0, 15.0),
    "pitch_deg": (-8.0, 8.0),
    "roll_deg": (-8.0, 8.0),
}


@dataclass(frozen=True)
class Pose:
    """Head-to-world map of one subject.

    Attributes
    ----------
    scale : float
        Overall size relative to the nominal head (0.88-1.12 when drawn).
    aspect : ndarray, shape (3,)
        Per-axis stretch (shape variation): drawn in 0.95-1.05 per axis, then divided by its
        geometric mean so that it leaves the size to ``scale`` (each entry stays within +-9 %).
    translation_mm : ndarray, shape (3,)
        World position (mm) of :data:`HEAD_CENTRE`.
    yaw_deg, pitch_deg, roll_deg : float
        Rotation about the scanner z axis (in-plane), about x (nodding tilt) and about y (sideways
        tilt), degrees.
    """

    scale: float
    aspect: np.ndarray
    translation_mm: np.ndarray
    yaw_deg: float
    pitch_deg: float
    roll_deg: float

    @classmethod
    def draw(cls, rng: np.random.Generator) -> Pose:
        """A pose drawn uniformly from :data:`POSE_RANGES`."""
        r = POSE_RANGES
        scale = rng.uniform(*r["scale"])
        aspect = rng.uniform(*r["aspect"], 3)
        aspect = aspect / np.prod(aspect) ** (1.0 / 3.0)
        translation = rng.uniform(*r["translation_mm"], 3)
        yaw, pitch, roll = (rng.uniform(*r[k]) for k in ("yaw_deg", "pitch_deg", "roll_deg"))
        return cls(float(scale), aspect, translation, float(yaw), float(pitch), float(roll))

    @property
    def rotation(self) -> np.ndarray:
        """``R`` (3, 3): head axes to world axes."""
        return rotation(self.yaw_deg, self.pitch_deg, self.roll_deg)

    @property
    def linear(self) -> np.ndarray:
        """Linear part (3, 3) of the head-to-world map: ``R @ diag(scale * aspect)``."""
        return self.rotation * (self.scale * self.aspect)[None, :]

    @property
    def inverse_linear(self) -> np.ndarray:
        """Linear part (3, 3) of the world-to-head map (head mm per world mm)."""
        return (self.rotation / (self.scale * self.aspect)[None, :]).T

    @property
    def affine(self) -> np.ndarray:
        """4 x 4 homogeneous head-frame-to-world matrix (mm to mm)."""
        a = np.eye(4)
        a[:3, :3] = self.linear
        a[:3, 3] = self.translation_mm - self.linear @ HEAD_CENTRE
        return a

    @property
    def tilt_deg(self) -> float:
        """Angle (degrees) between the head's z axis and the scanner's z axis."""
        return math.degrees(math.acos(float(np.clip(self.rotation[2, 2], -1.0, 1.0))))

    def to_head(self, world: np.ndarray) -> np.ndarray:
        """Head-frame coordinates (mm) of world points ``(n, 3)``."""
        return HEAD_CENTRE + (world - self.translation_mm) @ self.inverse_linear.T

    def to_world(self, head: np.ndarray) -> np.ndarray:
        """World coordinates (mm) of head-frame points ``(n, 3)``."""
        return self.translation_mm + (head - HEAD_CENTRE) @ self.linear.T

    def as_dict(self) -> dict:
        """Plain-Python description (for a phantom's ``subject`` metadata)."""
        return {"scale": self.scale, "aspect": tuple(float(v) for v in self.aspect),
                "translation_mm": tuple(float(v) for v in self.translation_mm), "yaw_deg": self.yaw_deg,
                "pitch_deg": self.pitch_deg, "roll_deg": self.roll_deg, "tilt_deg": self.tilt_deg,
                "affine": tuple(tuple(float(v) for v in row) for row in self.affine)}

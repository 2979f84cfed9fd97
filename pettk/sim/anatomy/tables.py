"""Tissue labels, attenuation and tracer activity of v2 subjects, drawn per subject.

* :data:`TISSUE_LABELS` -- the label codes of :func:`~pettk.sim.brain_phantom_v2`;
* :func:`draw_mu` -- 511 keV attenuation per label (1/mm): water and soft tissue 0.0096, cortical
  bone 0.0160-0.0185, diploe 0.0115-0.0135, air 0;
* :class:`Tracer` -- activity per label *and* per cortical region for one subject:
  ``"fdg"`` (grey/white 2.5-5, caudate and putamen 0.85-1.05 of cortex, thalamus 0.8-1.0,
  pallidum 0.5-0.75, cerebellar cortex 0.7-0.95, lobes +-10 %, visual cortex up to +20 %, medial
  temporal lobe 0.65-0.85, 0-2 focal hypometabolic defects), ``"amyloid-negative"`` (cortex
  0.45-0.7 of white matter: white-matter pattern) and ``"amyloid-positive"`` (cortex 0.9-1.3 of
  white matter, raised further in the precuneus/posterior cingulate, frontal and parietal
  cortex, lower in the occipital (x0.7-0.9) and medial temporal (x0.55-0.75) cortex, striatum
  raised, cerebellar cortex low as in negatives); a smooth multiplicative texture (4-10 %)
  inside parenchyma.

Activities are relative concentrations with white matter near 1.
"""

from __future__ import annotations

from types import MappingProxyType

import numpy as np

from .family import STANDARD
from .fields import RandomField, sigmoid

#: Label codes of v2 subjects.
TISSUE_LABELS = MappingProxyType({
    0: "background", 1: "soft tissue", 2: "cortical bone", 3: "diploe", 4: "air cavity", 5: "csf",
    6: "ventricles", 7: "grey matter", 8: "white matter", 9: "caudate", 10: "putamen", 11: "pallidum",
    12: "thalamus", 13: "cerebellar cortex", 14: "cerebellar white matter", 15: "brainstem", 16: "eye",
})
N_LABELS = len(TISSUE_LABELS)
(BACKGROUND, SOFT, BONE, DIPLOE, AIR, CSF, VENTRICLE, GM, WM, CAUDATE, PUTAMEN, PALLIDUM, THALAMUS,
 CB_GM, CB_WM, BRAINSTEM, EYE) = range(N_LABELS)
#: Labels of brain parenchyma (where lesions, texture and defects act).
PARENCHYMA = (GM, WM, CAUDATE, PUTAMEN, PALLIDUM, THALAMUS, CB_GM, CB_WM, BRAINSTEM)

#: Tracers of :func:`~pettk.sim.brain_phantom_v2`.
TRACERS = ("fdg", "amyloid-positive", "amyloid-negative")

#: Cortical regions whose activity is drawn separately.
REGIONS = ("frontal", "parietal", "temporal", "occipital", "precuneus", "medial temporal")


def draw_mu(rng: np.random.Generator) -> np.ndarray:
    """Attenuation coefficients at 511 keV per label (1/mm), shape ``(N_LABELS,)``."""
    mu = np.full(N_LABELS, 0.0096)
    mu[BACKGROUND] = mu[AIR] = 0.0
    mu[BONE] = rng.uniform(0.0160, 0.0185)
    mu[DIPLOE] = rng.uniform(0.0115, 0.0135)
    return mu


def region_weights(p: np.ndarray) -> np.ndarray:
    """Soft membership ``(n, len(REGIONS))`` of head-frame points ``p`` in the cortical regions.

    Lobes follow landmarks of the head frame: the occipital lobe behind y = -62 mm, the temporal
    lobe below the Sylvian line and lateral, frontal in front of an oblique central sulcus, the
    precuneus/posterior cingulate on the medial surface, the medial temporal lobe (hippocampus,
    amygdala) medial and low. Rows sum to 1.
    """
    x, y, z = np.abs(p[:, 0]), p[:, 1], p[:, 2]
    occ = sigmoid((-62.0 - y) / 5.0)
    temporal = sigmoid((-2.0 - 0.2 * y - z) / 4.0) * sigmoid((x - 24.0) / 4.0) * (1.0 - occ)
    mtl = sigmoid((-6.0 - z) / 3.0) * sigmoid((34.0 - x) / 3.0) * sigmoid((y + 44.0) / 4.0) * (1.0 - occ)
    pcc = (sigmoid((14.0 - x) / 3.0) * sigmoid((y + 76.0) / 4.0) * sigmoid((-26.0 - y) / 4.0)
           * sigmoid((z - 8.0) / 4.0))
    rest = np.clip(1.0 - occ - temporal - mtl - pcc, 0.0, None)
    front = rest * sigmoid((y - (-8.0 - 0.35 * z)) / 5.0)
    w = np.stack([front, rest - front, temporal, occ, pcc, mtl], axis=1)
    return w / np.maximum(w.sum(axis=1, keepdims=True), 1e-12)


class Tracer:
    """One subject's activity model: label table, regional factors, defects and texture.

    Parameters
    ----------
    name : str
        One of :data:`TRACERS`.
    rng : numpy.random.Generator
        Source of the draws.

    Attributes
    ----------
    table : ndarray, shape ``(N_LABELS,)``
        Activity per label (relative; white matter about 1).
    region_factor : ndarray, shape ``(len(REGIONS),)``
        Multipliers of the grey-matter activity per cortical region (see :data:`REGIONS`).
    defects : list of (centre (3,), radius mm, depth)
        Focal hypometabolism (FDG only; head-frame mm): activity times ``1 - depth * exp(-r^2 /
        (2 (radius/2)^2))`` in grey and white matter. Centres are placed later by the renderer.
    texture_sd : float
        Standard deviation of the multiplicative texture inside parenchyma (0.04-0.10).
    """

    def __init__(self, name: str, rng: np.random.Generator, ranges=STANDARD):
        u = rng.uniform
        t = np.zeros(N_LABELS)
        wm = u(0.9, 1.1)
        t[WM] = wm
        t[SOFT] = u(0.2, 0.45) * wm
        t[BONE] = u(0.05, 0.12) * wm
        t[DIPLOE] = u(0.1, 0.25) * wm
        t[CSF] = t[VENTRICLE] = u(0.02, 0.08) * wm
        t[EYE] = u(0.1, 0.3) * wm
        t[CB_WM] = u(0.85, 1.15) * wm
        factor = np.ones(len(REGIONS))
        self.n_defects = 0
        if name == "fdg":
            gm = u(*ranges["fdg_gm_wm"]) * wm
            t[GM] = gm
            t[CAUDATE], t[PUTAMEN] = u(0.85, 1.05, 2) * gm
            t[PALLIDUM] = u(0.5, 0.75) * gm
            t[THALAMUS] = u(0.8, 1.0) * gm
            t[CB_GM] = u(0.7, 0.95) * gm
            t[BRAINSTEM] = u(1.2, 1.8) * wm
            factor[:4] = u(0.9, 1.1, 4)
            factor[3] = u(0.95, 1.2)                       # visual cortex often the hottest
            factor[4] = u(0.95, 1.15)
            factor[5] = u(0.65, 0.85)                      # medial temporal lobe is lower
            self.n_defects = int(rng.integers(0, 3))
        elif name == "amyloid-negative":
            t[GM] = u(0.45, 0.7) * wm
            t[CAUDATE] = t[PUTAMEN] = u(0.55, 0.8) * wm
            t[PALLIDUM] = u(0.7, 0.9) * wm
            t[THALAMUS] = u(0.7, 0.9) * wm
            t[CB_GM] = u(0.4, 0.6) * wm
            t[BRAINSTEM] = u(0.9, 1.1) * wm
            factor[:] = u(0.92, 1.08, len(REGIONS))
        else:  # amyloid-positive
            base = u(*ranges["amyloid_positive_gm_wm"]) * wm
            t[GM] = base
            t[CAUDATE] = t[PUTAMEN] = u(0.85, 1.2) * wm
            t[PALLIDUM] = u(0.75, 0.95) * wm
            t[THALAMUS] = u(0.7, 0.9) * wm
            t[CB_GM] = u(0.4, 0.6) * wm
            t[BRAINSTEM] = u(0.9, 1.1) * wm
            factor[0] = u(0.95, 1.12)                      # frontal
            factor[1] = u(0.95, 1.12)                      # parietal
            factor[2] = u(0.9, 1.1)                        # lateral temporal
            factor[3] = u(0.7, 0.9)                        # occipital: late and less
            factor[4] = u(1.0, 1.15)                       # precuneus / posterior cingulate: first and most
            factor[5] = u(0.55, 0.75)                      # medial temporal: low
        self.name = name
        self.table = t
        self.region_factor = factor
        self.texture_sd = u(*ranges["texture_sd"])
        self.texture_fine = RandomField(rng, 12.0, 48)
        self.texture_coarse = RandomField(rng, 35.0, 24)
        self.defect_shape = [(u(12.0, 30.0), u(0.2, 0.5)) for _ in range(self.n_defects)]
        self.defects: list = []

    def cortex_factor(self, p: np.ndarray) -> np.ndarray:
        """Regional multiplier of grey-matter activity at head-frame points ``p`` ``(n, 3)``."""
        return region_weights(p) @ self.region_factor

    def texture(self, p: np.ndarray) -> np.ndarray:
        """Smooth multiplicative texture (mean 1, clipped to [0.7, 1.3]) at points ``p`` ``(n, 3)``."""
        f = 0.8 * self.texture_fine(p) + 0.6 * self.texture_coarse(p)
        return np.clip(1.0 + self.texture_sd * f, 0.7, 1.3)

    def defect_factor(self, p: np.ndarray) -> np.ndarray:
        """Product of the hypometabolic defects' multipliers at points ``p`` ``(n, 3)``."""
        out = np.ones(p.shape[0])
        for centre, radius, depth in self.defects:
            r2 = np.sum((p - centre) ** 2, axis=1)
            out *= 1.0 - depth * np.exp(-r2 / (2.0 * (0.5 * radius) ** 2))
        return out

    def as_dict(self) -> dict:
        """Plain-Python description (for a phantom's ``subject`` metadata)."""
        return {"tracer": self.name,
                "activity": {TISSUE_LABELS[k]: float(v) for k, v in enumerate(self.table)},
                "region_factor": {r: float(f) for r, f in zip(REGIONS, self.region_factor)},
                "gm_wm_ratio": float(self.table[GM] / self.table[WM]),
                "texture_sd": self.texture_sd,
                "defects": [{"centre_head_mm": tuple(float(c) for c in centre), "radius_mm": float(radius),
                             "depth": float(depth)} for centre, radius, depth in self.defects]}

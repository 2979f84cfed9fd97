"""T1-like MR synthesis for v2 subjects, with structures that exist only in the MR.

:class:`MRModel` draws, per subject:

* tissue signals (white matter brightest in the brain, grey matter darker, CSF dark, fatty
  marrow and scalp fat bright, cortical bone and air black) passed through a random monotone
  contrast curve ``(1 - b) m^gamma + b * sigmoid``;
* MR-only structures: the dural venous sinuses (flow voids, or bright as after contrast), a
  subcutaneous fat layer, and 1-3 small T1-dark white-matter spots that have no PET counterpart;
* a smooth multiplicative bias field (+-5-20 %), a faint tissue texture and Rician noise
  (sigma 1-4 % of white matter).

PET lesions are visible in the MR only when drawn ``mr_visible``; hypometabolic defects and
regional activity never are. That is the deliberate PET/MR mismatch: a prior conditioned on this
MR cannot recover the PET by copying it.
"""

from __future__ import annotations

import numpy as np

from .family import STANDARD
from .fields import RandomField, sigmoid
from .tables import (
    AIR,
    BACKGROUND,
    BONE,
    BRAINSTEM,
    CAUDATE,
    CB_GM,
    CB_WM,
    CSF,
    DIPLOE,
    EYE,
    GM,
    N_LABELS,
    PALLIDUM,
    PUTAMEN,
    SOFT,
    THALAMUS,
    VENTRICLE,
    WM,
)


class MRModel:
    """One subject's MR appearance.

    Attributes
    ----------
    table : ndarray, shape ``(N_LABELS,)``
        Signal per tissue label after the contrast curve (white matter about 0.7-0.95).
    fat, veins : float
        Signal of the subcutaneous fat layer and of the venous sinuses (MR-only structures).
    mr_lesion_factor : float
        Multiplier of the white-matter signal inside the MR-only spots.
    noise_sd : float
        Rician noise standard deviation (signal units).
    """

    def __init__(self, rng: np.random.Generator, ranges=STANDARD):
        u = rng.uniform
        t = np.zeros(N_LABELS)
        t[WM] = u(0.78, 0.92)
        t[GM] = u(0.45, 0.6)
        t[CSF] = t[VENTRICLE] = u(0.04, 0.14)
        t[CAUDATE] = t[GM] + u(0.02, 0.08)
        t[PUTAMEN] = t[GM] + u(0.03, 0.1)
        t[PALLIDUM] = 0.5 * (t[GM] + t[WM]) + u(0.0, 0.05)
        t[THALAMUS] = t[GM] + u(0.4, 0.7) * (t[WM] - t[GM])
        t[CB_GM] = t[GM] * u(0.95, 1.05)
        t[CB_WM] = t[WM] * u(0.9, 1.0)
        t[BRAINSTEM] = t[WM] * u(0.85, 0.95)
        t[SOFT] = u(0.35, 0.55)
        t[BONE] = u(0.02, 0.06)
        t[DIPLOE] = u(0.5, 0.8)
        t[EYE] = u(0.08, 0.18)
        t[AIR] = t[BACKGROUND] = 0.0
        self.gamma = u(*ranges["mr_gamma"])
        self.blend = u(0.0, 0.5)
        self.mid = u(0.4, 0.7)
        self.width = u(0.08, 0.2)
        self.gain = u(0.85, 1.05)
        self.table = self.curve(t)
        self.fat = float(self.curve(np.array([u(0.85, 1.0)]))[0])
        self.veins = float(self.curve(np.array([u(0.75, 0.95) if rng.random() < 0.4 else u(0.02, 0.1)]))[0])
        self.mr_lesion_factor = u(0.35, 0.6)
        self.bias_amp = u(*ranges["mr_bias_amplitude"])
        self.bias = RandomField(rng, 250.0, 8, spread=0.3)
        self.texture = RandomField(rng, 15.0, 32)
        self.noise_sd = u(*ranges["mr_noise_sd"])

    def curve(self, m: np.ndarray) -> np.ndarray:
        """The subject's monotone contrast curve applied to tissue signals in [0, 1]."""
        s0, s1 = sigmoid(-self.mid / self.width), sigmoid((1.0 - self.mid) / self.width)
        sig = (sigmoid((m - self.mid) / self.width) - s0) / (s1 - s0)
        out = (1.0 - self.blend) * np.power(np.clip(m, 0.0, None), self.gamma) + self.blend * sig
        return self.gain * np.where(m > 0.0, out, 0.0)

    def modulation(self, p: np.ndarray, textured=None) -> np.ndarray:
        """Bias field at head-frame points ``p`` ``(n, 3)`` (multiplicative, about 1), times a faint
        tissue texture at the rows ``textured`` (indices; all rows when None)."""
        out = np.exp(self.bias_amp * self.bias(p).astype(np.float64))
        rows = slice(None) if textured is None else textured
        out[rows] *= 1.0 + 0.03 * self.texture(p[rows])
        return out

    def add_noise(self, image: np.ndarray, seed: int, grid) -> np.ndarray:
        """Rician magnitude of ``image`` plus complex Gaussian noise (same shape, >= 0).

        The noise stream is seeded by ``seed`` *and* the grid's origin, so one-slice slabs of the
        same subject at different positions get different noise (a volume stays reproducible).
        """
        origin = np.frombuffer(np.asarray(grid.origin_mm, dtype=np.float64).tobytes(), dtype=np.uint32)
        rng = np.random.default_rng([int(seed), *(int(v) for v in origin)])
        re = image + self.noise_sd * rng.standard_normal(image.shape)
        im = self.noise_sd * rng.standard_normal(image.shape)
        return np.sqrt(re * re + im * im)

    def as_dict(self) -> dict:
        """Plain-Python description (for a phantom's ``subject`` metadata)."""
        return {"gamma": self.gamma, "sigmoid_blend": self.blend, "gain": self.gain, "bias_amplitude": self.bias_amp,
                "noise_sd": self.noise_sd, "veins": self.veins, "fat": self.fat,
                "mr_lesion_factor": self.mr_lesion_factor}

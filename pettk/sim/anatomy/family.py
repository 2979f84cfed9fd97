"""Anatomy families of the v2 generator: the ranges that the per-subject draws come from.

``"standard"`` is the family the shipped models are trained on. ``"shifted"`` is an
*out-of-family* test family: the same head model, but folding, cortical thickness, sulcal depth,
tracer contrast, activity texture and MR contrast are drawn from ranges that do not overlap (or
barely overlap) the standard ones, so that a model evaluated on it shows how far it generalises
beyond the statistics it was trained on (issue "Training data that look like brains", item 6).

Every family draws the same random numbers in the same order (only the bounds differ), so a seed
gives the same pose, lesions and placements in both families.
"""

from __future__ import annotations

from types import MappingProxyType

#: Ranges (uniform draws) of the standard family. Lengths in mm (head frame unless named).
STANDARD = MappingProxyType({
    "fold_wavelength_mm": (19.0, 26.0),     # spacing of the gyri
    "sulcal_depth_mm": (10.0, 16.0),        # mean sulcal depth (world mm)
    "cortical_thickness_mm": (2.5, 3.2),    # mean grey-matter ribbon thickness (world mm)
    "fdg_gm_wm": (2.5, 5.0),                # FDG grey/white activity ratio
    "amyloid_positive_gm_wm": (0.9, 1.3),   # amyloid-positive cortex/white-matter ratio
    "texture_sd": (0.04, 0.10),             # multiplicative activity texture inside tissue
    "mr_gamma": (0.75, 1.35),               # exponent of the MR contrast curve
    "mr_bias_amplitude": (0.05, 0.2),       # MR bias field (log amplitude)
    "mr_noise_sd": (0.01, 0.04),            # Rician noise (signal units)
})

#: The out-of-family test family: tighter, deeper folds of a thicker cortex, lower FDG and higher
#: amyloid contrast, a rougher activity texture and a different MR contrast, bias and noise.
SHIFTED = MappingProxyType({**STANDARD,
    "fold_wavelength_mm": (14.5, 18.0),
    "sulcal_depth_mm": (16.0, 21.0),
    "cortical_thickness_mm": (3.2, 3.6),
    "fdg_gm_wm": (1.8, 2.5),
    "amyloid_positive_gm_wm": (1.3, 1.6),
    "texture_sd": (0.10, 0.16),
    "mr_gamma": (1.4, 1.9),
    "mr_bias_amplitude": (0.2, 0.3),
    "mr_noise_sd": (0.04, 0.06),
})

FAMILIES = MappingProxyType({"standard": STANDARD, "shifted": SHIFTED})


def family_ranges(family: str) -> MappingProxyType:
    """The draw ranges of ``family`` (one of :data:`FAMILIES`); ``ValueError`` otherwise."""
    if not isinstance(family, str) or family not in FAMILIES:
        raise ValueError(f"family must be one of {', '.join(map(repr, FAMILIES))}, got {family!r}")
    return FAMILIES[family]

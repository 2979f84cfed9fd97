"""Tissue names accepted in tissue-map folders and label tables, and the v2 label code of each.

A map file ``NAME.nii[.gz]`` (or a label-table entry) names a *tissue class*; every class has a
label code of :data:`pettk.sim.anatomy.TISSUE_LABELS` (in brackets below), whose activity,
attenuation and MR values it takes from the subject's drawn tables. Several names may share a
class (``scalp`` and ``skin`` are both soft tissue); their memberships add up. Names are matched
case-insensitively, with ``-``, ``.`` and spaces read as ``_``.

* grey matter (code 7): gm, grey_matter, gray_matter, grey, gray, cortex, hippocampus, amygdala
* white matter (8): wm, white_matter, white
* csf (5): csf
* ventricles (6): ventricles, ventricle, lateral_ventricles
* cortical bone (2): skull, bone, cortical_bone
* diploe (3): marrow, bone_marrow, diploe
* soft tissue (1): scalp, skin, soft, soft_tissue, muscle, muscle_skin, dura, vessels, connective,
  around_fat
* fat (1, soft tissue; the MR shows the bright fat signal): fat
* air cavity (4): air, air_cavity, sinus, sinuses
* caudate (9), putamen (10), pallidum (11: also globus_pallidus), thalamus (12)
* cerebellar cortex (13): cerebellum_gm, cerebellar_cortex, cerebellum_cortex, cerebellar_gm
* cerebellar white matter (14): cerebellum_wm, cerebellar_white_matter, cerebellar_wm
* brainstem (15): brainstem, brain_stem
* eye (16): eye, eyes
* background: background, bck, bg (read and ignored)

Grey and white matter are required. Background is implied wherever the memberships sum to less
than 1.
"""

from __future__ import annotations

from types import MappingProxyType

from ..anatomy.tables import (
    AIR,
    BONE,
    BRAINSTEM,
    CAUDATE,
    CB_GM,
    CB_WM,
    CSF,
    DIPLOE,
    EYE,
    GM,
    PALLIDUM,
    PUTAMEN,
    SOFT,
    THALAMUS,
    VENTRICLE,
    WM,
)

#: Tissue classes in channel order, with their v2 label code.
CLASS_CODES = MappingProxyType({
    "soft tissue": SOFT, "fat": SOFT, "cortical bone": BONE, "diploe": DIPLOE, "air cavity": AIR, "csf": CSF,
    "ventricles": VENTRICLE, "grey matter": GM, "white matter": WM, "caudate": CAUDATE, "putamen": PUTAMEN,
    "pallidum": PALLIDUM, "thalamus": THALAMUS, "cerebellar cortex": CB_GM, "cerebellar white matter": CB_WM,
    "brainstem": BRAINSTEM, "eye": EYE,
})

BACKGROUND_NAMES = ("background", "bck", "bg")

_ALIASES = {
    "grey matter": ("gm", "grey_matter", "gray_matter", "grey", "gray", "cortex", "hippocampus", "amygdala"),
    "white matter": ("wm", "white_matter", "white"),
    "csf": ("csf",),
    "ventricles": ("ventricles", "ventricle", "lateral_ventricles"),
    "cortical bone": ("skull", "bone", "cortical_bone"),
    "diploe": ("marrow", "bone_marrow", "diploe"),
    "soft tissue": ("scalp", "skin", "soft", "soft_tissue", "muscle", "muscle_skin", "dura", "vessels",
                    "connective", "around_fat"),
    "fat": ("fat",),
    "air cavity": ("air", "air_cavity", "sinus", "sinuses"),
    "caudate": ("caudate",),
    "putamen": ("putamen",),
    "pallidum": ("pallidum", "globus_pallidus"),
    "thalamus": ("thalamus",),
    "cerebellar cortex": ("cerebellum_gm", "cerebellar_cortex", "cerebellum_cortex", "cerebellar_gm"),
    "cerebellar white matter": ("cerebellum_wm", "cerebellar_white_matter", "cerebellar_wm"),
    "brainstem": ("brainstem", "brain_stem"),
    "eye": ("eye", "eyes"),
}

#: Accepted name -> tissue class (``None``: background, ignored).
TISSUE_NAMES = MappingProxyType({**{a: cls for cls, names in _ALIASES.items() for a in names},
                                 **{b: None for b in BACKGROUND_NAMES}})

#: The classes every subject needs.
REQUIRED = ("grey matter", "white matter")


def normalise(name: str) -> str:
    """``name`` lower-cased, with ``-``, ``.`` and spaces replaced by ``_``."""
    out = name.strip().lower()
    for ch in "-. ":
        out = out.replace(ch, "_")
    return out


def accepted_names() -> str:
    """The accepted names, for error messages."""
    return ", ".join(sorted(TISSUE_NAMES))


def tissue_class(name: str, where) -> str | None:
    """The tissue class of ``name`` (``None`` for background); ``ValueError`` naming ``where``."""
    key = normalise(name)
    if key not in TISSUE_NAMES:
        raise ValueError(f"{where}: unknown tissue name {name!r}; accepted names (case-insensitive): "
                         f"{accepted_names()}")
    return TISSUE_NAMES[key]

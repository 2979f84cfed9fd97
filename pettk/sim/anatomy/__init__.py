"""Anatomy generator v2: procedural 3D heads that look like brains at 2 mm.

:func:`brain_phantom_v2` draws one subject per seed and renders it on an
:class:`~pettk.geometry.ImageGrid` as an :class:`AnatomyPhantom` (a
:class:`~pettk.sim.phantoms.BrainPhantom` with PET/MR mismatch masks and the generator's name and
version). Version 1, :func:`pettk.sim.brain_phantom`, is unchanged and stays available for
reproducing older data.

Modules, one job each:

* :mod:`.fields` -- signed-distance-like shapes, smooth unions, random fields;
* :mod:`.pose` -- the head-to-scanner affine (size +-12 %, aspect, position +-10 mm, in-plane
  rotation +-15 deg, tilts +-8 deg);
* :mod:`.shapes` -- head, skull, sinuses, cerebrum with fissures, cerebellum, brainstem, deep
  nuclei, ventricles, cortical folding and cerebellar folia, all per-subject;
* :mod:`.labelling` -- supersampled tissue labels, the cortical ribbon (2-4 mm) and sulcal CSF;
* :mod:`.family` -- the draw ranges of the standard (training) and shifted (out-of-family) families;
* :mod:`.tables` -- tissue labels, attenuation and tracer activity (FDG, amyloid +/-) per region;
* :mod:`.mr` -- T1-like MR: contrast curve, bias field, noise, MR-only structures;
* :mod:`.render` -- lesions, partial volume, chunked rendering, :func:`brain_phantom_v2`.

Everything is procedural: no template, atlas or downloaded data. Units are mm and 1/mm; images
are ``(nx, ny, nz)`` with z axial; every random draw comes from the seed.
"""

from .family import FAMILIES, family_ranges
from .pose import POSE_RANGES, Pose
from .render import GENERATOR, VERSION, AnatomyLesion, AnatomyPhantom, LesionPlacementError, brain_phantom_v2
from .tables import PARENCHYMA, REGIONS, TISSUE_LABELS, TRACERS

__all__ = ["brain_phantom_v2", "AnatomyPhantom", "AnatomyLesion", "Pose", "POSE_RANGES", "TISSUE_LABELS",
           "TRACERS", "REGIONS", "PARENCHYMA", "GENERATOR", "VERSION", "FAMILIES",
           "family_ranges", "LesionPlacementError"]

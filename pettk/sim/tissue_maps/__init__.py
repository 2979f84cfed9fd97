"""Users' own anatomy: PET/MR phantoms from NIfTI tissue maps (BrainWeb, FreeSurfer, ...).

:func:`from_tissue_maps` renders one subject's tissue memberships (or an integer label map with a
label table) onto any :class:`~pettk.geometry.ImageGrid` with the v2 generator's per-subject
tables (tracer activity, attenuation, MR), lesions, MR synthesis and pose augmentation;
:func:`load_tissue_maps` reads and checks a subject folder once (:class:`TissueMaps`), and
:func:`list_subjects` lists the subject folders of a data-set folder (``pettk simulate OUT
--tissue-maps DIR``). See ``docs/tissue_maps.md``.

Modules: :mod:`.names` (accepted tissue names and their label codes), :mod:`.loading` (reading and
checks), :mod:`.render` (resampling and synthesis).
"""

from .loading import MAX_SUM, VALUE_TOL, TissueMaps, check_tissue_maps, list_subjects, load_tissue_maps
from .names import CLASS_CODES, TISSUE_NAMES
from .render import GENERATOR, VERSION, from_tissue_maps

__all__ = ["from_tissue_maps", "load_tissue_maps", "list_subjects", "check_tissue_maps", "TissueMaps",
           "TISSUE_NAMES", "CLASS_CODES", "MAX_SUM", "VALUE_TOL", "GENERATOR", "VERSION"]

"""Simulation: phantoms, scan simulation with dose reduction, and paired data sets."""

from .anatomy import AnatomyLesion, AnatomyPhantom, brain_phantom_v2
from .augment import Augmentation, augment_images, augment_item, augment_sinograms
from .phantoms import (
    BrainPhantom,
    ContrastPhantom,
    brain_phantom,
    ellipse_phantom_2d,
    ellipsoid_phantom_3d,
    from_label_maps,
    hot_spheres,
    nema_iq_phantom,
    shepp_logan_2d,
    shepp_logan_3d,
    uniform_cylinder,
)
from .scan import Scan, simulate_scan, thin
from .tissue_maps import TissueMaps, from_tissue_maps, load_tissue_maps

__all__ = [
    "BrainPhantom", "ContrastPhantom", "brain_phantom", "ellipse_phantom_2d", "ellipsoid_phantom_3d",
    "from_label_maps", "hot_spheres", "nema_iq_phantom", "shepp_logan_2d", "shepp_logan_3d", "uniform_cylinder",
    "Scan", "simulate_scan", "thin", "AnatomyLesion", "AnatomyPhantom", "brain_phantom_v2",
    "TissueMaps", "from_tissue_maps", "load_tissue_maps",
    "Augmentation", "augment_images", "augment_item", "augment_sinograms",
]

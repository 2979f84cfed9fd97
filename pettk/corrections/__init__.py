"""Corrections estimated from the data: randoms, normalisation, axial compression (span).

* :mod:`pettk.corrections.randoms` -- randoms from singles rates (``2 tau S_i S_j T``) and from
  delayed coincidences with Casey's fan-sum variance reduction, for sinograms and list mode.
* :mod:`pettk.corrections.normalisation` -- component-based normalisation (geometric factors ×
  crystal efficiencies by iterated fan sums) from a uniform calibration scan, and a simulator of
  crystal efficiencies.
* :mod:`pettk.corrections.span` -- span-compressed sinogram layouts and their projector.
* :mod:`pettk.corrections.acquisition` -- a PETSIRD acquisition (prompts, delayeds) to a corrected
  reconstruction with a report of the randoms and scatter fractions.
* :mod:`pettk.corrections.simulate` -- PETSIRD acquisitions with known trues, scatter and randoms.

See ``docs/corrections.md``.
"""

from .acquisition import CorrectedAcquisition, estimate_corrections
from .normalisation import (
    NormalisationEstimate,
    efficiency_sinogram,
    estimate_normalisation,
    simulate_crystal_efficiencies,
)
from .randoms import (
    event_randoms,
    fan_sum_factors,
    histogram_crystal_pairs,
    randoms_from_delayeds,
    randoms_from_singles,
)
from .span import SpanLayout, SpanProjector, compress

__all__ = [
    "CorrectedAcquisition",
    "estimate_corrections",
    "NormalisationEstimate",
    "efficiency_sinogram",
    "estimate_normalisation",
    "simulate_crystal_efficiencies",
    "SpanLayout",
    "SpanProjector",
    "compress",
    "event_randoms",
    "fan_sum_factors",
    "histogram_crystal_pairs",
    "randoms_from_delayeds",
    "randoms_from_singles",
]

"""Scatter estimation: Watson's single scatter simulation (SSS), tail fitting and the scatter ↔
reconstruction loop.

* :mod:`~pettk.scatter.klein_nishina` -- Compton kinematics and Klein–Nishina cross sections.
* :mod:`~pettk.scatter.energy` -- :class:`EnergyWindow`: window and energy resolution, the
  efficiency for a photon of energy E.
* :mod:`~pettk.scatter.lines` -- line integrals from points inside the image (Joseph projector).
* :mod:`~pettk.scatter.sss` -- :func:`single_scatter`: the unscaled single-scatter sinogram of an
  activity and mu-map, in the units of the projector's line integrals.
* :mod:`~pettk.scatter.sss_tof` -- :func:`single_scatter_tof`: the same spread over TOF bins
  (Watson 2007).
* :mod:`~pettk.scatter.tail_fit` -- :func:`tail_mask`, :func:`fit_tail_scale`.
* :mod:`~pettk.scatter.loop` -- :func:`scatter_additive` (the additive term of
  :class:`~pettk.physics.ForwardModel`) and :func:`scatter_loop` (OSEM ↔ SSS ↔ tail fit rounds).
"""

from .energy import WINDOW_LIMITS_KEV, EnergyWindow
from .klein_nishina import ELECTRON_REST_ENERGY_KEV, kn_differential, kn_total, mu_energy_scale, scattered_energy
from .loop import ScatterLoopResult, scatter_additive, scatter_loop
from .sss import coarse_detectors, scatter_points, single_scatter
from .sss_tof import single_scatter_tof
from .tail_fit import fit_tail_scale, tail_mask

__all__ = [
    "ELECTRON_REST_ENERGY_KEV", "EnergyWindow", "ScatterLoopResult", "WINDOW_LIMITS_KEV", "coarse_detectors",
    "fit_tail_scale", "kn_differential", "kn_total", "mu_energy_scale", "scatter_additive", "scatter_loop",
    "scatter_points", "scattered_energy", "single_scatter", "single_scatter_tof", "tail_mask",
]

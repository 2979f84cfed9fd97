"""Tissue labelling of supersampled voxels from the implicit shapes of :mod:`.shapes`.

:func:`classify` labels ``S`` sample points in each of ``N`` voxels. Smooth fields are evaluated
once per voxel (value and gradient at the voxel centre) and extrapolated linearly to the samples,
which sit within a voxel of the centre; the sharp parts (sulcal and fissural CSF sheets, cortical
ribbon, folia) are computed per sample from those linear fields, so a voxel costs a few
operations per sample. A voxel whose whole sample cloud lies on one side of a surface (``|value|
> |gradient| * reach``) takes that side without per-sample work.

The cortex: ``d`` is the depth below the pial surface (fissures and cisterns included), ``h``
the depth below the cerebral hull (without them) and ``s`` the distance to the nearest zero line
of the folding field, extruded along the normals of a smooth hull (``|g| / |grad g|``, corrected
to ``arctan(k |g| / |grad g|) / k`` for a field of wavenumber ``k``). The sulcal CSF is the set
``sqrt(s^2 + max(h - D, 0)^2) < w`` (a sheet of half-width ``w``, wider near the surface,
reaching depth ``D``); ``delta = min(d, sqrt(s^2 + max(h - D, 0)^2) - w, medial sulci)`` is the
distance to the nearest CSF, and grey matter is ``0 < delta < T`` (thickness ``T``): a ribbon of
constant thickness that follows the crowns, the walls and the fundi of the sulci and lines the
fissures. The cerebellar cortex is built the same way on the folia fissures.
"""

from __future__ import annotations

import numpy as np

from .fields import DTYPE, FAR, value_and_gradient
from .shapes import DEEP_BOX, FACE_BOX, Shapes
from .tables import (
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

#: Deepest sulcus (head-frame mm) plus the thickest ribbon: below it the cerebrum is white matter.
_CORTEX_SHELL = 25.0 + 6.0
_FOLIA_SHELL = 18.0 + 4.5


class LinearField:
    """A field known at voxel centres by value ``(n,)`` and gradient ``(n, 3)``, read at samples.

    ``offsets`` ``(S, 3)`` are the sample positions relative to the voxel centre (head-frame mm);
    ``reach`` is their largest distance from it.
    """

    def __init__(self, value: np.ndarray, grad: np.ndarray, offsets: np.ndarray, reach: float):
        self.value, self.grad, self.offsets = value, grad, offsets
        self.margin = np.linalg.norm(grad, axis=1) * reach + 1e-9

    def at(self, idx) -> np.ndarray:
        """Values ``(len(idx), S)`` at the samples of voxels ``idx``."""
        return self.value[idx, None] + self.grad[idx] @ self.offsets.T

    def negative(self) -> np.ndarray:
        """Bool ``(n, S)``: samples inside (field < 0), per-sample only where the voxel straddles 0."""
        out = np.empty((self.value.shape[0], self.offsets.shape[0]), dtype=bool)
        out[:] = (self.value < 0.0)[:, None]
        amb = np.flatnonzero(np.abs(self.value) <= self.margin)
        if amb.size:
            out[amb] = self.at(amb) < 0.0
        return out


def _in_box(p: np.ndarray, box, margin: float = 0.0) -> np.ndarray:
    lo, hi = box
    return np.all((p >= lo - margin) & (p <= hi + margin), axis=1)


def _fields_in(fn, p: np.ndarray, mask: np.ndarray) -> tuple[dict, dict]:
    """:func:`value_and_gradient` of ``fn`` on the voxels of ``mask``; :data:`FAR` elsewhere."""
    idx = np.flatnonzero(mask)
    n = p.shape[0]
    if idx.size == 0:
        names = fn(np.zeros((1, 3))).keys()
        return {k: np.full(n, FAR, dtype=DTYPE) for k in names}, {k: np.zeros((n, 3), dtype=DTYPE) for k in names}
    v, g = value_and_gradient(fn, p[idx])
    values, grads = {}, {}
    for k in v:
        values[k] = np.full(n, FAR, dtype=DTYPE)
        values[k][idx] = v[k]
        grads[k] = np.zeros((n, 3), dtype=DTYPE)
        grads[k][idx] = g[k]
    return values, grads


def classify(shapes: Shapes, centres: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, dict]:
    """Tissue labels of the samples of ``N`` voxels.

    Parameters
    ----------
    shapes : Shapes
        The subject.
    centres : ndarray, shape ``(N, 3)``
        Voxel centres in the head frame (mm).
    offsets : ndarray, shape ``(S, 3)``
        Sample positions relative to each centre (head-frame mm); ``zeros((1, 3))`` labels the
        centres themselves.

    Returns
    -------
    labels : ndarray, int8, shape ``(N, S)``
        Codes of :data:`~.tables.TISSUE_LABELS`.
    fields : dict
        :class:`LinearField` objects reused by the renderer: ``head``, ``outer_skull``, ``veins``.
    """
    centres = np.asarray(centres, dtype=DTYPE)
    offsets = np.asarray(offsets, dtype=DTYPE)
    n, n_s = centres.shape[0], offsets.shape[0]
    reach = float(np.max(np.linalg.norm(offsets, axis=1))) if n_s else 0.0
    values, grads = value_and_gradient(shapes.cranium, centres)
    fv, fg = _fields_in(shapes.face, centres, _in_box(centres, FACE_BOX))
    dv, dg = _fields_in(shapes.deep, centres, _in_box(centres, DEEP_BOX))
    values.update(fv), grads.update(fg)
    values.update(dv), grads.update(dg)
    lin = {k: LinearField(values[k], grads[k], offsets, reach) for k in values}

    lab = np.zeros((n, n_s), dtype=np.int8)
    head = lin["head"].negative()
    lab[head] = SOFT
    intra = lin["inner_skull"].negative()
    extra = ~intra
    bone = extra & lin["outer_skull"].negative()
    lab[bone] = BONE
    lab[bone & ~lin["diploe_in"].negative() & lin["diploe_out"].negative()] = DIPLOE
    lab[extra & head & lin["petrous"].negative()] = BONE
    lab[extra & head & lin["eye"].negative()] = EYE
    lab[extra & head & lin["air"].negative()] = AIR
    lab[intra] = CSF

    # cerebrum: white matter inside the pial surface, then the folded cortex near it
    inside = lin["cerebrum"].negative() & intra
    lab[inside] = WM
    _cortex(shapes, centres, lin, lab, inside, reach)
    # cerebellum: white matter core, folia cortex
    inside = lin["cerebellum"].negative() & intra
    lab[inside] = CB_WM
    _folia(shapes, centres, lin["cerebellum"], lab, inside, reach)
    lab[lin["brainstem"].negative() & intra] = BRAINSTEM

    # deep structures (only where their box holds the voxel)
    if np.any(values["thalamus"] < FAR):
        cerebral = (lab == GM) | (lab == WM)
        lab[cerebral & lin["hippocampus"].negative()] = GM
        lab[(cerebral | (lab == BRAINSTEM)) & lin["thalamus"].negative()] = THALAMUS
        cerebral = (lab == GM) | (lab == WM)
        lab[cerebral & lin["putamen"].negative()] = PUTAMEN
        lab[cerebral & lin["pallidum"].negative()] = PALLIDUM
        lab[intra & lin["ventricles"].negative()] = VENTRICLE
        lab[intra & lin["caudate"].negative()] = CAUDATE
        lab[intra & lin["fourth_ventricle"].negative()] = VENTRICLE
        lab[(lab == CB_WM) & lin["dentate"].negative()] = CB_GM
    return lab, {k: lin[k] for k in ("head", "outer_skull", "veins")}


def _cortex(shapes: Shapes, centres, lin: dict, lab, inside, reach):
    """Sulcal CSF and grey matter in the voxels near the pial surface (edits ``lab`` in place).

    The folding pattern lives on ``fold_surface``, a smooth hull of the cerebrum without its cuts
    and fissures (its normal lines do not cross near the surface): sulci are extruded along its
    normals, down to their depth below ``sulcal_hull`` (the cerebrum before its fissures and
    cisterns are carved); grey matter is measured from the real pial surface ``cerebrum``.
    """
    cer, surf, hull = lin["cerebrum"], lin["fold_surface"], lin["sulcal_hull"]
    gn = np.maximum(np.linalg.norm(cer.grad, axis=1), 1e-9)
    depth_v = -cer.value / gn
    idx = np.flatnonzero((depth_v > -reach - 0.5) & (depth_v < _CORTEX_SHELL + reach) & (cer.value < FAR))
    if idx.size == 0:
        return
    sn = np.maximum(np.linalg.norm(surf.grad[idx], axis=1), 1e-9)
    normal = surf.grad[idx] / sn[:, None]
    foot = centres[idx] - (surf.value[idx] / sn)[:, None] * normal
    g, g_tan, depth_max, thick = shapes.cortex_surface(foot, normal, centres[idx])
    d = -cer.at(idx) / gn[idx, None]
    hn = np.maximum(np.linalg.norm(hull.grad[idx], axis=1), 1e-9)
    d_hull = -hull.at(idx) / hn[:, None]
    # distance to the zero set: |g| / |grad g| is exact for a linear field; for the locally
    # sinusoidal folding field (wavenumber k) it is tan(k r) / k, hence the arctangent
    k = 2.0 * np.pi / shapes.fold_wavelength
    s = np.abs(g[:, None] + g_tan @ cer.offsets.T) * (k / np.maximum(np.linalg.norm(g_tan, axis=1), 1e-6))[:, None]
    s = np.arctan(s) * (1.0 / k)
    half = shapes.sulcal_half + shapes.sulcal_open * np.exp(-np.maximum(d, 0.0) / 2.0)
    over = np.maximum(d_hull - depth_max[:, None], 0.0)
    delta = np.minimum(d, np.sqrt(s * s + over * over) - half)
    # medial sulci, near the interhemispheric fissure only
    wall = shapes.fissure_half + shapes.medial_depth + 4.0 + reach
    near = np.flatnonzero(np.abs(centres[idx, 0]) < wall)
    if near.size:
        p = centres[idx[near], None, :] + cer.offsets[None, :, :]
        sm = shapes.medial_sulci(p[..., 0], p[..., 1], p[..., 2]) - shapes.sulcal_half
        delta[near] = np.minimum(delta[near], sm)
    sub = lab[idx]
    ins = inside[idx]
    sub[ins & (delta <= 0.0)] = CSF
    sub[ins & (delta > 0.0) & (delta < thick[:, None])] = GM
    lab[idx] = sub


def _folia(shapes: Shapes, centres, cb: LinearField, lab, inside, reach):
    """Fissural CSF and cerebellar cortex near the cerebellar surface (edits ``lab`` in place)."""
    gn = np.maximum(np.linalg.norm(cb.grad, axis=1), 1e-9)
    depth_v = -cb.value / gn
    idx = np.flatnonzero((depth_v > -reach - 0.5) & (depth_v < _FOLIA_SHELL + reach) & (cb.value < FAR))
    if idx.size == 0:
        return
    u, gu = shapes.folia(centres[idx])
    us = u[:, None] + gu @ cb.offsets.T
    k = np.rint(us)
    s = np.abs(us - k) / np.maximum(np.linalg.norm(gu, axis=1), 1e-9)[:, None]
    d = -cb.at(idx) / gn[idx, None]
    over = np.maximum(d - shapes.folia_depth_of(k), 0.0)
    delta = np.minimum(d, np.sqrt(s * s + over * over) - shapes.folia_half)
    sub = lab[idx]
    ins = inside[idx]
    sub[ins & (delta <= 0.0)] = CSF
    sub[ins & (delta > 0.0) & (delta < shapes.folia_thickness)] = CB_GM
    lab[idx] = sub

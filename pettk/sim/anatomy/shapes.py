"""Shapes of a v2 subject: head, skull, brain surfaces, deep structures and cortical folding.

Everything is an implicit function of head-frame points (mm, see :mod:`.pose`): negative inside,
about the signed distance near the surface. :class:`Shapes` draws one subject's variations from a
``numpy.random.Generator`` and evaluates:

* :meth:`Shapes.cranium` -- the cerebrum's pial surface (a smooth union of an egg-shaped cerebral
  ellipsoid cut flat at the frontal base and two temporal lobes, displaced by a low-frequency
  random field, shrunk by atrophy and carved by the interhemispheric fissure above the corpus
  callosum, the Sylvian fissures with the insular cisterns, the tentorium and the cisterns around
  the midbrain), the cerebellum (two hemispheres and the vermis under the tentorium), the
  brainstem and cord, the inner and outer skull surfaces (skull 5-8 mm, thinner at the temples,
  inner and outer tables around the diploe), the scalp (3-7 mm) with the face and neck, and the
  MR-only dural venous sinuses;
* :meth:`Shapes.face` -- air cavities (frontal, sphenoid, ethmoid, maxillary sinuses, nasal
  cavity, mastoid air cells), eyes and the petrous bone;
* :meth:`Shapes.deep` -- lateral, third and fourth ventricles (scaled by the subject's atrophy),
  caudate, putamen, pallidum, thalamus, hippocampus with amygdala and the dentate nuclei;
* :meth:`Shapes.cortex_surface` -- the folding of the cortex at the foot point of a voxel on a
  smooth hull of the cerebrum: a random field whose zero lines on the hull are the sulci
  (extruded along the hull's normal, bent with depth by a weaker 3D field, down to a depth drawn
  from a second field, 3-25 mm), and the cortical thickness (a third field, 2.1-3.8 mm);
* :meth:`Shapes.medial_sulci` -- cingulate (with its marginal ramus), parieto-occipital and
  calcarine sulci cut into the medial wall;
* :meth:`Shapes.folia` -- the cerebellar lobules: fissures on planes through a left-right axis
  in the cerebellar white matter, each with its own depth.

Nominal sizes (scale 1): brain 132 mm wide, 162 mm long, 124 mm from the vertex to the bottom of
the cerebellum; head about 160 x 190 mm. No template or atlas is used: every number is here.
"""

from __future__ import annotations

import math

import numpy as np

from .family import STANDARD
from .fields import FAR, RandomField, capsule, ellipsoid, hash01, mirror_x, rotation, smax, smin

#: Head-frame boxes (lo, hi) in mm holding every structure of :meth:`Shapes.deep` and
#: :meth:`Shapes.face` for every subject (with margin), used to skip far voxels.
DEEP_BOX = (np.array([-41.0, -71.0, -43.0]), np.array([41.0, 39.0, 33.0]))
FACE_BOX = (np.array([-61.0, -45.0, -83.0]), np.array([61.0, 85.0, 10.0]))
#: Boxes holding the cerebrum and the cerebellum + brainstem (lesions, defects are drawn in them).
CEREBRUM_BOX = (np.array([-70.0, -103.0, -46.0]), np.array([70.0, 70.0, 76.0]))
POSTERIOR_FOSSA_BOX = (np.array([-55.0, -98.0, -60.0]), np.array([55.0, -10.0, -2.0]))


def _rot(yaw_deg: float) -> np.ndarray:
    return rotation(yaw_deg)


class Shapes:
    """One subject's anatomy (head frame, mm), drawn from ``rng``.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of every draw (in a fixed order: the same generator state gives the same subject).
    scale : float
        The pose's size factor: thicknesses drawn in world mm are divided by it, so the rendered
        cortex is 2-4 mm thick whatever the head size.

    Attributes
    ----------
    atrophy : float
        0 (young) to 1 (atrophied): widens sulci, the fissure and the CSF around the brain and
        enlarges the ventricles.
    ventricle_scale : float
        Linear size factor of the ventricles (0.6-2.1).
    params : dict
        Every drawn number that shapes the subject (mm unless named otherwise).
    """

    def __init__(self, rng: np.random.Generator, scale: float = 1.0, ranges=STANDARD):
        u = rng.uniform
        a = float(u(0.0, 1.0))
        self.atrophy = a
        self.ventricle_scale = float(np.clip(0.7 + 1.1 * a + u(-0.15, 0.15), 0.6, 2.1))
        self.shrink = 0.3 + 1.6 * a            # brain surface moved inwards from the nominal hull
        self.csf_gap = u(1.0, 2.0)             # CSF between the nominal hull and the skull
        # cerebrum
        self.cer_c = np.array([0.0, -17.0 + u(-2, 2), 10.0 + u(-2, 2)])
        self.cer_ax = np.array([66.0, 81.0, 60.0]) * u(0.96, 1.04, 3)
        self.base_z = -20.0 + u(-3, 3)
        self.temp_c = np.array([44.0 + u(-2, 2), -12.0 + u(-3, 3), -20.0 + u(-2, 2)])
        self.temp_ax = np.array([24.0, 46.0, 24.0]) * u(0.94, 1.06, 3)
        self.temp_rot = _rot(u(-4.0, 8.0))
        self.shape_field = RandomField(rng, 80.0, 16)
        self.shape_amp = u(1.5, 3.5)
        self.tent_z0 = -2.0 + u(-3, 3)
        self.tent_gap = 0.8
        self.fissure_half = 0.6 + 0.8 * a
        self.fissure_bend = u(-2.0, 2.0)
        self.fissure_phase = u(0, 2 * math.pi)
        self.core_c = np.array([0.0, -8.0 + u(-2, 2), 2.0])
        self.core_ax = np.array([40.0, 46.0, 22.0]) * u(0.95, 1.05, 3)
        self.insula_x = 37.0 + u(-2, 2)
        self.sylvian_half = 1.0 + 0.8 * a
        self.sylvian_z0 = -4.0 + u(-3, 3)
        self.sylvian_slope = u(0.3, 0.45)
        self.sylvian_phase = u(0.0, 2.0 * math.pi)
        # cortical folding (fields evaluated at the pial foot point)
        self.fold_wavelength = u(*ranges["fold_wavelength_mm"])
        self.fold = RandomField(rng, self.fold_wavelength, 64, spread=0.25)
        self.wiggle = RandomField(rng, 20.0, 24)           # bends the sulci with depth
        self.sulcal_depth = u(*ranges["sulcal_depth_mm"]) / scale
        # medial sulci: polylines in the (y, z) midplane, cut into the medial wall
        j = lambda: u(-4.0, 4.0, 2)  # noqa: E731
        cing = [np.array(pt) + j() for pt in ((30.0, 10.0), (15.0, 31.0), (-40.0, 38.0), (-48.0, 62.0))]
        po = [np.array(pt) + j() for pt in ((-56.0, 5.0), (-78.0, 45.0))]
        calc = [po[0], np.array((-100.0, 0.0)) + j()]
        self.medial_segments = [tuple(tuple(float(c) for c in pt) for pt in seg)
                                for seg in ((cing[0], cing[1]), (cing[1], cing[2]), (cing[2], cing[3]), po, calc)]
        self.medial_depth = u(7.0, 11.0) / scale
        self.depth_field = RandomField(rng, 45.0, 24)
        self.sulcal_half = (0.25 + 0.55 * a) / scale        # half-width of sulcal CSF at depth
        self.sulcal_open = u(0.5, 1.0) / scale              # extra half-width at the surface
        self.thickness_mean = u(*ranges["cortical_thickness_mm"])                  # world mm
        self.thickness_field = RandomField(rng, 40.0, 24)
        self.scale = scale
        # cerebellum
        # tall ellipsoids: the tentorium cuts their tops, so the cerebellum fills the space under it
        self.cb_c = np.array([24.0 + u(-2, 2), -64.0 + u(-2, 2), -27.0 + u(-2, 2)])
        self.cb_ax = np.array([27.0, 30.0, 28.0]) * u(0.94, 1.06, 3)
        self.vermis_c = np.array([0.0, -64.0, -25.0])
        self.vermis_ax = np.array([11.0, 28.0, 27.0]) * u(0.94, 1.06, 3)
        self.folia_centre = np.array([0.0, -57.0 + u(-2, 2), -31.0 + u(-2, 2)])
        # lobules: at 2 mm the tightly folded cerebellar cortex is seen as a thick grey layer
        self.folia_n = int(rng.integers(30, 45))            # fissures around the full circle
        self.folia_field = RandomField(rng, 25.0, 16)
        self.folia_depth = u(5.0, 9.0) / scale
        self.folia_half = (0.25 + 0.3 * a) / scale
        self.folia_thickness = u(2.0, 2.8) / scale
        self.folia_salt = u(0.0, 100.0)
        # skull and scalp
        self.skull_mm = u(5.5, 7.5)
        self.skull_field = RandomField(rng, 90.0, 12)
        self.inner_table = u(1.4, 2.0)
        self.outer_table = u(1.5, 2.2)
        self.scalp_mm = u(3.5, 6.5)
        self.scalp_field = RandomField(rng, 70.0, 12)
        # air cavities
        self.frontal_sinus = u(0.0, 1.3)
        self.sphenoid = u(0.7, 1.2)
        self.maxillary = u(0.8, 1.2)
        self.mastoid = u(0.5, 1.2)
        self.sinus_vein_width = u(0.8, 1.2)
        self.params = {
            "atrophy": a, "ventricle_scale": self.ventricle_scale, "brain_shrink_mm": self.shrink * scale,
            "csf_gap_mm": self.csf_gap * scale, "fold_wavelength_mm": self.fold_wavelength * scale,
            "sulcal_depth_mm": self.sulcal_depth * scale, "sulcal_half_width_mm": self.sulcal_half * scale,
            "cortical_thickness_mm": self.thickness_mean, "fissure_half_width_mm": self.fissure_half * scale,
            "folia_fissures": self.folia_n, "cerebellar_cortex_mm": self.folia_thickness * scale,
            "skull_mm": self.skull_mm * scale, "scalp_mm": self.scalp_mm * scale,
            "frontal_sinus_size": self.frontal_sinus,
        }

    # -- outer geometry ---------------------------------------------------------------------------
    def tentorium_z(self, p: np.ndarray) -> np.ndarray:
        """Height (mm) of the tentorium above ``(x, y)`` of points ``p`` ``(3, n)``: a tent sloping down
        sideways and backwards from the notch."""
        return self.tent_z0 - 0.35 * np.abs(p[0]) - 0.12 * np.maximum(0.0, -(p[1] + 55.0))

    def skull_thickness(self, p: np.ndarray) -> np.ndarray:
        """Skull thickness (mm) at points ``p`` ``(3, n)``: thinner at the temples, thick over the frontal
        sinus."""
        temple = np.exp(-((p[2] + 5.0) / 25.0) ** 2) / (1.0 + np.exp(-(np.abs(p[0]) - 50.0) / 5.0))
        glabella = np.exp(-(p[0] ** 2 + (p[1] - 70.0) ** 2 + (p[2] + 6.0) ** 2) / (2.0 * 11.0 ** 2))
        return (self.skull_mm * (1.0 + 0.12 * self.skull_field.soa(p)) * (1.0 - 0.35 * temple)
                + 7.0 * self.frontal_sinus * glabella)

    def brainstem(self, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Signed distances (mm) at points ``p`` ``(3, n)`` to the brainstem (midbrain, pons, medulla,
        cord and middle cerebellar peduncles) and to the midbrain and pons alone."""
        mid = ellipsoid(p, (0.0, -22.0, -10.0), (12.0, 11.0, 9.0))
        pons = ellipsoid(p, (0.0, -24.0, -30.0), (14.0, 13.0, 12.0))
        b = smin(mid, pons, 6.0)
        b = smin(b, ellipsoid(p, (0.0, -32.0, -50.0), (8.5, 8.5, 12.0)), 6.0)
        b = smin(b, capsule(p, (0.0, -34.0, -58.0), (0.0, -40.0, -170.0), 6.0), 4.0)
        return smin(b, ellipsoid(mirror_x(p), (12.0, -38.0, -28.0), (7.0, 10.0, 7.0)), 4.0), smin(mid, pons, 6.0)

    def cranium(self, p: np.ndarray) -> dict:
        """Fields of the head at points ``p`` ``(n, 3)`` (mm): name -> ``(n,)`` signed distance.

        ``head`` (outer skin), ``inner_skull`` (negative inside the cranial cavity), ``outer_skull``,
        ``diploe_in`` / ``diploe_out`` (the diploe lies where ``diploe_in > 0`` and ``diploe_out <
        0``), ``cerebrum`` (pial surface with all carvings), ``fold_surface`` (the smooth hull whose
        normals carry the sulci), ``sulcal_hull`` (the cerebrum before its fissures and cisterns are
        carved: sulci reach a depth below it), ``cerebellum``, ``brainstem`` and ``veins`` (MR-only
        dural sinuses).
        """
        p = np.ascontiguousarray(p.T)
        x, y, z = p[0], p[1], p[2]
        bulge = self.shape_amp * self.shape_field.soa(p)
        upper = ellipsoid(p, self.cer_c, self.cer_ax)
        temporal = ellipsoid(mirror_x(p), self.temp_c, self.temp_ax, self.temp_rot)
        zt = self.tentorium_z(p)
        notch = np.minimum(-40.0, -56.0 + 0.8 * np.abs(x))   # the tentorial notch holds the midbrain
        below_tent = z - (zt + self.tent_gap)
        # the same shape with wide blends: its normal lines do not cross near the surface, they
        # carry the sulci (perpendicular to the convexity, the frontal base and the tentorium)
        fold_surface = smin(smax(upper, self.base_z - z, 16.0), temporal, 12.0) + bulge
        fold_surface = smax(fold_surface, -np.maximum(below_tent, y - notch), 16.0)
        hull = smin(smax(upper, self.base_z - z, 6.0), temporal, 10.0) + bulge
        # the skull follows the cerebrum down to the tentorium only in front of the cerebellum
        # (the petrous ridge); behind, it wraps the occipital lobes and the cerebellum together
        skull_hull = smax(hull, -np.maximum(np.maximum(below_tent, y - notch), -52.0 - y), 4.0)
        # atrophy shrinks the brain away from the skull but not from the tentorium (cut after)
        cer = smax(hull + self.shrink, -np.maximum(below_tent, y - notch), 4.0)
        cb_raw = smin(ellipsoid(mirror_x(p), self.cb_c, self.cb_ax), ellipsoid(p, self.vermis_c, self.vermis_ax), 6.0)
        cb = smax(cb_raw + 0.5 * self.shrink, z - (zt - self.tent_gap), 3.0)
        stem, mid_pons = self.brainstem(p)
        inner = smin(smin(skull_hull, smax(cb_raw, z - (zt - self.tent_gap), 3.0), 10.0), stem, 8.0) - self.csf_gap
        tau = self.skull_thickness(p)
        outer = inner - tau
        scalp = self.scalp_mm * (1.0 + 0.2 * self.scalp_field.soa(p))
        face = smin(ellipsoid(p, (0.0, 38.0, -58.0), (56.0, 60.0, 40.0)),
                    ellipsoid(p, (0.0, 90.0, -50.0), (11.0, 14.0, 20.0)), 8.0)
        head = smin(smin(outer - scalp, face, 14.0), ellipsoid(p, (0.0, -22.0, -105.0), (52.0, 56.0, 60.0)), 16.0)
        # the cerebrum, carved by the fissures and the basal cisterns
        sulcal_hull = cer.copy()   # sulci reach a depth below this hull (no fissures, cisterns)
        xf = self.fissure_bend * np.sin(y / 60.0 + self.fissure_phase)
        fissure = np.maximum(np.abs(x - xf) - self.fissure_half, -ellipsoid(p, self.core_c, self.core_ax))
        cer = smax(cer, -fissure, 1.5)
        ax = np.abs(x)
        zs = self.sylvian_z0 - self.sylvian_slope * y + 2.0 * np.sin(y / 8.0 + self.sylvian_phase)
        x_lim = self.insula_x - 0.6 * np.maximum(0.0, y - 15.0)
        slit = np.maximum(np.maximum(np.abs(z - zs) - self.sylvian_half, x_lim - ax), np.abs(y + 0.0) - 38.0)
        cistern = np.maximum(np.maximum(np.abs(ax - self.insula_x - self.sylvian_half) - self.sylvian_half,
                                        np.abs(z - 4.0) - 12.0), np.abs(y + 6.0) - 22.0)
        cer = smax(cer, -smin(slit, cistern, 2.0), 1.5)
        cer = smax(cer, -np.maximum(mid_pons - 3.0, z + 8.0), 2.0)
        # MR-only dural venous sinuses: superior sagittal (midline, under the vault) and transverse
        band = np.abs(inner + 3.0) - 3.0
        sss = smax(smax(ax - 3.5 * self.sinus_vein_width, band, 1.0), (zt + 2.0) - z, 1.0)
        sss = smax(sss, -14.0 - z, 1.0)
        transverse = smax(smax(band, np.abs(z - zt + 1.0) - 3.0 * self.sinus_vein_width, 1.0), y + 62.0, 1.0)
        return {"head": head, "inner_skull": inner, "outer_skull": outer,
                "diploe_in": inner - self.inner_table, "diploe_out": outer + self.outer_table,
                "cerebrum": cer, "fold_surface": fold_surface, "sulcal_hull": sulcal_hull, "cerebellum": cb,
                "brainstem": stem, "veins": smin(sss, transverse, 1.0)}

    def face(self, p: np.ndarray) -> dict:
        """``air`` (sinuses, nasal cavity, mastoid cells), ``eye`` and ``petrous`` fields (mm)."""
        p = np.ascontiguousarray(p.T)
        m = mirror_x(p)
        air = ellipsoid(p, (0.0, 73.0, -6.0), np.array([13.0, 5.0, 10.0]) * max(self.frontal_sinus, 1e-3))
        if self.frontal_sinus < 0.35:  # no frontal sinus in this subject
            air = np.full(p.shape[1], FAR, dtype=p.dtype)
        air = np.minimum(air, ellipsoid(p, (0.0, 14.0, -37.0), np.array([11.0, 10.0, 8.0]) * self.sphenoid))
        air = np.minimum(air, ellipsoid(p, (0.0, 45.0, -33.0), (9.0, 15.0, 8.0)))
        air = np.minimum(air, ellipsoid(m, (26.0, 42.0, -62.0), np.array([12.0, 15.0, 15.0]) * self.maxillary))
        air = np.minimum(air, ellipsoid(p, (0.0, 58.0, -60.0), (6.0, 24.0, 16.0)))
        air = np.minimum(air, ellipsoid(m, (46.0, -30.0, -40.0), np.array([7.0, 9.0, 9.0]) * self.mastoid))
        eye = ellipsoid(m, (32.0, 58.0, -37.0), (11.5, 11.5, 11.5))
        petrous = ellipsoid(m, (31.0, -22.0, -38.0), (7.0, 22.0, 6.0), _rot(40.0))
        return {"air": air, "eye": eye, "petrous": petrous}

    def deep(self, p: np.ndarray) -> dict:
        """Ventricles and deep grey nuclei (signed distances, mm); left and right by mirroring x."""
        v = self.ventricle_scale
        p = np.ascontiguousarray(p.T)
        m = mirror_x(p)
        lat = ellipsoid(m, (1.2 + 3.8 * v, 17.0, 11.0), (3.8 * v, 13.0, 6.5 * v), _rot(-20.0))       # frontal horn
        lat = smin(lat, ellipsoid(m, (2.0 + 3.5 * v, -6.0, 17.0), (3.5 * v, 20.0, 5.5 * v), _rot(-5.0)), 3.0)  # body
        lat = smin(lat, ellipsoid(m, (17.0 + 2.0 * v, -32.0, 10.0), (5.0 * v, 10.0, 7.5 * v), _rot(-30.0)), 3.0)
        lat = smin(lat, ellipsoid(m, (18.0 + v, -46.0, 7.0), (2.5 * v, 10.0, 3.0 * v), _rot(-15.0)), 3.0)
        lat = smin(lat, ellipsoid(m, (29.0, -16.0, -14.0), (2.2 * v, 15.0, 2.6 * v), _rot(15.0)), 3.0)
        third = ellipsoid(p, (0.0, -10.0, 2.0), (0.6 + 1.0 * v, 13.0, 8.0))
        fourth = ellipsoid(p, (0.0, -40.0, -30.0), (5.0 + 1.5 * v, 3.5 + 0.5 * v, 7.0))
        caudate = smin(ellipsoid(m, (11.0 + 2.4 * v, 13.0, 10.0), (5.0, 9.0, 8.5), _rot(-15.0)),
                       ellipsoid(m, (13.0 + 2.4 * v, -6.0, 19.0), (3.0, 13.0, 3.5), _rot(-5.0)), 2.0)
        hippocampus = smin(ellipsoid(m, (27.0, -24.0, -14.0), (6.0, 17.0, 6.5), _rot(25.0)),
                           ellipsoid(m, (22.0, -4.0, -17.0), (7.0, 8.0, 7.0)), 3.0)
        return {"ventricles": smin(lat, third, 2.0), "fourth_ventricle": fourth, "caudate": caudate,
                "putamen": ellipsoid(m, (24.0, 3.0, 1.0), (5.5, 15.0, 9.5), _rot(-8.0)),
                "pallidum": ellipsoid(m, (18.5, -2.0, -1.0), (3.5, 8.0, 5.5), _rot(-8.0)),
                "thalamus": ellipsoid(m, (10.5, -18.0, 5.0), (8.0, 14.0, 8.5), _rot(-10.0)),
                "hippocampus": hippocampus,
                "dentate": ellipsoid(m, (14.0, -58.0, -32.0), (6.0, 8.0, 5.0))}

    # -- cortical folding ---------------------------------------------------------------------------
    def cortex_surface(self, q: np.ndarray, normal: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, ...]:
        """Folding of the cortex for points ``p`` ``(n, 3)`` with pial foot points ``q`` ``(n, 3)``.

        ``normal`` ``(n, 3)`` is the outward unit normal at ``q``. Returns ``(g, grad, depth,
        thickness)``: the folding field (sulci on its zero set: the zero lines of a random field
        on the surface, extruded along the normal and bent with depth by a weaker 3D field), its
        gradient at ``p`` with the normal part of the surface term removed ``(n, 3)`` (1/mm), the
        sulcal depth (mm, 3-25) and the cortical thickness (head-frame mm; 2.1-3.8 mm in the world).
        """
        g, grad = self.fold.value_and_gradient(q)
        grad -= np.sum(grad * normal, axis=1, keepdims=True) * normal
        w, wgrad = self.wiggle.value_and_gradient(p)
        depth = np.clip(self.sulcal_depth * (1.0 + 0.35 * self.depth_field(q)), 3.0, 25.0)
        thick = np.clip(self.thickness_mean + 0.35 * self.thickness_field(q), 2.1, 3.8) / self.scale
        return g + 0.35 * w, grad + 0.35 * wgrad, depth, thick

    def medial_sulci(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Distance (mm) to the medial sulci (cingulate with its marginal ramus, parieto-occipital,
        calcarine): sheets cut perpendicularly into the medial wall, up to ``self.medial_depth``
        deep in their middle and shallower towards their ends."""
        best = np.full(np.shape(x), np.inf, dtype=np.result_type(x))
        ax = np.abs(x)
        z = z + 2.0 * np.sin(y / 6.0 + self.fissure_phase) * np.sin(ax / 5.0 + 1.0)   # undulating sheets
        for a, b in self.medial_segments:
            ab = (b[0] - a[0], b[1] - a[1])
            t = np.clip(((y - a[0]) * ab[0] + (z - a[1]) * ab[1]) / (ab[0] ** 2 + ab[1] ** 2), 0.0, 1.0)
            dy, dz = y - a[0] - t * ab[0], z - a[1] - t * ab[1]
            wall = self.fissure_half + self.medial_depth * (0.25 + 0.75 * np.sin(np.pi * t))
            over = np.maximum(ax - wall, 0.0)
            best = np.minimum(best, dy * dy + dz * dz + over * over)
        return np.sqrt(best)

    def folia(self, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Lobule coordinate of the cerebellum at ``p`` ``(n, 3)``: ``u`` (fissures at integer ``u``)
        and its gradient ``(n, 3)`` (1/mm). ``u`` is the angle about a left-right axis behind the
        fourth ventricle in units of the fissure spacing, slightly perturbed by a random field."""
        dy = -(p[:, 1] - float(self.folia_centre[1]))
        dz = p[:, 2] - float(self.folia_centre[2])
        r2 = np.maximum(dy * dy + dz * dz, 1.0)
        theta = np.arctan2(dz, dy)
        f, gf = self.folia_field.value_and_gradient(p)
        per = 2.0 * math.pi / self.folia_n
        grad = 0.08 * gf
        grad[:, 1] += dz / r2
        grad[:, 2] += dy / r2
        return (theta + 0.08 * f) / per, grad / per

    def folia_depth_of(self, n: np.ndarray) -> np.ndarray:
        """Depth (head mm) of the fissure with index ``n`` (any shape): deep major fissures now and then."""
        major = np.where(hash01(n, self.folia_salt + 1.0) > 0.75, 2.2, 1.0)
        return np.minimum(self.folia_depth * (0.6 + 0.8 * hash01(n, self.folia_salt)) * major, 18.0)

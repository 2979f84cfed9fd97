"""Property-based fuzz of the public API (issue 26): good, odd and wrong arguments alike.

Every generated case must either succeed with finite output or raise ``TypeError``/``ValueError``
(pettk's own errors are subclasses of ``ValueError``); any other exception (``IndexError``,
``RuntimeError``, ``ZeroDivisionError``, ``OverflowError``, numba's errors, ...) or a NaN/Inf in
a result fails the test. Covered: image grids, scanners and sinogram layouts, TOF parameters, the
projector (forward/adjoint, dtypes, shapes, batches, backends, devices, TOF, views), the forward
model and its physics options, scan simulation, MLEM/OSEM/BSREM, PSNR/SSIM/NRMSE and the NIfTI
round trip. The examples are derandomised (the same cases on every run, so CI is reproducible);
together they are more than 1,000 cases on small grids.
"""

from __future__ import annotations

import math
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from pettk import (
    ForwardModel,
    ImageGrid,
    LORList,
    ParallelBeam2D,
    Projector,
    RegularPolygonScanner,
    SinogramLayout,
    SinogramLayout2D,
    TOFParams,
)
from pettk.io import load_nifti, save_nifti
from pettk.metrics import nrmse, psnr, ssim
from pettk.projector import TOFCoverageWarning
from pettk.recon import bsrem, mlem, osem, quadratic, rdp, tv
from pettk.sim import simulate_scan

CLEAR_ERRORS = (TypeError, ValueError)
FUZZ = dict(deadline=None, derandomize=True, database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large])
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])



def mostly(good, bad):
    """``good`` in about 7 of 8 draws, else ``bad``: most cases get far enough to do real work."""
    return st.sampled_from([True] * 7 + [False]).flatmap(lambda ok: good if ok else bad)


def pick(good: list, bad: list):
    return mostly(st.sampled_from(good), st.sampled_from(bad))


# numbers as a user might pass them: ordinary, zero, negative, huge, tiny, NaN, inf, ints, bools,
# numpy scalars, strings and None
special = st.sampled_from([0, 0.0, -1, -1.5, math.nan, math.inf, -math.inf, 1e-300, 1e300, True, None, "2",
                           np.float32(2.5), np.int64(3), 10 ** 30])
number = mostly(st.one_of(st.floats(-50.0, 50.0, allow_nan=False), st.integers(-5, 40)), special)
positive = mostly(st.one_of(st.floats(0.5, 8.0), st.integers(1, 6), st.just(np.float32(2.5))), special)
iterations = st.sampled_from([0, -1, 2.0, 2.5, True, None, "3"])  # 10**30 is valid, just endless
count = mostly(st.one_of(st.integers(1, 5), st.just(np.int64(2))),
               st.sampled_from([0, -1, 2.0, 2.5, True, None, "3", 10 ** 30]))


def finite(value) -> bool:
    """Every number in ``value`` (tensor, array, number, or a tuple/list/dict of them) is finite."""
    if isinstance(value, torch.Tensor):
        return bool(torch.isfinite(value).all()) if value.is_floating_point() else True
    if isinstance(value, np.ndarray):
        return bool(np.isfinite(value).all()) if value.dtype.kind in "fc" else True
    if isinstance(value, (float, int, np.floating, np.integer)):
        return math.isfinite(float(value))
    if isinstance(value, (tuple, list)):
        return all(finite(v) for v in value)
    if isinstance(value, dict):
        return all(finite(v) for v in value.values())
    return True


def outcome(fn, *args, **kwargs):
    """Run ``fn``: a clear error gives ``None``; any other exception propagates (and fails the test)."""
    name = getattr(fn, "__name__", type(fn).__name__)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", TOFCoverageWarning)
            result = fn(*args, **kwargs)
    except CLEAR_ERRORS as err:
        assert str(err), f"{type(err).__name__} without a message"
        event(f"{name}: {type(err).__name__}")  # --hypothesis-show-statistics shows the mix
        return None
    event(f"{name}: ok")
    return result


# -- grids, scanners, layouts, TOF -------------------------------------------------------------------
shapes = mostly(st.lists(st.integers(1, 12), min_size=2, max_size=3),
                st.one_of(st.lists(st.integers(-1, 3), max_size=4),
                          st.sampled_from([(2.0, 3), ("8", 8), (True, 4), (0, 4), (10 ** 12, 10 ** 12), None, 5])))
sizes = st.one_of(positive, st.lists(positive, min_size=2, max_size=3), st.lists(positive, max_size=4))
origins = st.one_of(st.none(), st.lists(number, min_size=2, max_size=3), st.lists(number, max_size=4), number)


@settings(max_examples=180, **FUZZ)
@given(shape=shapes, voxel=sizes, origin=origins)
def test_image_grid(shape, voxel, origin):
    grid = outcome(ImageGrid, shape, voxel, origin)
    if grid is None:
        return
    assert finite(grid.voxel_size_mm) and finite(grid.origin_mm) and finite(grid.affine)
    assert all(isinstance(n, int) and n >= 1 for n in grid.shape)
    centre = np.asarray(grid.origin_mm) + 0.5 * (np.asarray(grid.shape) - 1) * np.asarray(grid.voxel_size_mm)
    assert finite(grid.world_to_index(centre))


@settings(max_examples=150, **FUZZ)
@given(radius=mostly(st.floats(30.0, 120.0), special), n_sides=mostly(st.integers(3, 12), special),
       n_crystals=count, spacing=mostly(st.floats(0.5, 4.0), special),
       rings=mostly(st.lists(st.floats(-20.0, 20.0), min_size=1, max_size=3, unique=True).map(sorted),
                    st.sampled_from([[0.0, 0.0], [1.0, 0.0], [], None, [math.nan]])),
       trim=mostly(st.integers(0, 12), st.sampled_from([-1, 1.5, None, "2", 10 ** 6])),
       mrd=mostly(st.one_of(st.none(), st.integers(0, 3)), st.sampled_from([-1, 1.5, "1"])))
def test_scanner_and_layouts(radius, n_sides, n_crystals, spacing, rings, trim, mrd):
    scanner = outcome(RegularPolygonScanner, radius, n_sides, n_crystals, spacing, rings)
    if scanner is None:
        return
    for build in (lambda: SinogramLayout(scanner, trim, mrd), lambda: SinogramLayout2D(scanner, trim)):
        layout = outcome(build)
        if layout is None:
            continue
        assert all(n >= 1 for n in layout.shape)
        start, end = layout.lor_endpoints()
        assert finite(start) and finite(end) and start.shape[:-1] == tuple(layout.shape)


@settings(max_examples=100, **FUZZ)
@given(n_views=count, n_radial=mostly(st.integers(1, 40), count), spacing=positive,
       half=mostly(st.one_of(st.none(), st.floats(1.0, 500.0)), positive))
def test_parallel_beam(n_views, n_radial, spacing, half):
    beam = outcome(ParallelBeam2D, n_views, n_radial, spacing, half)
    if beam is None:
        return
    start, end = beam.lor_endpoints()
    assert finite(start) and finite(end)


@settings(max_examples=100, **FUZZ)
@given(fwhm_ps=mostly(st.floats(50.0, 900.0), special), fwhm_mm=mostly(st.none(), positive),
       n_bins=count, width=positive, n_sigmas=mostly(st.just(3.0), positive))
def test_tof_params(fwhm_ps, fwhm_mm, n_bins, width, n_sigmas):
    tof = outcome(TOFParams, fwhm_ps=fwhm_ps, fwhm_mm=fwhm_mm, n_bins=n_bins, bin_width_mm=width, n_sigmas=n_sigmas)
    if tof is None:
        return
    assert finite([tof.sigma_mm, tof.fwhm_ps, tof.coverage_mm]) and finite(tof.bin_edges_mm)
    assert tof.bin_centres_mm.shape == (tof.n_bins,)


# -- projector ---------------------------------------------------------------------------------------
GRID2 = ImageGrid((10, 9), 4.0)
BEAM = ParallelBeam2D(7, 15, 4.0)
TINY_SCANNER = RegularPolygonScanner(40.0, 8, 3, 3.5, [-2.0, 2.0])
GRID3 = ImageGrid((8, 8, 3), (4.0, 4.0, 2.0))
LAYOUT3 = SinogramLayout(TINY_SCANNER)
LAYOUT2 = SinogramLayout2D(TINY_SCANNER)
GRID_RING = ImageGrid((8, 8), 4.0)
SETUPS = {"beam": (GRID2, BEAM), "ring2d": (GRID_RING, LAYOUT2), "ring3d": (GRID3, LAYOUT3)}
TOFS = [None, TOFParams(fwhm_mm=20.0, n_bins=3, bin_width_mm=12.0),  # partial coverage (warns)
        TOFParams(fwhm_mm=15.0, n_bins=9, bin_width_mm=10.0)]
DTYPES = [torch.float32, torch.float64, torch.float16, torch.int64, torch.bool, torch.complex64]
BACKENDS = ["auto", "cpu", "reference", "gpu", 3]
VIEWS = [None, slice(0, None, 2), [0, 2], [1, 1], [-1], [99], slice(5, 2), 1.5]


def _array(shape, dtype, kind, seed, as_numpy, device):
    """An input of ``shape`` and ``dtype``; ``kind`` spoils it (NaN, inf, negative) or not."""
    gen = torch.Generator().manual_seed(seed)
    data = torch.rand(shape, generator=gen, dtype=torch.float64) * 4.0
    if kind == "nan" and data.numel():
        data.view(-1)[0] = math.nan
    elif kind == "inf" and data.numel():
        data.view(-1)[-1] = math.inf
    elif kind == "negative":
        data = data - 2.0
    data = data.to(dtype) if dtype != torch.bool else data > 2.0
    return data.numpy() if as_numpy and dtype != torch.complex64 else data.to(device)


shape_changes = st.sampled_from(["exact", "batch", "batch0", "drop", "extra", "transpose"])


def _shaped(core, change):
    core = tuple(core)
    return {"exact": core, "batch": (2,) + core, "batch0": (0,) + core, "drop": core[1:],
            "extra": core + (1,), "transpose": core[::-1]}[change]


@settings(max_examples=220, **FUZZ)
@given(setup=st.sampled_from(sorted(SETUPS)), tof=st.sampled_from(range(len(TOFS))),
       backend=pick(BACKENDS[:3], BACKENDS[3:]), views=pick([0, 0, 1, 2, 3], list(range(4, len(VIEWS)))),
       dtype=pick(DTYPES[:2], DTYPES[2:]), change=pick(["exact", "batch", "batch0"], ["drop", "extra", "transpose"]),
       kind=pick(["ok", "negative"], ["nan", "inf"]), as_numpy=st.booleans(), device=st.sampled_from(DEVICES),
       adjoint=st.booleans(), seed=st.integers(0, 100))
def test_projector(setup, tof, backend, views, dtype, change, kind, as_numpy, device, adjoint, seed):
    grid, geometry = SETUPS[setup]
    P = outcome(Projector, grid, geometry, backend, tof=TOFS[tof], views=VIEWS[views])
    if P is None:
        return
    core = P.shape_out if adjoint else P.shape_in
    data = _array(_shaped(core, change), dtype, kind, seed, as_numpy, device)
    out = outcome(P.adjoint if adjoint else P.forward, data)
    if out is None:
        return
    expected = P.shape_in if adjoint else P.shape_out
    assert tuple(out.shape) == tuple(data.shape[:data.ndim - len(core)]) + tuple(expected)
    assert finite(out)
    assert type(out) is type(data) and out.dtype == data.dtype


@settings(max_examples=60, **FUZZ)
@given(n=st.integers(0, 6), tof_bin=pick(["ok"], [None, "negative", "big", "float"]),
       tof=st.sampled_from(range(1, len(TOFS))), seed=st.integers(0, 100), spoil=pick(["ok"], ["nan", "same"]))
def test_list_mode_projector(n, tof_bin, tof, seed, spoil):
    rng = np.random.default_rng(seed)
    phi = rng.uniform(0, 2 * np.pi, size=(2, n))
    start = np.stack([45 * np.cos(phi[0]), 45 * np.sin(phi[0]), rng.uniform(-3, 3, n)], axis=-1)
    end = np.stack([45 * np.cos(phi[1]), 45 * np.sin(phi[1]), rng.uniform(-3, 3, n)], axis=-1)
    if spoil == "nan" and n:
        start[0, 0] = math.nan
    elif spoil == "same":
        end = start.copy()
    bins = {None: None, "ok": rng.integers(0, 3, n), "negative": -np.ones(n, dtype=int), "big": np.full(n, 50),
            "float": np.full(n, 0.5)}[tof_bin]
    lors = outcome(LORList, start, end, tof_bin=bins)
    if lors is None:
        return
    P = outcome(Projector, GRID3, lors, tof=TOFS[tof])
    if P is None:
        return
    y = outcome(P.forward, rng.random(GRID3.shape))
    assert y is None or (finite(y) and y.shape == (n,))
    x = outcome(P.adjoint, rng.random(P.shape_out))
    assert x is None or finite(x)


# -- forward model and physics -----------------------------------------------------------------------
P_BEAM = Projector(GRID2, BEAM)
with warnings.catch_warnings():
    warnings.simplefilter("ignore", TOFCoverageWarning)  # 3 bins of 12 mm: partial coverage on purpose
    P_BEAM_TOF = Projector(GRID2, BEAM, tof=TOFS[1])
sino_kinds = pick([None, None, "ok", "zero", "tof", "int"], ["negative", "nan", "wrong"])


def _sino(kind, P, seed):
    if kind is None:
        return None
    rng = np.random.default_rng(seed)
    shape = {"wrong": (3, 3), "tof": P.shape_out}.get(kind, P.without_tof().shape_out)
    value = rng.uniform(0.5, 1.5, shape)
    if kind == "zero":
        value[:] = 0.0
    elif kind == "negative":
        value -= 1.0
    elif kind == "nan":
        value[0, 0] = math.nan
    elif kind == "int":
        value = value.astype(np.int64)
    return value


@settings(max_examples=140, **FUZZ)
@given(tof=st.booleans(), psf=mostly(st.one_of(st.none(), st.floats(0.5, 8.0), st.just((4.0, 3.0))),
                                      st.one_of(special, st.sampled_from([(4.0,), [2.0, math.nan]]))),
       norm=sino_kinds, attenuation=sino_kinds, additive=sino_kinds,
       mu=pick([None, None, "ok"], ["negative", "nan", "wrong"]), seed=st.integers(0, 50),
       image=pick(["ok", "zero", "batch", "float32"], ["negative", "nan", "wrong"]), grad=st.booleans())
def test_forward_model(tof, psf, norm, attenuation, additive, mu, seed, image, grad):
    P = P_BEAM_TOF if tof else P_BEAM
    if mu is not None:
        attenuation = None
        mu = {"ok": np.full(GRID2.shape, 0.0096), "negative": -np.ones(GRID2.shape),
              "nan": np.full(GRID2.shape, math.nan),
              "wrong": np.ones((3, 3))}[mu]
    model = outcome(ForwardModel, P, psf=psf, normalisation=_sino(norm, P, seed),
                    attenuation=_sino(attenuation, P, seed),
                    mu=mu, additive=_sino(additive, P, seed + 1))
    if model is None:
        return
    rng = np.random.default_rng(seed)
    shape = {"batch": (2,) + GRID2.shape, "wrong": (4, 4)}.get(image, GRID2.shape)
    x = torch.from_numpy(rng.random(shape) + {"zero": -2.0, "negative": -0.7}.get(image, 0.0)).clamp_min(
        0.0 if image == "zero" else -1.0)
    if image == "nan":
        x[0, 0] = math.nan
    if image == "float32":
        x = x.float()
    x.requires_grad_(grad)
    ybar = outcome(model.forward, x)
    if ybar is None:
        return
    assert finite(ybar) and tuple(ybar.shape[-len(model.shape_out):]) == tuple(model.shape_out)
    if grad:
        ybar.sum().backward()
        assert finite(x.grad)
    assert finite(model.sensitivity(dtype=torch.float64))


# -- simulation and reconstruction ------------------------------------------------------------------
MODEL = ForwardModel(P_BEAM, psf=4.0)
MODEL_TOF = ForwardModel(P_BEAM_TOF)
PHANTOM = np.zeros(GRID2.shape)
PHANTOM[2:8, 2:7] = 1.0


@settings(max_examples=110, **FUZZ)
@given(tof=st.booleans(), counts=mostly(st.one_of(st.floats(1.0, 1e6), st.integers(1, 1000)), special),
       randoms=mostly(st.floats(0.0, 0.45), special), scatter=mostly(st.floats(0.0, 0.45), special),
       seed=mostly(st.one_of(st.integers(0, 10 ** 6), st.none()), st.sampled_from([-1, 1.5, "1", True, 2 ** 70])),
       phantom=pick(["ok", "torch32", "int"], ["zero", "negative", "nan", "wrong"]))
def test_simulate_scan(tof, counts, randoms, scatter, seed, phantom):
    image = {"zero": np.zeros(GRID2.shape), "negative": PHANTOM - 0.5, "wrong": np.ones((4, 4)),
             "torch32": torch.from_numpy(PHANTOM).float(), "int": PHANTOM.astype(np.int64)}.get(phantom, PHANTOM.copy())
    if phantom == "nan":
        image[3, 3] = math.nan
    scan = outcome(simulate_scan, image, MODEL_TOF if tof else MODEL, counts, randoms, scatter, seed=seed)
    if scan is None:
        return
    assert finite([scan.prompts, scan.trues, scan.scatter, scan.randoms, scan.expected, scan.counts_per_unit])
    assert bool((scan.prompts >= 0).all())


MODEL_COUNTS = ForwardModel(P_BEAM, psf=4.0, normalisation=np.full(BEAM.shape, 50.0), additive=np.full(BEAM.shape, 0.2))
Y = torch.poisson(MODEL_COUNTS.forward(torch.from_numpy(PHANTOM)), generator=torch.Generator().manual_seed(0))


@settings(max_examples=170, **FUZZ)
@given(method=st.sampled_from(["mlem", "osem", "bsrem"]), n_iter=mostly(st.integers(1, 3), iterations),
       n_subsets=mostly(st.integers(1, 7), count),
       y=pick(["ok", "ok", "zero", "numpy", "float32", "batch"], ["negative", "nan", "float", "wrong"]),
       x0=pick([None, None, "ok"], ["zero", "negative", "nan", "wrong"]),
       prior=st.sampled_from(["quadratic", "rdp", "tv"]), beta=mostly(st.floats(0.0, 2.0), special),
       mask=pick([None, None, "ok"], ["empty", "wrong"]))
def test_reconstruction(method, n_iter, n_subsets, y, x0, prior, beta, mask):
    data = {"zero": torch.zeros_like(Y), "negative": Y - 5.0, "float": Y + 0.5, "wrong": Y[:3],
            "numpy": Y.numpy().copy(), "float32": Y.float(), "batch": torch.stack([Y, Y])}.get(y, Y.clone())
    if y == "nan":
        data[0, 0] = math.nan
    start = {None: None, "ok": np.ones(GRID2.shape), "zero": np.zeros(GRID2.shape), "negative": -np.ones(GRID2.shape),
             "nan": np.full(GRID2.shape, math.nan), "wrong": np.ones((3, 3))}[x0]
    support = {None: None, "ok": PHANTOM > 0, "empty": np.zeros(GRID2.shape, bool),
               "wrong": np.ones((2, 2), bool)}[mask]
    if method == "mlem":
        out = outcome(mlem, MODEL_COUNTS, data, n_iter, x0=start, mask=support)
    elif method == "osem":
        out = outcome(osem, MODEL_COUNTS, data, n_iter, n_subsets, x0=start, mask=support)
    else:
        penalty = {"quadratic": quadratic, "rdp": rdp, "tv": tv}[prior](GRID2)
        out = outcome(bsrem, MODEL_COUNTS, data, penalty, beta, n_iter, n_subsets, x0=start, mask=support)
    if out is None:
        return
    assert finite(out) and tuple(out.shape[-2:]) == GRID2.shape
    assert bool((torch.as_tensor(out) >= 0).all())


# -- metrics and files -------------------------------------------------------------------------------
@settings(max_examples=160, **FUZZ)
@given(metric=st.sampled_from(["psnr", "ssim", "nrmse"]),
       shape=pick([(9, 9), (8, 8, 8), (7, 12)], [(3, 3), (7,), (), (0, 7)]),
       other=pick(["same-shape", "equal", "constant", "torch", "int"], ["other-shape", "nan", "zero-ref"]),
       data_range=mostly(st.one_of(st.none(), st.floats(0.1, 5.0)), st.one_of(special, st.floats(-1.0, 0.0))),
       normalise=pick([None, "max"], ["min", 1]), norm=pick(["euclidean", "min-max", "mean"], ["l1", None]),
       seed=st.integers(0, 50))
def test_metrics(metric, shape, other, data_range, normalise, norm, seed):
    rng = np.random.default_rng(seed)
    ref = rng.random(shape) + 0.1
    x = {"equal": ref.copy(), "other-shape": rng.random((5, 6)), "constant": np.full(shape, 0.5),
         "torch": torch.from_numpy(rng.random(shape)), "int": (rng.random(shape) * 10).astype(np.int64)}.get(
        other, rng.random(shape))
    if other == "nan" and ref.size:
        ref.reshape(-1)[0] = math.nan
    if other == "zero-ref":
        ref = np.zeros(shape)
    if metric == "psnr":
        value = outcome(psnr, x, ref, data_range, normalise)
    elif metric == "ssim":
        value = outcome(ssim, x, ref, data_range, normalise)
    else:
        value = outcome(nrmse, x, ref, norm)
    if value is None:
        return
    assert isinstance(value, float)
    xa = np.asarray(x, dtype=float)
    identical = np.array_equal(xa, ref) or (normalise == "max" and np.allclose(xa / xa.max(), ref / ref.max()))
    if metric == "psnr" and identical:
        assert value == math.inf  # identical images: the mean squared error is 0
    else:
        assert math.isfinite(value)


@settings(max_examples=120, **FUZZ)
@given(shape=pick([(6, 5), (4, 5, 3), (1, 1, 1)], [(6,), (2, 3, 4, 5), ()]),
       dtype=pick([np.float32, np.float64, np.float16, np.int16, np.uint8, np.int64], [np.bool_, np.complex64]),
       torch_in=st.booleans(), grid_match=mostly(st.just(True), st.just(False)),
       voxel=st.sampled_from([1.0, (2.0, 2.5, 3.0), 0.7]), origin=st.sampled_from([None, (10.0, -20.0, 5.0)]),
       spoil=pick([None], ["nan", "inf"]), suffix=pick([".nii", ".nii.gz"], [".img", ""]),
       ndim=pick([None, 2, 3], [4, 0]), seed=st.integers(0, 50))
def test_nifti_round_trip(shape, dtype, torch_in, grid_match, voxel, origin, spoil, suffix, ndim, seed):
    rng = np.random.default_rng(seed)
    image = np.asarray(rng.random(shape) * 100).astype(dtype)
    if spoil and image.size and image.dtype.kind == "f":
        image.reshape(-1)[0] = math.nan if spoil == "nan" else math.inf
    gshape = shape if grid_match else (3, 3, 3)
    nd = len(gshape)
    grid = outcome(ImageGrid, gshape, voxel if isinstance(voxel, float) else voxel[:nd],
                   None if origin is None else origin[:nd])
    if grid is None:
        return
    data = image
    if torch_in and dtype not in (np.uint8, np.complex64):  # torch has no uint16/uint32; uint8 is fine but kept numpy
        data = torch.from_numpy(image)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"image{suffix}"
        written = outcome(save_nifti, path, data, grid)
        if written is None:
            assert not path.exists() and not any(Path(tmp).iterdir())  # refused before anything was written
            return
        loaded = outcome(load_nifti, written, ndim)
        if loaded is None:
            return
        back, grid_back = loaded
    assert finite(back)
    if ndim == len(shape) or (ndim is None and len(shape) == 3):  # a 2D image is stored as one slice
        assert grid_back.shape == grid.shape  # the header holds the affine in float32:
        np.testing.assert_allclose(grid_back.voxel_size_mm, grid.voxel_size_mm, rtol=1e-6)
        np.testing.assert_allclose(grid_back.origin_mm, grid.origin_mm, rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(back, np.asarray(image, dtype=back.dtype).reshape(back.shape))


def test_there_are_at_least_1000_cases():
    total = sum(f._hypothesis_internal_use_settings.max_examples
                for f in (test_image_grid, test_scanner_and_layouts, test_parallel_beam, test_tof_params,
                          test_projector, test_list_mode_projector, test_forward_model, test_simulate_scan,
                          test_reconstruction, test_metrics, test_nifti_round_trip))
    assert total >= 1000, total



# -- what the fuzz found (each was a raw exception, a non-finite result or a failure after work) -------
def test_fuzz_findings_raise_clear_errors_before_work():
    with pytest.raises(ValueError, match=r"n_bins must be an integer <= 1048576"):  # was numpy's error later
        TOFParams(fwhm_mm=10.0, n_bins=10 ** 30, bin_width_mm=1.0)
    with pytest.raises(ValueError, match=r"n_views \* n_radial must be <= 2147483647"):  # was a MemoryError
        ParallelBeam2D(10 ** 5, 10 ** 5, 1.0)
    with pytest.raises(ValueError, match=r"views=slice\(5, 2, None\) selects none"):  # was a RuntimeError
        Projector(GRID2, BEAM, views=slice(5, 2))
    with pytest.raises(ValueError, match="x and ref are empty"):  # was NaN
        nrmse(np.zeros((0, 7)), np.zeros((0, 7)), "mean")
    with pytest.raises(ValueError, match="ssim compares images"):  # was a ZeroDivisionError
        ssim(np.float64(1.0), np.float64(2.0))
    with pytest.raises(ValueError, match="data_range must be <= 1e150 for SSIM"):  # was an OverflowError
        ssim(np.ones((9, 9)), np.ones((9, 9)), data_range=1e300)
    with pytest.raises(ValueError, match="data_range must be a finite number > 0"):  # was +inf dB
        psnr(np.ones(4), np.zeros(4) + 2.0, data_range=math.inf)
    with pytest.raises(ValueError, match=r"total_counts must be <= 1e\+15"):  # was negative prompts
        simulate_scan(PHANTOM, MODEL, 1e300)
    with pytest.raises(TypeError, match="total_counts must be a positive number"):  # "2" was accepted
        simulate_scan(PHANTOM, MODEL, "2")


def test_fuzz_findings_that_now_work():
    # PSNR with a huge (finite) data range: in logs, no overflow; analytic value 20 log10(R) - 10 log10(MSE)
    assert psnr(np.ones(4), np.zeros(4), data_range=1e300) == pytest.approx(20 * 300 - 10 * math.log10(1.0))
    # a TOF-shaped normalisation with a non-TOF mu-map: the attenuation factors broadcast over the bins
    norm = np.random.default_rng(0).uniform(0.5, 1.5, P_BEAM_TOF.shape_out)
    mu = np.full(GRID2.shape, 0.0096)
    model = ForwardModel(P_BEAM_TOF, normalisation=norm, mu=mu)
    factors = ForwardModel(P_BEAM_TOF, mu=mu).mult
    np.testing.assert_allclose(model.mult.numpy(), norm * factors.numpy()[..., None], rtol=1e-12)

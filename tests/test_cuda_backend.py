"""The CUDA backend (CuPy kernels): launch marshalling, host emulation of the kernels, and GPU runs.

Three layers of checks:

* plain Python (always): the module imports without CuPy, the launch configuration helpers and
  the parameterisation mirror the CPU plan;
* with a C++ compiler (no GPU): the kernel argument tuples built by
  :func:`pettk.backends.cuda.launches` match the kernels' C signatures, and the CUDA sources,
  compiled as host C++ (one thread after another, ``--fmad=false`` semantics) and driven by those
  very launches, agree with the numba backend;
* marked ``gpu`` (skipped without a CUDA device and CuPy): CUDA vs numba agreement, adjointness,
  gradcheck, the EM kernels, DLPack zero copy and non-default streams.
"""

import ctypes
import re
import shutil
import subprocess

import numpy as np
import pettk.kernels as kernels
import pytest
import torch

import pettk
from pettk import backends
from pettk.backends import cuda
from pettk.backends import em_update as em
from pettk.backends.cpu import CPUPlan
from pettk.geometry import LORList, TOFParams

GPU_READY = torch.cuda.is_available() and backends.cuda_available()
requires_gpu = pytest.mark.skipif(not GPU_READY, reason="needs a CUDA device and CuPy")
CXX = shutil.which("g++") or shutil.which("c++")
requires_cxx = pytest.mark.skipif(CXX is None, reason="no C++ compiler")


# ---------------------------------------------------------------------------------------------
# Problems shared by the emulated and the GPU checks
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tof_tiny():
    return TOFParams(fwhm_mm=20.0, n_bins=15, bin_width_mm=9.0)


def _problem(kind, tiny, grid2d, beam2d, tof_tiny):
    """(grid, geometry, tof) of one kind: 2d, 3d, tof, tof2d, lm_tof, lm3d (non-TOF list mode)."""
    rng = np.random.default_rng(7)
    if kind == "2d":
        return grid2d, beam2d, None
    if kind == "3d":
        return tiny.grid, tiny.layout, None
    if kind == "tof":
        return tiny.grid, tiny.layout, tof_tiny
    if kind == "tof2d":
        return grid2d, beam2d, TOFParams(fwhm_mm=25.0, n_bins=21, bin_width_mm=9.0)
    start, end = tiny.layout.lor_endpoints()
    start, end = start.reshape(-1, 3)[::5], end.reshape(-1, 3)[::5]
    if kind == "lm3d":
        return tiny.grid, LORList(start, end), None
    assert kind == "lm_tof"
    return tiny.grid, LORList(start, end, tof_bin=rng.integers(0, 15, size=len(start))), tof_tiny


KINDS = ["2d", "3d", "tof", "tof2d", "lm_tof", "lm3d"]


@pytest.fixture(params=KINDS)
def problem(request, tiny, grid2d, beam2d, tof_tiny):
    return request.param, _problem(request.param, tiny, grid2d, beam2d, tof_tiny)


# ---------------------------------------------------------------------------------------------
# Plain Python: imports, configuration helpers, parameterisation
# ---------------------------------------------------------------------------------------------
def test_module_imports_without_using_cupy():
    assert cuda.name == "cuda"
    assert cuda.supports(torch.device("cuda", 0)) and not cuda.supports(torch.device("cpu"))
    assert backends.cuda_available() == cuda.cupy_available()
    assert set(cuda.SOURCES) <= set(kernels.available())


def test_auto_picks_cuda_for_cuda_tensors_when_cupy_imports(monkeypatch):
    monkeypatch.setattr(backends, "cuda_available", lambda: True)
    assert backends.resolve("auto", torch.device("cuda", 0)) is cuda
    assert backends.resolve("cuda", torch.device("cuda", 0)) is cuda
    assert backends.resolve("auto", torch.device("cpu")).name == "cpu"
    with pytest.raises(ValueError, match="backend 'cuda' cannot run tensors on device cpu"):
        backends.resolve("cuda", torch.device("cpu"))


def test_cuda_tensors_fall_back_to_reference_without_cupy(monkeypatch):
    monkeypatch.setattr(backends, "cuda_available", lambda: False)
    monkeypatch.setattr(backends, "_warned_cuda_fallback", False)
    with pytest.warns(RuntimeWarning, match="CuPy is not importable"):
        assert backends.resolve("auto", torch.device("cuda", 0)).name == "reference"
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once only
        assert backends.resolve("auto", torch.device("cuda", 0)).name == "reference"


def test_plan_and_dlpack_helpers_reject_cpu_data(grid2d, beam2d):
    with pytest.raises(ValueError, match="CUDAPlan needs a CUDA device, got cpu"):
        cuda.CUDAPlan(grid2d, beam2d.lor_tables(), "cpu")
    with pytest.raises(TypeError, match="to_cupy needs a CUDA torch tensor, got a tensor on cpu"):
        cuda.to_cupy(torch.zeros(3))


def test_grid_size():
    assert cuda.grid_size(0, 128) == 0
    assert cuda.grid_size(1, 128) == 1
    assert cuda.grid_size(128, 128) == 1
    assert cuda.grid_size(129, 128) == 2
    with pytest.raises(ValueError, match="more than CUDA's"):
        cuda.grid_size(2**31 * 128, 128)
    with pytest.raises(ValueError, match="n >= 0 and block >= 1"):
        cuda.grid_size(-1, 128)


@pytest.mark.parametrize("n_bins, itemsize", [(1, 4), (15, 8), (96, 4), (97, 4), (48, 8), (200, 8), (1000, 4)])
def test_tof_chunks_cover_every_bin_within_shared_memory(n_bins, itemsize):
    block, chunks = cuda.tof_chunks(n_bins, itemsize)
    assert block in cuda.TOF_BLOCKS
    covered = [b for bin0, n in chunks for b in range(bin0, bin0 + n)]
    assert covered == list(range(n_bins))
    assert all(block * n * itemsize <= cuda.SHARED_MEMORY_LIMIT for _, n in chunks)
    if block * n_bins * itemsize <= cuda.SHARED_MEMORY_LIMIT:
        assert len(chunks) == 1
    if 128 * n_bins * itemsize <= cuda.SHARED_MEMORY_LIMIT:
        assert block == 128  # the largest block that holds a whole row wins


def test_tof_chunks_errors():
    with pytest.raises(ValueError, match="n_bins >= 1"):
        cuda.tof_chunks(0, 4)
    with pytest.raises(ValueError, match="cannot hold one TOF bin per thread"):
        cuda.tof_chunks(5, 8, shared_limit=100)


def test_kernel_geometry_mirrors_the_cpu_plan(problem):
    kind, (grid, geometry, tof) = problem
    tables = geometry.lor_tables()
    geo = cuda.kernel_geometry(grid, tables, tof)
    plan = CPUPlan(grid, tables, tof)
    assert geo.kind == {"lm3d": "3d", "tof2d": "tof"}.get(kind, kind)
    assert geo.n_out == plan.n_out and geo.n_lors == plan.n_lors
    assert geo.shape.dtype == np.int32 and tuple(geo.shape) == plan._kernel_shape
    np.testing.assert_array_equal(geo.origin, plan._origin)
    np.testing.assert_array_equal(geo.voxel_size, plan._vs)
    np.testing.assert_array_equal(geo.trans, plan._trans)
    if geo.axial is not None:
        np.testing.assert_array_equal(geo.axial, plan._axial)
        assert geo.outer == plan._outer
    if tof is not None:
        np.testing.assert_array_equal(geo.tof, plan._tof)  # the same TOF vector, bit for bit
    if kind == "lm_tof":
        np.testing.assert_array_equal(geo.tof_bin, plan._tof_bin)
    for arr in geo.arrays().values():
        assert arr.flags.c_contiguous


def test_launch_errors(tiny):
    geo = cuda.kernel_geometry(tiny.grid, tiny.layout.lor_tables())
    arrays = geo.arrays()
    with pytest.raises(ValueError, match="op must be 'fwd' or 'adj', got 'back'"):
        cuda.launches(geo, "back", None, None, arrays, 4)
    with pytest.raises(TypeError, match="float32 or float64 data, got an item size of 2 bytes"):
        cuda.launches(geo, "fwd", None, None, arrays, 2)


# ---------------------------------------------------------------------------------------------
# The kernels' C signatures (from the preprocessed sources) and a host emulation of the kernels
# ---------------------------------------------------------------------------------------------
_NUMPY_OF_C = {"float": np.float32, "double": np.float64, "int": np.int32, "long long": np.int64,
               "bool": np.bool_}
_CTYPES_OF_C = {"int": ctypes.c_int32, "long long": ctypes.c_int64, "double": ctypes.c_double}


def _entries(source: str) -> dict:
    """``{entry: (param_text, [(is_pointer, c_type, name), ...])}`` of a source's extern "C" kernels."""
    expanded = subprocess.run([CXX, "-E", "-P", "-x", "c++", "-"], input=kernels.source(source),
                              capture_output=True, text=True, check=True).stdout
    found = {}
    for match in re.finditer(r'extern\s+"C"\s+__global__\s+void\s+(\w+)\s*\(([^)]*)\)', expanded):
        params = []
        for part in match.group(2).split(","):
            words = part.replace("*", " * ").replace("__restrict__", " ").replace("const", " ").split()
            pointer = "*" in words
            words = [w for w in words if w != "*"]
            params.append((pointer, " ".join(words[:-1]), words[-1]))
        found[match.group(1)] = (" ".join(match.group(2).split()), params)
    return found


@pytest.fixture(scope="module")
def signatures():
    if CXX is None:
        pytest.skip("no C++ compiler to preprocess the CUDA sources")
    return {src: _entries(src) for src in cuda.SOURCES}


def _check_args(signatures, launch):
    """The launch's argument tuple matches its kernel's C parameters, one by one."""
    entries = signatures[launch.source]
    assert launch.entry in entries, f"{launch.entry} is no entry point of {launch.source}"
    params = entries[launch.entry][1]
    assert len(launch.args) == len(params), (launch.entry, len(launch.args), len(params))
    for (pointer, c_type, pname), arg in zip(params, launch.args):
        if pointer:
            assert isinstance(arg, np.ndarray), (launch.entry, pname, type(arg))
            expected = _NUMPY_OF_C[c_type]
            ok = arg.dtype == expected or (c_type == "bool" and arg.dtype == np.uint8)
            assert ok, (launch.entry, pname, arg.dtype, c_type)
        else:
            assert type(arg) is _NUMPY_OF_C[c_type], (launch.entry, pname, type(arg), c_type)


def test_every_entry_point_is_launched_with_matching_arguments(signatures, problem):
    kind, (grid, geometry, tof) = problem
    geo = cuda.kernel_geometry(grid, geometry.lor_tables(), tof)
    n_img = int(np.prod(geo.shape))
    for dtype in (np.float32, np.float64):
        for op in ("fwd", "adj"):
            src = np.zeros(n_img if op == "fwd" else geo.n_out, dtype)
            dst = np.zeros(geo.n_out if op == "fwd" else n_img, dtype)
            runs = cuda.launches(geo, op, src, dst, geo.arrays(), np.dtype(dtype).itemsize)
            assert runs
            for launch in runs:
                _check_args(signatures, launch)
                assert launch.block * launch.grid >= geo.n_lors
                assert launch.shared_mem <= cuda.SHARED_MEMORY_LIMIT


def test_em_launches_match_their_kernels(signatures):
    for dtype in (np.float32, np.float64):
        a = np.zeros(10, dtype)
        item = a.itemsize
        _check_args(signatures, cuda.em_ratio_launch(a, a, 1e-8, a, 10, item))
        _check_args(signatures, cuda.em_update_launch(a, a, a, np.zeros(10, np.uint8), 0.0, a, 10, item))


def test_all_entry_points_are_reachable(signatures):
    """Every extern "C" kernel of the shipped sources is one that the backend launches."""
    names = {f"joseph{d}_{op}_{s}" for d in ("2d", "3d", "3d_tof", "3d_lm_tof") for op in ("fwd", "adj")
             for s in ("f32", "f64")}
    names |= {f"em_{step}_{s}" for step in ("ratio", "update") for s in ("f32", "f64")}
    assert set(signatures["joseph.cu"]) | set(signatures["em_update.cu"]) == names


_SHIM = r"""
// Host emulation of the CUDA kernels: one thread after another, no FMA contraction.
#include <cmath>
struct PettkDim { unsigned int x, y, z; };
static PettkDim blockIdx = {0, 0, 0}, threadIdx = {0, 0, 0}, blockDim = {1, 1, 1};
#define __global__
#define __device__
#define __shared__
#define __align__(n) __attribute__((aligned(n)))
template <typename T> static inline T __ldg(const T *p) { return *p; }
static inline float atomicAdd(float *a, float v) { float old = *a; *a = old + v; return old; }
static inline double atomicAdd(double *a, double v) { double old = *a; *a = old + v; return old; }
"""


def _emulator_source(signatures) -> str:
    parts = [_SHIM]
    for src in cuda.SOURCES:
        parts.append(kernels.source(src))
    parts.append(f"__attribute__((aligned(16))) unsigned char pettk_tof_rows[{cuda.SHARED_MEMORY_LIMIT}];")
    for src in cuda.SOURCES:
        for entry, (text, params) in signatures[src].items():
            names = ", ".join(p[2] for p in params)
            parts.append(
                f'extern "C" void emu_{entry}(unsigned int emu_grid, unsigned int emu_block, {text}) {{\n'
                f"    blockDim.x = emu_block;\n"
                f"    for (unsigned int b = 0; b < emu_grid; ++b) {{\n"
                f"        blockIdx.x = b;\n"
                f"        for (unsigned int t = 0; t < emu_block; ++t) {{ threadIdx.x = t; {entry}({names}); }}\n"
                f"    }}\n}}")
    return "\n".join(parts)


@pytest.fixture(scope="module")
def emulator(signatures, tmp_path_factory):
    """Run a :class:`cuda.Launch` with numpy arrays on the host-compiled kernels."""
    root = tmp_path_factory.mktemp("cuda_emulator")
    (root / "emu.cpp").write_text(_emulator_source(signatures))
    result = subprocess.run([CXX, "-O2", "-std=c++14", "-ffp-contract=off", "-fno-fast-math", "-shared", "-fPIC",
                             "-Wall", "-Werror", str(root / "emu.cpp"), "-o", str(root / "emu.so")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    lib = ctypes.CDLL(str(root / "emu.so"))

    def run(launch):
        _check_args(signatures, launch)
        assert launch.shared_mem <= cuda.SHARED_MEMORY_LIMIT
        params = signatures[launch.source][launch.entry][1]
        args = [ctypes.c_uint(launch.grid), ctypes.c_uint(launch.block)]
        for (pointer, c_type, _), arg in zip(params, launch.args):
            args.append(ctypes.c_void_p(arg.ctypes.data) if pointer else _CTYPES_OF_C[c_type](arg.item()))
        getattr(lib, f"emu_{launch.entry}")(*args)

    return run


def _emulated_plan(run, grid, tables, tof, shared_limit=cuda.SHARED_MEMORY_LIMIT):
    geo = cuda.kernel_geometry(grid, tables, tof)
    arrays = geo.arrays()
    n_img = int(np.prod(grid.shape))

    def forward(x):
        out = np.full(geo.n_out, np.nan, dtype=x.dtype)  # every value must be written
        for launch in cuda.launches(geo, "fwd", np.ascontiguousarray(x).reshape(-1), out, arrays, x.itemsize,
                                    shared_limit=shared_limit):
            run(launch)
        return out

    def adjoint(y):
        img = np.zeros(n_img, dtype=y.dtype)
        for launch in cuda.launches(geo, "adj", np.ascontiguousarray(y).reshape(-1), img, arrays, y.itemsize,
                                    shared_limit=shared_limit):
            run(launch)
        return img.reshape(grid.shape)

    return forward, adjoint


def _rel(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    scale = np.abs(b).max()
    assert scale > 0
    return float(np.abs(a - b).max() / scale)


@requires_cxx
@pytest.mark.parametrize("dtype, rtol", [(np.float32, 1e-5), (np.float64, 1e-12)])
def test_emulated_kernels_agree_with_numba(emulator, problem, dtype, rtol):
    kind, (grid, geometry, tof) = problem
    tables = geometry.lor_tables()
    cpu = CPUPlan(grid, tables, tof)
    forward, adjoint = _emulated_plan(emulator, grid, tables, tof)
    rng = np.random.default_rng(3)
    x = rng.random(grid.shape).astype(dtype)
    y = rng.random(cpu.n_out).astype(dtype)
    y[rng.random(y.size) < 0.2] = 0  # zero LORs (and, with TOF, zero rows) are skipped
    fx = forward(x)
    assert not np.isnan(fx).any()
    assert _rel(fx, cpu.forward(torch.from_numpy(x)).numpy()) < rtol
    assert _rel(adjoint(y), cpu.adjoint(torch.from_numpy(y)).numpy()) < rtol


@requires_cxx
def test_emulated_float64_geometry_agrees_with_the_cpu(emulator, tiny):
    """The CUDA kernel samples per LOR; the CPU's 3D sinogram path interpolates one axial column per
    voxel plane and transaxial LOR (pettk.backends._joseph_sino), the same samples in another
    order: float64 forward projections agree to rounding."""
    tables = tiny.layout.lor_tables()
    forward, _ = _emulated_plan(emulator, tiny.grid, tables, None)
    x = np.random.default_rng(5).random(tiny.grid.shape)
    assert _rel(forward(x), CPUPlan(tiny.grid, tables).forward(torch.from_numpy(x)).numpy()) < 1e-12


@requires_cxx
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_emulated_tof_kernels_split_into_bin_chunks(emulator, tiny, tof_tiny, dtype):
    """Rows too long for shared memory run as several launches over chunks of bins."""
    tables = tiny.layout.lor_tables()
    item = np.dtype(dtype).itemsize
    limit = 32 * 4 * item  # 4 bins per thread in a 32-thread block: 4 launches for 15 bins
    geo = cuda.kernel_geometry(tiny.grid, tables, tof_tiny)
    assert len(cuda.launches(geo, "fwd", None, None, geo.arrays(), item, shared_limit=limit)) == 4
    forward, adjoint = _emulated_plan(emulator, tiny.grid, tables, tof_tiny, shared_limit=limit)
    cpu = CPUPlan(tiny.grid, tables, tof_tiny)
    rng = np.random.default_rng(4)
    x = rng.random(tiny.grid.shape).astype(dtype)
    y = rng.random(cpu.n_out).astype(dtype)
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    assert _rel(forward(x), cpu.forward(torch.from_numpy(x)).numpy()) < rtol
    assert _rel(adjoint(y), cpu.adjoint(torch.from_numpy(y)).numpy()) < rtol


@requires_cxx
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_emulated_em_kernels_equal_numba(emulator, dtype):
    rng = np.random.default_rng(6)
    n = 1000
    y = rng.poisson(2.0, n).astype(dtype)
    ybar = rng.random(n).astype(dtype)
    ybar[:50] = 0.0  # clamped at eps
    out = np.empty(n, dtype)
    emulator(cuda.em_ratio_launch(y, ybar, em.DEFAULT_EPS, out, n, y.itemsize))
    np.testing.assert_array_equal(out, em.em_ratio(torch.from_numpy(y), torch.from_numpy(ybar)).numpy())

    x, back, sens = (rng.random(n).astype(dtype) for _ in range(3))
    sens[:40] = 0.0
    sens[40:50] = 0.5  # exactly at the floor: excluded
    mask = rng.random(n) > 0.1
    expected = em.em_update(torch.from_numpy(x), torch.from_numpy(back), torch.from_numpy(sens),
                            torch.from_numpy(mask), 0.5).numpy()
    emulator(cuda.em_update_launch(x, back, sens, mask.view(np.uint8), 0.5, x, n, x.itemsize))  # in place
    np.testing.assert_array_equal(x, expected)


# ---------------------------------------------------------------------------------------------
# On a GPU
# ---------------------------------------------------------------------------------------------
@pytest.mark.gpu
@requires_gpu
@pytest.mark.parametrize("kind", ["2d", "3d", "tof", "tof2d", "lm_tof", "lm3d"])
def test_cuda_agrees_with_numba_float32(kind, tiny, grid2d, beam2d, tof_tiny):
    grid, geometry, tof = _problem(kind, tiny, grid2d, beam2d, tof_tiny)
    gpu = pettk.Projector(grid, geometry, tof=tof, backend="cuda")
    cpu = pettk.Projector(grid, geometry, tof=tof, backend="cpu")
    rng = np.random.default_rng(11)
    x = torch.from_numpy(rng.random(grid.shape).astype(np.float32))
    y = torch.from_numpy(rng.random(cpu.shape_out).astype(np.float32))
    fx = gpu.forward(x.cuda())
    bx = gpu.adjoint(y.cuda())
    assert fx.is_cuda and fx.dtype == torch.float32 and bx.dtype == torch.float32
    assert isinstance(gpu._plan(fx.device), cuda.CUDAPlan)
    assert _rel(fx.cpu(), cpu.forward(x)) < 1e-5
    assert _rel(bx.cpu(), cpu.adjoint(y)) < 1e-5


@pytest.mark.gpu
@requires_gpu
def test_auto_backend_uses_cuda_kernels(tiny):
    P = pettk.Projector(tiny.grid, tiny.layout)
    x = torch.rand(2, *tiny.grid.shape, device="cuda")  # a batch
    y = P.forward(x)
    assert y.shape == (2, *P.shape_out) and y.is_cuda
    assert isinstance(P._plan(x.device), cuda.CUDAPlan)
    torch.testing.assert_close(y[1], P.forward(x[1]))


@pytest.mark.gpu
@requires_gpu
@pytest.mark.parametrize("kind", ["2d", "3d", "tof", "lm_tof"])
def test_cuda_adjointness_float64(kind, tiny, grid2d, beam2d, tof_tiny):
    grid, geometry, tof = _problem(kind, tiny, grid2d, beam2d, tof_tiny)
    P = pettk.Projector(grid, geometry, tof=tof, backend="cuda")
    rng = np.random.default_rng(12)
    x = torch.from_numpy(rng.random(grid.shape)).cuda()
    y = torch.from_numpy(rng.random(P.shape_out)).cuda()
    lhs = float((P.forward(x) * y).sum())
    rhs = float((x * P.adjoint(y)).sum())
    assert lhs != 0.0 and abs(lhs - rhs) <= 1e-10 * abs(lhs), (lhs, rhs)


@pytest.mark.gpu
@requires_gpu
@pytest.mark.parametrize("tof", [None, TOFParams(fwhm_mm=12.0, n_bins=9, bin_width_mm=6.0)])
def test_cuda_gradcheck(tof):
    grid = pettk.ImageGrid((9, 8), 2.0)
    P = pettk.Projector(grid, pettk.ParallelBeam2D(5, 11, 1.7, half_length_mm=30.0), tof=tof, backend="cuda")
    x = torch.rand(grid.shape, dtype=torch.float64, device="cuda", requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: P.forward(t), (x,))
    y = torch.rand(P.shape_out, dtype=torch.float64, device="cuda", requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: P.adjoint(t), (y,))


@pytest.mark.gpu
@requires_gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cuda_em_kernels_equal_numba(dtype):
    g = torch.Generator().manual_seed(0)
    n = 4097
    y = torch.poisson(torch.full((n,), 2.0), generator=g).to(dtype)
    ybar = torch.rand(n, generator=g, dtype=dtype)
    ybar[:50] = 0
    ratio = em.em_ratio(y.cuda(), ybar.cuda())
    assert ratio.is_cuda
    torch.testing.assert_close(ratio.cpu(), em.em_ratio(y, ybar), rtol=0, atol=0)

    x, back, sens = (torch.rand(n, generator=g, dtype=dtype) for _ in range(3))
    sens[:40] = 0
    mask = torch.rand(n, generator=g) > 0.1
    expected = em.em_update(x, back, sens, mask, 0.05)
    xc = x.cuda()
    out = em.em_update(xc, back.cuda(), sens.cuda(), mask.cuda(), 0.05, out=xc)
    assert out is xc
    torch.testing.assert_close(xc.cpu(), expected, rtol=0, atol=0)


@pytest.mark.gpu
@requires_gpu
def test_dlpack_exchange_is_zero_copy():
    t = torch.arange(10, dtype=torch.float32, device="cuda")
    a = cuda.to_cupy(t)
    assert a.data.ptr == t.data_ptr()
    back = cuda.to_torch(a)
    assert back.data_ptr() == t.data_ptr()
    a[3] = -1.0  # one buffer: a write through the CuPy view shows in the tensor
    torch.cuda.synchronize()
    assert float(t[3]) == -1.0


@pytest.mark.gpu
@requires_gpu
def test_results_on_a_non_default_stream(tiny, tof_tiny):
    for tof in (None, tof_tiny):
        P = pettk.Projector(tiny.grid, tiny.layout, tof=tof, backend="cuda")
        base = torch.rand(tiny.grid.shape, device="cuda")
        expected_fx = P.forward(2.0 * base)
        expected_bx = P.adjoint(expected_fx)
        torch.cuda.synchronize()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            # the input is made on the side stream right before the projection: only a launch
            # on the side stream is ordered after it
            if hasattr(torch.cuda, "_sleep"):
                torch.cuda._sleep(10_000_000)
            x = 2.0 * base
            fx = P.forward(x)
            bx = P.adjoint(fx)
        side.synchronize()
        torch.testing.assert_close(fx, expected_fx, rtol=1e-6, atol=0)
        torch.testing.assert_close(bx, expected_bx, rtol=1e-5, atol=1e-6 * float(expected_bx.abs().max()))

"""The package ships its CUDA sources as ``pettk.kernels`` and they compile.

Every shipped ``.cu`` file is compiled for sm_80 and sm_90 with ``nvcc -ptx`` (warnings are
errors), with the options the CUDA backend gives NVRTC, and once more with the compare-and-swap
double atomics forced; and, when CuPy imports, with CuPy's NVRTC. Every template instantiation
(``_f32``/``_f64`` entry point) must come out.
"""

import re
import shutil
import subprocess

import pettk.kernels as kernels
import pytest

from pettk.backends.cuda import NVRTC_OPTIONS

ARCHS = ("sm_80", "sm_90")
VARIANTS = {"default": (), "cas-atomics": ("-DPETTK_CAS_ATOMICS",)}
EXPECTED_ENTRIES = {
    "joseph.cu": {f"joseph{kind}_{op}_{suffix}" for kind in ("2d", "3d", "3d_tof", "3d_lm_tof")
                  for op in ("fwd", "adj") for suffix in ("f32", "f64")},
    "em_update.cu": {f"em_{step}_{suffix}" for step in ("ratio", "update") for suffix in ("f32", "f64")},
}


def _ptx_entries(ptx: str) -> set[str]:
    return set(re.findall(r"\.entry\s+(\w+)\s*\(", ptx))


def _check_entries(name: str, ptx: str) -> None:
    entries = _ptx_entries(ptx)
    assert entries, f"{name} has no kernel entry points"
    if name in EXPECTED_ENTRIES:
        assert entries == EXPECTED_ENTRIES[name]


def test_kernels_are_shipped():
    names = kernels.available()
    assert set(EXPECTED_ENTRIES) <= set(names)
    text = kernels.source("joseph.cu")
    assert 'extern "C" __global__' in text
    with pytest.raises(ValueError, match="no CUDA source named 'nope.cu'"):
        kernels.source("nope.cu")


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not installed")
@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("name", kernels.available())
def test_kernels_compile_with_nvcc(name, arch, variant, tmp_path):
    src = tmp_path / name
    src.write_text(kernels.source(name))
    out = tmp_path / "out.ptx"
    cmd = ["nvcc", "-ptx", f"-arch={arch}", "-Werror", "all-warnings", *NVRTC_OPTIONS, *VARIANTS[variant],
           str(src), "-o", str(out)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    ptx = out.read_text()
    _check_entries(name, ptx)
    if name == "joseph.cu":
        # double atomics: native below sm_60 only through the compare-and-swap loop
        cas = "atom.global.cas.b64" in ptx
        assert cas == (variant == "cas-atomics")


@pytest.fixture(scope="module")
def nvrtc():
    """CuPy's NVRTC binding, when CuPy imports and finds an NVRTC library."""
    pytest.importorskip("cupy")
    from cupy.cuda import nvrtc

    try:
        nvrtc.getVersion()
    except Exception as exc:  # the library is looked up at first use; any failure means: none here
        pytest.skip(f"CuPy finds no NVRTC library: {exc}")
    return nvrtc


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("name", kernels.available())
def test_kernels_compile_with_cupy_nvrtc(nvrtc, name, arch):
    # the options CuPy's RawModule passes besides ours
    options = [*NVRTC_OPTIONS, f"-arch=compute_{arch[3:]}", "--device-as-default-execution-space"]
    program = nvrtc.createProgram(kernels.source(name), name, (), ())
    try:
        try:
            nvrtc.compileProgram(program, options)
        except nvrtc.NVRTCError as exc:
            pytest.fail(f"NVRTC rejects {name}: {exc}\n{nvrtc.getProgramLog(program)}")
        ptx = nvrtc.getPTX(program)
    finally:
        nvrtc.destroyProgram(program)
    _check_entries(name, ptx.decode() if isinstance(ptx, bytes) else ptx)

"""The package ships its CUDA sources as ``pettk.kernels`` and they compile."""

import shutil
import subprocess

import pettk.kernels as kernels
import pytest


def test_kernels_are_shipped():
    names = kernels.available()
    assert "joseph.cu" in names
    text = kernels.source("joseph.cu")
    assert 'extern "C" __global__' in text
    with pytest.raises(ValueError, match="no CUDA source named 'nope.cu'"):
        kernels.source("nope.cu")


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not installed")
@pytest.mark.parametrize("name", kernels.available())
def test_kernels_compile_with_nvcc(name, tmp_path):
    src = tmp_path / name
    src.write_text(kernels.source(name))
    result = subprocess.run(["nvcc", "-ptx", "-arch=sm_80", str(src), "-o", str(tmp_path / "out.ptx")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    ptx = (tmp_path / "out.ptx").read_text()
    assert ".entry" in ptx
    if name == "joseph.cu":
        for entry in ("joseph3d_fwd_f32", "joseph3d_adj_f64", "joseph2d_fwd_f32", "joseph2d_adj_f64"):
            assert f".entry {entry}(" in ptx

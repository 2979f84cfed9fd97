"""``python -m pettk`` behaves like the ``pettk`` console script."""

import subprocess
import sys

import pettk


def _run(*args):
    return subprocess.run([sys.executable, "-m", "pettk", *args], capture_output=True, text=True, timeout=300)


def test_python_m_pettk_version():
    out = _run("--version")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"pettk {pettk.__version__}"


def test_python_m_pettk_help_and_errors():
    out = _run()
    assert out.returncode == 2
    assert "usage: pettk" in out.stdout and "recon" in out.stdout
    # a user error is one clean line naming the command, exit status 1, like the console script
    out = _run("recon", "missing.npz", "--output", "x.nii.gz")
    assert out.returncode == 1
    assert out.stderr.strip().startswith("pettk recon:") and "Traceback" not in out.stderr

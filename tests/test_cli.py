"""The pettk command line."""

import shutil
import subprocess
import sys

import matplotlib.image as mpimg
import pytest

import pettk
from pettk.cli import main


def test_version_flag(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"pettk {pettk.__version__}"


@pytest.mark.skipif(shutil.which("pettk") is None, reason="pettk console script not installed")
def test_console_script_version():
    out = subprocess.run(["pettk", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"pettk {pettk.__version__}"


def test_demo_writes_figure(tmp_path, capsys):
    assert main(["demo", "--output", str(tmp_path / "out")]) == 0
    png = tmp_path / "out" / "projector.png"
    image = mpimg.imread(png)
    assert image.ndim == 3 and image.shape[0] > 300 and image.shape[1] > 1000
    # no temporary files are left behind
    assert [p.name for p in png.parent.iterdir()] == ["projector.png"]
    out = capsys.readouterr().out
    assert "wrote" in out and "forward" in out


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "demo" in capsys.readouterr().out


def test_module_entry_point():
    out = subprocess.run([sys.executable, "-m", "pettk.cli", "--version"], capture_output=True, text=True, check=True)
    assert pettk.__version__ in out.stdout

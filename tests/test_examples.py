"""Every gallery example runs in its fast mode (``PETTK_FAST=1``) and writes its figure."""

import os
import subprocess
import sys
from pathlib import Path

import matplotlib.image as mpimg
import pytest

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("plot_*.py"))


@pytest.mark.parametrize("script", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_writes_its_figure(script, tmp_path):
    out = tmp_path / f"{script.stem}.png"
    env = dict(os.environ, PETTK_FAST="1")
    result = subprocess.run([sys.executable, str(script), str(out)], capture_output=True, text=True, timeout=600,
                            env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    image = mpimg.imread(out)
    assert image.ndim == 3 and min(image.shape[:2]) > 200

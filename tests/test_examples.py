"""Every gallery example runs in its fast mode (``PETTK_FAST=1``) and writes its figure."""

import importlib
import os
import re
import subprocess
import sys
from pathlib import Path

import matplotlib.image as mpimg
import pytest

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("plot_*.py"))


def _missing_requirement(script: Path) -> str | None:
    """The first module on the script's ``# gallery-requires: name ...`` line that cannot be imported."""
    match = re.search(r"^# gallery-requires:(.*)$", script.read_text(), re.MULTILINE)
    for name in match.group(1).split() if match else ():
        try:
            importlib.import_module(name)
        except Exception as err:  # ImportError, or a torchvision whose compiled ops cannot load
            return f"{name} ({type(err).__name__}: {err})"
    return None


#: Examples whose fast mode trains exactly a model a session fixture already trains with the
#: example's own code (see conftest.py): the example gets the saved model through its environment
#: variable instead of training it a second time.
SHARED_MODELS = {"plot_ddip": ("ddip_tiny_pretrained", "PETTK_DDIP_MODEL")}


@pytest.mark.parametrize("script", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_writes_its_figure(script, tmp_path, request):
    missing = _missing_requirement(script)
    if missing:
        pytest.skip(f"{script.name} needs the optional {missing}")
    out = tmp_path / f"{script.stem}.png"
    env = dict(os.environ, PETTK_FAST="1")
    if script.stem in SHARED_MODELS:
        fixture, variable = SHARED_MODELS[script.stem]
        env[variable] = str(request.getfixturevalue(fixture)[1])
    result = subprocess.run([sys.executable, str(script), str(out)], capture_output=True, text=True, timeout=600,
                            env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    image = mpimg.imread(out)
    assert image.ndim == 3 and min(image.shape[:2]) > 200

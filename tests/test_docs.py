"""The documentation site builds offline (``make -C docs html``), here in fast mode in a temporary folder.

One build, checked for: the index, the API page of ``pettk.recon.osem``, a gallery page whose
example ran (with its figure) and one that was not run, the Markdown notes, and the warnings. An
extra orphan page holds one broken reference to pettk and two references by alias
(``pettk.TOFParams``, ``pettk.recon.em.osem``) that must resolve: the build must fail with that one
warning and no other, so a docstring that breaks the site cannot pass unnoticed.
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("sphinx")
pytest.importorskip("sphinx_gallery")
pytest.importorskip("myst_parser")

ROOT = Path(__file__).resolve().parents[1]
GENERATED = ("_build", "generated", "auto_examples", "api.rst", "notes.rst", "sg_execution_times.rst")

PROBE = """:orphan:

Reference probe
===============

:class:`pettk.TOFParams` and :func:`pettk.recon.em.osem` resolve; :func:`pettk.recon.no_such_function` does not.
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    src = tmp_path_factory.mktemp("site")
    shutil.copytree(ROOT / "docs", src / "docs", ignore=shutil.ignore_patterns(*GENERATED, "__pycache__"))
    shutil.copytree(ROOT / "examples", src / "examples", ignore=shutil.ignore_patterns("*.png", "__pycache__"))
    (src / "docs" / "probe.rst").write_text(PROBE)
    out = src / "html"
    env = dict(os.environ, PETTK_FAST="1", PETTK_DOCS_EXECUTE="plot_forward_model", NUMBA_NUM_THREADS="1",
               OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    result = subprocess.run([sys.executable, "-m", "sphinx", "-b", "html", "-W", "--keep-going", "-q",
                             str(src / "docs"), str(out)], capture_output=True, text=True, timeout=900, env=env)
    return result, out


def test_only_the_broken_reference_fails_the_build(site):
    result, _ = site
    warnings = [line for line in result.stderr.splitlines() if re.search(r"WARNING|ERROR", line)]
    assert result.returncode != 0, result.stderr[-3000:]
    assert len(warnings) == 1, "\n".join(warnings)[-5000:]
    assert "probe.rst" in warnings[0] and "pettk.recon.no_such_function" in warnings[0]


def test_pages_exist(site):
    _, out = site
    index = (out / "index.html").read_text()
    assert "auto_examples/index.html" in index and "api.html" in index and "bsrem.html" in index
    osem = (out / "generated" / "pettk.recon.osem.html").read_text()
    assert "n_subsets" in osem and "OSEM" in osem
    probe = (out / "probe.html").read_text()
    assert "pettk.geometry.TOFParams.html" in probe and "pettk.recon.osem.html" in probe
    api = (out / "api.html").read_text()
    assert "pettk.recon.osem.html" in api and "pettk.recon.em.osem.html" not in api  # documented once
    ran = (out / "auto_examples" / "plot_forward_model.html").read_text()
    figure = re.search(r'src="\.\./(_images/sphx_glr_plot_forward_model_001\.png)"', ran)
    assert figure and (out / figure.group(1)).stat().st_size > 10_000
    not_run = (out / "auto_examples" / "plot_dream.html").read_text()
    assert "DREAM" in not_run and "sphx_glr_plot_dream_001" not in not_run
    assert "Training-data augmentation" in (out / "augmentation.html").read_text()  # a Markdown note

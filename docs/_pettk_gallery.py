"""sphinx-gallery hooks for pettk's examples (named by string in ``conf.py``, so the build caches).

pettk's examples save their figure to the PNG path given as ``argv[1]`` and close it, so
matplotlib's scraper finds no open figure. :func:`reset_argv` hands each example a path in a
temporary folder; :func:`scrape_saved_figure` moves the PNG found there after a code block to the
gallery's image path and returns the reST that shows it.
"""

import atexit
import shutil
import tempfile
from pathlib import Path

FIGURES = Path(tempfile.mkdtemp(prefix="pettk-docs-figures-"))
atexit.register(shutil.rmtree, FIGURES, ignore_errors=True)


def _figure_path(src_file) -> Path:
    return FIGURES / (Path(src_file).stem + ".png")


def reset_argv(gallery_conf, script_vars):
    """The example's arguments after its name: where to save its figure."""
    out = _figure_path(script_vars["src_file"])
    out.unlink(missing_ok=True)
    return [str(out)]


def scrape_saved_figure(block, block_vars, gallery_conf):
    """reST for the figure the example saved in this block ('' if it saved none)."""
    from sphinx_gallery.scrapers import figure_rst

    saved = _figure_path(block_vars["src_file"])
    if not saved.is_file():
        return ""
    target = next(block_vars["image_path_iterator"])
    shutil.move(str(saved), target)
    return figure_rst([target], gallery_conf["src_dir"])

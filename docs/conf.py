"""Sphinx configuration of pettk's documentation site (``make -C docs html``).

The site has three parts: the pages in ``docs/`` (reStructuredText, and the Markdown notes through
MyST), the gallery of ``examples/plot_*.py`` (sphinx-gallery runs each script and shows the figure
it saves) and the API reference generated from the docstrings (autodoc + autosummary, numpy style
through napoleon). Nothing is downloaded at build time: no intersphinx, no remote images.

Environment
-----------
PETTK_FAST=1
    The examples run in their fast mode (seconds to a minute each instead of minutes).
PETTK_DOCS_EXECUTE
    A regular expression: only the examples whose path matches it run (the others get their page
    with the code but no figure). Default: every example whose ``# gallery-requires:`` modules
    import.
PETTK_DOCS_PLOT_GALLERY=0
    Run no example at all.
"""

import importlib
import os
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))  # _pettk_gallery

from _pettk_api import UNAVAILABLE, home_of, write_api_pages  # noqa: E402

import pettk  # noqa: E402

write_api_pages(HERE / "api.rst")  # generated: the module list follows the package


def _write_notes_page(path: Path) -> None:
    """``notes.rst``: a table of contents of every Markdown note in ``docs/`` (new notes join by themselves)."""
    notes = sorted(p.stem for p in HERE.glob("*.md"))
    path.write_text("Notes\n=====\n\nLonger explanations of how parts of pettk work and were chosen.\n\n"
                    ".. toctree::\n   :maxdepth: 1\n\n" + "".join(f"   {n}\n" for n in notes))


_write_notes_page(HERE / "notes.rst")

project = "pettk"
author = "the pettk developers"
copyright = "the pettk developers"
release = pettk.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "myst_parser",
    "sphinx_gallery.gen_gallery",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build", "generated/*.md", "auto_examples/*.ipynb"]
templates_path = ["_templates"]  # autosummary/class.rst: a class page without inherited-member tables
html_theme = "alabaster"
html_static_path = []
# MathJax is loaded by the reader's browser, not fetched at build time
myst_heading_anchors = 3

autosummary_generate = True
autosummary_imported_members = False
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_inherit_docstrings = False  # torch.nn.Module's docstrings are torch's, not pettk's
autodoc_typehints = "none"  # the numpy docstrings carry the types (with shapes and units)
autodoc_mock_imports = ["cupy", "petsird", "deepinv", "dask", "distributed"]
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = False
napoleon_use_ivar = True  # "Attributes" as fields: a documented property is not described twice
napoleon_use_param = False  # parameter types stay text: "float, optional" is not a class
napoleon_preprocess_types = False
html_title = f"pettk {release}"
# alabaster's navigation sidebar renders the whole toctree on every page: with one page per API
# object that is most of the build time, so the sidebar keeps the local table of contents only
html_sidebars = {"**": ["about.html", "localtoc.html", "relations.html", "searchbox.html"]}
html_theme_options = {"description": "a differentiable PET physics toolkit"}

# Every reference to pettk by its full name (``pettk.…``) must resolve, or the build warns (and
# -W fails it). Not checked: other projects' names (no intersphinx: the build is offline), names
# written relative to the current module, the type text of numpy docstrings ("float, optional"),
# private modules (``pettk._filters``: not documented by design) and modules whose optional
# dependency is missing here.
nitpicky = True
nitpick_ignore_regex = [
    (r"py:.*", r"(?!pettk\.).*"),
    (r"py:.*", r"pettk(\.\w+)*\._.*"),
] + [(r"py:.*", re.escape(name) + r"(\..*)?") for name in UNAVAILABLE]
# a type word such as "shape" in "ndarray, shape (3,)" matching several attributes is not an error
suppress_warnings = ["myst.header", "ref.python"]


# -- gallery -----------------------------------------------------------------------------------
def _requirements_met(script: Path) -> bool:
    """Whether every module on the script's ``# gallery-requires:`` line imports."""
    match = re.search(r"^# gallery-requires:(.*)$", script.read_text(), re.MULTILINE)
    for name in match.group(1).split() if match else ():
        try:
            importlib.import_module(name)
        except Exception:  # ImportError, or a compiled extension that cannot load
            return False
    return True


def _execute_pattern() -> str:
    chosen = os.environ.get("PETTK_DOCS_EXECUTE")
    if chosen:
        return chosen
    runnable = [p.name for p in sorted((ROOT / "examples").glob("plot_*.py")) if _requirements_met(p)]
    return "(" + "|".join(re.escape(name) for name in runnable) + ")$" if runnable else r"^$"


sphinx_gallery_conf = {
    "examples_dirs": "../examples",
    "gallery_dirs": "auto_examples",
    "filename_pattern": _execute_pattern(),
    "image_scrapers": ("_pettk_gallery.scrape_saved_figure",),
    "reset_argv": "_pettk_gallery.reset_argv",
    "download_all_examples": False,
    "remove_config_comments": True,
    "within_subsection_order": "FileNameSortKey",
}
plot_gallery = str(os.environ.get("PETTK_DOCS_PLOT_GALLERY", "1") != "0")
abort_on_example_error = True


def _resolve_alias(app, env, node, contnode):
    """Resolve a reference to a pettk object by any import path to the page it is documented on.

    ``pettk.TOFParams`` is documented as ``pettk.geometry.TOFParams`` and ``pettk.recon.em.osem``
    as ``pettk.recon.osem``; relative names resolve from the module they are written in.
    """
    if node.get("refdomain") != "py":
        return None
    target = node["reftarget"].lstrip("~.")
    home = home_of(target, node.get("py:module"))
    if home is None:
        klass = node.get("py:class")
        if klass and node.get("py:module"):
            home = home_of(f"{klass}.{target}", node.get("py:module"))
    if home is None or home == target:
        return None
    domain = env.domains["py"]
    node = node.deepcopy()
    node["reftarget"] = home
    return domain.resolve_xref(env, node.get("refdoc"), app.builder, node["reftype"], home, node, contnode)


def setup(app):
    app.connect("missing-reference", _resolve_alias)

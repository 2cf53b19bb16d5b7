"""Sphinx configuration: the API reference (autodoc) plus the Markdown chapters (MyST).

Built by ``make docs`` (``sphinx-build -W --keep-going -q -b html docs docs/_build/html``):
warnings are errors. No intersphinx: the build must work offline.
"""

from importlib.metadata import version as _version

project = "pyro-mixup"
author = "pyro-mixup authors"
copyright = "pyro-mixup authors"
release = _version("pyro-mixup")
version = ".".join(release.split(".")[:2])

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.doctest",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]

# --- MyST: the chapters are also read on GitHub, so they stay plain CommonMark + GFM tables;
# $...$ maths, and anchors for the `page.md#heading` links between them.
myst_enable_extensions = ["dollarmath"]
myst_heading_anchors = 3

# --- autodoc: the modules import torch, pyro, jax and numpyro (all installed by `make docs`).
autodoc_default_options = {
    "members": True,
    "member-order": "bysource",
    "show-inheritance": True,
}
autodoc_typehints = "description"

# --- HTML: the built-in theme, no extra package.
html_theme = "alabaster"
html_title = f"pyro-mixup {release}"
html_static_path: list[str] = []
html_theme_options = {
    "description": "Probabilistic mixup as Pyro and NumPyro effect handlers",
    "fixed_sidebar": True,
}

"""Sphinx configuration for kullback's documentation.

Build with ``sphinx-build -W -b html docs docs/_build/html`` (or ``nox -s docs``).  The build
needs no network access.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Document the source tree even when the package is not installed.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import kullback

project = "kullback"
author = "The kullback developers"
copyright = "The kullback developers"
version = release = kullback.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.mathjax",
    "numpydoc",
]

# numpydoc: the class pages list their parameters, not an autosummary of their members.
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False

autodoc_typehints = "none"  # the numpydoc sections state the types
autodoc_member_order = "bysource"

exclude_patterns = ["_build"]
root_doc = "index"
pygments_style = "sphinx"

html_theme = "alabaster"
html_title = f"kullback {release}"
html_theme_options = {
    "description": "Exact, never-negative KL divergences for every array framework",
    "fixed_sidebar": True,
}

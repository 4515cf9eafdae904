"""
Sphinx configuration of agilerpc's documentation site.

The guide is MyST Markdown (``docs/*.md``, ``docs/guide/*.md``), rendered with
furo; the API reference is generated from the docstrings by pydoctor
(``pydoctor.sphinx_ext.build_apidocs``) into ``api/`` of the same site, as
Twisted's is.  Links out to Python's and Twisted's documentation come from
inventories found on this machine, never fetched (see ``_ext/inventories.py``).
"""

from __future__ import annotations

import sys
from pathlib import Path

_docs = Path(__file__).resolve().parent
_root = _docs.parent
sys.path.insert(0, str(_docs / "_ext"))
sys.path.insert(0, str(_root))

import inventories  # noqa: E402
from pygments.lexers.special import TextLexer  # noqa: E402
from sphinx.application import Sphinx  # noqa: E402

from agilerpc import __version__  # noqa: E402

project = "agilerpc"
author = "the agilerpc developers"
copyright = "the agilerpc developers"
version = release = __version__

extensions = [
    "myst_parser",
    "sphinx.ext.intersphinx",
    "sphinx.ext.graphviz",
    "pydoctor.sphinx_ext.build_apidocs",
    "apicoverage",
]

root_doc = "index"
source_suffix = {".md": "markdown"}
exclude_patterns = ["_build", "examples", "PROTOCOL.md", "DEPLOY.md"]

myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 4
# Option names in prose (--keepalive, mypy --strict) stay as typed.
smartquotes = False

html_theme = "furo"
html_title = f"agilerpc {release}"
html_static_path = ["_static"]

graphviz_output_format = "svg"

_python = inventories.python()
_twisted = inventories.twisted(_docs / "_build" / "inventories")

# Sphinx's links out (the guide's {py:class}`~twisted.internet.defer.Deferred`).
intersphinx_mapping = {
    "python": (_python.url, str(_python.path)),
    "twisted": (_twisted.url, str(_twisted.path)),
}
intersphinx_timeout = 1
# Every {py:...} reference must resolve: a typo or a renamed API fails the build.
nitpicky = True

# The API reference: pydoctor reads the epytext docstrings.
pydoctor_url_path = "api/"
pydoctor_args = [
    "--project-name=agilerpc",
    f"--project-version={release}",
    "--docformat=epytext",
    "--privacy=HIDDEN:agilerpc._*",
    "--privacy=HIDDEN:agilerpc.examples",
    # The glob above matches the package's own __version__ too.
    "--privacy=PUBLIC:agilerpc.__version__",
    f"--intersphinx-file={_python.path}::{_python.url}",
    f"--intersphinx-file={_twisted.path}::{_twisted.url}",
    f"--project-base-dir={_root}",
    "--html-output={outdir}/api",
    str(_root / "agilerpc"),
]


def setup(app: Sphinx) -> None:
    # docs/PROTOCOL.md's worked example is a ```session block (tests/protocoldoc.py
    # finds it by that name): shown as plain text.
    app.add_lexer("session", TextLexer)

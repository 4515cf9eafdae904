"""
The documentation's example files, loaded for the tests that run them.

Every example the guide shows is a file under C{docs/examples/}, included in
its page by C{literalinclude}; the tests load it from there by path (it is
not a package) and run it against a real server, so an example that drifts
from the API fails the suite.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

EXAMPLES = Path(__file__).resolve().parent.parent / "docs" / "examples"


def examplePath(name: str) -> Path:
    """
    The path of C{docs/examples/NAME}.
    """
    path = EXAMPLES / name
    if not path.is_file():
        raise FileNotFoundError(f"no example {name!r} in {EXAMPLES}")
    return path


def loadExample(name: str) -> ModuleType:
    """
    Import C{docs/examples/NAME} (a C{.py} file) as a fresh module named
    C{docexample_STEM}, replacing any earlier import of it.
    """
    path = examplePath(name)
    moduleName = "docexample_" + path.stem
    spec = importlib.util.spec_from_file_location(moduleName, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[moduleName] = module
    spec.loader.exec_module(module)
    return module

"""
Check that the API reference pydoctor wrote documents every public name.

The public names are C{agilerpc.__all__} and the C{__all__} of each public
module (L{PUBLIC_MODULES}).  A name counts as documented when pydoctor's
inventory (C{api/objects.inv}) holds it under the module that promises it,
or, for a name the package re-exports from a public module (C{agilerpc}'s
lazy re-exports of C{agilerpc.metrics}), under that module.  Each missing
name is a Sphinx warning, so C{sphinx-build -W} fails.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from sphinx.application import Sphinx
from sphinx.util import logging
from sphinx.util.inventory import InventoryFile

logger = logging.getLogger(__name__)

PACKAGE = "agilerpc"
PUBLIC_MODULES = ("agilerpc", "agilerpc.testing", "agilerpc.tap", "agilerpc.metrics")


def documented(inventory: Path) -> set[str]:
    """
    Every Python name an inventory holds.
    """
    with inventory.open("rb") as f:
        loaded: Any = InventoryFile.load(f, "", lambda base, uri: uri)
    names: set[str] = set()
    # Sphinx 8.2+ returns an _Inventory with .data; older ones a dict.
    data = getattr(loaded, "data", loaded)
    for kind, entries in data.items():
        if kind.startswith("py:"):
            names.update(entries)
    return names


def missing(names: set[str]) -> list[str]:
    """
    The public names missing from C{names}, each as C{module.name}.
    """
    gone = []
    for moduleName in PUBLIC_MODULES:
        module = importlib.import_module(moduleName)
        for name in module.__all__:
            where = {f"{moduleName}.{name}"}
            origin = getattr(getattr(module, name), "__module__", None)
            if isinstance(origin, str) and not any(
                part.startswith("_") for part in origin.split(".")
            ):
                where.add(f"{origin}.{name}")
            if not where & names:
                gone.append(f"{moduleName}.{name}")
    return gone


def check(app: Sphinx, exception: BaseException | None) -> None:
    if exception is not None or app.builder.name != "html":
        return
    inventory = Path(app.outdir) / "api" / "objects.inv"
    if not inventory.exists():
        logger.warning("apicoverage: pydoctor wrote no %s", inventory)
        return
    for name in missing(documented(inventory)):
        logger.warning("apicoverage: the API reference does not document %s", name)


def setup(app: Sphinx) -> dict[str, Any]:
    # After pydoctor's build-finished handler (priority 500) has moved its
    # output into api/.
    app.connect("build-finished", check, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}

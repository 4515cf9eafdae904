"""
The intersphinx inventories of Python and Twisted, from this machine.

The build reaches no website.  Python's inventory is the one Debian's
C{python3-doc} installs; Twisted's is made from the installed Twisted by
pydoctor (C{--make-intersphinx}), once per Twisted version, and links to the
API reference Twisted publishes for that version.
"""

from __future__ import annotations

import glob
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple


class Inventory(NamedTuple):
    path: Path
    url: str


PYTHON_INVENTORIES = "/usr/share/doc/python3*/html/objects.inv"


def python() -> Inventory:
    """
    Python's inventory from C{python3-doc}, linked to docs.python.org for
    the Python running the build.
    """
    found = sorted(glob.glob(PYTHON_INVENTORIES))
    if not found:
        raise SystemExit(
            f"docs: no Python inventory at {PYTHON_INVENTORIES}: "
            "install Debian's python3-doc (apt-get install python3-doc)"
        )
    major, minor = sys.version_info[:2]
    return Inventory(Path(found[-1]), f"https://docs.python.org/{major}.{minor}/")


def twisted(cache: Path) -> Inventory:
    """
    Twisted's inventory, made by pydoctor from the installed package into
    C{cache} unless already there for this version.
    """
    import twisted as package

    version = package.__version__
    url = f"https://docs.twistedmatrix.com/en/twisted-{version}/api/"
    out = cache / f"twisted-{version}"
    inventory = out / "objects.inv"
    if not inventory.exists():
        out.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pydoctor",
                "--make-intersphinx",
                "--quiet",
                "--project-name=Twisted",
                f"--project-version={version}",
                f"--html-output={out}",
                str(Path(package.__file__).parent),
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    return Inventory(inventory, url)

# mypy reports trial's untyped assertions called through self under the test
# class's name, which untyped_calls_exclude = ["twisted"] does not match.
# mypy: disable-error-code="no-untyped-call"
"""
Tests for the C{twistd agilerpc} plugin: that Twisted's plugin system finds
it, in this process and from the installed package alone.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig

from twisted.application.service import IServiceMaker
from twisted.plugin import IPlugin, getPlugins
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

import agilerpc.tap

from .serverprocess import TESTS_DIR

REPO_ROOT = os.path.dirname(TESTS_DIR)

# Run in a clean interpreter: what an installed agilerpc offers to twistd.
_PROBE = """
import importlib.metadata, json, sys
from twisted.application.service import IServiceMaker
from twisted.plugin import getPlugins
import agilerpc
makers = [p for p in getPlugins(IServiceMaker) if p.tapname == "agilerpc"]
files = importlib.metadata.files("agilerpc") or []
print(json.dumps({
    "agilerpc": agilerpc.__file__,
    "makers": [[m.tapname, m.module, m.options.__module__] for m in makers],
    "files": sorted(str(f) for f in files),
}))
"""


def _agilerpcMakers() -> list[IServiceMaker]:
    return [p for p in getPlugins(IServiceMaker) if p.tapname == "agilerpc"]


class PluginDiscoveryTests(SynchronousTestCase):
    """
    C{getPlugins(IServiceMaker)} finds the agilerpc service maker.
    """

    def test_exactlyOnePlugin(self) -> None:
        """
        Exactly one service maker is named C{agilerpc}, even when the source
        tree and the installed package both hold the plugin module.
        """
        self.assertEqual(len(_agilerpcMakers()), 1)

    def test_providesInterfaces(self) -> None:
        """
        The plugin provides L{IPlugin} and L{IServiceMaker}.
        """
        [maker] = _agilerpcMakers()
        self.assertTrue(verifyObject(IPlugin, maker))
        self.assertTrue(verifyObject(IServiceMaker, maker))

    def test_describesItself(self) -> None:
        """
        The plugin's name is C{agilerpc} and its description says what it
        serves.
        """
        [maker] = _agilerpcMakers()
        self.assertEqual(maker.name, "agilerpc")  # type: ignore[attr-defined]
        self.assertIn("msgpack RPC", maker.description)

    def test_optionsAndMakeServiceFromTap(self) -> None:
        """
        The plugin's options and C{makeService} are those of L{agilerpc.tap}.
        """
        [maker] = _agilerpcMakers()
        self.assertIs(maker.options, agilerpc.tap.Options)
        self.assertIs(maker.makeService, agilerpc.tap.makeService)


class InstalledPackageTests(SynchronousTestCase):
    """
    The installed distribution ships the plugin, and nothing that would break
    Twisted's plugin namespace.

    These run a clean interpreter in an empty directory without
    C{PYTHONPATH}, so the source tree cannot help: the package under test
    must be installed (C{pip install .}, or tox).
    """

    probe: dict[str, object]

    def setUp(self) -> None:
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        env = dict(os.environ)
        env.pop("PYTHONPATH", None)
        result = subprocess.run(
            [sys.executable, "-c", _PROBE],
            cwd=directory,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if result.returncode != 0:
            self.fail(
                "the probe failed; is agilerpc installed (pip install .)?\n"
                + result.stdout
                + result.stderr
            )
        self.probe = json.loads(result.stdout)

    def test_importsFromSitePackages(self) -> None:
        """
        Without the source tree, C{agilerpc} is imported from the
        interpreter's site-packages.
        """
        path = str(self.probe["agilerpc"])
        purelib = os.path.realpath(sysconfig.get_paths()["purelib"])
        self.assertTrue(
            os.path.realpath(path).startswith(purelib + os.sep),
            f"{path} is not under {purelib}",
        )
        # Not the source tree's package (tox's site-packages may well live
        # under the repository, in .tox/).
        source = os.path.join(REPO_ROOT, "agilerpc")
        self.assertFalse(os.path.realpath(path).startswith(source + os.sep))

    def test_installedPluginFound(self) -> None:
        """
        Without the source tree, C{getPlugins} finds exactly one C{agilerpc}
        service maker, whose options come from L{agilerpc.tap}.
        """
        self.assertEqual(
            self.probe["makers"], [["agilerpc", "agilerpc.tap", "agilerpc.tap"]]
        )

    def test_recordShipsPluginModule(self) -> None:
        """
        The installed files include C{twisted/plugins/agilerpc_plugin.py}.
        """
        files = self.probe["files"]
        assert isinstance(files, list)
        self.assertIn("twisted/plugins/agilerpc_plugin.py", files)

    def test_recordShipsNoTwistedPackageFiles(self) -> None:
        """
        The installed files include no C{dropin.cache} and no
        C{twisted/__init__.py} or C{twisted/plugins/__init__.py}, which would
        replace Twisted's own.
        """
        files = self.probe["files"]
        assert isinstance(files, list)
        self.assertNotEqual(files, [])
        self.assertEqual([f for f in files if f.endswith("dropin.cache")], [])
        self.assertNotIn("twisted/__init__.py", files)
        self.assertNotIn("twisted/plugins/__init__.py", files)
        self.assertEqual(
            [f for f in files if f.startswith("twisted/") and "/__pycache__/" not in f],
            ["twisted/plugins/agilerpc_plugin.py"],
        )

# mypy: disable-error-code="no-untyped-call"
"""
Tests for the import structure of L{agilerpc}: no module imports another that
imports it back (function-level imports included), C{import agilerpc} loads
no web server, and importing the blocking client installs no reactor.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

import agilerpc
from agilerpc._workers import workerMain

PACKAGE = Path(agilerpc.__file__).parent


def _moduleName(path: Path) -> str:
    parts = ["agilerpc", *path.relative_to(PACKAGE).with_suffix("").parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def importGraph(root: Path = PACKAGE) -> dict[str, set[str]]:
    """
    Every agilerpc module under C{root}, with the agilerpc modules it imports
    anywhere in its source (module level, in functions, under
    C{TYPE_CHECKING}): a name imported from a package counts as its
    submodule when there is one.  A submodule's implicit import of its
    package is left out: every submodule has it.
    """
    modules = {_moduleName(p): p for p in root.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        imported: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parent = package
                    for _ in range(node.level - 1):
                        parent = parent.rpartition(".")[0]
                    base = f"{parent}.{base}" if base else parent
                if node.module:
                    # "from . import x" imports x, not the package's own
                    # __init__ as a dependency.
                    imported.add(base)
                imported.update(f"{base}.{alias.name}" for alias in node.names)
        graph[name] = {m for m in imported if m in modules and m != name}
    return graph


def findCycle(graph: dict[str, set[str]]) -> list[str] | None:
    """
    One cycle of C{graph}, as the modules along it, or L{None}.
    """
    done: set[str] = set()
    path: list[str] = []
    onPath: set[str] = set()

    def visit(module: str) -> list[str] | None:
        path.append(module)
        onPath.add(module)
        for other in sorted(graph[module]):
            if other in onPath:
                return [*path[path.index(other) :], other]
            if other not in done:
                cycle = visit(other)
                if cycle is not None:
                    return cycle
        onPath.discard(path.pop())
        done.add(module)
        return None

    for module in sorted(graph):
        if module not in done:
            cycle = visit(module)
            if cycle is not None:
                return cycle
    return None


def runPython(code: str) -> subprocess.CompletedProcess[str]:
    """
    Run C{code} in a fresh interpreter, bounded in time, where it imports
    the agilerpc these tests import.
    """
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=PACKAGE.parent,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


class ImportCycleTests(SynchronousTestCase):
    """
    The modules of agilerpc import each other without cycles.
    """

    def test_noCycles(self) -> None:
        """
        No agilerpc module imports, at any level, a module that imports it
        back.
        """
        self.assertIsNone(findCycle(importGraph()))

    def test_graphSeesFunctionImports(self) -> None:
        """
        The graph includes imports made inside functions, relative ones
        resolved, so a cycle through one is found.
        """
        graph = importGraph()
        self.assertIn("agilerpc._workers", graph["agilerpc.tap"])
        self.assertIn("agilerpc.tap", graph["agilerpc._workerprocess"])
        self.assertEqual(
            findCycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}), ["a", "b", "c", "a"]
        )
        self.assertIsNone(findCycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}))

    def test_workerProcessImports(self) -> None:
        """
        The worker process's program binds the workers to the twistd plugin
        without running anything when imported.
        """
        import agilerpc._workerprocess as program

        self.assertIs(vars(program)["workerMain"], workerMain)


class LightImportTests(SynchronousTestCase):
    """
    What importing agilerpc loads, each checked in a fresh interpreter.
    """

    def test_noWebServer(self) -> None:
        """
        C{import agilerpc} loads neither C{twisted.web} nor C{twisted.spread}.
        """
        result = runPython(
            "import agilerpc, sys\n"
            "loaded = [m for m in ('twisted.web', 'twisted.spread') if m in sys.modules]\n"
            "print(loaded)\n"
        )
        self.assertEqual((result.stdout.strip(), result.stderr), ("[]", ""))

    def test_noDnsResolver(self) -> None:
        """
        C{import agilerpc} loads neither C{twisted.names} nor the modules
        that resolve names: only a client made with C{service} or
        C{hostname} does.
        """
        result = runPython(
            "import agilerpc, sys\n"
            "print([m for m in sys.modules\n"
            "       if m.startswith('twisted.names') or m == 'agilerpc._resolving'])\n"
        )
        self.assertEqual((result.stdout.strip(), result.stderr), ("[]", ""))

    def test_noOpenTelemetry(self) -> None:
        """
        C{import agilerpc} loads no opentelemetry (it is there: the tests
        install it), nor L{agilerpc._otel}: only tracing, when enabled, does.
        """
        result = runPython(
            "import importlib.util, agilerpc, sys\n"
            "print(importlib.util.find_spec('opentelemetry') is not None,\n"
            "      [m for m in sys.modules\n"
            "       if m.startswith('opentelemetry') or m == 'agilerpc._otel'])\n"
        )
        self.assertEqual((result.stdout.strip(), result.stderr), ("True []", ""))

    def test_metricsLazily(self) -> None:
        """
        The metrics names are still reachable from C{agilerpc}, loading
        L{agilerpc.metrics} when first asked for.
        """
        result = runPython(
            "import agilerpc, agilerpc.metrics as m\n"
            "print(agilerpc.ServerMetrics is m.ServerMetrics,"
            " agilerpc.ClientCollector is m.ClientCollector,"
            " agilerpc.metricsResource is m.metricsResource)\n"
            "try:\n"
            "    agilerpc.nothing\n"
            "except AttributeError as e:\n"
            "    print(e)\n"
        )
        self.assertEqual(
            result.stdout.splitlines(),
            ["True True True", "module 'agilerpc' has no attribute 'nothing'"],
        )

    def test_lazyNamesInProcess(self) -> None:
        """
        In this process too, the metrics names come from L{agilerpc.metrics}
        and an unknown name is an L{AttributeError}.
        """
        import agilerpc.metrics

        self.assertIs(agilerpc.ServerMetrics, agilerpc.metrics.ServerMetrics)
        with self.assertRaises(AttributeError):
            agilerpc.nothing  # noqa: B018

    def test_blockingClientInstallsNoReactor(self) -> None:
        """
        Importing the blocking client installs no reactor.
        """
        result = runPython(
            "from agilerpc import TcpRpcClient\n"
            "import sys\n"
            "print('twisted.internet.reactor' in sys.modules)\n"
        )
        self.assertEqual((result.stdout.strip(), result.stderr), ("False", ""))

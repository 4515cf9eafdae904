"""
The documentation's structure, checked without Sphinx: every public name
has a docstring for the API reference, every page a toctree lists exists,
and every example file under C{docs/examples/} is shown by a page and run
by a test.  (C{tox -e docs} builds the site itself, warnings as errors, and
checks that pydoctor's API reference holds every public name.)
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.interface import InterfaceClass

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
TESTS = ROOT / "tests"

#: The modules whose C{__all__} is the public API.
PUBLIC_MODULES = ("agilerpc", "agilerpc.testing", "agilerpc.tap", "agilerpc.metrics")

_FENCE = re.compile(
    r"^(?P<fence>```+|:::+)\{(?P<directive>[a-z-]+)\}[ \t]*(?P<argument>[^\n]*)\n"
    r"(?P<body>.*?)^(?P=fence)[ \t]*$",
    re.M | re.S,
)


def directives(page: Path, name: str) -> list[tuple[str, str]]:
    """
    The argument and body of every MyST C{{name}} directive on C{page}.
    """
    text = page.read_text(encoding="utf-8")
    return [
        (match["argument"].strip(), match["body"])
        for match in _FENCE.finditer(text)
        if match["directive"] == name
    ]


def pages() -> list[Path]:
    """
    Every Markdown page of the site.
    """
    return sorted(
        path
        for path in DOCS.rglob("*.md")
        if "_build" not in path.relative_to(DOCS).parts
    )


def toctreeEntries(page: Path) -> list[str]:
    """
    The documents listed in C{page}'s toctrees (C{Title <doc>} gives
    C{doc}), without options and external links.
    """
    entries = []
    for _, body in directives(page, "toctree"):
        for line in body.splitlines():
            line = line.strip()
            if not line or line.startswith(":"):
                continue
            titled = re.fullmatch(r".*<(.+)>", line)
            target = titled.group(1) if titled else line
            if "://" not in target:
                entries.append(target)
    return entries


def definesWithDocComment(module: str, name: str) -> bool | None:
    """
    Whether the module assignment that defines C{name} (followed through
    C{from .x import name}) carries a documentation comment (C{#:} lines
    just above it) or an attribute docstring (a string just below it);
    C{None} if no assignment is found.
    """
    source = inspect.getsource(importlib.import_module(module))
    tree = ast.parse(source)
    lines = source.splitlines()
    for index, node in enumerate(tree.body):
        if isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == name for t in targets):
                above = lines[node.lineno - 2].strip() if node.lineno > 1 else ""
                following = tree.body[index + 1] if index + 1 < len(tree.body) else None
                below = (
                    isinstance(following, ast.Expr)
                    and isinstance(following.value, ast.Constant)
                    and isinstance(following.value.value, str)
                )
                return above.startswith("#:") or below
        if (
            isinstance(node, ast.ImportFrom)
            and node.level == 1
            and any((alias.asname or alias.name) == name for alias in node.names)
        ):
            package = module if module == "agilerpc" else module.rsplit(".", 1)[0]
            return definesWithDocComment(f"{package}.{node.module}", name)
    return None


class DocstringTests(SynchronousTestCase):
    """
    What the API reference is generated from.
    """

    def test_everyPublicNameHasADocstring(self) -> None:
        """
        Every class, interface and function a public module's C{__all__}
        names has a docstring of its own, and every constant a
        documentation comment.
        """
        undocumented = []
        for moduleName in PUBLIC_MODULES:
            module = importlib.import_module(moduleName)
            self.assertTrue(inspect.getdoc(module), moduleName)
            for name in module.__all__:
                value = getattr(module, name)
                if (
                    inspect.isclass(value)
                    or inspect.isroutine(value)
                    or isinstance(value, InterfaceClass)
                ):
                    documented = bool((value.__doc__ or "").strip())
                else:
                    documented = bool(definesWithDocComment(moduleName, name))
                if not documented:
                    undocumented.append(f"{moduleName}.{name}")
        self.assertEqual(undocumented, [])

    def test_docCommentFoundThroughImports(self) -> None:
        """
        The check follows a re-export to the module that defines the name,
        and tells a documented constant from an undocumented one.
        """
        self.assertTrue(definesWithDocComment("agilerpc", "__version__"))
        self.assertTrue(definesWithDocComment("agilerpc.metrics", "ABORT_REASONS"))
        self.assertFalse(definesWithDocComment("agilerpc.metrics", "OK"))
        self.assertIsNone(definesWithDocComment("agilerpc.metrics", "NoSuchName"))


class SiteStructureTests(SynchronousTestCase):
    """
    The pages of C{docs/} and what they include.
    """

    def test_toctreeEntriesExist(self) -> None:
        """
        Every document a toctree lists is a page under C{docs/}.
        """
        missing = []
        for page in pages():
            for entry in toctreeEntries(page):
                if not (page.parent / f"{entry}.md").is_file():
                    missing.append(f"{page.relative_to(DOCS)}: {entry}")
        self.assertEqual(missing, [])

    def test_frontPageListsTheGuide(self) -> None:
        """
        The front page's toctrees list the guide pages and the reference
        pages, the API reference among them.
        """
        entries = toctreeEntries(DOCS / "index.md")
        self.assertIn("api/index", entries)
        for page in sorted((DOCS / "guide").glob("*.md")):
            self.assertIn(f"guide/{page.stem}", entries)

    def test_examplesShownAndRun(self) -> None:
        """
        Every Python example under C{docs/examples/} is shown by some page
        (C{literalinclude}) and named by some test (which loads or serves
        it), so an example a reader sees is one the suite runs.
        """
        examples = sorted((DOCS / "examples").glob("*.py"))
        included = set()
        for page in pages():
            for argument, _ in directives(page, "literalinclude"):
                included.add((page.parent / argument).resolve())
        tests = "\n".join(
            path.read_text(encoding="utf-8") for path in sorted(TESTS.glob("*.py"))
        )
        notShown = [p.name for p in examples if p.resolve() not in included]
        notRun = [
            p.name
            for p in examples
            if not re.search(rf"\b{re.escape(p.stem)}\b", tests)
        ]
        self.assertEqual((notShown, notRun), ([], []))

    def test_protocolPageRendersTheSpecification(self) -> None:
        """
        The protocol page includes C{docs/PROTOCOL.md}, the one source of
        the protocol's text.
        """
        arguments = [a for a, _ in directives(DOCS / "protocol.md", "include")]
        self.assertEqual(arguments, ["PROTOCOL.md"])


class DirectiveParsingTests(SynchronousTestCase):
    """
    The small MyST reader the checks above use.
    """

    def test_toctreeEntries(self) -> None:
        """
        Titled entries give their target; options, blank lines and links to
        other sites are not documents.
        """
        page = Path(self.mktemp())
        page.write_text(
            "# Title\n\n```{toctree}\n:maxdepth: 1\n\nguide/a\nThe API <api/index>\n"
            "Elsewhere <https://example.com/>\n```\n",
            encoding="utf-8",
        )
        self.assertEqual(toctreeEntries(page), ["guide/a", "api/index"])

    def test_colonFence(self) -> None:
        """
        A directive may be fenced with colons, as C{colon_fence} allows.
        """
        page = Path(self.mktemp())
        page.write_text(
            ":::{literalinclude} ../examples/x.py\n:language: python\n:::\n",
            encoding="utf-8",
        )
        self.assertEqual(
            directives(page, "literalinclude"),
            [("../examples/x.py", ":language: python\n")],
        )

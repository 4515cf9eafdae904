"""
README.md's code runs as written: its test command is the one C{.ci/run}
runs, its Python examples run against a real C{twistd agilerpc} serving its
handler modules, and the documentation site's front page shows the same
text.

A Python block whose first line is C{# NAME.py} is a module of handlers;
every other Python block is a script, run against a server that serves
every such module on a free port (its C{9988} replaced by that port), and
whose output must be what the comments of its C{print} lines say.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from . import serverprocess
from .serverprocess import ServerProcess

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"

#: How long a README script may take, in seconds.
BOUND = 60

_BLOCK = re.compile(r"^```(?P<language>[a-z]*)\n(?P<code>.*?)^```$", re.M | re.S)
_MODULE = re.compile(r"# (?P<name>[A-Za-z_][A-Za-z0-9_]*)\.py\n")
_PRINT = re.compile(r"^\s*print\(.*\)\s*#\s*(?P<expected>.+?)\s*$")


def codeBlocks(text: str, language: str) -> list[str]:
    """
    The code of every fenced block of C{language} in C{text}.
    """
    return [
        match["code"]
        for match in _BLOCK.finditer(text)
        if match["language"] == language
    ]


def modulesAndScripts(text: str) -> tuple[dict[str, str], list[str]]:
    """
    The Python blocks of C{text}: the modules by name, and the scripts.
    """
    modules: dict[str, str] = {}
    scripts: list[str] = []
    for code in codeBlocks(text, "python"):
        named = _MODULE.match(code)
        if named:
            modules[named["name"]] = code
        else:
            scripts.append(code)
    return modules, scripts


def expectedOutput(script: str) -> list[str]:
    """
    What C{script} prints: the comment of each of its C{print} lines.

    @raise ValueError: for a C{print} line without that comment.
    """
    expected = []
    for line in script.splitlines():
        if "print(" in line:
            match = _PRINT.match(line)
            if match is None:
                raise ValueError(f"a print without its output as a comment: {line!r}")
            expected.append(match["expected"])
    return expected


class ReadmeParsingTests(SynchronousTestCase):
    """
    How the README's blocks are read.
    """

    def test_modulesAndScripts(self) -> None:
        """
        A block starting with C{# NAME.py} is a module; other Python blocks
        are scripts; other languages are neither.
        """
        text = (
            "```python\n# greet.py\nx = 1\n```\n\n```sh\nls\n```\n\n"
            "```python\nprint(1)  # 1\n```\n"
        )
        self.assertEqual(
            modulesAndScripts(text),
            ({"greet": "# greet.py\nx = 1\n"}, ["print(1)  # 1\n"]),
        )

    def test_expectedOutput(self) -> None:
        """
        Each C{print} line says what it prints; one that does not is an
        error.
        """
        self.assertEqual(
            expectedOutput('x = 1\nprint(await f("a"))  # hello a\nprint(x)  # 1\n'),
            ["hello a", "1"],
        )
        self.assertRaises(ValueError, expectedOutput, "print(x)\n")


class ReadmeTests(SynchronousTestCase):
    """
    README.md itself.
    """

    def setUp(self) -> None:
        self.readme = README.read_text(encoding="utf-8")

    def test_testCommandIsWhatCIRuns(self) -> None:
        """
        The command C{.ci/run} runs as the README's test command is in the
        README, character for character.
        """
        ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
        marker = ci.index("# The README's test command, verbatim:")
        command = ci[marker + 1].split(" 2>&1")[0]
        self.assertIn(command + "\n", codeBlocks(self.readme, "sh"))

    def test_serverCommand(self) -> None:
        """
        The first command serves the example handlers on port 9988.
        """
        self.assertIn(
            "python3 -m venv .venv && .venv/bin/pip install . && .venv/bin/twistd"
            " -n agilerpc --port 9988 --keepalive 75 --module agilerpc.examples.hello\n",
            codeBlocks(self.readme, "sh"),
        )

    def test_relativeLinksExist(self) -> None:
        """
        Every relative link points to a file of the repository, so that the
        README's links work on a code host.
        """
        missing = []
        for target in re.findall(r"\]\(([^)\s]+)\)", self.readme):
            if "://" in target or target.startswith("#"):
                continue
            if not (ROOT / target.split("#")[0]).exists():
                missing.append(target)
        self.assertEqual(missing, [])

    def test_servedModulesAreShown(self) -> None:
        """
        Every C{--module} a command serves is the example package's or a
        module block of the README.
        """
        modules, _ = modulesAndScripts(self.readme)
        served = set()
        for block in codeBlocks(self.readme, "sh"):
            served.update(re.findall(r"--module (\S+)", block))
        self.assertEqual(served - set(modules), {"agilerpc.examples.hello"})

    def test_frontPageShowsTheSameText(self) -> None:
        """
        The site's front page includes the README's marked sections, and
        each marker is in the README.
        """
        index = (ROOT / "docs" / "index.md").read_text(encoding="utf-8")
        markers = re.findall(
            r"^```\{include\} \.\./README\.md\n:start-after: (.+)\n:end-before: (.+)\n",
            index,
            re.M,
        )
        self.assertTrue(markers)
        for start, end in markers:
            self.assertIn(start, self.readme)
            self.assertIn(end, self.readme)
            self.assertLess(self.readme.index(start), self.readme.index(end))


class ReadmeExamplesTests(SynchronousTestCase):
    """
    The README's examples, run.
    """

    def test_examplesRun(self) -> None:
        """
        Each script prints what its comments say, against a real server
        that serves every module block.
        """
        modules, scripts = modulesAndScripts(README.read_text(encoding="utf-8"))
        self.assertTrue(modules)
        self.assertTrue(scripts)
        directory = Path(self.mktemp())
        directory.mkdir()
        for name, code in modules.items():
            (directory / f"{name}.py").write_text(code, encoding="utf-8")

        original = serverprocess.serverEnvironment

        def environment(ledger: str | None = None) -> dict[str, str]:
            env = original(ledger)
            env["PYTHONPATH"] = str(directory.resolve())
            return env

        self.patch(serverprocess, "serverEnvironment", environment)
        first, *others = sorted(modules)
        server = ServerProcess.start(
            self, *[arg for name in others for arg in ("--module", name)], module=first
        )

        for script in scripts:
            self.assertIn("9988", script)
            env = dict(os.environ)
            env.pop("PYTHONPATH", None)
            done = subprocess.run(
                [sys.executable, "-c", script.replace("9988", str(server.port))],
                capture_output=True,
                text=True,
                timeout=BOUND,
                stdin=subprocess.DEVNULL,
                env=env,
            )
            self.assertEqual(
                (done.returncode, done.stdout.splitlines()),
                (0, expectedOutput(script)),
                done.stderr,
            )

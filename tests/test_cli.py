"""
Tests for the C{agilerpc} command line (L{agilerpc._cli}).

L{main} runs in-process against the scripted fake servers of
L{tests.blockinghelpers} (the CLI's L{TcpRpcClient} is replaced by one that
connects to them), or against a real refused port; one test runs
C{python -m agilerpc} against a real C{twistd agilerpc} subprocess.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import socket
import subprocess
import sys
from importlib import metadata
from typing import Any

from twisted.trial.unittest import SkipTest, SynchronousTestCase

import agilerpc
from agilerpc import _cli
from tests.blockinghelpers import WAIT, FakeClient, FakeConnection, FakeServer, Script
from tests.serverprocess import ServerProcess

DESCRIBE = {
    "add": {"signature": "(a, b)", "doc": "Add.\n\nReally."},
    "system.listMethods": {"signature": "() -> 'list[str]'", "doc": ""},
}


class CLIHarness:
    """
    Mixin: run L{_cli.main} with captured output, its clients connected to
    a L{FakeServer}.
    """

    def runCLI(self: Any, *argv: str) -> tuple[int, str, str]:
        """
        Run C{agilerpc argv}; its exit status, stdout and stderr.
        """
        stdout, stderr = io.StringIO(), io.StringIO()
        self.patch(sys, "stdout", stdout)
        self.patch(sys, "stderr", stderr)
        status = _cli.main(list(argv))
        return status, stdout.getvalue(), stderr.getvalue()

    def fakeServer(
        self: Any, *scripts: Script
    ) -> tuple[FakeServer, list[dict[str, Any]]]:
        """
        Make the CLI's clients connect to a L{FakeServer} playing
        C{scripts}; the server, and the arguments each client was made with.
        """
        server = FakeServer(self, *scripts)
        made: list[dict[str, Any]] = []

        def makeClient(
            host: str, port: int, timeout: float | None, connectRetry: float | None
        ) -> FakeClient:
            made.append(
                {"host": host, "port": port, "timeout": timeout, "retry": connectRetry}
            )
            return FakeClient(server, timeout, connectRetry)

        self.patch(_cli, "TcpRpcClient", makeClient)
        return server, made


def answer(result: Any) -> Script:
    """
    A script that says hello and answers one request with C{result}.
    """

    def script(c: FakeConnection) -> None:
        c.hello()
        c.respond(c.receiveRequest()[1], result)
        c.readToEnd()

    return script


class CallCommandTests(CLIHarness, SynchronousTestCase):
    """
    C{agilerpc call}.
    """

    def test_callPrintsJSON(self) -> None:
        """
        C{call} sends METHOD with each ARG parsed as JSON (or taken as a
        string), prints the result as one line of JSON and exits 0.
        """
        server, made = self.fakeServer(answer({"greeting": "hello zhangsan", "n": [1]}))
        status, out, err = self.runCLI(
            "call",
            "127.0.0.1:9988",
            "sayHello",
            "zhangsan",
            "1",
            '"2"',
            "[1, null]",
            "{",
        )
        self.assertEqual((status, err), (0, ""))
        self.assertEqual(out, '{"greeting": "hello zhangsan", "n": [1]}\n')
        server.join()
        self.assertEqual(
            server.connections[0].received,
            [[0, 0, "sayHello", ["zhangsan", 1, "2", [1, None], "{"]]],
        )
        self.assertEqual(
            made, [{"host": "127.0.0.1", "port": 9988, "timeout": 10.0, "retry": 0}]
        )

    def test_kwargsAndTimeout(self) -> None:
        """
        C{--kwarg NAME=VALUE} adds keyword arguments (VALUE parsed like an
        ARG); C{--timeout} sets the client's timeout, 0 meaning none.
        """
        server, made = self.fakeServer(answer(3))
        status, out, _ = self.runCLI(
            "call",
            "--timeout",
            "0",
            "--kwarg",
            "b=2",
            "--kwarg",
            "c=x",
            "[::1]:1",
            "add",
            "1",
        )
        self.assertEqual((status, out), (0, "3\n"))
        server.join()
        self.assertEqual(
            server.connections[0].received, [[0, 0, "add", [1], {"b": 2, "c": "x"}]]
        )
        self.assertEqual(made[0]["host"], "::1")
        self.assertIsNone(made[0]["timeout"])

    def test_bytesResult(self) -> None:
        """
        Bytes in the result print as C{{"$bytes": base64}}; non-ASCII text
        prints as itself.
        """
        self.fakeServer(answer([b"\x00\xff", "caf\xe9"]))
        status, out, _ = self.runCLI("call", "127.0.0.1:1", "echo", "x")
        self.assertEqual((status, out), (0, '[{"$bytes": "AP8="}, "caf\xe9"]\n'))

    def test_remoteError(self) -> None:
        """
        A remote error prints its type and message on one line of stderr,
        nothing on stdout, and exits 1.
        """

        def script(c: FakeConnection) -> None:
            c.hello()
            r = c.receiveRequest()
            error = {"type": "MethodNotFound", "message": "no method named 'x'"}
            c.send([1, r[1], error, None])
            c.readToEnd()

        self.fakeServer(script)
        status, out, err = self.runCLI("call", "127.0.0.1:1", "x")
        self.assertEqual(
            (status, out, err),
            (1, "", "agilerpc: MethodNotFound: no method named 'x'\n"),
        )

    def test_multiLineErrorOnOneLine(self) -> None:
        """
        A remote error message with newlines is printed on one line.
        """

        def script(c: FakeConnection) -> None:
            c.hello()
            r = c.receiveRequest()
            c.send([1, r[1], {"type": "ValueError", "message": "a\nb"}, None])
            c.readToEnd()

        self.fakeServer(script)
        status, _, err = self.runCLI("call", "127.0.0.1:1", "fail")
        self.assertEqual((status, err), (1, "agilerpc: ValueError: a b\n"))

    def test_refused(self) -> None:
        """
        A refused connection prints one line and exits 3, at once.
        """
        # A bound port that does not listen refuses connections.
        sock = socket.socket()
        self.addCleanup(sock.close)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        status, out, err = self.runCLI("call", f"127.0.0.1:{port}", "sayHello", "x")
        self.assertEqual(
            (status, out, err),
            (
                3,
                "",
                f"agilerpc: cannot connect to 127.0.0.1:{port}: Connection refused\n",
            ),
        )

    def test_timeout(self) -> None:
        """
        A call that takes longer than C{--timeout} prints one line and exits
        4.
        """

        def script(c: FakeConnection) -> None:
            c.hello()
            c.readToEnd()

        self.fakeServer(script)
        status, out, err = self.runCLI(
            "call", "--timeout", "0.2", "127.0.0.1:1", "sleep", "9"
        )
        self.assertEqual(
            (status, out, err),
            (
                4,
                "",
                "agilerpc: timed out: sleep() on fake.invalid:9988 timed out after "
                "0.2 s; it may or may not have run\n",
            ),
        )

    def test_connectionLost(self) -> None:
        """
        The connection lost during the call prints one line and exits 5.
        """

        def script(c: FakeConnection) -> None:
            c.hello()
            c.receiveRequest()

        self.fakeServer(script)
        status, out, err = self.runCLI("call", "127.0.0.1:1", "incr", "t")
        self.assertEqual((status, out), (5, ""))
        self.assertEqual(err.count("\n"), 1)
        self.assertTrue(err.startswith("agilerpc: "), err)
        self.assertIn("may or may not have run", err)

    def test_goawayWithNegativeLastMsgid(self) -> None:
        """
        A goaway whose last_msgid is negative proves nothing: the call is
        reported lost (exit 5), never sent a second time.
        """

        def script(c: FakeConnection) -> None:
            c.hello()
            c.receiveRequest()
            c.goaway(-1, "idle")
            c.readToEnd()

        server, _ = self.fakeServer(script, script)
        status, out, err = self.runCLI("call", "127.0.0.1:1", "incr", "t")
        self.assertEqual((status, out), (5, ""))
        self.assertIn("invalid last msgid -1", err)
        server.join()
        self.assertEqual(server.attempts, 1)

    def test_serverBusy(self) -> None:
        """
        A server that sends a ServerBusy goaway instead of its hello cannot
        be connected to (exit 3); nothing was sent.
        """

        def script(c: FakeConnection) -> None:
            c.goaway(None, "ServerBusy")
            c.readToEnd()

        server, _ = self.fakeServer(script)
        status, out, err = self.runCLI("call", "127.0.0.1:1", "incr", "t")
        self.assertEqual((status, out), (3, ""))
        self.assertIn("ServerBusy", err)
        server.join()
        self.assertEqual(server.connections[0].received, [])

    def test_unencodableArgument(self) -> None:
        """
        An ARG msgpack cannot encode (an integer beyond 64 bits) is a usage
        error; nothing is sent.
        """

        def script(c: FakeConnection) -> None:
            c.hello()
            c.readToEnd()

        server, _ = self.fakeServer(script)
        status, out, err = self.runCLI("call", "127.0.0.1:1", "echo", str(2**64))
        self.assertEqual((status, out), (2, ""))
        self.assertTrue(err.startswith("agilerpc: cannot encode the arguments: "), err)
        server.join()
        self.assertEqual(server.connections[0].received, [])

    def test_badAddress(self) -> None:
        """
        An address that is not HOST:PORT is a usage error (exit 2) naming
        it; nothing connects.
        """
        _, made = self.fakeServer()
        for address in [
            "127.0.0.1",
            "127.0.0.1:",
            ":9988",
            "host:port",
            "h:0",
            "h:65536",
            "::1:80",
        ]:
            status, out, err = self.runCLI("call", address, "sayHello")
            self.assertEqual((status, out), (2, ""), address)
            self.assertIn(
                f"error: argument HOST:PORT: expected HOST:PORT, e.g. 127.0.0.1:9988, "
                f"not {address!r}",
                err,
            )
        self.assertEqual(made, [])

    def test_metadata(self) -> None:
        """
        C{--metadata KEY=VALUE} (repeatable) sends metadata with the call,
        as strings; with C{--timeout} the call carries its deadline too.
        """

        def script(c: FakeConnection) -> None:
            c.hello(features=["deadline", "metadata"])
            request = c.receiveRequest()
            c.respond(request[1], request[5])
            c.readToEnd()

        server, _ = self.fakeServer(script)
        status, out, err = self.runCLI(
            "call",
            "--metadata",
            "tenant=a",
            "--metadata",
            "trace=x=y",
            "--timeout",
            "5",
            "h:1",
            "m",
        )
        self.assertEqual((status, err), (0, ""))
        options = json.loads(out)
        self.assertEqual(options["metadata"], {"tenant": "a", "trace": "x=y"})
        self.assertTrue(0 < options["deadline"] <= 5)
        server.join()

    def test_metadataNotSupported(self) -> None:
        """
        C{--metadata} to a server that takes none exits with the local error
        status, saying so.
        """

        def script(c: FakeConnection) -> None:
            c.hello()
            c.readToEnd()

        server, _ = self.fakeServer(script)
        status, out, err = self.runCLI("call", "--metadata", "a=b", "h:1", "m")
        self.assertNotEqual(status, 0)
        self.assertEqual(out, "")
        self.assertIn("does not announce metadata", err)
        server.join()

    def test_badOptions(self) -> None:
        """
        A --kwarg without C{=}, a negative or non-numeric --timeout, or no
        command at all is a usage error.
        """
        for argv in [
            ["call", "--kwarg", "b", "h:1", "m"],
            ["call", "--metadata", "b", "h:1", "m"],
            ["call", "--metadata", "=b", "h:1", "m"],
            ["call", "--timeout", "-1", "h:1", "m"],
            ["call", "--timeout", "soon", "h:1", "m"],
            [],
            ["call", "h:1"],
        ]:
            status, out, err = self.runCLI(*argv)
            self.assertEqual((status, out), (2, ""), argv)
            self.assertIn("error:", err)

    def test_help(self) -> None:
        """
        C{--help} prints the usage, with the exit statuses, and exits 0.
        """
        status, out, _ = self.runCLI("call", "--help")
        self.assertEqual(status, 0)
        self.assertIn("HOST:PORT METHOD [ARG ...]", out)
        self.assertIn("3 cannot connect", out)


class MethodsCommandTests(CLIHarness, SynchronousTestCase):
    """
    C{agilerpc methods}.
    """

    def test_methods(self) -> None:
        """
        C{methods} calls C{system.describe} and prints each method with its
        signature, and its doc indented below it.
        """
        server, _ = self.fakeServer(answer(DESCRIBE))
        status, out, err = self.runCLI("methods", "127.0.0.1:1")
        self.assertEqual((status, err), (0, ""))
        self.assertEqual(
            out,
            "add(a, b)\n    Add.\n\n    Really.\nsystem.listMethods() -> 'list[str]'\n",
        )
        server.join()
        self.assertEqual(
            server.connections[0].received, [[0, 0, "system.describe", []]]
        )

    def test_methodsJSON(self) -> None:
        """
        C{methods --json} prints C{system.describe}'s result as JSON.
        """
        self.fakeServer(answer(DESCRIBE))
        status, out, _ = self.runCLI("methods", "--json", "127.0.0.1:1")
        self.assertEqual(status, 0)
        self.assertEqual(out, _cli.toJSON(DESCRIBE) + "\n")

    def test_methodsUnexpected(self) -> None:
        """
        A C{system.describe} result that is not a map is an error (exit 1).
        """
        self.fakeServer(answer([1, 2]))
        status, out, err = self.runCLI("methods", "127.0.0.1:1")
        self.assertEqual(
            (status, out, err), (1, "", "agilerpc: system.describe returned [1, 2]\n")
        )


class ParsingTests(SynchronousTestCase):
    """
    The CLI's parsing and formatting helpers.
    """

    def test_parseAddress(self) -> None:
        """
        L{_cli.parseAddress} splits HOST:PORT and [IPV6]:PORT.
        """
        self.assertEqual(_cli.parseAddress("127.0.0.1:9988"), ("127.0.0.1", 9988))
        self.assertEqual(_cli.parseAddress("localhost:1"), ("localhost", 1))
        self.assertEqual(_cli.parseAddress("[::1]:65535"), ("::1", 65535))
        self.assertRaises(argparse.ArgumentTypeError, _cli.parseAddress, "[::1]")

    def test_parseValue(self) -> None:
        """
        L{_cli.parseValue} parses JSON, and keeps anything else as a string.
        """
        self.assertEqual(_cli.parseValue("12"), 12)
        self.assertEqual(_cli.parseValue("1.5"), 1.5)
        self.assertEqual(_cli.parseValue('"12"'), "12")
        self.assertEqual(_cli.parseValue("true"), True)
        self.assertEqual(_cli.parseValue('{"a": [null]}'), {"a": [None]})
        self.assertEqual(_cli.parseValue("zhangsan"), "zhangsan")
        self.assertEqual(_cli.parseValue(""), "")

    def test_toJSON(self) -> None:
        """
        L{_cli.toJSON} prints bytes as C{{"$bytes": base64}}, also inside
        lists and maps, and bytes map keys as C{"$bytes:base64"}.
        """
        self.assertEqual(_cli.toJSON(b"hi"), '{"$bytes": "aGk="}')
        self.assertEqual(
            _cli.toJSON({"a": [b"", 1], b"k": None}),
            '{"a": [{"$bytes": ""}, 1], "$bytes:aw==": null}',
        )
        self.assertEqual(_cli.toJSON(None), "null")

    def test_toJSONDeepest(self) -> None:
        """
        A value nested as deep as the protocol allows (1024 arrays and maps,
        the message's own included) prints, where Python's default recursion
        limit of 1000 made it a RecursionError; the limit is restored.
        """
        value: Any = 1
        expected = "1"
        for level in range(1023):
            if level % 2:
                value, expected = [value], f"[{expected}]"
            else:
                value, expected = {"k": value}, f'{{"k": {expected}}}'
        limit = sys.getrecursionlimit()
        self.assertEqual(_cli.toJSON(value), expected)
        self.assertEqual(sys.getrecursionlimit(), limit)


class EntryPointTests(SynchronousTestCase):
    """
    How the command line is started.
    """

    def test_consoleScript(self) -> None:
        """
        The installed distribution declares the C{agilerpc} console script
        as L{_cli.main}.
        """
        try:
            scripts = metadata.distribution("agilerpc").entry_points
        except metadata.PackageNotFoundError:
            raise SkipTest("agilerpc is not installed") from None
        names = {(e.name, e.value) for e in scripts if e.group == "console_scripts"}
        self.assertIn(("agilerpc", "agilerpc._cli:main"), names)

    def test_pythonDashM(self) -> None:
        """
        C{python -m agilerpc call 127.0.0.1:PORT sayHello x} calls a real
        server, prints C{"hello x"} and exits 0; a remote error exits 1 with
        one line on stderr and no traceback.
        """
        server = ServerProcess.start(self)
        # Run the same agilerpc the tests import.
        env = dict(os.environ)
        env["PYTHONPATH"] = os.path.dirname(os.path.dirname(agilerpc.__file__))
        base = [sys.executable, "-m", "agilerpc", "call", f"127.0.0.1:{server.port}"]
        ok = subprocess.run(
            [*base, "sayHello", "x"], capture_output=True, env=env, timeout=WAIT * 4
        )
        self.assertEqual(
            (ok.returncode, ok.stdout, ok.stderr), (0, b'"hello x"\n', b"")
        )
        bad = subprocess.run(
            [*base, "nope"], capture_output=True, env=env, timeout=WAIT * 4
        )
        self.assertEqual(
            (bad.returncode, bad.stdout, bad.stderr),
            (1, b"", b"agilerpc: MethodNotFound: no method named 'nope'\n"),
        )

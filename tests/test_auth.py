"""
Token auth end to end: C{twistd agilerpc --auth-token-file} with
L{agilerpc.TcpRpcClient}, L{agilerpc.RpcClient} and C{agilerpc call
--token-file}; and how the C{--auth-token-file} option reads its file.
"""

from __future__ import annotations

import contextlib
import io
import os
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase, TestCase

from agilerpc import RpcClient, TcpRpcClient, Unauthorized, _cli
from agilerpc.tap import Options

from .serverprocess import ServerProcess

WAIT = 5.0
TOKEN = "s3cret-token-7f1e"


def writeToken(testCase: SynchronousTestCase, content: str) -> str:
    """
    Write C{content} to a new file; its path.
    """
    path = str(testCase.mktemp())
    with open(path, "w", encoding="utf-8") as f:
        f.write(content)
    return path


def startServer(testCase: SynchronousTestCase) -> ServerProcess:
    """
    A server requiring L{TOKEN} (its file ends with a newline).
    """
    path = os.path.abspath(writeToken(testCase, TOKEN + "\n"))
    return ServerProcess.start(testCase, "--auth-token-file", path)


class AuthTokenFileOptionTests(SynchronousTestCase):
    """
    C{--auth-token-file} reads the token, stripped of surrounding
    whitespace, and refuses a missing or empty file.
    """

    def test_tokenStripped(self) -> None:
        """
        The token is the file's content without surrounding whitespace, as
        bytes.
        """
        options = Options()
        options.parseOptions(["--auth-token-file", writeToken(self, "  tok en\r\n")])
        self.assertEqual(options["auth-token"], b"tok en")

    def test_noTokenByDefault(self) -> None:
        """
        Without the option, no token is required.
        """
        options = Options()
        options.parseOptions([])
        self.assertIsNone(options["auth-token"])

    def test_emptyFile(self) -> None:
        """
        A file holding only whitespace is a usage error naming the option.
        """
        path = writeToken(self, " \n")
        e = self.assertRaises(
            usage.UsageError,
            Options().parseOptions,
            ["--auth-token-file", path],
        )
        self.assertEqual(str(e), f"--auth-token-file {path}: the file is empty")

    def test_missingFile(self) -> None:
        """
        A file that cannot be read is a usage error naming the option.
        """
        path = self.mktemp()
        e = self.assertRaises(
            usage.UsageError,
            Options().parseOptions,
            ["--auth-token-file", path],
        )
        self.assertEqual(
            str(e),
            f"--auth-token-file {path}: cannot read it: No such file or directory",
        )


class BlockingClientAuthTests(SynchronousTestCase):
    """
    L{TcpRpcClient} with and without the right token against twistd.
    """

    def setUp(self) -> None:
        self.server = startServer(self)

    def client(self, token: str | bytes | None) -> TcpRpcClient:
        client = TcpRpcClient(
            "127.0.0.1", self.server.port, timeout=WAIT, token=token, connectRetry=0
        )
        self.addCleanup(client.close)
        return client

    def test_rightToken(self) -> None:
        """
        With the right token (str or bytes) calls run.
        """
        self.assertEqual(self.client(TOKEN).call("incr", ("a",)), 1)
        self.assertEqual(self.client(TOKEN.encode()).call("incr", ("b",)), 2)

    def test_wrongToken(self) -> None:
        """
        A wrong token raises L{Unauthorized}, nothing runs, the call is not
        resent, and the server logs the refusal without the token.
        """
        client = self.client("not-the-token-9c2d")
        self.assertRaises(Unauthorized, client.call, "incr", ("a",))
        self.assertIsNone(client._connection)
        self.assertEqual(self.client(TOKEN).call("incr", ("b",)), 1)
        self.server.waitForOutput("[Uu]nauthori[sz]ed|wrong token")
        output = self.server.output()
        self.assertNotIn("not-the-token-9c2d", output)
        self.assertNotIn(TOKEN, output)

    def test_missingToken(self) -> None:
        """
        Without a token, a call raises L{Unauthorized} and does not run.
        """
        client = self.client(None)
        self.assertRaises(Unauthorized, client.call, "incr", ("a",))
        self.assertEqual(self.client(TOKEN).call("incr", ("b",)), 1)


class TwistedClientAuthTests(TestCase):
    """
    L{RpcClient} with and without the right token against twistd.
    """

    timeout = 30

    def setUp(self) -> None:
        self.server = startServer(self)

    def client(self, token: str | None) -> RpcClient:
        client = RpcClient(
            reactor, "127.0.0.1", self.server.port, timeout=WAIT, token=token
        )
        self.addCleanup(client.close, 1)
        return client

    @inlineCallbacks
    def test_rightThenWrongToken(self) -> Any:
        """
        The right token calls; a wrong one fails every call with
        L{Unauthorized}, and none of them runs.
        """
        bad = self.client("wrong")
        failures = [bad.callRemote("incr", str(i)) for i in range(3)]
        for d in failures:
            yield self.assertFailure(d, Unauthorized)
        self.assertEqual((yield self.client(TOKEN).callRemote("incr", "ok")), 1)


class CommandLineAuthTests(SynchronousTestCase):
    """
    C{agilerpc call --token-file}.
    """

    def runCLI(self, *argv: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = _cli.main(list(argv))
        return status, out.getvalue(), err.getvalue()

    def test_tokenFile(self) -> None:
        """
        C{--token-file} sends the file's token (its trailing newline
        stripped); a wrong one exits 1 with C{Unauthorized}.
        """
        server = startServer(self)
        address = f"127.0.0.1:{server.port}"
        good = writeToken(self, TOKEN + "\n")
        self.assertEqual(
            self.runCLI("call", "--token-file", good, address, "sayHello", "t"),
            (0, '"hello t"\n', ""),
        )
        bad = writeToken(self, "nope\n")
        status, out, err = self.runCLI(
            "call", "--token-file", bad, address, "add", "1", "2"
        )
        self.assertEqual((status, out), (1, ""))
        self.assertTrue(err.startswith("agilerpc: Unauthorized: "), err)
        status, out, err = self.runCLI("call", address, "add", "1", "2")
        self.assertEqual((status, out), (1, ""))
        self.assertTrue(err.startswith("agilerpc: Unauthorized: "), err)

    def test_tokenFileMissing(self) -> None:
        """
        A token file that cannot be read is a usage error (exit 2).
        """
        path = self.mktemp()
        self.assertEqual(
            self.runCLI("call", "--token-file", path, "127.0.0.1:1", "m"),
            (2, "", f"agilerpc: --token-file {path}: No such file or directory\n"),
        )

"""
A real C{twistd agilerpc} server in a subprocess, and a blocking raw-socket
client, for integration tests.

    server = ServerProcess.start(self, keepalive=1)
    client = server.connect(self)
    client.receive()                      # the hello
    client.send([0, 1, "sayHello", ["x"]])
    client.receive()                      # [1, 1, None, "hello x"]

Everything here blocks (with bounded waits), so it works the same from a
C{SynchronousTestCase} and a C{TestCase}.  The server imports C{agilerpc}
from the installed package: it runs in a fresh temporary directory with
C{PYTHONPATH} set to this C{tests} directory only, so C{--module handlers}
loads L{tests/handlers.py <handlers>}.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import IO, Any

from twisted.trial.unittest import SynchronousTestCase

from agilerpc import _wire

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))

#: Run the fault and hardening tests at full size (C{tox -e stress}).
STRESS = os.environ.get("AGILERPC_STRESS") == "1"


def scale(short: int, full: int) -> int:
    """
    C{full} under C{AGILERPC_STRESS=1}, else C{short}.
    """
    return full if STRESS else short


def rssKiB(pid: int) -> int:
    """
    The resident set size of process C{pid}, in KiB.
    """
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


_PORT_LINE = re.compile(r"RpcServerFactory(?: \(TLS\))? starting on (\d+)")
_ADDRESS_IN_USE = "Address already in use"


def twistdPath() -> str:
    """
    The C{twistd} script of the Python running the tests.
    """
    candidate = os.path.join(os.path.dirname(sys.executable), "twistd")
    if os.path.exists(candidate):
        return candidate
    found = shutil.which("twistd")
    if found is None:
        raise RuntimeError("cannot find twistd next to sys.executable or on PATH")
    return found


def serverEnvironment(ledger: str | None = None) -> dict[str, str]:
    """
    The environment a server subprocess runs with: this one, but with
    C{PYTHONPATH} set to the tests directory alone and
    C{AGILERPC_TEST_LEDGER} set only when C{ledger} is given.
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = TESTS_DIR
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("AGILERPC_TEST_LEDGER", None)
    if ledger is not None:
        env["AGILERPC_TEST_LEDGER"] = ledger
    return env


class _Drain:
    """
    Read a pipe to its end in a daemon thread, so that the child never blocks
    on a full pipe, and let the test wait for what it wrote.
    """

    def __init__(self, pipe: IO[bytes]) -> None:
        self._pipe = pipe
        self._lines: list[str] = []
        self._condition = threading.Condition()
        self.closed = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for line in iter(self._pipe.readline, b""):
                with self._condition:
                    self._lines.append(line.decode("utf-8", "replace"))
                    self._condition.notify_all()
        except (OSError, ValueError):  # the pipe was closed under us
            pass
        finally:
            with self._condition:
                self.closed = True
                self._condition.notify_all()

    def text(self) -> str:
        with self._condition:
            return "".join(self._lines)

    def waitFor(self, pattern: re.Pattern[str], timeout: float) -> re.Match[str] | None:
        """
        Wait until the output matches C{pattern}, the pipe closes, or
        C{timeout} seconds pass; the match, or L{None}.
        """
        deadline = time.monotonic() + timeout
        with self._condition:
            while True:
                match = pattern.search("".join(self._lines))
                if match is not None or self.closed:
                    return match
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._condition.wait(remaining)

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)


class ServerProcess:
    """
    A running C{twistd -n agilerpc} subprocess listening on 127.0.0.1.

    @ivar port: the TCP port it listens on.
    @ivar pid: its process id.
    @ivar process: the L{subprocess.Popen}.
    @ivar directory: its working directory.
    @ivar args: its command line.
    @ivar attempts: how many processes were started before this one listened
        (more than 1 when its port was still in use).
    """

    def __init__(
        self,
        process: subprocess.Popen[bytes],
        drain: _Drain,
        port: int,
        directory: str,
        args: list[str],
    ) -> None:
        self.process = process
        self.pid = process.pid
        self.port = port
        self.directory = directory
        self.args = args
        self.attempts = 1
        self._drain = drain

    @classmethod
    def start(
        cls,
        testCase: SynchronousTestCase,
        *extraArgs: str,
        module: str = "handlers",
        keepalive: float = 75,
        ledger: str | None = None,
        timeout: float = 20,
        port: int = 0,
        twistdOptions: tuple[str, ...] = (),
    ) -> ServerProcess:
        """
        Start a server and wait until it listens; C{testCase} kills it in its
        cleanup if the test did not stop it.

        @param extraArgs: more C{twistd agilerpc} options.
        @param twistdOptions: options of C{twistd} itself (before
            C{agilerpc}), such as C{--logger}.
        @param port: listen on this port (0: any free one).  When it is in use
            (a server just stopped, say) starting is retried for a few seconds.
        @raise AssertionError: with the server's output, if it exits or does
            not listen within C{timeout} seconds.
        """
        retryUntil = time.monotonic() + 5.0
        attempts = 0
        while True:
            attempts += 1
            server, failure = cls._tryStart(
                testCase,
                extraArgs,
                module,
                keepalive,
                ledger,
                timeout,
                port,
                twistdOptions,
            )
            if server is not None:
                server.attempts = attempts
                return server
            if port and _ADDRESS_IN_USE in failure and time.monotonic() < retryUntil:
                time.sleep(0.1)
                continue
            raise AssertionError(failure)

    @classmethod
    def _tryStart(
        cls,
        testCase: SynchronousTestCase,
        extraArgs: tuple[str, ...],
        module: str,
        keepalive: float,
        ledger: str | None,
        timeout: float,
        port: int,
        twistdOptions: tuple[str, ...] = (),
    ) -> tuple[ServerProcess | None, str]:
        directory = os.path.abspath(testCase.mktemp())
        os.makedirs(directory)
        args = [
            twistdPath(),
            "-n",
            *twistdOptions,
            "agilerpc",
            "--listen",
            f"tcp:{port}:interface=127.0.0.1",
            "--keepalive",
            str(keepalive),
            "--module",
            module,
            *extraArgs,
        ]
        process = subprocess.Popen(
            args,
            cwd=directory,
            env=serverEnvironment(ledger),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        assert process.stdout is not None
        drain = _Drain(process.stdout)
        server = cls(process, drain, 0, directory, args)
        testCase.addCleanup(server._cleanup)
        match = drain.waitFor(_PORT_LINE, timeout)
        if match is None:
            server._kill()
            drain.join(2)
            if process.returncode is None:
                what = f"did not listen within {timeout}s"
            else:
                what = f"exited with code {process.returncode}"
            return None, (f"{' '.join(args)} {what}; its output:\n{drain.text()}")
        server.port = int(match.group(1))
        return server, ""

    def output(self) -> str:
        """
        Everything the server wrote to stdout and stderr so far.
        """
        return self._drain.text()

    def waitForOutput(self, pattern: str, timeout: float = 5.0) -> re.Match[str]:
        """
        Wait until the server's output matches the regular expression
        C{pattern}.

        @raise AssertionError: if it does not within C{timeout} seconds.
        """
        match = self._drain.waitFor(re.compile(pattern), timeout)
        if match is None:
            raise AssertionError(
                f"server output did not match {pattern!r} within {timeout}s:\n"
                + self.output()
            )
        return match

    def alive(self) -> bool:
        """
        Is the process still running?
        """
        return self.process.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        """
        Send C{sig} and wait for the process to exit; its exit code (negative:
        the signal that killed it).

        Note that twistd, once it has shut down cleanly after SIGTERM or
        SIGINT, kills itself with that same signal: a clean stop returns
        C{-signal.SIGTERM}, not 0 (look for "Server Shut Down." in
        L{output}).

        @raise AssertionError: if it is still running after C{timeout}
            seconds (it is then killed).
        """
        if self.process.poll() is None:
            os.kill(self.pid, sig)
        return self.wait(timeout)

    def wait(self, timeout: float = 10.0) -> int:
        """
        Wait for the process to exit, without signalling it (say, after the
        test sent it a signal itself); its exit code.

        @raise AssertionError: if it is still running after C{timeout}
            seconds (it is then killed).
        """
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self._kill()
            raise AssertionError(
                f"server {self.pid} still running after {timeout}s:\n" + self.output()
            ) from None
        # Let the reader see the last of the output.
        self._drain.join(2)
        return code

    def _kill(self) -> None:
        if self.process.poll() is None:
            os.kill(self.pid, signal.SIGKILL)
            self.process.wait(5)

    def _cleanup(self) -> None:
        if self.process.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.process.wait(1.0)
            except subprocess.TimeoutExpired:
                self._kill()
        self._drain.join(2)
        if self.process.stdout is not None:
            self.process.stdout.close()

    def connect(self, testCase: SynchronousTestCase, timeout: float = 5.0) -> RawClient:
        """
        A L{RawClient} connected to this server, closed in C{testCase}'s
        cleanup.
        """
        client = RawClient(self.port, timeout)
        testCase.addCleanup(client.close)
        return client


class RawClient:
    """
    A blocking client that speaks frames, for integration tests: it sends
    exactly what it is given and decodes exactly what it receives.

    Every read is bounded by the socket timeout (L{socket.timeout} when it
    passes).
    """

    def __init__(
        self, port: int, timeout: float = 5.0, host: str = "127.0.0.1"
    ) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self._buffer = b""
        self._nextMsgid = 1

    def sendRaw(self, data: bytes) -> None:
        """
        Send C{data} as it is.
        """
        self.sock.sendall(data)

    def send(self, message: list[Any]) -> None:
        """
        Send C{message} encoded with msgpack, as one frame.
        """
        self.sendRaw(_wire.frame(_wire.pack(message)))

    def request(self, method: str, *args: Any) -> int:
        """
        Send a request for C{method(*args)}; its msgid.
        """
        msgid = self._nextMsgid
        self._nextMsgid += 1
        self.send([_wire.REQUEST, msgid, method, list(args)])
        return msgid

    def _read(self, n: int) -> bytes | None:
        while len(self._buffer) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                return None
            self._buffer += chunk
        data, self._buffer = self._buffer[:n], self._buffer[n:]
        return data

    def receiveRaw(self) -> bytes:
        """
        The payload of the next frame.

        @raise EOFError: if the server closed the connection first.
        """
        header = self._read(4)
        if header is None:
            raise EOFError(f"connection closed; {len(self._buffer)} bytes left over")
        (length,) = _wire.HEADER.unpack(header)
        payload = self._read(length)
        if payload is None:
            raise EOFError(f"connection closed inside a frame of {length} bytes")
        return payload

    def receive(self) -> list[Any]:
        """
        The next message, decoded.

        @raise EOFError: if the server closed the connection first.
        """
        return _wire.unpack(self.receiveRaw())

    def receiveHello(self) -> dict[str, Any]:
        """
        Read the hello the server sends first; its info map.
        """
        message = self.receive()
        if message[:2] != [_wire.CONTROL, "hello"]:
            raise AssertionError(f"expected a hello, got {message!r}")
        info: dict[str, Any] = message[2]
        return info

    def call(self, method: str, *args: Any) -> list[Any]:
        """
        Send a request and return its response message, skipping a hello.
        """
        msgid = self.request(method, *args)
        while True:
            message = self.receive()
            if message[:2] == [_wire.CONTROL, "hello"]:
                continue
            if message[0] != _wire.RESPONSE or message[1] != msgid:
                raise AssertionError(
                    f"expected the response to {msgid}, got {message!r}"
                )
            return message

    def atEOF(self) -> bool:
        """
        Has the server closed its side, with nothing more to read?  Waits (up
        to the socket timeout) for the close.
        """
        if self._buffer:
            return False
        return self.sock.recv(1) == b""

    def close(self) -> None:
        """
        Close the socket.
        """
        self.sock.close()

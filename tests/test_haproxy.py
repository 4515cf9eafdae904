"""
Tests of the HAProxy deployment that docs/DEPLOY.md documents.

The haproxy.cfg block of docs/DEPLOY.md is read from the document itself, so
the document cannot drift from what is tested: unit tests check its health
check bytes against L{agilerpc._wire} and its timeouts against the default
keepalive, and an integration test runs a real C{haproxy} with it on 127.0.0.1
in front of two C{twistd -n agilerpc} servers, restarting each server with
SIGTERM while a client streams calls.  The integration test is skipped, with
the reason, when C{haproxy} is not on C{PATH} (.ci/run installs Debian's
package when it can).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections import Counter
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.task import Clock, deferLater
from twisted.internet.threads import deferToThread
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from agilerpc import Registry, RpcClient, RpcServerFactory, _wire
from agilerpc.tap import Options

from .incrstream import IncrStream
from .serverprocess import TESTS_DIR, ServerProcess

DEPLOY = os.path.join(os.path.dirname(TESTS_DIR), "docs", "DEPLOY.md")

# The line that comes right before the haproxy.cfg block in docs/DEPLOY.md.
MARKER = "<!-- tests/test_haproxy.py runs the haproxy.cfg block below"

_FENCE = re.compile(r"^```haproxy\n(.*?)^```$", re.MULTILINE | re.DOTALL)
_BIND = re.compile(r"^(\s*bind\s+)\S+", re.MULTILINE)
_SERVER = re.compile(r"^(\s*server\s+\S+\s+)\S+", re.MULTILINE)
_STATS_SOCKET = re.compile(r"^(\s*stats\s+socket\s+)\S+", re.MULTILINE)
_TIMEOUT = re.compile(r"^\s*timeout\s+(\S+)\s+(\d+)(ms|s|m|h|d)?\s*$", re.MULTILINE)
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 0.001}


def configFromDoc(text: str) -> str:
    """
    The haproxy.cfg in C{text}: the first C{```haproxy} fenced block after
    L{MARKER}.

    @raise ValueError: if there is no marker or no such block after it.
    """
    start = text.find(MARKER)
    if start == -1:
        raise ValueError(f"no {MARKER!r} line")
    match = _FENCE.search(text, start)
    if match is None:
        raise ValueError(f"no ```haproxy block after {MARKER!r}")
    return match.group(1)


def _replaceAll(
    pattern: re.Pattern[str], config: str, values: list[str], what: str
) -> str:
    found = len(pattern.findall(config))
    if found != len(values):
        raise ValueError(f"expected {len(values)} {what} line(s), found {found}")
    remaining = iter(values)
    return pattern.sub(lambda m: m.group(1) + next(remaining), config)


def localConfig(
    config: str, frontendPort: int, serverPorts: list[int], statsSocket: str
) -> str:
    """
    C{config} with its one C{bind} address, its C{server} addresses (in
    order) and its C{stats socket} path replaced by 127.0.0.1 ports and
    C{statsSocket}; nothing else changes.

    @raise ValueError: if C{config} does not have exactly one C{bind}, one
        C{stats socket} and C{len(serverPorts)} C{server} lines.
    """
    config = _replaceAll(_BIND, config, [f"127.0.0.1:{frontendPort}"], "bind")
    config = _replaceAll(
        _SERVER, config, [f"127.0.0.1:{port}" for port in serverPorts], "server"
    )
    return _replaceAll(_STATS_SOCKET, config, [statsSocket], "stats socket")


def timeouts(config: str) -> dict[str, float]:
    """
    The C{timeout} settings of C{config}, in seconds, by name.
    """
    return {
        name: int(value) * _UNITS[unit]
        for name, value, unit in (
            (m.group(1), m.group(2), m.group(3)) for m in _TIMEOUT.finditer(config)
        )
    }


def tcpChecks(config: str) -> list[tuple[str, str]]:
    """
    The C{tcp-check} rules of C{config} as (rule, argument) pairs, in order;
    an C{expect} rule is named with its kind (C{"expect binary"}).
    """
    checks = []
    for line in config.splitlines():
        words = line.split()
        if words[:1] != ["tcp-check"]:
            continue
        rule, rest = words[1], words[2:]
        if rule == "expect" and rest:
            rule, rest = f"expect {rest[0]}", rest[1:]
        checks.append((rule, " ".join(rest)))
    return checks


_RUNTIME = re.compile(r'echo "set server (\S+)/(\S+) state (\w+)" \| socat')


def runtimeCommands(text: str) -> list[tuple[str, str, str]]:
    """
    The C{set server BACKEND/SERVER state STATE} runtime API commands that
    C{text} pipes to C{socat}, as (backend, server, state), in order.
    """
    return _RUNTIME.findall(text)


def _readDoc() -> str:
    with open(DEPLOY, encoding="utf-8") as f:
        return f.read()


class ConfigFromDocTests(SynchronousTestCase):
    """
    Tests for L{configFromDoc}, L{localConfig}, L{timeouts} and
    L{tcpChecks}, and for the configuration docs/DEPLOY.md gives.
    """

    def test_blockAfterMarker(self) -> None:
        """
        The block returned is the first haproxy block after the marker, not
        one before it.
        """
        text = (
            "```haproxy\nbefore\n```\n"
            f"{MARKER} -->\n```haproxy\nglobal\n    x\n```\n"
            "```haproxy\nafter\n```\n"
        )
        self.assertEqual(configFromDoc(text), "global\n    x\n")

    def test_noMarker(self) -> None:
        """
        A text without the marker is refused.
        """
        self.assertRaises(ValueError, configFromDoc, "```haproxy\nx\n```\n")

    def test_noBlockAfterMarker(self) -> None:
        """
        A marker with no haproxy block after it is refused.
        """
        text = f"```haproxy\nx\n```\n{MARKER} -->\n```ini\ny\n```\n"
        self.assertRaises(ValueError, configFromDoc, text)

    def test_localConfig(self) -> None:
        """
        Only the bind address, the server addresses (in order) and the stats
        socket path change.
        """
        config = (
            "global\n"
            "    stats socket /run/x.sock mode 600 level admin\n"
            "frontend f\n"
            "    bind :9988\n"
            "backend b\n"
            "    server a 10.0.0.1:9988 check\n"
            "    server b 10.0.0.2:9988 check\n"
        )
        self.assertEqual(
            localConfig(config, 1000, [2000, 3000], "/tmp/s.sock"),
            "global\n"
            "    stats socket /tmp/s.sock mode 600 level admin\n"
            "frontend f\n"
            "    bind 127.0.0.1:1000\n"
            "backend b\n"
            "    server a 127.0.0.1:2000 check\n"
            "    server b 127.0.0.1:3000 check\n",
        )

    def test_localConfigUnexpectedShape(self) -> None:
        """
        A configuration with another number of server lines than ports given
        is refused rather than run half-substituted.
        """
        config = "stats socket /s\nbind :1\nserver a 10.0.0.1:1 check\n"
        self.assertRaises(ValueError, localConfig, config, 1, [2, 3], "/t")
        self.assertRaises(ValueError, localConfig, "bind :1\n", 1, [], "/t")

    def test_timeouts(self) -> None:
        """
        Timeouts are read in seconds, with HAProxy's default unit of
        milliseconds.
        """
        config = (
            "    timeout client 90s\n"
            "    timeout connect 500\n"
            "  timeout x 2m\n"
            " timeout y 1h\n"
        )
        self.assertEqual(
            timeouts(config), {"client": 90.0, "connect": 0.5, "x": 120.0, "y": 3600.0}
        )

    def test_docTimeoutsExceedKeepalive(self) -> None:
        """
        The documented client and server timeouts (and the tunnel timeout,
        which replaces them in TCP mode, if set) exceed the default
        keepalive, so the server's goaway closes idle connections first.
        """
        keepalive = float(Options()["keepalive"])
        found = timeouts(configFromDoc(_readDoc()))
        self.assertGreater(found["client"], keepalive)
        self.assertGreater(found["server"], keepalive)
        self.assertGreater(found.get("tunnel", keepalive + 1), keepalive)

    def test_docDrainCommands(self) -> None:
        """
        The documented drain drains a server of the documented backend and
        then makes it ready again.
        """
        text = _readDoc()
        config = configFromDoc(text)
        self.assertIn("\nbackend agilerpc_servers\n", config)
        self.assertIn("\n    server rpc1 ", config)
        self.assertEqual(
            runtimeCommands(text),
            [
                ("agilerpc_servers", "rpc1", "drain"),
                ("agilerpc_servers", "rpc1", "ready"),
            ],
        )

    def test_docHealthCheckBytes(self) -> None:
        """
        The documented health check expects the start of the hello the
        server sends, sends a system.ping request frame, and expects the
        whole of the server's answer to it.
        """
        config = configFromDoc(_readDoc())
        self.assertIn("\n    mode tcp\n", config)
        self.assertIn("\n    option tcp-check\n", config)
        factory = RpcServerFactory(Registry(), Clock())
        hello = _wire.encodeHello(factory.hello)
        request = _wire.frame(_wire.pack([_wire.REQUEST, 1, "system.ping", []]))
        response = _wire.pack([_wire.RESPONSE, 1, None, "pong"])
        self.assertEqual(
            tcpChecks(config),
            [
                ("connect", ""),
                ("expect binary", hello[:8].hex()),
                ("send-binary", request.hex()),
                ("expect binary", response.hex()),
            ],
        )


def _freePort() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class HAProxyProcess:
    """
    A real C{haproxy -db} subprocess running a given configuration.

    @ivar port: the frontend's port on 127.0.0.1.
    @ivar pid: its process id.
    """

    def __init__(self, process: subprocess.Popen[bytes], port: int, directory: str):
        self.process = process
        self.pid = process.pid
        self.port = port
        self.directory = directory
        self.statsSocket = os.path.join(directory, "admin.sock")
        self.logPath = os.path.join(directory, "haproxy.log")

    @classmethod
    def start(
        cls, testCase: SynchronousTestCase, config: str, serverPorts: list[int]
    ) -> HAProxyProcess:
        """
        Write C{config}, localised to 127.0.0.1, to a temporary directory and
        start C{haproxy} with it; C{testCase} kills it and removes the
        directory in its cleanup.
        """
        # A short path: a UNIX socket's path is limited to about 100 bytes.
        directory = tempfile.mkdtemp(prefix="agilerpc-haproxy-")
        testCase.addCleanup(shutil.rmtree, directory, True)
        port = _freePort()
        path = os.path.join(directory, "haproxy.cfg")
        with open(path, "w", encoding="utf-8") as f:
            f.write(
                localConfig(
                    config, port, serverPorts, os.path.join(directory, "admin.sock")
                )
            )
        with open(os.path.join(directory, "haproxy.log"), "wb") as log:
            process = subprocess.Popen(
                ["haproxy", "-f", path, "-db"],
                cwd=directory,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        proxy = cls(process, port, directory)
        testCase.addCleanup(proxy.kill)
        return proxy

    def output(self) -> str:
        """
        What haproxy logged so far.
        """
        with open(self.logPath, encoding="utf-8", errors="replace") as f:
            return f.read()

    def command(self, line: str) -> str:
        """
        Run one runtime API command on the stats socket; its answer.
        """
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(self.statsSocket)
            s.sendall(line.encode("ascii") + b"\n")
            chunks = []
            while chunk := s.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode("utf-8", "replace")

    def serverStates(self) -> dict[str, tuple[str, str]]:
        """
        Each server's (status, last check status), from C{show stat}.
        """
        lines = self.command("show stat").splitlines()
        header = lines[0].lstrip("# ").split(",")
        svname, status, check = (
            header.index("svname"),
            header.index("status"),
            header.index("check_status"),
        )
        states = {}
        for line in lines[1:]:
            fields = line.split(",")
            if len(fields) > check and fields[svname] not in ("FRONTEND", "BACKEND"):
                states[fields[svname]] = (fields[status], fields[check])
        return states

    def waitHealthy(self, count: int, timeout: float = 15.0) -> None:
        """
        Wait until C{count} servers are up with their last health check
        passed (L7OK: every C{tcp-check} rule matched).

        @raise AssertionError: if haproxy exits, or they are not within
            C{timeout} seconds.
        """
        deadline = time.monotonic() + timeout
        states: dict[str, tuple[str, str]] = {}
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"haproxy exited with {self.process.returncode}:\n{self.output()}"
                )
            try:
                states = self.serverStates()
            except OSError:  # not listening on its socket yet
                states = {}
            healthy = [s for s in states.values() if s == ("UP", "L7OK")]
            if len(states) == count and len(healthy) == count:
                return
            time.sleep(0.1)
        raise AssertionError(
            f"servers not healthy within {timeout}s: {states}\n{self.output()}"
        )

    def kill(self) -> None:
        """
        Stop haproxy: SIGTERM, then SIGKILL if it has not exited within 2 s.
        """
        if self.process.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.process.wait(2)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.process.wait(5)


def _pause(seconds: float) -> Deferred[None]:
    return deferLater(reactor, seconds, lambda: None)


def _readLedger(path: str) -> Counter[str]:
    if not os.path.exists(path):
        return Counter()
    with open(path, encoding="utf-8") as f:
        return Counter(line.strip() for line in f if line.strip())


class HAProxyIntegrationTests(TestCase):
    """
    A real HAProxy, configured as docs/DEPLOY.md says, in front of two real
    servers.
    """

    timeout = 90
    if shutil.which("haproxy") is None:
        skip = (
            "haproxy is not on PATH (Debian: apt-get install haproxy; "
            ".ci/run installs it when it can)"
        )

    def setServerState(self, proxy: HAProxyProcess, server: str, state: str) -> None:
        """
        Set C{server}'s state through C{proxy}'s runtime API, and check that
        HAProxy took the command and reports the state.
        """
        answer = proxy.command(f"set server {server} state {state}")
        self.assertEqual(answer.strip(), "", proxy.output())
        status = {"drain": "DRAIN", "ready": None}[state]
        if status is not None:
            name = server.split("/")[1]
            self.assertEqual(proxy.serverStates()[name][0], status)

    @inlineCallbacks
    def test_gracefulRestartsBehindHAProxyLoseNothing(self) -> Any:
        """
        While a client streams incr() calls through HAProxy, the server it
        is connected to is stopped with SIGTERM and started again, then the
        other one, drained first with the runtime API commands the document
        gives: HAProxy's health checks pass on all of them, every call
        succeeds and runs exactly once, and the restarted server takes the
        traffic when the other one stops.
        """
        text = _readDoc()
        (backend, _, drain), (_, _, ready) = runtimeCommands(text)
        names = ["rpc1", "rpc2"]
        # One ledger per server process: [first rpc1, first rpc2, restarts].
        ledgers = [os.path.abspath(self.mktemp()) for _ in range(4)]
        servers = [ServerProcess.start(self, ledger=ledgers[i]) for i in range(2)]
        ports = [server.port for server in servers]
        proxy = HAProxyProcess.start(self, configFromDoc(text), ports)
        yield deferToThread(proxy.waitHealthy, 2)

        client = RpcClient(reactor, "127.0.0.1", proxy.port, timeout=30)
        self.addCleanup(client.close, 1)
        stream = IncrStream(self, [client], 20)
        results = stream.results
        # The client has one connection: stop its server first.
        deadline = time.monotonic() + 10
        while not (_readLedger(ledgers[0]) or _readLedger(ledgers[1])):
            self.assertLess(time.monotonic(), deadline, proxy.output())
            yield _pause(0.05)
        yield _pause(0.3)
        first = 0 if _readLedger(ledgers[0]) else 1
        for index in (first, 1 - first):
            drained = index != first
            if drained:
                self.setServerState(proxy, f"{backend}/{names[index]}", drain)
            code = yield deferToThread(servers[index].stop)
            # twistd re-raises the signal that stopped it once it has shut down.
            self.assertIn(code, (0, -signal.SIGTERM), servers[index].output())
            servers[index] = yield deferToThread(
                ServerProcess.start, self, ledger=ledgers[index + 2], port=ports[index]
            )
            if drained:
                self.setServerState(proxy, f"{backend}/{names[index]}", ready)
            yield deferToThread(proxy.waitHealthy, 2)
            yield _pause(0.3)
        yield stream.stop()

        failures = Counter(
            r.getErrorMessage()[:200]
            for r in results.values()
            if isinstance(r, Failure)
        )
        self.assertEqual(failures.most_common(3), [])
        runs: Counter[str] = Counter()
        for ledger in ledgers:
            runs.update(_readLedger(ledger))
        self.assertEqual(set(runs), set(results))
        self.assertEqual([t for t, n in runs.items() if n != 1], [])
        self.assertGreater(len(results), 100)
        # Calls moved to the other server, then to the restarted first one.
        self.assertTrue(_readLedger(ledgers[1 - first]), proxy.output())
        self.assertTrue(_readLedger(ledgers[first + 2]), proxy.output())

"""
Tests for L{agilerpc._workers}: C{twistd agilerpc --workers N}, its options,
the supervisor of the worker processes, the worker's main, and real
C{twistd -n agilerpc --workers 2} processes on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import signal
import socket
import time
import urllib.request
from collections import Counter
from typing import Any, cast

from twisted.application.service import MultiService
from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.error import (
    ProcessDone,
    ProcessTerminated,
    UnsupportedAddressFamily,
)
from twisted.internet.interfaces import (
    IListeningPort,
    IProtocolFactory,
    IStreamServerEndpoint,
)
from twisted.internet.protocol import Factory
from twisted.internet.task import deferLater
from twisted.internet.testing import MemoryReactorClock
from twisted.internet.threads import deferToThread
from twisted.logger import ILogObserver, Logger, LogLevel, formatEvent
from twisted.python import usage
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer

from agilerpc import RpcClient, RpcServerFactory, _workers, tap
from agilerpc._logging import jsonLogObserver
from agilerpc._service import RpcService
from agilerpc._workers import (
    AdoptedEndpoint,
    SharedEndpoint,
    WorkerSupervisor,
    _ParentWatch,
    parseWorkerArguments,
    portSocket,
    workerArguments,
    workerMain,
)
from agilerpc.metrics import MetricsSnapshot, ServerMetrics

from .incrstream import IncrStream
from .serverprocess import RawClient, ServerProcess


class _FakePort:
    """
    A listening port with a socket: what the supervisor shares.
    """

    def __init__(self, fd: int, family: int = socket.AF_INET) -> None:
        self.fd = fd
        self.addressFamily = family

    def fileno(self) -> int:
        return self.fd

    def stopListening(self) -> None:
        pass


@implementer(IStreamServerEndpoint)
class _FakeEndpoint:
    """
    An endpoint whose C{listen} fires with a L{_FakePort}.
    """

    def __init__(self, fd: int, family: int = socket.AF_INET) -> None:
        self.port = _FakePort(fd, family)
        self.factories: list[IProtocolFactory] = []

    def listen(self, factory: IProtocolFactory) -> Deferred[Any]:
        self.factories.append(factory)
        return defer.succeed(self.port)


class _FakeTransport:
    """
    The process transport a fake C{spawnProcess} gives: records signals.
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.signals: list[str] = []
        self.written = b""

    def signalProcess(self, name: str) -> None:
        self.signals.append(name)

    def write(self, data: bytes) -> None:
        self.written += data


class _Spawner:
    """
    A fake C{spawnProcess}: records every call and connects the protocol to a
    L{_FakeTransport} with the next pid.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[Any, str, list[str], dict[str, Any]]] = []
        self.transports: list[_FakeTransport] = []
        self._nextPid = 1000

    def __call__(
        self, protocol: Any, executable: str, args: list[str], **kwargs: Any
    ) -> _FakeTransport:
        self._nextPid += 1
        transport = _FakeTransport(self._nextPid)
        self.calls.append((protocol, executable, args, kwargs))
        self.transports.append(transport)
        protocol.makeConnection(transport)
        return transport

    def end(self, index: int, reason: Failure) -> None:
        """
        Make the C{index}th spawned process end with C{reason}.
        """
        self.calls[index][0].processEnded(reason)


def _killed() -> Failure:
    # Twisted's process code passes os.WTERMSIG's int: a Signals member
    # would read "Signals.SIGKILL" in the message on Python 3.10.
    return Failure(ProcessTerminated(signal=int(signal.SIGKILL)))


def _done() -> Failure:
    return Failure(ProcessDone(0))


class WorkersOptionsTests(SynchronousTestCase):
    """
    The C{--workers} option of C{twistd agilerpc}.
    """

    def _parse(self, *args: str) -> tap.Options:
        options = tap.Options()
        options.parseOptions(list(args))
        return options

    def test_defaultIsOne(self) -> None:
        """
        Without --workers the server runs in one process.
        """
        self.assertEqual(self._parse()["workers"], 1)

    def test_number(self) -> None:
        """
        --workers 4 is the integer 4.
        """
        self.assertEqual(self._parse("--workers", "4")["workers"], 4)

    def test_zeroRefused(self) -> None:
        """
        --workers must be at least 1.
        """
        error = self.assertRaises(usage.UsageError, self._parse, "--workers", "0")
        self.assertEqual(str(error), "--workers must be >= 1, not '0'")

    def test_notANumberRefused(self) -> None:
        """
        --workers must be a number.
        """
        error = self.assertRaises(usage.UsageError, self._parse, "--workers", "many")
        self.assertEqual(str(error), "--workers must be a number, not 'many'")

    def test_sslListenerRefused(self) -> None:
        """
        An ssl: listener cannot be shared with workers: the error says to use
        --tls-cert and --tls-key.
        """
        error = self.assertRaises(
            usage.UsageError,
            self._parse,
            "--workers",
            "2",
            "--listen",
            "ssl:0:privateKey=k.pem:certKey=c.pem",
        )
        self.assertIn("--workers shares tcp:, tcp6: and unix: listeners", str(error))

    def test_sslListenerAllowedWithoutWorkers(self) -> None:
        """
        With one process, an ssl: listener gets past the workers check (it
        then fails only on its missing files, as before).
        """
        error = self.assertRaises(
            usage.UsageError,
            self._parse,
            "--listen",
            "ssl:0:privateKey=k.pem:certKey=c.pem",
        )
        self.assertNotIn("--workers", str(error))

    def test_commandLineKept(self) -> None:
        """
        The options remember their command line, for the workers.
        """
        options = self._parse("--workers", "3", "--keepalive", "5")
        self.assertEqual(options["argv"], ["--workers", "3", "--keepalive", "5"])


class MakeServiceTests(SynchronousTestCase):
    """
    L{tap.makeService} with and without workers.
    """

    def test_oneProcess(self) -> None:
        """
        With --workers 1 the service is the plain L{RpcService}.
        """
        options = tap.Options()
        options.parseOptions(["--port", "0"])
        service = tap.makeService(options, MemoryReactorClock())
        self.assertIsInstance(service, RpcService)

    def test_workersService(self) -> None:
        """
        With --workers 3 the service runs the server, then a supervisor of 2
        workers with the same command line, which listens through the
        server's endpoints and kills workers the grace period plus 5 s after
        asking them to stop.
        """
        options = tap.Options()
        options.parseOptions(["--port", "0", "--workers", "3", "--shutdown-grace", "2"])
        service = tap.makeService(options, MemoryReactorClock())
        self.assertIsInstance(service, MultiService)
        server, supervisor = list(service)  # type: ignore[call-overload]
        self.assertIsInstance(server, RpcService)
        self.assertIsInstance(supervisor, WorkerSupervisor)
        self.assertEqual(supervisor.count, 2)
        self.assertEqual(
            supervisor.argv, ["--port", "0", "--workers", "3", "--shutdown-grace", "2"]
        )
        self.assertEqual(supervisor.killAfter, 7.0)
        self.assertEqual([type(s.endpoint) for s in server], [SharedEndpoint] * 1)

    def test_adoptedEndpoints(self) -> None:
        """
        A worker passes the endpoints it adopted: the server listens on
        those.
        """
        options = tap.Options()
        options.parseOptions(["--port", "0"])
        endpoint = _FakeEndpoint(7)
        service = tap.makeService(
            options, MemoryReactorClock(), serverEndpoints=[endpoint]
        )
        service.startService()
        self.addCleanup(service.stopService)
        self.assertEqual(len(endpoint.factories), 1)


class EndpointTests(SynchronousTestCase):
    """
    L{SharedEndpoint}, L{AdoptedEndpoint} and L{portSocket}.
    """

    def test_sharedRecordsPort(self) -> None:
        """
        L{SharedEndpoint.listening} fires with the port it listened with.
        """
        inner = _FakeEndpoint(5)
        shared = SharedEndpoint(inner)
        factory = Factory()
        result = self.successResultOf(shared.listen(factory))
        self.assertIs(result, inner.port)
        self.assertIs(self.successResultOf(shared.listening), inner.port)
        self.assertEqual(inner.factories, [factory])

    def test_sharedFailure(self) -> None:
        """
        When listening fails, both the listen Deferred and
        L{SharedEndpoint.listening} fail with the error.
        """

        class Failing:
            def listen(self, factory: IProtocolFactory) -> Deferred[Any]:
                return defer.fail(OSError("in use"))

        shared = SharedEndpoint(Failing())  # type: ignore[arg-type]
        self.failureResultOf(shared.listen(Factory()), OSError)
        self.failureResultOf(shared.listening, OSError)

    def test_adoptedAdoptsAndClosesDescriptor(self) -> None:
        """
        L{AdoptedEndpoint} adopts its descriptor through the reactor, then
        closes the inherited descriptor (the port holds its own copy).
        """
        reactor = MemoryReactorClock()
        fd = os.open(os.devnull, os.O_RDONLY)
        factory = Factory()
        port = self.successResultOf(
            AdoptedEndpoint(reactor, fd, socket.AF_INET).listen(factory)
        )
        self.assertTrue(IListeningPort.providedBy(port))
        self.assertEqual(reactor.adoptedPorts, [(fd, socket.AF_INET, factory)])
        self.assertRaises(OSError, os.fstat, fd)

    def test_adoptedSocketMadeNonBlocking(self) -> None:
        """
        The inherited socket is made non-blocking before the reactor adopts
        it: a blocking one would block the reactor in accept().
        """
        blocking: list[bool] = []

        class Reactor(MemoryReactorClock):
            def adoptStreamPort(self, fd: int, family: int, factory: Any) -> Any:
                blocking.append(os.get_blocking(fd))
                return super().adoptStreamPort(fd, family, factory)

        sock = socket.socket()
        self.addCleanup(sock.close)
        fd = os.dup(sock.fileno())
        self.assertTrue(os.get_blocking(fd))
        self.successResultOf(
            AdoptedEndpoint(Reactor(), fd, socket.AF_INET).listen(Factory())
        )
        self.assertEqual(blocking, [False])

    def test_adoptFailure(self) -> None:
        """
        When the reactor cannot adopt the socket, listen fails.
        """
        reactor = MemoryReactorClock()
        fd = os.open(os.devnull, os.O_RDONLY)
        self.addCleanup(os.close, fd)
        d = AdoptedEndpoint(reactor, fd, socket.AF_APPLETALK).listen(Factory())
        self.failureResultOf(d)

    def test_portSocket(self) -> None:
        """
        L{portSocket} is the port's descriptor and address family.
        """
        self.assertEqual(
            portSocket(_FakePort(9, socket.AF_INET6)), (9, socket.AF_INET6)
        )
        self.assertEqual(portSocket(_FakePort(4, socket.AF_UNIX)), (4, socket.AF_UNIX))

    def test_portSocketRefusesOthers(self) -> None:
        """
        A port without a socket of a shareable family cannot be shared.
        """
        self.assertRaises(ValueError, portSocket, object())
        self.assertRaises(ValueError, portSocket, _FakePort(3, socket.AF_APPLETALK))


class WorkerArgumentsTests(SynchronousTestCase):
    """
    The command line of a worker.
    """

    def test_arguments(self) -> None:
        """
        The sockets are numbered from descriptor 3, with their families, and
        the options follow C{--}.
        """
        args = workerArguments([(7, 2), (9, 1)], ["--port", "0"], 3)
        self.assertEqual(
            args, ["--fds", "3:2,4:1", "--worker", "3", "--", "--port", "0"]
        )
        self.assertEqual(
            parseWorkerArguments(args), ([(3, 2), (4, 1)], 3, ["--port", "0"])
        )

    def test_badArguments(self) -> None:
        """
        Anything else is refused.
        """
        self.assertRaises(ValueError, parseWorkerArguments, ["--port", "0"])
        self.assertRaises(ValueError, parseWorkerArguments, ["--fds", "3:2"])
        self.assertRaises(
            ValueError, parseWorkerArguments, ["--fds", "3:2", "--", "--port", "0"]
        )


class _SupervisorTestCase(SynchronousTestCase):
    """
    A L{WorkerSupervisor} of 2 workers, with a fake C{spawnProcess} and a
    fake clock.
    """

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.spawner = _Spawner()
        self.events: list[dict[str, Any]] = []
        self.patch(
            _workers, "_log", Logger(observer=cast(ILogObserver, self.events.append))
        )
        self.endpoints = [_FakeEndpoint(11), _FakeEndpoint(12, socket.AF_UNIX)]
        self.supervisor = WorkerSupervisor(
            self.reactor,
            ["--port", "0", "--workers", "3"],
            2,
            self.endpoints,
            killAfter=15,
            spawnProcess=self.spawner,
            executable="/py",
        )

    def _start(self) -> None:
        for endpoint in self.supervisor.endpoints:
            endpoint.listen(Factory())
        self.supervisor.startService()

    def _messages(self) -> list[str]:
        return [formatEvent(e) for e in self.events]


class SupervisorTests(_SupervisorTestCase):
    """
    L{WorkerSupervisor}: starting, restarting and stopping workers.
    """

    def test_waitsForListening(self) -> None:
        """
        No worker starts before the parent listens on every endpoint.
        """
        self.supervisor.startService()
        self.assertEqual(self.spawner.calls, [])
        self.supervisor.endpoints[0].listen(Factory())
        self.assertEqual(self.spawner.calls, [])
        self.supervisor.endpoints[1].listen(Factory())
        self.assertEqual(len(self.spawner.calls), 2)

    def test_spawnsWorkers(self) -> None:
        """
        Each worker runs C{python -m agilerpc._workerprocess} with the parent's
        sockets at descriptors 3 and 4, its number (from 1: the parent is
        0), a pipe on stdin, its output read by the parent, and the parent's
        command line.
        """
        self._start()
        self.assertEqual(len(self.spawner.calls), 2)
        for number, (_protocol, executable, args, kwargs) in enumerate(
            self.spawner.calls, 1
        ):
            self.assertEqual(executable, "/py")
            self.assertEqual(
                args,
                [
                    "/py",
                    "-m",
                    "agilerpc._workerprocess",
                    "--fds",
                    f"3:{socket.AF_INET},4:{socket.AF_UNIX}",
                    "--worker",
                    str(number),
                    "--",
                    "--port",
                    "0",
                    "--workers",
                    "3",
                ],
            )
            self.assertEqual(kwargs["childFDs"], {0: "w", 1: "r", 2: "r", 3: 11, 4: 12})
            self.assertEqual(kwargs["env"], dict(os.environ))
        self.assertEqual(sorted(self.supervisor.workers), [1, 2])
        self.assertEqual(
            self._messages(),
            ["worker 1 started (pid 1001)", "worker 2 started (pid 1002)"],
        )

    def test_listenFailureStartsNothing(self) -> None:
        """
        When the parent cannot listen, no worker starts and the failure is
        logged.
        """
        self.supervisor.startService()
        self.supervisor.endpoints[0].listening.errback(OSError("in use"))
        self.supervisor.endpoints[1].listen(Factory())
        self.assertEqual(self.spawner.calls, [])
        self.assertEqual(self._messages(), ["not starting workers"])
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 0)

    def test_restartAfterDeath(self) -> None:
        """
        A worker that dies is started again in the same slot after
        L{WorkerSupervisor.minDelay}.
        """
        self._start()
        self.spawner.end(0, _killed())
        self.assertEqual(sorted(self.supervisor.workers), [2])
        self.reactor.advance(0.09)
        self.assertEqual(len(self.spawner.calls), 2)
        self.reactor.advance(0.02)
        self.assertEqual(len(self.spawner.calls), 3)
        self.assertEqual(sorted(self.supervisor.workers), [1, 2])
        self.assertIs(self.supervisor.workers[1], self.spawner.calls[2][0])
        self.assertEqual(self.supervisor.restarts, 1)
        self.assertIn(
            "worker 1 (pid 1001) exited (A process has ended with a probable error "
            "condition: process ended by signal 9.); restarting it in 0.1s",
            self._messages(),
        )

    def test_backoffDoublesAndIsBounded(self) -> None:
        """
        Each quick death of a slot doubles the delay, up to
        L{WorkerSupervisor.maxDelay}.
        """
        self._start()
        delays = []
        for _ in range(9):
            index = len(self.spawner.calls)
            self.spawner.end(
                self.spawner.calls.index(
                    next(
                        c
                        for c in self.spawner.calls
                        if c[0] is self.supervisor.workers[1]
                    )
                ),
                _killed(),
            )
            [call] = self.reactor.getDelayedCalls()
            delays.append(round(call.getTime() - self.reactor.seconds(), 6))
            self.reactor.advance(call.getTime() - self.reactor.seconds())
            self.assertEqual(len(self.spawner.calls), index + 1)
        self.assertEqual(delays, [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0, 5.0])

    def test_backoffResetsAfterStableRun(self) -> None:
        """
        A worker that ran for L{WorkerSupervisor.stableAfter} seconds before
        dying is restarted after the shortest delay again.
        """
        self._start()
        self.spawner.end(0, _killed())
        self.reactor.advance(0.1)
        self.spawner.end(2, _killed())
        self.reactor.advance(0.2)
        self.assertEqual(len(self.spawner.calls), 4)
        self.reactor.advance(10)
        self.spawner.end(3, _done())
        self.reactor.advance(0.1)
        self.assertEqual(len(self.spawner.calls), 5)

    def test_stopSignalsWorkersAndWaits(self) -> None:
        """
        Stopping sends SIGTERM to every worker and fires once all of them
        have exited; none is restarted.
        """
        self._start()
        d = self.supervisor.stopService()
        self.assertEqual(
            [t.signals for t in self.spawner.transports], [["TERM"], ["TERM"]]
        )
        self.assertNoResult(d)
        self.spawner.end(0, _done())
        self.assertNoResult(d)
        self.spawner.end(1, _done())
        self.successResultOf(d)
        self.reactor.advance(60)
        self.assertEqual(len(self.spawner.calls), 2)
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_stopCancelsPendingRestart(self) -> None:
        """
        A worker waiting to be restarted is not started once stopping.
        """
        self._start()
        self.spawner.end(0, _killed())
        d = self.supervisor.stopService()
        self.assertEqual([t.signals for t in self.spawner.transports], [[], ["TERM"]])
        self.spawner.end(1, _done())
        self.successResultOf(d)
        self.reactor.advance(60)
        self.assertEqual(len(self.spawner.calls), 2)

    def test_stopKillsStragglers(self) -> None:
        """
        A worker still running C{killAfter} seconds after SIGTERM gets
        SIGKILL.
        """
        self._start()
        d = self.supervisor.stopService()
        self.spawner.end(0, _done())
        self.reactor.advance(14.9)
        self.assertEqual(self.spawner.transports[1].signals, ["TERM"])
        self.reactor.advance(0.1)
        self.assertEqual(self.spawner.transports[1].signals, ["TERM", "KILL"])
        self.assertNoResult(d)
        self.spawner.end(1, _killed())
        self.successResultOf(d)

    def test_stopWithoutWorkers(self) -> None:
        """
        Stopping before any worker started fires at once, and a late
        listening starts none.
        """
        self.supervisor.startService()
        self.successResultOf(self.supervisor.stopService())
        for endpoint in self.supervisor.endpoints:
            endpoint.listen(Factory())
        self.assertEqual(self.spawner.calls, [])

    def test_outputRelayed(self) -> None:
        """
        Each line a worker writes outside its log is logged by the parent
        with the worker's number and pid (at warn level from stderr); a last
        line without newline is logged when it ends.
        """
        self._start()
        protocol = self.spawner.calls[1][0]
        protocol.childDataReceived(1, b"one\ntw")
        protocol.childDataReceived(2, b"err\n\n")
        protocol.childDataReceived(1, b"o\r\nthr")
        protocol.childDataReceived(1, b"ee")
        self.spawner.end(1, _done())
        self.assertEqual(
            [(formatEvent(e), e["log_level"]) for e in self.events[2:6]],
            [
                ("worker 2 (pid 1002): one", LogLevel.info),
                ("worker 2 (pid 1002): err", LogLevel.warn),
                ("worker 2 (pid 1002): two", LogLevel.info),
                ("worker 2 (pid 1002): three", LogLevel.info),
            ],
        )


def _record(data: dict[str, Any]) -> bytes:
    """
    A record as a worker writes it on its stdout.
    """
    return b"\x1e" + json.dumps(data).encode("utf-8") + b"\n"


def _snapshot(calls: int, connections: int = 0) -> MetricsSnapshot:
    """
    A snapshot of C{calls} ok calls of C{m} over C{connections} open ones.
    """
    metrics = ServerMetrics()
    for _ in range(calls):
        metrics.recordCall("m", "ok", 0.001)
    snapshot = MetricsSnapshot.of(metrics)
    snapshot.openConnections = connections
    return snapshot


def _snapshotRecord(snapshot: MetricsSnapshot) -> bytes:
    """
    The record holding C{snapshot}, as a worker writes it.
    """
    out = io.StringIO()
    metrics = ServerMetrics()
    for (method, outcome), count in snapshot.calls.items():
        for _ in range(count):
            metrics.recordCall(method, outcome, 0.001)
    _workers._writeSnapshot(out, metrics)
    return out.getvalue().encode("utf-8")


class WorkerLogTests(_SupervisorTestCase):
    """
    A worker's log events reach the parent's log as events.
    """

    def test_eventReemitted(self) -> None:
        """
        A worker's event is re-emitted with its own fields, level and
        namespace, plus C{worker}, C{workerPid}, and a C{log_system} naming
        the worker.
        """
        self._start()
        out = io.StringIO()
        Logger(namespace="agilerpc.server", observer=_workers._recordsTo(out)).warn(
            "{peer}: {method} slow", peer=IPv4Address("TCP", "10.0.0.1", 5), method="m"
        )
        protocol = self.spawner.calls[1][0]
        protocol.childDataReceived(1, out.getvalue().encode("utf-8"))
        [event] = self.events[2:]
        self.assertEqual(
            (
                formatEvent(event),
                event["log_level"],
                event["log_namespace"],
                event["method"],
                event["worker"],
                event["workerPid"],
                event["log_system"],
            ),
            (
                "10.0.0.1:5: m slow",
                LogLevel.warn,
                "agilerpc.server",
                "m",
                2,
                1002,
                "worker 2 (pid 1002) agilerpc.server#warn",
            ),
        )

    def test_eventAsJSON(self) -> None:
        """
        Through C{agilerpc.jsonLogObserver}, a re-emitted event is a JSON
        line like the parent's own, with C{worker} and C{workerPid}.
        """
        out = io.StringIO()
        self.patch(_workers, "_log", Logger(observer=jsonLogObserver(out)))
        self._start()
        protocol = self.spawner.calls[0][0]
        protocol.childDataReceived(
            1, _record({"log_format": "hi {x}", "x": 1, "log_namespace": "n"})
        )
        parent, *_, worker = (json.loads(line) for line in out.getvalue().splitlines())
        self.assertEqual(
            (worker["x"], worker["worker"], worker["workerPid"]), (1, 1, 1001)
        )
        self.assertEqual(worker["log_namespace"], "n")
        self.assertEqual(parent["log_namespace"], _workers._log.namespace)

    def test_legacySystemAndFailure(self) -> None:
        """
        An event with a C{log_system} keeps it after the worker's name; a
        failure arrives with its traceback.
        """
        self._start()
        out = io.StringIO()
        try:
            1 / 0  # noqa: B018
        except ZeroDivisionError:
            Logger(namespace="n", observer=_workers._recordsTo(out)).failure(
                "oops", log_system="RpcServerProtocol,3"
            )
        self.spawner.calls[0][0].childDataReceived(1, out.getvalue().encode("utf-8"))
        [event] = self.events[2:]
        self.assertEqual(event["log_system"], "worker 1 (pid 1001) RpcServerProtocol,3")
        self.assertIn("ZeroDivisionError", event["log_failure"].getTraceback())

    def test_textAroundRecords(self) -> None:
        """
        Text before a record on the same line (a print without newline), and
        a record that is not one, are relayed as text.
        """
        self._start()
        protocol = self.spawner.calls[0][0]
        protocol.childDataReceived(
            1, b"partial" + _record({"log_format": "ok", "log_namespace": "n"})
        )
        protocol.childDataReceived(1, b"\x1e{not json\n\x1e[1]\n")
        self.assertEqual(
            self._messages()[2:],
            [
                "worker 1 (pid 1001): partial",
                "ok",
                "worker 1 (pid 1001): {not json",
                "worker 1 (pid 1001): [1]",
            ],
        )


class WorkerMetricsTests(_SupervisorTestCase):
    """
    L{WorkerSupervisor.metrics}: the workers' counters, asked over their
    stdin and answered on their stdout.
    """

    def test_askAndAdd(self) -> None:
        """
        Each worker is asked with a line on its stdin; the result is the sum
        of their answers, counters and gauges.
        """
        self._start()
        d = self.supervisor.metrics()
        self.assertEqual(
            [t.written for t in self.spawner.transports], [b"metrics\n"] * 2
        )
        one, two = (c[0] for c in self.spawner.calls)
        one.childDataReceived(1, _snapshotRecord(_snapshot(3)))
        self.assertNoResult(d)
        two.childDataReceived(1, _snapshotRecord(_snapshot(4)))
        total = self.successResultOf(d)
        self.assertEqual(total.calls, {("m", "ok"): 7})
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_gaugesAdded(self) -> None:
        """
        The workers' gauges are added too.
        """
        self._start()
        d = self.supervisor.metrics()
        for i, (protocol, *_) in enumerate(self.spawner.calls):
            protocol._snapshotReceived(_snapshot(1, connections=i + 2))
        self.assertEqual(self.successResultOf(d).openConnections, 5)

    def test_silentWorker(self) -> None:
        """
        A worker that does not answer within L{metricsTimeout} counts as it
        last answered, and the delay is logged.
        """
        self._start()
        one, two = (c[0] for c in self.spawner.calls)
        first = self.supervisor.metrics()
        one.childDataReceived(1, _snapshotRecord(_snapshot(3)))
        two.childDataReceived(1, _snapshotRecord(_snapshot(4)))
        self.successResultOf(first)
        d = self.supervisor.metrics()
        one.childDataReceived(1, _snapshotRecord(_snapshot(5)))
        self.reactor.advance(self.supervisor.metricsTimeout)
        self.assertEqual(self.successResultOf(d).calls, {("m", "ok"): 9})
        self.assertIn(
            "worker 2 (pid 1002) did not send its metrics within 5.0s; counting "
            "the last it sent",
            self._messages(),
        )

    def test_deadWorkerKept(self) -> None:
        """
        The counters of a worker that exits (its last snapshot: one it sends
        as it stops) are kept, once, even when it exits while asked: the
        totals do not go back when it is replaced.  Its gauges are not
        kept.
        """
        self._start()
        one, two = (c[0] for c in self.spawner.calls)
        one.childDataReceived(1, _snapshotRecord(_snapshot(3)))
        asked = self.supervisor.metrics()
        one._snapshotReceived(_snapshot(6, connections=2))
        self.spawner.end(0, _killed())
        self.assertNoResult(asked)
        two._snapshotReceived(_snapshot(1))
        total = self.successResultOf(asked)
        self.assertEqual((total.calls, total.openConnections), ({("m", "ok"): 7}, 0))
        self.reactor.advance(self.supervisor.minDelay)
        d = self.supervisor.metrics()
        for protocol in [c[0] for c in self.spawner.calls[1:]]:
            protocol._snapshotReceived(_snapshot(1))
        total = self.successResultOf(d)
        self.assertEqual((total.calls, total.openConnections), ({("m", "ok"): 8}, 0))
        self.spawner.end(1, _done())
        d = self.supervisor.metrics()
        self.spawner.calls[2][0]._snapshotReceived(_snapshot(1))
        self.assertEqual(self.successResultOf(d).calls, {("m", "ok"): 8})

    def test_endsWhileAsked(self) -> None:
        """
        A worker that ends while asked, after answering, counts once: in
        L{WorkerSupervisor.retired}.
        """
        self._start()
        one, two = (c[0] for c in self.spawner.calls)
        two._snapshotReceived(_snapshot(1))
        d = self.supervisor.metrics()
        one._snapshotReceived(_snapshot(6, connections=2))
        two._snapshotReceived(_snapshot(2))
        self.assertEqual(self.successResultOf(d).calls, {("m", "ok"): 8})
        d = self.supervisor.metrics()
        two._snapshotReceived(_snapshot(2))
        self.spawner.end(0, _killed())
        self.assertEqual(self.successResultOf(d).calls, {("m", "ok"): 8})

    def test_noWorkers(self) -> None:
        """
        Without running workers the sum is empty at once.
        """
        self.assertEqual(self.successResultOf(self.supervisor.metrics()).calls, {})


class _WorkerReactor(MemoryReactorClock):
    """
    The memory reactor a worker runs with: its C{run} runs the startup
    hooks, then stops.
    """


class WorkerMainTests(SynchronousTestCase):
    """
    L{workerMain}, with a memory reactor.
    """

    def setUp(self) -> None:
        read, write = os.pipe()
        self.addCleanup(os.close, read)
        self.parentRead, self.parentWrite = read, write
        self.output = io.StringIO()
        self.observers: list[Any] = []

        class Beginner:
            def beginLoggingTo(_, observers: list[Any], **kwargs: Any) -> None:
                self.observers.extend(observers)

        self.beginner = Beginner()
        self.events: list[dict[str, Any]] = []
        self.patch(
            _workers, "_log", Logger(observer=cast(ILogObserver, self.events.append))
        )

    def tearDown(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.parentWrite)

    def test_servesAdoptedSockets(self) -> None:
        """
        The worker adopts the inherited descriptors (here 5 as IPv4) with the
        server of its options, as worker 1, watches its stdin, and logs to
        its stdout as records for the parent.
        """
        reactor = _WorkerReactor()
        fd = os.open(os.devnull, os.O_RDONLY)
        code = workerMain(
            [
                "--fds",
                f"{fd}:{socket.AF_INET}",
                "--worker",
                "1",
                "--",
                "--port",
                "0",
                "--workers",
                "2",
            ],
            tap.Options,
            tap.makeService,
            reactor,
            self.beginner,
            self.parentRead,
            self.output,
        )
        self.assertEqual(code, 0)
        self.assertEqual(len(reactor.adoptedPorts), 1)
        self.assertEqual(reactor.adoptedPorts[0][:2], (fd, socket.AF_INET))
        [watch] = reactor.readers
        self.assertEqual(watch.fileno(), self.parentRead)
        [(stop, args, kwargs)] = reactor.triggers["before"]["shutdown"]
        self.successResultOf(stop(*args, **kwargs))
        self.observers[0]({"log_format": "hi {x}", "x": 1, "log_namespace": "n"})
        record = self.output.getvalue()
        self.assertTrue(record.startswith("\x1e") and record.endswith("}\n"), record)
        self.assertEqual(
            {k: v for k, v in json.loads(record[1:]).items() if k != "log_flattened"},
            {"log_format": "hi {x}", "x": 1, "log_namespace": "n"},
        )
        factory = reactor.adoptedPorts[0][2]
        assert isinstance(factory, RpcServerFactory)
        self.assertEqual(factory.stats()["worker"], 1)
        os.close(self.parentWrite)
        self.assertEqual(watch.doRead(), "EOF")
        watch.connectionLost(Failure(EOFError()))
        self.assertEqual(reactor.readers, set())
        self.assertEqual(
            [formatEvent(e) for e in self.events],
            ["the parent process is gone; stopping"],
        )

    def test_metricsAnswered(self) -> None:
        """
        With C{--metrics-port} a worker serves no HTTP: it counts into
        metrics, answers each C{metrics} line on its stdin with a snapshot
        record, and writes a last one as it exits.
        """
        reactor = _WorkerReactor()
        fd = os.open(os.devnull, os.O_RDONLY)
        code = workerMain(
            [
                "--fds",
                f"{fd}:{socket.AF_INET}",
                "--worker",
                "2",
                "--",
                "--port",
                "0",
                "--metrics-port",
                "9100",
            ],
            tap.Options,
            tap.makeService,
            reactor,
            self.beginner,
            self.parentRead,
            self.output,
        )
        self.assertEqual((code, reactor.tcpServers), (0, []))
        factory = reactor.adoptedPorts[0][2]
        assert isinstance(factory, RpcServerFactory)
        metrics = factory.observer
        assert isinstance(metrics, ServerMetrics)
        metrics.recordCall("m", "ok", 0.001)
        [watch] = reactor.readers
        os.write(self.parentWrite, b"metr")
        watch.doRead()
        os.write(self.parentWrite, b"ics\nmetrics\nother\n")
        watch.doRead()
        records = [
            json.loads(line)
            for line in self.output.getvalue().split("\x1e")
            if line.startswith('{"agilerpc_metrics":')
        ]
        self.assertEqual(
            [MetricsSnapshot.fromJSON(r["agilerpc_metrics"]).calls for r in records],
            [{}, {("m", "ok"): 1}, {("m", "ok"): 1}],
        )

    def test_badOptions(self) -> None:
        """
        Options the worker cannot parse make it exit with code 2.
        """
        code = workerMain(
            ["--fds", "3:2", "--worker", "1", "--", "--workers", "0"],
            tap.Options,
            tap.makeService,
            _WorkerReactor(),
            self.beginner,
            self.parentRead,
            self.output,
        )
        self.assertEqual(code, 2)

    def test_cannotAdopt(self) -> None:
        """
        A worker that cannot serve its sockets exits with code 1.
        """
        reactor = _WorkerReactor()
        fd = os.open(os.devnull, os.O_RDONLY)
        self.addCleanup(os.close, fd)
        code = workerMain(
            [
                "--fds",
                f"{fd}:{socket.AF_APPLETALK}",
                "--worker",
                "1",
                "--",
                "--port",
                "0",
            ],
            tap.Options,
            tap.makeService,
            reactor,
            self.beginner,
            self.parentRead,
            self.output,
        )
        self.assertEqual(code, 1)
        self.assertEqual(reactor.adoptedPorts, [])
        [event] = self.events
        self.assertEqual(formatEvent(event), "cannot serve the inherited sockets")
        self.assertIsInstance(event["log_failure"].value, UnsupportedAddressFamily)

    def test_parentWatch(self) -> None:
        """
        L{_ParentWatch} reads what the parent writes and calls back at the
        end of the pipe.
        """
        lost: list[bool] = []
        os.set_blocking(self.parentRead, False)
        watch = _ParentWatch(self.parentRead, lambda: lost.append(True))
        self.assertEqual(watch.fileno(), self.parentRead)
        self.assertIsNone(watch.doRead())
        os.write(self.parentWrite, b"x")
        self.assertIsNone(watch.doRead())
        self.assertEqual(lost, [])
        os.close(self.parentWrite)
        self.assertEqual(watch.doRead(), "EOF")
        self.assertEqual(lost, [True])

    def test_parentWatchHangup(self) -> None:
        """
        When the reactor sees the pipe hang up it calls C{connectionLost}
        rather than C{doRead}: that is the parent's end too.
        """
        lost: list[bool] = []
        watch = _ParentWatch(self.parentRead, lambda: lost.append(True))
        watch.connectionLost(Failure(EOFError()))
        self.assertEqual(lost, [True])


_STARTED = re.compile(r"worker (\d+) started \(pid (\d+)\)")


def _pidsOf(server: ServerProcess) -> dict[int, int]:
    """
    The pid of each worker slot, from the parent's log (latest start wins).
    """
    pids: dict[int, int] = {}
    for slot, pid in _STARTED.findall(server.output()):
        pids[int(slot)] = int(pid)
    return pids


def _killAllLater(testCase: SynchronousTestCase, server: ServerProcess) -> None:
    """
    In C{testCase}'s cleanup, kill every worker the server ever started.
    """

    def kill() -> None:
        for _, pid in _STARTED.findall(server.output()):
            with contextlib.suppress(OSError):
                os.kill(int(pid), signal.SIGKILL)

    testCase.addCleanup(kill)


def _waitFor(what: str, condition: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _gone(pid: int) -> bool:
    """
    Has process C{pid} exited (or become a zombie)?
    """
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def _pidsSeen(port: int, wanted: set[int], limit: int = 300) -> set[int]:
    """
    Make C{pid()} calls on fresh connections until every pid in C{wanted}
    answered, or C{limit} connections; the pids seen.
    """
    seen: set[int] = set()
    deadline = time.monotonic() + 15
    for _ in range(limit):
        client = RawClient(port)
        try:
            seen.add(client.call("pid")[3])
        finally:
            client.close()
        if wanted <= seen or time.monotonic() > deadline:
            break
    return seen


def _scrape(port: int) -> list[str]:
    """
    The lines of C{/metrics} on C{port}.
    """
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        return cast(bytes, r.read()).decode("utf-8").splitlines()


def _callsCounted(lines: list[str]) -> dict[str, float]:
    """
    The C{agilerpc_server_calls_total} samples of a scrape, by labels.
    """
    return {
        line.split(" ")[0]: float(line.split(" ")[1])
        for line in lines
        if line.startswith("agilerpc_server_calls_total{")
    }


class WorkersIntegrationTests(TestCase):
    """
    Real C{twistd -n agilerpc --workers 2} processes on 127.0.0.1.
    """

    timeout = 60

    def _start(self, ledger: str | None = None, *extraArgs: str) -> ServerProcess:
        server = ServerProcess.start(self, "--workers", "2", *extraArgs, ledger=ledger)
        _killAllLater(self, server)
        _waitFor("the worker", lambda: 1 in _pidsOf(server))
        server.waitForOutput(r"\[worker 1 \(pid \d+\) [^]]*\] .*starting on")
        return server

    def test_callsLandOnEveryProcess(self) -> None:
        """
        Calls on fresh connections are served by the parent and by the
        worker, a child of the parent started with its sockets.
        """
        server = self._start()
        worker = _pidsOf(server)[1]
        with open(f"/proc/{worker}/stat") as f:
            self.assertEqual(int(f.read().rsplit(")", 1)[1].split()[1]), server.pid)
        self.assertEqual(
            _pidsSeen(server.port, {server.pid, worker}), {server.pid, worker}
        )

    def test_killedWorkerReplaced(self) -> None:
        """
        A worker killed with SIGKILL is logged with the signal's number and
        replaced by a new one that serves calls.
        """
        server = self._start()
        old = _pidsOf(server)[1]
        os.kill(old, signal.SIGKILL)
        _waitFor("a new worker", lambda: _pidsOf(server)[1] != old)
        new = _pidsOf(server)[1]
        server.waitForOutput(
            rf"worker 1 \(pid {old}\) exited \(.*by signal 9\.\); restarting it"
        )
        server.waitForOutput(rf"\[worker 1 \(pid {new}\) [^]]*\] .*starting on")
        self.assertEqual(_pidsSeen(server.port, {server.pid, new}), {server.pid, new})

    def test_workerStopsWhenParentDies(self) -> None:
        """
        A worker whose parent was killed (so it could not stop it) stops by
        itself: its stdin, which the parent held open, reaches its end.
        """
        server = self._start()
        worker = _pidsOf(server)[1]
        self.assertEqual(server.stop(signal.SIGKILL), -signal.SIGKILL)
        _waitFor("the worker to exit", lambda: _gone(worker))

    @inlineCallbacks
    def test_gracefulStopLosesNothing(self) -> Any:
        """
        SIGTERM to the parent while clients stream incr() calls over several
        connections: every call that was answered ran exactly once, every
        other call failed as never sent, and every process exits.
        """
        ledger = os.path.abspath(self.mktemp())
        server = yield deferToThread(self._start, ledger)
        worker = _pidsOf(server)[1]
        from twisted.internet import reactor

        clients = [RpcClient(reactor, "127.0.0.1", server.port) for _ in range(6)]
        for client in clients:
            self.addCleanup(client.close, 1)
        stream = IncrStream(self, clients, 5)
        results = stream.results
        yield deferLater(reactor, 0.5, lambda: None)
        code = yield deferToThread(server.stop)
        self.assertEqual(code, -signal.SIGTERM, server.output())
        self.assertFalse(os.path.exists(f"/proc/{worker}"))
        stopped = stream.stop()
        for client in clients:
            client.close(0)
        yield stopped

        answered = {t for t, r in results.items() if not isinstance(r, Failure)}
        failures = Counter(
            type(r.value).__name__ for r in results.values() if isinstance(r, Failure)
        )
        self.assertEqual(set(failures) - {"ClientClosed"}, set())
        with open(ledger, encoding="utf-8") as f:
            runs = Counter(line.strip() for line in f if line.strip())
        self.assertEqual(set(runs), answered)
        self.assertEqual([t for t, n in runs.items() if n != 1], [])
        self.assertGreater(len(answered), 100)
        self.assertIn(f"worker 1 (pid {worker}) stopped", server.output())

    def test_metricsTotals(self) -> None:
        """
        With C{--metrics-port}, one scrape of the parent counts the calls of
        both processes: after calls on fresh connections that both served
        (as C{system.stats} says), C{agilerpc_server_calls_total} adds up to
        every call made, and the gauges to both processes' connections.
        """
        server = self._start(
            None, "--metrics-port", "0", "--metrics-interface", "127.0.0.1"
        )
        metricsPort = int(server.waitForOutput(r"MetricsSite starting on (\d+)")[1])
        worker = _pidsOf(server)[1]
        served: Counter[tuple[int, int]] = Counter()
        calls = 0
        kept = []
        for i in range(300):
            client = RawClient(server.port)
            self.assertEqual(client.call("sayHello", "x")[3], "hello x")
            stats = client.call("system.stats")[3]
            calls += 2
            served[stats["pid"], stats["worker"]] += 1
            if i < 4:
                kept.append(client)
            else:
                client.close()
            if len(served) == 2 and i >= 20:
                break
        self.assertEqual(set(served), {(server.pid, 0), (worker, 1)})
        lines = _scrape(metricsPort)
        counted = _callsCounted(lines)
        self.assertEqual(sum(counted.values()), calls, counted)
        self.assertEqual(
            counted['agilerpc_server_calls_total{method="sayHello",outcome="ok"}'],
            calls / 2,
        )
        self.assertIn(f"agilerpc_server_connections {float(len(kept))}", lines)
        for client in kept:
            client.close()

    def test_workerLogsAsJSON(self) -> None:
        """
        With C{--logger agilerpc.jsonLogObserver}, the worker's own events
        are JSON lines of the parent's log, at their level and namespace,
        with C{worker} and C{workerPid}.
        """
        server = ServerProcess.start(
            self,
            "--workers",
            "2",
            twistdOptions=("--logger", "agilerpc.jsonLogObserver"),
        )
        _killAllLater(self, server)

        def workerEvents() -> list[dict[str, Any]]:
            events = []
            for line in server.output().splitlines():
                if '"workerPid"' in line:
                    events.append(json.loads(line))
            return events

        _waitFor(
            "the worker's listening event",
            lambda: any("starting on" in e.get("log_text", "") for e in workerEvents()),
        )
        [serving] = [e for e in workerEvents() if e["log_namespace"] == "agilerpc.tap"]
        self.assertEqual((serving["worker"], serving["log_level"]["name"]), (1, "info"))
        self.assertIn("agilerpc serving", serving["log_format"])
        wanted = {server.pid, serving["workerPid"]}
        self.assertEqual(_pidsSeen(server.port, wanted), wanted)
        self.assertEqual(server.stop(), -signal.SIGTERM)

    def test_stoppedWorkerCounted(self) -> None:
        """
        The calls of a worker stopped with SIGTERM (and replaced) still count:
        it sends its counters as it exits and the parent keeps them, though
        no scrape asked for them before.
        """
        server = self._start(
            None, "--metrics-port", "0", "--metrics-interface", "127.0.0.1"
        )
        metricsPort = int(server.waitForOutput(r"MetricsSite starting on (\d+)")[1])
        worker = _pidsOf(server)[1]
        calls = byWorker = 0
        for i in range(300):
            client = RawClient(server.port)
            try:
                byWorker += client.call("system.stats")[3]["worker"] == 1
            finally:
                client.close()
            calls += 1
            if byWorker >= 3 and i >= 10:
                break
        self.assertGreaterEqual(byWorker, 3)
        os.kill(worker, signal.SIGTERM)
        server.waitForOutput(rf"worker 1 \(pid {worker}\) exited \(A process has ended")
        _waitFor("a new worker", lambda: _pidsOf(server)[1] != worker)
        self.assertEqual(sum(_callsCounted(_scrape(metricsPort)).values()), calls)

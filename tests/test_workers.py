"""
Tests for L{agilerpc._workers}: C{twistd agilerpc --workers N}, its options,
the supervisor of the worker processes, the worker's main, and real
C{twistd -n agilerpc --workers 2} processes on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import signal
import socket
import time
from collections import Counter
from typing import Any, cast

from twisted.application.service import MultiService
from twisted.internet import defer
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
from twisted.logger import ILogObserver, Logger, formatEvent
from twisted.python import usage
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer

from agilerpc import RpcClient, _workers, tap
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

    def signalProcess(self, name: str) -> None:
        self.signals.append(name)


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
        args = workerArguments([(7, 2), (9, 1)], ["--port", "0"])
        self.assertEqual(args, ["--fds", "3:2,4:1", "--", "--port", "0"])
        self.assertEqual(
            parseWorkerArguments(args), ([(3, 2), (4, 1)], ["--port", "0"])
        )

    def test_badArguments(self) -> None:
        """
        Anything else is refused.
        """
        self.assertRaises(ValueError, parseWorkerArguments, ["--port", "0"])
        self.assertRaises(ValueError, parseWorkerArguments, ["--fds", "3:2"])


class SupervisorTests(SynchronousTestCase):
    """
    L{WorkerSupervisor}: starting, restarting and stopping workers, with a
    fake C{spawnProcess} and a fake clock.
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
        sockets at descriptors 3 and 4, a pipe on stdin, its output read by
        the parent, and the parent's command line.
        """
        self._start()
        self.assertEqual(len(self.spawner.calls), 2)
        for _protocol, executable, args, kwargs in self.spawner.calls:
            self.assertEqual(executable, "/py")
            self.assertEqual(
                args,
                [
                    "/py",
                    "-m",
                    "agilerpc._workerprocess",
                    "--fds",
                    f"3:{socket.AF_INET},4:{socket.AF_UNIX}",
                    "--",
                    "--port",
                    "0",
                    "--workers",
                    "3",
                ],
            )
            self.assertEqual(kwargs["childFDs"], {0: "w", 1: "r", 2: "r", 3: 11, 4: 12})
            self.assertEqual(kwargs["env"], dict(os.environ))
        self.assertEqual(sorted(self.supervisor.workers), [0, 1])
        self.assertEqual(
            self._messages(),
            ["worker 0 started (pid 1001)", "worker 1 started (pid 1002)"],
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
        self.assertEqual(sorted(self.supervisor.workers), [1])
        self.reactor.advance(0.09)
        self.assertEqual(len(self.spawner.calls), 2)
        self.reactor.advance(0.02)
        self.assertEqual(len(self.spawner.calls), 3)
        self.assertEqual(sorted(self.supervisor.workers), [0, 1])
        self.assertIs(self.supervisor.workers[0], self.spawner.calls[2][0])
        self.assertEqual(self.supervisor.restarts, 1)
        self.assertIn(
            "worker 0 (pid 1001) exited (A process has ended with a probable error "
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
                        if c[0] is self.supervisor.workers[0]
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
        Each line a worker writes is logged by the parent with the worker's
        slot and pid; a last line without newline is logged when it ends.
        """
        self._start()
        protocol = self.spawner.calls[1][0]
        protocol.childDataReceived(1, b"one\ntw")
        protocol.childDataReceived(2, b"err\n\n")
        protocol.childDataReceived(1, b"o\r\nthr")
        protocol.childDataReceived(1, b"ee")
        self.spawner.end(1, _done())
        self.assertEqual(
            self._messages()[2:6],
            [
                "worker 1 (pid 1002): one",
                "worker 1 (pid 1002): err",
                "worker 1 (pid 1002): two",
                "worker 1 (pid 1002): three",
            ],
        )


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
        server of its options, watches its stdin, and logs to its stdout.
        """
        reactor = _WorkerReactor()
        fd = os.open(os.devnull, os.O_RDONLY)
        code = workerMain(
            ["--fds", f"{fd}:{socket.AF_INET}", "--", "--port", "0", "--workers", "2"],
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
        self.assertIn("hi 1\n", self.output.getvalue())
        os.close(self.parentWrite)
        self.assertEqual(watch.doRead(), "EOF")
        watch.connectionLost(Failure(EOFError()))
        self.assertEqual(reactor.readers, set())
        self.assertEqual(
            [formatEvent(e) for e in self.events],
            ["the parent process is gone; stopping"],
        )

    def test_badOptions(self) -> None:
        """
        Options the worker cannot parse make it exit with code 2.
        """
        code = workerMain(
            ["--fds", "3:2", "--", "--workers", "0"],
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
            ["--fds", f"{fd}:{socket.AF_APPLETALK}", "--", "--port", "0"],
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


class WorkersIntegrationTests(TestCase):
    """
    Real C{twistd -n agilerpc --workers 2} processes on 127.0.0.1.
    """

    timeout = 60

    def _start(self, ledger: str | None = None) -> ServerProcess:
        server = ServerProcess.start(self, "--workers", "2", ledger=ledger)
        _killAllLater(self, server)
        _waitFor("the worker", lambda: 0 in _pidsOf(server))
        server.waitForOutput(r"worker 0 \(pid \d+\): .*starting on")
        return server

    def test_callsLandOnEveryProcess(self) -> None:
        """
        Calls on fresh connections are served by the parent and by the
        worker, a child of the parent started with its sockets.
        """
        server = self._start()
        worker = _pidsOf(server)[0]
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
        old = _pidsOf(server)[0]
        os.kill(old, signal.SIGKILL)
        _waitFor("a new worker", lambda: _pidsOf(server)[0] != old)
        new = _pidsOf(server)[0]
        server.waitForOutput(
            rf"worker 0 \(pid {old}\) exited \(.*by signal 9\.\); restarting it"
        )
        server.waitForOutput(rf"worker 0 \(pid {new}\): .*starting on")
        self.assertEqual(_pidsSeen(server.port, {server.pid, new}), {server.pid, new})

    def test_workerStopsWhenParentDies(self) -> None:
        """
        A worker whose parent was killed (so it could not stop it) stops by
        itself: its stdin, which the parent held open, reaches its end.
        """
        server = self._start()
        worker = _pidsOf(server)[0]
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
        worker = _pidsOf(server)[0]
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
        self.assertIn(f"worker 0 (pid {worker}) stopped", server.output())

"""
One host, all cores: C{twistd -n agilerpc --workers N}.

The parent process opens the listening sockets as usual and serves them
itself; L{WorkerSupervisor} then starts N-1 worker processes
(C{python -m agilerpc._workerprocess}) that inherit those sockets as file
descriptors 3, 4, ... and adopt them with
L{IReactorSocket.adoptStreamPort}, each running the full server built from
the same command line.  The kernel hands every new connection to whichever
process accepts it first.

Why one shared socket rather than C{SO_REUSEPORT} (a socket per process,
bound to the same port): a connection waiting in the shared accept queue is
never lost when a worker dies or stops, since the other processes accept it;
every listener the parent can open is shared unchanged (port 0, C{unix:},
strports options); and no other process of the same user can bind the port
and take a share of the connections.

Workers that exit are started again, after a delay that doubles with each
quick death (bounded by L{WorkerSupervisor.maxDelay}).  Stopping the parent
(twistd does on SIGTERM) sends SIGTERM to every worker, which stops
gracefully like a single server does (goaway, dispatched calls finish), and
waits for them all to exit.  A worker also stops when the parent goes away
without stopping it: the parent holds the other end of the worker's stdin.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
from collections.abc import Callable, Sequence
from typing import Any, cast

from twisted.application.service import IService, Service
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessDone
from twisted.internet.interfaces import (
    IListeningPort,
    IProtocolFactory,
    IStreamServerEndpoint,
)
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import ILogObserver, Logger
from twisted.python.failure import Failure
from zope.interface import implementer

_log = Logger(namespace="agilerpc.workers")

# The first file descriptor a worker finds the listening sockets at.
FIRST_FD = 3

SpawnProcess = Callable[..., Any]

# What a worker process runs: it binds workerMain to the twistd plugin's
# options and service, which this module must not import (tap imports it).
WORKER_MODULE = "agilerpc._workerprocess"


@implementer(IStreamServerEndpoint)
class SharedEndpoint:
    """
    Listen with C{endpoint} and remember the port, so that its socket can be
    handed to the workers.

    @ivar listening: fires with the L{IListeningPort} once listening.
    """

    def __init__(self, endpoint: IStreamServerEndpoint) -> None:
        self._endpoint = endpoint
        self.listening: Deferred[IListeningPort] = Deferred()

    def listen(self, protocolFactory: IProtocolFactory) -> Deferred[IListeningPort]:
        d: Deferred[IListeningPort] = self._endpoint.listen(protocolFactory)

        def listened(port: IListeningPort) -> IListeningPort:
            self.listening.callback(port)
            return port

        def failed(reason: Failure) -> Failure:
            self.listening.errback(reason)
            return reason

        return d.addCallbacks(listened, failed)


@implementer(IStreamServerEndpoint)
class AdoptedEndpoint:
    """
    "Listen" on a socket that is already listening: the file descriptor
    C{fd} of address family C{family}, inherited from the parent.
    """

    def __init__(self, reactor: Any, fd: int, family: int) -> None:
        self._reactor = reactor
        self.fd = fd
        self.family = family

    def listen(self, protocolFactory: IProtocolFactory) -> Deferred[IListeningPort]:
        return defer.execute(self._adopt, protocolFactory)

    def _adopt(self, protocolFactory: IProtocolFactory) -> IListeningPort:
        # The reactor needs it non-blocking (a socket Twisted opened is).
        os.set_blocking(self.fd, False)
        port: IListeningPort = self._reactor.adoptStreamPort(
            self.fd, self.family, protocolFactory
        )
        # The port holds a copy of the socket.  Close the inherited one, so
        # that the socket closes (and refuses connections) as soon as every
        # process has stopped listening, not when the last worker exits.
        os.close(self.fd)
        return port


def portSocket(port: Any) -> tuple[int, int]:
    """
    The file descriptor and address family of a listening port.

    @raise ValueError: if it is not a TCP or UNIX socket port (a TLS
        endpoint's port, say, wraps its factory where a worker cannot see).
    """
    family = getattr(port, "addressFamily", None)
    fileno = getattr(port, "fileno", None)
    if family not in (socket.AF_INET, socket.AF_INET6, socket.AF_UNIX) or not (
        callable(fileno)
    ):
        raise ValueError(f"cannot share {port!r} with worker processes")
    return fileno(), family


def workerArguments(
    sockets: Sequence[tuple[int, int]], argv: Sequence[str]
) -> list[str]:
    """
    The arguments after C{python -m agilerpc._workerprocess} that make a worker
    serve C{sockets} (file descriptor and address family each, found at
    descriptors 3, 4, ... in the worker) with the options in C{argv}.
    """
    fds = ",".join(f"{FIRST_FD + i}:{family}" for i, (_, family) in enumerate(sockets))
    return ["--fds", fds, "--", *argv]


def parseWorkerArguments(
    argv: Sequence[str],
) -> tuple[list[tuple[int, int]], list[str]]:
    """
    The inverse of L{workerArguments}: the inherited descriptors with their
    address families, and the C{twistd agilerpc} options.

    @raise ValueError: if C{argv} is not what L{workerArguments} makes.
    """
    if len(argv) < 3 or argv[0] != "--fds" or argv[2] != "--":
        raise ValueError(f"usage: --fds FD:FAMILY[,...] -- OPTIONS; not {argv!r}")
    sockets = []
    for item in argv[1].split(","):
        fd, family = item.split(":")
        sockets.append((int(fd), int(family)))
    return sockets, list(argv[3:])


class _WorkerProtocol(ProcessProtocol):
    """
    One worker process: relay its output to the parent's log, tell the
    supervisor when it ends.
    """

    def __init__(self, supervisor: WorkerSupervisor, slot: int) -> None:
        self.supervisor = supervisor
        self.slot = slot
        self.pid: int | None = None
        self.startedAt = 0.0
        self._buffers: dict[int, bytes] = {}

    def connectionMade(self) -> None:
        self.pid = getattr(self.transport, "pid", None)

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        buffer = self._buffers.get(childFD, b"") + data
        *lines, rest = buffer.split(b"\n")
        self._buffers[childFD] = rest
        for line in lines:
            self._relay(line)

    def _relay(self, line: bytes) -> None:
        text = line.decode("utf-8", "replace").rstrip("\r")
        if text:
            _log.info(
                "worker {slot} (pid {pid}): {line}",
                slot=self.slot,
                pid=self.pid,
                line=text,
            )

    def processEnded(self, reason: Failure) -> None:
        for childFD in sorted(self._buffers):
            self._relay(self._buffers[childFD])
        self._buffers.clear()
        self.supervisor._workerEnded(self, reason)


class WorkerSupervisor(Service):
    """
    Start C{count} worker processes that serve the sockets of C{endpoints}
    with the options in C{argv}, keep them running, and stop them all
    (gracefully, with SIGTERM) when stopped.

    @ivar endpoints: L{SharedEndpoint}s wrapping the given endpoints: the
        parent must listen with these, so that the supervisor learns its
        sockets.
    @ivar workers: the running workers' protocols, by slot (0 to C{count}-1).
    @ivar minDelay: seconds before restarting a worker that died quickly
        for the first time; doubled for each further quick death of that
        slot, up to C{maxDelay}.
    @ivar stableAfter: a worker that ran this long before it died is
        restarted after C{minDelay} again.
    @ivar killAfter: seconds a stopping worker gets to exit before SIGKILL.
    """

    minDelay = 0.1
    maxDelay = 5.0
    stableAfter = 10.0

    def __init__(
        self,
        reactor: Any,
        argv: Sequence[str],
        count: int,
        endpoints: Sequence[IStreamServerEndpoint],
        killAfter: float = 15.0,
        spawnProcess: SpawnProcess | None = None,
        executable: str = sys.executable,
    ) -> None:
        self._reactor = reactor
        self.argv = list(argv)
        self.count = count
        self.endpoints = [SharedEndpoint(e) for e in endpoints]
        self.killAfter = killAfter
        self._spawnProcess = spawnProcess
        self.executable = executable
        self.workers: dict[int, _WorkerProtocol] = {}
        self._sockets: list[tuple[int, int]] = []
        self._quickDeaths: dict[int, int] = {}
        self._restarts: dict[int, Any] = {}
        self._stopping = False
        self._stopped: Deferred[None] | None = None
        self._killCall: Any = None
        self.restarts = 0

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        self._stopping = False
        d: Deferred[list[IListeningPort]] = defer.gatherResults(
            [e.listening for e in self.endpoints], consumeErrors=True
        )
        d.addCallback(self._listening)
        d.addErrback(lambda f: _log.failure("not starting workers", failure=f))

    def _listening(self, ports: list[IListeningPort]) -> None:
        if self._stopping:
            return
        self._sockets = [portSocket(port) for port in ports]
        for slot in range(self.count):
            self._spawn(slot)

    def _spawn(self, slot: int) -> None:
        self._restarts.pop(slot, None)
        protocol = _WorkerProtocol(self, slot)
        childFDs: dict[int, int | str] = {0: "w", 1: "r", 2: "r"}
        for i, (fd, _) in enumerate(self._sockets):
            childFDs[FIRST_FD + i] = fd
        args = [
            self.executable,
            "-m",
            WORKER_MODULE,
            *workerArguments(self._sockets, self.argv),
        ]
        protocol.startedAt = self._reactor.seconds()
        self.workers[slot] = protocol
        spawn = self._spawnProcess or self._reactor.spawnProcess
        spawn(protocol, self.executable, args, env=dict(os.environ), childFDs=childFDs)
        _log.info("worker {slot} started (pid {pid})", slot=slot, pid=protocol.pid)

    def _workerEnded(self, protocol: _WorkerProtocol, reason: Failure) -> None:
        if self.workers.get(protocol.slot) is protocol:
            del self.workers[protocol.slot]
        if self._stopping:
            _log.info(
                "worker {slot} (pid {pid}) stopped: {why}",
                slot=protocol.slot,
                pid=protocol.pid,
                why=reason.getErrorMessage(),
            )
            if not self.workers and self._stopped is not None:
                stopped, self._stopped = self._stopped, None
                if self._killCall is not None and self._killCall.active():
                    self._killCall.cancel()
                stopped.callback(None)
            return
        slot = protocol.slot
        ranFor = self._reactor.seconds() - protocol.startedAt
        if ranFor >= self.stableAfter:
            self._quickDeaths[slot] = 0
        quick = self._quickDeaths.get(slot, 0)
        delay = min(self.maxDelay, self.minDelay * 2**quick)
        self._quickDeaths[slot] = quick + 1
        level = _log.info if reason.check(ProcessDone) else _log.warn
        level(
            "worker {slot} (pid {pid}) exited ({why}); restarting it in {delay}s",
            slot=slot,
            pid=protocol.pid,
            why=reason.getErrorMessage(),
            delay=delay,
        )
        self.restarts += 1
        self._restarts[slot] = self._reactor.callLater(delay, self._spawn, slot)

    def stopService(self) -> Deferred[None]:
        super().stopService()  # type: ignore[no-untyped-call]
        self._stopping = True
        for call in self._restarts.values():
            if call.active():
                call.cancel()
        self._restarts.clear()
        if not self.workers:
            return defer.succeed(None)
        self._stopped = Deferred()
        for protocol in list(self.workers.values()):
            self._signal(protocol, "TERM")
        self._killCall = self._reactor.callLater(self.killAfter, self._kill)
        return self._stopped

    def _kill(self) -> None:
        for protocol in list(self.workers.values()):
            _log.warn(
                "worker {slot} (pid {pid}) still running after {seconds}s; killing it",
                slot=protocol.slot,
                pid=protocol.pid,
                seconds=self.killAfter,
            )
            self._signal(protocol, "KILL")

    def _signal(self, protocol: _WorkerProtocol, signal: str) -> None:
        transport = protocol.transport
        if transport is None:  # pragma: no cover - set by spawnProcess
            return
        # ProcessExitedAlready: its processEnded is on the way.
        with contextlib.suppress(Exception):
            transport.signalProcess(signal)


class _ParentWatch:
    """
    Read the worker's stdin, whose other end the parent holds: at its end
    (the parent is gone), call C{onLost}.
    """

    def __init__(self, fd: int, onLost: Callable[[], None]) -> None:
        self._fd = fd
        self._onLost = onLost
        self.lost = False

    def fileno(self) -> int:
        return self._fd

    def logPrefix(self) -> str:
        return "parent-watch"

    def doRead(self) -> Any:
        try:
            data = os.read(self._fd, 4096)
        except BlockingIOError:
            return None
        if not data:
            self._onLost()
            return "EOF"
        return None

    def connectionLost(self, reason: Failure) -> None:
        # The reactor calls this instead of doRead when the pipe hangs up.
        self._onLost()


def _logTo(stream: Any) -> ILogObserver:
    """
    A log observer writing each event on one line without a timestamp (the
    parent's log adds its own).
    """
    from twisted.logger import eventAsText

    def observe(event: dict[str, Any]) -> None:
        text = eventAsText(event, includeTimestamp=False)
        stream.write(text.replace("\n", "\n\t") + "\n")
        stream.flush()

    return cast(ILogObserver, observe)


def workerMain(
    argv: Sequence[str],
    makeOptions: Callable[[], Any],
    makeService: Callable[..., IService],
    reactor: Any = None,
    logBeginner: Any = None,
    parentFD: int = 0,
    stdout: Any = None,
) -> int:
    """
    Run a worker: serve the inherited sockets described in C{argv} (see
    L{workerArguments}) until SIGTERM or the end of C{parentFD} (its stdin,
    whose other end the parent holds).  Log to C{stdout} through
    C{logBeginner} (the global ones by default).

    C{makeOptions()} parses the options (a L{twisted.python.usage.Options}:
    C{twistd agilerpc}'s), and C{makeService(config, reactor,
    serverEndpoints=...)} makes the service serving the adopted sockets.

    @return: the exit code: 0 after a clean stop, 1 if it could not serve
        the sockets, 2 for bad options.
    """
    from twisted.logger import globalLogBeginner
    from twisted.python import usage

    if reactor is None:
        from twisted.internet import reactor as globalReactor

        reactor = globalReactor
    sockets, options = parseWorkerArguments(argv)
    if logBeginner is None:
        logBeginner = globalLogBeginner
    logBeginner.beginLoggingTo(
        [_logTo(sys.stdout if stdout is None else stdout)], redirectStandardIO=False
    )
    config = makeOptions()
    try:
        config.parseOptions(options)
    except usage.UsageError as e:
        _log.error("bad options: {error}", error=str(e))
        return 2
    config["workers"] = 1
    adopted: list[IStreamServerEndpoint] = [
        AdoptedEndpoint(reactor, fd, family) for fd, family in sockets
    ]
    service = makeService(config, reactor, serverEndpoints=adopted)

    def parentGone() -> None:
        if watch.lost:
            return
        watch.lost = True
        _log.warn("the parent process is gone; stopping")
        reactor.removeReader(watch)
        if reactor.running:
            reactor.stop()

    watch = _ParentWatch(parentFD, parentGone)
    os.set_blocking(parentFD, False)
    reactor.addReader(watch)
    exitCode = [0]

    def start() -> None:
        try:
            service.startService()
        except Exception:
            _log.failure("cannot serve the inherited sockets")
            exitCode[0] = 1
            reactor.stop()
            return
        reactor.addSystemEventTrigger("before", "shutdown", service.stopService)

    reactor.callWhenRunning(start)
    reactor.run()
    return exitCode[0]

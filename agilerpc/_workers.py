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

Workers are numbered from 1 (the parent is 0).  A worker writes its log
events to its stdout as JSON records (L{RECORD_SEPARATOR}, the event as
L{twisted.logger.eventAsJSON} makes it, a newline); the parent re-emits each
into its own log with the fields C{worker} and C{workerPid} added, and
relays anything else a worker writes (a stray print, a traceback before its
logging started) as text.  With metrics, the parent writes C{metrics} and a
newline to a worker's stdin, and the worker answers with a record holding a
L{MetricsSnapshot <agilerpc.metrics.MetricsSnapshot>} of its counters.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

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
from twisted.logger import (
    ILogObserver,
    Logger,
    eventFromJSON,
    jsonFileLogObserver,
)
from twisted.python.failure import Failure
from zope.interface import implementer

from ._logging import _AddressesAsText

if TYPE_CHECKING:
    from .metrics import MetricsSnapshot, ServerMetrics

_log = Logger(namespace="agilerpc.workers")

#: What starts a record on a worker's stdout (a line without one is text).
RECORD_SEPARATOR = "\x1e"

#: How a record holding a metrics snapshot starts (any other is a log event).
_METRICS_RECORD = b'{"agilerpc_metrics":'

#: What the parent writes to a worker's stdin to ask for its metrics.
METRICS_REQUEST = b"metrics"

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
    sockets: Sequence[tuple[int, int]], argv: Sequence[str], number: int
) -> list[str]:
    """
    The arguments after C{python -m agilerpc._workerprocess} that make worker
    C{number} serve C{sockets} (file descriptor and address family each,
    found at descriptors 3, 4, ... in the worker) with the options in
    C{argv}.
    """
    fds = ",".join(f"{FIRST_FD + i}:{family}" for i, (_, family) in enumerate(sockets))
    return ["--fds", fds, "--worker", str(number), "--", *argv]


def parseWorkerArguments(
    argv: Sequence[str],
) -> tuple[list[tuple[int, int]], int, list[str]]:
    """
    The inverse of L{workerArguments}: the inherited descriptors with their
    address families, the worker's number, and the C{twistd agilerpc}
    options.

    @raise ValueError: if C{argv} is not what L{workerArguments} makes.
    """
    if len(argv) < 5 or argv[0] != "--fds" or argv[2] != "--worker" or argv[4] != "--":
        raise ValueError(
            f"usage: --fds FD:FAMILY[,...] --worker N -- OPTIONS; not {argv!r}"
        )
    sockets = []
    for item in argv[1].split(","):
        fd, family = item.split(":")
        sockets.append((int(fd), int(family)))
    return sockets, int(argv[3]), list(argv[5:])


class _WorkerProtocol(ProcessProtocol):
    """
    One worker process: re-emit its log events into the parent's log, relay
    its other output as text, ask it for its metrics, tell the supervisor
    when it ends.

    @ivar snapshot: the last metrics snapshot it sent, or L{None}.
    """

    def __init__(self, supervisor: WorkerSupervisor, slot: int) -> None:
        self.supervisor = supervisor
        self.slot = slot
        self.pid: int | None = None
        self.startedAt = 0.0
        self.snapshot: MetricsSnapshot | None = None
        self._buffers: dict[int, bytes] = {}
        self._asked: list[Deferred[MetricsSnapshot | None]] = []

    def connectionMade(self) -> None:
        self.pid = getattr(self.transport, "pid", None)

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        buffer = self._buffers.get(childFD, b"") + data
        *lines, rest = buffer.split(b"\n")
        self._buffers[childFD] = rest
        for line in lines:
            self._line(childFD, line)

    def _line(self, childFD: int, line: bytes) -> None:
        text, separator, record = line.partition(RECORD_SEPARATOR.encode("ascii"))
        self._relay(childFD, text)
        if separator and not self._record(record):
            self._relay(childFD, record)

    def _relay(self, childFD: int, line: bytes) -> None:
        text = line.decode("utf-8", "replace").rstrip("\r")
        if text:
            # What a worker writes to stderr outside its log is most often
            # a traceback.
            level = _log.warn if childFD == 2 else _log.info
            level(
                "worker {slot} (pid {pid}): {line}",
                slot=self.slot,
                pid=self.pid,
                line=text,
            )

    def _record(self, record: bytes) -> bool:
        """
        Handle one record the worker wrote: a metrics snapshot or a log
        event; C{False} if it is neither.
        """
        try:
            if record.startswith(_METRICS_RECORD):
                from .metrics import MetricsSnapshot

                self._snapshotReceived(
                    MetricsSnapshot.fromJSON(json.loads(record)["agilerpc_metrics"])
                )
                return True
            event = eventFromJSON(record.decode("utf-8"))
        except ValueError:
            return False
        if not isinstance(event, dict) or "log_format" not in event:
            return False
        self._emit(event)
        return True

    def _emit(self, event: dict[str, Any]) -> None:
        """
        Re-emit a worker's log event into the parent's log, with its number
        (C{worker}) and pid (C{workerPid}), and a C{log_system} that says
        which worker for the text log.
        """
        system = event.get("log_system")
        if system is None or system == "-":
            # What Twisted's text log shows for an event without a system.
            level = getattr(event.get("log_level"), "name", "-")
            system = f"{event.get('log_namespace', '-')}#{level}"
        event["log_system"] = f"worker {self.slot} (pid {self.pid}) {system}"
        event["worker"] = self.slot
        event["workerPid"] = self.pid
        _log.observer(event)

    def askSnapshot(self) -> Deferred[MetricsSnapshot | None]:
        """
        Ask the worker for its metrics.

        @return: fires with the snapshot that answers; with the last one it
            sent (L{None} if none) when L{expireAsks} is called first; with
            L{None} when it ends first (its supervisor then counts its last
            snapshot in L{WorkerSupervisor.retired}).
        """
        d: Deferred[MetricsSnapshot | None] = Deferred()
        self._asked.append(d)
        if self.transport is not None:
            self.transport.write(METRICS_REQUEST + b"\n")
        return d

    def expireAsks(self) -> None:
        """
        Answer every pending L{askSnapshot} with the last snapshot.
        """
        self._answerAsks(self.snapshot)

    def _answerAsks(self, snapshot: MetricsSnapshot | None) -> None:
        asked, self._asked = self._asked, []
        for d in asked:
            d.callback(snapshot)

    def _snapshotReceived(self, snapshot: MetricsSnapshot) -> None:
        self.snapshot = snapshot
        if self._asked:
            self._asked.pop(0).callback(snapshot)

    def processEnded(self, reason: Failure) -> None:
        for childFD in sorted(self._buffers):
            self._line(childFD, self._buffers[childFD])
        self._buffers.clear()
        # Retired first, then counted as nothing: never twice, never lost.
        self.supervisor._workerEnded(self, reason)
        self._answerAsks(None)


class WorkerSupervisor(Service):
    """
    Start C{count} worker processes that serve the sockets of C{endpoints}
    with the options in C{argv}, keep them running, and stop them all
    (gracefully, with SIGTERM) when stopped.

    @ivar endpoints: L{SharedEndpoint}s wrapping the given endpoints: the
        parent must listen with these, so that the supervisor learns its
        sockets.
    @ivar workers: the running workers' protocols, by number (1 to
        C{count}; the parent is 0).
    @ivar minDelay: seconds before restarting a worker that died quickly
        for the first time; doubled for each further quick death of that
        slot, up to C{maxDelay}.
    @ivar stableAfter: a worker that ran this long before it died is
        restarted after C{minDelay} again.
    @ivar killAfter: seconds a stopping worker gets to exit before SIGKILL.
    @ivar metricsTimeout: seconds L{metrics} waits for the workers' answers.
    @ivar retired: the counters of workers that have exited, as they last
        sent them, so that the totals never go back when a worker is
        replaced; L{None} before any did.
    """

    minDelay = 0.1
    maxDelay = 5.0
    stableAfter = 10.0
    metricsTimeout = 5.0

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
        self.retired: MetricsSnapshot | None = None

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
        for slot in range(1, self.count + 1):
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
            *workerArguments(self._sockets, self.argv, slot),
        ]
        protocol.startedAt = self._reactor.seconds()
        self.workers[slot] = protocol
        spawn = self._spawnProcess or self._reactor.spawnProcess
        spawn(protocol, self.executable, args, env=dict(os.environ), childFDs=childFDs)
        _log.info("worker {slot} started (pid {pid})", slot=slot, pid=protocol.pid)

    def metrics(self) -> Deferred[MetricsSnapshot]:
        """
        Ask every running worker for its metrics.

        @return: fires with the sum of their snapshots (with their gauges)
            and of L{retired} (without), once every worker has answered,
            exited, or had L{metricsTimeout} seconds to (a worker that did
            not answer counts as it last did, if ever).
        """
        from .metrics import MetricsSnapshot

        asked = [(w, w.askSnapshot()) for w in self.workers.values()]
        expiry = self._reactor.callLater(self.metricsTimeout, self._expire, asked)
        d: Deferred[list[MetricsSnapshot | None]] = defer.gatherResults(
            [d for _, d in asked]
        )

        def add(snapshots: list[MetricsSnapshot | None]) -> MetricsSnapshot:
            if expiry.active():
                expiry.cancel()
            total = MetricsSnapshot()
            if self.retired is not None:
                total.add(self.retired)
            for (worker, _), snapshot in zip(asked, snapshots, strict=True):
                # One that has ended since it answered is in retired.
                if snapshot is not None and self.workers.get(worker.slot) is worker:
                    total.add(snapshot, gauges=True)
            return total

        return d.addCallback(add)

    def _expire(self, asked: list[tuple[_WorkerProtocol, Any]]) -> None:
        for worker, d in asked:
            if not d.called:
                _log.warn(
                    "worker {slot} (pid {pid}) did not send its metrics within "
                    "{seconds}s; counting the last it sent",
                    slot=worker.slot,
                    pid=worker.pid,
                    seconds=self.metricsTimeout,
                )
                worker.expireAsks()

    def _workerEnded(self, protocol: _WorkerProtocol, reason: Failure) -> None:
        if self.workers.get(protocol.slot) is protocol:
            del self.workers[protocol.slot]
        last = protocol.snapshot
        if last is not None:
            if self.retired is None:
                from .metrics import MetricsSnapshot

                self.retired = MetricsSnapshot(last.buckets)
            self.retired.add(last)
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
    Read the worker's stdin, whose other end the parent holds: call
    C{onLine} with each line the parent writes (without its newline), and
    C{onLost} at its end (the parent is gone).
    """

    def __init__(
        self,
        fd: int,
        onLost: Callable[[], None],
        onLine: Callable[[bytes], None] = lambda line: None,
    ) -> None:
        self._fd = fd
        self._onLost = onLost
        self._onLine = onLine
        self._buffer = b""
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
        *lines, self._buffer = (self._buffer + data).split(b"\n")
        for line in lines:
            self._onLine(line)
        return None

    def connectionLost(self, reason: Failure) -> None:
        # The reactor calls this instead of doRead when the pipe hangs up.
        self._onLost()


def _recordsTo(stream: Any) -> ILogObserver:
    """
    A log observer writing each event to C{stream} as a record for the
    parent: L{RECORD_SEPARATOR}, the event as JSON (addresses as text), a
    newline.
    """
    return _AddressesAsText(
        jsonFileLogObserver(stream, recordSeparator=RECORD_SEPARATOR)
    )


def _writeSnapshot(stream: Any, metrics: ServerMetrics) -> None:
    """
    Write the record holding a snapshot of C{metrics} to C{stream}.
    """
    from .metrics import MetricsSnapshot

    data = {"agilerpc_metrics": MetricsSnapshot.of(metrics).toJSON()}
    stream.write(RECORD_SEPARATOR + json.dumps(data, separators=(",", ":")) + "\n")
    stream.flush()


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
    whose other end the parent holds).  Log to C{stdout} (as records for
    the parent) through C{logBeginner} (the global ones by default); with
    metrics, answer each request for them on C{parentFD} with a snapshot on
    C{stdout}, and write a last one before exiting.

    C{makeOptions()} parses the options (a L{twisted.python.usage.Options}:
    C{twistd agilerpc}'s), and C{makeService(config, reactor,
    serverEndpoints=..., worker=..., metrics=...)} makes the service serving
    the adopted sockets, as worker C{worker}, counting into C{metrics} (a
    L{ServerMetrics}, or L{None} without C{--metrics-port}).

    @return: the exit code: 0 after a clean stop, 1 if it could not serve
        the sockets, 2 for bad options.
    """
    from twisted.logger import globalLogBeginner
    from twisted.python import usage

    if reactor is None:
        from twisted.internet import reactor as globalReactor

        reactor = globalReactor
    sockets, number, options = parseWorkerArguments(argv)
    if logBeginner is None:
        logBeginner = globalLogBeginner
    if stdout is None:
        stdout = sys.stdout
    logBeginner.beginLoggingTo([_recordsTo(stdout)], redirectStandardIO=False)
    config = makeOptions()
    try:
        config.parseOptions(options)
    except usage.UsageError as e:
        _log.error("bad options: {error}", error=str(e))
        return 2
    config["workers"] = 1
    metrics: ServerMetrics | None = None
    if config["metrics"] is not None:
        from .metrics import ServerMetrics

        metrics = ServerMetrics()
    adopted: list[IStreamServerEndpoint] = [
        AdoptedEndpoint(reactor, fd, family) for fd, family in sockets
    ]
    service = makeService(
        config, reactor, serverEndpoints=adopted, worker=number, metrics=metrics
    )

    def parentGone() -> None:
        if watch.lost:
            return
        watch.lost = True
        _log.warn("the parent process is gone; stopping")
        reactor.removeReader(watch)
        if reactor.running:
            reactor.stop()

    def parentAsked(line: bytes) -> None:
        if line == METRICS_REQUEST and metrics is not None:
            _writeSnapshot(stdout, metrics)

    watch = _ParentWatch(parentFD, parentGone, parentAsked)
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
    if metrics is not None:
        # The calls answered since the parent last asked: it keeps them when
        # this worker is gone.
        with contextlib.suppress(OSError, ValueError):
            _writeSnapshot(stdout, metrics)
    return exitCode[0]

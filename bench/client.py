"""
The client side of one benchmark measurement, run in its own process:

    python -m bench.client '{"scenario": "seq", "impl": "bare", "port": 1234, ...}'

It prints one line, C{RESULT} followed by the figures as JSON.  Scenarios:

 - C{seq}: sequential calls of C{add(1, 2)} with the Deferred client (for
   agilerpc, with the spec's C{metadata} on each call, if it has some).
 - C{blocking}: the same with a blocking client (agilerpc's C{TcpRpcClient},
   or the bare one); in C{threads} threads, each with its own client.
 - C{pipe}: C{add(1, 2)} with C{inflight} calls in flight on one connection
   (or spread round-robin over C{conns} connections).
 - C{echo}: sequential echoes of C{size} bytes with the Deferred client.
 - C{idle}: C{conns} connections that each made one call, then stay idle:
   the server's RSS before and after.
 - C{reap}: agilerpc only: C{conns} raw connections that receive their hello
   and stay idle until the server's keepalive closes them, while a blocking
   client calls the server every C{probeInterval} seconds.

Where the spec names C{serverPid}, the server's CPU time (from C{/proc}) over
the timed part is reported too.  Every loop is bounded by C{n} and by the
spec's C{timeout}.
"""

from __future__ import annotations

import cProfile
import errno
import itertools
import json
import random
import select
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import msgpack
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.task import react

from .amp import Add, BenchAMP, Echo
from .bare import BareBlockingClient, BareClientProtocol
from .procs import cpuNanoseconds, cpuSeconds, raiseFileLimit, rssKiB
from .stats import latencySummary

_perf = time.perf_counter_ns
_HEADER = struct.Struct(">I")
MiB = 1024 * 1024


def payloadOf(size: int) -> bytes:
    """
    The C{size} bytes the echo scenarios send: pseudo-random, the same every
    run, so that agileutil's compression of frames over 4 KiB cannot shrink
    them (it would shrink a repeating pattern to almost nothing).
    """
    return random.Random(size).randbytes(size)


class Conn:
    """
    One Deferred-client connection of any implementation, seen the same way:
    C{add()} and C{echo(payload)} return the implementation's raw Deferred
    (nothing is added to it in the timed loops); C{addResult} and
    C{echoResult} turn what fired into the plain result, to check it.
    """

    def __init__(
        self,
        add: Callable[[], Deferred[Any]],
        echo: Callable[[bytes], Deferred[Any]],
        addResult: Callable[[Any], Any],
        echoResult: Callable[[Any], Any],
        close: Callable[[], object],
    ) -> None:
        self.add = add
        self.echo = echo
        self.addResult = addResult
        self.echoResult = echoResult
        self.close = close


async def connect(
    reactor: Any,
    impl: str,
    host: str,
    port: int,
    metadata: dict[str, str] | None = None,
) -> Conn:
    """
    Connect a Deferred client of C{impl} to C{host:port}, and check that it
    answers C{add(1, 2)} with 3; agilerpc's calls C{add} with C{metadata},
    if given.
    """
    if impl == "agilerpc":
        from agilerpc import RpcClient

        # The echo scenarios answer up to 8 MiB payloads: more than the
        # client's default receive limit, which the hello does not raise.
        client = RpcClient(reactor, host, port, maxMessageSize=64 * 1024 * 1024)
        caller = client.withCallOptions(metadata=metadata) if metadata else client
        conn = Conn(
            lambda: caller.callRemote("add", 1, 2),
            lambda payload: client.callRemote("echo", payload),
            lambda r: r,
            lambda r: r,
            client.close,
        )
    else:
        endpoint = TCP4ClientEndpoint(reactor, host, port, timeout=30)
        if impl == "bare":
            bare = await connectProtocol(endpoint, BareClientProtocol())
            conn = Conn(
                lambda: bare.callRemote("add", 1, 2),
                lambda payload: bare.callRemote("echo", payload),
                lambda r: r,
                lambda r: r,
                bare.transport.loseConnection,
            )
        elif impl == "amp":
            amp = await connectProtocol(endpoint, BenchAMP())  # type: ignore[no-untyped-call]
            conn = Conn(
                lambda: amp.callRemote(Add, a=1, b=2),
                lambda payload: amp.callRemote(Echo, value=payload),
                lambda r: r["total"],
                lambda r: r["value"],
                amp.transport.loseConnection,
            )
        else:
            raise ValueError(f"unknown implementation {impl!r}")
    answer = conn.addResult(await conn.add())
    if answer != 3:
        raise AssertionError(f"{impl}: add(1, 2) returned {answer!r}")
    return conn


def sequential(call: Callable[[], Deferred[Any]], n: int) -> Deferred[list[int]]:
    """
    Make C{n} calls one after the other; fires with each call's latency in
    nanoseconds.
    """
    done: Deferred[list[int]] = Deferred()
    latencies: list[int] = []
    started = 0

    def issue() -> None:
        nonlocal started
        started = _perf()
        call().addCallbacks(answered, fail)

    def answered(_: object) -> None:
        latencies.append(_perf() - started)
        if len(latencies) < n:
            issue()
        else:
            done.callback(latencies)

    def fail(reason: Any) -> None:
        if not done.called:
            done.errback(reason)

    issue()
    return done


def pipelined(
    call: Callable[[], Deferred[Any]], n: int, inflight: int
) -> Deferred[int]:
    """
    Make C{n} calls keeping C{inflight} in flight; fires with C{n}.
    """
    done: Deferred[int] = Deferred()
    issued = 0
    completed = 0

    def issue() -> None:
        nonlocal issued
        issued += 1
        call().addCallbacks(answered, fail)

    def answered(_: object) -> None:
        nonlocal completed
        completed += 1
        if issued < n:
            issue()
        elif completed == n:
            done.callback(n)

    def fail(reason: Any) -> None:
        if not done.called:
            done.errback(reason)

    for _ in range(min(inflight, n)):
        issue()
    return done


def _deadline(reactor: Any, d: Deferred[Any], timeout: float) -> None:
    """
    Fail C{d} if it has not fired within C{timeout} seconds.
    """
    d.addTimeout(timeout, reactor)


class _CpuMeter:
    """
    The server's CPU time over the timed part, when its pid is known: from
    C{/proc/PID/task/*/schedstat} (nanoseconds) where the kernel has it, else
    from the utime and stime of C{/proc/PID/stat} (10 ms ticks).

    Creating it also starts the profiler, if the spec asked for one: only the
    timed part is profiled.
    """

    def __init__(self, pid: int | None) -> None:
        self._pid = pid
        self._startNs = cpuNanoseconds(pid) if pid else None
        self._start = cpuSeconds(pid) if pid else 0.0
        if _profiler is not None:
            _profiler.enable()

    def perCallMicroseconds(self, calls: int) -> float | None:
        if _profiler is not None:
            _profiler.disable()
        if not self._pid:
            return None
        if self._startNs is not None:
            end = cpuNanoseconds(self._pid)
            if end is not None:
                return (end - self._startNs) / calls / 1e3
        return (cpuSeconds(self._pid) - self._start) / calls * 1e6


_profiler: cProfile.Profile | None = None


async def twistedScenario(reactor: Any, spec: dict[str, Any]) -> dict[str, Any]:
    """
    Run a C{seq}, C{pipe}, C{echo} or C{idle} scenario.
    """
    scenario = spec["scenario"]
    impl = spec["impl"]
    host = spec["host"]
    port = spec["port"]
    timeout = spec["timeout"]
    if scenario == "idle":
        return await idleScenario(reactor, spec)
    conn = await connect(reactor, impl, host, port, spec.get("metadata"))
    others = []
    try:
        for _ in range(spec.get("conns", 1) - 1):
            others.append(await connect(reactor, impl, host, port))
        n = spec["n"]
        if scenario == "seq":
            warm = sequential(conn.add, spec["warmup"])
            _deadline(reactor, warm, timeout)
            await warm
            meter = _CpuMeter(spec.get("serverPid"))
            start = _perf()
            d = sequential(conn.add, n)
            _deadline(reactor, d, timeout)
            latencies = await d
            elapsed = (_perf() - start) / 1e9
            return {
                "calls_per_s": n / elapsed,
                "n": n,
                "server_cpu_us_per_call": meter.perCallMicroseconds(n),
                **latencySummary(latencies),
            }
        if scenario == "pipe":
            adds = itertools.cycle([c.add for c in [conn, *others]])
            add = conn.add if not others else lambda: next(adds)()
            warmPipe = pipelined(add, spec["warmup"], spec["inflight"])
            _deadline(reactor, warmPipe, timeout)
            await warmPipe
            meter = _CpuMeter(spec.get("serverPid"))
            start = _perf()
            piped = pipelined(add, n, spec["inflight"])
            _deadline(reactor, piped, timeout)
            await piped
            elapsed = (_perf() - start) / 1e9
            return {
                "calls_per_s": n / elapsed,
                "n": n,
                "inflight": spec["inflight"],
                "server_cpu_us_per_call": meter.perCallMicroseconds(n),
            }
        if scenario == "echo":
            size = spec["size"]
            payload = payloadOf(size)
            answer = conn.echoResult(await conn.echo(payload))
            if answer != payload:
                raise AssertionError(f"{impl}: echo of {size} bytes came back changed")
            meter = _CpuMeter(spec.get("serverPid"))
            start = _perf()
            d3 = sequential(lambda: conn.echo(payload), n)
            _deadline(reactor, d3, timeout)
            latencies = await d3
            elapsed = (_perf() - start) / 1e9
            return {
                "calls_per_s": n / elapsed,
                "n": n,
                "size": size,
                "s_per_MiB": elapsed / (n * size / MiB),
                "server_cpu_us_per_call": meter.perCallMicroseconds(n),
                **latencySummary(latencies),
            }
        raise ValueError(f"unknown scenario {scenario!r}")
    finally:
        for c in [conn, *others]:
            closed = c.close()
            if isinstance(closed, Deferred):
                await closed


async def idleScenario(reactor: Any, spec: dict[str, Any]) -> dict[str, Any]:
    """
    Open C{conns} connections in batches of C{batch}, each making one call,
    and report the server's RSS growth per connection.
    """
    impl = spec["impl"]
    pid = spec["serverPid"]
    raiseFileLimit(spec["conns"] + 1024)
    first = await connect(reactor, impl, spec["host"], spec["port"])
    conns = [first]
    try:
        before = rssKiB(pid)
        remaining = spec["conns"]
        while remaining:
            count = min(spec["batch"], remaining)
            batch: list[Deferred[Conn]] = [
                Deferred.fromCoroutine(
                    connect(reactor, impl, spec["host"], spec["port"])
                )
                for _ in range(count)
            ]
            for d in batch:
                conns.append(await d)
            remaining -= count
        after = rssKiB(pid)
        opened = len(conns) - 1
        return {
            "conns": opened,
            "rss_before_kib": before,
            "rss_after_kib": after,
            "kib_per_conn": (after - before) / opened,
        }
    finally:
        for conn in conns:
            closed = conn.close()
            if isinstance(closed, Deferred):
                await closed


class BlockingConn:
    """
    One blocking client of any implementation, seen the same way: C{add()}
    returns C{add(1, 2)}'s result, C{echo(payload)} the echoed payload.
    """

    def __init__(
        self,
        add: Callable[[], Any],
        echo: Callable[[bytes], Any],
        close: Callable[[], object],
    ) -> None:
        self.add = add
        self.echo = echo
        self.close = close


def blockingConnect(impl: str, host: str, port: int, timeout: float) -> BlockingConn:
    """
    A blocking client of C{impl}, as its users call it: agilerpc's
    C{TcpRpcClient} with its agileutil-compatible C{call(func=..., args=...)},
    agileutil's own C{TcpRpcClient} with its C{call(func, *args)}, or the
    bare one.
    """
    if impl == "agilerpc":
        from agilerpc import TcpRpcClient

        client = TcpRpcClient(host, port, timeout=timeout)
        return BlockingConn(
            lambda: client.call(func="add", args=(1, 2)),
            lambda payload: client.call(func="echo", args=(payload,)),
            client.close,
        )
    if impl == "agileutil":
        # agileutil has no type hints; the typing environment may not have it.
        from agileutil.rpc.client import (  # type: ignore[import-untyped,import-not-found,unused-ignore]
            TcpRpcClient as AgileutilClient,
        )

        peer = AgileutilClient(host, port, timeout=timeout)
        return BlockingConn(
            lambda: peer.call("add", 1, 2),
            lambda payload: peer.call("echo", payload),
            peer.close,
        )
    if impl == "bare":
        bare = BareBlockingClient(host, port, timeout)
        return BlockingConn(
            lambda: bare.call("add", (1, 2)),
            lambda payload: bare.call("echo", (payload,)),
            bare.close,
        )
    raise ValueError(f"no blocking client for {impl!r}")


def _bound(call: Callable[[bytes], Any], payload: bytes) -> Callable[[], Any]:
    return lambda: call(payload)


def blockingScenario(spec: dict[str, Any]) -> dict[str, Any]:
    """
    C{threads} threads, each with its own blocking client, each making C{n}
    sequential calls of C{add(1, 2)}, or of C{echo} of C{size} bytes when
    the spec has a C{size}.
    """
    impl = spec["impl"]
    host = spec["host"]
    port = spec["port"]
    n = spec["n"]
    threads = spec.get("threads", 1)
    timeout = spec["timeout"]
    size = spec.get("size")

    conns = [blockingConnect(impl, host, port, timeout) for _ in range(threads)]
    clients: list[tuple[Callable[[], Any], Callable[[], object]]] = []
    if size is None:
        clients = [(c.add, c.close) for c in conns]
        expected: Any = 3
    else:
        payload = payloadOf(size)
        expected = payload
        clients = [(_bound(c.echo, payload), c.close) for c in conns]
    try:
        for call, _ in clients:
            for _ in range(max(spec.get("warmup", 0), 1)):
                if call() != expected:
                    raise AssertionError(f"{impl}: the call returned something else")
        latencies: list[list[int]] = [[] for _ in clients]
        errors: list[BaseException] = []
        barrier = threading.Barrier(threads + 1, timeout=timeout)

        def work(index: int) -> None:
            call = clients[index][0]
            mine = latencies[index]
            try:
                barrier.wait()
                for _ in range(n):
                    started = _perf()
                    call()
                    mine.append(_perf() - started)
            except BaseException as e:
                errors.append(e)

        workers = [
            threading.Thread(target=work, args=(i,), daemon=True)
            for i in range(threads)
        ]
        for worker in workers:
            worker.start()
        meter = _CpuMeter(spec.get("serverPid"))
        barrier.wait()
        start = _perf()
        for worker in workers:
            worker.join(timeout)
        elapsed = (_perf() - start) / 1e9
        if errors:
            raise errors[0]
        if any(worker.is_alive() for worker in workers):
            raise TimeoutError(f"the blocking threads did not finish in {timeout}s")
        total = n * threads
        result = {
            "calls_per_s": total / elapsed,
            "n": total,
            "threads": threads,
            "server_cpu_us_per_call": meter.perCallMicroseconds(total),
            **latencySummary([x for mine in latencies for x in mine]),
        }
        if size is not None:
            result["size"] = size
            result["s_per_MiB"] = elapsed / (total * size / MiB)
        return result
    finally:
        for _, close in clients:
            close()


def blockingIdleScenario(spec: dict[str, Any]) -> dict[str, Any]:
    """
    Scenario D with blocking clients (agileutil's, which has no other):
    C{conns} clients that each made one call, then stay idle; the server's
    RSS growth per connection.
    """
    impl = spec["impl"]
    pid = spec["serverPid"]
    raiseFileLimit(spec["conns"] + 1024)

    def opened() -> BlockingConn:
        conn = blockingConnect(impl, spec["host"], spec["port"], spec["timeout"])
        if conn.add() != 3:
            raise AssertionError(f"{impl}: add(1, 2) did not return 3")
        return conn

    return _idleFigures(pid, spec["conns"], opened)


def _idleFigures(pid: int, count: int, opened: Callable[[], Any]) -> dict[str, Any]:
    """
    The server's RSS before and after C{count} more connections, each made
    by C{opened()} (which returns something with a C{close}), after a first
    one.
    """
    conns = [opened()]
    try:
        before = rssKiB(pid)
        for _ in range(count):
            conns.append(opened())
        after = rssKiB(pid)
        return {
            "conns": count,
            "rss_before_kib": before,
            "rss_after_kib": after,
            "kib_per_conn": (after - before) / count,
        }
    finally:
        for conn in conns:
            conn.close()


def grpcScenario(spec: dict[str, Any]) -> dict[str, Any]:
    """
    Scenarios C{seq}, C{pipe}, C{echo} and C{idle} against the grpcio server
    of L{bench.grpcserver}, with grpcio's channel and unary callables:
    C{pipe} keeps C{inflight} calls in flight with C{.future()}.
    """
    import collections

    import grpc  # type: ignore[import-untyped]

    from .grpcserver import ADD, ECHO, OPTIONS

    scenario = spec["scenario"]
    target = f"{spec['host']}:{spec['port']}"
    timeout = spec["timeout"]
    deadline = time.monotonic() + timeout

    class Channel:
        def __init__(self, options: list[tuple[str, Any]]) -> None:
            self.channel = grpc.insecure_channel(target, options=options)
            grpc.channel_ready_future(self.channel).result(timeout=timeout)
            self.add = self.channel.unary_unary(
                ADD,
                request_serializer=msgpack.packb,
                response_deserializer=msgpack.unpackb,
            )
            self.echo = self.channel.unary_unary(
                ECHO,
                request_serializer=msgpack.packb,
                response_deserializer=msgpack.unpackb,
            )
            if self.add([1, 2], timeout=timeout) != 3:
                raise AssertionError("grpcio: add(1, 2) did not return 3")

        def close(self) -> None:
            self.channel.close()

    if scenario == "idle":
        raiseFileLimit(spec["conns"] + 1024)
        # Its own subchannel pool: a connection per channel, where grpcio
        # would otherwise share one between channels to the same target.
        options = [*OPTIONS, ("grpc.use_local_subchannel_pool", 1)]
        return _idleFigures(spec["serverPid"], spec["conns"], lambda: Channel(options))
    conn = Channel(OPTIONS)
    try:
        n = spec["n"]

        def timedSequential(
            call: Callable[[], Any], expected: Any, count: int
        ) -> tuple[float, list[int]]:
            latencies = []
            start = _perf()
            for _ in range(count):
                started = _perf()
                if call() != expected:
                    raise AssertionError("grpcio: the call returned something else")
                latencies.append(_perf() - started)
            if time.monotonic() > deadline:
                raise TimeoutError(f"grpcio: {scenario} took over {timeout}s")
            return (_perf() - start) / 1e9, latencies

        if scenario == "seq":
            timedSequential(
                lambda: conn.add([1, 2], timeout=timeout), 3, spec["warmup"]
            )
            meter = _CpuMeter(spec.get("serverPid"))
            elapsed, latencies = timedSequential(
                lambda: conn.add([1, 2], timeout=timeout), 3, n
            )
            return {
                "calls_per_s": n / elapsed,
                "n": n,
                "server_cpu_us_per_call": meter.perCallMicroseconds(n),
                **latencySummary(latencies),
            }
        if scenario == "echo":
            size = spec["size"]
            payload = payloadOf(size)
            timedSequential(lambda: conn.echo([payload], timeout=timeout), payload, 1)
            meter = _CpuMeter(spec.get("serverPid"))
            elapsed, latencies = timedSequential(
                lambda: conn.echo([payload], timeout=timeout), payload, n
            )
            return {
                "calls_per_s": n / elapsed,
                "n": n,
                "size": size,
                "s_per_MiB": elapsed / (n * size / MiB),
                "server_cpu_us_per_call": meter.perCallMicroseconds(n),
                **latencySummary(latencies),
            }
        if scenario == "pipe":
            inflight = spec["inflight"]

            def pipelinedFutures(count: int) -> float:
                # A window of futures: when the oldest is answered, the next
                # call is made, so at most `inflight` are outstanding.
                window: collections.deque[Any] = collections.deque()
                issued = 0
                start = _perf()
                while issued < min(inflight, count):
                    window.append(conn.add.future([1, 2], timeout=timeout))
                    issued += 1
                while window:
                    if window.popleft().result() != 3:
                        raise AssertionError("grpcio: add(1, 2) did not return 3")
                    if issued < count:
                        window.append(conn.add.future([1, 2], timeout=timeout))
                        issued += 1
                return (_perf() - start) / 1e9

            pipelinedFutures(spec["warmup"])
            meter = _CpuMeter(spec.get("serverPid"))
            elapsed = pipelinedFutures(n)
            return {
                "calls_per_s": n / elapsed,
                "n": n,
                "inflight": inflight,
                "server_cpu_us_per_call": meter.perCallMicroseconds(n),
            }
        raise ValueError(f"unknown scenario {scenario!r} for grpcio")
    finally:
        conn.close()


class _Probe(threading.Thread):
    """
    Call C{add(1, 2)} every C{interval} seconds with a blocking client until
    stopped, counting answers, failures and the slowest answer.
    """

    def __init__(self, host: str, port: int, interval: float) -> None:
        super().__init__(daemon=True)
        from agilerpc import TcpRpcClient

        self._client = TcpRpcClient(host, port, timeout=10)
        self._interval = interval
        self.stopping = threading.Event()
        self.calls = 0
        self.failures: list[str] = []
        self.maxLatency = 0.0

    def run(self) -> None:
        try:
            while not self.stopping.is_set():
                started = time.perf_counter()
                try:
                    if self._client.call("add", args=(1, 2)) != 3:
                        self.failures.append("add(1, 2) did not return 3")
                except Exception as e:
                    self.failures.append(f"{type(e).__name__}: {e}")
                self.maxLatency = max(self.maxLatency, time.perf_counter() - started)
                self.calls += 1
                self.stopping.wait(self._interval)
        finally:
            self._client.close()


def _frames(buffer: bytearray) -> list[list[Any]]:
    """
    Remove the complete frames from C{buffer}, decoded.
    """
    messages = []
    while len(buffer) >= 4:
        (length,) = _HEADER.unpack_from(buffer)
        if len(buffer) < 4 + length:
            break
        messages.append(msgpack.unpackb(bytes(buffer[4 : 4 + length])))
        del buffer[: 4 + length]
    return messages


def reapScenario(spec: dict[str, Any]) -> dict[str, Any]:
    """
    Open C{conns} raw connections to an agilerpc server in batches of
    C{batch} (each waits for its hello before the next batch opens), hold
    them idle, and close each as the server ends it (goaway, then end of
    stream), until all are gone or C{timeout} passes.
    """
    host = spec["host"]
    port = spec["port"]
    pid = spec["serverPid"]
    wanted = spec["conns"]
    soft, hard = raiseFileLimit(wanted + 1024)
    conns = min(wanted, soft - 256)
    probe = _Probe(host, port, spec["probeInterval"])
    probe.start()
    poller = select.epoll()
    sockets: dict[int, socket.socket] = {}
    buffers: dict[int, bytearray] = {}
    helloed: set[int] = set()
    opened = helloCount = goaways = reaped = peak = 0
    rssBefore = rssKiB(pid)
    rssPeak = rssBefore
    start = time.monotonic()
    deadline = start + spec["timeout"]
    allOpenAt: float | None = None
    lastClosedAt: float | None = None
    waitingForHello = 0
    try:
        while (opened < conns or sockets) and time.monotonic() < deadline:
            if opened < conns and waitingForHello == 0:
                for _ in range(min(spec["batch"], conns - opened)):
                    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                    sock.setblocking(False)
                    code = sock.connect_ex((host, port))
                    if code not in (0, errno.EINPROGRESS):
                        sock.close()
                        raise OSError(code, f"connect: {errno.errorcode[code]}")
                    fd = sock.fileno()
                    sockets[fd] = sock
                    buffers[fd] = bytearray()
                    poller.register(fd, select.EPOLLIN)
                    opened += 1
                    waitingForHello += 1
            for fd, _ in poller.poll(0.5):
                sock = sockets[fd]
                try:
                    data = sock.recv(65536)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    data = b""
                if data:
                    buffers[fd] += data
                    for message in _frames(buffers[fd]):
                        if message[:2] == [3, "hello"] and fd not in helloed:
                            helloed.add(fd)
                            helloCount += 1
                            waitingForHello -= 1
                            held = len(helloed)
                            if held > peak:
                                peak = held
                            if helloCount == conns:
                                allOpenAt = time.monotonic()
                                rssPeak = rssKiB(pid)
                        elif message[:2] == [3, "goaway"]:
                            goaways += 1
                    continue
                # The server's end of stream: close our side, as a client does.
                poller.unregister(fd)
                del sockets[fd]
                del buffers[fd]
                if fd in helloed:
                    helloed.discard(fd)
                else:
                    waitingForHello -= 1
                sock.close()
                reaped += 1
                lastClosedAt = time.monotonic()
        time.sleep(0.2)
        rssAfter = rssKiB(pid)
    finally:
        for sock in sockets.values():
            sock.close()
        poller.close()
        probe.stopping.set()
        probe.join(15)
    return {
        "conns_wanted": wanted,
        "conns": conns,
        "fd_limit": [soft, hard],
        "peak_held": peak,
        "hellos": helloCount,
        "goaways": goaways,
        "reaped": reaped,
        "left_open": len(sockets),
        "open_s": None if allOpenAt is None else allOpenAt - start,
        "reap_s": (
            None
            if allOpenAt is None or lastClosedAt is None or sockets
            else lastClosedAt - allOpenAt
        ),
        "total_s": time.monotonic() - start,
        "rss_before_kib": rssBefore,
        "rss_peak_kib": rssPeak,
        "rss_after_kib": rssAfter,
        "kib_per_conn_at_peak": (rssPeak - rssBefore) / conns if conns else None,
        "probe_calls": probe.calls,
        "probe_failures": probe.failures[:5],
        "probe_failure_count": len(probe.failures),
        "probe_max_ms": probe.maxLatency * 1000,
    }


def run(spec: dict[str, Any]) -> dict[str, Any]:
    """
    Run the scenario C{spec} describes, under cProfile when it names a
    C{profile} file; its figures.
    """
    global _profiler
    if spec.get("profile"):
        _profiler = cProfile.Profile()
    try:
        scenario = spec["scenario"]
        if spec["impl"] == "grpcio":
            return grpcScenario(spec)
        if spec["impl"] == "agileutil" and scenario == "idle":
            return blockingIdleScenario(spec)
        if scenario == "blocking":
            return blockingScenario(spec)
        if scenario == "reap":
            return reapScenario(spec)
        result: dict[str, Any] = {}

        async def main(reactor: Any) -> None:
            result.update(await twistedScenario(reactor, spec))

        try:
            react(lambda reactor: Deferred.fromCoroutine(main(reactor)))
        except SystemExit as e:
            if e.code:
                raise RuntimeError(f"the {scenario} scenario failed") from None
        return result
    finally:
        if _profiler is not None:
            _profiler.disable()
            _profiler.dump_stats(spec["profile"])
            _profiler = None


def main(argv: list[str]) -> None:
    spec = json.loads(argv[0])
    result = run(spec)
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])

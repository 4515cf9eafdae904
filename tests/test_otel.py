# mypy reports trial's untyped assertions called through self under the test
# class's name, which untyped_calls_exclude = ["twisted"] does not match.
# mypy: disable-error-code="no-untyped-call"
"""
Tests for OpenTelemetry tracing (L{agilerpc._otel}, the C{otel} extra):
spans of a traced L{RpcClient} and a traced server, recorded by the SDK's
in-memory exporter from a L{TracerProvider} passed in (the global one is
never touched), over L{MemoryServer} and raw frames on a
L{RecordingTransport}; what stays untraced when tracing is off; the
C{--otel} option of C{twistd agilerpc}; and a real C{twistd agilerpc --otel}
whose spans, written by C{tests/otelhandlers.py}, continue the trace of an
in-process client.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import AsyncGenerator, Generator
from typing import Any

from twisted.internet import reactor as globalReactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.python import usage
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase

import agilerpc
from agilerpc import (
    CallTimeout,
    DeadlineExceeded,
    QueueFull,
    Registry,
    RemoteError,
    RpcClient,
    RpcServerFactory,
    TcpRpcClient,
    currentCall,
)
from agilerpc.tap import Options, makeService
from agilerpc.testing import MemoryServer

from .clienthelpers import HELLO, MemorySocket
from .clienthelpers import MemoryServer as ScriptedServer
from .serverhelpers import PEER, Connection, FakeReactor, ListeningReactor, encode
from .serverprocess import ServerProcess

try:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
        InMemorySpanExporter,
    )
    from opentelemetry.trace import SpanKind, StatusCode

    from agilerpc import _otel
except ImportError:
    skipReason: str | None = (
        "opentelemetry-sdk is not installed: pip install 'agilerpc[otel]' "
        "opentelemetry-sdk (tox installs both)"
    )
else:
    skipReason = None

#: A trace context as a W3C traceparent header carries it.
TRACE_ID = 0x0AF7651916CD43DD8448EB211C80319C
PARENT_ID = 0xB7AD6B7169203331
TRACEPARENT = f"00-{TRACE_ID:032x}-{PARENT_ID:016x}-01"


class Spans:
    """
    A L{TracerProvider} that keeps every finished span in memory.
    """

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.tracer = self.provider.get_tracer("tests")

    def finished(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def named(self, name: str, kind: SpanKind | None = None) -> ReadableSpan:
        """
        The one finished span called C{name} (of C{kind}).
        """
        [span] = [
            s
            for s in self.finished()
            if s.name == name and (kind is None or s.kind == kind)
        ]
        return span


def ids(span: ReadableSpan) -> tuple[int, int, int | None]:
    """
    C{span}'s trace id, its id, and its parent's id (L{None} for a root).
    """
    assert span.context is not None
    parent = None if span.parent is None else span.parent.span_id
    return span.context.trace_id, span.context.span_id, parent


def handlers(spans: Spans) -> Registry:
    """
    Methods that start spans of their own (C{"inner"}), to show which span
    is current while they run.
    """
    registry = Registry()

    def add(a: int, b: int) -> int:
        with spans.tracer.start_as_current_span("inner"):
            return a + b

    async def later(d: Deferred[int]) -> int:
        value = await d
        with spans.tracer.start_as_current_span("inner"):
            return value

    pending: list[Deferred[int]] = []

    async def waits() -> int:
        d: Deferred[int] = Deferred()
        pending.append(d)
        return await later(d)

    def never() -> Deferred[None]:
        return Deferred()

    def fail(text: str) -> None:
        raise ValueError(text)

    def ticks(n: int) -> Generator[int, None, str]:
        for i in range(n):
            with spans.tracer.start_as_current_span("inner"):
                yield i
        return "done"

    async def aticks(n: int) -> AsyncGenerator[int, None]:
        # Each step of an async generator runs in a copy of the context: a
        # span held across a yield could not be detached in the next one.
        for i in range(n):
            with spans.tracer.start_as_current_span("inner"):
                item = i
            yield item

    closedIn: list[Any] = []

    def held(n: int) -> Generator[int, None, None]:
        try:
            yield from range(n)
        finally:
            closedIn.append((trace.get_current_span(), currentCall().method))

    def threaded() -> str:
        with spans.tracer.start_as_current_span("inner"):
            return currentCall().method

    def note(text: str) -> None:
        with spans.tracer.start_as_current_span("inner"):
            if text == "bad":
                raise ValueError(text)

    for f in (add, waits, never, fail, ticks, aticks, note, held):
        registry.register(f)
    registry.register(threaded, thread=True)
    registry.pending = pending  # type: ignore[attr-defined]
    registry.closedIn = closedIn  # type: ignore[attr-defined]
    return registry


class TracedTestCase(SynchronousTestCase):
    """
    A traced client and a traced server in memory, their spans kept.
    """

    skip = skipReason

    def setUp(self) -> None:
        self.spans = Spans()
        self.registry = handlers(self.spans)
        self.server = MemoryServer(
            self.registry, tracing=True, tracerProvider=self.spans.provider
        )
        self.client = RpcClient(
            self.server.reactor,
            "server",
            9988,
            tracing=True,
            tracerProvider=self.spans.provider,
        )

    def pump(self) -> None:
        """
        Deliver what is sent, and run what the reactor has due now (streams
        send their items in turns).
        """
        for _ in range(20):
            self.server.reactor.advance(0)
            self.server.flush()

    def assertChild(self, child: ReadableSpan, parent: ReadableSpan) -> None:
        """
        C{child} is C{parent}'s child, in its trace.
        """
        traceId, parentId, _ = ids(parent)
        self.assertEqual(ids(child)[::2], (traceId, parentId))

    def assertFailed(self, span: ReadableSpan, errorType: str, answered: bool) -> None:
        """
        C{span} is a failed call's: status ERROR and C{error.type}, and when
        the server C{answered} with the error, the same
        C{rpc.response.status_code}.
        """
        self.assertEqual(span.status.status_code, StatusCode.ERROR)
        assert span.attributes is not None
        self.assertEqual(span.attributes["error.type"], errorType)
        self.assertEqual(
            span.attributes.get("rpc.response.status_code"),
            errorType if answered else None,
        )


class OneTraceTests(TracedTestCase):
    """
    A traced call makes one trace: the client's span, the server's as its
    child, and the handler's spans as the server span's children.
    """

    def test_call(self) -> None:
        """
        A call's CLIENT span is the parent of its SERVER span, which is
        current while the handler runs; both are named after the method and
        carry the RPC attributes.
        """
        d = self.client.callRemote("add", 1, 2)
        self.server.flush()
        self.assertEqual(self.successResultOf(d), 3)
        client = self.spans.named("add", SpanKind.CLIENT)
        server = self.spans.named("add", SpanKind.SERVER)
        self.assertChild(server, client)
        self.assertChild(self.spans.named("inner"), server)
        self.assertIsNone(client.parent)
        self.assertEqual(
            dict(client.attributes or {}),
            {
                "rpc.system.name": "agilerpc",
                "rpc.method": "add",
                "server.address": "server",
                "server.port": 9988,
            },
        )
        self.assertEqual((server.attributes or {})["rpc.system.name"], "agilerpc")
        self.assertEqual((server.attributes or {})["rpc.method"], "add")
        for span in (client, server):
            self.assertEqual(span.status.status_code, StatusCode.UNSET)
            scope = span.instrumentation_scope
            assert scope is not None
            self.assertEqual(
                (scope.name, scope.version, scope.schema_url),
                ("agilerpc", agilerpc.__version__, _otel.SCHEMA_URL),
            )

    def test_childOfTheCallersSpan(self) -> None:
        """
        A call made while a span is current is that span's child.
        """
        with self.spans.tracer.start_as_current_span("caller") as caller:
            d = self.client.callRemote("add", 1, 2)
        self.server.flush()
        self.successResultOf(d)
        client = self.spans.named("add", SpanKind.CLIENT)
        self.assertEqual(
            ids(client)[::2],
            (caller.get_span_context().trace_id, caller.get_span_context().span_id),
        )

    def test_coroutine(self) -> None:
        """
        A coroutine handler runs in its server span across its awaits; the
        span ends when it answers.
        """
        d = self.client.callRemote("waits")
        self.server.flush()
        self.assertEqual(
            [s.name for s in self.spans.finished()], [], "nothing answered yet"
        )
        [pending] = self.registry.pending  # type: ignore[attr-defined]
        pending.callback(7)
        self.server.flush()
        self.assertEqual(self.successResultOf(d), 7)
        server = self.spans.named("waits", SpanKind.SERVER)
        self.assertChild(server, self.spans.named("waits", SpanKind.CLIENT))
        self.assertChild(self.spans.named("inner"), server)

    def test_withCallOptions(self) -> None:
        """
        Calls through an L{RpcCaller} are traced too, and the trace context
        travels beside the caller's own metadata.
        """
        seen: list[dict[str, Any]] = []

        def meta() -> None:
            seen.append(dict(currentCall().metadata))

        self.registry.register(meta)
        d = self.client.withCallOptions(metadata={"tenant": "a"}).callRemote("meta")
        self.server.flush()
        self.successResultOf(d)
        [metadata] = seen
        self.assertEqual(metadata["tenant"], "a")
        self.assertEqual(sorted(metadata), ["tenant", "traceparent"])
        self.assertChild(
            self.spans.named("meta", SpanKind.SERVER),
            self.spans.named("meta", SpanKind.CLIENT),
        )

    def test_stream(self) -> None:
        """
        A stream's spans cover the whole stream: each ends with its end, and
        what the generator does runs in the server span.
        """
        stream = self.client.callStream("ticks", 3)
        items: list[int] = []
        d = stream.consume(items.append)
        self.pump()
        self.assertEqual((items, self.successResultOf(d)), ([0, 1, 2], "done"))
        client = self.spans.named("ticks", SpanKind.CLIENT)
        server = self.spans.named("ticks", SpanKind.SERVER)
        self.assertChild(server, client)
        inner = [s for s in self.spans.finished() if s.name == "inner"]
        self.assertEqual(len(inner), 3)
        for span in inner:
            self.assertChild(span, server)
        assert client.end_time is not None and server.end_time is not None
        self.assertTrue(all(s.end_time <= server.end_time for s in inner))  # type: ignore[operator]

    def test_asyncStream(self) -> None:
        """
        An async generator's items are made in the server span too.
        """
        stream = self.client.callStream("aticks", 2)
        items: list[int] = []
        d = stream.consume(items.append)
        self.pump()
        self.successResultOf(d)
        server = self.spans.named("aticks", SpanKind.SERVER)
        inner = [s for s in self.spans.finished() if s.name == "inner"]
        self.assertEqual((items, len(inner)), ([0, 1], 2))
        for span in inner:
            self.assertChild(span, server)

    def test_notification(self) -> None:
        """
        A notification's server span is the child of its client span, which
        ends once it is sent; the server's ends with its handler.
        """
        self.client.notify("note", "x")
        self.server.flush()
        client = self.spans.named("note", SpanKind.CLIENT)
        server = self.spans.named("note", SpanKind.SERVER)
        self.assertChild(server, client)
        self.assertChild(self.spans.named("inner"), server)
        self.assertEqual(server.status.status_code, StatusCode.UNSET)

    def test_notificationFails(self) -> None:
        """
        A notification whose handler raises has a failed server span, with
        no response status (nothing answers a notification).
        """
        self.client.notify("note", "bad")
        self.server.flush()
        self.assertFailed(
            self.spans.named("note", SpanKind.SERVER), "ValueError", False
        )
        self.flushLoggedErrors(ValueError)

    def test_notificationLater(self) -> None:
        """
        A notification whose handler answers later has its span ended then.
        """
        waiting: list[Deferred[None]] = []

        def slow() -> Deferred[None]:
            d: Deferred[None] = Deferred()
            waiting.append(d)
            return d

        self.registry.register(slow)
        self.client.notify("slow")
        self.server.flush()
        self.assertEqual([s.kind for s in self.spans.finished()], [SpanKind.CLIENT])
        waiting[0].errback(ValueError("late"))
        self.assertFailed(
            self.spans.named("slow", SpanKind.SERVER), "ValueError", False
        )
        self.flushLoggedErrors(ValueError)

    def test_notificationRefused(self) -> None:
        """
        A notification the client refuses at once raises, and its span says
        why.
        """
        self.client.maxPending = 0
        self.assertRaises(QueueFull, self.client.notify, "note", "x")
        self.assertFailed(self.spans.named("note", SpanKind.CLIENT), "QueueFull", False)

    def test_thread(self) -> None:
        """
        A thread handler runs in its server span, in its thread.
        """
        reactor = FakeReactor()
        factory = RpcServerFactory(
            self.registry, reactor, tracing=True, tracerProvider=self.spans.provider
        )
        connection = Connection(factory)
        connection.send(
            [0, 1, "threaded", [], {}, {"metadata": {"traceparent": TRACEPARENT}}]
        )
        reactor.pool.runAll()
        self.assertEqual(connection.received(), [[1, 1, None, "threaded"]])
        server = self.spans.named("threaded", SpanKind.SERVER)
        self.assertEqual(ids(server)[::2], (TRACE_ID, PARENT_ID))
        self.assertChild(self.spans.named("inner"), server)


class ErrorTests(TracedTestCase):
    """
    A failed call's spans have status ERROR and its error's type.
    """

    def test_handlerError(self) -> None:
        """
        A handler's exception is the type of both spans' error, and the
        response's status code; the client's status says its message.
        """
        d = self.client.callRemote("fail", "boom")
        self.server.flush()
        self.failureResultOf(d, RemoteError)
        client = self.spans.named("fail", SpanKind.CLIENT)
        server = self.spans.named("fail", SpanKind.SERVER)
        self.assertFailed(client, "ValueError", True)
        self.assertFailed(server, "ValueError", True)
        self.assertEqual(client.status.description, "boom")
        self.flushLoggedErrors(ValueError)

    def test_unknownMethod(self) -> None:
        """
        A method the server does not serve is C{_OTHER} there, the name
        asked for kept apart, and the span is named after the system; the
        client names the method its code called.
        """
        d = self.client.callRemote("nope")
        self.server.flush()
        self.failureResultOf(d, RemoteError)
        server = self.spans.named("agilerpc", SpanKind.SERVER)
        self.assertEqual(
            (
                (server.attributes or {})["rpc.method"],
                (server.attributes or {})["rpc.method_original"],
            ),
            ("_OTHER", "nope"),
        )
        self.assertFailed(server, "MethodNotFound", True)
        self.assertChild(server, self.spans.named("nope", SpanKind.CLIENT))

    def test_deadlineExceeded(self) -> None:
        """
        A call past its deadline fails both spans: C{DeadlineExceeded} on
        the server, which cancelled it, and C{CallTimeout} on the client.
        """
        d = self.client.withCallOptions(timeout=5).callRemote("never")
        self.server.flush()
        self.server.advance(5)
        self.failureResultOf(d, CallTimeout)
        self.assertFailed(
            self.spans.named("never", SpanKind.CLIENT), "CallTimeout", False
        )
        self.server.flush()
        self.assertFailed(
            self.spans.named("never", SpanKind.SERVER), "DeadlineExceeded", True
        )
        self.assertTrue(issubclass(DeadlineExceeded, RemoteError))

    def test_cancelled(self) -> None:
        """
        A call its caller cancels fails both spans: C{CancelledError} on the
        client, C{Cancelled} on the server.
        """
        d = self.client.callRemote("never")
        self.server.flush()
        d.cancel()
        self.server.flush()
        self.failureResultOf(d)
        self.assertFailed(
            self.spans.named("never", SpanKind.CLIENT), "CancelledError", False
        )
        self.assertFailed(self.spans.named("never", SpanKind.SERVER), "Cancelled", True)

    def test_refusedAtOnce(self) -> None:
        """
        A call the client refuses at once has a span too, failed with the
        client's error.
        """
        self.client.maxPending = 0
        self.failureResultOf(self.client.callRemote("add", 1, 2), QueueFull)
        [span] = self.spans.finished()
        self.assertEqual(span.kind, SpanKind.CLIENT)
        self.assertFailed(span, "QueueFull", False)

    def test_connectionLost(self) -> None:
        """
        Calls outstanding when their connection goes are cancelled, and
        their server spans ended: none is left open.
        """
        for _ in range(3):
            self.client.callRemote("never").addErrback(lambda f: None)
        self.server.flush()
        tracing = self.server.factory.tracing
        assert tracing is not None
        self.assertEqual(tracing.openSpans, 3)
        self.server.drop()
        self.assertEqual(tracing.openSpans, 0)
        server = [s for s in self.spans.finished() if s.kind == SpanKind.SERVER]
        self.assertEqual(len(server), 3)
        for span in server:
            self.assertFailed(span, "Cancelled", True)
        for span in self.spans.finished():
            if span.kind == SpanKind.CLIENT:
                self.assertFailed(span, "CallLost", False)

    def test_streamCancelled(self) -> None:
        """
        A stream cancelled by its consumer fails both spans, and its
        generator is closed in its call's context: its finally blocks run
        in the server span.
        """
        stream = self.client.callStream("held", 100)
        self.pump()
        stream.cancel()
        self.pump()
        self.assertFailed(
            self.spans.named("held", SpanKind.CLIENT), "CancelledError", False
        )
        server = self.spans.named("held", SpanKind.SERVER)
        self.assertFailed(server, "Cancelled", True)
        [(span, method)] = self.registry.closedIn  # type: ignore[attr-defined]
        self.assertEqual(
            (span.get_span_context().span_id, method), (ids(server)[1], "held")
        )


class ServerSpanTests(SynchronousTestCase):
    """
    A traced server's spans, from raw frames on a L{RecordingTransport}.
    """

    skip = skipReason

    def setUp(self) -> None:
        self.spans = Spans()
        self.factory = RpcServerFactory(
            handlers(self.spans),
            FakeReactor(),
            tracing=True,
            tracerProvider=self.spans.provider,
        )
        self.connection = Connection(self.factory)

    def test_parentFromMetadata(self) -> None:
        """
        The server span continues the trace its request's C{traceparent}
        names, and says where the call came from and went.
        """
        self.connection.send(
            [0, 1, "add", [1, 2], {}, {"metadata": {"traceparent": TRACEPARENT}}]
        )
        self.assertEqual(self.connection.received(), [[1, 1, None, 3]])
        server = self.spans.named("add", SpanKind.SERVER)
        self.assertEqual(ids(server)[::2], (TRACE_ID, PARENT_ID))
        assert server.parent is not None
        self.assertTrue(server.parent.is_remote)
        host = self.connection.transport.getHost()
        peer = self.connection.transport.getPeer()
        self.assertEqual(
            dict(server.attributes or {}),
            {
                "rpc.system.name": "agilerpc",
                "rpc.method": "add",
                "server.address": host.host,
                "server.port": host.port,
                "network.peer.address": peer.host,
                "network.peer.port": peer.port,
            },
        )

    def test_noTraceContext(self) -> None:
        """
        A request without a trace context (no metadata, or metadata without
        one, or one that is not text) starts a new trace.
        """
        self.connection.request(1, "add", 1, 2)
        self.connection.send([0, 2, "add", [1, 2], {}, {"metadata": {"a": "b"}}])
        self.connection.send(
            [
                0,
                3,
                "add",
                [1, 2],
                {},
                {"metadata": {"traceparent": TRACEPARENT.encode()}},
            ]
        )
        self.assertEqual(len(self.connection.received()), 3)
        server = [s for s in self.spans.finished() if s.kind == SpanKind.SERVER]
        self.assertEqual([s.parent for s in server], [None, None, None])
        self.assertEqual(len({ids(s)[0] for s in server}), 3)

    def test_unixSocket(self) -> None:
        """
        On a UNIX socket the server's address is its path, with no port.
        """
        from twisted.internet.address import UNIXAddress

        self.connection.transport.hostAddr = UNIXAddress(b"/run/a.sock")
        self.connection.request(1, "add", 1, 2)
        attributes = self.spans.named("add").attributes or {}
        self.assertEqual(attributes["server.address"], "/run/a.sock")
        self.assertNotIn("server.port", attributes)

    def test_invalidRequestNoSpan(self) -> None:
        """
        A frame refused before anything runs starts no span.
        """
        self.connection.sendBytes(encode([0, 1]))
        self.assertEqual(self.spans.finished(), [])
        self.assertEqual(self.factory.tracing.openSpans, 0)  # type: ignore[union-attr]


class UntracedTests(SynchronousTestCase):
    """
    Without tracing, nothing of it runs: the hot paths are the ones an
    untraced client and server always had.
    """

    skip = skipReason

    def test_serverHotPath(self) -> None:
        """
        An untraced server has no tracing and no observer, and its requests
        take the hot path; a traced one sends them all the other way.
        """
        registry = Registry()
        plain = RpcServerFactory(registry, FakeReactor())
        self.assertIsNone(plain.tracing)
        self.assertIsNone(plain.observer)
        protocol = plain.buildProtocol(PEER)
        self.assertFalse(protocol._offHotPath)
        traced = RpcServerFactory(registry, FakeReactor(), tracing=True)
        self.assertIsInstance(traced.tracing, _otel.ServerTracing)
        self.assertIs(traced.observer, traced.tracing)
        self.assertTrue(traced.buildProtocol(PEER)._offHotPath)

    def test_clientHotPath(self) -> None:
        """
        An untraced client's C{callRemote} is the class's own; a traced one's
        takes the path of calls with options.
        """
        server = MemoryServer(Registry())
        plain = RpcClient(server.reactor, "server", 9988)
        self.assertEqual(plain.callRemote.__func__, RpcClient.callRemote)  # type: ignore[attr-defined]
        traced = RpcClient(server.reactor, "server", 9988, tracing=True)
        self.assertEqual(
            traced.callRemote.__func__,  # type: ignore[attr-defined]
            RpcClient._tracedCallRemote,
        )

    def test_untracedServer(self) -> None:
        """
        A traced client calls an untraced server as any client does: the
        trace context is metadata the server ignores.
        """
        spans = Spans()
        server = MemoryServer(handlers(spans))
        client = RpcClient(
            server.reactor, "server", 9988, tracing=True, tracerProvider=spans.provider
        )
        d = client.callRemote("add", 1, 2)
        server.flush()
        self.assertEqual(self.successResultOf(d), 3)
        self.assertEqual(
            [(s.name, s.kind) for s in spans.finished()],
            [("inner", SpanKind.INTERNAL), ("add", SpanKind.CLIENT)],
        )

    def test_serverWithoutMetadata(self) -> None:
        """
        To a server that does not take metadata, a traced call goes out
        without its trace context, and succeeds.
        """
        spans = Spans()
        server = MemoryServer(handlers(spans))
        hello = dict(server.factory.hello)
        hello["features"] = [f for f in hello["features"] if f != "metadata"]
        server.factory.hello = hello
        client = RpcClient(
            server.reactor, "server", 9988, tracing=True, tracerProvider=spans.provider
        )
        d = client.callRemote("add", 1, 2)
        server.flush()
        self.assertEqual(self.successResultOf(d), 3)

    def test_severalEndpoints(self) -> None:
        """
        A client with several endpoints does not know, when a call's span
        starts, which server it goes to: its spans name none.
        """
        spans = Spans()
        server = MemoryServer(Registry())
        client = RpcClient(
            server.reactor,
            endpoints=["a:1", "b:2"],
            tracing=True,
            tracerProvider=spans.provider,
        )
        client.maxPending = 0
        client.callRemote("x").addErrback(lambda f: None)
        [span] = spans.finished()
        self.assertNotIn("server.address", span.attributes or {})


def fullHello(sock: MemorySocket) -> None:
    """
    A scripted server's hello: a real server's, with every feature.
    """
    sock.send_([3, "hello", RpcServerFactory(Registry(), FakeReactor()).hello])


def streamScript(sock: MemorySocket, message: Any) -> None:
    """
    A scripted server's answers: a stream request for C{n} gets the items 0
    to C{n - 1} and the result C{"end"}; a cancel, C{Cancelled}; any other
    request, its first argument, or an error when that is C{"bad"}.
    """
    if message[:2] == [3, "cancel"]:
        error = {"type": "Cancelled", "message": ""}
        sock.send_([1, message[2], error, None])
    elif message[0] == 0 and len(message) > 5 and "stream" in message[5]:
        for i in range(message[3][0]):
            sock.send_([4, message[1], i])
        sock.send_([1, message[1], None, "end"])
    elif message[0] == 0 and message[3] == ["bad"]:
        error = {"type": "ValueError", "message": "bad"}
        sock.send_([1, message[1], error, None])
    elif message[0] == 0:
        sock.send_([1, message[1], None, message[3][0]])


class BlockingClientTests(SynchronousTestCase):
    """
    L{TcpRpcClient} with C{tracing=True}, against a scripted server.
    """

    skip = skipReason

    def client(self, opened: Any = fullHello) -> tuple[TcpRpcClient, ScriptedServer]:
        self.spans = Spans()
        memory = ScriptedServer(opened, streamScript)
        client = TcpRpcClient(
            "memory.invalid",
            9988,
            timeout=5,
            socketFactory=memory,
            tracing=True,
            tracerProvider=self.spans.provider,
        )
        self.addCleanup(client.close)
        return client, memory

    def sentTraceparent(self, memory: ScriptedServer) -> str:
        """
        The C{traceparent} the client sent with its last request.
        """
        [sock] = memory.connections
        request = [m for m in sock.received if m[0] == 0][-1]
        traceparent: str = request[5]["metadata"]["traceparent"]
        return traceparent

    def test_call(self) -> None:
        """
        A call has a CLIENT span, whose trace context went with the request.
        """
        client, memory = self.client()
        self.assertEqual(client.call("echo", ("x",)), "x")
        [span] = self.spans.finished()
        traceId, spanId, parent = ids(span)
        self.assertEqual(
            (span.name, span.kind, parent, span.status.status_code),
            ("echo", SpanKind.CLIENT, None, StatusCode.UNSET),
        )
        self.assertEqual(
            self.sentTraceparent(memory).split("-")[:3],
            ["00", f"{traceId:032x}", f"{spanId:016x}"],
        )
        attributes = span.attributes or {}
        self.assertEqual(
            (attributes["server.address"], attributes["server.port"]),
            ("memory.invalid", 9988),
        )

    def test_error(self) -> None:
        """
        A call that raises has a failed span.
        """
        client, _ = self.client()
        self.assertRaises(RemoteError, client.call, "echo", ("bad",))
        [span] = self.spans.finished()
        self.assertEqual(span.status.status_code, StatusCode.ERROR)
        self.assertEqual(
            (span.attributes or {})["rpc.response.status_code"], "ValueError"
        )

    def test_withoutMetadata(self) -> None:
        """
        To a server that does not take metadata, the request goes without
        the trace context, and the call succeeds.
        """
        client, memory = self.client(opened=lambda sock: sock.send_(HELLO))
        self.assertEqual(client.call("echo", ("x",)), "x")
        [sock] = memory.connections
        self.assertEqual(sock.received, [[0, 0, "echo", ["x"]]])
        self.assertEqual(len(self.spans.finished()), 1)

    def test_stream(self) -> None:
        """
        A stream's span starts with its first item asked for and ends with
        its end.
        """
        client, memory = self.client()
        items = client.callStream("count", (3,))
        self.assertEqual(self.spans.finished(), [])
        self.assertEqual(list(items), [0, 1, 2])
        [span] = self.spans.finished()
        traceId, spanId, _ = ids(span)
        self.assertEqual(
            (span.name, span.status.status_code), ("count", StatusCode.UNSET)
        )
        self.assertEqual(
            self.sentTraceparent(memory).split("-")[:3],
            ["00", f"{traceId:032x}", f"{spanId:016x}"],
        )

    def test_streamClosedEarly(self) -> None:
        """
        A stream left before its end was cancelled by its consumer.
        """
        client, _ = self.client()
        items = client.callStream("count", (3,))
        self.assertEqual(next(items), 0)
        items.close()
        [span] = self.spans.finished()
        self.assertEqual(span.status.status_code, StatusCode.ERROR)
        self.assertEqual((span.attributes or {})["error.type"], "CancelledError")


class SemanticConventionsTests(SynchronousTestCase):
    """
    The attribute names are those of the semantic conventions installed
    with the SDK (L{opentelemetry.semconv}).
    """

    skip = skipReason

    def test_names(self) -> None:
        """
        Each attribute name agilerpc writes is the conventions' own.
        """
        from importlib.metadata import version

        try:
            from opentelemetry.semconv._incubating.attributes import rpc_attributes
            from opentelemetry.semconv.attributes import (
                error_attributes,
                network_attributes,
                server_attributes,
            )

            rpc_attributes.RPC_SYSTEM_NAME  # noqa: B018
        except (ImportError, AttributeError):
            raise SkipTest(
                "opentelemetry-semantic-conventions "
                f"{version('opentelemetry-semantic-conventions')} predates the RPC "
                "names of v1.44.0 (0.66b2) that agilerpc follows"
            ) from None

        self.assertEqual(
            [
                _otel.RPC_SYSTEM_NAME,
                _otel.RPC_METHOD,
                _otel.RPC_METHOD_ORIGINAL,
                _otel.RPC_RESPONSE_STATUS_CODE,
                _otel.ERROR_TYPE,
                _otel.SERVER_ADDRESS,
                _otel.SERVER_PORT,
                _otel.NETWORK_PEER_ADDRESS,
                _otel.NETWORK_PEER_PORT,
            ],
            [
                rpc_attributes.RPC_SYSTEM_NAME,
                rpc_attributes.RPC_METHOD,
                rpc_attributes.RPC_METHOD_ORIGINAL,
                rpc_attributes.RPC_RESPONSE_STATUS_CODE,
                error_attributes.ERROR_TYPE,
                server_attributes.SERVER_ADDRESS,
                server_attributes.SERVER_PORT,
                network_attributes.NETWORK_PEER_ADDRESS,
                network_attributes.NETWORK_PEER_PORT,
            ],
        )


class WithoutExtraTests(SynchronousTestCase):
    """
    Tracing asked for without opentelemetry installed fails at once, saying
    what to install.
    """

    def setUp(self) -> None:
        saved = {
            name: module
            for name, module in sys.modules.items()
            if name == "opentelemetry"
            or name.startswith("opentelemetry.")
            or name == "agilerpc._otel"
        }

        def restore() -> None:
            for name in list(sys.modules):
                if name.startswith("opentelemetry") or name == "agilerpc._otel":
                    del sys.modules[name]
            sys.modules.update(saved)

        self.addCleanup(restore)
        for name in saved:
            del sys.modules[name]
        # A None entry makes the import raise ImportError.
        sys.modules["opentelemetry"] = None  # type: ignore[assignment]

    def test_client(self) -> None:
        """
        C{RpcClient(tracing=True)} raises L{ImportError}.
        """
        server = MemoryServer(Registry())
        e = self.assertRaises(
            ImportError, RpcClient, server.reactor, "server", 9988, tracing=True
        )
        self.assertIn("pip install 'agilerpc[otel]'", str(e))

    def test_server(self) -> None:
        """
        C{RpcServerFactory(tracing=True)} raises L{ImportError}.
        """
        e = self.assertRaises(
            ImportError, RpcServerFactory, Registry(), FakeReactor(), tracing=True
        )
        self.assertIn("pip install 'agilerpc[otel]'", str(e))

    def test_option(self) -> None:
        """
        C{twistd agilerpc --otel} is a usage error.
        """
        e = self.assertRaises(usage.UsageError, Options().parseOptions, ["--otel"])
        self.assertIn("pip install 'agilerpc[otel]'", str(e))

    def test_untraced(self) -> None:
        """
        Without tracing, clients and servers work without opentelemetry.
        """
        server = MemoryServer(Registry())
        server.factory.registry.register(lambda: 1, name="one")
        d = RpcClient(server.reactor, "server", 9988).callRemote("one")
        server.flush()
        self.assertEqual(self.successResultOf(d), 1)
        self.assertNotIn("agilerpc._otel", sys.modules)


class OtelOptionTests(SynchronousTestCase):
    """
    C{twistd agilerpc --otel}.
    """

    skip = skipReason

    def test_off(self) -> None:
        """
        By default the server is not traced.
        """
        config = Options()
        config.parseOptions(["--port", "0"])
        factory = self._factory(config)
        self.assertIsNone(factory.tracing)

    def test_on(self) -> None:
        """
        With C{--otel} the server traces its calls, through the global
        tracer provider.
        """
        config = Options()
        config.parseOptions(["--port", "0", "--otel"])
        factory = self._factory(config)
        self.assertIsInstance(factory.tracing, _otel.ServerTracing)

    def _factory(self, config: Options) -> RpcServerFactory:
        reactor = ListeningReactor()
        service = makeService(config, reactor)
        service.startService()
        self.addCleanup(service.stopService)
        [(_, factory, _, _)] = reactor.tcpServers
        assert isinstance(factory, RpcServerFactory)
        return factory


class TwistdTraceTests(TestCase):
    """
    A real C{twistd agilerpc --otel}, whose handlers module sets up the SDK
    with an exporter writing JSON lines: its spans continue the trace of a
    client in this process.
    """

    skip = skipReason
    timeout = 60

    def serverSpans(self, server: ServerProcess, count: int) -> list[dict[str, Any]]:
        """
        The first C{count} spans the server wrote, waiting for them for up
        to 10 seconds.
        """
        path = os.path.join(server.directory, "spans.jsonl")
        deadline = time.monotonic() + 10
        while True:
            lines: list[str] = []
            if os.path.exists(path):
                with open(path, encoding="utf-8") as f:
                    lines = [line for line in f if line.endswith("\n")]
            if len(lines) >= count or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        self.assertGreaterEqual(len(lines), count, server.output())
        return [json.loads(line) for line in lines[:count]]

    @inlineCallbacks
    def test_oneTrace(self) -> Any:
        """
        The client's span is the parent of the server's, across processes,
        and the handler's own span is the server span's child.
        """
        spans = Spans()
        server = ServerProcess.start(self, "--otel", module="otelhandlers")
        client = RpcClient(
            globalReactor,
            "127.0.0.1",
            server.port,
            tracing=True,
            tracerProvider=spans.provider,
        )
        self.addCleanup(client.close, 1)
        result = yield client.callRemote("traced", "x")
        self.assertEqual(result, "x")
        clientSpan = spans.named("traced", SpanKind.CLIENT)
        traceId, spanId, _ = ids(clientSpan)
        inner, serverSpan = self.serverSpans(server, 2)
        self.assertEqual(
            (serverSpan["name"], serverSpan["kind"], serverSpan["trace_id"]),
            ("traced", "SERVER", f"{traceId:032x}"),
        )
        self.assertEqual(serverSpan["parent_id"], f"{spanId:016x}")
        self.assertEqual(
            (inner["name"], inner["trace_id"], inner["parent_id"]),
            ("inner", f"{traceId:032x}", serverSpan["span_id"]),
        )
        attributes = serverSpan["attributes"]
        self.assertEqual(
            (
                attributes["rpc.system.name"],
                attributes["rpc.method"],
                attributes["server.address"],
                attributes["server.port"],
                attributes["network.peer.address"],
            ),
            ("agilerpc", "traced", "127.0.0.1", server.port, "127.0.0.1"),
        )

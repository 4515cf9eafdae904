# mypy reports trial's untyped assertions called through self under the test
# class's name, which untyped_calls_exclude = ["twisted"] does not match.
# mypy: disable-error-code="no-untyped-call"
"""
Tests for L{agilerpc._server}: the server protocol driven byte by byte over a
L{StringTransport} with a L{Clock}, decoding every frame it writes.

Covers the hello, dispatch of every kind of handler, every error response,
malformed and oversized input, notifications, cancel, keepalive, goaway,
half-close and linger, client end-of-stream and the factory's shutdown.
"""

from __future__ import annotations

import struct
from typing import Any

import msgpack
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionLost
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from agilerpc import Registry, RpcError, RpcServerFactory, _server
from agilerpc import _wire as wire
from agilerpc._server import RpcServerProtocol

from .serverhelpers import (
    KEEPALIVE,
    LINGER,
    MAX_SIZE,
    PEER,
    Connection,
    DescriptorTransport,
    ServerTestCase,
    encode,
    parseFrames,
    rawFrame,
)


class HelloTests(ServerTestCase):
    """
    The server's first frame, and what it does to the socket.
    """

    def test_helloIsFirstFrame(self) -> None:
        """
        The server's first and only frame on a new connection is the hello,
        with protocol 1, the keepalive and the maximum message size.
        """
        connection = self.connect()
        [hello] = connection.hello
        self.assertEqual(hello[:2], [3, "hello"])
        self.assertEqual(len(hello), 3)
        info = hello[2]
        self.assertEqual(info["protocol"], 1)
        self.assertEqual(info["keepalive"], KEEPALIVE)
        self.assertEqual(info["max_message_size"], MAX_SIZE)
        self.assertTrue(info["server"].startswith("agilerpc/"), info)

    def test_helloDefaults(self) -> None:
        """
        By default the hello announces a 75 s keepalive and 8 MiB messages.
        """
        factory = RpcServerFactory(self.registry, self.reactor)
        [hello] = Connection(factory).hello
        self.assertEqual(hello[2]["keepalive"], 75)
        self.assertEqual(hello[2]["max_message_size"], 8 * 1024 * 1024)

    def test_keepaliveOffInHello(self) -> None:
        """
        A disabled keepalive is announced as 0.
        """
        [hello] = self.connect(keepalive=0).hello
        self.assertEqual(hello[2]["keepalive"], 0)

    def test_tcpNoDelay(self) -> None:
        """
        The server sets TCP_NODELAY on transports that have it.
        """
        connection = self.connect()
        self.assertEqual(connection.transport.noDelay, [True])

    def test_noDelayNotSupported(self) -> None:
        """
        A transport without C{setTcpNoDelay} (or one where it fails, like a
        UNIX socket) is served all the same.
        """

        class Failing(StringTransport):
            def setTcpNoDelay(self, enabled: bool) -> None:
                raise OSError("not a TCP socket")

        for transport in [StringTransport(), Failing()]:
            protocol = self.factory.buildProtocol(PEER)
            protocol.makeConnection(transport)
            [hello] = parseFrames(transport.value())
            self.assertEqual(hello[:2], [3, "hello"])

    def test_halfCloseable(self) -> None:
        """
        The protocol provides L{IHalfCloseableProtocol}, so that Twisted tells
        it about the client's end of stream instead of closing.
        """
        self.assertTrue(verifyObject(IHalfCloseableProtocol, self.connect().protocol))

    def test_tracksConnections(self) -> None:
        """
        The factory knows its open connections.
        """
        one = self.connect()
        two = self.connect()
        self.assertEqual(self.factory.connections, {one.protocol, two.protocol})
        one.lost()
        self.assertEqual(self.factory.connections, {two.protocol})

    def test_badFactoryOptions(self) -> None:
        """
        A negative keepalive or a maximum message size below 1 is refused.
        """
        with self.assertRaises(ValueError):
            RpcServerFactory(self.registry, self.reactor, keepalive=-1)
        with self.assertRaises(ValueError):
            RpcServerFactory(self.registry, self.reactor, maxMessageSize=0)


class CallTests(ServerTestCase):
    """
    Requests are dispatched to every kind of handler and answered.
    """

    def test_plainReturn(self) -> None:
        """
        A handler's return value is sent as the result.
        """
        connection = self.connect()
        self.assertEqual(connection.call(1, "add", 1, 2), [[1, 1, None, 3]])

    def test_kwargs(self) -> None:
        """
        Keyword arguments are passed by name.
        """
        connection = self.connect()
        self.assertEqual(
            connection.call(1, "greet", "bob", greeting="hi"), [[1, 1, None, "hi bob"]]
        )
        self.assertEqual(
            connection.call(2, "greet", name="ann"), [[1, 2, None, "hello ann"]]
        )

    def test_strAndBytes(self) -> None:
        """
        str stays str and bytes stays bytes, both ways.
        """
        connection = self.connect()
        connection.request(1, "echo", "text")
        connection.request(2, "echo", b"\x00bytes")
        self.assertEqual(
            connection.received(), [[1, 1, None, "text"], [1, 2, None, b"\x00bytes"]]
        )
        self.assertEqual(self.calls, ["text", b"\x00bytes"])

    def test_deferredFiredLater(self) -> None:
        """
        A returned Deferred is answered when it fires, not before.
        """
        connection = self.connect()
        self.assertEqual(connection.call(1, "later", "a"), [])
        self.pending["a"].callback({"k": [1]})
        self.assertEqual(connection.received(), [[1, 1, None, {"k": [1]}]])

    def test_deferredAlreadyFired(self) -> None:
        """
        A returned Deferred that has already fired is answered at once.
        """
        connection = self.connect()
        self.assertEqual(connection.call(1, "fired"), [[1, 1, None, "already"]])
        self.assertUsable(connection)

    def test_deferredSubclass(self) -> None:
        """
        A returned Deferred of a subclass (such as L{gatherResults}'s) is
        waited for, not sent as the result.
        """
        connection = self.connect()
        self.assertEqual(connection.call(1, "gather"), [[1, 1, None, [1, 2]]])

    def test_coroutine(self) -> None:
        """
        An C{async def} handler is answered when its coroutine returns.
        """
        connection = self.connect()
        self.assertEqual(connection.call(1, "coro", "c"), [])
        self.pending["c"].callback("done")
        self.assertEqual(connection.received(), [[1, 1, None, "coro done"]])

    def test_thread(self) -> None:
        """
        A C{thread=True} handler runs in the reactor's thread pool, and its
        result comes back through C{callFromThread}.
        """
        connection = self.connect()
        self.assertEqual(connection.call(1, "threaded", 21), [])
        self.assertEqual(self.calls, [])
        self.assertEqual(len(self.reactor.pool.queue), 1)
        self.reactor.pool.runAll()
        self.assertEqual(self.calls, [("thread", 21)])
        self.assertEqual(self.reactor.threadCalls, 1)
        self.assertEqual(connection.received(), [[1, 1, None, 42]])

    def test_outOfOrder(self) -> None:
        """
        Responses go out in the order calls finish, not the order they came.
        """
        connection = self.connect()
        connection.request(1, "later", "a")
        connection.request(2, "later", "b")
        self.assertEqual(connection.received(), [])
        self.pending["b"].callback("B")
        self.assertEqual(connection.received(), [[1, 2, None, "B"]])
        self.pending["a"].callback("A")
        self.assertEqual(connection.received(), [[1, 1, None, "A"]])

    def test_slowDoesNotHoldBackFast(self) -> None:
        """
        A fast call sent after a slow one is answered while the slow one runs.
        """
        connection = self.connect()
        connection.request(1, "later", "slow")
        self.assertEqual(connection.call(2, "add", 1, 1), [[1, 2, None, 2]])
        self.pending["slow"].callback("at last")
        self.assertEqual(connection.received(), [[1, 1, None, "at last"]])

    def test_builtins(self) -> None:
        """
        C{system.listMethods} is served like any method.
        """
        connection = self.connect()
        [[code, msgid, error, names]] = connection.call(1, "system.listMethods")
        self.assertEqual((code, msgid, error), (1, 1, None))
        self.assertEqual(names, self.registry.names())
        self.assertIn("system.describe", names)

    def test_msgidRange(self) -> None:
        """
        The smallest and largest msgids are echoed exactly.
        """
        connection = self.connect()
        self.assertEqual(connection.call(0, "echo", 1), [[1, 0, None, 1]])
        self.assertEqual(
            connection.call(2**32 - 1, "echo", 1), [[1, 2**32 - 1, None, 1]]
        )

    def test_msgidReusedAfterAnswer(self) -> None:
        """
        A msgid can be used again once its call is answered.
        """
        connection = self.connect()
        connection.request(1, "later", "a")
        self.pending["a"].callback("first")
        self.assertEqual(connection.received(), [[1, 1, None, "first"]])
        self.assertEqual(connection.call(1, "echo", "second"), [[1, 1, None, "second"]])


class ErrorTests(ServerTestCase):
    """
    Every way a call can fail ends in one error response, and the connection
    goes on.
    """

    def test_methodNotFound(self) -> None:
        """
        An unknown method is C{MethodNotFound}.
        """
        connection = self.connect()
        error = self.assertError(connection.call(1, "nope"), 1, "MethodNotFound")
        self.assertIn("'nope'", error["message"])
        self.assertUsable(connection)

    def test_invalidParams(self) -> None:
        """
        Arguments that do not bind to the handler's signature are
        C{InvalidParams} and the handler does not run.
        """
        connection = self.connect()
        cases: list[tuple[list[Any], dict[str, Any]]] = [
            (["a", "b"], {}),
            ([], {}),
            (["a"], {"y": 1}),
            (["a"], {"x": "again"}),
        ]
        for msgid, (args, kwargs) in enumerate(cases, 1):
            connection.request(msgid, "echo", *args, **kwargs)
            error = self.assertError(connection.received(), msgid, "InvalidParams")
            self.assertTrue(error["message"].startswith("echo: "), error["message"])
        self.assertEqual(self.calls, [])
        self.assertUsable(connection)

    def test_handlerRaises(self) -> None:
        """
        An exception is sent as its class name and C{str()}, with no
        traceback, and logged with its failure.
        """
        events = self.captureLogs()
        connection = self.connect()
        error = self.assertError(
            connection.call(1, "fail", "bad value"), 1, "ValueError"
        )
        self.assertEqual(error, {"type": "ValueError", "message": "bad value"})
        [logged] = self.flushLoggedErrors(ValueError)
        self.assertEqual(str(logged.value), "bad value")
        failures = [e for e in events if "log_failure" in e]
        self.assertEqual(len(failures), 1)
        self.assertEqual(failures[0]["log_namespace"], "agilerpc.server")
        self.assertEqual((failures[0]["method"], failures[0]["msgid"]), ("fail", 1))
        self.assertUsable(connection)

    def test_debugTraceback(self) -> None:
        """
        With debug on, the error's data holds the formatted traceback.
        """
        connection = self.connect(debug=True)
        error = self.assertError(connection.call(1, "fail", "oops"), 1, "ValueError")
        self.assertEqual(error["message"], "oops")
        self.assertEqual(list(error["data"]), ["traceback"])
        traceback = error["data"]["traceback"]
        self.assertIn("Traceback", traceback)
        self.assertIn("ValueError: oops", traceback)
        self.assertIn("in fail", traceback)
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)

    def test_rpcError(self) -> None:
        """
        An L{RpcError} is sent exactly as it says, and is not logged as a
        failure.
        """
        connection = self.connect()
        [response] = connection.call(1, "custom")
        self.assertEqual(
            response,
            [1, 1, {"type": "Custom", "message": "msg", "data": {"x": 1}}, None],
        )
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_deferredFails(self) -> None:
        """
        A Deferred that fails is answered with its error, and logged.
        """
        connection = self.connect()
        connection.request(1, "later", "a")
        self.pending["a"].errback(KeyError("gone"))
        [response] = connection.received()
        self.assertEqual(
            response, [1, 1, {"type": "KeyError", "message": "'gone'"}, None]
        )
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)
        self.assertUsable(connection)

    def test_deferredFailsWithRpcError(self) -> None:
        """
        A Deferred failing with an L{RpcError} sends that error.
        """
        connection = self.connect()
        connection.request(1, "later", "a")
        self.pending["a"].errback(RpcError("Nope", "not today"))
        self.assertEqual(
            connection.received(),
            [[1, 1, {"type": "Nope", "message": "not today"}, None]],
        )

    def test_coroutineRaises(self) -> None:
        """
        An C{async def} handler that raises is answered with its error.
        """
        connection = self.connect()
        error = self.assertError(connection.call(1, "coroFail"), 1, "KeyError")
        self.assertEqual(error, {"type": "KeyError", "message": "'coroutine failed'"})
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)

    def test_threadRaises(self) -> None:
        """
        A thread handler that raises is answered with its error.
        """
        connection = self.connect()
        connection.request(1, "threadFail")
        self.reactor.pool.runAll()
        [response] = connection.received()
        self.assertEqual(
            response,
            [1, 1, {"type": "ZeroDivisionError", "message": "in a thread"}, None],
        )
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_unencodableResult(self) -> None:
        """
        A result msgpack cannot encode is an C{InvalidResult} error for that
        call, logged, and the connection goes on.
        """
        events = self.captureLogs()
        connection = self.connect()
        error = self.assertError(connection.call(1, "unencodable"), 1, "InvalidResult")
        self.assertEqual(
            error["message"],
            "the result of unencodable cannot be sent: "
            "a value of Python type 'object' has no msgpack encoding",
        )
        self.assertNotIn("data", error)
        logged = [e for e in events if e.get("method") == "unencodable"]
        self.assertEqual(len(logged), 1)
        self.assertEqual(logged[0]["log_level"].name, "error")
        self.assertUsable(connection)

    def test_unencodableDeferredResult(self) -> None:
        """
        A Deferred firing with a result msgpack cannot encode is an
        C{InvalidResult} error too.
        """
        connection = self.connect()
        connection.request(1, "later", "a")
        self.pending["a"].callback({1j})
        self.assertError(connection.received(), 1, "InvalidResult")
        self.assertUsable(connection)

    def test_resultTooLarge(self) -> None:
        """
        A result whose response payload would be larger than the maximum
        message size is replaced by a C{MessageTooLarge} error for that call;
        one of exactly the maximum is sent.
        """
        connection = self.connect()
        # [1, 1, nil, bin16(n)] takes 7 bytes besides the n bytes.
        [response] = connection.call(1, "blob", MAX_SIZE - 7)
        self.assertEqual(response, [1, 1, None, b"x" * (MAX_SIZE - 7)])
        self.assertEqual(len(msgpack.packb(response, use_bin_type=True)), MAX_SIZE)
        error = self.assertError(
            connection.call(2, "blob", MAX_SIZE - 6), 2, "MessageTooLarge"
        )
        self.assertIn("blob()", error["message"])
        self.assertUsable(connection)

    def test_errorTooLarge(self) -> None:
        """
        An error whose response would be larger than the maximum message size
        keeps its type and has its message cut to fit: the server never writes
        a frame larger than it announced.
        """
        connection = self.connect()
        before = len(connection.transport.value())
        message = "x" * (MAX_SIZE - 50) + "\u00e9" * 10
        error = self.assertError(connection.call(1, "fail", message), 1, "ValueError")
        written = len(connection.transport.value()) - before
        self.assertLessEqual(written, 4 + MAX_SIZE)
        self.assertGreater(written, MAX_SIZE - 50)
        self.assertTrue(error["message"].endswith(" [truncated]"), error)
        self.assertTrue(message.startswith(error["message"][: -len(" [truncated]")]))
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)
        self.assertUsable(connection)

    def test_methodNotFoundHugeName(self) -> None:
        """
        A C{MethodNotFound} for a method name nearly as large as the maximum
        message size is still answered within it.
        """
        connection = self.connect()
        before = len(connection.transport.value())
        error = self.assertError(
            connection.call(1, "m" * (MAX_SIZE - 20)), 1, "MethodNotFound"
        )
        self.assertLessEqual(len(connection.transport.value()) - before, 4 + MAX_SIZE)
        self.assertTrue(error["message"].startswith("no method named 'mmm"), error)
        self.assertUsable(connection)

    def test_unprintableException(self) -> None:
        """
        An exception whose C{str()} raises is still answered, with its class
        name.
        """

        class Unprintable(Exception):
            def __str__(self) -> str:
                raise RuntimeError("no str for you")

        def raiser() -> None:
            raise Unprintable()

        def raiseLater() -> Deferred[None]:
            d: Deferred[None] = Deferred()
            self.pending["u"] = d
            return d

        self.registry.register(raiser)
        self.registry.register(raiseLater)
        connection = self.connect()
        error = self.assertError(connection.call(1, "raiser"), 1, "Unprintable")
        self.assertNotIn("data", error)
        connection.request(2, "raiseLater")
        self.pending["u"].errback(Unprintable())
        self.assertError(connection.received(), 2, "Unprintable")
        self.assertEqual(len(self.flushLoggedErrors(Unprintable)), 2)
        # The failed call counted as finished: the keepalive runs again.
        self.reactor.advance(KEEPALIVE)
        self.assertEqual(connection.received(), [[3, "goaway", 2, "idle"]])

    def test_debugTracebackTooLarge(self) -> None:
        """
        With debug on, an error whose traceback makes it too large is sent
        without its traceback, within the maximum message size.
        """
        connection = self.connect(debug=True, maxMessageSize=200)
        before = len(connection.transport.value())
        [[code, msgid, error, result]] = connection.call(1, "fail", "y" * 100)
        self.assertEqual((code, msgid, result), (1, 1, None))
        self.assertEqual(error, {"type": "ValueError", "message": "y" * 100})
        self.assertLessEqual(len(connection.transport.value()) - before, 4 + 200)
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)

    def test_errorTypeTooLarge(self) -> None:
        """
        An error whose type alone does not fit the maximum message size is
        sent as C{MessageTooLarge}.
        """

        def longType() -> None:
            raise RpcError("T" * 120, "m")

        self.registry.register(longType)
        connection = self.connect(maxMessageSize=100)
        before = len(connection.transport.value())
        self.assertError(
            connection.call(1, "longType"),
            1,
            "MessageTooLarge",
            "the error of longType() is too large to send",
        )
        self.assertLessEqual(len(connection.transport.value()) - before, 4 + 100)

    def test_unencodableErrorData(self) -> None:
        """
        An L{RpcError} whose data msgpack cannot encode still gets an error
        response with its type and message, and the connection goes on.
        """

        def badData() -> None:
            raise RpcError("Custom", "with bad data", object())

        self.registry.register(badData)
        connection = self.connect()
        [response] = connection.call(1, "badData")
        self.assertEqual(response[:2], [1, 1])
        self.assertEqual(response[2]["type"], "Custom")
        self.assertEqual(response[2]["message"], "with bad data")
        self.assertNotIn("data", response[2])
        self.assertUsable(connection)

    def test_unencodableErrorMessage(self) -> None:
        """
        An exception whose message is not valid text (a lone surrogate) still
        gets an error response, and the connection goes on.
        """

        def surrogate() -> None:
            raise ValueError("bad \udc80 text")

        self.registry.register(surrogate)
        connection = self.connect()
        [response] = connection.call(1, "surrogate")
        self.assertEqual(
            response,
            [1, 1, {"type": "ValueError", "message": "bad \\udc80 text"}, None],
        )
        # Twisted's own log file cannot write the surrogate either, and logs
        # that as a UnicodeEncodeError (a ValueError) too.
        flushed = self.flushLoggedErrors(ValueError)
        self.assertEqual(
            [f for f in flushed if type(f.value) is ValueError], flushed[:1]
        )
        self.assertUsable(connection)


# Payloads that are well framed but malformed, with the msgid the
# InvalidRequest answer must carry.
MALFORMED: list[tuple[str, bytes, int | None]] = [
    ("empty frame", b"", None),
    ("not msgpack", b"\xc1", None),
    ("truncated msgpack", msgpack.packb([0, 1, "echo", ["abc"]])[:-1], 1),
    ("extra bytes", msgpack.packb([0, 1, "echo", [1]]) + b"\x01", 1),
    ("two messages", msgpack.packb([0, 1, "echo", [1]]) * 2, 1),
    ("not an array", msgpack.packb({"a": 1}), None),
    ("an integer", msgpack.packb(0), None),
    ("empty array", msgpack.packb([]), None),
    ("unknown type code", msgpack.packb([9, 1, "echo", [1]]), None),
    ("type code a str", msgpack.packb(["0", 1, "echo", [1]]), None),
    ("type code false", msgpack.packb([False, 1, "echo", [1]]), None),
    ("type code a float", msgpack.packb([0.0, 1, "echo", [1]]), None),
    ("a response", msgpack.packb([1, 1, None, 1]), None),
    ("request without msgid", msgpack.packb([0]), None),
    ("negative msgid", msgpack.packb([0, -1, "echo", [1]]), None),
    ("msgid too large", msgpack.packb([0, 2**32, "echo", [1]]), None),
    ("msgid a bool", msgpack.packb([0, True, "echo", [1]]), None),
    ("msgid a float", msgpack.packb([0, 1.0, "echo", [1]]), None),
    ("msgid nil", msgpack.packb([0, None, "echo", [1]]), None),
    ("request too short", msgpack.packb([0, 7, "echo"]), 7),
    ("request too long", msgpack.packb([0, 7, "echo", [1], {}, 1]), 7),
    ("method not a str", msgpack.packb([0, 7, 5, [1]]), 7),
    ("method bin", msgpack.packb([0, 7, b"echo", [1]], use_bin_type=True), 7),
    ("args not an array", msgpack.packb([0, 7, "echo", {"x": 1}]), 7),
    ("args nil", msgpack.packb([0, 7, "echo", None]), 7),
    ("kwargs not a map", msgpack.packb([0, 7, "echo", [], [1]]), 7),
    ("kwargs key not a str", b"\x95\x00\x07\xa4echo\x90\x81\xc4\x01x\x01", 7),
    ("array as a map key", b"\x94\x00\x07\xa4echo\x91\x81\x90\x02", 7),
    ("invalid utf-8", b"\x94\x00\x07\xa4ech\xff\x90", 7),
    ("invalid utf-8 before the msgid", b"\x94\xa1\xff\x07\x90", None),
    ("notification too short", msgpack.packb([2, "echo"]), None),
    ("notification method not a str", msgpack.packb([2, 5, [1]]), None),
    ("notification args not an array", msgpack.packb([2, "echo", 1]), None),
    ("control without kind", msgpack.packb([3]), None),
    ("control kind not a str", msgpack.packb([3, 5]), None),
    ("cancel without msgid", msgpack.packb([3, "cancel"]), None),
    ("cancel msgid a str", msgpack.packb([3, "cancel", "1"]), None),
    ("array count beyond the payload", b"\xdd\xff\xff\xff\xff\x00", None),
    ("map count beyond the payload", b"\xdf\xff\xff\xff\xff\x00", None),
    ("str length beyond the payload", b"\x94\x00\x07\xdb\xff\xff\xff\xff", 7),
    ("msgid width beyond the payload", b"\x94\x00\xce\xff", None),
    ("nested 1025 deep", b"\x94\x00\x07\xa4echo\x91" + b"\x91" * 1022 + b"\x90", 7),
]


class MalformedTests(ServerTestCase):
    """
    Well-framed but malformed messages get an C{InvalidRequest} and the
    connection stays usable.
    """

    def test_everyKind(self) -> None:
        """
        Each kind of malformed message is answered with one C{InvalidRequest},
        carrying the msgid when the message had a valid one, even when the
        rest of it cannot be decoded; nothing runs; the next request is
        answered.
        """
        for name, payload, msgid in MALFORMED:
            connection = self.connect(maxMessageSize=4096)
            connection.sendBytes(rawFrame(payload))
            frames = connection.received()
            with self.subTest(name):
                error = self.assertError(frames, msgid, "InvalidRequest")
                if msgid is None:
                    self.assertNotIn("data", error)
                else:
                    self.assertEqual(error["data"], {"msgid": msgid})
                self.assertEqual(self.calls, [])
                self.assertUsable(connection)

    def test_nestedWithinLimit(self) -> None:
        """
        A message nested 1024 deep, counting its own array, is accepted.
        """
        connection = self.connect(maxMessageSize=4096)
        arg = b"\x91" * 1021 + b"\x90"
        connection.sendBytes(rawFrame(b"\x94\x00\x07\xa4echo\x91" + arg))
        [[code, msgid, error, result]] = connection.received()
        self.assertEqual((code, msgid, error), (1, 7, None))
        depth = 0
        while result != []:
            [result] = result
            depth += 1
        self.assertEqual(depth, 1021)

    def test_intMapKeysAccepted(self) -> None:
        """
        An integer map key inside an argument is accepted, and a result with
        one is sent as it is.
        """
        connection = self.connect()
        connection.sendBytes(rawFrame(b"\x94\x00\x07\xa4echo\x91\x81\x01\x02"))
        self.assertEqual(connection.received(), [[1, 7, None, {1: 2}]])

    def test_binMapKeysAccepted(self) -> None:
        """
        A bin map key inside an argument is accepted (and stays bytes).
        """
        connection = self.connect()
        connection.sendBytes(rawFrame(b"\x94\x00\x07\xa4echo\x91\x81\xc4\x01k\x01"))
        self.assertEqual(connection.received(), [[1, 7, None, {b"k": 1}]])

    def test_malformedReusingOutstandingMsgid(self) -> None:
        """
        A malformed request carrying the msgid of a running call is answered
        with a nil msgid, so that it cannot be mistaken for that call's answer.
        """
        connection = self.connect()
        connection.request(5, "later", "a")
        connection.send([0, 5, "echo"])
        error = self.assertError(connection.received(), None, "InvalidRequest")
        self.assertEqual(error["data"], {"msgid": 5})
        self.pending["a"].callback("first")
        self.assertEqual(connection.received(), [[1, 5, None, "first"]])

    def test_duplicateMsgid(self) -> None:
        """
        A request whose msgid is already outstanding is refused with a nil
        msgid and does not run; the first call is unaffected.
        """
        connection = self.connect()
        connection.request(7, "later", "a")
        connection.request(7, "echo", "dup")
        error = self.assertError(connection.received(), None, "InvalidRequest")
        self.assertEqual(error["data"], {"msgid": 7})
        self.assertEqual(self.calls, ["a"])
        self.pending["a"].callback("first")
        self.assertEqual(connection.received(), [[1, 7, None, "first"]])
        self.assertUsable(connection)

    def test_duplicateDoesNotCountAsDispatched(self) -> None:
        """
        A refused duplicate does not become the goaway's last msgid.
        """
        connection = self.connect()
        connection.request(7, "later", "a")
        connection.request(8, "echo", 1)
        connection.request(7, "echo", "dup")
        connection.received()
        self.factory.shutdown()
        self.assertEqual(connection.received(), [[3, "goaway", 8, "shutdown"]])


class OversizedTests(ServerTestCase):
    """
    A frame longer than the maximum message size ends the connection.
    """

    def test_headerAlone(self) -> None:
        """
        A header announcing more than the maximum is answered, before any
        body, with C{MessageTooLarge} (nil msgid) and a goaway, then a
        half-close; later bytes are ignored and not buffered; the connection is
        aborted after the linger time.
        """
        events = self.captureLogs()
        connection = self.connect()
        connection.sendBytes(struct.pack(">I", MAX_SIZE + 1))
        [error, goaway] = connection.received()
        self.assertError([error], None, "MessageTooLarge")
        self.assertIn(str(MAX_SIZE + 1), error[2]["message"])
        self.assertEqual(goaway, [3, "goaway", None, "MessageTooLarge"])
        self.assertEqual(connection.transport.closes, ["loseWriteConnection"])
        self.assertTrue([e for e in events if e.get("length") == MAX_SIZE + 1])

        connection.sendBytes(b"\x00" * 5000)
        connection.send([0, 1, "echo", ["after"]])
        connection.send([3, "cancel", 1])
        self.assertEqual(connection.received(), [])
        self.assertEqual(self.calls, [])
        self.assertIsNone(connection.protocol._chunks)
        self.assertEqual(connection.protocol._buffered, 0)

        self.reactor.advance(LINGER - 0.5)
        self.assertEqual(connection.transport.closes, ["loseWriteConnection"])
        self.reactor.advance(0.5)
        self.assertEqual(
            connection.transport.closes, ["loseWriteConnection", "abortConnection"]
        )
        connection.lost()
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_exactlyMaximum(self) -> None:
        """
        A frame of exactly the maximum size is read and answered.
        """
        connection = self.connect()
        # [0, 1, "echo", [bin16(n)]] takes 12 bytes besides the n bytes.
        arg = b"z" * (MAX_SIZE - 12)
        self.assertEqual(len(encode([0, 1, "echo", [arg]])), 4 + MAX_SIZE)
        connection.request(1, "echo", arg)
        self.assertEqual(connection.received(), [[1, 1, None, arg]])

    def test_afterRequests(self) -> None:
        """
        The goaway after an oversized frame names the last request received.
        """
        connection = self.connect()
        connection.request(3, "echo", 1)
        connection.request(2, "echo", 2)
        connection.received()
        connection.sendBytes(encode([0, 4, "echo", [3]]) + struct.pack(">I", 2**32 - 1))
        [response, error, goaway] = connection.received()
        self.assertEqual(response, [1, 4, None, 3])
        self.assertError([error], None, "MessageTooLarge")
        self.assertEqual(goaway, [3, "goaway", 4, "MessageTooLarge"])

    def test_runningCallsAnswered(self) -> None:
        """
        Calls running when an oversized frame arrives are still answered, and
        only then does the server half-close.
        """
        connection = self.connect()
        connection.request(1, "later", "a")
        connection.sendBytes(struct.pack(">I", MAX_SIZE + 1))
        [error, goaway] = connection.received()
        self.assertError([error], None, "MessageTooLarge")
        self.assertEqual(goaway, [3, "goaway", 1, "MessageTooLarge"])
        self.assertEqual(connection.transport.closes, [])
        self.pending["a"].callback("still")
        self.assertEqual(connection.received(), [[1, 1, None, "still"]])
        self.assertEqual(connection.transport.closes, ["loseWriteConnection"])

    def test_clientClosesDuringLinger(self) -> None:
        """
        If the client closes its side during the linger, the server closes at
        once and is not aborted later.
        """
        connection = self.connect()
        connection.sendBytes(struct.pack(">I", MAX_SIZE + 1))
        connection.clientCloses()
        self.assertEqual(
            connection.transport.closes, ["loseWriteConnection", "loseConnection"]
        )
        connection.lost()
        self.reactor.advance(LINGER * 10)
        self.assertEqual(
            connection.transport.closes, ["loseWriteConnection", "loseConnection"]
        )
        self.assertEqual(self.reactor.getDelayedCalls(), [])


class NotificationTests(ServerTestCase):
    """
    Notifications run and are never answered.
    """

    def test_runsUnanswered(self) -> None:
        """
        A notification runs its handler and nothing is written.
        """
        connection = self.connect()
        connection.send([2, "echo", ["note"]])
        connection.send([2, "greet", ["x"], {"greeting": "hi"}])
        self.assertEqual(self.calls, ["note"])
        self.assertEqual(connection.received(), [])
        self.assertUsable(connection)

    def test_deferredUnanswered(self) -> None:
        """
        A notification whose handler returns a Deferred is not answered when
        it fires.
        """
        connection = self.connect()
        connection.send([2, "later", ["n"]])
        self.pending["n"].callback("ignored")
        self.assertEqual(connection.received(), [])

    def test_failureLogged(self) -> None:
        """
        A failing notification is logged, not answered.
        """
        events = self.captureLogs()
        connection = self.connect()
        connection.send([2, "fail", ["in a notification"]])
        self.assertEqual(connection.received(), [])
        [logged] = self.flushLoggedErrors(ValueError)
        self.assertEqual(str(logged.value), "in a notification")
        self.assertEqual([e["method"] for e in events if "log_failure" in e], ["fail"])
        self.assertUsable(connection)

    def test_unknownMethodLogged(self) -> None:
        """
        A notification for an unknown method, or with arguments that do not
        bind, is logged at debug level without a traceback (it is the
        caller's mistake, not the server's), and not answered.
        """
        events = self.captureLogs()
        connection = self.connect()
        connection.send([2, "nope", []])
        connection.send([2, "echo", [1, 2, 3]])
        self.assertEqual(connection.received(), [])
        self.assertEqual(self.flushLoggedErrors(), [])
        logged = [e for e in events if e.get("method") in ("nope", "echo")]
        self.assertEqual(
            [(e["method"], e["log_level"].name) for e in logged],
            [("nope", "debug"), ("echo", "debug")],
        )
        self.assertFalse(any("log_failure" in e for e in logged))
        self.assertEqual(
            [type(e["error"]).__name__ for e in logged],
            ["MethodNotFound", "InvalidParams"],
        )

    def test_deferredFailureLogged(self) -> None:
        """
        A notification whose Deferred fails later is logged, not answered.
        """
        connection = self.connect()
        connection.send([2, "later", ["n"]])
        self.pending["n"].errback(KeyError("later"))
        self.assertEqual(connection.received(), [])
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)

    def test_notCountedForGoaway(self) -> None:
        """
        A notification does not change the goaway's last msgid.
        """
        connection = self.connect()
        connection.request(4, "echo", 1)
        connection.send([2, "echo", [2]])
        connection.received()
        self.reactor.advance(KEEPALIVE)
        self.assertEqual(connection.received(), [[3, "goaway", 4, "idle"]])


class CancelTests(ServerTestCase):
    """
    C{[3, "cancel", msgid]} cancels a running call.
    """

    def test_cancel(self) -> None:
        """
        Cancelling a running call cancels its Deferred and answers it with a
        C{Cancelled} error; nothing is logged.
        """
        connection = self.connect()
        connection.request(1, "later", "a")
        connection.send([3, "cancel", 1])
        self.assertTrue(self.pending["a"].called)
        self.assertEqual(
            connection.received(),
            [[1, 1, {"type": "Cancelled", "message": "the call was cancelled"}, None]],
        )
        self.assertEqual(self.flushLoggedErrors(), [])
        self.assertUsable(connection)

    def test_cancelUnknown(self) -> None:
        """
        A cancel for a msgid that is not running is ignored.
        """
        connection = self.connect()
        connection.request(1, "later", "a")
        connection.call(2, "echo", 1)
        connection.send([3, "cancel", 2])
        connection.send([3, "cancel", 3])
        self.assertEqual(connection.received(), [])
        self.assertFalse(self.pending["a"].called)
        self.assertUsable(connection)

    def test_cancellerWins(self) -> None:
        """
        A Deferred whose canceller fires it with a result sends that result.
        """
        connection = self.connect()
        connection.request(1, "stubborn", "s")
        connection.send([3, "cancel", 1])
        self.assertEqual(connection.received(), [[1, 1, None, "won anyway"]])

    def test_cancelCoroutine(self) -> None:
        """
        Cancelling an C{async def} call cancels what it awaits.
        """
        connection = self.connect()
        connection.request(1, "coro", "c")
        connection.send([3, "cancel", 1])
        self.assertTrue(self.pending["c"].called)
        self.assertError(connection.received(), 1, "Cancelled")

    def test_cancelThread(self) -> None:
        """
        A cancelled thread call is answered C{Cancelled} at once; its result,
        when the thread finishes, is dropped.
        """
        connection = self.connect()
        connection.request(1, "threaded", 1)
        connection.send([3, "cancel", 1])
        self.assertError(connection.received(), 1, "Cancelled")
        self.reactor.pool.runAll()
        self.assertEqual(connection.received(), [])
        self.assertUsable(connection)

    def test_cancelAfterGoaway(self) -> None:
        """
        A cancel is honoured after a shutdown goaway, and the server
        half-closes once the cancelled call is answered.
        """
        connection = self.connect()
        connection.request(1, "later", "a")
        self.factory.shutdown()
        self.assertEqual(connection.received(), [[3, "goaway", 1, "shutdown"]])
        connection.send([3, "cancel", 1])
        self.assertError(connection.received(), 1, "Cancelled")
        self.assertEqual(connection.transport.closes, ["loseWriteConnection"])


class ControlTests(ServerTestCase):
    """
    Control messages the server does not know are ignored.
    """

    def test_unknownKinds(self) -> None:
        """
        Unknown control kinds, with or without a body, are ignored without an
        answer.
        """
        connection = self.connect()
        connection.send([3, "frobnicate"])
        connection.send([3, "frobnicate", 1, {"a": [2]}])
        connection.send([3, "hello", {"protocol": 1}])
        connection.send([3, "goaway", None, "client"])
        self.assertEqual(connection.received(), [])
        self.assertUsable(connection)


class KeepaliveTests(ServerTestCase):
    """
    The idle keepalive: when it fires, what pauses and restarts it, and the
    graceful close that follows.
    """

    def test_idleCloseAtExactlyKeepalive(self) -> None:
        """
        An idle connection gets C{[3, "goaway", nil, "idle"]} exactly
        C{keepalive} seconds after it was made, then a half-close.
        """
        connection = self.connect()
        self.reactor.advance(KEEPALIVE - 0.5)
        self.assertEqual(connection.received(), [])
        self.reactor.advance(0.5)
        self.assertEqual(connection.received(), [[3, "goaway", None, "idle"]])
        self.assertEqual(connection.transport.closes, ["loseWriteConnection"])

    def test_lingerThenAbort(self) -> None:
        """
        After the half-close, the connection is aborted when the linger time
        passes without the client closing.
        """
        connection = self.connect()
        self.reactor.advance(KEEPALIVE)
        self.reactor.advance(LINGER - 0.5)
        self.assertEqual(connection.transport.closes, ["loseWriteConnection"])
        self.reactor.advance(0.5)
        self.assertEqual(
            connection.transport.closes, ["loseWriteConnection", "abortConnection"]
        )

    def test_clientClosesDuringLinger(self) -> None:
        """
        When the client closes its side after the goaway, the server closes
        the connection and the linger abort never comes.
        """
        connection = self.connect()
        self.reactor.advance(KEEPALIVE)
        self.reactor.advance(LINGER / 2)
        connection.clientCloses()
        self.assertEqual(
            connection.transport.closes, ["loseWriteConnection", "loseConnection"]
        )
        connection.lost()
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_readsAndDiscardsDuringLinger(self) -> None:
        """
        Requests and notifications arriving after the goaway are read and
        dropped: not run, not answered, and malformed ones not answered.
        """
        connection = self.connect()
        self.reactor.advance(KEEPALIVE)
        connection.received()
        connection.request(1, "echo", "late")
        connection.send([2, "echo", ["late note"]])
        connection.sendBytes(rawFrame(b"\xc1"))
        self.assertEqual(connection.received(), [])
        self.assertEqual(self.calls, [])

    def test_pausedWhileCallOutstanding(self) -> None:
        """
        A connection with a call running is never cut by keepalive, however
        long the call takes.
        """
        connection = self.connect()
        connection.request(1, "later", "a")
        self.reactor.advance(KEEPALIVE * 1000)
        self.assertEqual(connection.received(), [])
        self.assertEqual(connection.transport.closes, [])
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_restartsWhenLastResponseWritten(self) -> None:
        """
        The timer restarts when the last outstanding response is written, not
        when an earlier one is.
        """
        connection = self.connect()
        connection.request(1, "later", "a")
        self.reactor.advance(100)
        connection.request(2, "later", "b")
        self.reactor.advance(100)
        self.pending["a"].callback("A")
        self.reactor.advance(100)
        self.assertEqual(connection.received(), [[1, 1, None, "A"]])
        self.pending["b"].callback("B")
        self.assertEqual(connection.received(), [[1, 2, None, "B"]])
        self.reactor.advance(KEEPALIVE - 0.5)
        self.assertEqual(connection.received(), [])
        self.reactor.advance(0.5)
        self.assertEqual(connection.received(), [[3, "goaway", 2, "idle"]])

    def test_resetByCompleteFrames(self) -> None:
        """
        Each complete frame restarts the timer: requests, notifications,
        control and malformed messages alike.
        """
        connection = self.connect()
        messages: list[bytes] = [
            encode([0, 1, "echo", [1]]),
            encode([2, "echo", [2]]),
            encode([3, "frobnicate"]),
            rawFrame(b"\xc1"),
        ]
        for data in messages:
            self.reactor.advance(KEEPALIVE - 1)
            connection.sendBytes(data)
        connection.received()
        self.reactor.advance(KEEPALIVE - 0.5)
        self.assertEqual(connection.received(), [])
        self.reactor.advance(0.5)
        self.assertEqual(connection.received(), [[3, "goaway", 1, "idle"]])

    def test_notResetByPartialFrames(self) -> None:
        """
        A frame dribbled a byte at a time does not keep the connection alive:
        it is cut C{keepalive} seconds after the last complete frame, and the
        rest of the frame is never dispatched (slowloris).
        """
        connection = self.connect()
        self.reactor.advance(1)
        self.assertEqual(connection.call(1, "echo", 1), [[1, 1, None, 1]])
        dribbled = encode([0, 2, "echo", ["s" * 40]])
        for byte in dribbled:
            self.reactor.advance(0.5)
            now = self.reactor.seconds()
            frames = connection.received()
            if now == 1 + KEEPALIVE:
                self.assertEqual(frames, [[3, "goaway", 1, "idle"]], now)
                self.assertEqual(connection.transport.closes, ["loseWriteConnection"])
            else:
                self.assertEqual(frames, [], now)
            connection.sendBytes(bytes([byte]))
        self.assertGreater(self.reactor.seconds(), 1 + KEEPALIVE)
        self.assertEqual(connection.received(), [])
        self.assertEqual(self.calls, [1])

    def test_disabled(self) -> None:
        """
        With keepalive 0 no timer runs and an idle connection stays open.
        """
        connection = self.connect(keepalive=0)
        self.assertEqual(self.reactor.getDelayedCalls(), [])
        connection.call(1, "echo", 1)
        connection.request(2, "later", "a")
        self.pending["a"].callback(None)
        self.reactor.advance(10**9)
        self.assertEqual(connection.received(), [[1, 2, None, None]])
        self.assertEqual(connection.transport.closes, [])
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_lastMsgidInArrivalOrder(self) -> None:
        """
        The goaway names the last request received, in arrival order, not the
        largest msgid; requests answered with an error count.
        """
        connection = self.connect()
        connection.request(5, "echo", 1)
        connection.request(9, "echo", 2)
        connection.request(3, "nope")
        connection.received()
        self.reactor.advance(KEEPALIVE)
        self.assertEqual(connection.received(), [[3, "goaway", 3, "idle"]])

    def test_malformedNotCountedForGoaway(self) -> None:
        """
        A malformed request, even with a valid msgid, does not become the
        goaway's last msgid.
        """
        connection = self.connect()
        connection.request(5, "echo", 1)
        connection.send([0, 6, "echo"])
        connection.received()
        self.reactor.advance(KEEPALIVE)
        self.assertEqual(connection.received(), [[3, "goaway", 5, "idle"]])

    def test_timerStoppedOnConnectionLost(self) -> None:
        """
        Losing the connection stops the keepalive timer.
        """
        connection = self.connect()
        connection.lost()
        self.assertEqual(self.reactor.getDelayedCalls(), [])
        self.assertEqual(self.factory.connections, set())

    def test_callFinishingAfterConnectionLost(self) -> None:
        """
        A call that finishes after the connection was lost writes nothing and
        does not start a keepalive timer for the dead connection.
        """
        connection = self.connect()
        connection.request(1, "later", "a")
        connection.lost()
        self.pending["a"].callback("too late")
        self.assertEqual(connection.received(), [])
        self.assertEqual(self.reactor.getDelayedCalls(), [])
        self.reactor.advance(KEEPALIVE * 2)
        self.assertEqual(connection.received(), [])
        self.assertEqual(connection.transport.closes, [])

    def test_callFailingAfterConnectionLost(self) -> None:
        """
        A call that fails after the connection was lost writes nothing.
        """
        connection = self.connect()
        connection.request(1, "later", "a")
        connection.lost()
        self.pending["a"].errback(RpcError("Late", "too late"))
        self.assertEqual(connection.received(), [])
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_abortAfterConnectionLost(self) -> None:
        """
        Aborting a connection that is already gone does nothing.
        """
        connection = self.connect()
        connection.lost()
        connection.protocol.abort()
        self.assertEqual(connection.transport.closes, [])


class ClientCloseTests(ServerTestCase):
    """
    The client's end of stream (C{readConnectionLost}).
    """

    def test_nothingOutstanding(self) -> None:
        """
        With nothing running, the server closes at once, without a goaway.
        """
        connection = self.connect()
        connection.call(1, "echo", 1)
        connection.clientCloses()
        self.assertEqual(connection.transport.closes, ["loseConnection"])
        self.assertEqual(connection.received(), [])

    def test_callsAnsweredThenClosed(self) -> None:
        """
        Calls running at the client's end of stream are answered, then the
        server closes.
        """
        connection = self.connect()
        connection.request(1, "later", "a")
        connection.request(2, "later", "b")
        connection.clientCloses()
        self.assertEqual(connection.transport.closes, [])
        self.pending["b"].callback("B")
        self.assertEqual(connection.transport.closes, [])
        self.pending["a"].callback("A")
        self.assertEqual(
            connection.received(), [[3, "probe"], [1, 2, None, "B"], [1, 1, None, "A"]]
        )
        self.assertEqual(connection.transport.closes, ["loseConnection"])

    def test_shutdownAfterEOF(self) -> None:
        """
        A shutdown after the client's end of stream still sends the goaway;
        once the running call is answered the server closes the connection
        (the client's side is closed already: no half-close, no linger).
        """
        connection = self.connect()
        connection.request(1, "later", "a")
        connection.clientCloses()
        self.factory.shutdown(10)
        self.assertEqual(
            connection.received(), [[3, "probe"], [3, "goaway", 1, "shutdown"]]
        )
        self.pending["a"].callback("A")
        self.assertEqual(connection.received(), [[1, 1, None, "A"]])
        self.assertEqual(connection.transport.closes, ["loseConnection"])
        connection.lost()
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_truncatedFrameThenEOF(self) -> None:
        """
        A frame cut off by the end of stream is never dispatched, and the
        connection is closed.
        """
        connection = self.connect()
        data = encode([0, 1, "echo", ["cut"]])
        connection.sendBytes(data[:-1])
        connection.clientCloses()
        connection.sendBytes(data[-1:])
        self.assertEqual(self.calls, [])
        self.assertEqual(connection.received(), [])
        self.assertEqual(connection.transport.closes, ["loseConnection"])

    def test_noKeepaliveAfterEOF(self) -> None:
        """
        After the client's end of stream no keepalive goaway is sent: the
        server is already closing.
        """
        connection = self.connect()
        connection.clientCloses()
        self.reactor.advance(KEEPALIVE * 2)
        self.assertEqual(connection.received(), [])
        self.assertEqual(connection.transport.closes, ["loseConnection"])


class ShutdownTests(ServerTestCase):
    """
    L{RpcServerFactory.shutdown} ends every connection gracefully.
    """

    def test_noConnections(self) -> None:
        """
        With no connections, shutdown is done at once.
        """
        d = self.factory.shutdown(10)
        self.assertIsNone(self.successResultOf(d))
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_goawayToEveryConnection(self) -> None:
        """
        Every connection gets a C{"shutdown"} goaway with its own last msgid;
        the returned Deferred fires when all are closed.
        """
        one = self.connect()
        two = self.connect()
        one.call(4, "echo", 1)
        d = self.factory.shutdown(10)
        self.assertEqual(one.received(), [[3, "goaway", 4, "shutdown"]])
        self.assertEqual(two.received(), [[3, "goaway", None, "shutdown"]])
        self.assertEqual(one.transport.closes, ["loseWriteConnection"])
        self.assertEqual(two.transport.closes, ["loseWriteConnection"])
        one.clientCloses()
        one.lost()
        self.assertNoResult(d)
        two.clientCloses()
        two.lost()
        self.assertIsNone(self.successResultOf(d))
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_callsFinishWithinGrace(self) -> None:
        """
        A call running at shutdown is answered, then the connection
        half-closes; nothing new is dispatched meanwhile.
        """
        connection = self.connect()
        connection.request(1, "later", "a")
        d = self.factory.shutdown(10)
        self.assertEqual(connection.received(), [[3, "goaway", 1, "shutdown"]])
        self.assertEqual(connection.transport.closes, [])
        connection.request(2, "echo", "late")
        self.reactor.advance(5)
        self.pending["a"].callback("A")
        self.assertEqual(connection.received(), [[1, 1, None, "A"]])
        self.assertEqual(connection.transport.closes, ["loseWriteConnection"])
        self.assertEqual(self.calls, ["a"])
        connection.clientCloses()
        connection.lost()
        self.assertIsNone(self.successResultOf(d))
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_abortAfterGrace(self) -> None:
        """
        Connections still open when the grace runs out are aborted.
        """
        events = self.captureLogs()
        busy = self.connect()
        idle = self.connect()
        busy.request(1, "later", "a")
        d = self.factory.shutdown(LINGER * 5)
        self.reactor.advance(LINGER)
        self.assertEqual(
            idle.transport.closes, ["loseWriteConnection", "abortConnection"]
        )
        idle.lost()
        self.reactor.advance(LINGER * 4 - 0.5)
        self.assertEqual(busy.transport.closes, [])
        self.reactor.advance(0.5)
        self.assertEqual(busy.transport.closes, ["abortConnection"])
        self.assertNoResult(d)
        self.assertTrue([e for e in events if e.get("peer") == busy.protocol.peer])
        busy.lost()
        self.assertIsNone(self.successResultOf(d))

    def test_connectionDuringShutdown(self) -> None:
        """
        A connection made while the factory shuts down gets its hello, then a
        C{"shutdown"} goaway at once; the shutdown waits for it too.
        """
        first = self.connect()
        d = self.factory.shutdown(10)
        late = self.connect()
        self.assertEqual(late.hello[0][:2], [3, "hello"])
        self.assertEqual(late.hello[1:], [[3, "goaway", None, "shutdown"]])
        self.assertEqual(late.transport.closes, ["loseWriteConnection"])
        first.clientCloses()
        first.lost()
        self.assertNoResult(d)
        late.clientCloses()
        late.lost()
        self.assertIsNone(self.successResultOf(d))

    def test_idleConnectionsDuringShutdown(self) -> None:
        """
        A connection that already had its idle goaway is not sent another.
        """
        connection = self.connect()
        self.reactor.advance(KEEPALIVE)
        self.assertEqual(connection.received(), [[3, "goaway", None, "idle"]])
        d = self.factory.shutdown(10)
        self.assertEqual(connection.received(), [])
        connection.clientCloses()
        connection.lost()
        self.successResultOf(d)


# A session exercising every kind of frame, all answered synchronously.
SESSION: list[bytes] = [
    encode([0, 1, "add", [1, 2]]),
    encode([2, "echo", ["note"]]),
    encode([0, 2, "greet", ["a"], {"greeting": "yo"}]),
    encode([3, "cancel", 99]),
    rawFrame(b""),
    encode([0, 3, "nope", []]),
    encode([0, 4, "echo", [b"\x00\x00\x00\x01"]]),
    encode([3, "frobnicate", 1]),
    encode([0, 5, "echo", ["s" * 300]]),
]
STREAM = b"".join(SESSION)


class ChunkingTests(ServerTestCase):
    """
    However the client's bytes are cut into chunks, the server answers the
    same.
    """

    def assertSession(self, connection: Connection) -> None:
        frames = connection.received()
        self.assertEqual(
            [f[:2] for f in frames], [[1, 1], [1, 2], [1, None], [1, 3], [1, 4], [1, 5]]
        )
        self.assertEqual(frames[0], [1, 1, None, 3])
        self.assertEqual(frames[1], [1, 2, None, "yo a"])
        self.assertEqual(frames[2][2]["type"], "InvalidRequest")
        self.assertEqual(frames[3][2]["type"], "MethodNotFound")
        self.assertEqual(frames[4], [1, 4, None, b"\x00\x00\x00\x01"])
        self.assertEqual(frames[5], [1, 5, None, "s" * 300])
        self.assertEqual(self.calls, ["note", b"\x00\x00\x00\x01", "s" * 300])
        del self.calls[:]

    def test_oneChunk(self) -> None:
        """
        The whole session in one chunk.
        """
        connection = self.connect()
        connection.sendBytes(STREAM)
        self.assertSession(connection)

    def test_everySplitPoint(self) -> None:
        """
        The session cut in two at every byte boundary.
        """
        for i in range(len(STREAM) + 1):
            connection = self.connect()
            connection.sendBytes(STREAM[:i])
            connection.sendBytes(STREAM[i:])
            self.assertSession(connection)

    def test_byteAtATime(self) -> None:
        """
        The session one byte at a time.
        """
        connection = self.connect()
        for i in range(len(STREAM)):
            connection.sendBytes(STREAM[i : i + 1])
        self.assertSession(connection)

    def test_framesCoalescedAcrossChunks(self) -> None:
        """
        Chunks holding the end of one frame, whole frames and the start of
        another.
        """
        for size in [3, 7, 50, 101]:
            connection = self.connect()
            for i in range(0, len(STREAM), size):
                connection.sendBytes(STREAM[i : i + size])
            self.assertSession(connection)


class SendNowTests(ServerTestCase):
    """
    Over a reactor's transport (a L{FileDescriptor}), the responses to a
    chunk's requests are sent before C{dataReceived} returns, not on the
    reactor's next pass; in the states where that pass has more to do, they
    wait for it.
    """

    def connectDescriptor(self) -> tuple[Any, DescriptorTransport]:
        transport = DescriptorTransport()
        protocol = self.makeFactory().buildProtocol(PEER)
        protocol.makeConnection(transport)
        return protocol, transport

    def test_answersSentAtOnce(self) -> None:
        """
        The hello (buffered when the connection was made) and the responses
        to every request of one chunk go out in one send, within
        C{dataReceived}, and the transport no longer waits to write.
        """
        protocol, transport = self.connectDescriptor()
        self.assertEqual(transport.sent, [])
        protocol.dataReceived(
            encode([0, 1, "add", [1, 2]]) + encode([0, 2, "echo", ["x"]])
        )
        self.assertEqual(len(transport.sent), 1)
        hello, *responses = parseFrames(transport.sent[0])
        self.assertEqual(hello[:2], [wire.CONTROL, "hello"])
        self.assertEqual(responses, [[1, 1, None, 3], [1, 2, None, "x"]])
        self.assertFalse(transport.waitsToWrite())

    def test_nothingAnsweredNothingSent(self) -> None:
        """
        A chunk that answers nothing (a notification) sends nothing early:
        what is buffered waits for the reactor.
        """
        protocol, transport = self.connectDescriptor()
        protocol.dataReceived(encode([2, "echo", ["n"]]))
        self.assertEqual(transport.sent, [])
        self.assertTrue(transport.waitsToWrite())

    def test_pausedWaitsForTheReactor(self) -> None:
        """
        While the transport has paused the protocol (its buffer is full),
        responses stay buffered for the reactor's pass, which also resumes
        the protocol.
        """
        protocol, transport = self.connectDescriptor()
        transport.producerPaused = True
        protocol.dataReceived(encode([0, 1, "add", [1, 2]]))
        self.assertEqual(transport.sent, [])
        self.assertTrue(transport.waitsToWrite())
        transport.doWrite()
        self.assertEqual(parseFrames(transport.sent[0])[1], [1, 1, None, 3])

    def test_failedSendEndsTheConnection(self) -> None:
        """
        A send that fails (the peer reset the connection) ends the
        connection with that error, from the reactor's next pass: not inside
        C{dataReceived}, and not later as a clean close (the socket reports
        its error only once).
        """
        protocol, transport = self.connectDescriptor()
        transport.protocol = protocol
        transport.failure = ConnectionLost("reset by peer")
        protocol.dataReceived(encode([0, 1, "add", [1, 2]]))
        self.assertEqual(transport.lost, [])
        transport.memoryReactor.advance(0)
        [reason] = transport.lost
        self.assertIs(reason.value, transport.failure)
        self.assertEqual(protocol.state, _server.CLOSED)
        # Once only, though the reactor may find the connection gone too.
        transport.memoryReactor.advance(0)
        self.assertEqual(len(transport.lost), 1)

    def test_closingWaitsForTheReactor(self) -> None:
        """
        Once the transport is closing, the reactor's pass sends what is
        left and ends the connection: nothing is sent within
        C{dataReceived}.
        """
        protocol, transport = self.connectDescriptor()
        transport.disconnecting = True
        protocol.dataReceived(encode([0, 1, "add", [1, 2]]))
        self.assertEqual(transport.sent, [])


class ProtocolTests(SynchronousTestCase):
    """
    Odds and ends of L{RpcServerProtocol}.
    """

    def test_callLaterUsesFactoryReactor(self) -> None:
        """
        The protocol's C{callLater} (used by TimeoutMixin) is the factory's
        reactor's.
        """
        clock = Clock()
        protocol = RpcServerProtocol(RpcServerFactory(Registry(), clock))
        calls: list[int] = []
        protocol.callLater(3, lambda: calls.append(1))
        clock.advance(3)
        self.assertEqual(calls, [1])


class SpecTests(ServerTestCase):
    """
    The points docs/PROTOCOL.md settles about the server's behaviour beyond
    the message shapes: extension types, header widths, notifications,
    thread cancels, the idle timer's start and the built-ins.
    """

    def test_extensionInRequestRefused(self) -> None:
        """
        A request holding an extension value, of any extension type, the
        timestamp type -1 included, is malformed: C{InvalidRequest} for its
        msgid, saying why, and nothing is dispatched.
        """
        connection = self.connect()
        for ext in [
            bytes.fromhex("d50561 62".replace(" ", "")),  # fixext2, type 5
            bytes.fromhex("d6ff00000001"),  # timestamp -1, 32-bit
            bytes.fromhex("c70005"),  # ext8 of no data
        ]:
            payload = bytes.fromhex("940001a46563686f91") + ext
            connection.sendBytes(rawFrame(payload))
            self.assertError(
                connection.received(),
                1,
                "InvalidRequest",
                "extension types are not part of protocol version 1",
            )
        self.assertEqual(self.calls, [])
        self.assertUsable(connection)

    def test_undecodableResultsStillNameTheirCall(self) -> None:
        """
        The two results msgpack encodes but no decoder accepts (an extension
        value; an empty array nested exactly to the limit) are sent as they
        are (PROTOCOL.md sections 3 and 8.6: the server does not scan every
        response for them), and their response still starts C{[1, msgid},
        so a client fails that call alone.
        """
        nested: list[Any] = []
        for _ in range(1023):
            nested = [nested]
        for name, value in [
            ("ext", msgpack.ExtType(5, b"ab")),
            ("stamp", [{"at": msgpack.Timestamp(1)}]),
            ("deep", nested),
        ]:
            self.registry.register(lambda value=value: value, name=name)
        connection = self.connect(maxMessageSize=4096)
        for msgid, name in enumerate(["ext", "stamp", "deep"], 1):
            connection.request(msgid, name)
            payload = connection.transport.value()[connection._read + 4 :]
            connection._read = len(connection.transport.value())
            self.assertRaises(ValueError, wire.unpack, payload)
            self.assertEqual(wire.peekMsgid(payload, wire.RESPONSE), msgid, name)
        self.assertUsable(connection)

    def test_resultNotCheckedNeedlessly(self) -> None:
        """
        A result holding bytes that look like extension headers, inside a
        str or a bin or as integers, is sent as it is.
        """
        value = [212, "\u0500", b"\xc7\xd4", {"k": [0.5, 216]}]
        self.registry.register(lambda: value, name="lookalike")
        connection = self.connect()
        self.assertEqual(connection.call(1, "lookalike"), [[1, 1, None, value]])

    def test_widerHeadersAccepted(self) -> None:
        """
        A str, array, map or bin written with a wider header than it needs
        is accepted like the smallest one (PROTOCOL.md section 3).
        """
        connection = self.connect()
        # [0, 1, "echo" as str8, [bin16 "ab"]] as an array16
        payload = bytes.fromhex("dc00040001d9046563686fdc0001c500026162")
        connection.sendBytes(rawFrame(payload))
        self.assertEqual(connection.received(), [[1, 1, None, b"ab"]])
        # [0, 2, "greet", [], {"name": "x"} as a map16]
        payload = bytes.fromhex("950002a5677265657490de0001a46e616d65a178")
        connection.sendBytes(rawFrame(payload))
        self.assertEqual(connection.received(), [[1, 2, None, "hello x"]])

    def test_notificationNotOutstandingForKeepalive(self) -> None:
        """
        A notification handler still running does not stop the idle timer:
        the goaway comes one keepalive after the notification, and the
        server half-closes without waiting for the handler.
        """
        connection = self.connect()
        connection.send([2, "later", ["n"]])
        self.reactor.advance(KEEPALIVE)
        self.assertEqual(connection.received(), [[3, "goaway", None, "idle"]])
        self.assertEqual(connection.transport.closes, ["loseWriteConnection"])
        self.pending["n"].callback("done")
        self.assertEqual(connection.received(), [])

    def test_notificationNotAwaitedAtShutdown(self) -> None:
        """
        Shutting down does not wait for a running notification handler: the
        connection half-closes at once, and the handler is not cancelled.
        """
        connection = self.connect()
        connection.send([2, "later", ["n"]])
        stopped = self.factory.shutdown()
        self.assertEqual(connection.received(), [[3, "goaway", None, "shutdown"]])
        self.assertEqual(connection.transport.closes, ["loseWriteConnection"])
        connection.lost()
        self.assertIsNone(self.successResultOf(stopped))
        self.assertFalse(self.pending["n"].called)

    def test_threadCancelFreesMsgid(self) -> None:
        """
        A cancelled thread call is answered at the cancel: from then on its
        msgid is free and the idle timer runs, although the thread still
        runs.
        """
        connection = self.connect()
        connection.request(1, "threaded", 1)
        connection.send([3, "cancel", 1])
        self.assertError(connection.received(), 1, "Cancelled")
        self.assertEqual(connection.call(1, "add", 1, 2), [[1, 1, None, 3]])
        self.reactor.advance(KEEPALIVE)
        self.assertEqual(connection.received(), [[3, "goaway", 1, "idle"]])
        self.reactor.pool.runAll()
        self.assertEqual(connection.received(), [])

    def test_idleTimerStartsWithHello(self) -> None:
        """
        A connection that sends nothing gets the idle goaway one keepalive
        after its hello, with a nil last msgid.
        """
        connection = self.connect()
        self.reactor.advance(KEEPALIVE - 0.001)
        self.assertEqual(connection.received(), [])
        self.reactor.advance(0.001)
        self.assertEqual(connection.received(), [[3, "goaway", None, "idle"]])

    def test_listMethods(self) -> None:
        """
        C{system.listMethods} lists the handlers and the two introspection
        built-ins, sorted; C{system.ping} and C{system.stats} answer but are
        not listed.
        """
        connection = self.connect()
        [[_, _, _, names]] = connection.call(1, "system.listMethods")
        self.assertEqual(names, sorted(self.registry.names()))
        self.assertIn("system.describe", names)
        self.assertIn("system.listMethods", names)
        self.assertNotIn("system.ping", names)
        self.assertNotIn("system.stats", names)
        self.assertEqual(connection.call(2, "system.ping"), [[1, 2, None, "pong"]])

    def test_statsCountsEveryDispatchedRequest(self) -> None:
        """
        C{system.stats}' C{calls} counts every request looked up, built-ins,
        C{MethodNotFound} and the stats request itself included, and no
        notification or malformed message; C{in_flight} counts the calls
        still running, not the stats request.
        """
        connection = self.connect()
        connection.call(1, "add", 1, 2)
        connection.call(2, "system.ping")
        connection.call(3, "nope")
        connection.request(4, "later", "a")
        connection.send([2, "echo", [1]])
        connection.sendBytes(rawFrame(b"\xc1"))
        connection.received()
        [[_, _, _, stats]] = connection.call(5, "system.stats")
        self.assertEqual((stats["calls"], stats["in_flight"]), (5, 1))
        self.assertEqual(stats["connections"], 1)
        self.assertIsInstance(stats["uptime"], float)

    def test_controlTrailingElementsIgnored(self) -> None:
        """
        Elements after those a control kind defines are ignored: a cancel
        with one more element still cancels.
        """
        connection = self.connect()
        connection.request(5, "later", "a")
        connection.send([3, "cancel", 5, "extra"])
        self.assertError(connection.received(), 5, "Cancelled")

    def test_numericallyEqualKeysKeepTheLast(self) -> None:
        """
        Map keys equal as numbers (1, 1.0, true) collapse to one, the last
        value kept, as PROTOCOL.md section 3 warns senders.
        """
        connection = self.connect()
        payload = bytes.fromhex(
            "940001a46563686f918301a161cb3ff0000000000000a162c3a163"
        )
        connection.sendBytes(rawFrame(payload))
        self.assertEqual(connection.received(), [[1, 1, None, {1: "c"}]])


class ConnectionStateTests(ServerTestCase):
    """
    The connection's life goes through explicit states, each step a test
    of its own elsewhere; here the path.
    """

    def test_goawayPath(self) -> None:
        """
        SERVING, then GOAWAY_SENT while a call is outstanding, LINGERING once
        it is answered (our side closed), CLOSED when the connection is gone.
        """
        connection = self.connect()
        protocol = connection.protocol
        self.assertEqual(protocol.state, _server.SERVING)
        connection.request(1, "later", "a")
        protocol.goaway("shutdown")
        self.assertEqual(protocol.state, _server.GOAWAY_SENT)
        self.pending["a"].callback("done")
        self.assertEqual(protocol.state, _server.LINGERING)
        self.assertEqual(connection.transport.closes, ["loseWriteConnection"])
        connection.lost()
        self.assertEqual(protocol.state, _server.CLOSED)
        connection.received()

    def test_drainingPath(self) -> None:
        """
        The client's end of stream makes the connection DRAINING: a goaway
        then still goes out, and the last answer closes the connection.
        """
        connection = self.connect()
        protocol = connection.protocol
        connection.request(1, "later", "a")
        connection.clientCloses()
        self.assertEqual(protocol.state, _server.DRAINING)
        protocol.goaway("shutdown")
        self.assertEqual(protocol.state, _server.DRAINING)
        self.pending["a"].callback("done")
        self.assertEqual(connection.transport.closes, ["loseConnection"])
        connection.received()


class FrameTimeoutTests(ServerTestCase):
    """
    A frame that has started must be complete within the frame timeout,
    whatever else is outstanding on its connection.
    """

    def test_dribblingWhileCallOutstanding(self) -> None:
        """
        With a call outstanding (so no keepalive runs), a frame still
        incomplete after the frame timeout ends the connection: a
        C{FrameTimeout} goaway, its bytes dropped, the outstanding call still
        answered, then the half-close.
        """
        connection = self.connect(frameTimeout=3.0)
        connection.request(1, "later", "a")
        frame = encode([0, 2, "echo", ["x" * 100]])
        connection.sendBytes(frame[:50])
        self.reactor.advance(2.0)
        connection.sendBytes(frame[50:60])
        self.reactor.advance(0.999)
        self.assertEqual(connection.received(), [])
        self.reactor.advance(0.001)
        self.assertEqual(connection.received(), [[3, "goaway", 1, "FrameTimeout"]])
        connection.sendBytes(frame[60:])
        self.assertEqual(self.calls, ["a"])
        self.pending["a"].callback("done")
        self.assertEqual(connection.received(), [[1, 1, None, "done"]])
        self.assertEqual(connection.transport.closes, ["loseWriteConnection"])

    def test_eachFrameItsOwnDeadline(self) -> None:
        """
        Chunks that each finish a frame and start the next do not add up: a
        client pipelining steadily is never cut.
        """
        connection = self.connect(frameTimeout=3.0, keepalive=0)
        data = b"".join(encode([0, i, "echo", [i]]) for i in range(1, 11))
        step = len(encode([0, 1, "echo", [1]]))
        for start in range(0, len(data), step):
            connection.sendBytes(
                data[start + 3 : start + step + 3] if start else data[: 3 + step]
            )
            self.reactor.advance(2.0)
        answers = connection.received()
        self.assertNotIn([3, "goaway", 0, "FrameTimeout"], answers)
        self.assertEqual([m[1] for m in answers if m[0] == 1], list(range(1, 11)))

    def test_completedInTime(self) -> None:
        """
        A frame completed before its deadline stops the timer.
        """
        connection = self.connect(frameTimeout=3.0, keepalive=0)
        frame = encode([0, 1, "echo", [1]])
        connection.sendBytes(frame[:5])
        self.reactor.advance(2.9)
        connection.sendBytes(frame[5:])
        self.reactor.advance(10)
        self.assertEqual(connection.received(), [[1, 1, None, 1]])
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_disabled(self) -> None:
        """
        A frame timeout of 0 sets no timer.
        """
        connection = self.connect(frameTimeout=0, keepalive=0)
        connection.sendBytes(encode([0, 1, "echo", [1]])[:5])
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_notWhileServerPaused(self) -> None:
        """
        While the server itself stops reading (calls in flight at the
        limit), buffered bytes are not the client's delay: no timer runs.
        """
        connection = self.connect(frameTimeout=3.0, keepalive=0, maxInFlight=1)
        connection.request(1, "later", "a")
        connection.sendBytes(encode([0, 2, "echo", [2]])[:5])
        self.assertTrue(connection.protocol.paused)
        self.reactor.advance(10)
        # Only the probes of a connection the server cannot read (7.4).
        self.assertEqual({tuple(m) for m in connection.received()}, {(3, "probe")})

    def test_invalidTimeout(self) -> None:
        """
        A negative frame timeout is a configuration error.
        """
        self.assertRaises(ValueError, self.makeFactory, frameTimeout=-1)

"""
The protocol rules of L{agilerpc.TcpRpcClient}, tested in memory through its
connection core: a scripted server behind in-memory sockets
(L{tests.clienthelpers.MemoryServer}), no thread, no network.  The tests of
sockets, TLS, threads and timing stay in C{test_blocking}.
"""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from agilerpc import (
    CallLost,
    InvalidResponse,
    MethodNotFound,
    NotServed,
    RemoteError,
    RequestTooLarge,
    TcpRpcClient,
    Unauthorized,
    _blocking,
    _wire,
)

from .clienthelpers import HELLO, MemoryServer, MemorySocket, echo


def client(server: MemoryServer, **options: Any) -> TcpRpcClient:
    options.setdefault("timeout", 5)
    return TcpRpcClient("memory.invalid", 9988, socketFactory=server, **options)


def answerOnce(reply: list[Any]) -> Any:
    """
    A script: answer the server's first request with C{reply} (C{"msgid"} in
    it is replaced by the request's), and echo every other one.
    """
    done: list[bool] = []

    def script(sock: MemorySocket, message: Any) -> None:
        if message[0] != 0:
            return
        if not done:
            done.append(True)
            sock.send_([message[1] if r == "msgid" else r for r in reply])
        else:
            echo(sock, message)

    return script


def sayHello(hello: list[Any]) -> Any:
    """
    An C{opened} for L{MemoryServer}: send C{hello} first.
    """

    def opened(sock: MemorySocket) -> None:
        sock.send_(hello)

    return opened


class CallTests(SynchronousTestCase):
    """
    Calls on a connection that stays open.
    """

    def test_msgidsFromZero(self) -> None:
        """
        One numbering for both clients: msgids count up from 0 on each
        connection.
        """
        server = MemoryServer()
        c = client(server)
        self.assertEqual([c.call("echo", (i,)) for i in range(3)], [0, 1, 2])
        self.assertEqual([m[1] for m in server.connections[0].received], [0, 1, 2])

    def test_remoteError(self) -> None:
        """
        An error response raises its L{RemoteError} and keeps the connection.
        """
        server = MemoryServer(
            script=answerOnce(
                [1, "msgid", {"type": "MethodNotFound", "message": "no"}, None]
            )
        )
        c = client(server)
        self.assertRaises(MethodNotFound, c.call, "nope")
        self.assertEqual(c.call("echo", ("x",)), "x")
        self.assertEqual(len(server.connections), 1)

    def test_tooLargeNotSent(self) -> None:
        """
        A request larger than the hello's max_message_size raises
        L{RequestTooLarge}; nothing is sent.
        """
        hello = [3, "hello", {"protocol": 1, "max_message_size": 30}]
        server = MemoryServer(opened=lambda sock: sock.send_(hello))
        c = client(server)
        self.assertRaises(RequestTooLarge, c.call, "echo", ("x" * 30,))
        self.assertEqual(server.connections[0].received, [])
        self.assertEqual(c.call("echo", ("y",)), "y")

    def test_nilMsgidErrorFailsNoCall(self) -> None:
        """
        An error with a nil msgid fails no call: the call's own answer is
        returned.
        """

        def script(sock: MemorySocket, message: Any) -> None:
            sock.send_([1, None, {"type": "InvalidRequest", "message": "m"}, None])
            echo(sock, message)

        c = client(MemoryServer(script=script))
        self.assertEqual(c.call("echo", ("x",)), "x")

    def test_tokenAfterHello(self) -> None:
        """
        With a token, C{[3, "auth", token]} is the first frame, before any
        request.
        """
        server = MemoryServer()
        c = client(server, token="s3cret")
        self.assertEqual(c.call("echo", (1,)), 1)
        self.assertEqual(
            server.connections[0].received,
            [[3, "auth", b"s3cret"], [0, 0, "echo", [1]]],
        )


class HostileServerTests(SynchronousTestCase):
    """
    A broken or malicious server never makes a call run twice, and never
    makes the client wait or buffer without bound.
    """

    def test_goawayNegativeLastMsgidNotResent(self) -> None:
        """
        A goaway whose last_msgid is negative proves nothing: the call fails
        with L{CallLost} (it may have run) and is not sent again.
        """
        server = MemoryServer(script=answerOnce([3, "goaway", -1, "idle"]))
        c = client(server)
        e = self.assertRaises(CallLost, c.call, "incr", ("a",))
        self.assertIn("invalid last msgid -1", str(e))
        self.assertEqual(
            [sock.received for sock in server.connections], [[[0, 0, "incr", ["a"]]]]
        )
        # The next call goes on a new connection.
        self.assertEqual(c.call("echo", ("b",)), "b")
        self.assertEqual(len(server.connections), 2)

    def test_serverBusyBeforeHelloRetried(self) -> None:
        """
        A ServerBusy goaway before the hello is a failed connection attempt:
        the client backs off and connects again, and the call runs once.
        """

        def opened(sock: MemorySocket) -> None:
            if sock.index == 0:
                sock.send_([3, "goaway", None, "ServerBusy"])
                sock.end()
            else:
                sock.send_(HELLO)

        server = MemoryServer(opened=opened)
        c = client(server)
        self.assertEqual(c.call("echo", ("a",)), "a")
        self.assertEqual(
            [sock.received for sock in server.connections],
            [[], [[0, 0, "echo", ["a"]]]],
        )

    def test_serverBusyBeforeHelloNoRetry(self) -> None:
        """
        Without retries, a goaway before the hello raises L{NotServed} (a
        L{ConnectionRefusedError}): nothing was sent.
        """

        def opened(sock: MemorySocket) -> None:
            sock.send_([3, "goaway", None, "ServerBusy"])
            sock.end()

        server = MemoryServer(opened=opened)
        c = client(server, connectRetry=0)
        e = self.assertRaises(ConnectionRefusedError, c.call, "echo", ("a",))
        self.assertIsInstance(e, NotServed)
        self.assertIn("ServerBusy", str(e))
        self.assertEqual(server.connections[0].received, [])

    def test_helloCannotRaiseReceiveLimit(self) -> None:
        """
        A hello announcing 2**40 bytes does not raise the client's own limit:
        a 4 GiB frame header is a protocol violation at once (the call is
        lost), before any of its body is read.
        """
        hello = [3, "hello", {"protocol": 1, "max_message_size": 2**40}]
        server = MemoryServer(
            opened=lambda sock: sock.send_(hello),
            script=lambda sock, message: sock.sendRaw(
                _wire.HEADER.pack(2**32 - 1) + b"x" * 100
            ),
        )
        c = client(server)
        e = self.assertRaises(CallLost, c.call, "echo", ("a",))
        self.assertIn("4294967295 bytes", str(e))

    def test_ownReceiveLimit(self) -> None:
        """
        C{maxMessageSize} is the client's limit: a larger frame is a protocol
        violation.
        """
        server = MemoryServer(
            script=lambda sock, message: sock.send_([1, message[1], None, "x" * 100])
        )
        c = client(server, maxMessageSize=100)
        self.assertRaises(CallLost, c.call, "echo", ("a",))

    def test_unauthorizedGoawayNotResent(self) -> None:
        """
        A goaway with reason Unauthorized raises L{Unauthorized}: its nil
        last_msgid does not make the call be sent again.
        """
        server = MemoryServer(script=answerOnce([3, "goaway", None, "Unauthorized"]))
        c = client(server, token="wrong")
        self.assertRaises(Unauthorized, c.call, "echo", ("a",))
        self.assertEqual(len(server.connections), 1)

    def test_unauthorizedBeforeHello(self) -> None:
        """
        An Unauthorized goaway before the hello raises L{Unauthorized} and is
        not retried.
        """

        def opened(sock: MemorySocket) -> None:
            sock.send_([3, "goaway", None, "Unauthorized"])
            sock.end()

        server = MemoryServer(opened=opened)
        c = client(server)
        self.assertRaises(Unauthorized, c.call, "echo", ("a",))
        self.assertEqual(len(server.connections), 1)

    def test_unauthorizedErrorNotResent(self) -> None:
        """
        An Unauthorized error with a nil msgid, then the goaway, raises
        L{Unauthorized} once.
        """

        def script(sock: MemorySocket, message: Any) -> None:
            if message[0] == 0:
                sock.send_([1, None, {"type": "Unauthorized", "message": "no"}, None])
                sock.send_([3, "goaway", None, "Unauthorized"])

        server = MemoryServer(script=script)
        c = client(server)
        e = self.assertRaises(Unauthorized, c.call, "echo", ("a",))
        self.assertIn("not run", str(e))
        self.assertEqual(len(server.connections), 1)

    def test_protocolViolationLosesCall(self) -> None:
        """
        A request sent by the server is a protocol violation: the call in
        flight is lost (never resent), and the next call uses a new
        connection.
        """
        server = MemoryServer(script=answerOnce([0, 1, "evil", []]))
        c = client(server)
        self.assertRaises(CallLost, c.call, "echo", ("a",))
        self.assertEqual(c.call("echo", ("b",)), "b")
        self.assertEqual(len(server.connections), 2)
        self.assertEqual(server.connections[0].received, [[0, 0, "echo", ["a"]]])

    def test_violationBeforeHello(self) -> None:
        """
        A server that breaks the protocol before its hello makes the call
        raise L{InvalidResponse}; nothing was sent.
        """
        server = MemoryServer(opened=lambda sock: sock.send_([1, 0, None, 1]))
        c = client(server)
        e = self.assertRaises(InvalidResponse, c.call, "echo", ("a",))
        self.assertIn("nothing was sent", str(e))
        self.assertEqual(server.connections[0].received, [])

    def test_resultNestedTooDeep(self) -> None:
        """
        A result nested too deep to decode fails that call with
        L{InvalidResponse}; the connection goes on.
        """
        deep: list[Any] = []
        for _ in range(1023):
            deep = [deep]

        def script(sock: MemorySocket, message: Any) -> None:
            if message[1] == 0:
                sock.sendRaw(_wire.frame(_wire.pack([1, message[1], None, deep])))
            else:
                echo(sock, message)

        server = MemoryServer(script=script)
        c = client(server)
        self.assertRaises(InvalidResponse, c.call, "deep")
        self.assertEqual(c.call("echo", ("b",)), "b")
        self.assertEqual(len(server.connections), 1)


class GoawayTests(SynchronousTestCase):
    """
    Resending exactly what a goaway proves unrun.
    """

    def test_goawayBeforeOurMsgid(self) -> None:
        """
        A goaway whose last_msgid is before our request proves it unrun: it
        is sent again on a new connection and runs once.
        """

        def script(sock: MemorySocket, message: Any) -> None:
            if sock.index == 0 and message[1] == 1:
                sock.send_([3, "goaway", 0, "idle"])
                sock.end()
            else:
                echo(sock, message)

        server = MemoryServer(script=script)
        c = client(server)
        self.assertEqual(c.call("echo", ("a",)), "a")
        self.assertEqual(c.call("echo", ("b",)), "b")
        self.assertEqual(
            [sock.received for sock in server.connections],
            [
                [[0, 0, "echo", ["a"]], [0, 1, "echo", ["b"]]],
                [[0, 0, "echo", ["b"]]],
            ],
        )

    def test_goawayCoveringOurMsgid(self) -> None:
        """
        A goaway covering our request: its answer follows and is returned;
        the client then leaves the connection.
        """

        def script(sock: MemorySocket, message: Any) -> None:
            sock.send_([3, "goaway", message[1], "shutdown"])
            echo(sock, message)
            sock.end()

        server = MemoryServer(script=script)
        c = client(server)
        self.assertEqual(c.call("echo", ("a",)), "a")
        self.assertTrue(server.connections[0].closed)
        self.assertEqual(c.call("echo", ("b",)), "b")
        self.assertEqual(len(server.connections), 2)

    def test_goawayBetweenCalls(self) -> None:
        """
        A goaway that came between calls makes the next call use a new
        connection; nothing is sent on the old one.
        """

        def script(sock: MemorySocket, message: Any) -> None:
            echo(sock, message)
            sock.send_([3, "goaway", message[1], "idle"])
            sock.end()

        server = MemoryServer(script=script)
        c = client(server)
        self.assertEqual(c.call("echo", ("a",)), "a")
        self.assertEqual(c.call("echo", ("b",)), "b")
        self.assertEqual(
            [sock.received for sock in server.connections],
            [[[0, 0, "echo", ["a"]]], [[0, 0, "echo", ["b"]]]],
        )

    def test_lostAfterGoawayCoveringOurMsgid(self) -> None:
        """
        The connection ending after a goaway that covers our request, before
        its answer: L{CallLost}, not resent.
        """

        def script(sock: MemorySocket, message: Any) -> None:
            sock.send_([3, "goaway", message[1], "shutdown"])
            sock.end()

        server = MemoryServer(script=script)
        c = client(server)
        self.assertRaises(CallLost, c.call, "echo", ("a",))
        self.assertEqual(len(server.connections), 1)

    def test_unknownReasonResent(self) -> None:
        """
        A goaway with a reason the client does not know follows the general
        rule: unrun calls are resent.
        """

        def first(sock: MemorySocket, message: Any) -> None:
            if sock.index == 0:
                sock.send_([3, "goaway", None, "rebalancing"])
                sock.end()
            else:
                echo(sock, message)

        server = MemoryServer(script=first)
        c = client(server)
        self.assertEqual(c.call("echo", ("a",)), "a")
        self.assertEqual(len(server.connections), 2)


class ArgumentTests(SynchronousTestCase):
    """
    What a call sends, and the results and errors it returns.
    """

    def test_resultTypes(self) -> None:
        """
        Results come back as msgpack decodes them; args may be a tuple or a
        list; msgids increase on the one connection.
        """
        server = MemoryServer()
        c = client(server)
        values: list[Any] = [None, b"\x00\xff", "caf\xe9", 2**40, [1, "a"], {"k": 1.5}]
        for value in values:
            self.assertEqual(c.call("echo", (value,)), value)
        self.assertEqual(c.call("echo", [b"list"]), b"list")
        self.assertEqual([m[1] for m in server.connections[0].received], list(range(7)))

    def test_kwargs(self) -> None:
        """
        kwargs (any mapping) go as the request's fifth element, left off
        when empty.
        """
        from types import MappingProxyType

        server = MemoryServer()
        c = client(server)
        c.call("add", (), {"a": 1, "b": 2})
        c.call("add", (1, 2))
        c.call("add", (), MappingProxyType({"a": 1}))
        self.assertEqual(
            server.connections[0].received,
            [
                [0, 0, "add", [], {"a": 1, "b": 2}],
                [0, 1, "add", [1, 2]],
                [0, 2, "add", [], {"a": 1}],
            ],
        )

    def test_badArguments(self) -> None:
        """
        A method name that is not a str, args that are not a tuple or list,
        or arguments msgpack cannot encode raise L{TypeError} (or
        L{OverflowError}) before anything is sent.
        """
        server = MemoryServer()
        c = client(server)
        self.assertRaises(TypeError, c.call, b"echo")
        self.assertRaises(TypeError, c.call, "echo", "zhangsan")
        self.assertRaises(TypeError, c.call, "echo", (object(),))
        self.assertRaises(OverflowError, c.call, "echo", (2**64,))
        self.assertEqual(c.call("echo", ("ok",)), "ok")
        self.assertEqual(server.connections[0].received, [[0, 0, "echo", ["ok"]]])

    def test_remoteErrors(self) -> None:
        """
        An error response raises the standard subclass for its type, or
        L{RemoteError} itself with the type, message and data sent.
        """
        errors = [
            {"type": "MethodNotFound", "message": "no method"},
            {"type": "ValueError", "message": "bad", "data": {"x": 1}},
        ]

        def script(sock: MemorySocket, message: Any) -> None:
            if errors:
                sock.send_([1, message[1], errors.pop(0), None])
            else:
                echo(sock, message)

        c = client(MemoryServer(script=script))
        e1 = self.assertRaises(MethodNotFound, c.call, "nope")
        self.assertEqual(
            (e1.type, e1.message, e1.data), ("MethodNotFound", "no method", None)
        )
        e2 = self.assertRaises(RemoteError, c.call, "fail")
        self.assertIs(type(e2), RemoteError)
        self.assertEqual(
            (e2.type, e2.message, e2.data), ("ValueError", "bad", {"x": 1})
        )
        self.assertEqual(str(e2), "ValueError: bad")
        self.assertEqual(c.call("echo", ("ok",)), "ok")

    def test_unknownControlIgnored(self) -> None:
        """
        Control messages of kinds the client does not know are ignored.
        """

        def script(sock: MemorySocket, message: Any) -> None:
            sock.send_([3, "future-kind", 1, 2])
            echo(sock, message)

        self.assertEqual(client(MemoryServer(script=script)).call("echo", ("x",)), "x")

    def test_requestOfExactlyMaxSize(self) -> None:
        """
        A request whose payload is exactly max_message_size bytes is sent;
        one byte more raises L{RequestTooLarge} and the next call uses the
        msgid it did not use.
        """
        size = len(_wire.encodeRequest(0, "echo", ["x" * 40]))
        hello = [3, "hello", {"protocol": 1, "max_message_size": size}]
        server = MemoryServer(opened=lambda sock: sock.send_(hello))
        c = client(server)
        e = self.assertRaises(RequestTooLarge, c.call, "echo", ("x" * 41,))
        self.assertIn(f"maximum message size of {size} bytes", str(e))
        self.assertEqual(c.call("echo", ("x" * 40,)), "x" * 40)
        self.assertEqual(server.connections[0].received, [[0, 0, "echo", ["x" * 40]]])


class HelloTests(SynchronousTestCase):
    """
    The hello that opens every connection.
    """

    def test_badHellos(self) -> None:
        """
        A hello with another protocol version, or whose info is not a map,
        raises L{InvalidResponse}; nothing is sent.
        """
        for hello, why in [
            ([3, "hello", {"protocol": 2}], "protocol version 2"),
            ([3, "hello", [1]], "not a map"),
        ]:
            server = MemoryServer(opened=sayHello(hello))
            c = client(server, connectRetry=0)
            e = self.assertRaises(InvalidResponse, c.call, "echo", ("x",))
            self.assertIn(why, str(e))
            self.assertEqual(server.connections[0].received, [])
            self.assertTrue(server.connections[0].closed)

    def test_unknownHelloKeysIgnored(self) -> None:
        """
        Keys of the hello the client does not know are ignored.
        """
        hello = [3, "hello", {"protocol": 1, "new": [1], "max_message_size": 99}]
        c = client(MemoryServer(opened=lambda sock: sock.send_(hello)))
        self.assertEqual(c.call("echo", ("x",)), "x")
        self.assertRaises(RequestTooLarge, c.call, "echo", ("x" * 99,))


class BetweenCallsTests(SynchronousTestCase):
    """
    What the server sends, or does, while no call is in flight.
    """

    def test_garbageBetweenCalls(self) -> None:
        """
        A malformed message between calls makes the client leave that
        connection; the next call goes on a new one.
        """

        def script(sock: MemorySocket, message: Any) -> None:
            echo(sock, message)
            if sock.index == 0:
                sock.send_(["garbage"])

        server = MemoryServer(script=script)
        c = client(server)
        self.assertEqual(c.call("echo", ("a",)), "a")
        self.assertEqual(c.call("echo", ("b",)), "b")
        self.assertEqual(len(server.connections), 2)
        self.assertTrue(server.connections[0].closed)

    def test_eofBetweenCalls(self) -> None:
        """
        A connection the server closed between calls, even without a goaway,
        is replaced before the next call is sent.
        """

        def script(sock: MemorySocket, message: Any) -> None:
            echo(sock, message)
            sock.end()

        server = MemoryServer(script=script)
        c = client(server)
        self.assertEqual(c.call("echo", ("a",)), "a")
        self.assertEqual(c.call("echo", ("b",)), "b")
        self.assertEqual(
            [sock.received for sock in server.connections],
            [[[0, 0, "echo", ["a"]]], [[0, 0, "echo", ["b"]]]],
        )

    def test_lateAnswerBetweenCalls(self) -> None:
        """
        An answer to a msgid not in flight is dropped, never returned for a
        later call.
        """

        def script(sock: MemorySocket, message: Any) -> None:
            sock.send_([1, message[1] + 7, None, "stray"])
            echo(sock, message)

        c = client(MemoryServer(script=script))
        self.assertEqual(c.call("echo", ("a",)), "a")
        self.assertEqual(c.call("echo", ("b",)), "b")


class LossTests(SynchronousTestCase):
    """
    Connections that end while a call is in flight.
    """

    def test_eofMidCall(self) -> None:
        """
        End-of-stream without a goaway while a call is in flight raises
        L{CallLost}; the call is not resent, and the next call opens a new
        connection.
        """

        def script(sock: MemorySocket, message: Any) -> None:
            if sock.index == 0:
                sock.end()
            else:
                echo(sock, message)

        server = MemoryServer(script=script)
        c = client(server)
        e = self.assertRaises(CallLost, c.call, "echo", ("a",))
        self.assertIn("may or may not have run", str(e))
        self.assertEqual(c.call("echo", ("b",)), "b")
        self.assertEqual(
            [sock.received for sock in server.connections],
            [[[0, 0, "echo", ["a"]]], [[0, 0, "echo", ["b"]]]],
        )

    def test_eofInsideFrame(self) -> None:
        """
        The connection ending inside a frame loses the call in flight.
        """

        def script(sock: MemorySocket, message: Any) -> None:
            sock.sendRaw(_wire.frame(_wire.pack([1, message[1], None, "x" * 10]))[:-3])
            sock.end()

        self.assertRaises(CallLost, client(MemoryServer(script=script)).call, "echo")

    def test_failedSendResent(self) -> None:
        """
        A request whose send fails (the server had closed the connection)
        never reached the server whole: it goes again on a new connection.
        """
        server = MemoryServer()
        server.resetOnSendAfterEnd = True
        c = client(server)
        self.assertEqual(c.call("echo", ("a",)), "a")
        # The server closes, unseen by the client until it sends.
        server.connections[0].end()
        self.patch(c, "_stillOpen", lambda connection: True)
        self.assertEqual(c.call("echo", ("b",)), "b")
        self.assertEqual(server.connections[1].received, [[0, 0, "echo", ["b"]]])

    def test_endlessGoaways(self) -> None:
        """
        A server that goes away before running the request on every
        connection makes the call fail, saying it was not run, after a
        bounded number of connections.
        """

        def script(sock: MemorySocket, message: Any) -> None:
            sock.send_([3, "goaway", None, "idle"])
            sock.end()

        server = MemoryServer(script=script)
        c = client(server)
        e = self.assertRaises(NotServed, c.call, "echo", ("a",))
        self.assertIn("it was not run", str(e))
        self.assertEqual(len(server.connections), _blocking._MAX_RESENDS)

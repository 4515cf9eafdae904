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
    RequestTooLarge,
    TcpRpcClient,
    Unauthorized,
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

# mypy: disable-error-code="no-untyped-call"
"""
Tests for L{agilerpc._serverconnection}: the server's protocol rules with no
transport, reactor or clock, fed frame payloads and read back as decisions
and response payloads.
"""

from __future__ import annotations

import threading
from typing import Any

import msgpack
from twisted.internet.defer import CancelledError
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from agilerpc import _serverconnection as core
from agilerpc import _wire
from agilerpc._errors import InvalidResult, MessageTooLarge, RpcError
from agilerpc._serverconnection import (
    Cancel,
    Refusal,
    ServerConnection,
    ServerSettings,
)


def settings(**kwargs: Any) -> ServerSettings:
    options: dict[str, Any] = {
        "keepalive": 10.0,
        "maxMessageSize": 1000,
        "maxInFlight": 2,
        "authToken": None,
        "debug": False,
        "server": "agilerpc/test",
    }
    options.update(kwargs)
    return ServerSettings(**options)


def decode(payload: bytes) -> Any:
    return msgpack.unpackb(payload, raw=False)


def request(msgid: int, method: str, *args: Any) -> bytes:
    return _wire.encodeRequest(msgid, method, list(args))


class ReceiveTests(SynchronousTestCase):
    """
    L{ServerConnection.receive} decides what each frame is.
    """

    def test_request(self) -> None:
        """
        A request is returned to dispatch, and becomes the last one
        dispatched.
        """
        connection = ServerConnection(settings())
        message = connection.receive(request(5, "add", 1, 2))
        self.assertEqual(message, _wire.Request(5, "add", [1, 2], {}))
        self.assertEqual((connection.lastMsgid, connection.callsServed), (5, 1))

    def test_requestWithOptions(self) -> None:
        """
        A request whose options map holds a deadline (an int or a float),
        metadata, or both, is returned with them; the deadline as a float.
        """
        cases: list[tuple[dict[str, Any], float | None, Any]] = [
            ({"deadline": 5}, 5.0, None),
            ({"deadline": 2.5, "metadata": {"k": "v"}}, 2.5, {"k": "v"}),
            ({"metadata": {"k": b"v"}}, None, {"k": b"v"}),
        ]
        for options, deadline, metadata in cases:
            connection = ServerConnection(settings(maxMessageSize=10_000))
            message = connection.receive(
                msgpack.packb([0, 1, "m", [], {}, options], use_bin_type=True)
            )
            self.assertEqual(
                message, _wire.OptionsRequest(1, "m", [], {}, deadline, metadata)
            )
            assert isinstance(message, _wire.OptionsRequest)
            self.assertIs(type(message.deadline), type(deadline))

    def test_badDeadlineRefused(self) -> None:
        """
        A deadline that is not a number of seconds above 0 and at most a
        year is refused as C{InvalidRequest} for its msgid, alone or beside
        metadata.
        """
        for bad in [True, 0, -1, float("nan"), float("inf"), 366 * 86400, "5"]:
            for options in [{"deadline": bad}, {"deadline": bad, "metadata": {}}]:
                connection = ServerConnection(settings(maxMessageSize=10_000))
                refusal = connection.receive(
                    msgpack.packb([0, 7, "m", [], {}, options], use_bin_type=True)
                )
                assert isinstance(refusal, Refusal), (bad, refusal)
                error = decode(refusal.payload)
                self.assertEqual(error[:2], [1, 7])
                self.assertEqual(error[2]["type"], "InvalidRequest")

    def test_notification(self) -> None:
        """
        A notification is returned to dispatch and dispatches no msgid.
        """
        connection = ServerConnection(settings())
        message = connection.receive(_wire.encodeNotification("log", ["x"]))
        self.assertEqual(message, _wire.Notification("log", ["x"], {}))
        self.assertIsNone(connection.lastMsgid)

    def test_undecodableDecodedOnce(self) -> None:
        """
        A payload within the container limit that does not decode, or is not
        an array, is refused from the one decoding attempt (a hostile 8 MiB
        frame must not cost two decodes), with the msgid its start names.
        """

        def parseAgain(payload: bytes, maxContainers: int | None) -> Any:
            self.fail("the payload was decoded a second time")

        self.patch(core, "_parse", parseAgain)
        connection = ServerConnection(settings(maxContainers=None))
        truncated = connection.receive(request(5, "echo", "x" * 50)[:-1])
        notAnArray = connection.receive(msgpack.packb({"a": 1}))
        assert isinstance(truncated, Refusal) and isinstance(notAnArray, Refusal)
        self.assertEqual(
            decode(truncated.payload),
            [
                1,
                5,
                {
                    "type": "InvalidRequest",
                    "message": "the payload ends inside a value (truncated)",
                    "data": {"msgid": 5},
                },
                None,
            ],
        )
        self.assertEqual(
            decode(notAnArray.payload)[2]["message"],
            "the message is a map, not an array",
        )

    def test_malformed(self) -> None:
        """
        A frame that is not msgpack is refused as C{InvalidRequest}.
        """
        refusal = ServerConnection(settings()).receive(b"\xc1")
        assert isinstance(refusal, Refusal)
        self.assertEqual((refusal.reason, refusal.goaway), ("InvalidRequest", False))
        self.assertEqual(decode(refusal.payload)[2]["type"], "InvalidRequest")

    def test_duplicateMsgid(self) -> None:
        """
        A request reusing an outstanding msgid is refused with no msgid, so
        its error does not read as the outstanding call's answer.
        """
        connection = ServerConnection(settings())
        connection.receive(request(1, "later"))
        connection.callStarted(1, object())
        refusal = connection.receive(request(1, "later"))
        assert isinstance(refusal, Refusal)
        self.assertEqual(decode(refusal.payload)[1], None)
        self.assertEqual(connection.callsServed, 1)

    def test_cancel(self) -> None:
        """
        A cancel of an outstanding call hands back its handle; of another
        msgid, nothing; without a msgid, a refusal.
        """
        connection = ServerConnection(settings())
        call = object()
        connection.callStarted(3, call)
        cancel = connection.receive(_wire.encodeCancel(3))
        assert isinstance(cancel, Cancel)
        self.assertIs(cancel.call, call)
        self.assertIsNone(connection.receive(_wire.encodeCancel(4)))
        self.assertIsInstance(connection.receive(_wire.pack([3, "cancel"])), Refusal)
        self.assertIsNone(connection.receive(_wire.pack([3, "future-kind"])))

    def test_afterGoaway(self) -> None:
        """
        After a goaway nothing is dispatched or refused; cancels still are
        honoured.
        """
        connection = ServerConnection(settings())
        connection.callStarted(1, "handle")
        connection.goaway("idle")
        self.assertIsNone(connection.receive(request(2, "add")))
        self.assertIsNone(connection.receive(b"\xc1"))
        self.assertIsNone(connection.receive(_wire.pack([3, "cancel"])))
        cancel = connection.receive(_wire.encodeCancel(1))
        assert isinstance(cancel, Cancel)
        self.assertEqual(cancel.call, "handle")


class AuthTests(SynchronousTestCase):
    """
    With a token, the first frame must carry it.
    """

    def test_rightToken(self) -> None:
        """
        The right token (as str or bytes) authenticates; requests follow.
        """
        for token in ["secret", b"secret"]:
            connection = ServerConnection(settings(authToken=b"secret"))
            self.assertIsNone(connection.receive(_wire.pack([3, "auth", token])))
            self.assertIsInstance(connection.receive(request(1, "add")), _wire.Request)

    def test_refused(self) -> None:
        """
        A wrong token, or a request first, is refused with C{Unauthorized}
        and a goaway; a request's error carries its msgid.
        """
        connection = ServerConnection(settings(authToken=b"secret"))
        refusal = connection.receive(_wire.pack([3, "auth", "wrong"]))
        assert isinstance(refusal, Refusal)
        self.assertEqual((refusal.reason, refusal.goaway), ("Unauthorized", True))
        refusal = ServerConnection(settings(authToken=b"s")).receive(request(7, "x"))
        assert isinstance(refusal, Refusal)
        self.assertEqual(decode(refusal.payload)[1:3][0], 7)

    def test_helloSaysToken(self) -> None:
        """
        The hello announces token auth when the server has a token.
        """
        hello = decode(ServerConnection(settings(authToken=b"s")).hello())
        self.assertEqual(hello[2]["auth"], "token")
        self.assertNotIn("auth", decode(ServerConnection(settings()).hello())[2])


class GoawayTests(SynchronousTestCase):
    """
    The goaway names the last request dispatched, once.
    """

    def test_lastMsgid(self) -> None:
        """
        The goaway carries the msgid of the last request dispatched, and a
        second goaway is not sent.
        """
        connection = ServerConnection(settings())
        connection.receive(request(4, "add"))
        connection.receive(request(2, "add"))
        payload = connection.goaway("shutdown")
        assert payload is not None
        self.assertEqual(decode(payload), [3, "goaway", 2, "shutdown"])
        self.assertIsNone(connection.goaway("idle"))


class LimitTests(SynchronousTestCase):
    """
    In-flight and size limits.
    """

    def test_inFlight(self) -> None:
        """
        L{ServerConnection.callStarted} says when the in-flight limit is
        reached; ending a call goes below it again.
        """
        connection = ServerConnection(settings(maxInFlight=2))
        self.assertFalse(connection.callStarted(1, "a"))
        self.assertTrue(connection.callStarted(2, "b"))
        self.assertFalse(connection.belowInFlightLimit())
        self.assertEqual(connection.inFlight, 2)
        self.assertTrue(connection.callEnded(1))
        self.assertFalse(connection.callEnded(1))
        self.assertTrue(connection.belowInFlightLimit())

    def test_resultTooLarge(self) -> None:
        """
        A result over the maximum message size raises C{MessageTooLarge}.
        """
        connection = ServerConnection(settings(maxMessageSize=100))
        self.assertRaises(MessageTooLarge, connection.result, 1, "x" * 200, "big")
        self.assertEqual(decode(connection.result(1, "ok", "m")), [1, 1, None, "ok"])

    def test_resultInNewThread(self) -> None:
        """
        L{ServerConnection.result} encodes the same response in a thread that
        has packed nothing yet, with a packer of that thread's own.
        """
        connection = ServerConnection(settings())
        payloads: list[bytes] = []
        thread = threading.Thread(
            target=lambda: payloads.append(connection.result(7, [1, "x"], "m"))
        )
        thread.start()
        thread.join()
        self.assertEqual(payloads, [connection.result(7, [1, "x"], "m")])
        self.assertEqual(decode(payloads[0]), [1, 7, None, [1, "x"]])

    def test_resultUnencodable(self) -> None:
        """
        A result msgpack cannot encode raises C{InvalidResult}.
        """
        connection = ServerConnection(settings())
        self.assertRaises(InvalidResult, connection.result, 1, object(), "m")
        self.flushLoggedErrors()

    def test_frameTooLarge(self) -> None:
        """
        A frame over the limit is refused with a C{MessageTooLarge} error
        with no msgid.
        """
        payload = ServerConnection(settings(maxMessageSize=10)).frameTooLarge(11)
        self.assertEqual(decode(payload)[:2], [1, None])
        self.assertEqual(decode(payload)[2]["type"], "MessageTooLarge")

    def test_errorShrunk(self) -> None:
        """
        An error too large to send loses its data, then has its message cut.
        """
        connection = ServerConnection(settings(maxMessageSize=100))
        error = {"type": "Big", "message": "m" * 500, "data": "d" * 500}
        payload = connection.error(1, error, "m")
        self.assertLessEqual(len(payload), 100)
        [_, _, sent, _] = decode(payload)
        self.assertEqual(sent["type"], "Big")
        self.assertTrue(sent["message"].endswith(" [truncated]"))
        self.assertNotIn("data", sent)


class ErrorForTests(SynchronousTestCase):
    """
    L{ServerConnection.errorFor} turns a failure into the error sent.
    """

    def test_kinds(self) -> None:
        """
        An L{RpcError} is sent as it asks, a cancellation as C{Cancelled},
        anything else as its class name and message, with a traceback only
        with debug.
        """
        connection = ServerConnection(settings())
        self.assertEqual(
            connection.errorFor(Failure(RpcError("Mine", "no", 1))),
            {"type": "Mine", "message": "no", "data": 1},
        )
        self.assertEqual(
            connection.errorFor(Failure(CancelledError()))["type"], "Cancelled"
        )
        self.assertEqual(
            connection.errorFor(Failure(ValueError("bad"))),
            {"type": "ValueError", "message": "bad"},
        )
        debug = ServerConnection(settings(debug=True))
        self.assertIn("traceback", debug.errorFor(Failure(ValueError("x")))["data"])

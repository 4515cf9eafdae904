"""
Tests for L{agilerpc._clientconnection.ClientConnection}, the sans-IO client
side of a connection that both clients are built on: plain bytes in,
recorded events out.
"""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from agilerpc import (
    InvalidResponse,
    MethodNotFound,
    RemoteError,
    RequestTooLarge,
    Unauthorized,
    _wire,
)
from agilerpc._clientconnection import (
    MAX_WINDOW,
    MIN_WINDOW,
    ClientConnection,
    State,
    after,
)
from agilerpc._errors import LocalError, StreamsNotSupported

from .clienthelpers import HELLO, RecordingEvents, frame

_MIB = 1024 * 1024


def deeplyNested(depth: int) -> Any:
    value: list[Any] = []
    for _ in range(depth - 1):
        value = [value]
    return value


class CoreTestMixin:
    """
    A L{ClientConnection} recording its events, and helpers to feed it.
    """

    def setUp(self) -> None:
        self.events = RecordingEvents()
        self.core = ClientConnection(self.events)

    def ready(self, **info: Any) -> None:
        hello = {"protocol": 1, "keepalive": 75, **info}
        self.core.dataReceived(frame([3, "hello", hello]))
        self.events.events.clear()

    def send(self, *calls: str) -> list[int]:
        return [self.core.sendRequest(call, "m", [call], None)[0] for call in calls]


class HelloTests(CoreTestMixin, SynchronousTestCase):
    """
    The server's hello, and what comes before it.
    """

    def test_helloMakesReady(self) -> None:
        """
        A hello with protocol 1 reports the connection ready with its info.
        """
        self.core.dataReceived(frame(HELLO))
        self.assertEqual(self.events.events, [("ready", HELLO[2])])
        self.assertIs(self.core.state, State.READY)
        self.assertEqual(self.core.maxSendSize, 8 * _MIB)

    def test_authFrameFirst(self) -> None:
        """
        With a token, the first payload to send is C{[3, "auth", token]};
        without one there is none.
        """
        core = ClientConnection(self.events, token=b"s3cret")
        self.assertEqual(core.connectionMade(), _wire.pack([3, "auth", b"s3cret"]))
        self.assertIsNone(self.core.connectionMade())

    def test_badHellos(self) -> None:
        """
        A hello with another protocol version (or none, or a boolean), or
        whose info is not a map, is a protocol violation.
        """
        for hello in [
            [3, "hello", {"protocol": 2}],
            [3, "hello", {"protocol": True}],
            [3, "hello", {}],
            [3, "hello", [1]],
            [3, "hello"],
        ]:
            events = RecordingEvents()
            core = ClientConnection(events)
            core.dataReceived(frame(hello))
            self.assertEqual(events.kinds(), ["violation"], hello)
            self.assertIs(core.state, State.BROKEN)

    def test_secondHello(self) -> None:
        """
        A second hello is a protocol violation; the calls in flight are
        reported lost.
        """
        self.ready()
        self.send("a")
        self.core.dataReceived(frame(HELLO))
        self.assertEqual(self.events.events, [("violation", "a second hello", ["a"])])

    def test_responseBeforeHello(self) -> None:
        """
        A response (even an error with a nil msgid) before the hello is a
        protocol violation.
        """
        for message in [[1, 0, None, 1], [1, None, {"type": "X", "message": ""}, None]]:
            events = RecordingEvents()
            core = ClientConnection(events)
            core.dataReceived(frame(message))
            self.assertEqual(
                events.events, [("violation", "a response before the hello", [])]
            )

    def test_goawayBeforeHelloNotServed(self) -> None:
        """
        Any goaway before the hello means the connection was not served,
        whatever its reason or last msgid; what follows is not read.
        """
        for goaway in [
            [3, "goaway", None, "ServerBusy"],
            [3, "goaway", None, "shutdown"],
            [3, "goaway", 5, "idle"],
            [3, "goaway", -1, "whatever"],
            [3, "goaway"],
        ]:
            events = RecordingEvents()
            core = ClientConnection(events)
            core.dataReceived(frame(goaway) + frame(HELLO))
            reason = goaway[3] if len(goaway) > 3 else None
            self.assertEqual(events.events, [("notServed", reason)], goaway)
            self.assertIs(core.state, State.NOT_SERVED)

    def test_unauthorizedGoawayBeforeHello(self) -> None:
        """
        An Unauthorized goaway before the hello refuses the connection (the
        calls are refused, not unrun).
        """
        self.core.dataReceived(frame([3, "goaway", None, "Unauthorized"]))
        self.assertEqual(self.events.kinds(), ["refused"])
        self.assertIs(self.core.state, State.REFUSED)

    def test_otherControlIgnored(self) -> None:
        """
        Control messages other than hello and goaway, including those only
        clients send, are ignored before and after the hello.
        """
        ignored = frame([3, "cancel", 0]) + frame([3, "auth", b"x"])
        ignored += frame([3, "ping"]) + frame([3, "probe"])
        self.core.dataReceived(ignored)
        self.assertEqual(self.events.events, [])
        self.ready()
        self.send("a")
        self.core.dataReceived(ignored + frame([1, 0, None, "ok"]))
        self.assertEqual(self.events.events, [("answered", "a", "ok")])


class SendTests(CoreTestMixin, SynchronousTestCase):
    """
    Calls in, payloads out.
    """

    def test_msgidsFromZero(self) -> None:
        """
        msgids count up from 0; each payload is the request.
        """
        self.ready()
        msgid, payload = self.core.sendRequest("c", "add", [1, 2], {"x": 1})
        self.assertEqual(msgid, 0)
        self.assertEqual(payload, _wire.pack([0, 0, "add", [1, 2], {"x": 1}]))
        self.assertEqual(self.send("d", "e"), [1, 2])
        self.assertEqual(self.core.inflight, 3)

    def test_msgidsWrap(self) -> None:
        """
        After 2**32 - 1 comes 0, and a goaway's last msgid splits the calls
        across the wrap in sending order.
        """
        self.ready()
        self.core._nextMsgid = 2**32 - 2
        self.assertEqual(self.send("a", "b", "c", "d"), [2**32 - 2, 2**32 - 1, 0, 1])
        self.core.dataReceived(frame([3, "goaway", 2**32 - 1, "shutdown"]))
        self.assertEqual(self.events.events, [("goaway", "shutdown", ["c", "d"])])
        self.assertTrue(after(0, 2**32 - 1))
        self.assertFalse(after(2**32 - 1, 0))

    def test_tooLarge(self) -> None:
        """
        A request larger than the hello's max_message_size raises
        L{RequestTooLarge} (a local error), uses no msgid and leaves nothing
        in flight; one of exactly that size is sent.
        """
        size = len(_wire.encodeRequest(0, "m", ["x" * 40]))
        self.ready(max_message_size=size)
        e = self.assertRaises(
            RequestTooLarge, self.core.sendRequest, "c", "m", ["x" * 41], None
        )
        self.assertIsInstance(e, LocalError)
        self.assertNotIsInstance(e, RemoteError)
        self.assertIn(f"maximum message size of {size} bytes", str(e))
        self.assertEqual(self.core.inflight, 0)
        self.assertEqual(self.core.sendRequest("c", "m", ["x" * 40], None)[0], 0)
        self.assertRaises(
            RequestTooLarge, self.core.sendNotification, "m", ["x" * 42], None
        )

    def test_unencodable(self) -> None:
        """
        Arguments msgpack cannot encode raise its error and use no msgid.
        """
        self.ready()
        self.assertRaises(TypeError, self.core.sendRequest, "c", "m", [object()], None)
        self.assertEqual(self.send("a"), [0])

    def test_notification(self) -> None:
        """
        A notification's payload has no msgid.
        """
        self.assertEqual(
            self.core.sendNotification("m", [1], None), _wire.pack([2, "m", [1]])
        )

    def test_cancel(self) -> None:
        """
        Cancelling a call in flight gives the cancel payload and drops its
        late answer; cancelling one that is not in flight gives nothing.
        """
        self.ready()
        self.send("a")
        self.assertEqual(self.core.cancel(0), _wire.encodeCancel(0))
        self.assertIsNone(self.core.cancel(0))
        self.core.dataReceived(frame([1, 0, None, "late"]))
        self.assertEqual(self.events.events, [])


class ResponseTests(CoreTestMixin, SynchronousTestCase):
    """
    Responses to calls in flight.
    """

    def test_answersInAnyOrder(self) -> None:
        """
        Responses match their calls by msgid, in any order, however the
        bytes are cut.
        """
        self.ready()
        self.send("a", "b", "c")
        data = frame([1, 2, None, "C"]) + frame([1, 0, None, "A"])
        data += frame([1, 1, {"type": "MethodNotFound", "message": "no"}, None])
        for i in range(len(data)):
            self.core.dataReceived(data[i : i + 1])
        kinds = [(e[0], e[1]) for e in self.events.events]
        self.assertEqual(kinds, [("answered", "c"), ("answered", "a"), ("failed", "b")])
        self.assertIsInstance(self.events.events[2][2], MethodNotFound)
        self.assertEqual(self.core.inflight, 0)

    def test_nilMsgidErrorFailsNoCall(self) -> None:
        """
        An error with a nil msgid (and a result with one) is reported, and
        fails no call.
        """
        self.ready()
        self.send("a")
        self.core.dataReceived(
            frame([1, None, {"type": "InvalidRequest", "message": "m"}, None])
            + frame([1, None, None, 5])
        )
        self.assertEqual(self.events.kinds(), ["serverError", "serverError"])
        self.assertEqual(self.core.inflight, 1)
        self.assertIs(self.core.state, State.READY)

    def test_unknownMsgidDropped(self) -> None:
        """
        A response to a msgid not in flight (cancelled, say) is dropped.
        """
        self.ready()
        self.core.dataReceived(frame([1, 7, None, 1]) + frame([1, 7, {}, None]))
        self.assertEqual(self.events.events, [])

    def test_invalidResponses(self) -> None:
        """
        A response of the wrong shape, a request or notification sent by a
        server, or anything that is not a message is a protocol violation:
        the calls in flight are reported lost, and nothing more is read.
        """
        for bad in [
            [1, 0, None],
            [1, -1, None, 1],
            [1, 2**32, None, 1],
            [1, True, None, 1],
            [1, 0, "error", None],
            [0, 1, "m", []],
            [2, "m", []],
            [9],
            [],
            {"a": 1},
            5,
            [3, 5],
            [True, 0, None, 1],
        ]:
            events = RecordingEvents()
            core = ClientConnection(events)
            core.dataReceived(frame(HELLO))
            core.sendRequest("a", "m", [], None)
            core.dataReceived(frame(bad) + frame([1, 0, None, "after"]))
            self.assertEqual(events.kinds(), ["ready", "violation"], bad)
            self.assertEqual(events.events[1][2], ["a"], bad)
            self.assertIs(core.state, State.BROKEN)
            self.assertEqual(core.inflight, 0)

    def test_garbage(self) -> None:
        """
        A frame that is not msgpack, and does not start as a response, is
        a protocol violation.
        """
        self.ready()
        self.send("a")
        self.core.dataReceived(_wire.frame(b"\xc1") + frame([1, 0, None, 1]))
        self.assertEqual(self.events.kinds(), ["violation"])
        self.assertEqual(self.events.events[0][2], ["a"])


class DecodeGuardTests(CoreTestMixin, SynchronousTestCase):
    """
    A response that cannot be decoded fails only its own call.
    """

    def test_resultNestedTooDeep(self) -> None:
        """
        A result nested so deep that msgpack encodes it but no decoder
        accepts it (the response is 1025 levels deep) fails that call with
        L{InvalidResponse}; the connection goes on.
        """
        self.ready()
        self.send("a", "b")
        deep = _wire.pack([1, 0, None, deeplyNested(1024)])
        self.assertRaises(ValueError, _wire.unpack, deep)
        self.core.dataReceived(_wire.frame(deep) + frame([1, 1, None, "B"]))
        self.assertEqual(
            [e[:2] for e in self.events.events], [("failed", "a"), ("answered", "b")]
        )
        error = self.events.events[0][2]
        self.assertIsInstance(error, InvalidResponse)
        self.assertIn("msgid 0", str(error))
        self.assertIs(self.core.state, State.READY)

    def test_extensionType(self) -> None:
        """
        An extension type in a response (not part of the protocol) fails that
        call with L{InvalidResponse}; the connection goes on.
        """
        self.ready()
        self.send("a")
        payload = b"\x94\x01\x00\xc0\xd4\x05\x61"  # [1, 0, nil, ext 5 "a"]
        self.core.dataReceived(_wire.frame(payload))
        self.assertEqual(self.events.kinds(), ["failed"])
        self.assertIsInstance(self.events.events[0][2], InvalidResponse)
        self.assertIs(self.core.state, State.READY)

    def test_otherUndecodableResults(self) -> None:
        """
        A timestamp (extension type -1) or a str that is not UTF-8 in a
        result fails that call alone, like any undecodable result.
        """
        self.ready()
        self.send("a", "b")
        self.core.dataReceived(
            _wire.frame(b"\x94\x01\x00\xc0\xd6\xff\x00\x00\x00\x00")
            + _wire.frame(b"\x94\x01\x01\xc0\xa2\xff\xfe")
        )
        self.assertEqual(
            [e[:2] for e in self.events.events], [("failed", "a"), ("failed", "b")]
        )
        self.assertIs(self.core.state, State.READY)

    def test_undecodableLateAnswerDropped(self) -> None:
        """
        An undecodable response for a msgid not in flight is dropped, like
        any late answer.
        """
        self.ready()
        self.core.dataReceived(
            _wire.frame(_wire.pack([1, 3, None, deeplyNested(1024)]))
        )
        self.assertEqual(self.events.events, [])
        self.assertIs(self.core.state, State.READY)

    def test_undecodableWithoutValidMsgid(self) -> None:
        """
        An undecodable frame whose start is not C{[1, msgid, ...} with a
        valid msgid is a protocol violation.
        """
        for payload in [
            _wire.pack([1, -1, None, deeplyNested(1024)]),
            _wire.pack([3, "goaway", deeplyNested(1024)]),
            _wire.pack([1, "0", None, deeplyNested(1024)]),
        ]:
            events = RecordingEvents()
            core = ClientConnection(events)
            core.dataReceived(frame(HELLO))
            core.sendRequest("a", "m", [], None)
            core.dataReceived(_wire.frame(payload))
            self.assertEqual(events.kinds(), ["ready", "violation"])


class ReceiveLimitTests(CoreTestMixin, SynchronousTestCase):
    """
    The client's own cap on incoming frames.
    """

    def test_helloNeverRaisesLimit(self) -> None:
        """
        A hello announcing 2**40 bytes does not raise the client's receive
        limit (8 MiB by default): a 4 GiB frame header right after it is a
        protocol violation at once, before any of its body is buffered.
        """
        self.ready(max_message_size=2**40)
        self.send("a")
        self.assertEqual(self.core.maxSendSize, 2**40)
        self.core.dataReceived(_wire.HEADER.pack(2**32 - 1) + b"x" * 1000)
        self.assertEqual(self.events.kinds(), ["violation"])
        self.assertIn("4294967295 bytes", self.events.events[0][1])
        self.assertEqual(self.events.events[0][2], ["a"])
        self.assertEqual(self.core._buffered, 0)

    def test_ownLimit(self) -> None:
        """
        C{maxMessageSize} sets the limit: a frame of exactly that size is
        read, one byte more is a violation; a lower hello lowers it.
        """
        core = ClientConnection(self.events, maxMessageSize=100)
        core.dataReceived(
            frame([3, "hello", {"protocol": 1, "max_message_size": 2**40}])
        )
        core.sendRequest("a", "m", [], None)
        exact = frame([1, 0, None, b"x" * 94])
        self.assertEqual(len(exact), 104)
        core.dataReceived(exact)
        self.assertEqual(self.events.kinds(), ["ready", "answered"])
        core.dataReceived(_wire.HEADER.pack(101))
        self.assertEqual(self.events.kinds(), ["ready", "answered", "violation"])
        lowered = ClientConnection(self.events, maxMessageSize=100)
        lowered.dataReceived(
            frame([3, "hello", {"protocol": 1, "max_message_size": 50}])
        )
        self.assertEqual(lowered.MAX_LENGTH, 50)

    def test_awaiting(self) -> None:
        """
        L{ClientConnection.awaiting} says how much of a partly received
        frame is missing.
        """
        self.ready()
        self.assertEqual(self.core.awaiting, 0)
        self.core.dataReceived(_wire.HEADER.pack(1000) + b"x" * 10)
        self.assertEqual(self.core.awaiting, 990)


class GoawayTests(CoreTestMixin, SynchronousTestCase):
    """
    The goaway after the hello: PROTOCOL.md section 8.3.
    """

    def test_splitsInflight(self) -> None:
        """
        Calls after last_msgid are reported unrun and no longer in flight;
        calls up to it are still answered; the connection is finished once
        they are.
        """
        self.ready()
        self.send("a", "b", "c")
        self.core.dataReceived(frame([3, "goaway", 0, "idle"]))
        self.assertEqual(self.events.events, [("goaway", "idle", ["b", "c"])])
        self.assertIs(self.core.state, State.GOING_AWAY)
        self.assertFalse(self.core.finished)
        self.core.dataReceived(frame([1, 0, None, "A"]))
        self.assertTrue(self.core.finished)

    def test_nilLastMsgid(self) -> None:
        """
        A nil last_msgid (nothing dispatched) makes every call unrun.
        """
        self.ready()
        self.send("a", "b")
        self.core.dataReceived(frame([3, "goaway", None, "shutdown"]))
        self.assertEqual(self.events.events, [("goaway", "shutdown", ["a", "b"])])
        self.assertTrue(self.core.finished)

    def test_unknownReasonGeneralRule(self) -> None:
        """
        Every reason but Unauthorized (MessageTooLarge, unknown ones, none)
        follows the general rule.
        """
        for goaway in [
            [3, "goaway", None, "MessageTooLarge"],
            [3, "goaway", None, "something new"],
            [3, "goaway", None],
            [3, "goaway", None, 5],
        ]:
            events = RecordingEvents()
            core = ClientConnection(events)
            core.dataReceived(frame(HELLO))
            core.sendRequest("a", "m", [], None)
            core.dataReceived(frame(goaway))
            self.assertEqual(events.kinds(), ["ready", "goaway"], goaway)
            self.assertEqual(events.events[1][2], ["a"])

    def test_invalidLastMsgidIsViolation(self) -> None:
        """
        A goaway whose last_msgid is neither nil nor a msgid (negative, too
        large, a boolean, a string, a float) proves nothing: a protocol
        violation, and the calls in flight are lost, never unrun.
        """
        for last in [-1, 2**32, True, "3", 1.5]:
            events = RecordingEvents()
            core = ClientConnection(events)
            core.dataReceived(frame(HELLO))
            core.sendRequest("a", "m", [], None)
            core.dataReceived(frame([3, "goaway", last, "idle"]))
            self.assertEqual(events.kinds(), ["ready", "violation"], last)
            self.assertEqual(events.events[1][2], ["a"])

    def test_secondGoawayIgnored(self) -> None:
        """
        A second goaway changes nothing.
        """
        self.ready()
        self.send("a", "b")
        self.core.dataReceived(
            frame([3, "goaway", 0, "idle"]) + frame([3, "goaway", None, "idle"])
        )
        self.assertEqual(self.events.events, [("goaway", "idle", ["b"])])
        self.assertEqual(self.core.inflight, 1)


class UnauthorizedTests(CoreTestMixin, SynchronousTestCase):
    """
    A server refusing the connection's token.
    """

    def test_goaway(self) -> None:
        """
        A goaway whose reason is Unauthorized refuses the connection: every
        call in flight is reported, not as unrun (its nil last_msgid does
        not mean "resend everything").
        """
        self.ready()
        self.send("a", "b")
        self.core.dataReceived(frame([3, "goaway", None, "Unauthorized"]))
        self.assertEqual(self.events.kinds(), ["refused"])
        self.assertEqual(self.events.events[0][1], ["a", "b"])
        self.assertIsInstance(self.events.events[0][2], Unauthorized)
        self.assertIs(self.core.state, State.REFUSED)
        self.assertTrue(self.core.finished)

    def test_goawayAfterGoaway(self) -> None:
        """
        An Unauthorized goaway after another goaway still refuses the calls
        left in flight.
        """
        self.ready()
        self.send("a", "b")
        self.core.dataReceived(
            frame([3, "goaway", 0, "idle"]) + frame([3, "goaway", None, "Unauthorized"])
        )
        self.assertEqual(self.events.kinds(), ["goaway", "refused"])
        self.assertEqual(self.events.events[1][1], ["a"])

    def test_error(self) -> None:
        """
        An Unauthorized error for a call in flight, or with a nil msgid,
        refuses the connection once; later frames change nothing.
        """
        for msgid in [None, 1]:
            events = RecordingEvents()
            core = ClientConnection(events)
            core.dataReceived(frame(HELLO))
            core.sendRequest("a", "m", [], None)
            core.sendRequest("b", "m", [], None)
            error = {"type": "Unauthorized", "message": "no token"}
            core.dataReceived(
                frame([1, msgid, error, None])
                + frame([3, "goaway", None, "Unauthorized"])
                + frame([1, 0, None, 1])
            )
            self.assertEqual(events.kinds(), ["ready", "refused"], msgid)
            self.assertEqual(events.events[1][1], ["a", "b"])
            self.assertEqual(events.events[1][2].message, "no token")

    def test_errorForUnknownMsgid(self) -> None:
        """
        An Unauthorized error for a msgid not in flight is a late answer.
        """
        self.ready()
        self.send("a")
        self.core.dataReceived(
            frame([1, 5, {"type": "Unauthorized", "message": "m"}, None])
        )
        self.assertEqual(self.events.events, [])


class LostTests(CoreTestMixin, SynchronousTestCase):
    """
    The end of the connection.
    """

    def test_connectionLostGivesInflight(self) -> None:
        """
        L{ClientConnection.connectionLost} gives the calls in flight (they
        may have run) and reads nothing after.
        """
        self.ready()
        self.send("a", "b")
        self.assertEqual(self.core.connectionLost(), ["a", "b"])
        self.assertIs(self.core.state, State.CLOSED)
        self.core.dataReceived(frame([1, 0, None, 1]))
        self.assertEqual(self.events.events, [])
        self.assertEqual(repr(self.core), "<ClientConnection closed, 0 in flight>")


class StreamTests(CoreTestMixin, SynchronousTestCase):
    """
    Streams (PROTOCOL.md 4.5): items in, credit out.
    """

    def stream(self, call: str, window: int = 4) -> int:
        msgid, payload = self.core.sendStream(call, "ticks", [3], None, window)
        self.assertEqual(
            _wire.unpack(payload), [0, msgid, "ticks", [3], {}, {"stream": window}]
        )
        return msgid

    def test_onlyWhenAnnounced(self) -> None:
        """
        A stream is asked only of a server whose hello lists the C{stream}
        feature; otherwise nothing is sent and no msgid is used.
        """
        self.ready()
        with self.assertRaises(StreamsNotSupported):
            self.core.sendStream("s", "ticks", [], None, 4)
        self.assertEqual(self.core.inflight, 0)
        self.assertEqual(self.send("a"), [0])

    def test_itemsThenEnd(self) -> None:
        """
        Items are reported in order, then the end as the call's answer.
        """
        self.ready(features=["stream"])
        msgid = self.stream("s")
        self.core.dataReceived(
            frame([4, msgid, "x"]) + frame([4, msgid, "y"]) + frame([1, msgid, None, 7])
        )
        self.assertEqual(
            self.events.events,
            [("item", "s", "x"), ("item", "s", "y"), ("answered", "s", 7)],
        )
        self.assertEqual(self.core.streams, {})

    def test_creditHalfWindowAtATime(self) -> None:
        """
        As the consumer takes items, a credit for them goes out each time
        half the window has been taken (here the buffer holds four of these
        4-byte items, so the window stays at 4).
        """
        self.core = ClientConnection(self.events, streamBuffer=16)
        self.ready(features=["stream"])
        msgid = self.stream("s", window=4)
        self.core.dataReceived(b"".join(frame([4, msgid, i]) for i in range(4)))
        self.assertIsNone(self.core.consumed(msgid))
        self.assertEqual(self.core.consumed(msgid), _wire.encodeCredit(msgid, 2))
        self.assertIsNone(self.core.consumed(msgid))
        self.assertEqual(self.core.consumed(msgid), _wire.encodeCredit(msgid, 2))
        self.assertIsNone(self.core.consumed(99))

    def test_windowFromItemSize(self) -> None:
        """
        After the first grant, the window holds about C{streamBuffer} bytes
        of the items seen: many small ones (up to L{MAX_WINDOW}), few large
        ones (down to L{MIN_WINDOW}).
        """
        self.core = ClientConnection(self.events, streamBuffer=1000)
        self.ready(features=["stream"])
        small = self.stream("small", window=4)
        self.core.dataReceived(b"".join(frame([4, small, i]) for i in range(2)))
        self.core.consumed(small)
        # 1000 bytes of 4-byte items, less the 3 still granted.
        self.assertEqual(self.core.consumed(small), _wire.encodeCredit(small, 250 - 2))
        large = self.stream("large", window=4)
        blob = b"x" * 600
        self.core.dataReceived(b"".join(frame([4, large, blob]) for _ in range(2)))
        self.core.consumed(large)
        self.assertIsNone(self.core.consumed(large))
        self.assertEqual(self.core.streams[large].window, MIN_WINDOW)
        tiny = ClientConnection(RecordingEvents(), streamBuffer=10**9)
        tiny.dataReceived(frame([3, "hello", {"protocol": 1, "features": ["stream"]}]))
        msgid, _ = tiny.sendStream("t", "m", [], None, 2)
        tiny.dataReceived(frame([4, msgid, 0]))
        self.assertEqual(
            tiny.consumed(msgid), _wire.encodeCredit(msgid, MAX_WINDOW - 1)
        )

    def test_itemBeyondCredit(self) -> None:
        """
        An item beyond the credit granted is a protocol violation: the
        client's memory is bounded by its window.
        """
        self.ready(features=["stream"])
        msgid = self.stream("s", window=2)
        self.core.dataReceived(b"".join(frame([4, msgid, i]) for i in range(3)))
        self.assertEqual(self.events.kinds(), ["item", "item", "violation"])

    def test_itemForPlainCall(self) -> None:
        """
        An item for a call that is not a stream is a protocol violation; one
        for a stream given up on is dropped.
        """
        self.ready(features=["stream"])
        msgid = self.stream("s")
        self.core.cancel(msgid)
        self.core.dataReceived(frame([4, msgid, "late"]))
        self.assertEqual(self.events.events, [])
        [plain] = self.send("a")
        self.core.dataReceived(frame([4, plain, "x"]))
        self.assertEqual(self.events.kinds(), ["violation"])

    def test_badItem(self) -> None:
        """
        An item that is not C{[4, msgid, item]} is a protocol violation.
        """
        self.ready(features=["stream"])
        self.core.dataReceived(frame([4, 0]))
        self.assertEqual(self.events.kinds(), ["violation"])

    def test_goawayHandsBackUnrunStreams(self) -> None:
        """
        A stream sent after a goaway's last msgid is handed back to be sent
        again, and forgotten here.
        """
        self.ready(features=["stream"])
        first = self.stream("s1")
        self.stream("s2")
        self.core.dataReceived(frame([3, "goaway", first, "idle"]))
        self.assertEqual(self.events.events, [("goaway", "idle", ["s2"])])
        self.assertEqual(list(self.core.streams), [first])

    def test_lostForgetsStreams(self) -> None:
        """
        A lost connection reports its streams lost with its calls.
        """
        self.ready(features=["stream"])
        self.stream("s")
        self.assertEqual(self.core.connectionLost(), ["s"])
        self.assertEqual(self.core.streams, {})

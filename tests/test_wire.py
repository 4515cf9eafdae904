# mypy reports trial's untyped assertions called through self under the test
# class's name, which untyped_calls_exclude = ["twisted"] does not match.
# mypy: disable-error-code="no-untyped-call"
"""
Tests for L{agilerpc._wire}, the wire codec, and for docs/PROTOCOL.md: the
test vectors and the worked example in the protocol document are parsed out of
it and checked byte for byte against the codec and the reference server.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import msgpack
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

import agilerpc.examples.hello
from agilerpc import InvalidRequest, InvalidResponse, Registry, RpcServerFactory
from agilerpc import _wire as wire
from agilerpc._version import __version__

from .protocoldoc import loadAnswers, loadSession, loadVectors, parseHex, parseNotation

# -- comparing decoded values exactly ---------------------------------------


def sameValue(a: Any, b: Any) -> bool:
    """
    Are C{a} and C{b} equal with the same types all the way down?  (C{==}
    alone says C{True == 1}, C{1.0 == 1} and C{Request(True, ...) ==
    Request(1, ...)}.)
    """
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(map(sameValue, a, b))
    if isinstance(a, dict):
        return list(a) == list(b) and all(sameValue(a[k], b[k]) for k in a)
    if dataclasses.is_dataclass(a):
        return all(
            sameValue(getattr(a, f.name), getattr(b, f.name))
            for f in dataclasses.fields(a)
        )
    return bool(a == b)


def _encode(message: list[Any]) -> bytes:
    """
    Encode C{message} with the L{wire} encoder made for its kind.
    """
    code = message[0]
    if code == wire.REQUEST:
        if len(message) == 6:
            msgid, method, args, kwargs = message[1:5]
            options = message[5]
            return wire.encodeRequest(
                msgid,
                method,
                args,
                kwargs,
                stream=options.get("stream"),
                deadline=options.get("deadline"),
                metadata=options.get("metadata"),
            )
        return wire.encodeRequest(*message[1:])
    if code == wire.ITEM:
        return wire.encodeItem(*message[1:])
    if code == wire.RESPONSE:
        if message[2] is None:
            return wire.encodeResult(message[1], message[3])
        assert message[3] is None, message
        return wire.encodeError(message[1], message[2])
    if code == wire.NOTIFICATION:
        return wire.encodeNotification(*message[1:])
    kind = message[1]
    if kind == "hello":
        return wire.encodeHello(*message[2:])
    if kind == "goaway":
        return wire.encodeGoaway(*message[2:])
    if kind == "auth":
        return wire.encodeAuth(*message[2:])
    if kind == "probe":
        return wire.PROBE
    if kind == "credit":
        return wire.encodeCredit(*message[2:])
    assert kind == "cancel", message
    return wire.encodeCancel(*message[2:])


def _parse(message: list[Any], payload: bytes) -> Any:
    """
    Decode C{payload} with the parser for the side that receives C{message}.
    """
    if message[0] in (wire.RESPONSE, wire.ITEM) or message[1:2] in (
        ["hello"],
        ["goaway"],
        ["probe"],
    ):
        return wire.parseServerMessage(payload)
    return wire.parseClientMessage(payload)


def _expected(message: list[Any]) -> Any:
    """
    What the parser should give for C{message}.
    """
    code = message[0]
    if code == wire.REQUEST:
        kwargs = message[4] if len(message) >= 5 else {}
        options = message[5] if len(message) == 6 else {}
        deadline = options.get("deadline")
        if deadline is not None:
            deadline = float(deadline)
        metadata = options.get("metadata")
        if "stream" in options:
            return wire.StreamRequest(
                message[1],
                message[2],
                message[3],
                kwargs,
                deadline,
                metadata,
                options["stream"],
            )
        if deadline is not None or metadata is not None:
            return wire.OptionsRequest(
                message[1], message[2], message[3], kwargs, deadline, metadata
            )
        return wire.Request(message[1], message[2], message[3], kwargs)
    if code == wire.ITEM:
        return wire.Item(message[1], message[2])
    if code == wire.RESPONSE:
        return wire.Response(message[1], message[2], message[3])
    if code == wire.NOTIFICATION:
        kwargs = message[3] if len(message) >= 4 else {}
        metadata = message[4].get("metadata") if len(message) == 5 else None
        return wire.Notification(message[1], message[2], kwargs, metadata)
    return wire.Control(message[1], message[2:])


class NotationTests(SynchronousTestCase):
    """
    Tests for L{parseNotation}, the reader of the protocol document's
    notation, so that a vector test cannot pass by misreading the document.
    """

    def test_scalars(self) -> None:
        """
        nil, booleans, integers, floats, str and bin have their own types.
        """
        self.assertTrue(
            sameValue(
                parseNotation(
                    '[nil, true, false, 0, -33, 18446744073709551615, 75.0, -1.5e3, "a\\"é", bin(00ff), bin()]'
                ),
                [
                    None,
                    True,
                    False,
                    0,
                    -33,
                    2**64 - 1,
                    75.0,
                    -1500.0,
                    'a"é',
                    b"\x00\xff",
                    b"",
                ],
            )
        )

    def test_containers(self) -> None:
        """
        Arrays and maps nest, and maps keep the order written.
        """
        value = parseNotation('{"b": [1, [], {}], "a": {"c": nil}}')
        self.assertTrue(sameValue(value, {"b": [1, [], {}], "a": {"c": None}}))
        self.assertEqual(list(value), ["b", "a"])

    def test_rejectsMalformed(self) -> None:
        """
        Anything that is not exactly one value is refused.
        """
        for text in ["[1, 2", "[1 2]", "1 2", "{1}", "[1,]", "None", "bin(0)", "", "]"]:
            self.assertRaises(ValueError, parseNotation, text)


class ProtocolVectorTests(SynchronousTestCase):
    """
    The test vectors of docs/PROTOCOL.md against the codec.
    """

    def setUp(self) -> None:
        self.vectors = loadVectors()

    def test_vectorsPresent(self) -> None:
        """
        The document has its vectors, numbered V1, V2, ... without gaps, and
        they cover every message the protocol defines.
        """
        self.assertGreaterEqual(len(self.vectors), 20)
        self.assertEqual(
            [v.number for v in self.vectors], list(range(1, len(self.vectors) + 1))
        )
        messages = [v.message for v in self.vectors]
        shapes = {
            (m[0], len(m), m[1] if m[0] == wire.CONTROL else None) for m in messages
        }
        for shape in [
            (wire.REQUEST, 4, None),
            (wire.REQUEST, 5, None),
            (wire.RESPONSE, 4, None),
            (wire.NOTIFICATION, 3, None),
            (wire.NOTIFICATION, 4, None),
            (wire.CONTROL, 3, "hello"),
            (wire.CONTROL, 4, "goaway"),
            (wire.CONTROL, 3, "cancel"),
        ]:
            self.assertIn(shape, shapes)
        responses = [m for m in messages if m[0] == wire.RESPONSE]
        self.assertTrue(any(m[2] is None for m in responses))
        self.assertTrue(any(m[1] is None and m[2] is not None for m in responses))
        self.assertTrue(any(m[2] and "data" in m[2] for m in responses))
        self.assertTrue(
            any(b"\xc4" in v.frame and v.message[0] == 0 for v in self.vectors)
        )

    def test_agileutilRequestVector(self) -> None:
        """
        V1 is the agileutil article's example call, so a reader can check
        their encoder on the first vector.
        """
        first = self.vectors[0]
        self.assertEqual(first.message, [0, 1, "sayHello", ["zhangsan"]])
        self.assertEqual(
            first.frame.hex(), "00000016940001a873617948656c6c6f91a87a68616e6773616e"
        )

    def test_lengthHeader(self) -> None:
        """
        Each frame's 4-byte big-endian header is the length of its payload.
        """
        for v in self.vectors:
            self.assertEqual(
                int.from_bytes(v.frame[:4], "big"), len(v.frame) - 4, v.title
            )

    def test_pack(self) -> None:
        """
        Framing L{wire.pack} of each message gives exactly the vector's bytes.
        """
        for v in self.vectors:
            self.assertEqual(
                wire.frame(wire.pack(v.message)).hex(), v.frame.hex(), v.title
            )

    def test_encoders(self) -> None:
        """
        The encoder for each message's kind gives exactly the vector's bytes.
        """
        for v in self.vectors:
            self.assertEqual(
                wire.frame(_encode(v.message)).hex(), v.frame.hex(), v.title
            )

    def test_unpack(self) -> None:
        """
        Decoding each payload gives back the message, types included (str
        stays str, bin stays bytes, 75.0 stays a float).
        """
        for v in self.vectors:
            decoded = wire.unpack(v.frame[4:])
            self.assertTrue(sameValue(decoded, v.message), f"{v.title}: {decoded!r}")

    def test_parse(self) -> None:
        """
        The parser for the receiving side gives the message's value type.
        """
        for v in self.vectors:
            parsed = _parse(v.message, v.frame[4:])
            expected = _expected(v.message)
            self.assertTrue(sameValue(parsed, expected), f"{v.title}: {parsed!r}")


class VectorsAgainstServerTests(SynchronousTestCase):
    """
    The vectors that are answers, and the refusals (auth, busy), are what
    the reference server sends.
    """

    def connect(self, **kwargs: Any) -> tuple[Any, StringTransport]:
        factory = RpcServerFactory(
            Registry.fromModule(agilerpc.examples.hello), Clock(), **kwargs
        )
        transport = StringTransport()
        protocol = factory.buildProtocol(None)
        protocol.makeConnection(transport)
        transport.clear()
        return protocol, transport

    def test_answers(self) -> None:
        """
        Each vector that says which request it answers is, byte for byte,
        the example server's answer to that request.
        """
        pairs = loadAnswers()
        self.assertGreaterEqual(len(pairs), 3)
        for request, response in pairs:
            protocol, transport = self.connect()
            protocol.dataReceived(wire.frame(wire.pack(request)))
            self.assertEqual(
                transport.value().hex(), response.frame.hex(), response.title
            )

    def test_deadlineExceeded(self) -> None:
        """
        V35 (a sleep with a 2.5 s deadline) is answered, 2.5 s later, with
        exactly V38.
        """
        vectors = {v.number: v for v in loadVectors()}
        protocol, transport = self.connect()
        protocol.dataReceived(vectors[35].frame)
        clock = protocol.factory.reactor
        clock.advance(2.499)
        self.assertEqual(transport.value(), b"")
        clock.advance(0.001)
        self.assertEqual(transport.value().hex(), vectors[38].frame.hex())

    def test_metadataVectors(self) -> None:
        """
        V36 and V37 are served (their metadata taken): V36 is answered as
        its request without metadata would be, V37 not at all.
        """
        vectors = {v.number: v for v in loadVectors()}
        protocol, transport = self.connect()
        protocol.dataReceived(vectors[36].frame + vectors[37].frame)
        self.assertEqual(
            transport.value(),
            wire.frame(wire.pack([1, 14, None, "hello zhangsan"])),
        )

    def test_wrongToken(self) -> None:
        """
        A wrong token (V26 against a server with another token) is answered
        with exactly V27 then V28.
        """
        vectors = {v.number: v for v in loadVectors()}
        protocol, transport = self.connect(authToken=b"another")
        protocol.dataReceived(vectors[26].frame)
        self.assertEqual(
            transport.value().hex(), (vectors[27].frame + vectors[28].frame).hex()
        )

    def test_busy(self) -> None:
        """
        A server at its connection limit sends V29 instead of a hello.
        """
        vectors = {v.number: v for v in loadVectors()}
        factory = RpcServerFactory(Registry(), Clock(), maxConnections=1)
        factory.buildProtocol(None).makeConnection(StringTransport())
        transport = StringTransport()
        factory.buildProtocol(None).makeConnection(transport)
        self.assertEqual(transport.value().hex(), vectors[29].frame.hex())


class UndecodableMessageTests(SynchronousTestCase):
    """
    What L{wire.unpack} says of a payload it refuses is in the protocol's
    terms (PROTOCOL.md section 6.1), never a decoder's exception.
    """

    def test_messages(self) -> None:
        """
        Each kind of undecodable payload gets its own message.
        """
        deep = b"\x91" * 1025 + b"\x90"
        for payload, why in [
            (b"\x91\x01\x02", "extra bytes after the message's array"),
            (b"\x92\x01", "the payload ends inside a value (truncated)"),
            (b"\x91\xa5abc", "the payload ends inside a value (truncated)"),
            (b"\x91\xc1", "not msgpack: 0xc1 is not a msgpack type"),
            (b"\x91\xa1\xff", "a str is not valid UTF-8"),
            (b"\x81\x91\x01\x01", "a map key is an array or a map"),
            (
                b"\xdd\xff\xff\xff\xff",
                "a str, bin, array or map announces more than the payload holds",
            ),
            (deep, "nested deeper than 1024 arrays and maps"),
            (b"\x91\xd4\x05a", "extension types are not part of protocol version 1"),
            (b"\x91\xc7\x00\x05", "extension types are not part of protocol version 1"),
            (b"\x01", "the message is an integer, not an array"),
            (b"\xc0", "the message is nil, not an array"),
            (b"\x80", "the message is a map, not an array"),
        ]:
            with self.assertRaises(ValueError) as caught:
                wire.unpack(payload)
            self.assertEqual(str(caught.exception), why, payload.hex()[:20])

    def test_typeCodes(self) -> None:
        """
        A type code that is not one is named in the protocol's terms.
        """
        cases: list[tuple[list[Any], str]] = [
            ([7], "unknown message type code 7"),
            ([True], "the type code is a boolean, not an integer"),
            (["0"], "the type code is a str, not an integer"),
            ([0.0], "the type code is a float, not an integer"),
        ]
        for message, why in cases:
            with self.assertRaises(InvalidRequest) as caught:
                wire.parseClientMessage(wire.pack(message))
            self.assertEqual(caught.exception.message, why)


class HalfCloseableStringTransport(StringTransport):
    """
    A L{StringTransport} that records a half-close.
    """

    writeClosed = False

    def loseWriteConnection(self) -> None:
        self.writeClosed = True


class WorkedExampleTests(SynchronousTestCase):
    """
    The worked example of docs/PROTOCOL.md against the reference server.
    """

    def test_session(self) -> None:
        """
        Fed the example's client bytes at the example's times, the server
        writes exactly the example's server bytes, half-closes after the
        goaway and closes when the client does.
        """
        steps = loadSession()
        self.assertIn(("idle", "75"), steps)
        clock = Clock()
        factory = RpcServerFactory(
            Registry.fromModule(agilerpc.examples.hello), clock, keepalive=75.0
        )
        # The document fixes a version string; the example is about the
        # protocol, so pin it while checking the real one has the same form.
        self.assertEqual(factory.hello["server"], f"agilerpc/{__version__}")
        factory.hello["server"] = "agilerpc/0.1.0"
        transport = HalfCloseableStringTransport()
        protocol = factory.buildProtocol(None)
        expected = b""
        writeClosed = closed = False

        def check(where: str) -> None:
            nonlocal expected
            self.assertEqual(transport.value().hex(), expected.hex(), where)
            self.assertEqual(transport.writeClosed, writeClosed, where)
            self.assertEqual(transport.disconnecting, closed, where)
            transport.clear()
            expected = b""

        protocol.makeConnection(transport)
        for who, what in steps:
            if who == "server":
                if what == "EOF":
                    writeClosed = True
                elif what == "close":
                    closed = True
                else:
                    expected += parseHex(what)
                continue
            check(f"before {who}: {what}")
            if who == "idle":
                clock.advance(float(what))
            elif what == "EOF":
                protocol.readConnectionLost()
            else:
                protocol.dataReceived(parseHex(what))
        check("at the end")
        self.assertTrue(writeClosed and closed)


class FrameTests(SynchronousTestCase):
    """
    Tests for L{wire.frame} and L{wire.HEADER}.
    """

    def test_header(self) -> None:
        """
        The header is the payload's length as 4 big-endian bytes.
        """
        self.assertEqual(wire.frame(b""), b"\x00\x00\x00\x00")
        self.assertEqual(wire.frame(b"abc"), b"\x00\x00\x00\x03abc")
        payload = b"x" * 0x010203
        self.assertEqual(wire.frame(payload), b"\x00\x01\x02\x03" + payload)
        self.assertEqual(wire.HEADER.size, 4)
        self.assertEqual(wire.HEADER.unpack(b"\xff\xff\xff\xfe"), (2**32 - 2,))

    def test_constants(self) -> None:
        """
        The type codes, version and limits are those of the document.
        """
        self.assertEqual(
            (wire.REQUEST, wire.RESPONSE, wire.NOTIFICATION, wire.CONTROL), (0, 1, 2, 3)
        )
        self.assertEqual(wire.PROTOCOL_VERSION, 1)
        self.assertEqual(wire.DEFAULT_MAX_MESSAGE_SIZE, 8388608)
        self.assertEqual(wire.MAX_MSGID, 4294967295)


def nested(depth: int) -> Any:
    """
    C{depth} arrays, one inside the other, around a nil.
    """
    value: Any = None
    for _ in range(depth):
        value = [value]
    return value


def depthOf(value: Any) -> int:
    """
    How many arrays of one element are around a nil in C{value} (-1 if it is
    not such a value): iterative, because C{==} and C{repr} of deep lists
    exhaust Python's recursion limit.
    """
    depth = 0
    while type(value) is list and len(value) == 1:
        value = value[0]
        depth += 1
    return depth if value is None else -1


class PackTests(SynchronousTestCase):
    """
    Tests for L{wire.pack}.
    """

    def test_strAndBin(self) -> None:
        """
        str is packed as a msgpack str, bytes as bin.
        """
        self.assertEqual(wire.pack(["hi", b"hi"]), b"\x92\xa2hi\xc4\x02hi")

    def test_smallestIntegers(self) -> None:
        """
        Integers take the smallest encoding.
        """
        self.assertEqual(wire.pack([1, 200, -1]).hex(), "9301ccc8ff")

    def test_unencodableType(self) -> None:
        """
        A value msgpack has no type for raises L{TypeError}.
        """
        self.assertRaises(TypeError, wire.pack, [object()])
        self.assertRaises(TypeError, wire.pack, [{1, 2}])

    def test_integerOutOfRange(self) -> None:
        """
        An integer outside -2**63 .. 2**64 - 1 cannot be encoded.
        """
        self.assertEqual(
            wire.pack([2**64 - 1, -(2**63)]).hex(),
            "92cfffffffffffffffffd38000000000000000",
        )
        self.assertRaises(OverflowError, wire.pack, [2**64])
        self.assertRaises(OverflowError, wire.pack, [-(2**63) - 1])

    def test_nestingLimit(self) -> None:
        """
        A message of 1024 nested arrays (the document's limit) packs; one more
        level raises L{ValueError}.
        """
        self.assertEqual(len(wire.pack(nested(1024))), 1025)
        self.assertRaises(ValueError, wire.pack, nested(1025))


class UnpackTests(SynchronousTestCase):
    """
    Tests for L{wire.unpack}: one msgpack array, within msgpack's limits.
    """

    def test_array(self) -> None:
        """
        An array comes back as a list, with str, bin, float32 and float64
        values of their own types.
        """
        payload = (
            b"\x95\xa2hi\xc4\x02hi\xca\x3f\xc0\x00\x00\xcb\x3f\xf8"
            + b"\x00" * 6
            + b"\x80"
        )
        self.assertTrue(sameValue(wire.unpack(payload), ["hi", b"hi", 1.5, 1.5, {}]))

    def test_empty(self) -> None:
        """
        An empty payload (a frame with N = 0) is not a message.
        """
        self.assertRaises(ValueError, wire.unpack, b"")

    def test_notAnArray(self) -> None:
        """
        A single msgpack value that is not an array is refused.
        """
        for payload in [b"\x01", b"\xc0", b"\xa1a", b"\x80", b"\xc4\x00"]:
            self.assertRaises(ValueError, wire.unpack, payload)

    def test_extraData(self) -> None:
        """
        Bytes after the array are refused.
        """
        self.assertRaises(ValueError, wire.unpack, b"\x90\x90")
        self.assertRaises(ValueError, wire.unpack, b"\x91\x01\x02")

    def test_truncated(self) -> None:
        """
        An array cut short is refused.
        """
        self.assertRaises(ValueError, wire.unpack, b"\x92\x01")
        self.assertRaises(ValueError, wire.unpack, b"\x91\xa5abc")

    def test_notMsgpack(self) -> None:
        """
        A byte msgpack never uses (0xc1) is refused.
        """
        self.assertRaises(ValueError, wire.unpack, b"\xc1")
        self.assertRaises(ValueError, wire.unpack, b"\x91\xc1")

    def test_deepNesting(self) -> None:
        """
        1024 nested arrays decode; deeper nesting, arrays or maps, raises
        L{ValueError} instead of exhausting the stack.
        """
        self.assertEqual(depthOf(wire.unpack(b"\x91" * 1024 + b"\xc0")), 1024)
        self.assertRaises(ValueError, wire.unpack, b"\x91" * 1025 + b"\xc0")
        self.assertRaises(ValueError, wire.unpack, b"\x91" * 100000 + b"\xc0")
        self.assertRaises(
            ValueError, wire.unpack, b"\x91" + b"\x81\xa1k" * 1024 + b"\xc0"
        )

    def test_countBeyondPayload(self) -> None:
        """
        An array, map, str or bin header claiming more than the payload holds
        raises L{ValueError}.
        """
        for payload in [
            b"\xdd\xff\xff\xff\xff",  # array32 of 2**32 - 1 elements
            b"\x91\xdd\x00\x01\x00\x00\x01",  # array32 of 65536 elements
            b"\xdf\xff\xff\xff\xff",  # map32
            b"\x91\xdb\xff\xff\xff\xffab",  # str32
            b"\x91\xc6\x00\x10\x00\x00ab",  # bin32
        ]:
            self.assertRaises(ValueError, wire.unpack, payload)

    def test_invalidUtf8(self) -> None:
        """
        A str that is not UTF-8 raises L{ValueError}; the same bytes as bin are
        fine.
        """
        self.assertRaises(ValueError, wire.unpack, b"\x91\xa2\xc3\x28")
        self.assertEqual(wire.unpack(b"\x91\xc4\x02\xc3\x28"), [b"\xc3\x28"])

    def test_mapKeys(self) -> None:
        """
        Map keys may be any scalar (str, bin, integer, float, boolean, nil);
        an array or map as a key, however deep, makes the whole message
        invalid.
        """
        self.assertTrue(
            sameValue(
                wire.unpack(b"\x92\x81\xa1k\x01\x81\xc4\x01k\x02"),
                [{"k": 1}, {b"k": 2}],
            )
        )
        for key in [1, None, True, 1.5, -7]:
            self.assertEqual(wire.unpack(msgpack.packb([[{key: 1}]])), [[{key: 1}]])
        # An array as a key: unhashable once decoded.
        self.assertRaises(ValueError, wire.unpack, b"\x91\x81\x90\x01")
        # A map as a key.
        self.assertRaises(ValueError, wire.unpack, b"\x91\x81\x80\x01")


class EncoderTests(SynchronousTestCase):
    """
    Tests for the message encoders of L{wire}.
    """

    def assertPayload(self, payload: bytes, message: list[Any]) -> None:
        self.assertEqual(payload, msgpack.packb(message, use_bin_type=True))

    def test_encodeRequest(self) -> None:
        """
        A request is C{[0, msgid, method, args]}, with C{kwargs} appended
        only when it is not empty.
        """
        self.assertPayload(wire.encodeRequest(7, "m", [1]), [0, 7, "m", [1]])
        self.assertPayload(wire.encodeRequest(7, "m", [1], {}), [0, 7, "m", [1]])
        self.assertPayload(wire.encodeRequest(7, "m", [1], None), [0, 7, "m", [1]])
        self.assertPayload(
            wire.encodeRequest(7, "m", [], {"a": b"x"}), [0, 7, "m", [], {"a": b"x"}]
        )

    def test_encodeRequestArgsTuple(self) -> None:
        """
        A tuple of arguments goes out as an array.
        """
        self.assertPayload(wire.encodeRequest(1, "m", (1, 2)), [0, 1, "m", [1, 2]])

    def test_encodeNotification(self) -> None:
        """
        A notification is C{[2, method, args]} or C{[2, method, args,
        kwargs]}.
        """
        self.assertPayload(wire.encodeNotification("log", ["x"]), [2, "log", ["x"]])
        self.assertPayload(wire.encodeNotification("log", [], {}), [2, "log", []])
        self.assertPayload(
            wire.encodeNotification("log", [], {"level": 1}),
            [2, "log", [], {"level": 1}],
        )

    def test_encodeResult(self) -> None:
        """
        A result is C{[1, msgid, nil, result]}.
        """
        self.assertPayload(
            wire.encodeResult(3, {"a": [b"\x00"]}), [1, 3, None, {"a": [b"\x00"]}]
        )
        self.assertPayload(wire.encodeResult(3, None), [1, 3, None, None])

    def test_encodeResultUnencodable(self) -> None:
        """
        A result msgpack cannot encode raises, so the server can send
        C{InvalidResult} instead.
        """
        self.assertRaises(TypeError, wire.encodeResult, 1, object())
        self.assertRaises(OverflowError, wire.encodeResult, 1, 2**64)
        self.assertEqual(len(wire.encodeResult(1, nested(1023))), 1028)
        self.assertRaises(ValueError, wire.encodeResult, 1, nested(1024))

    def test_encodeError(self) -> None:
        """
        An error is C{[1, msgid, error, nil]}; the msgid may be nil.
        """
        error = {"type": "X", "message": "m", "data": {"msgid": 2}}
        self.assertPayload(wire.encodeError(2, error), [1, 2, error, None])
        self.assertPayload(wire.encodeError(None, error), [1, None, error, None])

    def test_encodeHello(self) -> None:
        """
        A hello is C{[3, "hello", info]}.
        """
        info = {"protocol": 1, "keepalive": 7.5, "max_message_size": 10}
        self.assertPayload(wire.encodeHello(info), [3, "hello", info])

    def test_encodeGoaway(self) -> None:
        """
        A goaway is C{[3, "goaway", last_msgid, reason]}, last_msgid possibly
        nil.
        """
        self.assertPayload(wire.encodeGoaway(9, "idle"), [3, "goaway", 9, "idle"])
        self.assertPayload(
            wire.encodeGoaway(None, "shutdown"), [3, "goaway", None, "shutdown"]
        )

    def test_encodeCancel(self) -> None:
        """
        A cancel is C{[3, "cancel", msgid]}.
        """
        self.assertPayload(wire.encodeCancel(4294967295), [3, "cancel", 4294967295])


class IsMsgidTests(SynchronousTestCase):
    """
    Tests for L{wire.isMsgid}.
    """

    def test_valid(self) -> None:
        """
        0 to 2**32 - 1 are msgids.
        """
        for value in [0, 1, 2**31, 2**32 - 1]:
            self.assertTrue(wire.isMsgid(value), value)

    def test_invalid(self) -> None:
        """
        Negative or too large integers, booleans, floats, nil and strings are
        not.
        """
        for value in [-1, 2**32, 2**64, True, False, 1.0, None, "1", b"1", [1]]:
            self.assertFalse(wire.isMsgid(value), value)


class ParseClientMessageTests(SynchronousTestCase):
    """
    Tests for L{wire.parseClientMessage}.
    """

    def parse(self, message: Any) -> Any:
        return wire.parseClientMessage(msgpack.packb(message, use_bin_type=True))

    def assertInvalid(self, message: Any, data: Any = None) -> InvalidRequest:
        """
        C{message} (a value, or a payload when it is C{bytes}) is refused with
        an L{InvalidRequest} carrying exactly C{data}.
        """
        payload = (
            message
            if isinstance(message, bytes)
            else msgpack.packb(message, use_bin_type=True)
        )
        error: InvalidRequest = self.assertRaises(
            InvalidRequest, wire.parseClientMessage, payload
        )
        self.assertEqual(error.type, "InvalidRequest")
        self.assertIsInstance(error.message, str)
        self.assertTrue(
            sameValue(error.data, data), f"{message!r}: data {error.data!r}"
        )
        return error

    def test_request(self) -> None:
        """
        A 4-element request has empty kwargs; a 5-element one its kwargs.
        """
        self.assertTrue(
            sameValue(
                self.parse([0, 0, "m", [b"x", "y"]]),
                wire.Request(0, "m", [b"x", "y"], {}),
            )
        )
        self.assertTrue(
            sameValue(
                self.parse([0, 2**32 - 1, "m", [], {"a": 1}]),
                wire.Request(2**32 - 1, "m", [], {"a": 1}),
            )
        )
        self.assertTrue(
            sameValue(self.parse([0, 1, "m", [], {}]), wire.Request(1, "m", [], {}))
        )

    def test_notification(self) -> None:
        """
        A notification has 3 or 4 elements.
        """
        self.assertTrue(
            sameValue(self.parse([2, "log", [1]]), wire.Notification("log", [1], {}))
        )
        self.assertTrue(
            sameValue(
                self.parse([2, "log", [], {"k": None}]),
                wire.Notification("log", [], {"k": None}),
            )
        )

    def test_control(self) -> None:
        """
        A control message of any str kind parses, with the elements after its
        kind, so that a server can ignore kinds it does not know.
        """
        self.assertTrue(
            sameValue(self.parse([3, "cancel", 5]), wire.Control("cancel", [5]))
        )
        self.assertTrue(sameValue(self.parse([3, "ping"]), wire.Control("ping", [])))
        self.assertTrue(
            sameValue(self.parse([3, "auth", b"t", 1]), wire.Control("auth", [b"t", 1]))
        )

    def test_notAMessage(self) -> None:
        """
        Empty payloads, non-msgpack bytes, values that are not arrays, extra
        data and invalid UTF-8 are refused; with the msgid when the payload
        starts with a request type code and a valid msgid.
        """
        for payload in [
            b"",
            b"\xc1",
            b"\x01",
            b"\x81\xa1a\x01",
            b"\x90\x90",
            b"\x94\x02\x01\xa2\xc3\x28\x90",
        ]:
            self.assertInvalid(payload)
        self.assertInvalid(b"\x94\x00\x01\xa2\xc3\x28\x90", {"msgid": 1})

    def test_emptyArray(self) -> None:
        """
        An empty array has no type code.
        """
        self.assertInvalid([])

    def test_wrongTypeCode(self) -> None:
        """
        Type codes other than 0, 2 and 3, including a response from a client
        and non-integers equal to a valid code, are refused without a msgid.
        """
        for code in [1, 4, -1, 255, "0", 0.0, 2.0, None, True, False]:
            self.assertInvalid([code, 1, "m", []])

    def test_badMsgid(self) -> None:
        """
        A request without a valid msgid is refused without a msgid.
        """
        for msgid in [-1, 2**32, 2**64 - 1, True, False, 1.0, None, "1"]:
            self.assertInvalid([0, msgid, "m", []])
        self.assertInvalid([0])

    def test_badRequestShape(self) -> None:
        """
        A request with a valid msgid but the wrong arity, method, args or
        kwargs is refused with C{data} naming its msgid, so it can be answered.
        """
        for message in [
            [0, 5],
            [0, 5, "m"],
            [0, 5, "m", [], {}, None],
            [0, 5, b"m", []],
            [0, 5, 1, []],
            [0, 5, None, []],
            [0, 5, "m", {}],
            [0, 5, "m", "a"],
            [0, 5, "m", None],
            [0, 5, "m", [], []],
            [0, 5, "m", [], None],
            [0, 5, "m", [], {b"k": 1}],
        ]:
            self.assertInvalid(message, {"msgid": 5})

    def test_msgidZeroNamed(self) -> None:
        """
        msgid 0 is named in C{data} like any other.
        """
        self.assertInvalid([0, 0, "m", 1], {"msgid": 0})

    def test_nonStrKwargsKey(self) -> None:
        """
        A kwargs key that is not a str is refused, naming the msgid; integer
        keys deeper inside arguments are fine.
        """
        self.assertInvalid([0, 5, "m", [], {1: 1}], {"msgid": 5})
        request = wire.parseClientMessage(wire.pack([0, 5, "m", [{1: 1}]]))
        assert isinstance(request, wire.Request)
        self.assertEqual(request.args, [{1: 1}])

    def test_unhashableKeyAnywhere(self) -> None:
        """
        An array used as a map key makes the whole message undecodable:
        refused, with the msgid read from the start of the payload.
        """
        self.assertInvalid(b"\x94\x00\x05\xa1m\x91\x81\x90\x01", {"msgid": 5})

    def test_kwargsNotMapMessage(self) -> None:
        """
        The error is the one vector V15 of the document shows.
        """
        error = self.assertInvalid([0, 9, "m", [], []], {"msgid": 9})
        self.assertEqual(
            error.toWire(),
            {
                "type": "InvalidRequest",
                "message": "kwargs must be a map",
                "data": {"msgid": 9},
            },
        )

    def test_badNotification(self) -> None:
        """
        A malformed notification is refused without a msgid.
        """
        for message in [
            [2],
            [2, "m"],
            [2, 1, []],
            [2, "m", {}],
            [2, "m", [], []],
            [2, "m", [], {b"k": 1}],
            [2, "m", [], {}, None],
        ]:
            self.assertInvalid(message)

    def test_badControl(self) -> None:
        """
        A control message without a str kind is refused without a msgid.
        """
        for message in [[3], [3, 1], [3, None], [3, b"cancel", 1]]:
            self.assertInvalid(message)

    def test_tooDeep(self) -> None:
        """
        Arguments nested beyond the limit are refused, with the msgid.
        """
        self.assertInvalid(
            b"\x94\x00\x01\xa1m" + b"\x91" * 1024 + b"\xc0", {"msgid": 1}
        )
        request = wire.parseClientMessage(
            b"\x94\x00\x01\xa1m" + b"\x91" * 1023 + b"\xc0"
        )
        assert type(request) is wire.Request
        self.assertEqual(depthOf(request.args), 1023)


class ParseServerMessageTests(SynchronousTestCase):
    """
    Tests for L{wire.parseServerMessage}.
    """

    def parse(self, message: Any) -> Any:
        return wire.parseServerMessage(msgpack.packb(message, use_bin_type=True))

    def assertInvalid(self, message: Any) -> None:
        payload = (
            message
            if isinstance(message, bytes)
            else msgpack.packb(message, use_bin_type=True)
        )
        error = self.assertRaises(InvalidResponse, wire.parseServerMessage, payload)
        self.assertEqual(error.type, "InvalidResponse")
        self.assertIsNone(error.data)

    def test_response(self) -> None:
        """
        Results and errors, with a msgid or nil, parse into L{wire.Response}.
        """
        self.assertTrue(
            sameValue(self.parse([1, 1, None, b"r"]), wire.Response(1, None, b"r"))
        )
        error = {"type": "T", "message": "m"}
        self.assertTrue(
            sameValue(
                self.parse([1, None, error, None]), wire.Response(None, error, None)
            )
        )
        self.assertTrue(
            sameValue(
                self.parse([1, 2**32 - 1, error, None]),
                wire.Response(2**32 - 1, error, None),
            )
        )

    def test_control(self) -> None:
        """
        Control messages of any str kind parse.
        """
        self.assertTrue(
            sameValue(
                self.parse([3, "goaway", None, "idle"]),
                wire.Control("goaway", [None, "idle"]),
            )
        )
        self.assertTrue(sameValue(self.parse([3, "new"]), wire.Control("new", [])))

    def test_notAMessage(self) -> None:
        """
        Empty payloads, non-msgpack bytes, non-arrays and extra data are
        refused.
        """
        for payload in [
            b"",
            b"\xc1",
            b"\x01",
            b"\x90\x90",
            b"\x94\x01\x01\xc0\xa1\xff",
        ]:
            self.assertInvalid(payload)
        self.assertInvalid([])

    def test_wrongTypeCode(self) -> None:
        """
        Requests, notifications, unknown codes and non-integer codes are not
        server messages.
        """
        for message in [
            [0, 1, "m", []],
            [2, "m", []],
            [4, 1, None, None],
            [True, 1, None, None],
            [1.0, 1, None, None],
            ["1", 1, None, None],
        ]:
            self.assertInvalid(message)

    def test_badResponse(self) -> None:
        """
        A response with the wrong arity, msgid or error is refused.
        """
        for message in [
            [1],
            [1, 1, None],
            [1, 1, None, None, None],
            [1, -1, None, None],
            [1, 2**32, None, None],
            [1, True, None, None],
            [1, "1", None, None],
            [1, 1.0, None, None],
            [1, 1, "error", None],
            [1, 1, ["error"], None],
            [1, 1, False, None],
        ]:
            self.assertInvalid(message)

    def test_badControl(self) -> None:
        """
        A control message without a str kind is refused.
        """
        for message in [[3], [3, 1], [3, b"goaway", 1, "idle"]]:
            self.assertInvalid(message)


class StreamWireTests(SynchronousTestCase):
    """
    The frames of a stream (PROTOCOL.md 4.5): the request's options, items,
    credit.
    """

    def test_streamOption(self) -> None:
        """
        A 6-element request carries its options; C{stream} is the first
        window, and keys not known are ignored.
        """
        message = wire.parseClientMessage(
            wire.pack([0, 5, "ticks", [], {}, {"stream": 8, "later": "x"}])
        )
        self.assertEqual(message, wire.StreamRequest(5, "ticks", [], {}, None, None, 8))
        self.assertIs(type(message), wire.StreamRequest)
        message = wire.parseClientMessage(wire.pack([0, 5, "echo", [1], {}, {}]))
        self.assertEqual(message, wire.Request(5, "echo", [1], {}))
        self.assertIs(type(message), wire.Request)

    def test_badOptions(self) -> None:
        """
        Options that are not a map, or a stream window that is not an integer
        from 1 to 2**32 - 1, refuse the request for its msgid.
        """
        badOptions: list[Any] = [
            None,
            [],
            {"stream": 0},
            {"stream": True},
            {"stream": 2**32},
        ]
        for options in badOptions:
            with self.assertRaises(InvalidRequest) as e:
                wire.parseClientMessage(wire.pack([0, 5, "x", [], {}, options]))
            self.assertEqual(e.exception.data, {"msgid": 5}, options)

    def test_sevenElements(self) -> None:
        """
        A request has at most 6 elements; a notification at most 5.
        """
        with self.assertRaises(InvalidRequest) as e:
            wire.parseClientMessage(wire.pack([0, 5, "x", [], {}, {}, 1]))
        self.assertEqual(e.exception.message, "expected 4 to 6 elements, got 7")
        with self.assertRaises(InvalidRequest) as e:
            wire.parseClientMessage(wire.pack([2, "x", [], {}, {}, 1]))
        self.assertEqual(e.exception.message, "expected 3 to 5 elements, got 6")

    def test_item(self) -> None:
        """
        An item is C{[4, msgid, item]}, exactly.
        """
        self.assertEqual(
            wire.parseServerMessage(wire.encodeItem(3, [b"x"])), wire.Item(3, [b"x"])
        )
        for bad in ([4, 3], [4, 3, 1, 2], [4, -1, 1], [4, None, 1]):
            self.assertRaises(InvalidResponse, wire.parseServerMessage, wire.pack(bad))

    def test_credit(self) -> None:
        """
        A credit is a control message the server reads.
        """
        self.assertEqual(
            wire.parseClientMessage(wire.encodeCredit(3, 10)),
            wire.Control("credit", [3, 10]),
        )

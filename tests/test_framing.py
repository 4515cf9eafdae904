# mypy reports trial's untyped assertions called through self under the test
# class's name, which untyped_calls_exclude = ["twisted"] does not match.
# mypy: disable-error-code="no-untyped-call"
"""
Tests for L{agilerpc._framing.FrameReceiver}: frames split and coalesced in
any way, pausing, the length limit and discarding input.
"""

from __future__ import annotations

import struct
from typing import Any

from twisted.internet.testing import StringTransport
from twisted.protocols.basic import Int32StringReceiver
from twisted.trial.unittest import SynchronousTestCase

from agilerpc._framing import LARGE_FRAME, FrameReceiver, writeFrame


def frame(payload: bytes) -> bytes:
    """
    C{payload} with its 4-byte big-endian length in front.
    """
    return struct.pack(">I", len(payload)) + payload


class Receiver(FrameReceiver, Int32StringReceiver):
    """
    Records what L{FrameReceiver} delivers, mixed in the way the server
    protocol mixes it (so that pausing is Int32StringReceiver's own).

    @ivar onFrame: called after each frame is recorded, if set.
    """

    MAX_LENGTH = 100

    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.exceeded: list[int] = []
        self.onFrame: list[object] = []
        self.pauseAfter: int | None = None
        self.discardAfter: int | None = None
        self.stringTransport = StringTransport()
        self.makeConnection(self.stringTransport)

    def stringReceived(self, string: bytes) -> None:
        self.frames.append(string)
        if self.pauseAfter == len(self.frames):
            self.pauseProducing()
        if self.discardAfter == len(self.frames):
            self.discardInput()

    def lengthLimitExceeded(self, length: int) -> None:
        self.exceeded.append(length)


PAYLOADS = [b"first", b"", b"a third, longer frame", b"\x00\x00\x00\x05x", b"!"]
STREAM = b"".join(frame(p) for p in PAYLOADS)


class SplittingTests(SynchronousTestCase):
    """
    However the stream is cut into chunks, the same frames come out.
    """

    def test_oneChunk(self) -> None:
        """
        Several frames in one chunk are all delivered, in order.
        """
        r = Receiver()
        r.dataReceived(STREAM)
        self.assertEqual(r.frames, PAYLOADS)
        self.assertIsNone(r._chunks)
        self.assertEqual(r._buffered, 0)

    def test_everySplitPoint(self) -> None:
        """
        The stream cut in two at any byte gives the same frames, and nothing
        is delivered before its last byte arrives.
        """
        for i in range(len(STREAM) + 1):
            r = Receiver()
            r.dataReceived(STREAM[:i])
            complete = []
            offset = 0
            for p in PAYLOADS:
                if offset + 4 + len(p) <= i:
                    complete.append(p)
                offset += 4 + len(p)
            self.assertEqual(r.frames, complete, f"split at {i}")
            r.dataReceived(STREAM[i:])
            self.assertEqual(r.frames, PAYLOADS, f"split at {i}")

    def test_everyPairOfSplitPoints(self) -> None:
        """
        The stream cut in three at any two bytes gives the same frames.
        """
        n = len(STREAM)
        for i in range(n + 1):
            for j in range(i, n + 1):
                r = Receiver()
                r.dataReceived(STREAM[:i])
                r.dataReceived(STREAM[i:j])
                r.dataReceived(STREAM[j:])
                self.assertEqual(r.frames, PAYLOADS, f"split at {i}, {j}")

    def test_byteAtATime(self) -> None:
        """
        The stream delivered one byte at a time gives the same frames.
        """
        r = Receiver()
        for i in range(len(STREAM)):
            r.dataReceived(STREAM[i : i + 1])
        self.assertEqual(r.frames, PAYLOADS)

    def test_manyFramesPerChunk(self) -> None:
        """
        Chunks holding many frames and pieces of others deliver every frame.
        """
        payloads = [bytes([i]) * (i % 7) for i in range(200)]
        stream = b"".join(frame(p) for p in payloads)
        r = Receiver()
        for i in range(0, len(stream), 37):
            r.dataReceived(stream[i : i + 37])
        self.assertEqual(r.frames, payloads)

    def test_emptyChunk(self) -> None:
        """
        An empty chunk delivers nothing and changes nothing.
        """
        r = Receiver()
        r.dataReceived(b"")
        r.dataReceived(STREAM[:3])
        r.dataReceived(b"")
        r.dataReceived(STREAM[3:])
        self.assertEqual(r.frames, PAYLOADS)

    def test_largeFrameJoinedOnce(self) -> None:
        """
        A frame arriving in many chunks is kept as a list of chunks and
        joined once, when its last byte arrives.
        """
        r = Receiver()
        r.MAX_LENGTH = 10_000
        payload = bytes(range(256)) * 39
        whole = frame(payload)
        chunks = [whole[i : i + 100] for i in range(0, len(whole), 100)]
        for n, chunk in enumerate(chunks[:-1], 1):
            r.dataReceived(chunk)
            self.assertEqual(r.frames, [])
            # Each chunk appended, none joined: the list grows by one.
            self.assertEqual(r._chunks, chunks[:n])
            self.assertEqual(r._buffered, 100 * n)
        r.dataReceived(chunks[-1] + frame(b"next"))
        self.assertEqual(r.frames, [payload, b"next"])
        self.assertIsNone(r._chunks)
        self.assertEqual(r._buffered, 0)

    def test_frameEndingWithTheChunk(self) -> None:
        """
        A buffered frame completed exactly by a chunk is delivered whole, with
        the header split across chunks too, and a pause taken while it was
        buffered holds it back until the resume.
        """
        r = Receiver()
        r.MAX_LENGTH = 10_000
        payload = bytes(range(256)) * 20
        whole = frame(payload)
        for split in (2, 4, 50):
            r.frames.clear()
            r.dataReceived(whole[:split])
            r.dataReceived(whole[split:2000])
            r.dataReceived(whole[2000:])
            self.assertEqual(r.frames, [payload])
            self.assertIsNone(r._chunks)
        r.frames.clear()
        r.dataReceived(whole[:1000])
        r.pauseProducing()
        r.dataReceived(whole[1000:])
        self.assertEqual(r.frames, [])
        r.resumeProducing()
        self.assertEqual(r.frames, [payload])

    def test_partialHeaderWaits(self) -> None:
        """
        Fewer than four bytes of a header are kept until the rest arrives.
        """
        r = Receiver()
        r.dataReceived(frame(b"x") + b"\x00\x00")
        self.assertEqual(r.frames, [b"x"])
        self.assertEqual(r._buffered, 2)
        r.dataReceived(b"\x00")
        r.dataReceived(b"\x02ab")
        self.assertEqual(r.frames, [b"x", b"ab"])


class LengthLimitTests(SynchronousTestCase):
    """
    A frame longer than C{MAX_LENGTH} is refused from its header alone.
    """

    def test_exactlyMaxLength(self) -> None:
        """
        A frame of exactly C{MAX_LENGTH} bytes is delivered.
        """
        r = Receiver()
        r.dataReceived(frame(b"m" * 100))
        self.assertEqual(r.frames, [b"m" * 100])
        self.assertEqual(r.exceeded, [])

    def test_headerAlone(self) -> None:
        """
        A header announcing more than C{MAX_LENGTH} bytes calls
        C{lengthLimitExceeded} with that length, at once, and everything after
        it is dropped without being buffered.
        """
        r = Receiver()
        r.dataReceived(frame(b"before") + struct.pack(">I", 101))
        self.assertEqual(r.frames, [b"before"])
        self.assertEqual(r.exceeded, [101])
        r.dataReceived(b"y" * 1000 + frame(b"after"))
        self.assertEqual(r.frames, [b"before"])
        self.assertEqual(r.exceeded, [101])
        self.assertIsNone(r._chunks)
        self.assertEqual(r._buffered, 0)

    def test_headerSplit(self) -> None:
        """
        An oversized header arriving a byte at a time is refused when its
        fourth byte arrives.
        """
        r = Receiver()
        header = struct.pack(">I", 2**32 - 1)
        for b in header[:3]:
            r.dataReceived(bytes([b]))
            self.assertEqual(r.exceeded, [])
        r.dataReceived(header[3:])
        self.assertEqual(r.exceeded, [2**32 - 1])


class DiscardTests(SynchronousTestCase):
    """
    L{FrameReceiver.discardInput} drops what is buffered and all later input.
    """

    def test_dropsBuffered(self) -> None:
        """
        A partial frame buffered before C{discardInput} is never delivered,
        nor is anything after it.
        """
        r = Receiver()
        r.dataReceived(frame(b"partial")[:5])
        r.discardInput()
        self.assertIsNone(r._chunks)
        self.assertEqual(r._buffered, 0)
        r.dataReceived(frame(b"partial")[5:] + frame(b"more"))
        self.assertEqual(r.frames, [])

    def test_fromStringReceived(self) -> None:
        """
        C{discardInput} called while a frame is delivered stops delivery of
        the frames after it in the same chunk.
        """
        r = Receiver()
        r.discardAfter = 2
        r.dataReceived(STREAM)
        self.assertEqual(r.frames, PAYLOADS[:2])
        self.assertIsNone(r._chunks)


class PauseTests(SynchronousTestCase):
    """
    While paused, complete frames stay buffered; resuming delivers them.
    """

    def test_pauseInStringReceived(self) -> None:
        """
        Pausing while a frame is delivered keeps the rest of the chunk, and
        later chunks, buffered until C{resumeProducing}.
        """
        r = Receiver()
        r.pauseAfter = 1
        r.dataReceived(STREAM[:20])
        self.assertEqual(r.frames, PAYLOADS[:1])
        self.assertEqual(r.stringTransport.producerState, "paused")
        r.dataReceived(STREAM[20:])
        self.assertEqual(r.frames, PAYLOADS[:1])
        r.resumeProducing()
        self.assertEqual(r.stringTransport.producerState, "producing")
        self.assertEqual(r.frames, PAYLOADS)
        self.assertIsNone(r._chunks)

    def test_pausedBeforeData(self) -> None:
        """
        Data arriving while paused is delivered on resume, in order.
        """
        r = Receiver()
        r.pauseProducing()
        r.dataReceived(STREAM[:7])
        r.dataReceived(STREAM[7:])
        self.assertEqual(r.frames, [])
        r.resumeProducing()
        self.assertEqual(r.frames, PAYLOADS)

    def test_pauseAgainWhileResuming(self) -> None:
        """
        A frame delivered on resume can pause again; the next resume goes on
        where it stopped.
        """
        r = Receiver()
        r.pauseAfter = 1
        r.dataReceived(STREAM)
        self.assertEqual(r.frames, PAYLOADS[:1])
        r.pauseAfter = 3
        r.resumeProducing()
        self.assertEqual(r.frames, PAYLOADS[:3])
        r.resumeProducing()
        self.assertEqual(r.frames, PAYLOADS)

    def test_resumeWithPartialFrame(self) -> None:
        """
        Resuming with only part of a frame buffered delivers nothing until the
        rest arrives.
        """
        r = Receiver()
        r.pauseProducing()
        r.dataReceived(frame(b"whole")[:6])
        r.resumeProducing()
        self.assertEqual(r.frames, [])
        r.dataReceived(frame(b"whole")[6:])
        self.assertEqual(r.frames, [b"whole"])

    def test_resumeWithNothingBuffered(self) -> None:
        """
        Resuming with nothing buffered delivers nothing.
        """
        r = Receiver()
        r.pauseProducing()
        r.resumeProducing()
        self.assertEqual(r.frames, [])
        r.dataReceived(frame(b"z"))
        self.assertEqual(r.frames, [b"z"])


class WriteFrameTests(SynchronousTestCase):
    """
    L{writeFrame} writes a header and payload as one frame.
    """

    def test_smallAndLarge(self) -> None:
        """
        A small payload goes out in one write with its header; a large one
        as header and payload without concatenating them; both read back as
        the same frames.
        """
        writes: list[object] = []

        class Transport(StringTransport):
            def write(self, data: bytes) -> None:
                writes.append(("write", len(data)))
                super().write(data)

            def writeSequence(self, seq: Any) -> None:
                writes.append(("writeSequence", [len(d) for d in seq]))
                StringTransport.write(self, b"".join(seq))

        transport = Transport()
        small = b"s" * 10
        large = b"L" * LARGE_FRAME
        writeFrame(transport, small)
        writeFrame(transport, large)
        self.assertEqual(writes, [("write", 14), ("writeSequence", [4, LARGE_FRAME])])
        r = Receiver()
        r.MAX_LENGTH = 2 * LARGE_FRAME
        r.dataReceived(transport.value())
        self.assertEqual(r.frames, [small, large])
